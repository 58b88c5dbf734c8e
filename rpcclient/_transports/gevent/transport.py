"""The gevent transport: pooled keep-alive HTTP/1.1, one write per request.

Sockets are gevent's (cooperative without monkey-patching), answers are
parsed by geventhttpclient's C parser, requests are written by
:mod:`rpcclient._transports.gevent.http11`. Pools are per ``(scheme, host, port)`` and made on
first use.

Deadlines: the write plus the whole answer, and the wait for a pool slot, are
bounded by the transport's deadline watchdog (``deadline_mode="watchdog"``,
the default; :mod:`rpcclient._transports.gevent.watchdog`): one greenlet per
transport that sleeps until the earliest expiry it knows and then closes the
socket of an overdue exchange or wakes an overdue pool waiter; a connect is
bounded by the socket's connect timeout. ``deadline_mode="timer"`` arms one
``gevent.Timeout`` per call and per pool wait instead (exact to the
millisecond, more CPU per call: bench/bench_standing.py measures it). Never a
timer per ``recv``: sockets carry no timeout of their own once connected.

This module is the one edge where foreign exceptions (``OSError``, ssl,
geventhttpclient's ``HTTPParseError``) become rpcclient errors. The caller's
own ``gevent.Timeout`` and ``GreenletExit`` pass through unchanged; in every
case the socket of an unfinished exchange is closed and the slot given back.
"""

from __future__ import annotations

import ipaddress
import math
import socket as _stdsocket
import ssl
from collections.abc import Callable
from functools import partial
from typing import Any, Final

import gevent
import gevent.socket
import gevent.ssl
from mypy_extensions import mypyc_attr

from ..._config import (
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_CONNECTION_AGE,
    DEFAULT_MAX_HEAD_SIZE,
    DEFAULT_MAX_RESPONSE_SIZE,
    DEFAULT_POOL_SIZE,
    TLSConfig,
    check_pool_size,
)
from ..._core.models import Endpoint, Request, Response
from ..._core.timeouts import Deadline
from ..._fork import on_fork_in_child
from ...exceptions import (
    ClientClosed,
    ConnectError,
    ConnectionLost,
    ConnectTimeout,
    DecodeError,
    PoolTimeout,
    ProtocolError,
    ReadTimeout,
    ResponseTooLarge,
    RPCError,
    TransportError,
)
from ..base import Transport
from ..threads import PerThread, creation_lock, thread_ident
from .http11 import (
    COALESCE_LIMIT,
    BadAnswer,
    BadCoding,
    DeadlinePassed,
    HeadCache,
    HTTPParseError,
    MessageTooLarge,
    NothingWritten,
    ResponseReader,
    check_request_id,
    decode_content,
    read_response,
    write_request,
)
from .pool import Claim, Connection, Job, Pool
from .watchdog import Watchdog

__all__ = ["TLSConfig"]  # GeventTransport: _public

MIB: Final = 1024 * 1024
#: requests up to this size may be sent for a waiting call by the releaser: the
#: size joined to its head anyway, which a drained connection takes in one send
HANDOVER_LIMIT: Final = COALESCE_LIMIT


