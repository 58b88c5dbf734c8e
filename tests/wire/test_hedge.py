"""Hedged calls (rpcclient._policy.hedge) against real servers on loopback.

Each host is a small RPCApp on gevent.pywsgi whose ``svc.who`` sleeps for
that host's current delay, then answers its own name and the caller's value.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import gevent
import pytest

from rpcclient import CallEvent, Client, Hedge, Hook, Retry
from rpcclient._policy.hedge import LatencyWindows
from rpcclient.exceptions import InvalidRequest, ReadTimeout, RPCError
from rpcclient.server import MemoryDedupStore, RPCApp


class SlowHost:
    """One host: ``delay`` seconds per call (changeable), and the calls it got."""

    def __init__(self, name: str, start: Callable[[Any], str], delay: float = 0.0) -> None:
        self.name = name
        self.delay = delay
        self.calls = 0
        app = RPCApp()

        @app.register("svc.who")
        def who(value: Any) -> list[Any]:
            self.calls += 1
            if self.delay:
                gevent.sleep(self.delay)
            return [self.name, value]

        self.url = start(app)


@pytest.fixture
def hosts(wsgi_server: Callable[[Any], str]) -> Callable[..., list[SlowHost]]:
    def make(*delays: float) -> list[SlowHost]:
        return [SlowHost(chr(ord("a") + i), wsgi_server, d) for i, d in enumerate(delays)]

    return make


def method_stats(client: Client, name: str = "svc.who") -> dict[str, Any]:
    return client.stats()["stats"]["methods"][name]  # type: ignore[no-any-return]


def test_hedge_wins_when_first_host_stalls(hosts: Callable[..., list[SlowHost]]) -> None:
    a, b = hosts(5.0, 0.0)
    # the hedge waits 0.3 s (was 0.05): a first attempt to b slower than that
    # on a loaded machine sends a losing hedge to a, and hedges_won != a.calls
    with Client([a.url, b.url], hedge=Hedge(delay=0.3), idempotent=["svc.who"]) as client:
        # without a hedge a call landing on a would fail at 1 s (a stalls for 5 s)
        for i in range(8):
            assert client.call("svc.who", [i], timeout=1.0) == ["b", i]
        figures = method_stats(client)
    assert a.calls >= 1  # the random pick sent some first attempts to a
    assert figures["hedges"] == a.calls  # one hedge for each stalled first attempt
    assert figures["hedges_won"] == a.calls
    assert figures["calls"] == 8


def test_no_hedge_when_the_first_answers_in_time(hosts: Callable[..., list[SlowHost]]) -> None:
    a, b = hosts(0.0, 0.0)
    with Client([a.url, b.url], hedge=Hedge(delay=2.0)) as client:
        for i in range(10):
            assert client.call("svc.who", [i], idempotent=True)[1] == i
        figures = method_stats(client)
    assert figures["hedges"] == 0
    assert a.calls + b.calls == 10


def test_losers_connections_closed_and_pool_intact(
    hosts: Callable[..., list[SlowHost]],
) -> None:
    (a,) = hosts(2.0)
    # one host: the hedge goes to the same host on a second connection; the
    # first attempt loses when a is made fast for the hedge... both are slow, so
    # the call times out; then the next calls must read their own answers.
    # The hedge is due at 0.05 s, the deadline at 1 s (was 0.2 s: 150 ms for
    # the hedge to go out, which a loaded machine could miss)
    with Client(a.url, pool_size=2) as client:
        h = Hedge(delay=0.05)
        with pytest.raises(ReadTimeout):
            client.call("svc.who", ["lost"], idempotent=True, hedge=h, timeout=1.0)
        assert method_stats(client)["hedges"] == 1
        pool = client.stats()["pools"][a.url]
        assert pool["in_use"] == 0 and pool["idle"] == 0  # both killed mid-read: closed
        a.delay = 0.0
        for i in range(5):
            assert client.call("svc.who", [i]) == ["a", i]  # never a stale answer
        pool = client.stats()["pools"][a.url]
        assert pool["in_use"] == 0 and pool["idle"] == 1


def test_loser_cancelled_when_hedge_wins_then_pool_reused(
    hosts: Callable[..., list[SlowHost]],
) -> None:
    a, b = hosts(5.0, 0.0)
    with Client([a.url, b.url], pool_size=1) as client:
        for i in range(6):
            value = client.call("svc.who", [i], idempotent=True, hedge=Hedge(delay=0.02))
            assert value == ["b", i]
        assert a.calls >= 1
        # a's connections were closed mid-read: no slot held, nothing left idle
        assert client.stats()["pools"][a.url]["in_use"] == 0
        assert client.stats()["pools"][a.url]["idle"] == 0
        a.delay = 0.0
        answers = {client.call("svc.who", [i], timeout=2.0)[1] for i in range(10)}
        assert answers == set(range(10))


def test_empty_budget_sends_no_hedge(hosts: Callable[..., list[SlowHost]]) -> None:
    (a,) = hosts(5.0)
    no_budget = Retry(budget_ratio=0.0, budget_min_per_second=0.0)
    with Client(a.url, retry=no_budget, hedge=Hedge(delay=0.02)) as client:
        budget = client._groups["*"].budget
        while budget.withdraw():  # the bucket starts full: empty it (bounded by its cap)
            pass
        with pytest.raises(ReadTimeout):
            client.call("svc.who", [1], idempotent=True, timeout=0.3)
        assert method_stats(client)["hedges"] == 0
    assert a.calls == 1


def test_budget_tokens_spent_only_on_hedges_sent(hosts: Callable[..., list[SlowHost]]) -> None:
    # both hosts busy with this call: a third attempt finds no host and gives
    # its token back (found by review: it was lost)
    a, b = hosts(1.0, 1.0)
    no_refill = Retry(budget_ratio=0.0, budget_min_per_second=0.0)
    hedge = Hedge(delay=0.05, max_attempts=3)
    with Client([a.url, b.url], retry=no_refill, hedge=hedge) as client:
        budget = client._groups["*"].budget
        full = budget.balance
        with pytest.raises(ReadTimeout):
            client.call("svc.who", [1], idempotent=True, timeout=0.3)
        sent = method_stats(client)["hedges"]
    assert sent == 1  # b took the one hedge; a third attempt had no host
    assert budget.balance == pytest.approx(full - sent)


def test_deadline_covers_every_hedge(hosts: Callable[..., list[SlowHost]]) -> None:
    a, b, c = hosts(5.0, 5.0, 5.0)
    with Client([a.url, b.url, c.url], hedge=Hedge(delay=0.05, max_attempts=3)) as client:
        with pytest.raises(RPCError) as info:
            client.call("svc.who", [1], idempotent=True, timeout=0.4)
        assert isinstance(info.value, ReadTimeout)
        assert method_stats(client)["hedges"] == 2
    # one attempt per host: a hedge never goes where one is in flight
    assert (a.calls, b.calls, c.calls) == (1, 1, 1)


def test_hedge_on_non_idempotent_call_refused(hosts: Callable[..., list[SlowHost]]) -> None:
    (a,) = hosts(0.0)
    with Client(a.url) as client:
        with pytest.raises(InvalidRequest, match="not idempotent"):
            client.call("svc.who", [1], hedge=Hedge(delay=0.01))
    assert a.calls == 0  # refused before anything was sent


def test_client_default_skips_non_idempotent_calls(
    hosts: Callable[..., list[SlowHost]],
) -> None:
    a, b = hosts(0.3, 0.3)
    with Client([a.url, b.url], hedge=Hedge(delay=0.01)) as client:
        assert client.call("svc.who", [1])[1] == 1
        assert method_stats(client)["hedges"] == 0
    assert a.calls + b.calls == 1


def test_failed_attempt_lets_the_next_hedge_go_at_once(
    wsgi_server: Callable[[Any], str], hosts: Callable[..., list[SlowHost]]
) -> None:
    refused = []

    def refuse(environ: Any, start_response: Any) -> list[bytes]:
        refused.append(1)
        start_response("503 Service Unavailable", [("Content-Length", "0")])
        return [b""]

    down = wsgi_server(refuse)
    (b,) = hosts(0.0)
    # a fixed delay far beyond the call's timeout: only the 503 can launch the hedge
    with Client([down, b.url], hedge=Hedge(delay=30.0)) as client:
        for i in range(6):
            assert client.call("svc.who", [i], idempotent=True, timeout=2.0) == ["a", i]
        figures = method_stats(client)
    assert refused  # some first attempts went to the refusing host
    assert figures["hedges"] == len(refused) == figures["hedges_won"]


def test_percentile_delay_follows_observed_latency() -> None:
    windows = LatencyWindows()
    hedge = Hedge(percentile=90.0, min_delay=0.001, max_delay=1.0, warmup=10)
    assert hedge.wait(windows, "s.m") == 1.0  # nothing seen yet: the longest wait
    for ms in range(1, 101):
        windows.add("s.m", ms / 1000)
    assert hedge.wait(windows, "s.m") == pytest.approx(0.090)
    for _ in range(128):
        windows.add("s.m", 0.005)
    assert hedge.wait(windows, "s.m") == pytest.approx(0.005)
    for _ in range(128):
        windows.add("s.m", 0.0)
    assert hedge.wait(windows, "s.m") == 0.001  # clamped to min_delay
    assert hedge.wait(windows, "other.m") == 1.0


def test_latency_windows_bounded() -> None:
    windows = LatencyWindows()
    for i in range(2500):
        windows.add(f"s.m{i}", 0.01)
    assert len(windows._windows) <= 1000


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"delay": -1.0}, ValueError),
        ({"delay": float("nan")}, ValueError),
        ({"delay": 0.1, "percentile": 90.0}, ValueError),
        ({"percentile": 100.0}, ValueError),
        ({"max_attempts": 1}, ValueError),
        ({"max_attempts": 2.0}, TypeError),
        ({"min_delay": 2.0, "max_delay": 1.0}, ValueError),
    ],
)
def test_hedge_validation(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error, match="Hedge"):
        Hedge(**kwargs)


def test_blocking_transport_refuses_hedging(bundled_server: str) -> None:
    pytest.importorskip("urllib3")
    with pytest.raises(ValueError, match="gevent transport"):
        Client(bundled_server, transport="urllib3", hedge=Hedge(delay=0.1))


# -- deduplicated (exactly-once) calls are hedged under their scope ---------------------


class DedupHost:
    """A host deduplicating in ``store``; ``before`` seconds pass before its RPCApp
    sees a request (a queue in front of the app: the copy has not been claimed)."""

    def __init__(
        self, name: str, start: Callable[[Any], str], store: MemoryDedupStore, runs: Counter[str]
    ) -> None:
        self.before = 0.0
        self.requests = 0
        app = RPCApp(dedup=store)

        @app.register("svc.write")
        def write(token: str) -> list[str]:
            runs[token] += 1
            return [name, token]

        def wsgi(environ: dict[str, Any], start_response: Any) -> Any:
            self.requests += 1
            if self.before:
                gevent.sleep(self.before)
            return app(environ, start_response)

        self.url = start(wsgi)


def learn_scopes(client: Client, hosts: int) -> None:
    """Plain calls until every host has answered once (a scope is learnt from an answer)."""
    for i in range(50):
        client.call("svc.write", [f"warm{i}"])
        (group,) = client.stats()["groups"].values()
        scopes = [h["dedup_scope"] for h in group["hosts"]]
        if len(scopes) == hosts and all(scopes):
            return
    raise AssertionError("the hosts' dedup scopes were never learnt")


@pytest.mark.parametrize("shared", [True, False], ids=["one scope", "two scopes"])
def test_a_deduplicated_call_is_hedged_only_within_its_scope(
    wsgi_server: Callable[[Any], str], shared: bool
) -> None:
    runs: Counter[str] = Counter()
    store = MemoryDedupStore()
    a = DedupHost("a", wsgi_server, store, runs)
    b = DedupHost("b", wsgi_server, store if shared else MemoryDedupStore(), runs)
    with Client([a.url, b.url], hedge=Hedge(delay=0.05)) as client:
        learn_scopes(client, 2)
        before = method_stats(client, "svc.write")["hedges"]
        a.before = 0.6  # a's copies now wait in front of its app
        first_on_a = a.requests
        results = [client.call("svc.write", [f"t{i}"], timeout=3.0) for i in range(8)]
        first_on_a = a.requests - first_on_a
        hedges = method_stats(client, "svc.write")["hedges"] - before
        gevent.sleep(0.8)  # a's late copies reach its app, which replays or runs them
    assert [r[1] for r in results] == [f"t{i}" for i in range(8)]
    assert first_on_a >= 1  # the random pick sent some first attempts to a
    if shared:
        # each call stuck at a got one hedge to b, which won; a's copy then replayed
        assert hedges >= 1 and all(r[0] == "b" for r in results)
    else:
        # b does not hold a's records: a copy there could run the call twice
        assert hedges == 0
    twice = {t: n for t, n in runs.items() if n != 1}
    assert not twice, twice  # every call ran exactly once


def test_no_hedge_of_a_non_idempotent_call_before_its_host_deduplicates(
    hosts: Callable[..., list[SlowHost]],
) -> None:
    # plain hosts: the explicit hedge= is refused (test above); the client's
    # default takes the plain path, one attempt
    a, b = hosts(0.2, 0.2)
    with Client([a.url, b.url], hedge=Hedge(delay=0.01)) as client:
        with pytest.raises(InvalidRequest, match="deduplication"):
            client.call("svc.who", [1], hedge=Hedge(delay=0.01))
        assert client.call("svc.who", [2])[1] == 2
        assert method_stats(client)["hedges"] == 0
    assert a.calls + b.calls == 1


def test_hedged_attempts_feed_ejection_and_probes(bundled_server: str) -> None:
    """A dead host's probe taken by a hedged call ends, so later calls probe it again."""
    from tests.support.raw import free_port

    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: refused
    with Client(
        [bundled_server, dead], eject_after=1, cooldown=0.2, idempotent=["math.add"]
    ) as client:

        def state() -> dict[str, Any]:
            (group,) = client.stats()["groups"].values()
            return next(h for h in group["hosts"] if h["url"] == dead)  # type: ignore[no-any-return]

        hedge = Hedge(delay=0.05)
        for _ in range(50):  # hedged calls only: their connect failures eject the host
            assert client.call("math.add", [1, 2], hedge=hedge) == 3
            if state()["ejected"]:
                break
        assert state()["ejected"], state()
        probed = 0
        for _ in range(4):
            gevent.sleep(0.3)  # the rest is over: the next pick probes the host
            before = state()["calls"]
            for _ in range(5):
                assert client.call("math.add", [1, 2], hedge=hedge) == 3
            probed += state()["calls"] - before
            assert not state()["probing"], state()  # each probe ended with its attempt
        assert probed >= 2, probed  # probed again after every rest, not once for good


