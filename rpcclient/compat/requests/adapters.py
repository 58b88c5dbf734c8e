"""``requests.adapters``: an :class:`HTTPAdapter` that sends on rpcclient's gevent transport.

requests' own Session, models, cookies, auth, hooks and redirects do the
rest, unchanged; this adapter is the one piece that does I/O. It is
requests' ``HTTPAdapter`` with ``send`` and ``close`` replaced (what only
builds urllib3 pools, such as ``init_poolmanager`` or ``cert_verify``, is
inherited and harmless), so it mounts on any ``requests.Session`` and takes
the same arguments: ``pool_connections``, ``pool_maxsize`` (connections per
host), ``max_retries`` (an int or a urllib3 ``Retry``: connect failures,
which provably sent nothing, are retried as its ``connect``/``total`` allow;
a status in its ``status_forcelist`` is retried as urllib3 would, ending in
``RetryError``; a streamed body, which cannot be sent twice, never is),
``pool_block`` (accepted: the pool always blocks, within the connect
timeout). Keyword-only extras: ``max_response_size`` (64 MiB: bytes
on the wire per answer) and ``idle_timeout`` (1.5 s).

Contract of :meth:`HTTPAdapter.send`:

- refused before anything is sent: a proxy for the URL (``proxies=`` or the
  environment) raises :class:`~.exceptions.UnsupportedArgument`; a bad
  ``timeout`` raises ``ValueError`` (requests' message); a missing CA
  bundle, certificate or key file raises ``OSError`` (requests' messages);
- a caller's ``Host`` header replaces the URL's host in ``Host:`` (the
  connection still goes to the URL's host); Content-Length and
  Transfer-Encoding are the transport's, computed from the body;
- each request leaves in one write on a pooled keep-alive connection; the
  whole answer is read before ``send`` returns (also with ``stream=True``:
  ``raw``, ``iter_content`` and ``iter_lines`` then read from memory), so
  the connection is back in the pool at once;
- a request that is safe to repeat (GET, HEAD, OPTIONS, TRACE, PUT,
  DELETE, with no streamed body) whose reused keep-alive connection the
  server closed as it went out, before any byte of the answer
  (``ConnectionLost.idle_close``), is re-sent on a new connection, at most
  ``pool_maxsize`` times, not counted against ``max_retries`` (Go's
  ``net/http`` rule): connections are pooled where requests would have
  opened a new one, and a server's idle close must not turn into an error
  requests would never raise. Anything else is never re-sent for it;
- the read bound covers the whole answer from the first byte written
  (requests bounds each ``recv``): a server dripping bytes cannot stretch it;
- errors are requests' classes with requests' messages (``"...: Read timed
  out. (read timeout=0.5)"``), ``request=`` set, the rpcclient error as
  ``__cause__``; a body cut short is ``ChunkedEncodingError``; no URL
  credentials in any message.

Threads: each OS thread gets its own transports (a gevent hub is per
thread), so one adapter, and one Session, serve many threads. ``close()``
closes the calling thread's connections at once; other threads' are closed
when they next use the adapter.
"""

from __future__ import annotations

import copy
import http.client
import io
import os
import re
import ssl
import sys
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import gevent
import gevent.monkey
import requests.adapters as _upstream
import requests.cookies
import requests.sessions
from requests.adapters import BaseAdapter
from requests.cookies import RequestsCookieJar
from requests.models import PreparedRequest, Response
from requests.structures import CaseInsensitiveDict
from requests.utils import DEFAULT_CA_BUNDLE_PATH, get_encoding_from_headers, select_proxy
from urllib3 import HTTPHeaderDict, HTTPResponse
from urllib3.exceptions import (
    ConnectTimeoutError,
    EmptyPoolError,
    MaxRetryError,
    NewConnectionError,
    ReadTimeoutError,
    ResponseError,
)
from urllib3.exceptions import ProtocolError as Urllib3ProtocolError
from urllib3.exceptions import SSLError as Urllib3SSLError
from urllib3.util import Timeout as TimeoutSauce
from urllib3.util import parse_url
from urllib3.util.retry import Retry

