"""The gevent pool's state machine and the watchdog's marks, as pure units.

A pool slot is claimed by a :class:`Claim` whose state moves QUEUED ->
GRANTED | SENT | EXPIRED, set by whoever ends the wait; ``Pool.acquire``
returns the claim (or None: no slot). The watchdog's two marks on a
connection (``expires``, ``fired``) are written by it alone. The pool hands
over idle connections unchecked: the stale check is the transport's.
"""

from __future__ import annotations

import math
import socket
from typing import Any

import gevent
import pytest

from rpcclient._transports.gevent.pool import (
    EXPIRED,
    GRANTED,
    QUEUED,
    SENT,
    Claim,
    Connection,
    Job,
    Pool,
)
from rpcclient._transports.gevent.watchdog import Watchdog


def _pool(size: int = 1) -> Pool:
    return Pool(size, idle_timeout=None, max_age=None)


class _Sock:
    closed = False

    def close(self) -> None:
        self.closed = True


def _conn() -> Connection:
    return Connection(_Sock(), tls=False)


def _queued(pool: Pool, **kw: Any) -> tuple[gevent.Greenlet, Claim]:
    """A greenlet waiting in ``pool`` and the claim it is queued as."""
    task = gevent.spawn(pool.acquire, 5.0, **kw)
    gevent.sleep(0)
    assert pool.waiting == 1
    claim = pool._waiters[0]
    assert claim.state == QUEUED and "queued" in repr(claim)
    return task, claim


def test_a_free_slot_is_a_granted_claim_without_a_connection() -> None:
    pool = _pool()
    claim = pool.acquire(None)
    assert isinstance(claim, Claim)
    assert claim.state == GRANTED and claim.conn is None and claim.job is None
    assert "granted" in repr(claim)
    assert pool.in_use == 1
    assert pool.acquire(0) is None  # full, and no wait allowed: no slot, no claim
    assert pool.acquire(0.01) is None  # full for the whole wait
    assert pool.waiting == 0 and pool.in_use == 1


def test_a_released_slot_grants_the_oldest_claim() -> None:
    pool = _pool()
    assert pool.acquire(None) is not None
    task, claim = _queued(pool)
    pool.release()
    assert claim.state == GRANTED  # set by the releaser, before the waiter runs
    got = task.get(timeout=5)
    assert got is claim and got.conn is None
    assert pool.in_use == 1 and pool.waiting == 0


def test_a_swept_claim_past_its_expiry_is_expired_and_gets_no_slot() -> None:
    pool = _pool()
    assert pool.acquire(None) is not None
    task, claim = _queued(pool, swept=True)
    assert claim.expires != math.inf
    assert pool.expire_waiters(claim.expires - 1.0) == claim.expires  # not yet
    assert pool.expire_waiters(claim.expires) == math.inf
    assert claim.state == EXPIRED and "expired" in repr(claim)
    assert task.get(timeout=5) is None
    assert pool.waiting == 0 and pool.in_use == 1


def test_a_claim_handed_a_sent_job_gets_the_connection() -> None:
    pool = _pool()
    assert pool.acquire(None) is not None
    job = Job(b"head", b"", None, lambda conn: False)
    task, claim = _queued(pool, job=job)
    assert pool.first_job() is job
    conn = _conn()
    waiter = pool.hand_sent(conn)
    assert claim.state == SENT and claim.conn is conn and pool.handovers == 1
    gevent.get_hub().loop.run_callback(waiter.switch, None)  # the answer is readable
    got = task.get(timeout=5)
    assert got is claim and got.conn is conn
    assert pool.in_use == 1  # the slot came with it


@pytest.mark.parametrize("fired", [False, True])
def test_a_sent_claim_killed_before_its_answer_abandons_the_job(fired: bool) -> None:
    pool = _pool()
    assert pool.acquire(None) is not None
    abandoned: list[Connection] = []

    def abandon(conn: Connection) -> bool:
        abandoned.append(conn)
        return fired  # whether the watchdog had closed it

    job = Job(b"head", b"", None, abandon)
    task, _claim = _queued(pool, job=job)
    conn = _conn()
    pool.hand_sent(conn)  # sent, and nobody wakes it: the answer never comes
    task.kill()
    assert abandoned == [conn]
    assert job.fired is fired  # abandon's answer, stored by the pool
    assert pool.in_use == 0 and pool.waiting == 0  # the slot it held went back


def test_a_granted_claim_killed_before_it_ran_gives_the_slot_back() -> None:
    pool = _pool()
    assert pool.acquire(None) is not None
    task, claim = _queued(pool)
    task.kill(block=False)  # the kill is queued in the hub first ...
    pool.release()  # ... then the slot is handed over, and its wakeup queued
    assert claim.state == GRANTED
    gevent.sleep(0.01)
    assert task.dead and isinstance(task.value, gevent.GreenletExit)  # killed, not granted
    assert pool.in_use == 0 and pool.waiting == 0  # the slot it was granted went back


def test_the_watchdog_alone_moves_its_marks() -> None:
    conn = _conn()
    assert conn.expires == math.inf and conn.fired is False  # not watched
    dog = Watchdog(0.005)
    expires = dog.watch(conn, 30.0)
    assert conn.expires == expires != math.inf
    assert dog.unwatch(conn) is False
    assert conn.expires == math.inf  # back to "not watched"
    dog.watch(conn, 0.01)
    gevent.sleep(0.2)
    assert conn.fired and conn.sock.closed
    assert dog.unwatch(conn) is True
    assert conn.expires == math.inf


def test_checkout_hands_over_an_idle_connection_unchecked() -> None:
    """The pool does no I/O on a connection it hands out: a stale one comes
    back too, and the caller's is_stale() finds it."""
    ours, theirs = socket.socketpair()
    try:
        pool = _pool()
        conn = Connection(ours, tls=False)
        pool.checkin(conn)
        theirs.sendall(b"x")  # a stray byte on an idle connection: stale
        got = pool.checkout()
        assert got is conn
        assert got.is_stale()
        assert pool.idle == 0
    finally:
        ours.close()
        theirs.close()


def test_checkout_drops_connections_past_their_idle_timeout() -> None:
    pool = Pool(1, idle_timeout=0.0, max_age=None)
    conn = _conn()
    pool.checkin(conn)
    assert pool.checkout() is None
    assert conn.sock.closed and pool.idle == 0
