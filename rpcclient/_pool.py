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
from time import monotonic
from typing import Any

from gevent.lock import Semaphore

__all__ = ["Connection", "Pool"]

_PEEK_FLAGS = _stdsocket.MSG_PEEK | getattr(_stdsocket, "MSG_DONTWAIT", 0)


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
        """True when the peer closed, reset, or wrote while the connection was idle."""
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
        self._slots = Semaphore(size)
        self._idle: list[Connection] = []
        self.closed = False
        self.created = 0
        self.waiting = 0

    # -- slots --------------------------------------------------------------
    def acquire(self, timeout: float | None) -> bool:
        """Take a slot, waiting at most ``timeout`` seconds (None: forever)."""
        slots = self._slots
        if slots.acquire(blocking=False):
            return True
        if timeout is not None and timeout <= 0:
            return False
        self.waiting += 1
        try:
            return bool(slots.acquire(timeout=timeout))
        finally:
            self.waiting -= 1

    def release(self) -> None:
        self._slots.release()

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
        return self.size - int(self._slots.counter)

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
