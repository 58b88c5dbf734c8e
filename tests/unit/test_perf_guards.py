"""Guards for the hot-path shortcuts: each fast path gives what the slow one gave.

The shortcuts (bench/bench_standing.py measures them): the response reader's
C-level appends with a fallback for heads cut across reads, the reader reused
per connection, pool waits timed out by the watchdog instead of a timer each,
the watchdog sleeping until the earliest expiry, the fused stats record, the
cheap two-host pick.
"""

from __future__ import annotations

import random
from typing import Any

import gevent
import pytest

from rpcclient._core.balance import EndpointGroup
from rpcclient._core.models import Endpoint
from rpcclient._core.observe import Stats
from rpcclient._core.retry import RetryBudget
from rpcclient._transports.gevent.http11 import MessageTooLarge, ResponseReader
from rpcclient._transports.gevent.pool import Connection, Pool
from rpcclient._transports.gevent.transport import Watchdog

ANSWERS = [
    b"HTTP/1.1 200 OK\r\nContent-Type: application/x-msgpack\r\nX-Empty:\r\nX-Long: "
    + b"v" * 300
    + b"\r\nContent-Length: 5\r\n\r\nhello",
    b"HTTP/1.1 100 Continue\r\nX-A: 1\r\n\r\nHTTP/1.1 201 Created Now\r\nB: 2\r\n"
    b"Content-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX: y\r\n\r\n3\r\nabc\r\n0\r\n"
    b"T-Trailer: zz\r\n\r\n",
    b"HTTP/1.1 404 \r\nContent-Length: 0\r\n\r\n",
]


def _read(raw: bytes, cuts: list[int], reader: ResponseReader | None = None) -> Any:
    if reader is None:
        reader = ResponseReader(False, 65536, 1 << 20)
    else:
        reader.reset(False)
    pos = 0
    for cut in [*cuts, len(raw)]:
        if cut > pos:
            reader.feed_data(raw[pos:cut])
            pos = cut
    assert reader.final
    r = reader.response()
    return r.status, r.reason, r.headers.raw_items(), bytes(r.body)


@pytest.mark.parametrize("raw", ANSWERS)
def test_reader_gives_the_same_answer_whatever_the_reads(raw: bytes) -> None:
    whole = _read(raw, [])
    for at in range(1, len(raw)):
        assert _read(raw, [at]) == whole, at
    rng = random.Random(3)
    for _ in range(200):
        assert _read(raw, sorted(rng.sample(range(1, len(raw)), 4))) == whole


def test_a_closed_reader_is_never_fed() -> None:
    reader = ResponseReader(False, 65536, 1 << 20)
    assert _read(ANSWERS[0], [], reader)[0] == 200
    reader.close()  # with its connection: the parser and its callbacks go
    reader.reset(False)  # what an exchange ended by the watchdog may still do
    with pytest.raises(EOFError, match="closed"):
        reader.feed_data(ANSWERS[0])


def test_reused_reader_gives_each_answer_afresh() -> None:
    reader = ResponseReader(False, 65536, 1 << 20)
    first = _read(ANSWERS[0], [], reader)
    assert _read(ANSWERS[0], [40], reader) == first  # after a cut head: fast path again
    assert _read(ANSWERS[3], [], reader)[0] == 404
    assert _read(ANSWERS[2], [], reader)[3] == b"abc"  # chunked after Content-Length
    assert _read(ANSWERS[0], [], reader) == first


@pytest.mark.parametrize("step", [None, 5000, 7])
def test_head_and_trailer_limits_hold_on_every_path(step: int | None) -> None:
    head = b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 100) for i in range(100))
    big_head = head + b"Content-Length: 0\r\n\r\n"
    trailers = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n"
        + b"".join(b"T%d: %s\r\n" % (i, b"v" * 100) for i in range(100))
        + b"\r\n"
    )
    for raw in (big_head, trailers):
        chunks = [raw] if step is None else [raw[i : i + step] for i in range(0, len(raw), step)]
        reader = ResponseReader(False, 4096, 1 << 20)
        with pytest.raises(MessageTooLarge):
            for chunk in chunks:
                reader.feed_data(chunk)
    fits = ResponseReader(False, 65536, 1 << 20)
    fits.feed_data(big_head)
    assert len(fits.response().headers) == 101


def _watched_pool(size: int) -> tuple[Pool, Watchdog]:
    return Pool(size, idle_timeout=None, max_age=None), Watchdog(0.005)


