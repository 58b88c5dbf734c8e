"""RPCApp: protocol v1's server side as a plain WSGI app, and :func:`serve`.

Compiled with the handler (:mod:`.wsgi`). The rules it keeps are the
contract in :mod:`rpcclient.server`'s docstring. State: an app owns its
method table and limits, written at construction and by ``@app.method``
(before serving); a request's state is local to its call, and its deadline
is the context variable behind :func:`current_deadline`.
"""

from __future__ import annotations

import inspect
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from typing import Any, TypeVar, overload

import gevent
import msgpack
from mypy_extensions import mypyc_attr

from ... import _protocol
from ..._core.codec import DEFAULT_CODEC, Codec
from ...exceptions import DecodeError, InvalidRequest
from .. import dedup as _dedup
from ..dedup import DedupStore, MemoryDedupStore, RedisDedupStore
from .wsgi import RPCServer

__all__ = [
    "DEFAULT_MAX_BODY_SIZE",
    "MSGPACK_CONTENT_TYPES",
    "DedupStore",
    "MemoryDedupStore",
    "RPCApp",
    "RPCServer",
    "RedisDedupStore",
    "current_deadline",
    "serve",
]

DEFAULT_MAX_BODY_SIZE = 16 * 1024 * 1024
#: request Content-Types accepted (parameters such as ``charset`` are ignored)
MSGPACK_CONTENT_TYPES = frozenset({"application/x-msgpack", "application/msgpack"})

F = TypeVar("F", bound=Callable[..., Any])
StartResponse = Callable[..., Any]

_log = logging.getLogger("rpcclient.server")

# The grammar is the client's (rpcclient._protocol, its one home): a name the
# client refuses to send is a name nobody can call, so it is refused here at
# registration. The compiled patterns themselves, bound once to this module's
# names where its own copies were. Measured (bench/server_callgrind.py, seq):
# so bound, a request costs what it did with the copies (~64.8k instructions);
# bound by from-imports in the import block instead, ~1.8k more, on a path
# that matches none of them (why is not understood: the module's globals
# differed in number and order, the code did not).
_SERVICE = _protocol.SERVICE_NAME
_METHOD = _protocol.METHOD_NAME
_REQUEST_ID = _protocol.ECHOED_REQUEST_ID
_TIMEOUT_MS = _protocol.TIMEOUT_MS


_STATUS_LINES = {
    200: "200 OK",
    400: "400 Bad Request",
    404: "404 Not Found",
    405: "405 Method Not Allowed",
    409: "409 Conflict",
    411: "411 Length Required",
    413: "413 Content Too Large",
    415: "415 Unsupported Media Type",
    500: "500 Internal Server Error",
    503: "503 Service Unavailable",
}
_CLOSE = ("Connection", "close")

_deadline: ContextVar[float | None] = ContextVar("rpcclient.server.deadline", default=None)


def current_deadline() -> float | None:
    """The absolute :func:`time.monotonic` deadline of the call being handled.

    Set from the request's ``X-Rpc-Timeout-Ms`` header, counted from when the
    request arrived; ``None`` when the client sent no budget or outside a call.
    Greenlet-local (a context variable): greenlets a handler spawns do not
    inherit it, so pass it to them explicitly.
    """
    return _deadline.get()


