"""``requests.sessions``: requests' Session, with the gevent adapter mounted.

:class:`Session` is ``requests.Session`` (cookies, auth, hooks, redirects,
``prepare_request``, ``send``, ``mount``, ``max_redirects``, ``trust_env``
all as in requests) whose ``http://`` and ``https://`` adapters are
:class:`~.adapters.HTTPAdapter`: the one place that differs. Keyword-only
extras set the adapters' ``pool_size`` (connections per host),
``max_response_size`` and ``idle_timeout``.
"""

from __future__ import annotations

import os
import re
import sys
import urllib.request
from typing import Any

import requests.sessions as _upstream
import requests.utils

from .adapters import DEFAULT_MAX_RESPONSE_SIZE, HTTPAdapter

__all__ = ["Session", "session"]

# requests' modules, read as they are at each call (the stubs do not type them all)
_requests_sessions: Any = _upstream
_utils: Any = requests.utils


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

    def merge_environment_settings(
        self,
        url: Any,
        proxies: Any,
        stream: Any,
        verify: Any,
        cert: Any,
    ) -> Any:
        """requests' ``merge_environment_settings``, the environment's share memoized.

        requests reads every environment variable twice per call to find
        proxies; the answer depends only on ``os.environ`` and the URL's
        scheme and host, so it is kept until ``os.environ`` changes (see
        :class:`_EnvironmentMemo`). Everything else is requests' own code.
        """
        memo = _ENVIRONMENT.current() if self.trust_env else None
        if memo is None:
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        no_proxy = proxies.get("no_proxy") if proxies is not None else None
        env_proxies = memo.proxies(url, no_proxy)
        if proxies is not None:
            for k, v in env_proxies.items():
                proxies.setdefault(k, v)
        if verify is True or verify is None:
            verify = memo.ca_bundle or verify
        merge = _requests_sessions.merge_setting
        return {
            "proxies": merge(proxies, self.proxies),
            "stream": merge(stream, self.stream),
            "verify": merge(verify, self.verify),
            "cert": merge(cert, self.cert),
        }

    def __repr__(self) -> str:
        return f"<rpcclient.compat.requests.Session adapters={list(self.adapters)!r}>"


# what requests' proxy lookup calls, as imported: a caller that patched one
# of them gets requests' own, unmemoized path
_ORIGINALS = (
    (_requests_sessions, "get_environ_proxies", _requests_sessions.get_environ_proxies),
    (_utils, "should_bypass_proxies", _utils.should_bypass_proxies),
    (_utils, "getproxies", _utils.getproxies),
    (_utils, "proxy_bypass", _utils.proxy_bypass),
)
# everything of a URL that urlparse reads its hostname and port from
_NETLOC = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*")
_MEMO_ENTRIES = 256


class _EnvironmentMemo:
    """requests' environment lookups for one state of ``os.environ``.

    Only on platforms where urllib's proxy functions read nothing but the
    environment (not macOS or Windows, which consult system settings).
    """

    def __init__(self, snapshot: dict[bytes, bytes]) -> None:
        self.snapshot = snapshot
        self.ca_bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        self._proxies: dict[tuple[str, str | None], dict[str, str]] = {}

    def proxies(self, url: str, no_proxy: str | None) -> dict[str, str]:
        match = _NETLOC.match(url)
        key = (match.group() if match else url, no_proxy)
        found = self._proxies.get(key)
        if found is None:
            found = _requests_sessions.get_environ_proxies(url, no_proxy=no_proxy)
            if len(self._proxies) >= _MEMO_ENTRIES:
                self._proxies.clear()
            self._proxies[key] = found
        return found


class _Environment:
    def __init__(self) -> None:
        self._memo: _EnvironmentMemo | None = None
        self._usable = sys.platform.startswith("linux") and (
            urllib.request.getproxies is urllib.request.getproxies_environment
        )

    def current(self) -> _EnvironmentMemo | None:
        """The memo for ``os.environ`` as it is now, or None to take requests' path."""
        environ = os.environ
        if not self._usable or type(environ) is not os._Environ:
            return None
        for module, name, original in _ORIGINALS:
            if getattr(module, name) is not original:
                return None
        data = environ._data  # type: ignore[attr-defined]
        memo = self._memo
        if memo is None or memo.snapshot != data:
            memo = self._memo = _EnvironmentMemo(dict(data))
        return memo


_ENVIRONMENT = _Environment()


def session() -> Session:
    """A new :class:`Session` (requests' ``requests.session()``)."""
    return Session()


def __getattr__(name: str) -> Any:
    # the rest of requests.sessions (merge_setting, SessionRedirectMixin ...)
    return getattr(_upstream, name)
