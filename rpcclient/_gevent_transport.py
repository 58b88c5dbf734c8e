"""The gevent transport: pooled keep-alive HTTP/1.1, one write per request.

Sockets are gevent's (cooperative without monkey-patching), answers are
parsed by geventhttpclient's C parser, requests are written by
:mod:`rpcclient._http11`. Pools are per ``(scheme, host, port)`` and made on
first use.

Deadlines: the pool wait is bounded by the semaphore's own timeout, a connect
by the socket's connect timeout, and the write plus the whole answer by the
transport's :class:`Watchdog` (``deadline_mode="watchdog"``, the default): one
greenlet per transport, ticking every 10 ms while calls are in flight, closes
the socket of an overdue exchange. ``deadline_mode="timer"`` arms one
``gevent.Timeout`` per call instead (exact to the millisecond, about 1.4 us
more CPU per call). Never a timer per ``recv``: sockets carry no timeout of
their own once connected.

This module is the one edge where foreign exceptions (``OSError``, ssl,
geventhttpclient's ``HTTPParseError``) become rpcclient errors. The caller's
own ``gevent.Timeout`` and ``GreenletExit`` pass through unchanged; in every
case the socket of an unfinished exchange is closed and the slot given back.
"""

from __future__ import annotations

import ipaddress
import os
import socket as _stdsocket
import ssl
import weakref
from collections.abc import Callable
from time import monotonic
from typing import Any

import gevent
import gevent.socket
import gevent.ssl

from ._http11 import (
    HeadCache,
    HTTPParseError,
    MessageTooLarge,
    NothingWritten,
    ResponseReader,
    body_length,
    build_head,
    read_response,
    write_request,
)
from ._models import Endpoint, Request, Response
from ._pool import Connection, Pool
from ._timeouts import Deadline
from ._transport import Transport
from .exceptions import (
    ClientClosed,
    ConnectError,
    ConnectionLost,
    ConnectTimeout,
    PoolTimeout,
    ProtocolError,
    ReadTimeout,
    ResponseTooLarge,
    RPCError,
    TransportError,
)

__all__ = ["GeventTransport", "TLSConfig"]

MIB = 1024 * 1024
_live_transports: weakref.WeakSet[GeventTransport] = weakref.WeakSet()


def _reset_after_fork() -> None:
    for transport in list(_live_transports):
        transport._forget_pools()


if hasattr(os, "register_at_fork"):
    # no per-call getpid(): the child drops every pool it inherited
    os.register_at_fork(after_in_child=_reset_after_fork)


class Watchdog:
    """One greenlet per transport that closes the sockets of overdue exchanges.

    The alternative to a ``gevent.Timeout`` per call: an exchange registers
    ``[expires, connection, fired]`` (a dict insert), and every ``tick``
    seconds, while any exchange is in flight, the watchdog closes the socket
    of each one past its deadline. gevent then wakes the greenlet blocked on
    it with EBADF, and the transport, seeing ``fired``, raises ReadTimeout.
    Deadlines are met within one tick; with nothing in flight the greenlet
    ends, so an idle client costs nothing.
    """

    __slots__ = ("_active", "_greenlet", "tick")

    def __init__(self, tick: float = 0.01) -> None:
        self.tick = tick
        self._active: dict[int, list[Any]] = {}
        self._greenlet: gevent.Greenlet | None = None

    def watch(self, conn: Connection, expires: float) -> list[Any]:
        entry = [expires, conn, False]
        self._active[id(entry)] = entry
        if self._greenlet is None:
            self._greenlet = gevent.spawn(self._run)
        return entry

    def unwatch(self, entry: list[Any]) -> None:
        self._active.pop(id(entry), None)

    def _run(self) -> None:
        active = self._active
        try:
            # no switch between this test and the finally below, so a
            # watch() can never find a greenlet that is about to end
            while active:
                gevent.sleep(self.tick)
                now = monotonic()
                for key, entry in list(active.items()):
                    if entry[0] <= now:
                        del active[key]
                        entry[2] = True
                        entry[1].close()
        finally:
            self._greenlet = None

    def reset(self) -> None:
        """In a forked child: forget the parent's exchanges and greenlet."""
        self._active = {}
        self._greenlet = None


