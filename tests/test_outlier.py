"""Ejection by outcome (success rate, failure percentage) and peak-EWMA balancing.

Pure units for the policy's arithmetic (rpcclient._outlier.judge, the
ejection time, the validation); the rest against real loopback hosts, one
in-process server each, whose delay and 5xx answers the test controls.
"""

from __future__ import annotations

import random
import socket
import statistics
from time import monotonic, perf_counter
from typing import Any

import gevent
import gevent.server
import msgpack
import pytest

import rpcclient
from rpcclient import NO_RETRY, Client, FailurePercentage, OutlierEjection, SuccessRate
from rpcclient._balance import EndpointGroup
from rpcclient._models import Endpoint
from rpcclient._outlier import judge
from rpcclient._retry import RetryBudget

from .conftest import http_response, read_request

# -- the policy's arithmetic (pure) ----------------------------------------------

ONLY_RATE = OutlierEjection(failure_percentage=None)
ONLY_SHARE = OutlierEjection(success_rate=None)


def never() -> float:
    return 0.0  # a draw that always enforces


def test_success_rate_ejects_a_host_below_mean_minus_factor_stdev() -> None:
    # rates 1, 1, 1, 1, 0.5: mean 0.9, stdev 0.2, floor 0.52
    counts = [(100, 0, False)] * 4 + [(50, 50, False)]
    assert judge(ONLY_RATE, counts, never) == [(4, "success_rate")]
    # an even spread, 1 down to 0.8: mean 0.9, stdev 0.071, floor 0.766: none is an outlier
    counts = [(100 - f, f, False) for f in (0, 5, 10, 15, 20)]
    assert judge(ONLY_RATE, counts, never) == []


def test_success_rate_needs_minimum_hosts_and_request_volume() -> None:
    few = [(100, 0, False)] * 3 + [(50, 50, False)]  # 4 < minimum_hosts 5
    assert judge(ONLY_RATE, few, never) == []
    thin = [(100, 0, False)] * 4 + [(5, 5, False)]  # the bad one has 10 < 100 calls
    assert judge(ONLY_RATE, thin, never) == []
    lenient = OutlierEjection(failure_percentage=None, success_rate=SuccessRate(request_volume=10))
    assert judge(lenient, thin, never) == [(4, "success_rate")]


def test_failure_percentage_ejects_above_the_threshold_only() -> None:
    counts = [(40, 0, False), (10, 30, False), (24, 16, False)]  # 0 %, 75 %, 40 %
    assert judge(ONLY_SHARE, counts, never) == [(1, "failure_percentage")]
    low = [(40, 0, False), (10, 9, False), (24, 16, False)]  # 19 calls < volume 20
    assert judge(ONLY_SHARE, low, never) == []


def test_enforcement_percentage_is_a_probability() -> None:
    counts = [(40, 0, False), (0, 40, False), (40, 0, False)]
    half = OutlierEjection(
        success_rate=None, failure_percentage=FailurePercentage(enforcement_percentage=50)
    )
    assert judge(half, counts, lambda: 0.49) == [(1, "failure_percentage")]
    assert judge(half, counts, lambda: 0.5) == []


def test_the_cap_on_ejected_hosts_and_the_last_host() -> None:
    two_bad = [(40, 0, False), (0, 40, False), (5, 35, False)]
    # 50 % of 3 hosts: one may be out; the worst goes first
    assert judge(ONLY_SHARE, two_bad, never) == [(1, "failure_percentage")]
    # already one out (a connect-failure ejection counts): none more
    assert judge(ONLY_SHARE, [(0, 0, True), *two_bad[1:]], never) == []
    every = OutlierEjection(success_rate=None, max_ejection_percent=100)
    assert judge(every, two_bad, never) == [(1, "failure_percentage"), (2, "failure_percentage")]
    # never the last host in service, whatever the cap
    all_bad = [(0, 40, False), (0, 40, False)]
    assert len(judge(every, all_bad, never)) == 1
    assert judge(OutlierEjection(max_ejection_percent=0), two_bad, never) == []


def test_ejection_time_grows_with_repeated_ejections_up_to_the_maximum() -> None:
    policy = OutlierEjection(base_ejection_time=30, max_ejection_time=100)
    assert [policy.ejection_time(n) for n in (1, 2, 3, 4, 9)] == [30, 60, 90, 100, 100]
    # a maximum below the base: the base
    assert OutlierEjection(base_ejection_time=30, max_ejection_time=1).ejection_time(3) == 30


def _group(n: int, policy: OutlierEjection | None, balance: str = "p2c-ewma") -> EndpointGroup:
    eps = [Endpoint.parse(f"http://h{i}") for i in range(n)]
    return EndpointGroup(
        eps, RetryBudget(0.1, 1), rng=random.Random(3), outlier=policy, balance=balance
    )