@mypyc_attr(allow_interpreted_subclasses=True)  # rpcclient.GeventTransport is its subclass
class GeventTransportCore(Transport):
    """Pooled keep-alive HTTP/1.1 over gevent sockets (see the module docstring).

    ``pool_size`` bounds connections per endpoint; ``idle_timeout`` and
    ``max_connection_age`` bound how long a connection is reused;
    ``max_response_size`` and ``max_head_size`` bound each answer.
    ``socket_factory`` (a gevent socket class) is for tests that observe I/O.
    ``decode_content`` (default True) undoes a gzip or deflate
    ``Content-Encoding`` within ``max_response_size``; False hands the body
    over as sent (the requests shim, where requests decodes it).
    """

    name = "gevent"

    def __init__(
        self,
        *,
        pool_size: int = DEFAULT_POOL_SIZE,
        idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
        max_connection_age: float | None = DEFAULT_MAX_CONNECTION_AGE,
        max_response_size: int = DEFAULT_MAX_RESPONSE_SIZE,
        max_head_size: int = DEFAULT_MAX_HEAD_SIZE,
        tls: TLSConfig | None = None,
        socket_factory: Callable[..., Any] | None = None,
        deadline_mode: str = "watchdog",
        watchdog_tick: float = 0.001,
        decode_content: bool = True,
    ) -> None:
        check_pool_size(pool_size)
        # what another OS thread's own transport is made with (see _threads)
        self._options: dict[str, Any] = {
            "pool_size": pool_size,
            "idle_timeout": idle_timeout,
            "max_connection_age": max_connection_age,
            "max_response_size": max_response_size,
            "max_head_size": max_head_size,
            "tls": tls,
            "socket_factory": socket_factory,
            "deadline_mode": deadline_mode,
            "watchdog_tick": watchdog_tick,
            "decode_content": decode_content,
        }
        self._owner_thread = thread_ident()  # the OS thread whose hub this transport uses
        self._threads: PerThread | None = None
        self.pool_size = pool_size
        self.idle_timeout = idle_timeout
        self.max_connection_age = max_connection_age
        self.max_response_size = max_response_size
        self.decode_content = decode_content
        self.max_head_size = max_head_size
        self.tls = tls or TLSConfig()
        self._socket_factory = socket_factory or gevent.socket.socket
        # write on the OS-level socket first (write_request), unless a custom
        # socket class wants to see every write
        self._raw = socket_factory is None
        self._pools: dict[tuple[str, str, int], Pool] = {}
        self._heads = HeadCache()
        self._closed = False
        if deadline_mode not in ("watchdog", "timer"):
            raise ValueError(f"deadline_mode must be 'watchdog' or 'timer', not {deadline_mode!r}")
        self.deadline_mode = deadline_mode
        self._watchdog = Watchdog(watchdog_tick) if deadline_mode == "watchdog" else None
        # the hook holds the pools, not the transport (see _fork)
        self._fork_hook = on_fork_in_child(partial(_drop_pools, self._pools, self._watchdog))

    # -- the seam -----------------------------------------------------------
    def send(self, request: Request, deadline: Deadline) -> Response:
        """Send one request; see :class:`~rpcclient._transports.base.Transport`.

        From an OS thread other than the one that made this transport, the
        request goes to that thread's own transport (see rpcclient._transports.threads).

        The fast path reads top to bottom: a free slot, an idle connection
        that is not stale, one write, the answer, the connection given back.
        Anything else is a named slow path, off the fast path's calls: a wait
        for a slot (:meth:`_wait_for_slot`, which may end with our request
        already sent for us: :meth:`_read_handed`), a new or replaced
        connection (:meth:`_fresh_connection`), a failure
        (:meth:`_exchange_error`).
        """
        if thread_ident() != self._owner_thread:
            return GeventTransportCore._this_thread(self).send(request, deadline)
        pool = self._pools.get(request.endpoint.key)
        if pool is None:
            pool = self._new_pool(request.endpoint, request.name)
        head: bytes | None = None
        if not pool.try_acquire():  # a free slot: no clock read, no claim
            claim = GeventTransportCore._wait_for_slot(self, pool, request, deadline)
            if claim.conn is not None:  # sent for us by the releaser (_give_back)
                return GeventTransportCore._read_handed(self, pool, claim.conn, request, deadline)
            if claim.job is not None:
                head = claim.job.head  # offered and not taken: not built twice
        # this call holds a slot from here on: every exit gives it back (finally)
        conn: Connection | None = None
        timer = None
        watchdog = None
        read_for = None
        slot_passed = False
        try:
            if self._closed:
                raise ClientClosed(
                    "transport is closed", name=request.name, endpoint=request.endpoint.url
                )
            conn = pool.checkout()
            if conn is None or conn.is_stale():
                conn = GeventTransportCore._fresh_connection(self, pool, conn, request, deadline)
            reader = conn.reader
            if reader is None:
                reader = conn.reader = ResponseReader(
                    request.method == "HEAD", self.max_head_size, self.max_response_size
                )
            else:
                reader.reset(request.method == "HEAD")
            if head is None:
                head = self._heads.head(request)
            expires = math.inf  # the read loops' own deadline check
            read_for = deadline.read_for()
            if read_for is not None:
                watchdog = self._watchdog
                if watchdog is not None:
                    expires = watchdog.watch(conn, read_for)
                else:
                    timer = gevent.Timeout.start_new(read_for)
            write_request(
                conn.sock, head, request.body, tls=conn.tls, raw=conn.raw if self._raw else None
            )
            plain = self._raw and not conn.tls  # readable is readable on the OS socket
            read_response(
                conn.sock,
                reader,
                wait_first=plain,
                tls=conn.tls,
                raw=conn.raw if plain else None,
                expires=expires,
            )
            conn.requests += 1
            echoed = reader.request_id
            if echoed is not None:
                check_request_id(request, echoed)
            if reader.final and not reader.extra and reader.should_keep_alive():  # reusable()
                if watchdog is not None:
                    # unwatch before the connection becomes shared again
                    fired = watchdog.unwatch(conn)
                    watchdog = None
                    if fired:
                        raise OSError("closed by the deadline watchdog")
                # the core's own, not looked up on the subclass: one dict search less
                slot_passed = GeventTransportCore._give_back(self, pool, conn)
                conn = None
            response = reader.response()
            coding = reader.coding
            if coding is not None and self.decode_content:
                response.body = decode_content(response.body, coding, self.max_response_size)
            return response
        except gevent.Timeout as exc:
            if exc is not timer:
                raise  # the caller's own timeout: never ours to map
            raise self._read_timeout(read_for, request) from None
        except DeadlinePassed:
            raise self._read_timeout(read_for, request) from None
        except RPCError:
            raise
        except Exception as exc:
            if conn is not None and conn.fired:
                raise self._read_timeout(read_for, request) from None
            raise GeventTransportCore._exchange_error(self, exc, pool, conn, request) from exc
        finally:
            if timer is not None:
                timer.close()
            if watchdog is not None:
                watchdog.unwatch(conn)  # type: ignore[arg-type]
            if conn is not None:
                conn.close()
            if not slot_passed:
                pool.release()

    # -- the slow paths of send ----------------------------------------------
    def _wait_for_slot(self, pool: Pool, request: Request, deadline: Deadline) -> Claim:
        """Wait for a slot of a full pool within the pool bound; PoolTimeout when none came.

        With the watchdog, the wait is swept (no timer of its own) and offers
        the request as a :class:`Job`: the returned claim's ``conn`` is then
        set when the releaser sent it (:meth:`_give_back`). An ``OSError``
        can come only from such a handed exchange, which ``acquire``
        abandoned: ReadTimeout when the watchdog had closed it, else mapped.
        """
        wait = deadline.pool_for()
        swept = False
        job = None
        watchdog = self._watchdog
        if watchdog is not None:
            # the watchdog can watch an exchange started for us (_give_back)
            job = GeventTransportCore._job(self, request, deadline)  # (no lookup)
            if wait is not None and wait > 0:
                # bounded by the watchdog, not by a timer per wait
                watchdog.watch_pool(pool, wait)
                swept = True
        try:
            claim = pool.acquire(wait, swept=swept, job=job)
        except OSError as exc:
            if job is not None and job.fired:
                raise self._read_timeout(deadline.timeout.read, request) from None
            raise _map_exchange_error(exc, request) from exc
        if claim is None:
            raise PoolTimeout(
                f"no free connection within {wait:.3g} s (pool of {pool.size}, all in use)",
                name=request.name,
                endpoint=request.endpoint.url,
            )
        return claim

    def _read_handed(
        self, pool: Pool, conn: Connection, request: Request, deadline: Deadline
    ) -> Response:
        """The answer to our request, sent on ``conn`` by the greenlet that gave it back.

        The slot and ``conn`` came with the claim (see :meth:`_give_back`);
        the answer is readable, and the exchange is watched by the watchdog
        since it was sent, when the call has a read bound (``conn.expires``:
        inf otherwise). The end of :meth:`send`'s exchange, without the write.
        """
        watchdog = self._watchdog  # set: only a watchdog transport offers jobs
        read_for = deadline.timeout.read
        held: Connection | None = conn
        slot_passed = False
        try:
            conn.sock._read_event.stop()  # the wakeup that brought us here
            reader = conn.reader
            if reader is None:
                reader = conn.reader = ResponseReader(
                    request.method == "HEAD", self.max_head_size, self.max_response_size
                )
            else:
                reader.reset(request.method == "HEAD")
            read_response(
                conn.sock,
                reader,
                tls=conn.tls,
                raw=conn.raw if self._raw and not conn.tls else None,
                expires=conn.expires,
            )
            conn.requests += 1
            echoed = reader.request_id
            if echoed is not None:
                check_request_id(request, echoed)
            if reader.final and not reader.extra and reader.should_keep_alive():  # reusable()
                if watchdog is not None:
                    fired = watchdog.unwatch(conn)
                    watchdog = None
                    if fired:
                        raise OSError("closed by the deadline watchdog")
                slot_passed = GeventTransportCore._give_back(self, pool, conn)
                held = None
            response = reader.response()
            coding = reader.coding
            if coding is not None and self.decode_content:
                response.body = decode_content(response.body, coding, self.max_response_size)
            return response
        except DeadlinePassed:
            raise self._read_timeout(read_for, request) from None
        except RPCError:
            raise
        except Exception as exc:
            if held is not None and held.fired:
                raise self._read_timeout(read_for, request) from None
            raise GeventTransportCore._exchange_error(self, exc, pool, held, request) from exc
        finally:
            if watchdog is not None:
                watchdog.unwatch(conn)
            if held is not None:
                held.close()
            if not slot_passed:
                pool.release()

    def _fresh_connection(
        self, pool: Pool, stale: Connection | None, request: Request, deadline: Deadline
    ) -> Connection:
        """A connection to use when the idle one was ``stale`` (closed here) or there was none.

        The next idle ones are tried in turn (each stale one is a lesson for
        the pool: :meth:`Pool.went_stale`); then a new connection within the
        connect bound.
        """
        conn = stale
        while conn is not None:
            pool.went_stale(conn)
            conn.close()
            conn = pool.checkout()
            if conn is not None and not conn.is_stale():
                return conn
        conn = self._connect(request.endpoint, deadline, request.name)
        pool.created += 1
        return conn

    def _exchange_error(
        self, exc: Exception, pool: Pool, conn: Connection | None, request: Request
    ) -> TransportError:
        """The rpcclient error for ``exc``, a foreign error of an exchange on ``conn``.

        A reused connection closed or reset before any byte of its answer is
        an idle close (``ConnectionLost.idle_close``): the server shut it as
        the request went out, and the pool learns from it as from a failed
        stale check.
        """
        error = _map_exchange_error(exc, request)
        if (
            conn is not None
            and conn.requests  # reused: it had answered before
            and type(error) is ConnectionLost
            and conn.reader is not None
            and conn.reader.nothing_read()
        ):
            error.idle_close = True
            pool.went_stale(conn)
        return error

    def _this_thread(self) -> Transport:
        """The calling OS thread's own transport (made on its first call)."""
        threads = self._threads
        if threads is None:
            with creation_lock():  # two threads' first calls at once make one
                threads = self._threads
                if threads is None:
                    # made from the options alone: no reference back to this transport
                    threads = PerThread(partial(GeventTransportCore, **self._options))
                    self._threads = threads
        if self._closed:
            threads.close()
            raise ClientClosed("transport is closed")
        transport: Transport = threads.get()
        return transport

    # -- the handover: a released connection carries the next waiter's request --
    def _job(self, request: Request, deadline: Deadline) -> Job | None:
        """What a waiting call offers to have sent for it, or None.

        Plain sockets and whole small requests only: they go out in one
        non-blocking send that the kernel takes whole on a drained
        connection. Anything else waits for its slot as before.
        """
        body = request.body
        if not self._raw or type(body) is not bytes or request.endpoint.scheme != "http":
            return None
        head = self._heads.head(request)
        if len(head) + len(body) > HANDOVER_LIMIT:
            return None
        return Job(head, body, deadline, self._abandon)

    def _give_back(self, pool: Pool, conn: Connection) -> bool:
        """Return ``conn`` to ``pool``; True when it went, slot and all, to a waiter.

        When the oldest waiter offered a :class:`Job`, its request is sent on
        ``conn`` here and the waiter is woken by its answer, once, instead of
        first by a hub callback for the slot and then by the answer (a fair
        pool then costs no more than an unfair one: bench ``floor-fifo-send``).
        If the send does not go through whole, the connection is not used for
        it: the waiter gets the slot as before and sends its request itself
        (a request cut short is never run by a server).
        """
        if (pool.single_use_until != 0.0 or pool.closed_after_one) and pool.single_use(conn):
            conn.close()  # the server closes after each answer (see _pool)
            return False
        job = pool.first_job()
        if job is None or self._closed or pool.closed:
            pool.checkin(conn)
            return False
        read_for = job.deadline.read_for()
        if read_for is not None and read_for <= 0:
            pool.checkin(conn)  # out of time already: let the waiter find that out
            return False
        if conn.is_stale():
            # the server closed (or wrote more) right after its answer, as uWSGI's
            # --http-socket does with no "Connection: close": the same check as
            # before any reuse, so the waiter's request goes out on a new one
            pool.went_stale(conn)
            conn.close()
            return False
        data = job.head + job.body
        try:
            sent = conn.raw.send(data)
        except BlockingIOError:
            pool.checkin(conn)
            return False
        except OSError:
            conn.close()
            return False
        if sent != len(data):
            conn.close()
            return False
        if read_for is not None:
            self._watchdog.watch(conn, read_for)  # type: ignore[union-attr]
        conn.sock._read_event.start(pool.hand_sent(conn).switch, conn)
        return True

    def _abandon(self, conn: Connection) -> bool:
        """Undo a handover whose waiter ended before its answer (see Job).

        Returns whether the deadline watchdog had closed ``conn``.
        """
        event = getattr(conn.sock, "_read_event", None)
        if event is not None:
            event.stop()
        fired = self._watchdog is not None and self._watchdog.unwatch(conn)
        conn.close()
        return fired

    @staticmethod
    def _read_timeout(read_for: float | None, request: Request) -> ReadTimeout:
        return ReadTimeout(
            f"no complete answer within {read_for or 0:.3g} s",
            name=request.name,
            endpoint=request.endpoint.url,
        )

    def close(self) -> None:
        """Close idle connections now, busy ones when their call ends."""
        self._closed = True
        _close_pools(self._pools)  # emptied, not replaced: the fork hook holds it
        if self._watchdog is not None:
            self._watchdog.stop_if_idle()
        if self._threads is not None:
            self._threads.close()  # other threads' transports (see _threads)

    # -- helpers ------------------------------------------------------------
    def _new_pool(self, endpoint: Endpoint, name: str) -> Pool:
        if self._closed:
            raise ClientClosed("transport is closed", name=name, endpoint=endpoint.url)
        pool = Pool(self.pool_size, idle_timeout=self.idle_timeout, max_age=self.max_connection_age)
        self._pools[endpoint.key] = pool
        return pool

    def _connect(self, endpoint: Endpoint, deadline: Deadline, name: str) -> Connection:
        """A new connection within the connect bound; ConnectError/ConnectTimeout."""
        limit = deadline.connect_for()
        tls = endpoint.scheme == "https"
        try:
            addresses = self._resolve(endpoint, limit)
            last: Exception | None = None
            for family, address in addresses:
                left = deadline.connect_for()
                if left is not None and left <= 0:
                    # a zero timeout would make the connect non-blocking (EINPROGRESS)
                    raise TimeoutError("no time left to connect")
                sock = self._socket_factory(family, _stdsocket.SOCK_STREAM)
                try:
                    sock.settimeout(left)
                    sock.connect(address)
                    sock.setsockopt(_stdsocket.IPPROTO_TCP, _stdsocket.TCP_NODELAY, 1)
                    if tls:
                        sock = _wrap_tls(self.tls.context(), sock, endpoint.host)
                    sock.settimeout(None)
                    return Connection(sock, tls=tls)
                except (TimeoutError, ssl.SSLError, ssl.CertificateError):
                    sock.close()
                    raise
                except OSError as exc:
                    sock.close()
                    last = exc
                except BaseException:
                    sock.close()
                    raise
            assert last is not None
            raise last
        except TimeoutError:
            raise ConnectTimeout(
                f"connect did not finish within {limit:.3g} s" if limit else "connect timed out",
                name=name,
                endpoint=endpoint.url,
            ) from None
        except _stdsocket.gaierror as exc:
            raise ConnectError(
                f"cannot resolve {endpoint.host!r}: {exc}", name=name, endpoint=endpoint.url
            ) from None
        except (ssl.SSLError, ssl.CertificateError) as exc:
            raise ConnectError(
                f"TLS handshake failed: {exc}", name=name, endpoint=endpoint.url
            ) from None
        except OSError as exc:
            raise ConnectError(
                f"cannot connect: {exc.strerror or exc}", name=name, endpoint=endpoint.url
            ) from None

    def _resolve(
        self, endpoint: Endpoint, limit: float | None
    ) -> list[tuple[int, tuple[Any, ...]]]:
        host = endpoint.address or endpoint.host
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            pass
        else:  # a literal address: no resolver round trip
            if ip.version == 6:
                return [(_stdsocket.AF_INET6, (host, endpoint.port, 0, 0))]
            return [(_stdsocket.AF_INET, (host, endpoint.port))]
        with gevent.Timeout(limit, TimeoutError("name resolution timed out")):
            infos = gevent.socket.getaddrinfo(
                host, endpoint.port, 0, _stdsocket.SOCK_STREAM, _stdsocket.IPPROTO_TCP
            )
        return [(info[0], info[4]) for info in infos]

    def stats(self) -> dict[str, Any]:
        """Pool state; ``threads``: the transports other OS threads use, each's pools."""
        others = [] if self._threads is None else self._threads.transports()
        return {
            "transport": self.name,
            # a copy: another OS thread may be adding a pool to its own transport
            "pools": {
                f"{s}://{h}:{p}": pool.stats() for (s, h, p), pool in list(self._pools.items())
            },
            "threads": [t.stats()["pools"] for t in others],
        }

    def __repr__(self) -> str:
        pools = ", ".join(f"{h}:{p}={pool!r}" for (_, h, p), pool in self._pools.items())
        return f"<GeventTransport{' closed' if self._closed else ''} pools=[{pools}]>"