from ... import exceptions as _rpc
from ..._config import DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_RESPONSE_SIZE, TLSConfig
from ..._core.models import Endpoint, Request, check_header
from ..._core.timeouts import Timeout as _Timeout
from ..._public import GeventTransport
from .exceptions import (
    ChunkedEncodingError,
    ConnectionError,
    ConnectTimeout,
    InvalidHeader,
    InvalidURL,
    PoolTimeout,
    ReadTimeout,
    ResponseTooLarge,
    RetryError,
    SSLError,
    UnsupportedArgument,
)

__all__ = ["DEFAULT_MAX_RESPONSE_SIZE", "BaseAdapter", "HTTPAdapter"]

MIB = 1024 * 1024
DEFAULT_POOLSIZE = _upstream.DEFAULT_POOLSIZE
#: idempotent methods (RFC 9110, 9.2.2): re-sent after an idle close
_REPEATABLE = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
DEFAULT_RETRIES = _upstream.DEFAULT_RETRIES
DEFAULT_POOLBLOCK = _upstream.DEFAULT_POOLBLOCK
# the transport frames the body itself and always names the URL's host
_FRAMING = frozenset({"content-length", "transfer-encoding"})
_READ_CHUNK = 64 * 1024
_SET_COOKIE = frozenset({"set-cookie", "set-cookie2"})
# memos of pure functions of their key (bounded: cleared when full)
_MEMO_ENTRIES = 256
_NUMBERS = frozenset({int, float, type(None)})
_HEADERS: dict[tuple[str, str], tuple[bytes, bytes] | None] = {}
_UNKNOWN: Any = object()
_TIMEOUTS: dict[Any, tuple[float | None, float | None, _Timeout | None]] = {}
# requests' modules, read as they are at each call (the stubs do not type them all)
_requests_adapters: Any = _upstream
_requests_cookies: Any = requests.cookies
_requests_sessions: Any = requests.sessions
_EXTRACT_COOKIES = _requests_cookies.extract_cookies_to_jar
# the OS thread's id and lock, also in a monkey-patched process
_os_thread_id = gevent.monkey.get_original("_thread", "get_ident")
_os_lock = gevent.monkey.get_original("_thread", "allocate_lock")


def _file_chunks(body: Any) -> Iterator[bytes]:
    while True:
        chunk = body.read(_READ_CHUNK)
        if not chunk:
            return
        yield chunk.encode("utf-8") if isinstance(chunk, str) else bytes(chunk)


def _iter_chunks(body: Any) -> Iterator[bytes]:
    for chunk in body:
        if chunk:
            yield chunk.encode("utf-8") if isinstance(chunk, str) else bytes(chunk)


def _wire_body(body: Any, length_known: bool) -> Any:
    """The prepared body as the transport takes it: bytes, or an iterable sent chunked."""
    if body is None:
        return None
    if isinstance(body, str):
        return body.encode("utf-8")
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body)
    if hasattr(body, "read"):
        if length_known:  # requests announced its length: send it whole
            data = body.read()
            return data.encode("utf-8") if isinstance(data, str) else bytes(data)
        return _file_chunks(body)
    return _iter_chunks(body)


def _timeouts(timeout: Any) -> tuple[float | None, float | None, _Timeout | None]:
    """``(connect, read, policy)`` from requests' ``timeout=``; its ValueErrors for bad ones.

    Memoized for numbers, None and pairs of them (keyed by type too: True is
    not 1 here): a pure function of the value.
    """
    key: Any = None
    if type(timeout) is tuple:
        if len(timeout) == 2 and type(timeout[0]) in _NUMBERS and type(timeout[1]) in _NUMBERS:
            key = (tuple, type(timeout[0]), timeout[0], type(timeout[1]), timeout[1])
    else:
        key = (type(timeout), timeout) if type(timeout) in _NUMBERS else None
    found = _TIMEOUTS.get(key) if key is not None else None
    if found is None:
        found = _parse_timeouts(timeout)
        if key is not None:
            if len(_TIMEOUTS) >= _MEMO_ENTRIES:
                _TIMEOUTS.clear()
            _TIMEOUTS[key] = found
    return found


