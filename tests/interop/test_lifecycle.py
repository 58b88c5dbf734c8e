"""Servers changing under load: executions counted by request id.

A graceful reload (SIGHUP to gunicorn's master, ``nginx -s reload``'s signal to
nginx's master) and a worker killed outright (SIGKILL to a gunicorn worker),
each under 20 greenlets of non-idempotent calls. Whatever fails, nothing may run
twice, no answer may be another call's, and a call the server ran must not
claim it did not reach it (``may_have_reached_server``).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import gevent
import pytest

from rpcclient import Retry, Timeout

from .conftest import (
    Outcome,
    Proxied,
    ServerProcess,
    call_counted,
    check_counted,
    load,
    start_proxied,
    start_server,
)


@pytest.fixture(params=["gevent", "sync", "gthread"])
def gunicorn(request: Any, tmp_path: Any) -> Iterator[ServerProcess]:
    """gunicorn with 2 workers of the kind, restarted for every test (they change it)."""
    srv = start_server(f"gunicorn-{request.param}", "rpc_app", tmp_path)
    yield srv
    srv.stop()


@pytest.fixture
def gunicorn_gevent(tmp_path: Any) -> Iterator[ServerProcess]:
    srv = start_server("gunicorn-gevent", "rpc_app", tmp_path)
    yield srv
    srv.stop()


@pytest.fixture
def nginx_fresh(tmp_path: Any) -> Iterator[Proxied]:
    env = start_proxied("nginx", tmp_path)
    yield env
    env.stop()


def wait_workers(srv: ServerProcess, count: int, old: set[int]) -> None:
    """Until ``count`` workers not in ``old`` run and none of ``old`` is left."""
    for _ in range(300):
        workers = set(srv.children())
        if len(workers - old) >= count and not workers & old:
            return
        gevent.sleep(0.05)
    pytest.fail(f"gunicorn did not replace workers {old}: {srv.children()}\n{srv.output()}")


def wait_serving(srv: ServerProcess, workers: set[int]) -> None:
    """Until one of ``workers`` has run a call (a new worker boots before it serves)."""
    for _ in range(300):
        if srv.last_pid() in workers:
            return
        gevent.sleep(0.05)
    pytest.fail(f"none of the new workers {workers} ran a call within 15 s\n{srv.output()}")


def run_under_load(
    srv: ServerProcess, url: str, make_client: Any, during: Any
) -> tuple[str, set[int]]:
    """20 greenlets of calls while ``during()`` runs and 0.3 s after; checks them.

    The load must outlast ``during()`` (some calls finish after it). Returns a
    report and the worker pids that ran the calls.
    """
    client = make_client(url, pool_size=10, retry=Retry())
    changed: list[float] = []

    def timed_during() -> None:
        during()
        changed.append(time.monotonic())

    outcomes = load(
        client, "life", greenlets=20, calls=5000, method="t.slow", args=[0.01], during=timed_during
    )
    executions = srv.executions()
    failed = check_counted(outcomes, executions)
    assert changed and max(out.finished for out in outcomes) > changed[0], "load ended too soon"
    pids = srv.pids([out.request_id for out in outcomes])
    # After the change settles, the same client works again.
    assert client.call("t.echo", ["after"]) == "after"
    kinds = sorted({type(out.error).__name__ for out in failed})
    never_ran = sum(1 for out in failed if not executions[out.request_id])
    report = (
        f"{len(failed)} of {len(outcomes)} failed {kinds}, {never_ran} of them never ran; "
        f"{len(pids)} worker pids"
    )
    return report, pids


def test_gunicorn_graceful_reload_under_load(gunicorn: ServerProcess, make_client: Any) -> None:
    """Two HUPs, each waited out (new workers up, the old ones gone): every
    generation of workers ran some of the calls."""
    generations = [set(gunicorn.children())]

    def reload_twice() -> None:
        for _ in range(2):
            gevent.sleep(0.3)
            gunicorn.signal(signal.SIGHUP)
            wait_workers(gunicorn, 2, generations[-1])
            generations.append(set(gunicorn.children()))
            wait_serving(gunicorn, generations[-1])

    report, pids = run_under_load(gunicorn, gunicorn.url, make_client, reload_twice)
    print("gunicorn HUP:", report)
    for n, workers in enumerate(generations):
        assert pids & workers, f"generation {n} {workers} ran none of the calls (ran on {pids})"


def test_gunicorn_killed_worker_under_load(gunicorn: ServerProcess, make_client: Any) -> None:
    """Twice, the worker that ran the latest call is SIGKILLed mid-load."""
    killed: list[int] = []

    def kill_one() -> None:
        for _ in range(2):
            gevent.sleep(0.3)
            victim = gunicorn.last_pid()
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)
            wait_workers(gunicorn, 2, {victim})

    report, pids = run_under_load(gunicorn, gunicorn.url, make_client, kill_one)
    print("gunicorn SIGKILL:", report)
    assert set(killed) <= pids and len(pids) > len(set(killed)), (pids, killed)


def test_nginx_reload_under_load(nginx_fresh: Proxied, make_client: Any) -> None:
    def reload_twice() -> None:
        for _ in range(2):
            gevent.sleep(0.3)
            nginx_fresh.proxy.reload_nginx()

    report, _ = run_under_load(nginx_fresh.upstream, nginx_fresh.url(), make_client, reload_twice)
    print("nginx reload:", report)


def test_may_have_reached_after_a_retry(gunicorn_gevent: ServerProcess, make_client: Any) -> None:
    """An idempotent call whose first attempt ran (its answer late: ReadTimeout) and
    whose retry then meets a full pool (PoolTimeout) may have run: it says so.

    One pooled connection. The first call stalls past its read bound and is
    abandoned; a second greenlet, already waiting for the connection, takes
    the slot and holds it, so the retry waits past its pool bound.
    """
    client = make_client(gunicorn_gevent.url, pool_size=1)
    slow = Timeout(connect=2, read=0.2, pool=0.1, total=3)
    first: list[Outcome] = []

    def abandoned() -> None:
        first.append(call_counted(client, "retry", "t.slow", [0.5], idempotent=True, timeout=slow))

    def holder() -> None:
        gevent.sleep(0.05)  # queue behind the first call's attempt
        call_counted(client, "hold", "t.slow", [1.0], timeout=Timeout(total=5))

    gevent.joinall([gevent.spawn(abandoned), gevent.spawn(holder)], raise_error=True)
    (out,) = first
    assert out.error is not None, f"expected the call to fail, got {out.result!r}"
    assert gunicorn_gevent.executions()[out.request_id] >= 1, "the first attempt did not run"
    assert out.error.attempts >= 2, f"the call was not retried: {out.error!r}"
    check_counted(first, gunicorn_gevent.executions(), idempotent=True)
