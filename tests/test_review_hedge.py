"""Hostile review of the hedged path (rpcclient._hedge): races found by review.

Real servers on loopback (gevent.pywsgi running an RPCApp), no mocks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gevent

from rpcclient import Client, Hedge
from rpcclient.server import RPCApp


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