def _parse_timeouts(timeout: Any) -> tuple[float | None, float | None, _Timeout | None]:
    if isinstance(timeout, tuple):
        try:
            connect, read = timeout
            sauce = TimeoutSauce(connect=connect, read=read)
        except ValueError:
            raise ValueError(
                f"Invalid timeout {timeout}. Pass a (connect, read) timeout tuple, "
                f"or a single float to set both timeouts to the same value."
            ) from None
    elif isinstance(timeout, TimeoutSauce):
        sauce = timeout
    else:
        sauce = TimeoutSauce(connect=timeout, read=timeout)
    connect_s = sauce.connect_timeout
    read_s = sauce.read_timeout
    connect_f = connect_s if isinstance(connect_s, int | float) else None
    read_f = read_s if isinstance(read_s, int | float) else None
    try:
        policy: _Timeout | None = _Timeout(
            connect=connect_f, read=read_f, pool=connect_f, total=None
        )
    except (TypeError, ValueError):
        policy = None  # raised where a request is made, as it always was (see send)
    return connect_f, read_f, policy


def _check_files(url: str, verify: Any, cert: Any) -> None:
    """requests' checks of TLS file options, before anything is sent (OSError)."""
    if url.lower().startswith("https") and verify:
        location = verify if verify is not True else DEFAULT_CA_BUNDLE_PATH
        if not location or not os.path.exists(location):
            raise OSError(
                f"Could not find a suitable TLS CA certificate bundle, invalid path: {location}"
            )
    if cert:
        cert_file, key_file = (cert, None) if isinstance(cert, str) else (cert[0], cert[1])
        if cert_file and not os.path.exists(cert_file):
            raise OSError(f"Could not find the TLS certificate file, invalid path: {cert_file}")
        if key_file and not os.path.exists(key_file):
            raise OSError(f"Could not find the TLS key file, invalid path: {key_file}")


def _tls(verify: Any, cert: Any) -> TLSConfig:
    import gevent.ssl

    if verify:
        location = verify if verify is not True else DEFAULT_CA_BUNDLE_PATH
        if os.path.isdir(location):
            context = gevent.ssl.create_default_context(capath=location)
        else:
            context = gevent.ssl.create_default_context(cafile=location)
    else:
        context = gevent.ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = gevent.ssl.CERT_NONE
    if cert:
        if isinstance(cert, str):
            context.load_cert_chain(cert)
        else:
            context.load_cert_chain(cert[0], cert[1])
    return TLSConfig(context=context)


class _Original:
    """What requests' cookie code reads of http.client's response: ``msg``.

    ``msg`` is built on first use (most answers set no cookie, and then
    nothing reads it: see ``sessions._extract_cookies``).
    """

    def __init__(self, fields: list[tuple[str, str]]) -> None:
        self._fields = fields
        self._msg: http.client.HTTPMessage | None = None
        self.sets_cookies = any(name.lower() in _SET_COOKIE for name, _ in fields)

    @property
    def msg(self) -> http.client.HTTPMessage:
        if self._msg is None:
            msg = http.client.HTTPMessage()
            for name, value in self._fields:
                msg[name] = value
            self._msg = msg
        return self._msg

    def isclosed(self) -> bool:
        return True


def _store_is_as_expected() -> bool:
    # CaseInsensitiveDict keeps {lowered key: (key, value)} in _store, in
    # insertion order; the two helpers below read and fill that directly
    # (its Mapping methods walk it in Python, one __getitem__ per key)
    pairs = [("A", "1"), ("b", 2), ("a", None)]
    made = CaseInsensitiveDict(pairs)
    store = getattr(made, "_store", None)
    return (
        type(store) is OrderedDict
        and list(store.items()) == [("a", ("a", None)), ("b", ("b", 2))]
        and list(made.items()) == list(store.values())
    )


_STORE_AS_EXPECTED = _store_is_as_expected()


def header_items(headers: Any) -> list[tuple[Any, Any]]:
    """``list(headers.items())``, read from the store for requests' CaseInsensitiveDict."""
    if type(headers) is CaseInsensitiveDict and _STORE_AS_EXPECTED:
        store: Any = getattr(headers, "_store")  # noqa: B009 - private to requests' stubs
        return list(store.values())
    return list(headers.items())


def case_insensitive(pairs: list[tuple[Any, Any]]) -> CaseInsensitiveDict[Any]:
    """``CaseInsensitiveDict(pairs)`` for a list of (key, value) pairs, filled directly."""
    if not _STORE_AS_EXPECTED:
        return CaseInsensitiveDict(pairs)
    made: CaseInsensitiveDict[Any] = CaseInsensitiveDict()
    store: Any = getattr(made, "_store")  # noqa: B009 - private to requests' stubs
    for key, value in pairs:
        store[key.lower()] = (key, value)
    return made