def _close_pools(pools: dict[tuple[str, str, int], Pool]) -> None:
    """Empty ``pools`` in place and close each (idle connections now, busy ones later)."""
    closing = list(pools.values())
    pools.clear()
    for pool in closing:
        pool.close()


def _drop_pools(pools: dict[tuple[str, str, int], Pool], watchdog: Watchdog | None) -> None:
    """In a forked child: forget the parent's pools and exchanges (see _fork)."""
    # Pool.close() only closes our copies of the descriptors: never a FIN or
    # shutdown that would end the parent's exchanges
    _close_pools(pools)
    if watchdog is not None:
        watchdog.reset()


def _wrap_tls(context: ssl.SSLContext, sock: Any, host: str) -> Any:
    """Wrap ``sock`` for TLS so that it stays cooperative where it can.

    A plain stdlib ``ssl.SSLContext`` (a user's, in a process that is not
    monkey-patched) would return the stdlib's blocking ``SSLSocket``: every
    read would block the hub, and with it the deadline watchdog; gevent's
    ``SSLSocket`` is built on it instead. A subclass keeps its own
    ``wrap_socket``, which may do its own checks (truststore verifies there):
    cooperative only when gevent's or when the process is patched.
    """
    if type(context) is ssl.SSLContext:
        # the handshake apart from the constructor, which closes the TLS socket
        # only on OSError: cut by a kill, a caller's gevent.Timeout or a hedge's
        # _Superseded, it would stay open (``sock`` is detached by then) until
        # the exception's traceback is collected
        tls_sock = gevent.ssl.SSLSocket(
            sock=sock, server_hostname=host, _context=context, do_handshake_on_connect=False
        )
        try:
            tls_sock.do_handshake()
        except BaseException:
            tls_sock.close()
            raise
        return tls_sock
    return context.wrap_socket(sock, server_hostname=host)


