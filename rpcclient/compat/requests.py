"""``requests``, as far as web code calling RPC servers uses it, on the gevent transport.

Replace ``import requests`` with ``from rpcclient.compat import requests`` and
calls like ``requests.post(url, json=payload, timeout=(1, 5)).json()`` go
through rpcclient's pooled keep-alive gevent transport: each request in one
write, connections kept per host, cooperative without monkey-patching.

Supported: ``request/get/options/head/post/put/patch/delete`` (module
functions and :class:`Session` methods) with ``params=`` (dict, list of
pairs, str), ``data=`` (bytes, str, dict or pairs form-encoded, a file-like
read into memory, any other iterable of bytes sent chunked), ``json=``,
``headers=``, ``auth=`` (a ``(user, password)`` tuple: Basic),
``timeout=`` (a number or a ``(connect, read)`` tuple; ``None``, requests'
default, is no bound), ``verify=`` (bool or a CA bundle file), ``cert=``
and ``allow_redirects=``. :class:`Response` has ``status_code``, ``ok``,
``reason``, ``headers`` (case-insensitive), ``content``, ``text``,
``encoding``, ``json()``, ``raise_for_status()``, ``elapsed``, ``url``.
The exceptions, also under ``exceptions``, are subclasses of requests' own
when requests is installed (``except requests.exceptions.Timeout:`` keeps
working), and a stand-alone tree of the same shape when it is not. The
rpcclient error behind each one is its ``__cause__``.

Where it differs from requests (each difference is loud, never silent):

- **Unsupported arguments raise** :class:`UnsupportedArgument` (a
  ``NotImplementedError``) naming the argument, before anything is sent:
  ``proxies``, ``stream=True``, ``files``, ``cookies``, ``hooks``, an
  ``auth`` object that is not a tuple, a ``Host`` header. A
  :class:`Session` has no ``mount``, ``cookies`` or ``proxies`` to set
  (``AttributeError``); the environment (proxies, ``.netrc``,
  ``REQUESTS_CA_BUNDLE``) is never read.
- **Redirects are not followed.** With ``allow_redirects=True`` (requests'
  default except for ``head``) a 301/302/303/307/308 answer with a
  ``Location`` raises :class:`RedirectNotFollowed` (it carries the
  ``response``); pass ``allow_redirects=False`` to get the 3xx back, as
  requests would.
- **Cookies are neither stored nor sent**; ``Set-Cookie`` stays in
  ``response.headers``.
- ``Accept-Encoding: identity`` is sent by default. Should a server
  compress anyway (or the caller ask for it), ``gzip`` and ``deflate`` are
  decoded, within the size limit; other codings raise
  :class:`ContentDecodingError`.
- **Timeouts are stricter.** The read bound covers the whole answer after
  the request starts going out (requests' bounds each ``recv``), so a
  dripping server cannot stretch it: expiry is :class:`ReadTimeout`, also
  while the body arrives (requests then raises a ``ConnectionError``). The
  wait for a pooled connection (``pool_size`` per host, 10 by default) is
  bounded by the connect timeout: :class:`PoolTimeout`, a
  ``ConnectionError`` and a ``Timeout``.
- A **truncated answer** raises :class:`ChunkedEncodingError`, as requests
  does for a truncated body; it is also a ``ConnectionError`` (requests'
  class for a broken head) because the two cannot always be told apart.
  Malformed answers that requests lets through (a head cut short, two
  Content-Lengths) raise ``ConnectionError``.
- Answers above ``max_response_size`` (64 MiB by default) raise
  :class:`ResponseTooLarge`.
- ``text`` without a charset in Content-Type (and not ``text/*``, which is
  ISO-8859-1 as in requests) decodes as UTF-8 with replacement: no
  character-set guessing. ``elapsed`` runs until the whole body arrived.
- Module functions share one pooled :class:`Session` (requests makes a new
  one per call). ``verify=True`` uses the system's CA store, not certifi's.
"""