def extract_cookies(jar: Any, request: Any, raw: Any) -> None:
    """requests' ``extract_cookies_to_jar``, skipped when it provably adds nothing.

    That is: a ``RequestsCookieJar`` and an answer of this adapter without
    ``Set-Cookie``/``Set-Cookie2``, while requests' function is requests' own.
    """
    original = getattr(raw, "_original_response", None)
    if (
        type(original) is _Original
        and not original.sets_cookies
        and type(jar) is RequestsCookieJar
        and type(raw) is HTTPResponse
        and _requests_cookies.extract_cookies_to_jar is _EXTRACT_COOKIES
        and _requests_sessions.extract_cookies_to_jar is _EXTRACT_COOKIES
        and _requests_adapters.extract_cookies_to_jar is _EXTRACT_COOKIES
    ):
        # all that CookieJar.extract_cookies leaves then: its clock
        jar._now = jar._policy._now = int(time.time())  # type: ignore[attr-defined]
        return
    _requests_cookies.extract_cookies_to_jar(jar, request, raw)


class _Target:
    """Where a prepared request goes, and how requests names it in messages."""

    def __init__(self, request: PreparedRequest) -> None:
        url = request.url or ""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        try:
            port = parts.port
        except ValueError as exc:
            raise InvalidURL(f"Invalid URL {url!r}: {exc}", request=request) from None
        host = parts.hostname or ""
        if not host:
            raise InvalidURL(f"Invalid URL {url!r}: No host supplied", request=request)
        self.scheme = scheme
        self.host = host
        self.port = port or (443 if scheme == "https" else 80)
        shown = f"[{host}]" if ":" in host else host
        base = f"{scheme}://{shown}" + (f":{port}" if port is not None else "")
        try:
            self.endpoint = Endpoint.parse(base)
        except _rpc.InvalidRequest as exc:
            raise InvalidURL(exc.message, request=request) from None
        self.path = request.path_url
        if _BAD_PATH.search(self.path):
            # a space or a control byte would bend the request line: urllib3
            # percent-encodes them for requests, so the shim sends the same
            self.path = parse_url(self.path).request_uri
        kind = "HTTPS" if scheme == "https" else "HTTP"
        self.pool = f"{kind}ConnectionPool(host={host!r}, port={self.port})"
        self.conn = f"{kind}Connection(host={host!r}, port={self.port})"

    def max_retries(self, cause: str) -> str:
        return f"{self.pool}: Max retries exceeded with url: {self.path} (Caused by {cause})"


_TARGETS: dict[str, _Target] = {}
#: what urllib3 percent-encodes in a target, and refuses in a method, for requests
_BAD_PATH = re.compile(r"[^!-~]")
_BAD_METHOD = re.compile(r"[^-!#$%&'*+.^_`|~0-9a-zA-Z]")


def _target(request: PreparedRequest) -> _Target:
    """``_Target(request)``, memoized per URL string (a pure function of it)."""
    url = request.url
    if type(url) is not str:
        return _Target(request)
    found = _TARGETS.get(url)
    if found is None:
        found = _Target(request)
        if len(_TARGETS) >= _MEMO_ENTRIES:
            _TARGETS.clear()
        _TARGETS[url] = found
    return found


