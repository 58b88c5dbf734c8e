"""A bounded keep-alive pool of gevent sockets for one endpoint.

The pool is bookkeeping only: a semaphore of ``size`` slots and a LIFO list
of idle connections. Connecting and all other I/O happen outside it, in the
transport. geventhttpclient's own ``ConnectionPool`` falls short here (a
``select`` per checkout, no bound on the wait for a slot, no idle expiry or
age limit, a timer armed on every ``recv``), so this thin pool replaces it.

Rules:

- a slot is taken (``acquire``) before a connection is, and given back
  (``release``) on every exit: success, error, ``gevent.Timeout``, kill;
- an idle connection older than ``max_age`` or idle longer than
  ``idle_timeout`` is closed, never reused: the idle timeout defaults below
  common servers' keep-alive timeouts, so the race with a server closing an
  idle connection is rare;
- a reused connection gets a cheap stale check first (one non-blocking
  ``MSG_PEEK`` ``recv``): an idle keep-alive socket has nothing to read, so
  EOF, a reset or stray bytes mean it is dead, and it is dropped before
  anything was written on it;
- LIFO reuse keeps the working set small, so surplus connections age out.
"""

from __future__ import annotations

import contextlib
import socket as _stdsocket
import ssl
from collections import deque
from time import monotonic
from typing import Any

from gevent.event import Event

__all__ = ["Connection", "Pool"]

_PEEK_FLAGS = _stdsocket.MSG_PEEK | getattr(_stdsocket, "MSG_DONTWAIT", 0)
_TCP_INFO: int | None = getattr(_stdsocket, "TCP_INFO", None)
_IPPROTO_TCP = _stdsocket.IPPROTO_TCP
_ESTABLISHED = 1  # linux/tcp_states.h


class Connection:
    """One socket and its times. ``raw`` is the OS-level socket (no hub)."""

    __slots__ = ("created", "last_used", "raw", "requests", "sock", "tls")

    def __init__(self, sock: Any, *, tls: bool) -> None:
        self.sock = sock
        # gevent's socket wraps a non-blocking stdlib socket in ``_sock``;
        # peeking there costs one syscall and never switches greenlets
        self.raw = getattr(sock, "_sock", sock)
        self.tls = tls
        self.created = self.last_used = monotonic()
        self.requests = 0

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def is_stale(self) -> bool:
        """True when the peer closed or reset the connection while it was idle.

        On Linux one ``getsockopt(TCP_INFO)`` reads the TCP state: anything
        but ESTABLISHED (a FIN arrived: CLOSE_WAIT; a reset: CLOSE) is dead.
        It costs half a non-blocking peek and raises no exception on the
        common, live path. Elsewhere the peek decides.
        """
        if _TCP_INFO is not None:
            try:
                return bool(self.raw.getsockopt(_IPPROTO_TCP, _TCP_INFO, 1)[0] != _ESTABLISHED)
            except OSError:
                return True
        return self._peek_is_stale()

    def _peek_is_stale(self) -> bool:
        if self.tls:
            return self._tls_is_stale()
        try:
            data = self.raw.recv(1, _PEEK_FLAGS)
        except BlockingIOError:
            return False
        except OSError:
            return True
        # b"" is EOF; any byte is data nobody asked for: both end the connection
        del data
        return True

    def _tls_is_stale(self) -> bool:
        # Idle TLS sockets may legitimately hold records (TLS 1.3 session
        # tickets), so raw readability proves nothing: read through TLS
        # without blocking instead.
        try:
            peek = self.raw.recv(1, _PEEK_FLAGS)
        except BlockingIOError:
            return False
        except OSError:
            return True
        if not peek:
            return True
        sock = self.sock
        try:
            sock.settimeout(0.0)
            try:
                sock.recv(1)
            finally:
                sock.settimeout(None)
        except (ssl.SSLWantReadError, BlockingIOError, TimeoutError):
            return False  # only TLS records (tickets), no application data
        except OSError:  # includes ssl.SSLError
            return True
        return True  # EOF (close_notify) or stray application data


class Pool:
    """Slots and idle connections of one endpoint (see the module docstring)."""

    def __init__(self, size: int, *, idle_timeout: float | None, max_age: float | None) -> None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ValueError(f"pool size must be an int >= 1, not {size!r}")
        self.size = size
        self.idle_timeout = idle_timeout
        self.max_age = max_age
        self._free = size
        self._waiters: deque[Event] = deque()
        self._idle: list[Connection] = []
        self.closed = False
        self.created = 0

    # -- slots --------------------------------------------------------------
    def acquire(self, timeout: float | None) -> bool:
        """Take a slot, waiting at most ``timeout`` seconds (None: forever).

        First come, first served: a released slot is handed to the oldest
        waiter, never taken back by the greenlet that released it (with a
        plain semaphore a busy greenlet re-acquires at once and starves the
        waiters past their pool timeout).
        """
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return True
        if timeout is not None and timeout <= 0:
            return False
        waiter = Event()
        self._waiters.append(waiter)
        try:
            if waiter.wait(timeout):
                return True
        except BaseException:
            # killed or timed out by the caller while waiting: give back a
            # slot that was handed over meanwhile, or leave the queue
            if waiter.is_set():
                self.release()
            else:
                self._waiters.remove(waiter)
            raise
        if waiter.is_set():  # handed over just as the wait timed out
            return True
        self._waiters.remove(waiter)
        return False

    def release(self) -> None:
        if self._waiters:
            self._waiters.popleft().set()  # the slot passes on, still taken
        else:
            self._free += 1

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    # -- idle connections ---------------------------------------------------
    def checkout(self) -> Connection | None:
        """A live idle connection, or None (then the caller connects)."""
        idle = self._idle
        if not idle:
            return None
        now = monotonic()
        while idle:
            conn = idle.pop()
            if self._expired(conn, now) or conn.is_stale():
                conn.close()
                continue
            return conn
        return None

    def checkin(self, conn: Connection) -> None:
        """Give back a connection whose answer was read to the end."""
        now = monotonic()
        # a pool detached after a fork is closed: an exchange that straddled
        # the fork cannot hand the parent's socket to the child's calls
        if self.closed or (self.max_age is not None and now - conn.created >= self.max_age):
            conn.close()
            return
        conn.last_used = now
        self._idle.append(conn)

    def _expired(self, conn: Connection, now: float) -> bool:
        if self.idle_timeout is not None and now - conn.last_used >= self.idle_timeout:
            return True
        return self.max_age is not None and now - conn.created >= self.max_age

    def prune(self) -> int:
        """Close idle connections past their idle timeout or age; returns how many."""
        now = monotonic()
        keep = [c for c in self._idle if not self._expired(c, now)]
        dropped = [c for c in self._idle if c not in keep]
        self._idle[:] = keep
        for conn in dropped:
            conn.close()
        return len(dropped)

    def close(self) -> None:
        """Close idle connections; connections in use are closed on return."""
        self.closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    # -- state --------------------------------------------------------------
    @property
    def idle(self) -> int:
        return len(self._idle)

    @property
    def in_use(self) -> int:
        return self.size - self._free

    def stats(self) -> dict[str, int]:
        return {
            "size": self.size,
            "in_use": self.in_use,
            "idle": self.idle,
            "waiting": self.waiting,
            "connections_created": self.created,
        }

    def __repr__(self) -> str:
        return (
            f"<Pool size={self.size} in_use={self.in_use} idle={self.idle} "
            f"waiting={self.waiting}{' closed' if self.closed else ''}>"
        )
