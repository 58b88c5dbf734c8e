"""One exchange of a blocking transport: its timers, and the one error edge.

**One error edge**: :func:`exchange` is the single place where foreign
exceptions (``requests.exceptions.*``, ``urllib3.exceptions.*``,
``http.client``, ``OSError``, ``ssl``) become rpcclient errors, with the
classes the gevent transport uses for the same faults. The caller's own
``gevent.Timeout`` and ``GreenletExit`` pass through unchanged; on every exit
the answer's connection is closed unless the answer was read to the end, and
the slot is given back.

:class:`Exchange` owns the exchange's state (its timers, whether a byte was
written); the connection hooks (:mod:`.connections`) reach the current one
through a context variable and only report to it.
"""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from time import monotonic
from typing import TYPE_CHECKING, Any, Protocol

import gevent
import gevent.monkey
from urllib3.exceptions import (
    ClosedPoolError,
    EmptyPoolError,
    HeaderParsingError,
    InvalidHeader,
    NewConnectionError,
    ResponseNotChunked,
)
from urllib3.exceptions import DecodeError as Urllib3DecodeError
from urllib3.exceptions import TimeoutError as Urllib3TimeoutError
from urllib3.response import BaseHTTPResponse

if TYPE_CHECKING:
    from .common import EndpointSlots

from ..._core.models import Request
from ..._core.timeouts import Deadline
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

__all__ = [
    "Exchange",
    "current_exchange",
    "exchange",
    "map_foreign_error",
    "start_idle_clock",
]

#: how deep the chain of wrapped exceptions is searched
_MAX_CHAIN = 16

_CURRENT: ContextVar[Exchange | None] = ContextVar("rpcclient_blocking_exchange", default=None)


def current_exchange() -> Exchange | None:
    """The exchange running in this greenlet (None outside one)."""
    return _CURRENT.get()


def start_idle_clock(conn: Any) -> None:
    """Start ``conn``'s idle clock, which the pools read (it is idle from now on)."""
    if conn is not None:
        conn.last_used = monotonic()


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
                start_idle_clock(conn)
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