class HTTPAdapter(_upstream.HTTPAdapter):
    """requests' adapter, sending on rpcclient's gevent transport (see the module docstring)."""

    def __init__(
        self,
        pool_connections: int = DEFAULT_POOLSIZE,
        pool_maxsize: int = DEFAULT_POOLSIZE,
        max_retries: int | Retry = DEFAULT_RETRIES,
        pool_block: bool = DEFAULT_POOLBLOCK,
        *,
        max_response_size: int = DEFAULT_MAX_RESPONSE_SIZE,
        idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
    ) -> None:
        if not isinstance(pool_maxsize, int) or pool_maxsize < 1:
            raise ValueError(f"pool_maxsize must be an int >= 1, not {pool_maxsize!r}")
        super().__init__(pool_connections, pool_maxsize, max_retries, pool_block)
        self.max_response_size = max_response_size
        self.idle_timeout = idle_timeout
        self._reset_threads()

    def _reset_threads(self) -> None:
        self._lock = _os_lock()
        #: per OS thread id: (generation, that thread's hub, its transports)
        self._by_thread: dict[int, tuple[int, Any, dict[tuple[Any, ...], GeventTransport]]] = {}
        self._generation = 0

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)  # type: ignore[misc]
        self.max_response_size = DEFAULT_MAX_RESPONSE_SIZE
        self.idle_timeout = DEFAULT_IDLE_TIMEOUT
        self._reset_threads()

    # -- transports, one set per OS thread ------------------------------------------
    # Keyed by the OS thread's id (never threading.local: monkey-patched, that is
    # per greenlet, and each greenlet would get a pool of its own), and held with
    # the thread's hub: the OS hands a dead thread's id to a new thread, whose
    # calls must not wait on sockets of the dead thread's hub.
    def _transports(self) -> dict[tuple[Any, ...], GeventTransport]:
        ident = _os_thread_id()
        hub = gevent.get_hub()
        entry = self._by_thread.get(ident)
        if entry is not None and entry[0] == self._generation and entry[1] is hub:
            return entry[2]
        with self._lock:
            live = sys._current_frames().keys()
            for other in [t for t in self._by_thread if t not in live]:
                del self._by_thread[other]  # the thread is gone; so is its hub
            transports: dict[tuple[Any, ...], GeventTransport] = {}
            self._by_thread[ident] = (self._generation, hub, transports)
        if entry is not None and entry[1] is hub:  # this thread's, from before close()
            for transport in entry[2].values():
                transport.close()
        return transports

    def _transport(self, tls: bool, verify: Any, cert: Any) -> GeventTransport:
        # plain HTTP needs no TLS context (loading a CA bundle takes milliseconds)
        key: tuple[Any, ...] = ()
        if tls:
            key = (verify, cert if cert is None or isinstance(cert, str) else tuple(cert))
        transports = self._transports()
        transport = transports.get(key)
        if transport is None:
            transport = transports[key] = GeventTransport(
                pool_size=self._pool_maxsize,  # type: ignore[attr-defined]
                idle_timeout=self.idle_timeout,
                max_response_size=self.max_response_size,
                tls=_tls(verify, cert) if tls else TLSConfig(),
                # requests decodes a Content-Encoding itself (``raw`` is the body as sent)
                decode_content=False,
            )
        return transport

    def close(self) -> None:
        """Close this thread's connections now, other threads' when they next send."""
        self._generation += 1
        self._transports()
        super().close()

    # -- one request -----------------------------------------------------------------
    def send(  # noqa: PLR0917 - requests' signature
        self,
        request: PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: Any = True,
        cert: Any = None,
        proxies: Any = None,
    ) -> Response:
        """Send ``request`` on the gevent transport; the whole answer read (see above)."""
        url = request.url or ""
        proxy = select_proxy(url, proxies) if proxies else None  # none to select from
        if proxy:
            raise UnsupportedArgument(
                "rpcclient.compat.requests does not send through proxies "
                f"(a proxy is configured for {urlsplit(url).scheme} by proxies= or the "
                "environment); set session.trust_env = False or remove it"
            )
        method = request.method or "GET"
        bad = _BAD_METHOD.search(method)
        if bad:  # urllib3's refusal for requests, before anything is sent
            raise ValueError(
                f"Method cannot contain non-token characters {method!r} "
                f"(found at least {bad.group()!r})"
            )
        target = _target(request)
        host = request.headers.get("Host")
        if host is not None:  # the caller's Host (virtual hosting), checked like any header
            text = host.decode("latin-1") if isinstance(host, bytes) else str(host)
            try:
                check_header("Host", text)
            except _rpc.InvalidRequest as exc:
                raise InvalidHeader(exc.message, request=request) from None
            target = copy.copy(target)  # the memoized one stays the URL's
            target.endpoint = replace(target.endpoint, host_header=text.strip())
        connect, read, deadline_policy = _timeouts(timeout)
        _check_files(url, verify, cert)
        headers = self._headers(request)
        length_known = (
            "content-length" in request.headers  # case-insensitive
            if type(request.headers) is CaseInsensitiveDict
            else "content-length" in (k.lower() for k in request.headers)
        )
        retries: Retry = self.max_retries
        body = _wire_body(request.body, length_known)
        # a streamed body may be partly consumed by a failed attempt: never re-sent
        resendable = body is None or isinstance(body, bytes)
        idle_resends = 0  # re-sends after an idle close (see the module docstring)
        while True:
            prepared = Request(
                endpoint=target.endpoint,
                method=method,
                target=target.path,
                headers=headers,
                body=body,
                name=f"{request.method} {target.pool}{target.path}",
            )
            policy = deadline_policy or _Timeout(
                connect=connect, read=read, pool=connect, total=None
            )
            deadline = policy.start()
            try:
                answer = self._transport(target.scheme == "https", verify, cert).send(
                    prepared, deadline
                )
            except _rpc.RPCError as exc:
                if (
                    type(exc) is _rpc.ConnectionLost
                    and exc.idle_close
                    and resendable
                    and method.upper() in _REPEATABLE
                    and idle_resends < self._pool_maxsize  # type: ignore[attr-defined]
                ):
                    idle_resends += 1  # each on another connection: the one that failed is gone
                    continue
                if not resendable:
                    retries = Retry(0, read=False)
                retries = self._retry_or_raise(exc, retries, request, target, (connect, read))
                gevent.sleep(retries.get_backoff_time())
                continue
            raw = self._raw(answer)
            has_retry_after = "retry-after" in (k.lower() for k, _ in answer.headers.raw_items())
            status_retry = retries.is_retry(request.method or "GET", answer.status, has_retry_after)
            if resendable and status_retry:
                try:
                    retries = retries.increment(request.method, url, response=raw)
                except MaxRetryError as exc:
                    if retries.raise_on_status:
                        cause = target.max_retries(repr(exc.reason))
                        raise RetryError(cause, request=request) from None
                    return self.build_response(request, raw)
                after = retries.get_retry_after(raw) if retries.respect_retry_after_header else None
                gevent.sleep(after if after is not None else retries.get_backoff_time())
                continue
            return self.build_response(request, raw)

    def build_response(self, req: PreparedRequest, resp: Any) -> Response:
        """requests' ``build_response``; the cookie pass skipped when it adds nothing."""
        response = Response()
        response.status_code = getattr(resp, "status", None)  # type: ignore[assignment]
        headers = getattr(resp, "headers", {})
        response.headers = (
            case_insensitive(list(headers.itermerged()))  # what CaseInsensitiveDict(h) holds
            if type(headers) is HTTPHeaderDict
            else CaseInsensitiveDict(headers)
        )
        response.encoding = get_encoding_from_headers(response.headers)
        response.raw = resp
        response.reason = response.raw.reason
        response.url = req.url.decode("utf-8") if isinstance(req.url, bytes) else req.url  # type: ignore[assignment]
        extract_cookies(response.cookies, req, resp)
        response.request = req
        response.connection = self
        return response

    def _headers(self, request: PreparedRequest) -> list[tuple[bytes, bytes]]:
        checked = []
        memo = _HEADERS
        for name, value in header_items(request.headers):
            plain = type(name) is str and type(value) is str
            if plain:
                found = memo.get((name, value), _UNKNOWN)
                if found is not _UNKNOWN:  # checked before: the same answer
                    if found is not None:
                        checked.append(found)
                    continue
            entry = self._header(request, name, value)
            if plain:
                if len(memo) >= _MEMO_ENTRIES:
                    memo.clear()
                memo[name, value] = entry
            if entry is not None:
                checked.append(entry)
        return checked

    @staticmethod
    def _header(request: PreparedRequest, name: Any, value: Any) -> tuple[bytes, bytes] | None:
        """One header as the transport sends it, or None when the transport writes it."""
        text_name = name.decode("ascii") if isinstance(name, bytes) else str(name)
        low = text_name.lower()
        if low in _FRAMING:
            return None
        if low == "host":
            return None  # goes into the endpoint (see send)
        text_value = value.decode("latin-1") if isinstance(value, bytes) else str(value)
        try:
            return check_header(text_name, text_value.rstrip(" \t"))
        except _rpc.InvalidRequest as exc:
            raise InvalidHeader(exc.message, request=request) from None

    def _raw(self, answer: Any) -> HTTPResponse:
        fields = list(answer.headers.raw_items())
        headers = HTTPHeaderDict()
        for name, value in fields:
            headers.add(name, value)
        return HTTPResponse(
            body=io.BytesIO(bytes(answer.body)),
            headers=headers,
            status=answer.status,
            version=11 if answer.http_version == "1.1" else 10,
            reason=answer.reason,
            preload_content=False,
            # as requests asks urllib3: ``raw.read()`` gives the body as sent;
            # ``iter_content`` / ``content`` decode it
            decode_content=False,
            original_response=_Original(fields),  # type: ignore[arg-type]
            enforce_content_length=False,
        )

    @staticmethod
    def _retry_or_raise(
        exc: _rpc.RPCError,
        retries: Retry,
        request: PreparedRequest,
        target: _Target,
        bounds: tuple[float | None, float | None],
    ) -> Retry:
        """The Retry for the next attempt after ``exc``, or raise requests' error for it."""
        error = _translate(exc, request, target, *bounds)
        if exc.may_have_reached_server or isinstance(error, PoolTimeout):
            raise error from exc
        reason: Exception = (
            ConnectTimeoutError(str(error))
            if isinstance(exc, _rpc.ConnectTimeout)
            else NewConnectionError(None, str(error))  # type: ignore[arg-type]
        )
        try:
            return retries.increment(request.method, request.url, error=reason)
        except (MaxRetryError, ConnectTimeoutError, NewConnectionError, ResponseError):
            raise error from exc


