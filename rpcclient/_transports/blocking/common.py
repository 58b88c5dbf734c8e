"""What the ``requests`` and ``urllib3`` transports share: the bounds, and the transport.

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

The rest of the shared machinery is in two modules: :mod:`.connections`
(urllib3's connection, pool and response classes, extended) and
:mod:`.exchange` (one exchange's timers and the one error edge).
"""

from __future__ import annotations

import abc
import ssl
from collections.abc import Iterable
from typing import Any

from urllib3.response import BaseHTTPResponse
from urllib3.util import SKIP_HEADER

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
    ProtocolError,
    ResponseTooLarge,
)
from ..base import Transport
from ..gevent.http11 import BadAnswer, check_request_id
from ..gevent.pool import Pool
from .connections import InterimClock, PoolFamily
from .exchange import Exchange, exchange

__all__ = [
    "BlockingTransport",
    "EndpointSlots",
    "check_options",
    "context_pool_options",
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
    clock: InterimClock | None = None
    for chunk in raw.stream(READ_CHUNK, decode_content=True):
        if body:
            # A second piece. gevent's recv does not switch while bytes wait:
            # against a peer that sends tiny chunks as fast as it can, neither
            # our read timer nor any other greenlet would run, so the clock
            # bounds the loop and yields (an answer read in one piece reads none).
            if clock is None:
                clock = InterimClock("the body still coming at the deadline")
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
