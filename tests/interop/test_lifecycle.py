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


@pytest.fixture
def gunicorn(tmp_path: Any) -> Iterator[ServerProcess]:
    srv = start_server("gunicorn-gevent", "rpc_app", tmp_path)
    yield srv
    srv.stop()


@pytest.fixture
def nginx_fresh(tmp_path: Any) -> Iterator[Proxied]:
    env, dead = start_proxied("nginx", tmp_path)
    yield env
    env.proxy.stop()
    env.upstream.stop()
    dead.close()


def wait_workers(srv: ServerProcess, count: int, exclude: set[int]) -> None:
    for _ in range(200):
        workers = set(srv.children()) - exclude
        if len(workers) >= count:
            return
        gevent.sleep(0.05)
    pytest.fail(f"gunicorn did not get {count} new workers: {srv.children()}\n{srv.output()}")


def run_under_load(
    srv: ServerProcess, url: str, make_client: Any, during: Any, *, min_pids: int = 1
) -> str:
    """20 greenlets of calls while ``during()`` runs and 0.3 s after; checks and reports.

    The load must outlast ``during()`` (some calls finish after it), and the
    calls must have run on at least ``min_pids`` worker processes (the old
    workers and the new ones), so the change provably happened under load.
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
    assert len(pids) >= min_pids, f"the calls ran on {len(pids)} workers only: {pids}"
    # After the change settles, the same client works again.
    assert client.call("t.echo", ["after"]) == "after"
    kinds = sorted({type(out.error).__name__ for out in failed})
    never_ran = sum(1 for out in failed if not executions[out.request_id])
    return (
        f"{len(failed)} of {len(outcomes)} failed {kinds}, {never_ran} of them never ran; "
        f"{len(pids)} worker pids"
    )


def test_gunicorn_graceful_reload_under_load(gunicorn: ServerProcess, make_client: Any) -> None:
    def reload_twice() -> None:
        for _ in range(2):
            gevent.sleep(0.3)
            before = set(gunicorn.children())
            gunicorn.signal(signal.SIGHUP)
            wait_workers(gunicorn, 2, before)

    print(
        "gunicorn HUP:",
        run_under_load(gunicorn, gunicorn.url, make_client, reload_twice, min_pids=4),
    )


def test_gunicorn_killed_worker_under_load(gunicorn: ServerProcess, make_client: Any) -> None:
    def kill_one() -> None:
        for _ in range(2):
            gevent.sleep(0.3)
            workers = gunicorn.children()
            os.kill(workers[0], signal.SIGKILL)
            wait_workers(gunicorn, 2, {workers[0]})

    print(
        "gunicorn SIGKILL:",
        run_under_load(gunicorn, gunicorn.url, make_client, kill_one, min_pids=3),
    )


def test_nginx_reload_under_load(nginx_fresh: Proxied, make_client: Any) -> None:
    def reload_twice() -> None:
        for _ in range(2):
            gevent.sleep(0.3)
            nginx_fresh.proxy.signal(signal.SIGHUP)  # what ``nginx -s reload`` sends

    report = run_under_load(nginx_fresh.upstream, nginx_fresh.url(), make_client, reload_twice)
    print("nginx reload:", report)


@pytest.mark.xfail(
    strict=True,
    reason="issue 12 item 5: after a retry the error carries the last attempt's "
    "may_have_reached_server (PoolTimeout: False), not any attempt's",
)
def test_may_have_reached_after_a_retry(gunicorn: ServerProcess, make_client: Any) -> None:
    """An idempotent call whose first attempt ran (its answer late: ReadTimeout) and
    whose retry then meets a full pool (PoolTimeout) may have run: it says so.

    One pooled connection. The first call stalls past its read bound and is
    abandoned; a second greenlet, already waiting for the connection, takes
    the slot and holds it, so the retry waits past its pool bound.
    """
    client = make_client(gunicorn.url, pool_size=1)
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
    assert gunicorn.executions()[out.request_id] >= 1, "the first attempt did not run"
    assert out.error.attempts >= 2, f"the call was not retried: {out.error!r}"
    check_counted(first, gunicorn.executions(), idempotent=True)
