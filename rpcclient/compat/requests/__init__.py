"""``requests``, on rpcclient's pooled gevent transport: requests' own code, our adapter.

Replace ``import requests`` with ``from rpcclient.compat import requests``:
everything is requests' own (``Session``, ``Request``, ``PreparedRequest``,
``Response``, cookies, auth, hooks, redirects, ``codes``, ``utils``,
``structures``, ``compat``, the exceptions), except the one piece that does
I/O, the transport adapter: :class:`~.adapters.HTTPAdapter` sends each
request in one write on a pooled keep-alive gevent connection, cooperative
without monkey-patching, and from any number of OS threads. It needs
requests installed (``pip install 'rpcclient[requests]'``).

Submodules mirror requests': :mod:`.adapters`, :mod:`.api`,
:mod:`.exceptions` and :mod:`.sessions` are this shim's; ``auth``,
``certs``, ``compat``, ``cookies``, ``help``, ``hooks``, ``models``,
``packages``, ``status_codes``, ``structures``, ``utils`` and
``_internal_utils`` ARE requests' modules (no I/O in them), also reachable
as ``rpcclient.compat.requests.<name>``.

Where it differs from requests (README "What differs from requests", and
``tests/interop/requests_suite/expected_refusals.txt`` for requests' own tests):

- refused before anything is sent (:class:`~.exceptions.UnsupportedArgument`,
  a ``NotImplementedError``): proxies (``proxies=`` or the environment);
- the whole answer is read before a call returns, also with ``stream=True``,
  up to ``max_response_size`` (64 MiB on the wire; above it
  :class:`~.exceptions.ResponseTooLarge`);
- the read timeout bounds the whole answer, not each ``recv``; the wait for a
  pooled connection shares the connect timeout (:class:`~.exceptions.PoolTimeout`);
- module functions share one pooled adapter (requests opens and closes a
  pool per call); each call still gets a fresh Session (no cookies carried).
"""

from __future__ import annotations

import sys
from typing import Any

try:
    import requests as _requests
except ImportError as _exc:  # pragma: no cover - the shim's one requirement
    raise ImportError(
        "rpcclient.compat.requests runs requests' own code on rpcclient's transport: "
        "install requests (pip install 'rpcclient[requests]')"
    ) from _exc

from requests import (
    _internal_utils,
    auth,
    certs,
    compat,
    cookies,
    help,
    hooks,
    models,
    packages,
    status_codes,
    structures,
    utils,
)
from requests.models import PreparedRequest, Request, Response
from requests.status_codes import codes

from . import adapters, api, exceptions, sessions
from .api import delete, get, head, options, patch, post, put, request
from .exceptions import (
    ConnectionError,
    ConnectTimeout,
    HTTPError,
    JSONDecodeError,
    PoolTimeout,
    ReadTimeout,
    RequestException,
    ResponseTooLarge,
    Timeout,
    TooManyRedirects,
    UnsupportedArgument,
    URLRequired,
)
from .sessions import Session, session

__all__ = [
    "ConnectTimeout",
    "ConnectionError",
    "HTTPError",
    "JSONDecodeError",
    "PoolTimeout",
    "PreparedRequest",
    "ReadTimeout",
    "Request",
    "RequestException",
    "Response",
    "ResponseTooLarge",
    "Session",
    "Timeout",
    "TooManyRedirects",
    "URLRequired",
    "UnsupportedArgument",
    "adapters",
    "api",
    "codes",
    "delete",
    "exceptions",
    "get",
    "head",
    "options",
    "patch",
    "post",
    "put",
    "request",
    "session",
    "sessions",
]

# requests' I/O-free modules, importable under this package's name too
for _module in (
    _internal_utils,
    auth,
    certs,
    compat,
    cookies,
    help,
    hooks,
    models,
    packages,
    status_codes,
    structures,
    utils,
):
    sys.modules.setdefault(f"{__name__}.{_module.__name__.rpartition('.')[2]}", _module)
del _module


def __getattr__(name: str) -> Any:
    # the rest of requests' top level (__version__, check_compatibility ...)
    return getattr(_requests, name)