class Recorder(Hook):
    """Records what each phase saw: (phase, attempt, endpoint, error class, status)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int, str, str | None, int | None]] = []

    def _note(self, phase: str, event: CallEvent) -> None:
        error = None if event.error is None else type(event.error).__name__
        self.seen.append((phase, event.attempt, event.endpoint, error, event.status))

    def before_call(self, event: CallEvent) -> None:
        self._note("before_call", event)

    def before_attempt(self, event: CallEvent) -> None:
        event.headers.append((b"X-Hooked", b"%d" % event.attempt))
        self._note("before_attempt", event)

    def after_attempt(self, event: CallEvent) -> None:
        self._note("after_attempt", event)

    def after_call(self, event: CallEvent) -> None:
        assert event.result is None or event.result[0] == "b"
        self._note("after_call", event)


def test_hedged_calls_run_hooks_once_per_attempt(wsgi_server: Callable[[Any], str]) -> None:
    hooked: list[str] = []

    def make(name: str, delay: float) -> str:
        app = RPCApp()

        @app.register("svc.who")
        def who(value: Any) -> list[Any]:
            gevent.sleep(delay)
            return [name, value]

        def wsgi(environ: dict[str, Any], start_response: Any) -> Any:
            hooked.append(f"{name}:{environ.get('HTTP_X_HOOKED')}")
            return app(environ, start_response)

        return wsgi_server(wsgi)

    a, b = make("a", 2.0), make("b", 0.0)
    recorder = Recorder()
    # the first attempt forced to a by making b look busy
    with Client([a, b], hooks=[recorder], idempotent=["svc.who"]) as client:
        group = client._groups["*"]
        slow = next(h for h in group.hosts if h.endpoint.url == a)
        fast = next(h for h in group.hosts if h.endpoint.url == b)
        fast.outstanding += 100  # p2c picks the host with fewer calls in flight: a
        try:
            result = client.call("svc.who", [1], hedge=Hedge(delay=0.05), timeout=1.5)
        finally:
            fast.outstanding -= 100
        assert slow.outstanding == 0 and fast.outstanding == 0
    assert result == ["b", 1]
    phases = [s[0] for s in recorder.seen]
    assert phases.count("before_call") == 1 and phases.count("after_call") == 1
    attempts = sorted((s[1], s[2]) for s in recorder.seen if s[0] == "before_attempt")
    assert attempts == [(1, a), (2, b)]
    ended = {s[1]: (s[3], s[4]) for s in recorder.seen if s[0] == "after_attempt"}
    assert ended == {1: ("GreenletExit", None), 2: (None, 200)}
    assert recorder.seen[-1] == ("after_call", 2, b, None, 200)  # the call's last word
    assert sorted(hooked) == ["a:1", "b:2"]  # each attempt's own hook header went out