from __future__ import annotations

import base64
import json as _json
import re
import ssl
import sys
import types
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from datetime import timedelta
from time import perf_counter
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlencode, urlsplit

from .. import exceptions as _rpc
from .._gevent_transport import TLSConfig
from .._models import Body, Endpoint, Request, check_header
from .._public import GeventTransport
from .._timeouts import Timeout as _Timeout
from .._version import __version__

__all__ = [
    "CaseInsensitiveDict",
    "ChunkedEncodingError",
    "ConnectTimeout",
    "ConnectionError",
    "ContentDecodingError",
    "HTTPError",
    "InvalidHeader",
    "InvalidJSONError",
    "InvalidSchema",
    "InvalidURL",
    "JSONDecodeError",
    "MissingSchema",
    "PoolTimeout",
    "ReadTimeout",
    "RedirectNotFollowed",
    "RequestException",
    "Response",
    "ResponseTooLarge",
    "SSLError",
    "Session",
    "Timeout",
    "UnsupportedArgument",
    "delete",
    "exceptions",
    "get",
    "head",
    "options",
    "patch",
    "post",
    "put",
    "request",
]

MIB = 1024 * 1024
DEFAULT_POOL_SIZE = 10
DEFAULT_MAX_RESPONSE_SIZE = 64 * MIB
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# RFC 9110 token: what a method may be made of (nothing that could end the request line)
_METHOD = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
# what requests leaves unquoted when it re-quotes a URL
_SAFE = "!#$%&'()*+,/:;=?@[]~"
# framing is computed from the body, as requests does
_FRAMING = frozenset({"content-length", "transfer-encoding"})


# -- exceptions -----------------------------------------------------------------------


class _Standalone:
    """requests' exception tree, for when requests is not installed."""

    class RequestException(OSError):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.response = kwargs.pop("response", None)
            self.request = kwargs.pop("request", None)
            super().__init__(*args, **kwargs)

    class ConnectionError(RequestException):
        pass

    class SSLError(ConnectionError):
        pass

    class Timeout(RequestException):
        pass

    class ConnectTimeout(ConnectionError, Timeout):
        pass

    class ReadTimeout(Timeout):
        pass

    class HTTPError(RequestException):
        pass

    class MissingSchema(RequestException, ValueError):
        pass

    class InvalidSchema(RequestException, ValueError):
        pass

    class InvalidURL(RequestException, ValueError):
        pass

    class InvalidHeader(RequestException, ValueError):
        pass

    class ChunkedEncodingError(RequestException):
        pass

    class ContentDecodingError(RequestException):
        pass

    class InvalidJSONError(RequestException):
        pass

    class JSONDecodeError(InvalidJSONError, _json.JSONDecodeError):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            _json.JSONDecodeError.__init__(self, *args)
            _Standalone.InvalidJSONError.__init__(self, *self.args, **kwargs)


if TYPE_CHECKING:
    from requests import exceptions as _upstream

    _INSTALLED = True
else:
    try:
        from requests import exceptions as _upstream

        _INSTALLED = True
    except ImportError:
        _upstream = _Standalone
        _INSTALLED = False

#: True when the exceptions below are also requests' own
REQUESTS_INSTALLED: bool = _INSTALLED


class RequestException(_upstream.RequestException):
    """Base of every error a request raises (``response``/``request`` as in requests)."""

    response: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # requests' signature (``response=``, ``request=`` keywords), retyped:
        # ``response`` is this module's Response, not requests'
        super().__init__(*args, **kwargs)


class ConnectionError(RequestException, _upstream.ConnectionError):
    """The connection failed or broke: refused, reset, closed, malformed answer."""


class SSLError(ConnectionError, _upstream.SSLError):
    """The TLS handshake failed (certificate not trusted, wrong host name ...)."""


class Timeout(RequestException, _upstream.Timeout):
    """A bound of ``timeout=`` ran out."""


