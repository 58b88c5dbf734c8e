"""Exactly-once calls, server side (issue 15, /work DEDUP_PROTOCOL): RPCApp with a
dedup store, over real HTTP on loopback with raw requests.

Every conformance test runs against both stores (memory, and Redis on a
``redis-server`` this module starts on a unix socket in a tmp dir).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gevent
import gevent.event
import msgpack
import pytest

from rpcclient.server import MemoryDedupStore, RedisDedupStore, RPCApp, RPCServer, serve
from tests.support.rawhttp import REPO, Conn, Reply, post

pytestmark = pytest.mark.timeout(60)


class Runs:
    def __init__(self) -> None:
        self.count = 0
        self.release = gevent.event.Event()


class Boom(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.data = {"why": "boom"}


def build_app(runs: Runs, store: Any) -> RPCApp:
    app = RPCApp(dedup=store)

    @app.register("t.add")
    def add(a: int, b: int) -> int:
        runs.count += 1
        return a + b

    @app.register("t.slow")
    def slow(value: int) -> int:
        runs.count += 1
        runs.release.wait(10)
        return value

    @app.register("t.boom")
    def boom() -> None:
        runs.count += 1
        raise Boom("it broke")

    @app.register("t.big")
    def big(n: int) -> bytes:
        runs.count += 1
        return b"x" * n

    return app


@pytest.fixture(scope="module")
def redis_socket(tmp_path_factory: Any) -> Iterator[str]:
    exe = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not os.path.exists(exe):
        pytest.fail("redis-server is not installed (.ci/run installs it)")
    tmp = tmp_path_factory.mktemp("redis")
    sock = str(tmp / "redis.sock")
    proc = subprocess.Popen(
        [exe, "--port", "0", "--unixsocket", sock, "--save", "", "--appendonly", "no",
         "--dir", str(tmp), "--maxmemory-policy", "noeviction"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(500):
            if os.path.exists(sock):
                break
            assert proc.poll() is None, "redis-server exited"
            time.sleep(0.01)
        else:
            pytest.fail("redis-server did not create its socket")
        yield sock
    finally:
        proc.kill()
        proc.wait(10)


def make_store(kind: str, redis_socket: str | None, **kw: Any) -> Any:
    if kind == "memory":
        return MemoryDedupStore(**kw)
    assert redis_socket is not None
    import redis

    client = redis.Redis(unix_socket_path=redis_socket)
    prefix = f"t{os.urandom(4).hex()}:"  # a fresh namespace per test
    return RedisDedupStore(client, prefix=prefix, **kw)


@pytest.fixture(params=["memory", "redis"])
def kind(request: Any) -> str:
    return str(request.param)


@pytest.fixture
def start(kind: str, request: Any) -> Iterator[Callable[..., tuple[RPCServer, Runs, Any]]]:
    servers: list[RPCServer] = []
    runs_all: list[Runs] = []

    def _start(**store_kw: Any) -> tuple[RPCServer, Runs, Any]:
        sock = request.getfixturevalue("redis_socket") if kind == "redis" else None
        store = make_store(kind, sock, **store_kw)
        runs = Runs()
        server = serve(build_app(runs, store), "127.0.0.1", 0)
        servers.append(server)
        runs_all.append(runs)
        return server, runs, store

    yield _start
    for runs in runs_all:
        runs.release.set()
    for server in servers:
        server.stop(timeout=1)


def call(server: RPCServer, path: str, args: Any, request_id: str | None, **extra: str) -> Reply:
    headers = dict(extra)
    if request_id is not None:
        headers["X-Request-Id"] = request_id
    with Conn(server.address) as conn:
        conn.send(post(path, msgpack.packb(args), headers=headers))
        return conn.read_reply()


def test_every_answer_advertises_the_scope_and_window(start: Callable[..., Any]) -> None:
    server, _, store = start(window=30)
    reply = call(server, "/t/add", [1, 2], "adv-1")
    assert reply.headers["x-rpc-dedup"] == f"{store.scope}; window=30"
    missing = call(server, "/t/nope", [], None)
    assert missing.status == 404 and missing.headers["x-rpc-dedup"].startswith(store.scope)


def test_duplicate_after_completion_replays_without_running(start: Callable[..., Any]) -> None:
    server, runs, _ = start()
    first = call(server, "/t/add", [1, 2], "dup-1")
    assert first.result == 3 and "x-rpc-replayed" not in first.headers
    again = call(server, "/t/add", [1, 2], "dup-1", **{"X-Rpc-Attempt": "2"})
    assert again.result == 3 and again.headers["x-rpc-replayed"] == "1"
    assert again.headers["x-request-id"] == "dup-1"
    assert runs.count == 1
    other = call(server, "/t/add", [1, 2], "dup-2")  # another id runs
    assert other.result == 3 and runs.count == 2


def test_in_flight_duplicate_waits_for_the_same_answer(start: Callable[..., Any]) -> None:
    server, runs, _ = start()
    first = gevent.spawn(call, server, "/t/slow", [7], "fly-1")
    gevent.sleep(0.2)
    assert runs.count == 1
    dups = [gevent.spawn(call, server, "/t/slow", [7], "fly-1") for _ in range(3)]
    gevent.sleep(0.2)
    assert not any(d.ready() for d in dups)  # they wait, they do not run
    runs.release.set()
    replies = [g.get(timeout=10) for g in [first, *dups]]
    assert [r.result for r in replies] == [7, 7, 7, 7]
    assert sum(r.headers.get("x-rpc-replayed") == "1" for r in replies) == 3
    assert runs.count == 1


def test_in_flight_wait_ends_at_the_request_deadline(start: Callable[..., Any]) -> None:
    server, runs, _ = start()
    first = gevent.spawn(call, server, "/t/slow", [1], "fly-2")
    gevent.sleep(0.2)
    dup = call(server, "/t/slow", [1], "fly-2", **{"X-Rpc-Timeout-Ms": "200"})
    assert dup.status == 503 and dup.error["type"] == "DuplicateInFlight"
    assert dup.error["data"] == {"in_flight": True}
    runs.release.set()
    assert first.get(timeout=10).result == 1 and runs.count == 1


def test_different_fingerprint_is_409_request_id_reused(start: Callable[..., Any]) -> None:
    server, runs, _ = start()
    assert call(server, "/t/add", [1, 2], "fp-1").result == 3
    for path, args in [("/t/add", [1, 3]), ("/t/boom", [])]:
        reply = call(server, path, args, "fp-1")
        assert reply.status == 409 and reply.error["type"] == "RequestIdReused"
        assert reply.error["data"] == {"not_run": True}
    assert runs.count == 1


def test_scope_mismatch_is_503_not_run(start: Callable[..., Any]) -> None:
    server, runs, store = start()
    reply = call(server, "/t/add", [1, 2], "sc-1", **{"X-Rpc-Dedup-Scope": "mem-other"})
    assert reply.status == 503 and reply.error["type"] == "DedupScopeMismatch"
    assert reply.error["data"] == {"not_run": True}
    assert runs.count == 0
    ok = call(server, "/t/add", [1, 2], "sc-1", **{"X-Rpc-Dedup-Scope": store.scope})
    assert ok.result == 3 and runs.count == 1


def test_scope_header_on_a_server_without_dedup_is_503_not_run() -> None:
    runs = Runs()
    server = serve(build_app(runs, None), "127.0.0.1", 0)
    try:
        reply = call(server, "/t/add", [1, 2], "nd-1", **{"X-Rpc-Dedup-Scope": "mem-x"})
        assert reply.status == 503 and reply.error["type"] == "DedupScopeMismatch"
        assert "x-rpc-dedup" not in reply.headers and runs.count == 0
        plain = call(server, "/t/add", [1, 2], "nd-1")
        again = call(server, "/t/add", [1, 2], "nd-1")
        assert plain.result == again.result == 3 and runs.count == 2  # no dedup here
    finally:
        server.stop(timeout=1)


def test_handler_error_is_stored_and_replayed(start: Callable[..., Any]) -> None:
    server, runs, _ = start()
    first = call(server, "/t/boom", [], "err-1")
    again = call(server, "/t/boom", [], "err-1")
    assert first.status == again.status == 500
    assert first.error == again.error == {
        "type": "Boom", "message": "it broke", "data": {"why": "boom"}
    }  # fmt: skip
    assert again.headers["x-rpc-replayed"] == "1" and runs.count == 1


def test_resend_older_than_the_window_is_outcome_unknown(start: Callable[..., Any]) -> None:
    server, runs, _ = start(window=1)
    headers = {"X-Rpc-Attempt": "2", "X-Rpc-Dedup-Age-Ms": "1000"}
    reply = call(server, "/t/add", [1, 2], "old-1", **headers)
    assert reply.status == 409 and reply.error["type"] == "OutcomeUnknown"
    assert reply.error["data"] == {"outcome_unknown": True}
    young = call(server, "/t/add", [1, 2], "old-2", **{**headers, "X-Rpc-Dedup-Age-Ms": "10"})
    assert young.result == 3 and runs.count == 1  # the first attempt never arrived: runs


def test_resend_after_expiry_is_outcome_unknown(start: Callable[..., Any]) -> None:
    server, runs, _ = start(window=0.5)
    assert call(server, "/t/add", [1, 2], "exp-1").result == 3
    gevent.sleep(0.7)
    reply = call(
        server, "/t/add", [1, 2], "exp-1", **{"X-Rpc-Attempt": "2", "X-Rpc-Dedup-Age-Ms": "700"}
    )
    assert reply.error["type"] == "OutcomeUnknown" and runs.count == 1


def test_answer_too_large_to_keep_is_outcome_unknown(start: Callable[..., Any]) -> None:
    server, runs, _ = start(max_answer_bytes=1000)
    assert len(call(server, "/t/big", [5000], "big-1").result) == 5000
    reply = call(server, "/t/big", [5000], "big-1")
    assert reply.status == 409 and reply.error["type"] == "OutcomeUnknown"
    assert len(call(server, "/t/big", [10], "big-2").result) == 10
    assert call(server, "/t/big", [10], "big-2").headers["x-rpc-replayed"] == "1"
    assert runs.count == 2


def test_bad_attempt_header_is_400(start: Callable[..., Any]) -> None:
    server, runs, _ = start()
    reply = call(server, "/t/add", [1, 2], "bad-1", **{"X-Rpc-Attempt": "two"})
    assert reply.status == 400 and "X-Rpc-Attempt" in reply.error["message"]
    assert runs.count == 0


# -- store-specific ----------------------------------------------------------------------


def test_memory_eviction_horizon_makes_resends_outcome_unknown() -> None:
    runs = Runs()
    store = MemoryDedupStore(max_entries=3)
    server = serve(build_app(runs, store), "127.0.0.1", 0)
    try:
        for i in range(5):
            assert call(server, "/t/add", [i, 0], f"ev-{i}").result == i
        assert len(store) == 3 and store.evictions == 2
        resend = {"X-Rpc-Attempt": "2", "X-Rpc-Dedup-Age-Ms": "5000"}
        reply = call(server, "/t/add", [0, 0], "ev-0", **resend)
        assert reply.error["type"] == "OutcomeUnknown"
        assert call(server, "/t/add", [4, 0], "ev-4").headers["x-rpc-replayed"] == "1"
        assert runs.count == 5
    finally:
        server.stop(timeout=1)


def test_memory_bounds_hold_by_count_and_bytes() -> None:
    store = MemoryDedupStore(max_entries=50, max_bytes=20_000, max_answer_bytes=4_000)
    for i in range(1000):
        key = f"k{i}"
        assert store.claim(key, b"f").state == "new"
        store.complete(key, 200, b"y" * (i % 5000))
        assert len(store) <= 50 and store.size <= 20_000
    assert store.evictions > 900
    # the counted bytes are the truth: sum of what is kept
    kept = sum(len(r.body or b"") + 256 for r in store._records.values())
    assert kept == store.size


def test_redis_scope_is_shared_per_database_and_prefix(redis_socket: str) -> None:
    import redis

    client = redis.Redis(unix_socket_path=redis_socket)
    one, two = RedisDedupStore(client, prefix="s1:"), RedisDedupStore(client, prefix="s1:")
    other = RedisDedupStore(client, prefix="s2:")
    assert one.scope == two.scope != other.scope
    assert RedisDedupStore(client, prefix="s1:", name="svc.a").scope == "svc.a"


def test_memory_store_bounds_are_checked() -> None:
    for bad in [{"window": 0}, {"max_entries": 0}, {"max_bytes": -1}, {"window": "60"}]:
        with pytest.raises(ValueError, match=next(iter(bad))):
            MemoryDedupStore(**bad)


def test_redis_lease_expiry_is_outcome_unknown_never_a_second_run(redis_socket: str) -> None:
    runs = Runs()
    store = make_store("redis", redis_socket, lease=0.3)
    server = serve(build_app(runs, store), "127.0.0.1", 0)
    try:
        # a worker that claimed and died: the record stays in flight
        assert store.claim("lease-1", _fingerprint("/t/add", [1, 2])).state == "new"
        # a duplicate waits for the record until the lease ends, then gives up
        reply = call(server, "/t/add", [1, 2], "lease-1")
        assert reply.status == 409 and reply.error["type"] == "OutcomeUnknown"
        gevent.sleep(0.1)
        reply = call(server, "/t/add", [1, 2], "lease-1", **{"X-Rpc-Attempt": "2"})
        assert reply.status == 409 and reply.error["type"] == "OutcomeUnknown"
        assert runs.count == 0
    finally:
        server.stop(timeout=1)


def _fingerprint(path: str, args: Any) -> bytes:
    import hashlib

    body: bytes = msgpack.packb(args)
    return hashlib.blake2b(path.encode() + b"\0" + body, digest_size=16).digest()


# -- many processes ----------------------------------------------------------------------

GUNICORN_APP = """
import os, time, redis
from rpcclient.server import RedisDedupStore
from rpcclient.server import RPCApp
store = RedisDedupStore(redis.Redis(unix_socket_path=os.environ["T_REDIS"]), prefix="g:")
rpc = RPCApp(dedup=store)
def app(environ, start_response):  # which worker answered, replay or not
    def start(status, headers, *exc):
        return start_response(status, [*headers, ("X-Worker", str(os.getpid()))], *exc)
    return rpc(environ, start)