class _Reject(Exception):
    """An error answer decided by the app itself (never by a handler)."""

    def __init__(self, status: int, type: str, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.type = type
        self.message = message
        self.data = data


class _TooManyContainers(Exception):
    pass


class _Method:
    """One registered function (a plain class: mypyc compiles it natively)."""

    __slots__ = ("fn", "name", "positional", "signature")

    def __init__(
        self,
        name: str,
        fn: Callable[..., Any],
        signature: inspect.Signature | None,
        positional: tuple[int, int] | None = None,
    ) -> None:
        self.name = name
        self.fn = fn
        #: None when the callable has no introspectable signature (some builtins)
        self.signature = signature
        #: (fewest, most) positional arguments a call without keywords may pass,
        #: when that alone decides whether the arguments bind; None: always bind
        self.positional = positional


def _positional(signature: inspect.Signature | None) -> tuple[int, int] | None:
    if signature is None:
        return None
    fewest = most = 0
    for param in signature.parameters.values():
        if param.kind is param.VAR_POSITIONAL:
            most = sys.maxsize
        elif param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
            most += 1
            if param.default is param.empty:
                fewest = most
        elif param.kind is param.KEYWORD_ONLY and param.default is param.empty:
            return None  # a required keyword: only bind() says what is missing
    return fewest, most


def _signature(fn: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):
        return None


def _check_name(name: object) -> tuple[str, str]:
    if not isinstance(name, str):
        raise TypeError(f"a method name must be a str 'service.method', not {name!r}")
    service, dot, method = name.partition(".")
    if not dot or not _SERVICE.match(service) or not _METHOD.match(method):
        raise ValueError(
            f"invalid method name {name!r}: expected 'service.method' made of letters, digits, "
            "'_' and '-' (and '.' in the method, but not dots alone)"
        )
    if _is_private(service, method):
        raise ValueError(f"invalid method name {name!r}: parts starting with '_' are private")
    return service, method


def _is_private(service: str, method: str) -> bool:
    return service.startswith("_") or any(part.startswith("_") for part in method.split("."))


@mypyc_attr(allow_interpreted_subclasses=True)  # users may subclass it
class RPCApp:
    """A WSGI application serving registered functions over wire protocol v1.

    ``max_body_size`` bounds a request body (``413`` above it);
    ``max_concurrency`` (``None``: no bound) is how many calls may be in
    flight at once before new ones are shed with ``503``; ``base_path``
    (``""`` or like ``"/rpc"``) prefixes every call path. Register functions
    before serving; the registry (and ``base_path``, ``codec``) is not meant to change
    under traffic: accepted paths and Content-Types are remembered.
    ``dedup`` (a :class:`rpcclient.server.dedup.DedupStore`, e.g.
    ``MemoryDedupStore()``) runs each request id at most once within its
    window (README "Exactly-once calls (server)").
    """

    def __init__(
        self,
        codec: Codec = DEFAULT_CODEC,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        base_path: str = "",
        max_concurrency: int | None = None,
        dedup: _dedup.DedupStore | None = None,
    ) -> None:
        if not isinstance(max_body_size, int) or max_body_size < 1:
            raise ValueError(f"max_body_size must be a positive int, not {max_body_size!r}")
        if max_concurrency is not None and (
            not isinstance(max_concurrency, int) or max_concurrency < 1
        ):
            raise ValueError(f"max_concurrency must be None or >= 1, not {max_concurrency!r}")
        base_path = base_path.rstrip("/")
        if base_path and (
            not base_path.startswith("/") or any(c in base_path for c in " \t\r\n\x00?#%")
        ):
            raise ValueError(f"base_path must be '' or a plain path like '/rpc': {base_path!r}")
        self.codec = codec
        self.max_body_size = max_body_size
        self.base_path = base_path
        self.max_concurrency = max_concurrency
        self._methods: dict[str, _Method] = {}
        #: PATH_INFO -> method, and Content-Type values, already accepted
        self._routes: dict[str, _Method] = {}
        self._ctypes: set[str] = set()
        self._in_flight = 0
        self.set_dedup(dedup)
        # A plain lock keeps the shedding count exact under threaded WSGI
        # servers too; under gevent it is never contended across a switch.
        self._lock = threading.Lock()

    def set_dedup(self, store: _dedup.DedupStore | None) -> None:
        """Deduplicate calls by request id in ``store`` (None: off); before serving."""
        self.dedup = store
        #: the X-Rpc-Dedup header of every answer (None: dedup off)
        self._dedup_advert = None if store is None else _dedup.advert(store)

    # -- registration ----------------------------------------------------------------

    @overload
    def register(self, name: str) -> Callable[[F], F]: ...

    @overload
    def register(self, name: str, fn: F) -> F: ...

    def register(self, name: str, fn: F | None = None) -> F | Callable[[F], F]:
        """Serve ``fn`` as ``name`` (``"service.method"``); returns ``fn``.

        Without ``fn``, returns a decorator. Raises ``ValueError`` for a name
        the client could not call (see the module rules) or one already
        registered, ``TypeError`` for a ``fn`` that is not callable.
        """
        if fn is None:

            def decorator(func: F) -> F:
                return self.register(name, func)

            return decorator
        self._add([(name, fn)])
        return fn

    def add_service(self, service: str, obj: object) -> list[str]:
        """Serve every public callable attribute ``attr`` of ``obj`` as
        ``service.attr``; returns the names, sorted. All or nothing: on a bad
        or duplicate name nothing is registered."""
        if not isinstance(service, str) or not _SERVICE.match(service) or service.startswith("_"):
            raise ValueError(f"invalid service name {service!r}")
        pairs = []
        for attr in sorted(dir(obj)):
            if attr.startswith("_"):
                continue
            value = getattr(obj, attr)
            if callable(value):
                pairs.append((f"{service}.{attr}", value))
        self._add(pairs)
        return [name for name, _ in pairs]

    def _add(self, pairs: Iterable[tuple[str, Callable[..., Any]]]) -> None:
        entries = []
        seen = set(self._methods)
        for name, fn in pairs:
            _check_name(name)
            if not callable(fn):
                raise TypeError(f"{name}: {fn!r} is not callable")
            if name in seen:
                raise ValueError(f"{name!r} is already registered")
            seen.add(name)
            signature = _signature(fn)
            entries.append(_Method(name, fn, signature, _positional(signature)))
        for entry in entries:
            self._methods[entry.name] = entry

    def methods(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._methods)

    @property
    def in_flight(self) -> int:
        """Calls admitted and not yet answered."""
        return self._in_flight

    def __repr__(self) -> str:
        return (
            f"<RPCApp methods={len(self._methods)} in_flight={self._in_flight} "
            f"max_concurrency={self.max_concurrency} max_body_size={self.max_body_size}>"
        )

    # -- WSGI ------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        """Answer one request; never raises for anything a client or a handler did."""
        status, headers, body = self.respond(environ)
        headers.append(("Content-Length", str(len(body))))
        start_response(status, headers)
        if environ.get("REQUEST_METHOD") == "HEAD":
            return [b""]  # a HEAD answer has the headers of the 405 but no body
        return [body]

    def respond(self, environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
        """The answer to one request: status line, headers, body (a HEAD's too).

        What ``__call__`` sends through ``start_response``, without it: the
        headers hold no ``Content-Length`` (the body's length is it; a HEAD
        answer carries it with no body). The bundled server calls this
        directly when the app's ``__call__`` is this class's own (README,
        "server speed": the ``start_response`` round trip cost ~6k
        instructions per request). Never raises for anything a client or a
        handler did.
        """
        headers: list[tuple[str, str]] = [] if self._dedup_advert is None else [self._dedup_advert]
        try:
            status, body = 200, self._serve(environ, headers)
        except _Reject as rej:
            status = rej.status
            body = self._envelope(rej.type, rej.message, rej.data)
        request_id = environ.get("HTTP_X_REQUEST_ID")
        if request_id and _REQUEST_ID.match(request_id):
            headers.append(("X-Request-Id", request_id))
        headers.append(("Content-Type", self.codec.content_type))
        return _STATUS_LINES[status], headers, body

    def _serve(self, environ: dict[str, Any], headers: list[tuple[str, str]]) -> bytes:
        arrived = time.monotonic()
        length, chunked = _framing(environ, headers)
        try:
            method, deadline = self._check_head(environ, headers, length, chunked, arrived)
            self._admit(headers)
        except _Reject:
            if chunked or (length is not None and length > self.max_body_size):
                headers.append(_CLOSE)
            raise
        try:
            data = self._read_body(environ, headers, length)
            if self.dedup is not None or "HTTP_X_RPC_DEDUP_SCOPE" in environ:
                return _dedup.call_once(self, environ, headers, method, data, deadline)
            return self._call(method, data, deadline)
        finally:
            with self._lock:
                self._in_flight -= 1

    def _check_head(
        self,
        environ: dict[str, Any],
        headers: list[tuple[str, str]],
        length: int | None,
        chunked: bool,
        arrived: float,
    ) -> tuple[_Method, float | None]:
        if environ.get("REQUEST_METHOD") != "POST":
            headers.append(("Allow", "POST"))
            raise _Reject(405, "MethodNotAllowed", "calls must use POST")
        path = environ.get("PATH_INFO", "")
        method = self._routes.get(path) or self._resolve(path)
        raw_ctype = environ.get("CONTENT_TYPE", "")
        if raw_ctype not in self._ctypes:
            self._check_content_type(raw_ctype)
        if length is None and not chunked:
            raise _Reject(411, "LengthRequired", "a Content-Length or a chunked body is required")
        if length is not None and length > self.max_body_size:
            raise _Reject(
                413,
                "RequestTooLarge",
                f"request body of {length} bytes is above the limit of {self.max_body_size}",
            )
        deadline = None
        budget = environ.get("HTTP_X_RPC_TIMEOUT_MS")
        if budget is not None:
            if not _TIMEOUT_MS.match(budget.strip()):
                raise _Reject(
                    400, "BadRequest", f"X-Rpc-Timeout-Ms must be integer ms: {budget[:40]!r}"
                )
            deadline = arrived + int(budget) / 1000.0
        return method, deadline

    def _check_content_type(self, raw: str) -> None:
        ctype = raw.partition(";")[0].strip().lower()
        if ctype not in MSGPACK_CONTENT_TYPES and ctype != self.codec.content_type:
            raise _Reject(
                415,
                "UnsupportedMediaType",
                f"Content-Type must be application/x-msgpack, not {ctype[:60]!r}",
            )
        if len(self._ctypes) < 64:  # accepted spellings, remembered (bounded)
            self._ctypes.add(raw)

    def _resolve(self, path: str) -> _Method:
        prefix = self.base_path + "/"
        service, _, method = path[len(prefix) :].partition("/")
        method_entry = None
        if path.startswith(prefix) and not _is_private(service, method):
            method_entry = self._methods.get(f"{service}.{method}")
        if method_entry is None:
            raise _Reject(404, "MethodNotFound", f"no method at {path[:200]!r}")
        # one path per method: the cache is bounded by the registry
        self._routes[path] = method_entry
        return method_entry

    def _admit(self, headers: list[tuple[str, str]]) -> None:
        with self._lock:
            limit = self.max_concurrency
            if limit is not None and self._in_flight >= limit:
                shed = True
            else:
                shed = False
                self._in_flight += 1
        if shed:
            headers.append(("Retry-After", "1"))
            raise _Reject(
                503,
                "Unavailable",
                f"server busy: {limit} calls in flight; the call was not run",
                {"not_run": True},
            )

    def _read_body(
        self, environ: dict[str, Any], headers: list[tuple[str, str]], length: int | None
    ) -> bytes:
        stream = environ["wsgi.input"]
        want = self.max_body_size + 1 if length is None else length
        try:
            data: bytes = stream.read(want)
        except OSError as exc:  # the client went away, or broke the chunked framing
            headers.append(_CLOSE)
            raise _Reject(400, "BadRequest", f"request body could not be read: {exc}") from None
        if length is None and len(data) > self.max_body_size:
            headers.append(_CLOSE)
            raise _Reject(
                413,
                "RequestTooLarge",
                f"chunked request body is above the limit of {self.max_body_size} bytes",
            )
        if length is not None and len(data) != length:
            headers.append(_CLOSE)
            raise _Reject(400, "BadRequest", "request body is shorter than its Content-Length")
        return data

    def _call(self, method: _Method, data: bytes, deadline: float | None) -> bytes:
        try:
            args = _decode(self.codec, data)
        except DecodeError:
            message = "request body is not one valid msgpack value"
            raise _Reject(400, "BadRequest", message) from None
        except _TooManyContainers:
            # no "as" names in this function: compiled by mypyc (1.x), the
            # clauses' names share one typed slot and the second one fails
            raise _Reject(400, "BadRequest", str(sys.exc_info()[1])) from None
        pos: tuple[Any, ...] | list[Any] = ()
        kw: dict[str, Any] = {}
        if isinstance(args, list):
            pos = args
        elif isinstance(args, dict):
            if not all(type(key) is str for key in args):
                raise _Reject(400, "BadRequest", "keyword argument names must be strings")
            kw = args
        elif args is not None:
            pos = (args,)
        fits = method.positional
        if fits is not None and not kw and fits[0] <= len(pos) <= fits[1]:
            pass  # binds: Signature.bind would cost more than the call itself
        elif method.signature is not None:
            try:
                method.signature.bind(*pos, **kw)
            except TypeError:
                unbound = sys.exc_info()[1]
                raise _Reject(400, "BadArguments", f"{method.name}: {unbound}") from None
        token = _deadline.set(deadline)
        try:
            result = method.fn(*pos, **kw)
        except (Exception, gevent.Timeout):  # noqa: BLE001 - reported, never raised
            exc: Any = sys.exc_info()[1]
            # gevent.Timeout is a BaseException; one escaping a handler is the
            # handler's own (this app sets none), so it is reported like any error.
            _log.error("%s raised %s", method.name, type(exc).__name__, exc_info=exc)
            data_attr = getattr(exc, "data", None)
            raise _Reject(500, type(exc).__name__, _safe_str(exc), data_attr) from None
        finally:
            _deadline.reset(token)
        try:
            return self.codec.pack(result)
        except InvalidRequest:
            unpackable: Any = sys.exc_info()[1]
            _log.error("%s returned a %s that cannot be packed", method.name, type(result))
            raise _Reject(
                500,
                "EncodeError",
                f"{method.name} returned a {type(result).__name__} msgpack cannot encode: "
                f"{unpackable.message}",
            ) from None

    def _envelope(self, type: str, message: str, data: Any) -> bytes:
        try:
            return self.codec.pack({"error": {"type": type, "message": message, "data": data}})
        except InvalidRequest:
            # the handler's exception carried data msgpack cannot encode
            return self.codec.pack({"error": {"type": type, "message": message, "data": None}})


#: bodies up to this size decode without the container budget (their worst is ~6 MB)
BUDGET_FREE_SIZE = 64 * 1024
#: containers (arrays and maps) a larger body may hold: this many, plus one per
#: CONTAINER_BYTES body bytes
CONTAINER_FLOOR = 4096
CONTAINER_BYTES = 3


def _decode(codec: Codec, data: bytes) -> Any:
    """``codec.unpack(data)``, with a budget of containers for large bodies.

    A msgpack container costs one wire byte and 56-64 bytes decoded (an empty
    list or dict) plus the 8-byte slot that holds it: a body of empty maps
    decodes to ~88 bytes per body byte, ~1.4 GB at the 16 MiB default limit.
    Every other value is cheaper per wire byte (a short str ~20 B/byte, a bin
    ~14, a fixint 8 for its slot). So the decoded size is bounded by bounding
    containers: one per :data:`CONTAINER_BYTES` body bytes (plus
    :data:`CONTAINER_FLOOR`), which a list of pairs (``[[1, 2], ...]``, 3
    bytes each) still fits, and which caps containers at ~30 B per body byte.
    The hooks cost a call per container, so bodies up to
    :data:`BUDGET_FREE_SIZE` skip them; a codec subclass with its own
    ``unpack`` is used as it is.
    """
    if len(data) <= BUDGET_FREE_SIZE or type(codec).unpack is not Codec.unpack:
        return codec.unpack(data)
    left = CONTAINER_FLOOR + len(data) // CONTAINER_BYTES
    budget = left

    def count(obj: Any) -> Any:
        nonlocal left
        left -= 1
        if left < 0:
            raise _TooManyContainers(
                f"request body holds more than {budget} arrays and maps "
                f"(one per {CONTAINER_BYTES} bytes of body)"
            )
        return obj

    options: dict[str, Any] = {
        "raw": codec.raw,
        "strict_map_key": codec.strict_map_key,
        "timestamp": codec.timestamp,
        "max_str_len": codec.max_str_len,
        "max_bin_len": codec.max_bin_len,
        "max_array_len": codec.max_array_len,
        "max_map_len": codec.max_map_len,
        "max_ext_len": codec.max_ext_len,
        "list_hook": count,
        "object_hook": count,
    }
    if codec.ext_hook is not None:
        options["ext_hook"] = codec.ext_hook
    try:
        return msgpack.unpackb(data, **options)
    except _TooManyContainers:
        raise
    except Exception as exc:  # noqa: BLE001 - msgpack raises ValueError, TypeError, ...
        raise DecodeError(f"request body is not valid msgpack ({exc})") from None


def _framing(environ: dict[str, Any], headers: list[tuple[str, str]]) -> tuple[int | None, bool]:
    """``(content_length, chunked)`` as the server framed the body, or 400 + close.

    Under any WSGI server the body is what ``wsgi.input`` holds: by
    ``CONTENT_LENGTH`` when it is set, else to its end for a chunked body. A
    framing that two readers could see differently is refused outright: a
    Transfer-Encoding that is not exactly ``chunked`` (``chunked, identity``,
    ``xchunked``, ``chunked,chunked`` as a server joins two fields), chunked
    together with a Content-Length, a Content-Length that is not one integer
    (``1, 98``). The answer says ``Connection: close``: the body's end is
    unknowable, so nothing after it on the connection may be read as a request.
    """
    coding = environ.get("HTTP_TRANSFER_ENCODING")
    # typed str (PEP 3333 says it is): compiled, strip/isdigit/int are str's
    # own operations, not generic calls on an Any (~1.5k instructions)
    raw_length: str = environ.get("CONTENT_LENGTH") or ""
    text = raw_length.strip(" \t")
    if coding is not None:
        if coding.strip(" \t").lower() != "chunked":
            headers.append(_CLOSE)
            raise _Reject(400, "BadRequest", f"unsupported Transfer-Encoding {coding[:40]!r}")
        if text:
            headers.append(_CLOSE)
            raise _Reject(400, "BadRequest", "Content-Length together with Transfer-Encoding")
        return None, True
    if not text:
        return None, False
    # 1 to 19 ASCII digits (str.isdigit alone takes other scripts' digits), no regex call
    if not (len(text) <= 19 and text.isascii() and text.isdigit()):
        headers.append(_CLOSE)
        raise _Reject(400, "BadRequest", f"invalid Content-Length {text[:40]!r}")
    return int(text), False


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # noqa: BLE001 - any __str__ bug must not break the answer
        return f"<{type(exc).__name__}: str() failed>"


def serve(
    app: Callable[..., Any],
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    backlog: int | None = None,
    spawn: Any = None,
    # Optional only because mypyc (1.x) fails on a float keyword-only default
    # beside **options; None is 1.0.
    stop_timeout: float | None = 1.0,
    **options: Any,
) -> RPCServer:
    """Start serving the WSGI ``app`` (usually an :class:`RPCApp`) on the bundled
    gevent server and return the started :class:`RPCServer`.

    ``port=0`` picks a free port; read it from ``server.address`` (``(host,
    port)``) or ``server.url``. ``spawn``: ``None`` for an unbounded greenlet
    pool. ``options`` go to :class:`RPCServer`: ``max_connections``,
    ``idle_timeout``, ``header_timeout``, ``body_timeout`` (see
    :mod:`rpcclient.server._engine.wsgi`). ``server.stop()``
    waits up to ``stop_timeout`` seconds for calls in progress;
    ``server.serve_forever()`` blocks until stopped. Raises ``OSError`` if the
    address cannot be bound.
    """
    server = RPCServer((host, port), app, backlog=backlog, spawn=spawn, **options)
    server.stop_timeout = 1.0 if stop_timeout is None else stop_timeout
    server.start()
    return server