class ConnectTimeout(ConnectionError, Timeout, _upstream.ConnectTimeout):
    """The connect did not finish in time; nothing was sent, safe to retry."""


class ReadTimeout(Timeout, _upstream.ReadTimeout):
    """The request was sent and the whole answer did not arrive in time."""


class PoolTimeout(ConnectionError, Timeout):
    """No pooled connection came free within the connect timeout; nothing was sent."""


class HTTPError(RequestException, _upstream.HTTPError):
    """Raised by :meth:`Response.raise_for_status` for a 4xx/5xx answer."""


class MissingSchema(RequestException, _upstream.MissingSchema):
    """The URL has no ``http://`` or ``https://``."""


class InvalidSchema(RequestException, _upstream.InvalidSchema):
    """The URL's scheme is not http or https."""


class InvalidURL(RequestException, _upstream.InvalidURL):
    """The URL cannot be used (no host, bad port, bad characters)."""


class InvalidHeader(RequestException, _upstream.InvalidHeader):
    """A header name or value is not a str/bytes, or could break the request."""


class ChunkedEncodingError(ConnectionError, _upstream.ChunkedEncodingError):
    """The server closed the connection in the middle of its answer."""


class ContentDecodingError(RequestException, _upstream.ContentDecodingError):
    """The body's Content-Encoding is unsupported or the body does not decode."""


class InvalidJSONError(RequestException, _upstream.InvalidJSONError):
    """``json=`` could not be encoded (NaN, infinity, a type json refuses)."""


class JSONDecodeError(InvalidJSONError, _upstream.JSONDecodeError):
    """:meth:`Response.json` found no JSON in the body (also a ``json.JSONDecodeError``)."""


class ResponseTooLarge(RequestException):
    """The answer is above the session's ``max_response_size`` (requests has no limit)."""


class RedirectNotFollowed(RequestException):
    """A redirect came back and ``allow_redirects`` was true: this shim never follows one.

    ``response`` is the 3xx answer; pass ``allow_redirects=False`` to get it
    returned instead.
    """


class UnsupportedArgument(NotImplementedError):
    """An argument requests supports and this shim does not; nothing was sent."""


#: ``requests.exceptions``' stand-in: ``from rpcclient.compat.requests import exceptions``
#: and ``import rpcclient.compat.requests.exceptions`` both work.
exceptions = types.ModuleType(
    f"{__name__}.exceptions", "The exceptions of rpcclient.compat.requests."
)
for _cls in (
    RequestException,
    ConnectionError,
    SSLError,
    Timeout,
    ConnectTimeout,
    ReadTimeout,
    PoolTimeout,
    HTTPError,
    MissingSchema,
    InvalidSchema,
    InvalidURL,
    InvalidHeader,
    ChunkedEncodingError,
    ContentDecodingError,
    InvalidJSONError,
    JSONDecodeError,
    ResponseTooLarge,
    RedirectNotFollowed,
    UnsupportedArgument,
):
    setattr(exceptions, _cls.__name__, _cls)
del _cls
sys.modules[exceptions.__name__] = exceptions


def _is_truncation(err: _rpc.ProtocolError) -> bool:
    # The gevent transport reports an answer cut short by the peer's close as
    # a ProtocolError caused by EOFError, or by the C parser's EOF complaints.
    cause = err.__cause__
    if isinstance(cause, EOFError):
        return True
    text = str(cause) if cause is not None else ""
    return "Incomplete response" in text or "Invalid EOF state" in text


