"""What the ``requests`` and ``urllib3`` transports share: bounds, hooks, one error edge.

Both transports drive urllib3's blocking ``http.client`` machinery, which
knows per-socket-operation timeouts only. This module enforces the rest of
rpcclient's contract around it, the same way for both:

**Bounds** (see :mod:`rpcclient._core.timeouts`):

- *pool*: our own first-come-first-served slots (:class:`EndpointSlots`), ``pool_size``
  slots per endpoint, acquired with the pool timeout before urllib3 is
  touched (expiry: PoolTimeout). urllib3's pool holds ``pool_size``
  connections in blocking mode behind it, so it never has to wait; should it
  ever, its wait is cut to the call's pool bound as well (EmptyPoolError is
  a PoolTimeout).
- *connect*: urllib3's socket connect timeout, plus a ``gevent.Timeout`` of
  the connect bound armed from the start of the exchange until the first
  byte of the request is about to be written (it also bounds DNS).
- *read*: ONE ``gevent.Timeout`` armed when the first write starts and
  covering the whole write and the whole answer, so a server that drips a
  byte at a time cannot stretch it. urllib3's per-``recv`` read timeout is
  passed too, so a process that is not monkey-patched (where a
  ``gevent.Timeout`` cannot interrupt a blocking ``recv``) still has a
  socket-level bound.
- *total*: every bound above is cut to what is left of the call's deadline.
- *idle / age*: a pooled connection idle for ``idle_timeout`` or older than
  ``max_connection_age`` is closed when next taken, never reused.
- *answer size*: ``max_head_size`` and ``max_response_size`` are checked
  on the parsed head, on Content-Length before any of the body is read, and
  while the body streams in (reading stops at the cap).

**Hooks**: urllib3 is extended only through the classes it lets users
choose (connection pool, connection and ``http.client`` response classes);
nothing is monkey-patched, and the wire behaviour stays theirs (the head and
the body leave in two writes). The connection class tells the current
:class:`Exchange` when a write starts (so the right timer runs and an error
can say whether the request may have reached the server); the response class
refuses heads that ``http.client`` would accept but that llhttp (the gevent
transport's parser) rejects: conflicting or malformed framing headers,
folded header lines, unparsable lines. The same broken answer thus raises
the same error class on every transport. The connection class also opens
its own socket (:func:`open_socket`): urllib3 closes a half-made socket on
``OSError`` only, so a ``gevent.Timeout`` or a kill landing in its connect
would leave the socket to the garbage collector. It also answers urllib3's
check of a pooled connection before reuse (``is_connected``) with a poll(0)
that does not yield (:func:`_readable_now`: a FIN or stray bytes mean the
connection is closed, not sent on), and closes the connection on any
exception out of that check, which urllib3 would leave to a traceback.
That poll sees the kernel's bytes only: bytes ``http.client`` had already
buffered past the answer's end (a stray answer in the same segment) are
seen by the response class when the answer ends (:func:`buffered_past`,
no syscall), and that connection is closed instead of pooled.
A head cut before its blank line, which ``http.client`` takes for a whole
one, is a truncated answer (ProtocolError), as on the gevent transport.

**urllib3-future** (it installs itself as the ``urllib3`` package, e.g.
with niquests) works too: its 4-tuple socket options are applied
(:func:`apply_socket_options`), its extra pool keywords passed through, the
idle clock started without its pool's help, and a connection given back
before it is closed. It parses heads itself, without our response class: it
skips 1xx answers on its own, and a 1xx that reaches us anyway (its 101) is
refused in :func:`read_answer`. ``tests/test_urllib3_future.py`` runs the
transports' tests on it.

**Closing**: urllib3 2.x's ``PoolManager.clear()`` forgets its pools and
leaves their idle sockets to the garbage collector; :class:`PoolFamily`
keeps track of the pools it made, so ``close()`` closes them now.

**One error edge**: :func:`exchange` is the single place where foreign
exceptions (``requests.exceptions.*``, ``urllib3.exceptions.*``,
``http.client``, ``OSError``, ``ssl``) become rpcclient errors, with the
classes the gevent transport uses for the same faults. The caller's own
``gevent.Timeout`` and ``GreenletExit`` pass through unchanged; on every exit
the answer's connection is closed unless the answer was read to the end, and
the slot is given back.
"""

from __future__ import annotations

import abc
import http.client
import select
import socket
import ssl
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from time import monotonic
from typing import Any, Final, Protocol

import gevent
import gevent.monkey
import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import (
    ClosedPoolError,
    ConnectTimeoutError,
    EmptyPoolError,
    HeaderParsingError,
    InvalidHeader,
    NameResolutionError,
    NewConnectionError,
    ResponseNotChunked,
)
from urllib3.exceptions import DecodeError as Urllib3DecodeError
from urllib3.exceptions import TimeoutError as Urllib3TimeoutError
from urllib3.response import BaseHTTPResponse
from urllib3.util import SKIP_HEADER
from urllib3.util.connection import allowed_gai_family
from urllib3.util.response import assert_header_parsing

