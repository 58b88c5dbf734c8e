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
import time
import urllib.request
from collections import OrderedDict
from datetime import timedelta
from typing import Any

import requests.models
import requests.sessions as _upstream
import requests.utils
from requests.cookies import RequestsCookieJar
from requests.models import PreparedRequest
from requests.structures import CaseInsensitiveDict

from ..._config import DEFAULT_IDLE_TIMEOUT, DEFAULT_POOL_SIZE
from .adapters import (
    DEFAULT_MAX_RESPONSE_SIZE,
    HTTPAdapter,
    case_insensitive,
    extract_cookies,
    header_items,
)

__all__ = ["Session", "session"]

# requests' modules, read as they are at each call (the stubs do not type them all)
_requests_sessions: Any = _upstream
_utils: Any = requests.utils
_models: Any = requests.models


class Session(_upstream.Session):
    """requests' Session on rpcclient's gevent transport (see the module docstring)."""

    def __init__(
        self,
        *,
        pool_size: int = DEFAULT_POOL_SIZE,
        max_response_size: int = DEFAULT_MAX_RESPONSE_SIZE,
        idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
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

    def prepare_request(self, request: Any) -> PreparedRequest:
        """requests' ``prepare_request``, minus work whose result is known.

        The same steps in the same order, on requests' own
        ``PreparedRequest``, except: empty cookie jars are not merged nor
        asked for a ``Cookie`` header (a fresh empty jar is the result);
        settings that are plain dicts merge without requests' generic
        conversions; a URL prepared before (no ``params``) and header pairs
        validated before are not prepared or validated again (both are pure
        functions of their input: see :class:`_Prepared`).
        """
        url = request.url
        jar = self.cookies
        empty_jar = not request.cookies and type(jar) is RequestsCookieJar and not len(jar)
        if empty_jar:
            merged_cookies: Any = RequestsCookieJar()
        else:
            cookies = request.cookies or {}
            if not isinstance(cookies, _requests_sessions.cookielib.CookieJar):
                cookies = _requests_sessions.cookiejar_from_dict(cookies)
            merge_cookies = _requests_sessions.merge_cookies
            merged_cookies = merge_cookies(merge_cookies(RequestsCookieJar(), jar), cookies)
        auth = request.auth
        if self.trust_env and not auth and not self.auth:
            auth = _netrc_auth(url)
        p = PreparedRequest()
        headers = _merge(request.headers, self.headers, CaseInsensitiveDict)
        params = _merge(request.params, self.params)
        auth = _merge(auth, self.auth)
        hooks = _requests_sessions.merge_hooks(request.hooks, self.hooks)
        # PreparedRequest.prepare, step by step
        p.prepare_method(request.method.upper())
        has_url_auth = _PREPARED.url(p, url, params)
        _PREPARED.headers(p, headers)
        if empty_jar:  # what add_cookie_header leaves on an empty jar: no header, its clock
            p._cookies = merged_cookies  # type: ignore[attr-defined]
            merged_cookies._now = merged_cookies._policy._now = int(time.time())
        else:
            p.prepare_cookies(merged_cookies)
        p.prepare_body(request.data, request.files, request.json)
        if auth is not None or has_url_auth:
            p.prepare_auth(auth, url)
        p.prepare_hooks(hooks)
        return p

    def send(self, request: Any, **kwargs: Any) -> Any:
        """requests' ``Session.send``, minus two passes known to do nothing.

        An answer without ``Set-Cookie``/``Set-Cookie2`` from this shim's
        adapter adds nothing to a ``RequestsCookieJar``, and one
        ``get_redirect_target`` finds no redirect gives an empty redirect
        walk: neither is run then (a Session whose ``resolve_redirects`` is
        overridden runs requests' code unchanged).
        """
        own = type(self)
        if (
            own.resolve_redirects is not _RESOLVE_REDIRECTS
            or own.get_redirect_target is not _GET_REDIRECT_TARGET
        ):
            return super().send(request, **kwargs)
        kwargs.setdefault("stream", self.stream)
        kwargs.setdefault("verify", self.verify)
        kwargs.setdefault("cert", self.cert)
        if "proxies" not in kwargs:
            kwargs["proxies"] = _requests_sessions.resolve_proxies(
                request, self.proxies, self.trust_env
            )
        if isinstance(request, _models.Request):
            raise ValueError("You can only send PreparedRequests.")
        allow_redirects = kwargs.pop("allow_redirects", True)
        stream = kwargs.get("stream")
        hooks = request.hooks
        adapter = self.get_adapter(url=request.url)
        start = _requests_sessions.preferred_clock()
        r = adapter.send(request, **kwargs)
        elapsed = _requests_sessions.preferred_clock() - start
        r.elapsed = timedelta(seconds=elapsed)
        r = _requests_sessions.dispatch_hook("response", hooks, r, **kwargs)
        if r.history:
            for resp in r.history:
                extract_cookies(self.cookies, resp.request, resp.raw)
        extract_cookies(self.cookies, request, r.raw)
        redirect = self.get_redirect_target(r)
        history = []
        if allow_redirects and redirect:
            history = list(self.resolve_redirects(r, request, **kwargs))
        if history:
            history.insert(0, r)
            r = history.pop()
            r.history = history
        if not allow_redirects and redirect:
            try:
                r._next = next(self.resolve_redirects(r, request, yield_requests=True, **kwargs))
            except StopIteration:
                pass
        if not stream:
            r.content  # noqa: B018 - reads the body, as requests does
        return r

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
        merge = _merge
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
_NETRC_FILES = tuple(_utils.NETRC_FILES)


class _EnvironmentMemo:
    """requests' environment lookups for one state of ``os.environ``.

    Only on platforms where urllib's proxy functions read nothing but the
    environment (not macOS or Windows, which consult system settings).
    """

    def __init__(self, snapshot: dict[bytes, bytes]) -> None:
        self.snapshot = snapshot
        self.ca_bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        self._proxies: dict[tuple[str, str | None], dict[str, str]] = {}
        # where get_netrc_auth looks, expanded (it expands them on every call)
        netrc = os.environ.get("NETRC")
        names = (netrc,) if netrc is not None else tuple(f"~/{f}" for f in _NETRC_FILES)
        self.netrc_locations = (
            tuple(os.path.expanduser(name) for name in names) if "HOME" in os.environ else None
        )

    def proxies(self, url: Any, no_proxy: Any) -> Any:
        if type(url) is not str or (no_proxy is not None and type(no_proxy) is not str):
            return _requests_sessions.get_environ_proxies(url, no_proxy=no_proxy)
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
_GET_NETRC_AUTH = _requests_sessions.get_netrc_auth


def _netrc_auth(url: Any) -> Any:
    """requests' ``get_netrc_auth(url)``; None at once when no netrc file exists.

    With no file at any of its locations requests' function returns None;
    the locations (expanded from the environment) are memoized, the files'
    existence is checked on every call as requests does.
    """
    memo = _ENVIRONMENT.current()
    if (
        memo is None
        or memo.netrc_locations is None
        or _requests_sessions.get_netrc_auth is not _GET_NETRC_AUTH
        or _utils.NETRC_FILES != _NETRC_FILES
    ):
        return _requests_sessions.get_netrc_auth(url)
    exists = os.path.exists
    for location in memo.netrc_locations:
        if exists(location):
            return _requests_sessions.get_netrc_auth(url)
    return None


_PLAIN_MAPPINGS = frozenset({dict, OrderedDict, CaseInsensitiveDict})
_SCALARS = frozenset({bool, int, float, str, bytes, tuple})


def _merge(request_setting: Any, session_setting: Any, dict_class: type = OrderedDict) -> Any:
    """requests' ``merge_setting``, without its generic conversions on plain values."""
    if session_setting is None:
        return request_setting
    if request_setting is None:
        return session_setting
    kinds = (type(request_setting), type(session_setting))
    if kinds[0] in _SCALARS or kinds[1] in _SCALARS:  # not Mappings: the request's wins
        return request_setting
    if kinds[0] not in _PLAIN_MAPPINGS or kinds[1] not in _PLAIN_MAPPINGS:
        return _requests_sessions.merge_setting(request_setting, session_setting, dict_class)
    pairs = header_items(session_setting)
    if dict_class is CaseInsensitiveDict:  # built then updated, as requests does
        merged = case_insensitive(pairs + header_items(request_setting))
    else:
        merged = dict_class(pairs)
        merged.update(header_items(request_setting))
    for key in [k for (k, v) in header_items(merged) if v is None]:
        del merged[key]
    return merged


class _Prepared:
    """What ``PreparedRequest`` computed before for the same input.

    ``prepare_url(url, params)`` with empty ``params`` is a function of the
    URL string alone (parsing, IDNA, requoting), and ``check_header_validity``
    of the (name, value) pair alone; each is memoized (bounded) while it is
    requests' own function. Errors are never memoized: they are raised anew.
    """

    def __init__(self) -> None:
        self._urls: dict[str, tuple[str, bool]] = {}
        self._headers: set[tuple[Any, Any]] = set()
        self._prepare_url = PreparedRequest.prepare_url
        self._check = _models.check_header_validity

    def url(self, p: PreparedRequest, url: Any, params: Any) -> bool:
        """``p.prepare_url(url, params)``; whether the prepared URL carries credentials."""
        memo = (
            type(url) is str
            and type(params) in _PLAIN_MAPPINGS
            and not params
            and PreparedRequest.prepare_url is self._prepare_url
        )
        found = self._urls.get(url) if memo else None
        if found is None:
            p.prepare_url(url, params)
            found = (p.url or "", any(_utils.get_auth_from_url(p.url)))
            if memo:
                if len(self._urls) >= _MEMO_ENTRIES:
                    self._urls.clear()
                self._urls[url] = found
        else:
            p.url = found[0]
        return found[1]

    def headers(self, p: PreparedRequest, headers: Any) -> None:
        """``p.prepare_headers(headers)``, each pair checked once while requests' check is."""
        if _models.check_header_validity is not self._check:
            p.prepare_headers(headers)
            return
        pairs = []
        if headers:
            valid = self._headers
            for header in header_items(headers):
                name, value = header
                text = type(name) in _TEXT and type(value) in _TEXT  # hashable, too
                if not text or header not in valid:
                    self._check(header)
                    if text:
                        if len(valid) >= _MEMO_ENTRIES:
                            valid.clear()
                        valid.add(header)
                pairs.append((_utils.to_native_string(name), value))
        p.headers = case_insensitive(pairs)


_TEXT = frozenset({str, bytes})
_RESOLVE_REDIRECTS = _upstream.SessionRedirectMixin.resolve_redirects
_GET_REDIRECT_TARGET = _upstream.SessionRedirectMixin.get_redirect_target


_PREPARED = _Prepared()


def session() -> Session:
    """A new :class:`Session` (requests' ``requests.session()``)."""
    return Session()


def __getattr__(name: str) -> Any:
    # the rest of requests.sessions (merge_setting, SessionRedirectMixin ...)
    return getattr(_upstream, name)