@rpc.register("t.pid")
def pid(n):
    with open(os.environ["T_LOG"], "a") as log:
        log.write(f"{n} {os.getpid()}\\n")
    time.sleep(0.2)  # the worker stays busy: the duplicates must go to the others
    return os.getpid()
"""


def test_gunicorn_workers_share_the_redis_store(redis_socket: str, tmp_path: Path) -> None:
    (tmp_path / "dedup_gapp.py").write_text(GUNICORN_APP)
    log = tmp_path / "runs.log"
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    env = {
        **os.environ, "T_REDIS": redis_socket, "T_LOG": str(log),
        "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}",
    }  # fmt: skip
    fd = listener.fileno()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--bind", f"fd://{fd}", "-k", "sync", "-w", "3",
         "dedup_gapp:app"],
        env=env, pass_fds=[fd], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    address = listener.getsockname()
    try:
        server: Any = type("S", (), {"address": address})
        deadline = time.monotonic() + 30
        pids: dict[str, set[int]] = {}
        answers: set[int] = set()
        # The same id on 6 connections at once: a sync worker answers one
        # connection at a time and the first one runs the handler for 0.2 s, so
        # the others are taken by other workers (which wait for its answer, in
        # flight, then replay it). Sent one after another, the kernel may hand
        # every connection to the same worker, and the test would prove nothing.
        for i in range(8):
            rid = f"gw-{i}"
            jobs = [gevent.spawn(call, server, "/t/pid", [rid], rid) for _ in range(6)]
            gevent.joinall(jobs, timeout=25, raise_error=True)
            seen: set[int] = set()
            for job in jobs:
                reply = job.value
                assert reply is not None and reply.status == 200, reply
                answers.add(reply.result)
                seen.add(int(reply.headers["x-worker"]))
            pids[rid] = seen
            assert time.monotonic() < deadline
        ran = [line.split()[0] for line in log.read_text().splitlines()]
        assert sorted(ran) == sorted(pids), "each id ran exactly once"
        assert any(len(seen) >= 2 for seen in pids.values()), "one id reached 2+ workers"
        # every connection of an id got the one execution's answer (its pid)
        assert len(answers) <= len(pids)
    finally:
        os.killpg(proc.pid, 9)
        proc.wait(10)
        listener.close()


@pytest.mark.parametrize("spec", ["memory", "redis"])
def test_cli_serve_dedup(spec: str, request: Any) -> None:
    """``rpcclient serve --dedup memory|redis URL``: the app advertises and replays."""
    if spec == "redis":
        spec = "unix://" + request.getfixturevalue("redis_socket")
    argv = [sys.executable, "-m", "rpcclient", "serve", "rpcclient.example:app"]
    argv += ["--bind", "127.0.0.1:0", "--dedup", spec]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=REPO)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        assert " on http://" in line, line
        host, _, port = line.rsplit("http://", 1)[1].strip().rstrip("/").partition(":")
        server: Any = type("S", (), {"address": (host, int(port))})
        rid = f"cli-{os.urandom(4).hex()}"
        first = call(server, "/math/add", [1, 2], rid)
        again = call(server, "/math/add", [1, 2], rid)
        assert first.result == again.result == 3
        assert "window=60" in first.headers["x-rpc-dedup"]
        assert again.headers["x-rpc-replayed"] == "1"
    finally:
        proc.kill()
        proc.wait(10)


def test_redis_down_is_503_not_run(tmp_path: Path) -> None:
    """A store that cannot claim sheds the call (not run), never runs it unrecorded."""
    import redis

    runs = Runs()
    client = redis.Redis(unix_socket_path=str(tmp_path / "none.sock"))
    store = RedisDedupStore(client, name="down")
    server = serve(build_app(runs, store), "127.0.0.1", 0)
    try:
        reply = call(server, "/t/add", [1, 2], "down-1")
        assert reply.status == 503 and reply.error["data"] == {"not_run": True}
        assert runs.count == 0
    finally:
        server.stop(timeout=1)