from ..._config import (
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_CONNECTION_AGE,
    DEFAULT_MAX_HEAD_SIZE,
    DEFAULT_MAX_RESPONSE_SIZE,
    DEFAULT_POOL_SIZE,
    TLSConfig,
    check_pool_size,
)
from ..._core.models import Body, Headers, Request, Response
from ..._core.timeouts import Deadline
from ..._fork import on_fork_in_child
from ...exceptions import (
    ClientClosed,
    ConnectError,
    ConnectionLost,
    ConnectTimeout,
    PoolTimeout,
    ProtocolError,
    ReadTimeout,
    ResponseTooLarge,
    RPCError,
)
from ..base import Transport
from ..gevent.http11 import BadAnswer, check_request_id
from ..gevent.pool import Pool

__all__ = [
    "BlockingTransport",
    "EndpointSlots",
    "Exchange",
    "MalformedHead",
    "check_options",
    "exchange",
    "map_foreign_error",
    "PoolFamily",
    "apply_socket_options",
    "open_socket",
    "read_answer",
    "request_body",
    "socket_timeout",
]

MIB = 1024 * 1024
#: bytes asked of urllib3 per read while streaming a body
READ_CHUNK = 64 * 1024
#: socket-level timeouts are never set below this: urllib3 treats 0 as
#: "non-blocking", which would turn an expired deadline into the wrong error
MIN_SOCKET_TIMEOUT = 0.001
#: how deep the chain of wrapped exceptions is searched
_MAX_CHAIN = 16

_CURRENT: ContextVar[Exchange | None] = ContextVar("rpcclient_blocking_exchange", default=None)


# -- options --------------------------------------------------------------------------


def check_options(
    pool_size: int, tls: TLSConfig | None, idle_timeout: float | None, max_age: float | None
) -> TLSConfig:
    """Validate the options both transports take (as the gevent transport does)."""
    check_pool_size(pool_size)
    return tls or TLSConfig()


def context_pool_options(context: ssl.SSLContext) -> dict[str, Any]:
    """urllib3 pool options that leave a user's SSLContext in charge.

    urllib3 writes ``cert_reqs`` into the context it is given, so it gets the
    context's own verify mode; and it matches the host name itself whenever
    the context does not, so that is switched off when the context has
    ``check_hostname`` off on purpose.
    """
    options: dict[str, Any] = {"ssl_context": context, "cert_reqs": context.verify_mode}
    if not context.check_hostname:
        options["assert_hostname"] = False
    return options


def socket_timeout(seconds: float | None) -> float | None:
    """A socket-level timeout from a phase bound (None stays unbounded)."""
    return None if seconds is None else max(seconds, MIN_SOCKET_TIMEOUT)


def request_body(body: Body | None) -> tuple[bytes | Iterable[bytes] | None, bool]:
    """``(body, chunked)`` as urllib3 and requests take it.

    Bytes-likes go as bytes with a Content-Length; any other iterable goes
    chunked, one chunk per item (a generator, so requests does not mistake a
    list for form fields).
    """
    if body is None:
        return None, False
    if isinstance(body, bytes):
        return body, False
    if isinstance(body, bytearray | memoryview):
        return bytes(body), False
    return (bytes(chunk) for chunk in body), True


# -- the pool bound -------------------------------------------------------------------