def _translate(err: _rpc.RPCError) -> RequestException:
    """The requests-style exception for an rpcclient error (the one mapping edge)."""
    message = str(err)
    if isinstance(err, _rpc.ConnectTimeout):
        return ConnectTimeout(message)
    if isinstance(err, _rpc.PoolTimeout):
        return PoolTimeout(message)
    if isinstance(err, _rpc.ReadTimeout):
        return ReadTimeout(message)
    if isinstance(err, _rpc.ConnectError):
        if isinstance(err.__context__, ssl.SSLError | ssl.CertificateError):
            return SSLError(message)
        return ConnectionError(message)
    if isinstance(err, _rpc.ConnectionLost):
        return ConnectionError(message)
    if isinstance(err, _rpc.ResponseTooLarge):
        return ResponseTooLarge(message)
    if isinstance(err, _rpc.DecodeError):  # only a Content-Encoding reaches here
        return ContentDecodingError(message)
    if isinstance(err, _rpc.ProtocolError):
        return ChunkedEncodingError(message) if _is_truncation(err) else ConnectionError(message)
    return RequestException(message)


# -- headers --------------------------------------------------------------------------


class CaseInsensitiveDict(MutableMapping[str, Any]):
    """A dict whose keys compare case-insensitively and keep the case last set."""

    def __init__(self, data: Mapping[str, Any] | Iterable[tuple[str, Any]] = (), **kw: Any) -> None:
        self._store: dict[str, tuple[str, Any]] = {}
        self.update(data, **kw)

    def __setitem__(self, key: str, value: Any) -> None:
        self._store[key.lower()] = (key, value)

    def __getitem__(self, key: str) -> Any:
        return self._store[key.lower()][1]

    def __delitem__(self, key: str) -> None:
        del self._store[key.lower()]

    def __iter__(self) -> Iterator[str]:
        return (key for key, _ in self._store.values())

    def __len__(self) -> int:
        return len(self._store)

    def lower_items(self) -> Iterator[tuple[str, Any]]:
        return ((low, pair[1]) for low, pair in self._store.items())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mapping):
            return NotImplemented
        return dict(self.lower_items()) == dict(CaseInsensitiveDict(other).lower_items())

    __hash__ = None  # type: ignore[assignment]

    def copy(self) -> CaseInsensitiveDict:
        return CaseInsensitiveDict(self._store.values())

    def __repr__(self) -> str:
        return repr(dict(self.items()))


def _joined(fields: Iterable[tuple[str, str]]) -> CaseInsensitiveDict:
    # repeated fields are joined with ", ", keeping the first spelling (as requests)
    headers = CaseInsensitiveDict()
    for name, value in fields:
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


def default_headers() -> CaseInsensitiveDict:
    """A new Session's headers; identity encoding, since nothing decodes a br body."""
    return CaseInsensitiveDict(
        {
            "User-Agent": f"rpcclient/{__version__} (requests compat)",
            "Accept-Encoding": "identity",
            "Accept": "*/*",
        }
    )


def _header_text(part: object, name: object, value: object, what: str) -> str:
    if isinstance(part, bytes):
        return part.decode("ascii" if what == "name" else "latin-1")
    if isinstance(part, str):
        return part
    raise InvalidHeader(
        f"Header part ({part!r}) from ({name!r}, {value!r}) must be of type str or bytes, "
        f"not {type(part)}"
    )


def _check_headers(headers: CaseInsensitiveDict) -> list[tuple[bytes, bytes]]:
    checked = []
    for name, value in headers.items():
        text_name = _header_text(name, name, value, "name")
        if text_name.lower() in _FRAMING:
            continue
        if text_name.lower() == "host":
            raise UnsupportedArgument(
                "rpcclient.compat.requests does not support headers={'Host': ...}: "
                "the Host header always names the URL's host"
            )
        # trailing whitespace is not part of a field value: requests sends it, we drop it
        text_value = _header_text(value, name, value, "value").rstrip(" \t")
        try:
            checked.append(check_header(text_name, text_value))
        except _rpc.InvalidRequest as exc:
            raise InvalidHeader(exc.message) from None
    return checked


# -- the response ---------------------------------------------------------------------


def _content_type(value: str) -> tuple[str, dict[str, str]]:
    mime, *params = value.split(";")
    parsed = {}
    for param in params:
        key, sep, val = param.strip().partition("=")
        if sep:
            parsed[key.strip().lower()] = val.strip().strip("'\"")
    return mime.strip().lower(), parsed