def test_swept_pool_wait_times_out_and_leaves_no_hole() -> None:
    pool, dog = _watched_pool(1)
    assert pool.acquire(1.0, swept=True)
    dog.watch_pool(pool, 0.05)
    started = gevent.get_hub().loop.now()
    assert not pool.acquire(0.05, swept=True)
    assert 0.04 <= gevent.get_hub().loop.now() - started < 1.0
    assert pool.waiting == 0

    def hold() -> None:
        if pool.acquire(5.0, swept=True):
            try:
                gevent.sleep(10)
            finally:
                pool.release()

    # killed while queued, and killed just after a hand-over: no hole either way
    job = gevent.spawn(hold)
    gevent.sleep(0.01)
    job.kill()
    assert pool.waiting == 0
    job = gevent.spawn(hold)
    gevent.sleep(0.01)
    pool.release()  # handed to job, which has not run yet
    job.kill()
    assert pool.in_use == 0 and pool.waiting == 0
    assert pool.acquire(0) and pool.in_use == 1


def test_swept_pool_stays_first_come_first_served() -> None:
    pool, dog = _watched_pool(1)
    order: list[str] = []
    assert pool.acquire(None)

    def waiter(tag: str) -> None:
        dog.watch_pool(pool, 5.0)
        assert pool.acquire(5.0, swept=True)
        order.append(tag)
        gevent.sleep(0.005)
        pool.release()

    jobs = [gevent.spawn(waiter, t) for t in "abc"]
    gevent.sleep(0.01)
    pool.release()
    assert not pool.acquire(0)  # the releaser queues behind a, b and c
    assert pool.acquire(5.0)
    order.append("me")
    pool.release()
    gevent.joinall(jobs, raise_error=True)
    assert order == ["a", "b", "c", "me"]


class _Sock:
    closed = False

    def close(self) -> None:
        self.closed = True


def _conn() -> Connection:
    return Connection(_Sock(), tls=False)


def test_watchdog_wakes_for_an_earlier_expiry_and_ends_when_idle() -> None:
    dog = Watchdog(0.005)
    late, early = _conn(), _conn()
    dog.watch(late, 30.0)
    gevent.sleep(0.01)  # the greenlet now sleeps until +30 s
    dog.watch(early, 0.05)
    gevent.sleep(0.2)
    assert early.sock.closed and early.fired and not late.sock.closed
    assert dog.unwatch(early) is True
    assert dog.unwatch(late) is False
    dog.watch(_conn(), 0.01)  # wakes it, then nothing is left
    gevent.sleep(0.1)
    assert dog._greenlet is None


def test_stats_record_equals_two_adds() -> None:
    fused, plain = Stats(), Stats()
    rng = random.Random(5)
    for _ in range(2000):
        elapsed = rng.random() * rng.choice([1e-7, 1e-4, 1e-2, 1.0, 1e7])
        attempt = elapsed if rng.random() < 0.5 else elapsed * rng.random()
        error = rng.choice([None, "ReadTimeout"])
        fused.record("s.m", "http://h", elapsed, attempt, error, 3, 4, 1)
        plain.method("s.m").add(elapsed, error, 3, 4)
        plain.method("s.m").retries += 1
        plain.host("http://h").add(attempt, error, 3, 4)
    assert fused.snapshot() == plain.snapshot()


def test_stats_pairs_add_up_to_the_same_figures() -> None:
    """Calls counted once per (method, host) pair sum up as if counted twice."""
    fused, plain = Stats(), Stats()
    rng = random.Random(7)
    for _ in range(3000):
        name, url = rng.choice(["s.a", "s.b"]), rng.choice(["http://h1", "http://h2", None])
        elapsed = rng.random() * rng.choice([1e-5, 1e-2, 1.0])
        retried = rng.random() < 0.2
        attempt = elapsed * rng.random() if retried else elapsed
        error = rng.choice([None, None, "ReadTimeout"])
        fused.record(name, url, elapsed, attempt, error, 3, 4, int(retried))
        plain.method(name).add(elapsed, error, 3, 4)
        plain.method(name).retries += int(retried)
        if url is not None:
            plain.host(url).add(attempt, error, 3, 4)
    assert fused.pairs and fused.methods and fused.hosts  # both paths were taken
    got, want = fused.snapshot(), plain.snapshot()
    assert got.keys() == want.keys()
    for part in got:
        assert got[part].keys() == want[part].keys()
        for key, figures in got[part].items():
            for field, value in figures.items():
                expected = want[part][key][field]
                assert value == (pytest.approx(expected) if isinstance(value, float) else expected)


def test_two_host_pick_balances_and_prefers_fewer_outstanding() -> None:
    eps = [Endpoint.parse(f"http://h{i}") for i in range(2)]
    group = EndpointGroup(eps, RetryBudget(0.1, 1), rng=random.Random(11))
    picks = [group.pick().endpoint.host for _ in range(2000)]
    assert 800 < picks.count("h0") < 1200  # ties broken at random
    group.hosts[0].outstanding = 3
    assert {group.pick().endpoint.host for _ in range(100)} == {"h1"}
    assert group.pick([group.hosts[1]]).endpoint.host == "h0"