class EndpointSlots:
    """``pool_size`` slots per endpoint: the bound on concurrent exchanges.

    A slot is taken before urllib3 is asked for a connection and given back
    when the exchange is over (its connection back in urllib3's pool or
    closed), so urllib3's own pool of the same size always has one ready.

    First come, first served, as on the gevent transport (the slots are a
    :class:`~rpcclient._transports.gevent.pool.Pool` used for its slots only): a released slot
    goes to the oldest waiter, and a greenlet that just released one queues
    behind the waiters. With a plain semaphore the releaser took it straight
    back, and waiters ran past their pool timeout behind busy greenlets.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._slots: dict[tuple[str, str, int], Pool] = {}

    def acquire(self, key: tuple[str, str, int], timeout: float | None) -> bool:
        """Take a slot, waiting at most ``timeout`` seconds (None: forever)."""
        pool = self._slots.get(key)
        if pool is None:
            pool = self._slots[key] = Pool(self.size, idle_timeout=None, max_age=None)
        return bool(pool.acquire(timeout))

    def release(self, key: tuple[str, str, int]) -> None:
        self._slots[key].release()

    def in_use(self, key: tuple[str, str, int]) -> int:
        pool = self._slots.get(key)
        return 0 if pool is None else pool.in_use

    @property
    def waiting(self) -> int:
        """Greenlets waiting for a slot, over all endpoints."""
        return sum(pool.waiting for pool in self._slots.values())

    def stats(self) -> dict[str, dict[str, int]]:
        return {
            f"{s}://{h}:{p}": {"size": self.size, "in_use": self.in_use((s, h, p))}
            for (s, h, p) in self._slots
        }

    def reset(self) -> None:
        """Forget every slot (in a forked child: the parent's calls are not ours)."""
        self._slots = {}


# -- one exchange ---------------------------------------------------------------------


class Exchange:
    """One request on one greenlet: its phase, its timer, its answer.

    The phase is ``"connect"`` until the connection hook reports the first
    write, then ``"read"`` (the read bound covers the write and the answer).
    Transports set ``raw`` (and ``conn``, its connection) as soon as urllib3
    returns the answer, and ``complete`` once its body was read to the end
    with nothing read past it (the connection may then be reused).
    """

    __slots__ = (
        "complete",
        "conn",
        "deadline",
        "first_write_failed",
        "phase",
        "raw",
        "read_bound",
        "read_expires",
        "timer",
        "written",
    )

    def __init__(self, deadline: Deadline) -> None:
        self.deadline = deadline
        self.phase = "connect"
        self.timer: gevent.Timeout | None = None
        self.read_bound: float | None = None
        self.read_expires: float | None = None  # monotonic end of the read bound
        self.written = False
        self.first_write_failed = False
        self.raw: BaseHTTPResponse | None = None
        self.conn: Any = None  # the raw answer's connection, once known
        self.complete = False

    def start(self) -> None:
        bound = self.deadline.connect_for()
        if bound is not None:
            self.timer = gevent.Timeout.start_new(bound)

    def before_write(self) -> None:
        """Called by the connection hook before each write of the request."""
        if self.phase == "read":
            return
        self.phase = "read"
        if self.timer is not None:
            self.timer.close()
            self.timer = None
        self.read_bound = bound = self.deadline.read_for()
        if bound is not None:
            self.read_expires = monotonic() + bound
            self.timer = gevent.Timeout.start_new(bound)

    def after_write(self, ok: bool) -> None:
        if ok:
            self.written = True
        elif not self.written:
            # The first write failed: the server got no byte of this request.
            self.first_write_failed = True

    def pool_wait(self) -> float | None:
        return self.deadline.pool_for()

    def finish(self) -> None:
        """Stop the timer; close the answer's connection unless it was read to the end."""
        if self.timer is not None:
            self.timer.close()
            self.timer = None
        raw = self.raw
        if raw is not None:
            self.raw = None
            conn = self.conn
            if self.complete:
                # the idle clock starts now (urllib3-future gives connections
                # back without the pool's ``_put_conn``, where 2.x stamps them)
                PoolFamily.stamp(conn)
            # Back to urllib3's pool first, so its capacity stays whole:
            # urllib3-future's ``raw.close()`` forgets the connection, which
            # ``release_conn()`` then never gives back. Our slot is still held,
            # so nobody can take the connection before it is closed below.
            raw.release_conn()
            if not self.complete:
                raw.close()
                if conn is not None:
                    conn.close()


class _Closable(Protocol):
    @property
    def closed(self) -> bool: ...


@contextmanager
def exchange(
    request: Request, deadline: Deadline, slots: EndpointSlots, owner: _Closable
) -> Iterator[Exchange]:
    """Run one exchange under our bounds; THE edge where foreign errors are mapped.

    Takes a slot of the endpoint within the pool bound (PoolTimeout), raises
    ClientClosed when ``owner`` is closed, arms the connect timer, and yields
    the :class:`Exchange` the connection hooks report to. Whatever leaves
    the block is an rpcclient error, except the caller's own
    ``gevent.Timeout`` and ``GreenletExit`` (and other BaseExceptions), which
    propagate unchanged after the same cleanup.
    """
    endpoint = request.endpoint
    if owner.closed:
        raise ClientClosed("transport is closed", name=request.name, endpoint=endpoint.url)
    wait = deadline.pool_for()
    if not slots.acquire(endpoint.key, wait):
        raise PoolTimeout(
            f"no free connection within {wait or 0:.3g} s (pool of {slots.size}, all in use)",
            name=request.name,
            endpoint=endpoint.url,
        )
    ex = Exchange(deadline)
    token = _CURRENT.set(ex)
    try:
        if owner.closed:
            raise ClientClosed("transport is closed", name=request.name, endpoint=endpoint.url)
        ex.start()
        yield ex
    except BaseException as exc:
        mapped = map_foreign_error(exc, ex, request)
        if mapped is exc:
            raise
        raise mapped from (None if isinstance(exc, gevent.Timeout) else exc)
    finally:
        try:
            ex.finish()
        finally:
            _CURRENT.reset(token)
            slots.release(endpoint.key)


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and every exception it wraps, outermost first.

    requests wraps urllib3's errors in ``args[0]``, urllib3 wraps
    ``http.client``'s in ``args[1]`` and ``MaxRetryError.reason``; Python
    links causes in ``__cause__`` / ``__context__``.
    """
    seen: set[int] = set()
    out: list[BaseException] = []
    todo: list[BaseException] = [exc]
    while todo and len(out) < _MAX_CHAIN:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        out.append(current)
        links: list[object] = [getattr(current, "reason", None), current.__cause__, *current.args]
        if current.__cause__ is None and not current.__suppress_context__:
            links.append(current.__context__)
        todo.extend(link for link in links if isinstance(link, BaseException))
    return out


def _timed_out(chain: list[BaseException]) -> bool:
    # NewConnectionError subclasses urllib3's ConnectTimeoutError for history's
    # sake: a refused connect is not a timeout.
    return any(
        isinstance(e, TimeoutError)
        or (isinstance(e, Urllib3TimeoutError) and not isinstance(e, NewConnectionError))
        for e in chain
    )


def _describe(chain: list[BaseException]) -> str:
    root = chain[-1]
    if isinstance(root, OSError) and root.strerror:
        return root.strerror
    return f"{type(root).__name__}: {root}" if str(root) else type(root).__name__


def map_foreign_error(exc: BaseException, ex: Exchange, request: Request) -> BaseException:
    """The rpcclient error for ``exc``, or ``exc`` itself when it must pass unchanged.

    ============================================  =======================================
    fault                                         error (as the gevent transport)
    ============================================  =======================================
    our connect timer, socket connect timeout     ConnectTimeout
    anything else before the first write          ConnectError (refused, DNS, TLS)
    our read timer, socket read timeout           ReadTimeout
    closed before any byte of an answer           ConnectionLost (``may_have_reached_server``
                                                  False when the first write failed)
    body shorter than its framing                 ProtocolError
    malformed status line or head                 ProtocolError
    a head line above http.client's limit         ResponseTooLarge
    reset / broken pipe after the first write     ConnectionLost
    urllib3's pool empty (never expected)         PoolTimeout
    urllib3's pool closed by ``close()``          ClientClosed
    anything else                                 ProtocolError
    ============================================  =======================================
    """
    if isinstance(exc, RPCError):
        return exc
    kw: dict[str, Any] = {"name": request.name, "endpoint": request.endpoint.url}
    chain = _chain(exc)
    if ex.timer is not None and any(e is ex.timer for e in chain):
        if ex.phase == "connect":
            return ConnectTimeout("connect did not finish in time", **kw)
        bound = ex.read_bound or 0.0
        return ReadTimeout(f"no complete answer within {bound:.3g} s", **kw)
    if not isinstance(exc, Exception):
        return exc  # the caller's gevent.Timeout, GreenletExit, KeyboardInterrupt
    if any(isinstance(e, ClosedPoolError) for e in chain):
        return ClientClosed("transport is closed", **kw)
    if any(isinstance(e, EmptyPoolError) for e in chain):
        return PoolTimeout("no free connection in urllib3's pool", **kw)
    if ex.phase == "connect":
        if _timed_out(chain):
            return ConnectTimeout("connect did not finish in time", **kw)
        return ConnectError(f"cannot connect: {_describe(chain)}", **kw)
    if _timed_out(chain):
        return ReadTimeout(f"no complete answer in time ({_describe(chain)})", **kw)
    reached = not ex.first_write_failed
    if any(isinstance(e, http.client.LineTooLong) for e in chain):
        return ResponseTooLarge(f"response head above the limit: {_describe(chain)}", **kw)
    if any(isinstance(e, http.client.RemoteDisconnected) for e in chain):
        return ConnectionLost(
            "server closed the connection before answering",
            may_have_reached_server=reached,
            **kw,
        )
    if any(isinstance(e, http.client.IncompleteRead) for e in chain):
        return ProtocolError("server closed the connection in the middle of the answer", **kw)
    malformed = (
        http.client.HTTPException,
        HeaderParsingError,
        InvalidHeader,
        Urllib3DecodeError,
        ResponseNotChunked,
    )
    if any(isinstance(e, malformed) for e in chain):
        return ProtocolError(f"malformed HTTP answer: {_describe(chain)}", **kw)
    if any(isinstance(e, OSError) for e in chain):
        return ConnectionLost(
            f"connection lost: {_describe(chain)}", may_have_reached_server=reached, **kw
        )
    return ProtocolError(f"unexpected {type(exc).__name__}: {exc}", **kw)


# -- urllib3 hooks ----------------------------------------------------------------------


class MalformedHead(http.client.HTTPException):
    """A head http.client parsed leniently that llhttp would refuse."""


#: interim (1xx) answers skipped before a final one; more is a ProtocolError
MAX_INTERIM = 64
#: header lines of one interim answer, and bytes per line (http.client's own bounds)
_MAX_INTERIM_LINES = 100
_MAX_LINE = 65536
#: a loop over interim answers that goes on this long lets the other greenlets run
YIELD_AFTER: Final = 0.005
#: how: a timer this short makes the event loop run one whole turn (``sleep(0)``
#: runs only greenlets already ready: no timer, so no deadline, would fire)
_YIELD_SLEEP: Final = 0.000001


_INTERIM_LATE: Final = "interim (1xx) answers until the deadline, no final one"


class _InterimClock:
    """The deadline and the yields of one answer's loop over interim answers
    (and over the pieces of its body, see :func:`read_answer`).

    gevent's ``recv`` returns at once, without a switch, while bytes wait:
    against a peer that sends 1xx after 1xx as fast as it can, neither our
    read timer nor any other greenlet would run. So the loop reads the clock
    after every line: past the exchange's read bound it raises TimeoutError
    (a ReadTimeout), and every :data:`YIELD_AFTER` s it lets the event loop
    run one turn. Made at the first interim answer only: a final answer
    that comes first reads no clock.
    """

    __slots__ = ("expires", "what", "yield_at")

    def __init__(self, what: str = _INTERIM_LATE) -> None:
        ex = _CURRENT.get()
        self.expires = None if ex is None else ex.read_expires
        self.what = what
        self.yield_at = monotonic() + YIELD_AFTER

    def tick(self) -> None:
        now = monotonic()
        if self.expires is not None and now >= self.expires:
            raise TimeoutError(self.what)
        if now >= self.yield_at:
            gevent.sleep(_YIELD_SLEEP)
            self.yield_at = monotonic() + YIELD_AFTER


class _HeadReader:
    """The answer's stream while its head is read, noting where the stream ended.

    A line without its line end is the end of the stream (http.client reads
    lines of at most its limit + 1 bytes and refuses longer ones itself).
    """

    __slots__ = ("ended", "fp")

    def __init__(self, fp: Any) -> None:
        self.fp = fp
        self.ended = False

    def readline(self, limit: int = -1) -> bytes:
        line: bytes = self.fp.readline(limit)
        if not line.endswith(b"\n") and (limit < 0 or len(line) < limit):
            self.ended = True
        return line

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fp, name)


class _CheckedResponse(http.client.HTTPResponse):
    """http.client's response, refusing heads the gevent transport refuses.

    Framing must be unambiguous (one Content-Length of digits, never together
    with Transfer-Encoding), no line may be folded, and every line must have
    parsed as a header. Interim answers are skipped: http.client skips
    ``100 Continue`` only (without bound) and returns a ``103 Early Hints``
    as if it were the answer, leaving the real one unread on a connection
    that goes back to the pool, for the next call to take. Here every 1xx but
    101 is skipped, at most :data:`MAX_INTERIM` of them, within the read
    bound and yielding to other greenlets (:class:`_InterimClock`); an unasked-for
    ``101 Switching Protocols`` is refused. Raised errors end as
    ProtocolError, and the connection is closed.
    """

    def _read_status(self) -> tuple[str, int, str]:
        # every 1xx, 100 included, is skipped here: http.client's own loop
        # over 100s (in begin) never sees one, nor its missing bounds
        clock: _InterimClock | None = None
        for _ in range(MAX_INTERIM + 1):
            version, status, reason = super()._read_status()  # type: ignore[misc]
            if status == 101:
                raise MalformedHead("101 Switching Protocols, but no upgrade was asked for")
            if not 100 <= status < 200:
                return version, status, reason
            if clock is None:
                clock = _InterimClock()
            self._skip_interim_head(clock)
        raise MalformedHead(f"more than {MAX_INTERIM} interim (1xx) answers")

    def _skip_interim_head(self, clock: _InterimClock) -> None:
        for _ in range(_MAX_INTERIM_LINES + 1):
            clock.tick()
            line = self.fp.readline(_MAX_LINE + 1)
            if len(line) > _MAX_LINE:
                raise http.client.LineTooLong("interim answer header line")
            if line in (b"\r\n", b"\n", b""):
                if not line:
                    raise http.client.IncompleteRead(b"")
                return
        raise MalformedHead(f"more than {_MAX_INTERIM_LINES} header lines in an interim answer")

    #: set when the answer ended with bytes already read past it (see _close_conn)
    left_over = False

    def _close_conn(self) -> None:
        # http.client calls this once the answer is read to its end (and on
        # close): the stream is dropped, with whatever it buffered past the
        # answer. Such bytes (a stray answer in the same segment) mean the
        # connection is not idle: noted here, so that it is closed, not pooled.
        fp = self.fp
        if fp is not None and not self.left_over:
            self.left_over = buffered_past(fp)
        super()._close_conn()  # type: ignore[misc]

    def begin(self) -> None:
        # http.client ends a head at a blank line OR at the end of the stream:
        # a head cut before its blank line would pass for a whole one (with
        # no Content-Length, an empty body read until close). The reads of
        # the head go through a recorder that notes the end of the stream.
        fp = self.fp
        head: Any = _HeadReader(fp)
        self.fp = head
        try:
            super().begin()
        finally:
            if self.fp is head:
                self.fp = fp
        if head.ended:
            raise http.client.IncompleteRead(b"")  # ProtocolError: a truncated answer
        msg = self.msg
        try:
            assert_header_parsing(msg)
        except HeaderParsingError as exc:
            raise MalformedHead(f"unparsable header lines: {exc}") from None
        lengths = msg.get_all("Content-Length") or []
        if len(lengths) > 1:
            raise MalformedHead("more than one Content-Length")
        if lengths and not lengths[0].strip().isdigit():
            raise MalformedHead(f"invalid Content-Length {lengths[0]!r}")
        if lengths and "Transfer-Encoding" in msg:
            raise MalformedHead("both Content-Length and Transfer-Encoding")
        for name, value in msg.items():
            if "\n" in value or "\r" in value:
                raise MalformedHead(f"folded header line in {name!r}")


class _NothingToRead:
    """A socket stand-in that reads nothing (for :func:`buffered_past`)."""

    __slots__ = ()

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        return 0


_NOTHING: Final = _NothingToRead()


def buffered_past(fp: Any) -> bool:
    """Whether ``fp`` (an answer's stream) holds bytes it already took from the socket.

    ``fp`` is http.client's ``BufferedReader`` over a ``socket.SocketIO``.
    Its ``peek`` returns the buffered bytes, or, with none, makes ONE read of
    the socket: for that read the SocketIO is given a stand-in socket that
    reads nothing, so the peek costs no syscall and never waits (bytes
    still in the kernel are what the poll of ``is_connected`` sees, before
    the connection is next used). A stream
    that cannot be looked at that way counts as holding bytes: a connection
    goes back to the pool only when provably idle.
    """
    raw = getattr(fp, "raw", None)
    if not isinstance(raw, socket.SocketIO) or not hasattr(fp, "peek"):
        return True
    state = vars(raw)
    sock = state.get("_sock")
    if sock is None:
        return True
    state["_sock"] = _NOTHING
    try:
        return bool(fp.peek(1))
    except (OSError, ValueError):  # a timed-out or closed stream: not provably idle
        return True
    finally:
        state["_sock"] = sock


def apply_socket_options(sock: socket.socket, options: Iterable[tuple[Any, ...]] | None) -> None:
    """Set urllib3's ``socket_options`` on a TCP socket, in either dialect.

    urllib3 2.x gives ``(level, option, value)``; urllib3-future (which
    installs itself as the ``urllib3`` package, e.g. with niquests) adds a
    fourth item naming the transport (``"tcp"`` or ``"udp"``): only the TCP
    ones apply here. Anything else is refused, naming the option.
    """
    for option in options or ():
        if len(option) == 3:
            sock.setsockopt(*option)
        elif len(option) == 4 and isinstance(option[3], str):
            if option[3].lower() == "tcp":
                sock.setsockopt(*option[:3])
        else:
            raise ValueError(f"socket option {option!r} is not (level, option, value[, proto])")


def open_socket(conn: HTTPConnection) -> socket.socket:
    """Connect ``conn``'s socket as urllib3 does, closing it on ANY failed exit.

    Tries each address ``getaddrinfo`` gives, in order. Errors are urllib3's
    own (NameResolutionError, ConnectTimeoutError, NewConnectionError), so
    that requests and urllib3 report them as they always did.
    """
    host = conn.host.strip("[]")
    try:
        infos = socket.getaddrinfo(host, conn.port, allowed_gai_family(), socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise NameResolutionError(conn.host, conn, exc) from exc
    last: OSError = OSError("getaddrinfo returned no address")
    for family, kind, proto, _, address in infos:
        sock = socket.socket(family, kind, proto)
        connected = False
        try:
            apply_socket_options(sock, conn.socket_options)
            sock.settimeout(conn.timeout)
            if conn.source_address:
                sock.bind(conn.source_address)
            sock.connect(address)
            connected = True
            return sock
        except TimeoutError as exc:
            raise ConnectTimeoutError(
                conn, f"Connection to {conn.host} timed out. (connect timeout={conn.timeout})"
            ) from exc
        except OSError as exc:
            last = exc
        finally:
            if not connected:
                sock.close()
    raise NewConnectionError(conn, f"Failed to establish a new connection: {last}") from last


def _original_poll() -> Callable[[], Any] | None:
    try:
        poll: Callable[[], Any] = gevent.monkey.get_original("select", "poll")
    except AttributeError:  # a platform without poll(): urllib3's check stays
        return None
    return poll


#: the unpatched ``select.poll`` (gevent's waits in its hub, yielding)
_POLL: Final = _original_poll()
_POLLIN: Final = select.POLLIN
#: urllib3-future installs itself as ``urllib3``; 2.x has no async API
_URLLIB3_FUTURE: Final = hasattr(urllib3, "AsyncPoolManager")


def _readable_now(sock: socket.socket) -> bool:
    """Whether anything waits on idle ``sock`` (bytes, a FIN, a reset), now.

    One poll(0) that never yields; an idle connection with anything to read
    is dead for reuse (an end of stream, or bytes nobody asked for). TLS
    bytes already decrypted count too.
    """
    fd = sock.fileno()
    if fd < 0 or _POLL is None:
        return True
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return True
    poll = _POLL()
    poll.register(fd, _POLLIN)
    return bool(poll.poll(0))


def _hooked_send(conn: HTTPConnection, send: Callable[[Any], None], data: Any) -> None:
    # http.client connects lazily inside send(); connect first, so that the
    # connect stays in the connect phase and the read timer starts with the write.
    if conn.sock is None and conn.auto_open:
        conn.connect()
    ex = _CURRENT.get()
    if ex is None:
        send(data)
        return
    ex.before_write()
    try:
        send(data)
    except OSError:
        ex.after_write(False)
        raise
    ex.after_write(True)


class _Hooked:
    """What both connection classes add to urllib3's: our socket, write reports, times."""

    response_class: Any = _CheckedResponse
    created = 0.0
    last_used = 0.0

    def _new_conn(self) -> socket.socket:
        return open_socket(self)  # type: ignore[arg-type]

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        self.created = monotonic()

    def send(self, data: Any) -> None:
        _hooked_send(self, super().send, data)  # type: ignore[misc,arg-type]

    @property
    def is_connected(self) -> bool:
        # urllib3's pool asks this of a connection it has just taken from its
        # queue (``is_connection_dropped``), before ``_get_conn`` returns it.
        # urllib3 2.x answers with a poll(0) that yields under gevent: other
        # greenlets ran between the check and the first write, long enough for
        # a server's FIN (uWSGI closes after answers that do not say so) to
        # arrive unseen. Here the same poll(0) never yields (see
        # _readable_now): no other greenlet runs between the check and the
        # write, and the check costs one poll() syscall instead of gevent's
        # epoll_ctl pair and a hub round.
        # urllib3-future keeps its own (it also weighs its multiplexing state).
        #
        # Whatever is raised here (our deadline timer, the caller's
        # gevent.Timeout, a kill: the future's check may still yield), the
        # connection is closed: urlopen never learns of it, and only the
        # error's traceback would hold it, so a kept error kept the socket
        # (and the server's end) open.
        try:
            if _URLLIB3_FUTURE or _POLL is None:
                return bool(super().is_connected)  # type: ignore[misc]
            sock = self.sock  # type: ignore[attr-defined]
            return sock is not None and not _readable_now(sock)
        except BaseException:
            self.close()  # type: ignore[attr-defined]
            raise


class _Connection(_Hooked, HTTPConnection):
    """urllib3's connection, reporting writes to the current exchange."""


class _TLSConnection(_Hooked, HTTPSConnection):
    """urllib3's TLS connection, reporting writes to the current exchange."""


class PoolFamily:
    """urllib3 pool classes with our hooks (``classes``), and the pools made of them.

    The pools use the hooked connection classes, close a pooled connection
    that is idle too long or too old instead of reusing it, and never let a
    wait for urllib3's own pool outlast the current call's pool bound.
    :meth:`close` closes every pool still alive: idle connections at once,
    busy ones when their answer is done.
    """

    def __init__(self, idle_timeout: float | None, max_age: float | None) -> None:
        self.idle_timeout = idle_timeout
        self.max_age = max_age
        self._pools: weakref.WeakSet[HTTPConnectionPool] = weakref.WeakSet()
        family = self

        class _Family:
            # our hooks into urllib3's pool: bounded wait, idle/age expiry, tracking
            def __init__(self, *args: Any, **kw: Any) -> None:
                super().__init__(*args, **kw)
                family._pools.add(self)  # type: ignore[arg-type]

            # urllib3-future adds keywords (``heb_timeout``): passed through
            def _get_conn(self, timeout: float | None = None, **kw: Any) -> Any:
                wait = family._pool_wait(timeout)
                return family._fresh(super()._get_conn(wait, **kw))  # type: ignore[misc]

            def _put_conn(self, conn: Any) -> None:
                family.stamp(conn)
                super()._put_conn(conn)  # type: ignore[misc]

        class _Pool(_Family, HTTPConnectionPool):
            ConnectionCls = _Connection

        class _TLSPool(_Family, HTTPSConnectionPool):
            ConnectionCls = _TLSConnection

        self.classes: dict[str, type[HTTPConnectionPool]] = {"http": _Pool, "https": _TLSPool}

    @staticmethod
    def _pool_wait(timeout: float | None) -> float | None:
        if timeout is None:
            ex = _CURRENT.get()
            timeout = None if ex is None else ex.pool_wait()
        return timeout

    def _fresh(self, conn: Any) -> Any:
        if conn.sock is not None:
            now = monotonic()
            idle = self.idle_timeout is not None and now - conn.last_used >= self.idle_timeout
            if idle or (self.max_age is not None and now - conn.created >= self.max_age):
                conn.close()  # reconnects on first use
        return conn

    @staticmethod
    def stamp(conn: Any) -> None:
        """Start ``conn``'s idle clock (it is idle from now on)."""
        if conn is not None:
            conn.last_used = monotonic()

    def close(self) -> None:
        for pool in list(self._pools):
            pool.close()


# -- the answer -------------------------------------------------------------------------

_VERSIONS = {9: "0.9", 10: "1.0", 11: "1.1"}


def read_answer(
    raw: BaseHTTPResponse,
    ex: Exchange,
    request: Request,
    max_response_size: int,
    max_head_size: int,
) -> Response:
    """Read urllib3's answer to the end within the size limits; a complete Response.

    The head size and Content-Length are checked before any of the body is
    read; the body (decoded, if the server used a Content-Encoding) stops
    at ``max_response_size``. Raises ResponseTooLarge; the caller's
    :func:`exchange` closes the connection of an unfinished answer.
    """
    kw: dict[str, Any] = {"name": request.name, "endpoint": request.endpoint.url}
    if raw.status < 200:
        # never an answer (urllib3-future parses heads itself, without our
        # response class, and returns an unasked-for 101 as one)
        raise ProtocolError(f"an interim {raw.status} answer where the final one was due", **kw)
    fields = list(raw.headers.items())
    head_size = len(raw.reason or "") + 15 + sum(len(k) + len(v) + 4 for k, v in fields)
    if head_size > max_head_size:
        raise ResponseTooLarge(f"response head above the limit of {max_head_size} bytes", **kw)
    announced = raw.length_remaining
    if announced is not None and announced > max_response_size:
        raise ResponseTooLarge(
            f"response body above the limit of {max_response_size} bytes ({announced} bytes)",
            **kw,
        )
    if request.headers:
        echoed = raw.headers.get("X-Request-Id")
        if echoed is not None:
            try:
                check_request_id(request, echoed)
            except BadAnswer as exc:
                # another request's answer: never returned; its body stays
                # unread, so the exchange is incomplete and its connection closed
                raise ProtocolError(str(exc), may_have_reached_server=True, **kw) from None
    body = bytearray()
    clock: _InterimClock | None = None
    for chunk in raw.stream(READ_CHUNK, decode_content=True):
        if body:
            # A second piece. gevent's recv does not switch while bytes wait:
            # against a peer that sends tiny chunks as fast as it can, neither
            # our read timer nor any other greenlet would run, so the clock
            # bounds the loop and yields (an answer read in one piece reads none).
            if clock is None:
                clock = _InterimClock("the body still coming at the deadline")
            clock.tick()
        body += chunk
        if len(body) > max_response_size:
            raise ResponseTooLarge(
                f"response body above the limit of {max_response_size} bytes "
                f"({len(body)} bytes read so far)",
                **kw,
            )
    # bytes already read past the answer: it is whole, its connection not idle
    ex.complete = not getattr(getattr(raw, "_original_response", None), "left_over", False)
    return Response(
        status=raw.status,
        reason=raw.reason or "",
        headers=Headers(fields),
        body=bytes(body),
        http_version=_VERSIONS.get(raw.version, "1.1"),
    )


# -- the shared transport ---------------------------------------------------------------


class BlockingTransport(Transport):
    """What the requests and urllib3 transports share (see the module docstring).

    Options mean what they mean for the gevent transport; ``pool_size``
    bounds connections (and concurrent calls) per endpoint, and
    ``pool_connections`` is how many endpoints' pools the library keeps. A
    subclass builds its library's engine (``_new_engine``), closes one
    (``_close_engine``) and starts one exchange (``_open``, returning
    urllib3's raw response, body not read); everything else is here: our own
    bounds, the one error-mapping edge, reading the answer, fork reset.
    """

    def __init__(
        self,
        *,
        pool_size: int = DEFAULT_POOL_SIZE,
        idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
        max_connection_age: float | None = DEFAULT_MAX_CONNECTION_AGE,
        max_response_size: int = DEFAULT_MAX_RESPONSE_SIZE,
        max_head_size: int = DEFAULT_MAX_HEAD_SIZE,
        tls: TLSConfig | None = None,
        pool_connections: int = 10,
    ) -> None:
        self.tls = check_options(pool_size, tls, idle_timeout, max_connection_age)
        self.pool_size = pool_size
        self.pool_connections = pool_connections
        self.idle_timeout = idle_timeout
        self.max_connection_age = max_connection_age
        self.max_response_size = max_response_size
        self.max_head_size = max_head_size
        self.closed = False
        self._slots = EndpointSlots(pool_size)
        self._pools = PoolFamily(idle_timeout, max_connection_age)
        self._engine = self._new_engine()
        # an interpreted class: the hook may hold the transport (the cycle is collected)
        self._fork_hook = on_fork_in_child(self._reset_after_fork)

    @abc.abstractmethod
    def _new_engine(self) -> Any:
        """A new Session / PoolManager using ``self._pools.classes``."""

    @abc.abstractmethod
    def _close_engine(self, engine: Any) -> None:
        """Close what ``_new_engine`` made."""

    @abc.abstractmethod
    def _open(
        self,
        request: Request,
        deadline: Deadline,
        body: bytes | Iterable[bytes] | None,
        chunked: bool,
        headers: dict[str, str],
    ) -> BaseHTTPResponse:
        """Send ``request`` through the engine; the answer's head read, not its body."""

    def send(self, request: Request, deadline: Deadline) -> Response:
        """Send one request; see :class:`~rpcclient._transports.base.Transport`."""
        body, chunked = request_body(request.body)
        headers = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in (*request.fixed_headers, *request.headers)
        }
        if not any(name.lower() == "accept-encoding" for name in headers):
            # as the gevent transport: no Accept-Encoding unless the caller
            # sets one (http.client would send "identity", requests its
            # "gzip, deflate, br"); a caller's goes out as written
            headers["Accept-Encoding"] = SKIP_HEADER
        with exchange(request, deadline, self._slots, self) as ex:
            raw = ex.raw = self._open(request, deadline, body, chunked, headers)
            ex.conn = getattr(raw, "connection", None)
            return read_answer(raw, ex, request, self.max_response_size, self.max_head_size)

    def close(self) -> None:
        """Close idle connections now, busy ones when their call ends."""
        if not self.closed:
            self.closed = True
            self._close_engine(self._engine)
            self._pools.close()  # urllib3 2.x leaves cleared pools to the GC

    def _reset_after_fork(self) -> None:
        # In a forked child: drop the parent's pools and slots and start anew.
        old_pools, self._pools = self._pools, PoolFamily(self.idle_timeout, self.max_connection_age)
        old, self._engine = self._engine, self._new_engine()
        self._slots.reset()
        self._close_engine(old)
        old_pools.close()

    def stats(self) -> dict[str, Any]:
        return {"transport": self.name, "pools": self._slots.stats()}

    def __repr__(self) -> str:
        pools = ", ".join(f"{k}={v}" for k, v in self._slots.stats().items())
        closed = " closed" if self.closed else ""
        return f"<{type(self).__name__}{closed} pools=[{pools}]>"