def _map_exchange_error(exc: Exception, request: Request) -> TransportError:
    """The one place where a foreign error of an exchange becomes ours, caused by it."""
    error = _translate_exchange_error(exc, request)
    # ``raise ... from exc`` spelled out: compiled (mypyc) code drops ``from``
    error.__cause__ = exc
    return error


def _translate_exchange_error(exc: Exception, request: Request) -> TransportError:
    kw: dict[str, Any] = {"name": request.name, "endpoint": request.endpoint.url}
    if isinstance(exc, NothingWritten):
        return ConnectionLost(
            f"connection failed before the request left: {exc.error}",
            may_have_reached_server=False,
            **kw,
        )
    if isinstance(exc, EOFError):
        if str(exc) == "closed":
            return ConnectionLost("server closed the connection before answering", **kw)
        return ProtocolError("server closed the connection in the middle of the answer", **kw)
    if isinstance(exc, MessageTooLarge):
        seen = f" ({exc.seen} bytes)" if exc.seen is not None else ""
        return ResponseTooLarge(f"{exc.what} above the limit of {exc.limit} bytes{seen}", **kw)
    if isinstance(exc, HTTPParseError):
        return ProtocolError(f"malformed HTTP answer: {exc}", **kw)
    if isinstance(exc, BadAnswer):
        return ProtocolError(str(exc), **kw)
    if isinstance(exc, BadCoding):
        return DecodeError(f"response body: {exc}", **kw)
    if isinstance(exc, OSError):
        return ConnectionLost(f"connection lost: {exc.strerror or exc}", **kw)
    return ProtocolError(f"unexpected {type(exc).__name__}: {exc}", **kw)
