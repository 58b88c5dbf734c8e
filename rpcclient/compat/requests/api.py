"""``requests.api``: the module functions, on one pooled adapter per process.

As in requests, each call runs in a new :class:`~.sessions.Session` (no
cookies or state carried from one call to the next); unlike requests, those
sessions share one pair of gevent adapters, so connections are kept per host
across calls instead of being opened and closed each time.
"""

from __future__ import annotations

import threading
from typing import Any

from requests.models import Response
from requests.sessions import Session as _RequestsSession

from .adapters import HTTPAdapter
from .sessions import Session

__all__ = ["delete", "get", "head", "options", "patch", "post", "put", "request"]

_lock = threading.Lock()
_shared: HTTPAdapter | None = None


def _adapter() -> HTTPAdapter:
    global _shared  # noqa: PLW0603 - one pooled adapter for the module functions
    with _lock:
        if _shared is None:
            _shared = HTTPAdapter()
        return _shared


class _OneCallSession(Session):
    """A fresh requests Session (this shim's, for its cheaper calls) on the shared adapter."""

    def __init__(self, adapter: HTTPAdapter) -> None:
        _RequestsSession.__init__(self)  # requests' state; its adapters replaced here
        self.mount("https://", adapter)
        self.mount("http://", adapter)


def request(method: str | bytes, url: str | bytes, **kwargs: Any) -> Response:
    """Send a request in a fresh Session on the module's shared pooled adapter."""
    session = _OneCallSession(_adapter())
    return session.request(method=method, url=url, **kwargs)  # type: ignore[arg-type]


def get(url: str | bytes, params: Any = None, **kwargs: Any) -> Response:
    return request("get", url, params=params, **kwargs)


def options(url: str | bytes, **kwargs: Any) -> Response:
    return request("options", url, **kwargs)


def head(url: str | bytes, **kwargs: Any) -> Response:
    kwargs.setdefault("allow_redirects", False)
    return request("head", url, **kwargs)


def post(url: str | bytes, data: Any = None, json: Any = None, **kwargs: Any) -> Response:
    return request("post", url, data=data, json=json, **kwargs)


def put(url: str | bytes, data: Any = None, **kwargs: Any) -> Response:
    return request("put", url, data=data, **kwargs)


def patch(url: str | bytes, data: Any = None, **kwargs: Any) -> Response:
    return request("patch", url, data=data, **kwargs)


def delete(url: str | bytes, **kwargs: Any) -> Response:
    return request("delete", url, **kwargs)