def test_a_group_grows_a_hosts_rest_and_forgets_one_interval_at_a_time() -> None:
    policy = OutlierEjection(interval=1, base_ejection_time=30, success_rate=None)
    group = _group(3, policy)
    bad = group.hosts[1]
    clock = perf_counter()  # the judging clock is given: a fake one

    def interval(bad_failed: int) -> None:
        nonlocal clock
        for h in group.hosts:
            h.ok, h.failed = (0, bad_failed) if h is bad and bad_failed else (40, 0)
        clock += 1
        group.judge(clock)

    rests = []
    for _ in range(3):
        interval(40)
        assert bad.ejected_until != 0.0 and bad.eject_reason == "failure_percentage"
        rests.append(bad.ejected_until - monotonic())
        group.probe_ended(bad, True)  # its rest over, a probe brings it back
    assert 25 < rests[0] < 31 and 55 < rests[1] < 61 and 85 < rests[2] < 91
    assert bad.streak == 3
    interval(0)  # a good interval in service: the streak falls by one
    assert bad.streak == 2
    stats = group.stats()[1]
    assert stats["ejections"] == 3 and stats["eject_reason"] == "failure_percentage"
    assert stats["success_rate"] == 1.0


def test_bad_values_are_refused_with_their_name() -> None:
    with pytest.raises(ValueError, match="interval"):
        OutlierEjection(interval=0)
    with pytest.raises(ValueError, match="max_ejection_percent"):
        OutlierEjection(max_ejection_percent=101)
    with pytest.raises(TypeError, match="success_rate"):
        OutlierEjection(success_rate=0.9)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="threshold"):
        FailurePercentage(threshold=-1)
    with pytest.raises(ValueError, match="minimum_hosts"):
        SuccessRate(minimum_hosts=1)
    with pytest.raises(TypeError, match="stdev_factor"):
        SuccessRate(stdev_factor="2")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="OutlierEjection"):
        Client("http://127.0.0.1:1", outlier_ejection=5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="balance"):
        Client("http://127.0.0.1:1", balance="round-robin")
    with pytest.raises(AttributeError):
        OutlierEjection().interval = 1  # type: ignore[misc]


def test_a_failure_never_lowers_a_hosts_latency_and_a_peak_counts_at_once() -> None:
    group = _group(2, None)
    host = group.hosts[0]
    group.observe(host, perf_counter() - 0.05, True, None)
    assert host.ewma >= 0.05  # the first sample is a peak
    first = host.ewma
    group.observe(host, perf_counter(), False, rpcclient.ConnectError("refused"))
    assert host.ewma == first  # a fast failure leaves it
    group.observe(host, perf_counter(), True, None)
    assert 0 < host.ewma < first  # a fast success pulls it down (by the time since)
    group.observe(host, perf_counter() - 1.0, True, None)
    assert host.ewma >= 1.0


def test_what_counts_against_a_host() -> None:
    group = _group(2, OutlierEjection())
    host = group.hosts[0]
    started = perf_counter()
    errors: list[BaseException] = [
        rpcclient.HTTPStatusError("bad gateway", status=502),
        rpcclient.RemoteError("boom", type="Boom", status=500),
        rpcclient.ReadTimeout("slow"),
        rpcclient.ConnectError("refused"),
        rpcclient.ConnectionLost("reset"),
    ]
    for exc in errors:
        group.observe(host, started, False, exc)
    assert (host.ok, host.failed) == (0, 5)
    group.observe(host, started, False, rpcclient.HTTPStatusError("no", status=404))
    group.observe(host, started, False, rpcclient.RemoteError("bad arg", type="BadArg", status=400))
    assert (host.ok, host.failed) == (2, 5)  # the server answered as it should
    group.observe(host, started, False, rpcclient.PoolTimeout("our queue"))
    group.observe(host, started, False, None)  # the caller's own Timeout
    assert (host.ok, host.failed) == (2, 5)


def test_a_single_host_group_does_no_bookkeeping() -> None:
    assert not _group(1, OutlierEjection()).tracking
    assert _group(2, None).tracking
    assert not _group(2, None, balance="p2c").tracking


# -- real loopback hosts ---------------------------------------------------------


