"""The transport seam: two methods, ``send`` and ``close``.

A transport moves one prepared :class:`~rpcclient._core.models.Request` to its
endpoint and returns the complete :class:`~rpcclient._core.models.Response`, within
the :class:`~rpcclient._core.timeouts.Deadline` it is given. Its contract:

- it raises only :mod:`rpcclient.exceptions` errors (foreign exceptions are
  mapped at one edge inside it), except the caller's own ``gevent.Timeout``
  and ``GreenletExit``, which propagate unchanged;
- ``may_have_reached_server`` on its errors is ``False`` only when no byte of
  the request was written;
- it never re-sends a request (retries belong to the client);
- a connection whose answer was not read to the end is never reused, and on
  any exit a pool slot it took is given back.

Transports are found by name in one registry, this module's: the gevent
transport registers itself from :mod:`rpcclient._public`, the blocking ones
(``requests``, ``urllib3``) when ``rpcclient._transports.blocking.<name>`` is
imported, which :func:`build_transport` does on first use of the name. The
registry is written at import time only (and by :func:`register_transport`).
"""

from __future__ import annotations

import abc
import os
from collections.abc import Callable
from typing import Any

from .._core.models import Request, Response
from .._core.timeouts import Deadline

__all__ = ["ENV_TRANSPORT", "Transport", "build_transport", "register_transport"]

#: the environment variable naming the default transport (``gevent`` when unset)
ENV_TRANSPORT = "RPCCLIENT_TRANSPORT"


class Transport(abc.ABC):
    """Base class of transports (see the module docstring for the contract)."""

    #: the name used in stats, logs and the A/B tool
    name: str = "transport"

    @abc.abstractmethod
    def send(self, request: Request, deadline: Deadline) -> Response:
        """Send ``request`` and return the complete response before ``deadline``."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close every connection; later sends raise ClientClosed. Idempotent."""

    def stats(self) -> dict[str, Any]:
        """Pool state as plain data (transports may add to it)."""
        return {}


TransportFactory = Callable[..., Transport]
_TRANSPORTS: dict[str, TransportFactory] = {}


def register_transport(name: str, factory: TransportFactory) -> None:
    """Make ``Client(..., transport=name)`` build ``factory(**options)``.

    ``options`` are ``pool_size``, ``idle_timeout``, ``max_connection_age``,
    ``max_response_size``, ``max_head_size`` and ``tls``.
    """
    _TRANSPORTS[name] = factory


def build_transport(transport: str | Transport | None, options: dict[str, Any]) -> Transport:
    """The transport a Client was given: itself, or the registered one of that name.

    ``None`` is ``$RPCCLIENT_TRANSPORT``, else ``gevent``. An unknown name is
    ValueError naming the known ones; a known transport whose library is not
    installed is ValueError naming the library.
    """
    if isinstance(transport, Transport):
        return transport
    if transport is not None and not isinstance(transport, str):
        raise TypeError(
            f"transport must be a name, a rpcclient.Transport or None, not {transport!r}"
        )
    name = transport or os.environ.get(ENV_TRANSPORT) or "gevent"
    if name not in _TRANSPORTS and name.isidentifier():
        # the optional transports register themselves on import
        module = f"rpcclient._transports.blocking.{name}"
        try:
            __import__(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                # the transport exists but its library does not: say which
                raise ValueError(
                    f"transport {name!r} needs {exc.name!r}, which is not installed "
                    f"(pip install 'rpcclient[{name}]')"
                ) from None
    try:
        factory = _TRANSPORTS[name]
    except KeyError:
        known = ", ".join(sorted(_TRANSPORTS))
        raise ValueError(f"unknown transport {name!r} (known: {known})") from None
    return factory(**options)