def encoding_from_headers(headers: Mapping[str, str]) -> str | None:
    """The charset of Content-Type; ISO-8859-1 for text/*, UTF-8 for JSON (as requests)."""
    ctype = headers.get("content-type")
    if not ctype:
        return None
    mime, params = _content_type(ctype)
    if "charset" in params:
        return params["charset"]
    if "text" in mime:
        return "ISO-8859-1"
    if "application/json" in mime:
        return "utf-8"
    return None


class Response:
    """A complete answer: the body is read before the call returns."""

    __slots__ = (
        "_content",
        "elapsed",
        "encoding",
        "headers",
        "history",
        "reason",
        "status_code",
        "url",
    )

    def __init__(
        self,
        status_code: int,
        reason: str,
        *,
        headers: CaseInsensitiveDict,
        content: bytes,
        url: str,
        elapsed: timedelta,
    ) -> None:
        self.status_code = status_code
        self.reason = reason
        self.headers = headers
        self._content = content
        self.url = url
        self.elapsed = elapsed
        self.encoding: str | None = encoding_from_headers(headers)
        #: always empty: redirects are never followed
        self.history: list[Response] = []

    @property
    def content(self) -> bytes:
        return self._content

    @property
    def text(self) -> str:
        """The body decoded with ``encoding`` (UTF-8 when unknown), errors replaced."""
        try:
            return self._content.decode(self.encoding or "utf-8", errors="replace")
        except LookupError:  # an unknown charset: as requests, fall back to the default
            return self._content.decode("utf-8", errors="replace")

    def json(self, **kwargs: Any) -> Any:
        """The body as JSON; :class:`JSONDecodeError` when it is not JSON."""
        try:
            if not self.encoding:
                try:
                    # json detects UTF-8/16/32 (and a BOM) in bytes
                    return _json.loads(self._content, **kwargs)
                except UnicodeDecodeError:
                    pass
            return _json.loads(self.text, **kwargs)
        except _json.JSONDecodeError as exc:
            raise JSONDecodeError(exc.msg, exc.doc, exc.pos, response=self) from None

    @property
    def ok(self) -> bool:
        return not 400 <= self.status_code < 600

    def __bool__(self) -> bool:
        return self.ok

    @property
    def is_redirect(self) -> bool:
        return "location" in self.headers and self.status_code in REDIRECT_STATUSES

    def raise_for_status(self) -> None:
        """Raise :class:`HTTPError` for a 4xx or 5xx answer (requests' message)."""
        if 400 <= self.status_code < 500:
            kind = "Client Error"
        elif 500 <= self.status_code < 600:
            kind = "Server Error"
        else:
            return
        raise HTTPError(
            f"{self.status_code} {kind}: {self.reason} for url: {self.url}", response=self
        )

    def close(self) -> None:
        """Nothing to release: the connection went back to the pool with the whole body."""

    def __enter__(self) -> Response:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Response [{self.status_code}]>"


# -- preparing a request --------------------------------------------------------------


def _encode_pairs(data: Mapping[Any, Any] | Iterable[tuple[Any, Any]]) -> str:
    items = data.items() if isinstance(data, Mapping) else data
    pairs: list[tuple[Any, Any]] = []
    for key, value in items:
        values = (
            [value] if isinstance(value, str | bytes) or not isinstance(value, Iterable) else value
        )
        pairs.extend((key, v) for v in values if v is not None)
    return urlencode(pairs)


def _encode_params(params: Any) -> str:
    if params is None:
        return ""
    if isinstance(params, bytes):
        return params.decode("ascii")
    if isinstance(params, str):
        return params
    return _encode_pairs(params)


