"""The hedged path (rpcclient._policy.hedge) under races: a hedge winning at awkward moments.

Real servers on loopback (gevent.pywsgi running an RPCApp), no mocks.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import gevent

from rpcclient import Client, Hedge
from rpcclient.server import MemoryDedupStore, RPCApp


def staggered_host(start: Callable[[Any], str], first: float, rest: float) -> tuple[str, list[int]]:
    """One host whose first ``svc.who`` sleeps ``first`` s and every later one
    ``rest`` s; returns its URL and the list of values it was called with."""
    seen: list[int] = []
    app = RPCApp()

    @app.register("svc.who")
    def who(value: int) -> int:
        seen.append(value)
        gevent.sleep(first if len(seen) == 1 else rest)
        return value

    return start(app), seen


class SlowCutHook:
    """An ``after_attempt`` hook that blocks (as one flushing over the network
    would) when it reports the caller's first attempt cut by a hedge."""

    def __init__(self, pause: float) -> None:
        self.pause = pause
        self.cut = 0

    def after_attempt(self, event: Any) -> None:
        if isinstance(event.error, gevent.GreenletExit | gevent.Timeout):
            self.cut += 1
            gevent.sleep(self.pause)


def test_second_winning_hedge_never_throws_into_the_caller_after_the_cut(
    wsgi_server: Callable[[Any], str],
) -> None:
    # one host: the first attempt stalls 5 s, both hedges (at 0.05 and 0.1 s)
    # answer after 0.2 s. The first hedge's win cuts the caller's attempt; its
    # after_attempt hook then blocks for 1 s, and the second hedge wins in
    # that second. A second _Superseded thrown into the caller then (it was
    # still marked as inside its first attempt) escaped to the user's code.
    url, seen = staggered_host(wsgi_server, 5.0, 0.2)
    hook = SlowCutHook(1.0)
    with Client(url, pool_size=3, hooks=[hook]) as client:
        value = client.call(
            "svc.who", 7, idempotent=True, hedge=Hedge(delay=0.05, max_attempts=3), timeout=4.0
        )
        assert value == 7
        assert hook.cut == 1
        assert len(seen) == 3  # the first attempt and both hedges reached the host
        assert client.stats()["pools"][url]["in_use"] == 0


def test_callers_own_timeout_is_what_it_gets_when_a_hedge_wins_during_the_hooks(
    wsgi_server: Callable[[Any], str],
) -> None:
    # the caller's gevent.Timeout (0.15 s) cuts its first attempt (stalled 5 s);
    # the hedge sent at 0.05 s wins at ~0.25 s, while the cut attempt's
    # after_attempt hook blocks for 1 s: the caller must get its own Timeout,
    # not a _Superseded (an internal BaseException) in its place
    url, _ = staggered_host(wsgi_server, 5.0, 0.2)
    hook = SlowCutHook(1.0)
    mine = gevent.Timeout(0.15)
    with Client(url, pool_size=2, hooks=[hook]) as client:
        raised: BaseException | None = None
        mine.start()
        try:
            client.call("svc.who", 1, idempotent=True, hedge=Hedge(delay=0.05), timeout=4.0)
        except BaseException as exc:  # what escapes is the point
            raised = exc
        finally:
            mine.close()
        assert raised is mine
        assert hook.cut == 1
        assert client.stats()["pools"][url]["in_use"] == 0


class SwitchableDedupHost:
    """A host that deduplicates until ``plain`` is set (as a restart without
    deduplication would): then its answers carry no ``X-Rpc-Dedup`` and a
    copy of a call is refused (the bundled server's 503 for a scope it does not
    hold). ``svc.write`` sleeps ``slow`` s for the token
    ``"slow"``; ``runs`` counts each token's runs."""

    def __init__(self, start: Callable[[Any], str]) -> None:
        self.plain = False
        self.copies_sent_plain = 0  # copies that reached it once it stopped deduplicating
        self.slow = 0.0
        self.runs: Counter[str] = Counter()
        dedup_app, plain_app = RPCApp(dedup=MemoryDedupStore()), RPCApp()

        def write(token: str) -> str:
            self.runs[token] += 1
            if token == "slow":
                gevent.sleep(self.slow)
            return token

        dedup_app.register("svc.write")(write)
        plain_app.register("svc.write")(write)

        def wsgi(environ: dict[str, Any], start_response: Any) -> Any:
            if not self.plain:
                return dedup_app(environ, start_response)
            if "HTTP_X_RPC_DEDUP_SCOPE" in environ:
                self.copies_sent_plain += 1
            return plain_app(environ, start_response)

        self.url = start(wsgi)


def test_no_hedge_of_a_non_idempotent_call_to_a_host_that_stopped_deduplicating(
    wsgi_server: Callable[[Any], str],
) -> None:
    # one host, learnt as deduplicating; a non-idempotent call stalls there.
    # Meanwhile another call's answer shows the host no longer deduplicates
    # (no X-Rpc-Dedup): the plain path would re-send nothing to it now, but the
    # hedge went there anyway (pick_scope falls back to the last host, which
    # for a hedge is the one still in flight, whatever it advertises now)
    host = SwitchableDedupHost(wsgi_server)
    with Client(host.url, pool_size=4, hedge=Hedge(delay=0.3)) as client:
        assert client.call("svc.write", ["warm"]) == "warm"
        (group,) = client.stats()["groups"].values()
        assert group["hosts"][0]["dedup_scope"]  # learnt
        host.slow = 1.0

        def other_call() -> None:
            host.plain = True
            assert client.call("svc.write", ["other"]) == "other"

        gevent.spawn_later(0.05, other_call)
        assert client.call("svc.write", ["slow"], timeout=4.0) == "slow"
        assert host.runs["other"] == 1  # its answer had no X-Rpc-Dedup
        gevent.sleep(1.2)  # a hedge's copy, if one went, has run by now
    assert host.runs["slow"] == 1, host.runs
    # the bundled server refuses (503) a copy for a scope it does not hold, so
    # the call ran once anyway; a server that does not check would run it twice
    assert host.copies_sent_plain == 0


def test_a_hedge_timer_never_runs_the_dns_refresh_in_the_hub(
    wsgi_server: Callable[[Any], str],
) -> None:
    # spread_dns re-resolves at the first pick after its refresh interval; the
    # hedge timer's callback picks the hedge's host in the hub, where a resolver
    # cannot wait (gevent raises BlockingSwitchOutError): the refresh then
    # failed, was taken for an empty answer (the hosts kept), and the next one
    # came only an interval later; a resolver that blocks would block the hub
    url, _ = staggered_host(wsgi_server, 0.6, 0.0)
    port = int(url.rsplit(":", 1)[1])
    in_hub: list[bool] = []
    failed: list[BaseException] = []

    def resolver(host: str, port: int) -> list[str]:
        in_hub.append(gevent.getcurrent() is gevent.get_hub())
        try:
            gevent.sleep(0)  # a real lookup waits (a thread, a socket)
        except BaseException as exc:
            failed.append(exc)
            raise
        return ["127.0.0.1"]

    with Client(
        f"http://localhost:{port}", spread_dns=0.05, resolver=resolver, pool_size=2
    ) as client:
        assert client.call("svc.who", 1, idempotent=True, hedge=Hedge(delay=0.2), timeout=4.0) == 1
        assert method_stats_hedges(client) == 1
    assert in_hub and not any(in_hub), in_hub
    assert not failed, failed


def method_stats_hedges(client: Client) -> int:
    return int(client.stats()["stats"]["methods"]["svc.who"]["hedges"])
