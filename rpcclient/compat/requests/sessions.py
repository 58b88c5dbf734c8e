"""``requests.sessions``: requests' Session, with the gevent adapter mounted.

:class:`Session` is ``requests.Session`` (cookies, auth, hooks, redirects,
``prepare_request``, ``send``, ``mount``, ``max_redirects``, ``trust_env``
all as in requests) whose ``http://`` and ``https://`` adapters are
:class:`~.adapters.HTTPAdapter`: the one place that differs. Keyword-only
extras set the adapters' ``pool_size`` (connections per host),
``max_response_size`` and ``idle_timeout``.
"""

from __future__ import annotations

from typing import Any

import requests.sessions as _upstream

from .adapters import DEFAULT_MAX_RESPONSE_SIZE, HTTPAdapter

__all__ = ["Session", "session"]


class Session(_upstream.Session):
    """requests' Session on rpcclient's gevent transport (see the module docstring)."""

    def __init__(
        self,
        *,
        pool_size: int = 10,
        max_response_size: int = DEFAULT_MAX_RESPONSE_SIZE,
        idle_timeout: float | None = 1.5,
    ) -> None:
        super().__init__()
        self.mount_gevent(pool_size, max_response_size, idle_timeout)

    def mount_gevent(
        self, pool_size: int, max_response_size: int, idle_timeout: float | None
    ) -> None:
        """Mount fresh gevent adapters for ``https://`` and ``http://``."""
        for prefix in ("https://", "http://"):
            self.mount(
                prefix,
                HTTPAdapter(
                    pool_maxsize=pool_size,
                    max_response_size=max_response_size,
                    idle_timeout=idle_timeout,
                ),
            )

    def __repr__(self) -> str:
        return f"<rpcclient.compat.requests.Session adapters={list(self.adapters)!r}>"


def session() -> Session:
    """A new :class:`Session` (requests' ``requests.session()``)."""
    return Session()


def __getattr__(name: str) -> Any:
    # the rest of requests.sessions (merge_setting, SessionRedirectMixin ...)
    return getattr(_upstream, name)