def prepare_url(
    url: str | bytes, params: Any = None
) -> tuple[str, str, str, tuple[str, str] | None]:
    """``(base URL, request target, full URL, credentials)``; raise requests' URL errors."""
    if isinstance(url, bytes):
        url = url.decode("utf-8")
    url = str(url).strip()
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise InvalidURL(f"Invalid URL {url!r}: {exc}") from None
    if not parts.scheme or "://" not in url:
        raise MissingSchema(
            f"Invalid URL {url!r}: No scheme supplied. Perhaps you meant https://{url}?"
        )
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise InvalidSchema(f"No connection adapters were found for {url!r}")
    try:
        host = parts.hostname
        port = parts.port
    except ValueError as exc:
        raise InvalidURL(f"Invalid URL {url!r}: {exc}") from None
    if not host:
        raise InvalidURL(f"Invalid URL {url!r}: No host supplied")
    try:
        host = host.encode("idna").decode("ascii")
    except UnicodeError:
        raise InvalidURL(f"Invalid URL {url!r}: URL has an invalid label.") from None
    shown = f"[{host}]" if ":" in host else host
    base = f"{scheme}://{shown}" + (f":{port}" if port is not None else "")
    path = quote(parts.path or "/", safe=_SAFE)
    query = quote(parts.query, safe=_SAFE)
    extra = _encode_params(params)
    if extra:
        query = f"{query}&{extra}" if query else extra
    target = f"{path}?{query}" if query else path
    credentials = None
    full = base + target
    if parts.username is not None:
        credentials = (unquote(parts.username), unquote(parts.password or ""))
        # requests keeps the credentials in ``response.url``
        userinfo = parts.netloc.rpartition("@")[0]
        full = f"{scheme}://{userinfo}@{base.partition('://')[2]}{target}"
    return base, target, full, credentials


def _basic_auth(user: str | bytes, password: str | bytes) -> str:
    raw_user = user.encode("latin-1") if isinstance(user, str) else user
    raw_password = password.encode("latin-1") if isinstance(password, str) else password
    return "Basic " + base64.b64encode(raw_user + b":" + raw_password).decode("ascii")


def _chunks(data: Iterable[Any]) -> Iterator[bytes]:
    for chunk in data:
        yield chunk.encode("utf-8") if isinstance(chunk, str) else bytes(chunk)


def encode_body(data: Any, json: Any) -> tuple[Body | None, str | None]:
    """``(body, content type or None)`` as requests builds them from ``data``/``json``."""
    if not data and json is not None:
        try:
            text = _json.dumps(json, allow_nan=False)
        except (ValueError, TypeError) as exc:
            raise InvalidJSONError(exc) from None
        return text.encode("utf-8"), "application/json"
    if data is None or (not data and not hasattr(data, "read")):
        return None, None
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data), None
    if isinstance(data, str):
        return data.encode("utf-8"), None
    if hasattr(data, "read"):
        content = data.read()
        return (content.encode("utf-8") if isinstance(content, str) else bytes(content)), None
    if isinstance(data, Mapping | list | tuple):
        return _encode_pairs(data).encode("ascii"), "application/x-www-form-urlencoded"
    if isinstance(data, Iterable):
        return _chunks(data), None
    raise TypeError(f"cannot send data of type {type(data).__name__}")


def coerce_timeout(timeout: Any) -> _Timeout:
    """rpcclient's Timeout for requests' ``timeout=``: None, a number, or (connect, read).

    The pool wait shares the connect bound; there is no total bound, as in requests.
    """
    if isinstance(timeout, tuple):
        if len(timeout) != 2:
            raise ValueError(
                f"Invalid timeout {timeout}. Pass a (connect, read) timeout tuple, "
                "or a single float to set both timeouts to the same value."
            )
        connect, read = timeout
    else:
        connect = read = timeout
    return _Timeout(connect=connect, read=read, pool=connect, total=None)


def _refuse(**arguments: Any) -> None:
    for name, value in arguments.items():
        if value:
            raise UnsupportedArgument(
                f"rpcclient.compat.requests does not support {name}={value!r}"
            )