class TLSConfig:
    """How ``https://`` endpoints are verified (immutable after creation).

    ``verify=True`` checks the certificate chain and host name against the
    system store or ``ca_certs``; ``cert`` is a client certificate
    (``"cert.pem"`` or ``("cert.pem", "key.pem")``); ``context`` overrides all.
    """

    def __init__(
        self,
        *,
        verify: bool = True,
        ca_certs: str | None = None,
        cert: str | tuple[str, str] | None = None,
        context: ssl.SSLContext | None = None,
    ) -> None:
        self.verify = verify
        self.ca_certs = ca_certs
        self.cert = cert
        self._context = context

    def context(self) -> ssl.SSLContext:
        if self._context is None:
            ctx = gevent.ssl.create_default_context(cafile=self.ca_certs)
            if not self.verify:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            if self.cert is not None:
                if isinstance(self.cert, tuple):
                    ctx.load_cert_chain(self.cert[0], self.cert[1])
                else:
                    ctx.load_cert_chain(self.cert)
            self._context = ctx
        return self._context


class GeventTransport(Transport):
    """Pooled keep-alive HTTP/1.1 over gevent sockets (see the module docstring).

    ``pool_size`` bounds connections per endpoint; ``idle_timeout`` and
    ``max_connection_age`` bound how long a connection is reused;
    ``max_response_size`` and ``max_head_size`` bound each answer.
    ``socket_factory`` (a gevent socket class) is for tests that observe I/O.
    """

    name = "gevent"

    def __init__(
        self,
        *,
        pool_size: int = 10,
        idle_timeout: float | None = 1.5,
        max_connection_age: float | None = 300.0,
        max_response_size: int = 64 * MIB,
        max_head_size: int = 64 * 1024,
        tls: TLSConfig | None = None,
        socket_factory: Callable[..., Any] | None = None,
        deadline_mode: str = "watchdog",
        watchdog_tick: float = 0.01,
    ) -> None:
        Pool(pool_size, idle_timeout=idle_timeout, max_age=max_connection_age)  # validates
        self.pool_size = pool_size
        self.idle_timeout = idle_timeout
        self.max_connection_age = max_connection_age
        self.max_response_size = max_response_size
        self.max_head_size = max_head_size
        self.tls = tls or TLSConfig()
        self._socket_factory = socket_factory or gevent.socket.socket
        self._pools: dict[tuple[str, str, int], Pool] = {}
        self._heads = HeadCache()
        self._closed = False
        if deadline_mode not in ("watchdog", "timer"):
            raise ValueError(f"deadline_mode must be 'watchdog' or 'timer', not {deadline_mode!r}")
        self.deadline_mode = deadline_mode
        self._watchdog = Watchdog(watchdog_tick) if deadline_mode == "watchdog" else None
        _live_transports.add(self)

    # -- the seam -----------------------------------------------------------
    def send(self, request: Request, deadline: Deadline) -> Response:
        """Send one request; see :class:`~rpcclient._transport.Transport`."""
        endpoint = request.endpoint
        pool = self._pools.get(endpoint.key)
        if pool is None:
            pool = self._new_pool(endpoint, request.name)
        wait = deadline.pool_for()
        if not pool.acquire(wait):
            raise PoolTimeout(
                f"no free connection within {wait:.3g} s (pool of {pool.size}, all in use)",
                name=request.name,
                endpoint=endpoint.url,
            )
        conn: Connection | None = None
        timer = None
        watched: list[Any] | None = None
        read_for = None
        try:
            if self._closed:
                raise ClientClosed("transport is closed", name=request.name, endpoint=endpoint.url)
            conn = pool.checkout()
            if conn is None:
                conn = self._connect(endpoint, deadline, request.name)
                pool.created += 1
            head = build_head(
                self._heads.prefix(request), request.headers, body_length(request.body)
            )
            reader = ResponseReader(
                request.method == "HEAD", self.max_head_size, self.max_response_size
            )
            read_for = deadline.read_for()
            if read_for is not None:
                if self._watchdog is not None:
                    watched = self._watchdog.watch(conn, monotonic() + read_for)
                else:
                    timer = gevent.Timeout.start_new(read_for)
            write_request(conn.sock, head, request.body, tls=conn.tls)
            read_response(conn.sock, reader)
            conn.requests += 1
            if reader.reusable():
                if watched is not None:
                    # unwatch before the connection becomes shared again
                    self._watchdog.unwatch(watched)  # type: ignore[union-attr]
                    if watched[2]:
                        raise OSError("closed by the deadline watchdog")
                    watched = None
                pool.checkin(conn)
                conn = None
            return reader.response()
        except gevent.Timeout as exc:
            if exc is not timer:
                raise  # the caller's own timeout: never ours to map
            raise self._read_timeout(read_for, request) from None
        except RPCError:
            raise
        except Exception as exc:
            if watched is not None and watched[2]:
                raise self._read_timeout(read_for, request) from None
            raise _map_exchange_error(exc, request) from exc
        finally:
            if timer is not None:
                timer.close()
            if watched is not None:
                self._watchdog.unwatch(watched)  # type: ignore[union-attr]
            if conn is not None:
                conn.close()
            pool.release()

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
        pools, self._pools = self._pools, {}
        for pool in pools.values():
            pool.close()

    # -- helpers ------------------------------------------------------------
    def _new_pool(self, endpoint: Endpoint, name: str) -> Pool:
        if self._closed:
            raise ClientClosed("transport is closed", name=name, endpoint=endpoint.url)
        pool = Pool(self.pool_size, idle_timeout=self.idle_timeout, max_age=self.max_connection_age)
        self._pools[endpoint.key] = pool
        return pool

    def _forget_pools(self) -> None:
        # In a forked child: never touch the parent's sockets (no FIN, no
        # shutdown), just close our copies of the descriptors and start anew.
        pools, self._pools = self._pools, {}
        for pool in pools.values():
            pool.close()
        if self._watchdog is not None:
            self._watchdog.reset()

    def _connect(self, endpoint: Endpoint, deadline: Deadline, name: str) -> Connection:
        """A new connection within the connect bound; ConnectError/ConnectTimeout."""
        limit = deadline.connect_for()
        tls = endpoint.scheme == "https"
        try:
            addresses = self._resolve(endpoint, limit)
            last: Exception | None = None
            for family, address in addresses:
                sock = self._socket_factory(family, _stdsocket.SOCK_STREAM)
                try:
                    sock.settimeout(deadline.connect_for())
                    sock.connect(address)
                    sock.setsockopt(_stdsocket.IPPROTO_TCP, _stdsocket.TCP_NODELAY, 1)
                    if tls:
                        sock = self.tls.context().wrap_socket(sock, server_hostname=endpoint.host)
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
        host = endpoint.host
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
        return {
            "transport": self.name,
            "pools": {f"{s}://{h}:{p}": pool.stats() for (s, h, p), pool in self._pools.items()},
        }

    def __repr__(self) -> str:
        pools = ", ".join(f"{h}:{p}={pool!r}" for (_, h, p), pool in self._pools.items())
        return f"<GeventTransport{' closed' if self._closed else ''} pools=[{pools}]>"


def _map_exchange_error(exc: Exception, request: Request) -> TransportError:
    """The one place where a foreign error of an exchange becomes ours."""
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
    if isinstance(exc, OSError):
        return ConnectionLost(f"connection lost: {exc.strerror or exc}", **kw)
    return ProtocolError(f"unexpected {type(exc).__name__}: {exc}", **kw)
