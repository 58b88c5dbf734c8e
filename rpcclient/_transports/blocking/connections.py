"""urllib3 extended through the classes it lets users choose.

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
refused in :func:`read_answer`. ``tests/interop/test_urllib3_future.py`` runs the
transports' tests on it.

**Closing**: urllib3 2.x's ``PoolManager.clear()`` forgets its pools and
leaves their idle sockets to the garbage collector; :class:`PoolFamily`
keeps track of the pools it made, so ``close()`` closes them now.
"""

from __future__ import annotations

import http.client
import select
import socket
import ssl
import weakref
from collections.abc import Callable, Iterable
from time import monotonic
from typing import Any, Final

import gevent
import gevent.monkey
import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import (
    ConnectTimeoutError,
    HeaderParsingError,
    NameResolutionError,
    NewConnectionError,
)
from urllib3.util.connection import allowed_gai_family
from urllib3.util.response import assert_header_parsing

from .exchange import current_exchange, start_idle_clock

__all__ = [
    "InterimClock",
    "MalformedHead",
    "PoolFamily",
    "apply_socket_options",
    "buffered_past",
    "open_socket",
]


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


class InterimClock:
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
        ex = current_exchange()
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
    bound and yielding to other greenlets (:class:`InterimClock`); an unasked-for
    ``101 Switching Protocols`` is refused. Raised errors end as
    ProtocolError, and the connection is closed.
    """

    def _read_status(self) -> tuple[str, int, str]:
        # every 1xx, 100 included, is skipped here: http.client's own loop
        # over 100s (in begin) never sees one, nor its missing bounds
        clock: InterimClock | None = None
        for _ in range(MAX_INTERIM + 1):
            version, status, reason = super()._read_status()  # type: ignore[misc]
            if status == 101:
                raise MalformedHead("101 Switching Protocols, but no upgrade was asked for")
            if not 100 <= status < 200:
                return version, status, reason
            if clock is None:
                clock = InterimClock()
            self._skip_interim_head(clock)
        raise MalformedHead(f"more than {MAX_INTERIM} interim (1xx) answers")

    def _skip_interim_head(self, clock: InterimClock) -> None:
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
    ex = current_exchange()
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
                start_idle_clock(conn)
                super()._put_conn(conn)  # type: ignore[misc]

        class _Pool(_Family, HTTPConnectionPool):
            ConnectionCls = _Connection

        class _TLSPool(_Family, HTTPSConnectionPool):
            ConnectionCls = _TLSConnection

        self.classes: dict[str, type[HTTPConnectionPool]] = {"http": _Pool, "https": _TLSPool}

    @staticmethod
    def _pool_wait(timeout: float | None) -> float | None:
        if timeout is None:
            ex = current_exchange()
            timeout = None if ex is None else ex.pool_wait()
        return timeout

    def _fresh(self, conn: Any) -> Any:
        if conn.sock is not None:
            now = monotonic()
            idle = self.idle_timeout is not None and now - conn.last_used >= self.idle_timeout
            if idle or (self.max_age is not None and now - conn.created >= self.max_age):
                conn.close()  # reconnects on first use
        return conn

    def close(self) -> None:
        for pool in list(self._pools):
            pool.close()
