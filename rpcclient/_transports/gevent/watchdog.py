"""The deadline watchdog: one greenlet per transport that ends overdue exchanges and pool waits.

Everything the watchdog writes lives here. Two of its marks are stored on
each :class:`~rpcclient._transports.gevent.pool.Connection` rather than in a
table of its own (a dict lookup per exchange would cost more than the two
attribute stores, on every call): ``Connection.expires`` and
``Connection.fired``. They are the watchdog's state all the same:

- only this module writes them; the transport and the pool read them;
- ``expires`` is ``math.inf`` whenever the connection is not watched (set by
  :meth:`Watchdog.unwatch`, and the connection's own initial value), and the
  exchange's expiry (a ``monotonic()`` time) while it is;
- ``fired`` is True once the watchdog closed the connection for being
  overdue; a fired connection is closed and is never used again. It is read
  after the exchange failed, to tell a ``ReadTimeout`` from a lost connection.

The watchdog makes no I/O of its own but the ``close`` of an overdue
connection's socket (which wakes the greenlet blocked on it).
"""

from __future__ import annotations

import math
from time import monotonic

import gevent
import gevent.event

from .pool import Connection, Pool

__all__ = ["Watchdog"]


class Watchdog:
    """One greenlet per transport that ends overdue exchanges and pool waits.

    The alternative to a ``gevent.Timeout`` per call: an exchange marks its
    connection with its expiry and puts it in the in-flight set (two
    attribute stores and a set insert, no allocation); a swept pool wait
    (``Pool.acquire(swept=True)``) registers its pool. The greenlet sleeps
    until the earliest expiry it knows, then closes the socket of each
    overdue exchange (setting its ``fired`` flag: gevent wakes the greenlet
    blocked on it with EBADF, and the transport, seeing ``fired``, raises
    ReadTimeout) and times out overdue pool waiters.

    It sleeps until that expiry, not on a short fixed tick, because an event
    loop with a near timer pending makes every idle wait of the process arm
    a kernel timer: about 2-3 us of CPU per sequential call on a VM. With the
    same bounds for every call, a new expiry is never the earliest, so
    ``watch`` is bookkeeping only; an earlier one wakes the greenlet to
    recompute. Deadlines are met within ``tick`` (the shortest sleep, 1 ms:
    it only matters when expiries are that close together, and a 10 ms one
    made staggered deadlines 5 ms late at the median); with nothing in
    flight the greenlet ends at its next wakeup. Overdue exchanges are closed
    earliest first: each close queues its greenlet's wakeup and the hub runs
    them in that order, so under a burst of expiries the first overdue is
    the first to return (in set order, 400 at once came back 16 ms late at
    the median against 6 ms with a timer per call; now 4 ms).
    """

    __slots__ = ("_active", "_greenlet", "_poke", "_pools", "_wake_at", "tick")
    _active: set[Connection]  # exchanges in flight
    _pools: set[Pool]  # pools with swept waiters
    _greenlet: gevent.Greenlet | None
    _wake_at: float  # when the greenlet wakes next (inf: not running)

    def __init__(self, tick: float = 0.001) -> None:
        self.tick = tick
        self.reset()

    def watch(self, conn: Connection, read_for: float) -> float:
        """Close ``conn`` if its exchange is not over ``read_for`` s from now.

        Returns the expiry (a ``monotonic()`` time), which is also
        ``conn.expires`` until :meth:`unwatch`.
        """
        conn.expires = expires = monotonic() + read_for
        conn.fired = False
        self._active.add(conn)
        if expires < self._wake_at:
            self._wake(expires)
        return expires

    def watch_pool(self, pool: Pool, wait: float) -> None:
        """Time out the swept waiters of ``pool``, the next one ``wait`` s from now."""
        self._pools.add(pool)
        expires = monotonic() + wait
        if expires < self._wake_at:
            self._wake(expires)

    def unwatch(self, conn: Connection) -> bool:
        """Stop watching ``conn``; True when the watchdog closed it meanwhile.

        ``conn.expires`` is back to ``inf``: an exchange handed over on it
        later is unbounded until it is watched again.
        """
        self._active.discard(conn)
        conn.expires = math.inf
        return conn.fired

    def _wake(self, at: float) -> None:
        self._wake_at = at
        if self._greenlet is None:
            self._greenlet = gevent.spawn(self._run)
        else:
            self._poke.set()  # sleeping until later: recompute

    def _run(self) -> None:
        active, pools, poke = self._active, self._pools, self._poke
        try:
            # no switch between the loop test and the finally below, so a
            # watch() can never find a greenlet that is about to end
            while active or pools:
                delay = self._wake_at - monotonic()
                poke.clear()
                poke.wait(delay if delay > self.tick else self.tick)
                now = monotonic()
                wake_at = math.inf
                due: list[Connection] = []
                for conn in active:
                    if conn.expires <= now:
                        due.append(conn)
                    elif conn.expires < wake_at:
                        wake_at = conn.expires
                if due:
                    # the earliest first: each close queues its greenlet's wakeup, and
                    # the hub runs them in that order
                    due.sort(key=_expiry)
                    for conn in due:
                        active.discard(conn)
                        conn.fired = True
                        conn.close()
                for pool in list(pools):
                    left = pool.expire_waiters(now)  # the next waiter's expiry, or inf
                    if left == math.inf:
                        pools.discard(pool)
                    elif left < wake_at:
                        wake_at = left
                self._wake_at = wake_at
        finally:
            self._greenlet = None
            self._wake_at = math.inf

    def stop_if_idle(self) -> None:
        """End the greenlet now when nothing is watched (a closed transport)."""
        greenlet = self._greenlet
        if greenlet is not None and not self._active and not self._pools:
            greenlet.kill(block=False)

    def reset(self) -> None:
        """Start empty (in a forked child: forget the parent's exchanges and greenlet)."""
        self._active = set()
        self._pools = set()
        self._greenlet = None
        self._poke = gevent.event.Event()
        self._wake_at = math.inf


def _expiry(conn: Connection) -> float:
    return conn.expires