def _translate(
    err: _rpc.RPCError,
    request: PreparedRequest,
    target: _Target,
    connect: float | None,
    read: float | None,
) -> Exception:
    """requests' exception for an rpcclient error, built as requests builds it.

    ``args[0]`` is the urllib3 error requests would wrap (so ``str()`` and
    ``e.args[0].args[0]`` read as with requests); it names the pool and the
    path, never the URL's credentials.
    """
    kw: dict[str, Any] = {"request": request}
    detail = err.message
    pool: Any = target.pool  # urllib3 formats its pool with str()
    path = target.path
    if isinstance(err, _rpc.PoolTimeout):
        return PoolTimeout(EmptyPoolError(pool, f"Pool is full: {detail}"), **kw)
    if isinstance(err, _rpc.ConnectTimeout):
        reason = ConnectTimeoutError(
            f"Connection to {target.host} timed out. (connect timeout={connect})"
        )
        return ConnectTimeout(MaxRetryError(pool, path, reason), **kw)
    if isinstance(err, _rpc.ReadTimeout):
        message = f"Read timed out. (read timeout={read})"
        return ReadTimeout(ReadTimeoutError(pool, path, message), **kw)
    if isinstance(err, _rpc.ConnectError):
        context = err.__cause__ or err.__context__
        if isinstance(context, ssl.SSLError | ssl.CertificateError) or "TLS" in detail:
            return SSLError(MaxRetryError(pool, path, Urllib3SSLError(detail)), **kw)
        conn: Any = target.conn
        reason = NewConnectionError(conn, f"Failed to establish a new connection: {detail}")
        return ConnectionError(MaxRetryError(pool, path, reason), **kw)
    if isinstance(err, _rpc.ResponseTooLarge):
        return ResponseTooLarge(detail, **kw)
    if isinstance(err, _rpc.ProtocolError):
        if _is_truncation(err):
            broken = Urllib3ProtocolError("Connection broken: IncompleteRead", detail)
            return ChunkedEncodingError(broken, **kw)
        if "content-length" in detail.lower():
            return InvalidHeader(detail, **kw)
    aborted = Urllib3ProtocolError("Connection aborted.", detail)
    return ConnectionError(aborted, **kw)


def _is_truncation(err: _rpc.ProtocolError) -> bool:
    # The gevent transport reports an answer cut short by the peer's close as
    # a ProtocolError caused by EOFError, or by the C parser's EOF complaints.
    cause = err.__cause__
    if isinstance(cause, EOFError):
        return True
    text = f"{err.message} {cause or ''}"
    return any(
        mark in text
        for mark in ("Incomplete response", "Invalid EOF state", "closed the connection in the")
    )


def __getattr__(name: str) -> Any:
    # the rest of requests.adapters (its imports and helpers)
    return getattr(_upstream, name)