# -- the session ----------------------------------------------------------------------


class Session:
    """A pooled session: one gevent transport per TLS setting, connections kept per host.

    ``headers``, ``auth``, ``params``, ``verify`` and ``cert`` are merged into
    every request as requests does. ``pool_size`` bounds connections per host;
    ``max_response_size`` bounds each answer; ``idle_timeout`` is how long an
    idle connection is kept. ``close()`` closes every connection; a later
    request opens new ones (as with requests).
    """

    __slots__ = (
        "_transports",
        "auth",
        "cert",
        "headers",
        "idle_timeout",
        "max_response_size",
        "params",
        "pool_size",
        "trust_env",
        "verify",
    )

    def __init__(
        self,
        *,
        pool_size: int = DEFAULT_POOL_SIZE,
        max_response_size: int = DEFAULT_MAX_RESPONSE_SIZE,
        idle_timeout: float | None = 1.5,
    ) -> None:
        self.headers = default_headers()
        self.auth: tuple[str | bytes, str | bytes] | None = None
        self.params: dict[str, Any] = {}
        self.verify: bool | str = True
        self.cert: str | tuple[str, str] | None = None
        #: accepted and ignored: the environment is never read
        self.trust_env = False
        self.pool_size = pool_size
        self.max_response_size = max_response_size
        self.idle_timeout = idle_timeout
        self._transports: dict[
            tuple[bool | str, str | tuple[str, str] | None], GeventTransport
        ] = {}

    def _transport(self, verify: bool | str, cert: str | tuple[str, str] | None) -> GeventTransport:
        key = (verify, cert)
        transport = self._transports.get(key)
        if transport is None:
            if isinstance(verify, str):
                tls = TLSConfig(verify=True, ca_certs=verify, cert=cert)
            else:
                tls = TLSConfig(verify=bool(verify), cert=cert)
            transport = self._transports[key] = GeventTransport(
                pool_size=self.pool_size,
                idle_timeout=self.idle_timeout,
                max_response_size=self.max_response_size,
                tls=tls,
            )
        return transport

    def request(  # noqa: PLR0917 - requests' own signature
        self,
        method: str | bytes,
        url: str | bytes,
        params: Any = None,
        data: Any = None,
        headers: Mapping[str, Any] | None = None,
        cookies: Any = None,
        files: Any = None,
        auth: Any = None,
        timeout: Any = None,
        allow_redirects: bool = True,
        proxies: Any = None,
        hooks: Any = None,
        stream: bool | None = None,
        verify: bool | str | None = None,
        cert: str | tuple[str, str] | None = None,
        json: Any = None,
    ) -> Response:
        """Send a request and return its complete :class:`Response` (see the module docstring)."""
        _refuse(cookies=cookies, files=files, proxies=proxies, hooks=hooks, stream=stream)
        if isinstance(method, bytes):
            method = method.decode("ascii")
        method = str(method).upper()
        if not _METHOD.match(method):
            raise ValueError(f"Method cannot contain non-token characters {method!r}")
        merged_params: Any = params
        if self.params:
            merged_params = {**self.params, **(dict(params) if params else {})}
        base, target, full_url, credentials = prepare_url(url, merged_params)

        merged = self.headers.copy()
        for name, value in (headers or {}).items():
            if value is None:
                merged.pop(name, None)
            else:
                merged[name] = value
        body, content_type = encode_body(data, json)
        if content_type is not None and "content-type" not in merged:
            merged["Content-Type"] = content_type
        auth = auth if auth is not None else (self.auth or credentials)
        if auth is not None:
            if not isinstance(auth, tuple) or len(auth) != 2:
                raise UnsupportedArgument(
                    f"rpcclient.compat.requests does not support auth={auth!r}: "
                    "only a (user, password) tuple (Basic)"
                )
            merged["Authorization"] = _basic_auth(*auth)
        checked = _check_headers(merged)
        try:
            endpoint = Endpoint.parse(base)
        except _rpc.InvalidRequest as exc:
            raise InvalidURL(exc.message) from None
        deadline = coerce_timeout(timeout).start()
        transport = self._transport(
            self.verify if verify is None else verify, self.cert if cert is None else cert
        )
        prepared = Request(
            endpoint=endpoint,
            method=method,
            target=target,
            headers=checked,
            body=body,
            name=f"{method} {full_url}",
        )
        started = perf_counter()
        try:
            answer = transport.send(prepared, deadline)
        except _rpc.RPCError as exc:
            raise _translate(exc) from exc
        elapsed = timedelta(seconds=perf_counter() - started)
        # the transport undid any Content-Encoding, within max_response_size
        content = bytes(answer.body)
        response = Response(
            status_code=answer.status,
            reason=answer.reason,
            headers=_joined(answer.headers.raw_items()),
            content=content,
            url=full_url,
            elapsed=elapsed,
        )
        if allow_redirects and response.is_redirect:
            raise RedirectNotFollowed(
                f"rpcclient.compat.requests does not follow redirects: {response.status_code} "
                f"to {response.headers['location']!r} from {full_url}; pass "
                "allow_redirects=False to get the response",
                response=response,
            )
        return response

    def get(self, url: str | bytes, **kwargs: Any) -> Response:
        kwargs.setdefault("allow_redirects", True)
        return self.request("GET", url, **kwargs)

    def options(self, url: str | bytes, **kwargs: Any) -> Response:
        kwargs.setdefault("allow_redirects", True)
        return self.request("OPTIONS", url, **kwargs)

    def head(self, url: str | bytes, **kwargs: Any) -> Response:
        kwargs.setdefault("allow_redirects", False)
        return self.request("HEAD", url, **kwargs)

    def post(self, url: str | bytes, data: Any = None, json: Any = None, **kwargs: Any) -> Response:
        return self.request("POST", url, data=data, json=json, **kwargs)

    def put(self, url: str | bytes, data: Any = None, **kwargs: Any) -> Response:
        return self.request("PUT", url, data=data, **kwargs)

    def patch(self, url: str | bytes, data: Any = None, **kwargs: Any) -> Response:
        return self.request("PATCH", url, data=data, **kwargs)

    def delete(self, url: str | bytes, **kwargs: Any) -> Response:
        return self.request("DELETE", url, **kwargs)

    def close(self) -> None:
        """Close every connection (requests made later open new ones)."""
        transports, self._transports = self._transports, {}
        for transport in transports.values():
            transport.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<rpcclient.compat.requests.Session transports={list(self._transports.values())!r}>"