class Backend:
    """One loopback host: echoes, after ``delay`` seconds, or answers 500 when ``failing``."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.failing = False
        self.calls = 0
        self.socks: set[Any] = set()
        sock = gevent.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.server = gevent.server.StreamServer(sock, self._handle)
        self.server.start()

    def _handle(self, sock: Any, address: Any) -> None:
        self.socks.add(sock)
        buf = bytearray()
        try:
            while (req := read_request(sock, buf)) is not None:
                self.calls += 1
                if self.delay:
                    gevent.sleep(self.delay)
                if self.failing:
                    body = msgpack.packb({"error": {"type": "Boom", "message": "down"}})
                    sock.sendall(http_response(body, "500 Internal Server Error"))
                else:
                    sock.sendall(http_response(msgpack.packb(msgpack.unpackb(req[1]))))
        except OSError:
            pass
        finally:
            self.socks.discard(sock)
            sock.close()

    def stop(self) -> None:
        self.server.close()
        for sock in list(self.socks):
            sock.close()


@pytest.fixture
def backends() -> Any:
    made: list[Backend] = []

    def make(*delays: float) -> list[Backend]:
        made.extend(Backend(d) for d in delays)
        return made[-len(delays) :]

    yield make
    for b in made:
        b.stop()


FAST = OutlierEjection(
    interval=0.1,
    base_ejection_time=0.5,
    success_rate=None,
    failure_percentage=FailurePercentage(request_volume=5),
)


def _hosts(client: Client) -> dict[str, dict[str, Any]]:
    return {h["url"]: h for h in client.stats()["groups"]["*"]["hosts"]}


def _call(client: Client) -> None:
    try:
        client.call("echo.echo", 1)
    except rpcclient.RPCError:
        pass


def test_a_host_answering_500s_is_ejected_and_returns_after_its_time(backends: Any) -> None:
    good1, bad, good2 = backends(0, 0, 0)
    bad.failing = True
    client = Client([good1.url, bad.url, good2.url], retry=NO_RETRY, outlier_ejection=FAST)
    for _ in range(2000):  # bounded: a few intervals' worth of calls
        _call(client)
        if _hosts(client)[bad.url]["ejected"]:
            break
        gevent.sleep(0.001)
    stats = _hosts(client)[bad.url]
    assert stats["ejected"] and stats["eject_reason"] == "failure_percentage"
    assert stats["success_rate"] is not None and stats["success_rate"] < 0.5
    assert _hosts(client)[good1.url]["ewma_ms"] > 0
    bad.failing = False
    during = bad.calls
    for _ in range(20):
        _call(client)
    assert bad.calls == during  # resting: no calls
    for _ in range(400):  # bounded wait for its rest (0.5 s) to end
        _call(client)
        if not _hosts(client)[bad.url]["ejected"]:
            break
        gevent.sleep(0.005)
    assert not _hosts(client)[bad.url]["ejected"]
    assert bad.calls > during
    client.close()


def _share_of_slow(balance: str, backends: Any) -> float:
    fast1, slow, fast2 = backends(0.002, 0.1, 0.002)
    client = Client(
        [fast1.url, slow.url, fast2.url], balance=balance, outlier_ejection=None, retry=NO_RETRY
    )

    def worker() -> None:
        for _ in range(40):
            client.call("echo.echo", 1)

    gevent.joinall([gevent.spawn(worker) for _ in range(8)], raise_error=True)
    client.close()
    return float(slow.calls / (fast1.calls + slow.calls + fast2.calls))


def test_a_slow_host_gets_less_traffic_under_p2c_ewma(backends: Any) -> None:
    """Peak-EWMA sends a 50x slower host far fewer calls than counting calls in flight does.

    The hosts are in this process, so on a loaded machine every call's
    latency gains the process's scheduling delay (tens of ms): against a 20 ms
    host that hid the contrast (p2c-ewma gave it 10-16 % of the calls at load
    6, p2c 14-19 %), against 100 ms it stays (1.3-1.9 % vs 4.7-8.4 %). Medians
    of 3 interleaved rounds; the bounds sit between the two, so p2c-ewma
    behaving as plain p2c fails both.
    """
    rounds = [
        (_share_of_slow("p2c-ewma", backends), _share_of_slow("p2c", backends)) for _ in range(3)
    ]
    ewma = statistics.median(r[0] for r in rounds)
    counted = statistics.median(r[1] for r in rounds)
    assert ewma < 0.035, rounds  # a third would be an even spread
    assert ewma < 0.5 * counted, rounds


def test_with_two_of_three_hosts_bad_the_cap_keeps_two_in_service(backends: Any) -> None:
    good, bad1, bad2 = backends(0, 0, 0)
    bad1.failing = bad2.failing = True
    client = Client([good.url, bad1.url, bad2.url], retry=NO_RETRY, outlier_ejection=FAST)
    most = 0
    ever: set[str] = set()
    for _ in range(600):  # several intervals (0.1 s) and ejection times (0.5 s, growing)
        _call(client)
        out = [u for u, h in _hosts(client).items() if h["ejected"]]
        most = max(most, len(out))
        ever.update(out)
        gevent.sleep(0.001)
    assert most == 1  # 50 % of 3 hosts: one at most
    assert ever and ever <= {bad1.url, bad2.url}
    client.close()


def test_the_last_host_in_service_is_never_ejected(backends: Any) -> None:
    bad1, bad2 = backends(0, 0)
    bad1.failing = bad2.failing = True
    every = OutlierEjection(
        interval=0.1,
        base_ejection_time=5,
        max_ejection_percent=100,
        success_rate=None,
        failure_percentage=FailurePercentage(request_volume=5),
    )
    # p2c: under p2c-ewma one host may draw nearly every call (its first, with the
    # connect, was slower) and the other stay under the request volume
    client = Client([bad1.url, bad2.url], retry=NO_RETRY, outlier_ejection=every, balance="p2c")
    most = 0
    for _ in range(300):
        _call(client)
        most = max(most, sum(h["ejected"] for h in _hosts(client).values()))
        gevent.sleep(0.001)
    assert most == 1, _hosts(client)
    in_service = [u for u, h in _hosts(client).items() if not h["ejected"]]
    (last,) = [b for b in (bad1, bad2) if b.url in in_service]
    before = last.calls
    _call(client)
    assert last.calls == before + 1  # still called
    client.close()
