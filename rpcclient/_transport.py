"""The transport seam: two methods, ``send`` and ``close``.

A transport moves one prepared :class:`~rpcclient._models.Request` to its
endpoint and returns the complete :class:`~rpcclient._models.Response`, within
the :class:`~rpcclient._timeouts.Deadline` it is given. Its contract:

- it raises only :mod:`rpcclient.exceptions` errors (foreign exceptions are
  mapped at one edge inside it), except the caller's own ``gevent.Timeout``
  and ``GreenletExit``, which propagate unchanged;
- ``may_have_reached_server`` on its errors is ``False`` only when no byte of
  the request was written;
- it never re-sends a request (retries belong to the client);
- a connection whose answer was not read to the end is never reused, and on
  any exit a pool slot it took is given back.

:class:`MockTransport` lets users unit-test code that uses a Client without a
server: ``Client("http://svc", transport=MockTransport(handler))``.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

from ._models import Headers, Request, Response
from ._timeouts import Deadline
from .exceptions import ClientClosed

__all__ = ["MockTransport", "Transport"]


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


class MockTransport(Transport):
    """A transport that calls ``handler(request) -> Response`` instead of the network.

    The handler may also raise an rpcclient error to simulate a fault.
    :func:`msgpack_response` builds a protocol-v1 answer. ``requests`` keeps
    every request seen, for assertions.
    """

    name = "mock"

    def __init__(self, handler: Callable[[Request], Response]) -> None:
        self.handler = handler
        self.requests: list[Request] = []
        self._closed = False

    def send(self, request: Request, deadline: Deadline) -> Response:
        if self._closed:
            raise ClientClosed("transport is closed", name=request.name)
        self.requests.append(request)
        return self.handler(request)

    def close(self) -> None:
        self._closed = True


def msgpack_response(
    result: Any = None,
    *,
    status: int = 200,
    error: tuple[str, str] | tuple[str, str, Any] | None = None,
) -> Response:
    """A protocol-v1 Response for MockTransport handlers.

    ``msgpack_response(42)`` answers 42; ``msgpack_response(status=500,
    error=("ValueError", "bad"))`` answers an error envelope.
    """
    from ._codec import DEFAULT_CODEC

    if error is not None:
        etype, message, *rest = error
        payload: Any = {
            "error": {"type": etype, "message": message, "data": rest[0] if rest else None}
        }
    else:
        payload = result
    body = DEFAULT_CODEC.pack(payload)
    headers = Headers(
        [("Content-Type", DEFAULT_CODEC.content_type), ("Content-Length", str(len(body)))]
    )
    return Response(
        status=status, reason="OK" if status == 200 else "Error", headers=headers, body=body
    )