# -- module functions -----------------------------------------------------------------

_default: Session | None = None


def _session() -> Session:
    # One pooled session for the module functions, made on first use.
    global _default  # noqa: PLW0603
    if _default is None:
        _default = Session()
    return _default


def request(method: str | bytes, url: str | bytes, **kwargs: Any) -> Response:
    """Send a request on the module's shared pooled Session."""
    return _session().request(method, url, **kwargs)


def get(url: str | bytes, params: Any = None, **kwargs: Any) -> Response:
    return _session().get(url, params=params, **kwargs)


def options(url: str | bytes, **kwargs: Any) -> Response:
    return _session().options(url, **kwargs)


def head(url: str | bytes, **kwargs: Any) -> Response:
    return _session().head(url, **kwargs)


def post(url: str | bytes, data: Any = None, json: Any = None, **kwargs: Any) -> Response:
    return _session().post(url, data=data, json=json, **kwargs)


def put(url: str | bytes, data: Any = None, **kwargs: Any) -> Response:
    return _session().put(url, data=data, **kwargs)


def patch(url: str | bytes, data: Any = None, **kwargs: Any) -> Response:
    return _session().patch(url, data=data, **kwargs)


def delete(url: str | bytes, **kwargs: Any) -> Response:
    return _session().delete(url, **kwargs)
