"""The fault soak (issue 12, deliverable 4): ~20,000 mixed calls through a fault proxy.

Three bundled servers (:func:`rpcclient.server.serve`, in this process) each
sit behind a :class:`FaultProxy`; one :class:`rpcclient.Client` balances a
service over the three proxies with a short total deadline, and 96 greenlets
make idempotent (``soak.read``) and non-idempotent (``soak.write``) calls.
The proxies decide by a seeded RNG, per connection and per forwarded chunk,
to pass, reset (``SO_LINGER`` 0), stall, drip, cut an answer in the middle,
drop an answer after the request went through, close an idle connection
after an answer, or reset it, unread, when the next request arrives (the
idle-close race: a server closing a keep-alive connection as a request
goes out).

The servers count what they saw: every request head by ``X-Request-Id`` and
attempt (a hook sends the attempt number), every execution by the call's
token (an argument). One module-scoped run feeds every test below, so each
invariant passes or fails on its own:

- no non-idempotent call ran twice; every success is its own answer;
- ``may_have_reached_server=False`` means no server saw the call's id;
- an error that is a server's answer was seen by a server;
- only ``rpcclient.exceptions`` errors reached the caller;
- no call ended long past its deadline;
- pool slots and file descriptors come back to their baseline.

A second run of the same plan against servers sharing one dedup store
(issue 15) checks that no call runs twice, and that no non-idempotent call
is lost to the idle-close race (it is re-sent under the store's scope).

``RPCCLIENT_SOAK_SEED`` and ``RPCCLIENT_SOAK_CALLS`` override the seed (else
random, printed) and the number of calls (20,000); ``RPCCLIENT_SOAK_TRANSPORT``
the client's transport (gevent). On this loaded 2-core
machine the default run takes 13-19 s (interpreted or compiled; the 3-minute
budget of issue 12 leaves room for a slower CI machine).
"""

from __future__ import annotations

import contextvars
import gc
import os
import random
import re
import socket
import struct
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import gevent
import gevent.event
import gevent.server
import gevent.socket
import pytest

from rpcclient import CallEvent, Client, Hook, Retry, Timeout
from rpcclient import exceptions as E
from rpcclient.server import MemoryDedupStore, RPCApp, serve
from tests.support.poll import wait_for
from tests.support.proc import open_fds

SEED = int(os.environ.get("RPCCLIENT_SOAK_SEED") or random.SystemRandom().randrange(2**32))
CALLS = int(os.environ.get("RPCCLIENT_SOAK_CALLS") or 20_000)
#: the client's transport (``gevent``, ``requests`` or ``urllib3``)
TRANSPORT = os.environ.get("RPCCLIENT_SOAK_TRANSPORT") or "gevent"
GREENLETS = 96
POOL_SIZE = 4  # 12 connections for 96 greenlets: pool waits and PoolTimeouts too
#: a read bound under the total leaves room for a retry after a stall
TIMEOUT = Timeout(connect=0.25, read=0.15, pool=0.1, total=0.4)
#: the whole soak must end within this, or the fixture fails
WALL_LIMIT = 600.0
#: how far past its total deadline a call may end on a loaded machine (seen here: 5-15 ms
#: worst per run, 255 ms with a callgrind run beside the soak: issue 12 item 4's lateness)
LATE_MARGIN = 1.0
#: the client's retry attempts (Retry's default), and the time a re-send needs at
#: least (a backoff, a connect, an answer): a call failing later had none left
ATTEMPTS = Retry().attempts
RETRY_ROOM = 0.1
BIG = 20_000  # answer payload of the calls that ask for a big one (several chunks)

# Fault probabilities: per accepted connection, and per chunk in each direction.
P_ACCEPT_RESET = 0.01
UP_FAULTS = (("reset", 0.01), ("stall", 0.015), ("drip", 0.01), ("close_after_request", 0.007))
DOWN_FAULTS = (
    ("reset", 0.01),
    ("stall", 0.015),
    ("drip", 0.01),
    ("cut", 0.01),  # part of the answer, then a clean close
    ("drop", 0.01),  # the request went through; close before the answer
    ("idle_close", 0.005),  # the whole answer, then a clean close of the idle connection
    # the whole answer; the next request on the connection is then met by a reset,
    # unread: a server closing an idle connection as a request arrives (the race)
    ("race_close", 0.005),
)
STALL = (0.05, 0.5)  # seconds, uniform
DRIP_PIECES = 40  # a dripped chunk goes out in about this many pieces...
DRIP_GAP = (0.001, 0.005)  # ...this far apart

_ID_HEADER = re.compile(rb"\r\nX-Request-Id: ([!-~]+)\r\n", re.IGNORECASE)
_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("soak_request_id", default="")


def _reset(sock: Any) -> None:
    """Close ``sock`` with a TCP reset instead of a FIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


def _choose(rng: random.Random, faults: tuple[tuple[str, float], ...]) -> str:
    roll = rng.random()
    for name, p in faults:
        if roll < p:
            return name
        roll -= p
    return "pass"


class FaultProxy:
    """A TCP proxy in front of one server that injects faults by a seeded RNG.

    Each accepted connection gets its own RNG (seeded from the soak's seed,
    the proxy's index and the connection's ordinal) for the connection-level
    choice and one per direction for the per-chunk choices; ``faults``
    counts what was injected, ``requests`` maps each request id read from
    the client to what was done to the chunk that carried it. ``active`` is
    the number of connections being served: 0 once everything has drained.
    """

    def __init__(self, index: int, upstream_port: int, seed: int) -> None:
        self.index = index
        self.upstream_port = upstream_port
        self.seed = seed
        self.connections = 0
        self.active = 0
        self.faults: Counter[str] = Counter()
        self.requests: dict[str, str] = {}
        self.server = gevent.server.StreamServer(("127.0.0.1", 0), self._handle)
        self.server.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def _handle(self, client: Any, _address: Any) -> None:
        self.active += 1
        ordinal = self.connections
        self.connections += 1
        base = f"{self.seed}/{self.index}/{ordinal}"
        upstream = None
        pumps: list[gevent.Greenlet] = []
        try:
            if random.Random(base).random() < P_ACCEPT_RESET:
                self.faults["accept_reset"] += 1
                _reset(client)
                return
            upstream = gevent.socket.create_connection(("127.0.0.1", self.upstream_port))
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            done = gevent.event.Event()
            race: list[bool] = [False]  # set by a race_close answer, for the next request
            pumps = [
                gevent.spawn(self._pump, client, upstream, client, random.Random(base + "/up"),
                             UP_FAULTS, done, race),
                gevent.spawn(self._pump, upstream, client, client, random.Random(base + "/down"),
                             DOWN_FAULTS, done, race),
            ]  # fmt: skip
            done.wait()
        except OSError:
            pass
        finally:
            gevent.killall(pumps)
            if upstream is not None:
                upstream.close()
            client.close()
            self.active -= 1

    def _pump(
        self,
        src: Any,
        dst: Any,
        client: Any,
        rng: random.Random,
        faults: tuple[tuple[str, float], ...],
        done: gevent.event.Event,
        race: list[bool],
    ) -> None:
        """Forward ``src`` to ``dst`` chunk by chunk until EOF or a fault ends it."""
        try:
            while data := src.recv(65536):
                if race[0] and src is client:  # the request after a race_close answer
                    _reset(client)  # unread and unrecorded: no server will see it
                    return
                fault = _choose(rng, faults)
                direction = "up" if src is client else "down"
                if fault != "pass":
                    self.faults[f"{direction}_{fault}"] += 1
                if direction == "up":  # a head split over two chunks goes unrecorded: rare
                    for rid in _ID_HEADER.findall(data):
                        self.requests[rid.decode()] = f"up_{fault}"
                if fault == "reset":
                    if src is not client:  # mid-answer: some of it first
                        client.sendall(data[: rng.randrange(len(data))])
                    _reset(client)
                    return
                if fault == "cut":
                    client.sendall(data[: rng.randrange(len(data))])
                    return
                if fault == "drop":
                    return
                if fault == "stall":
                    gevent.sleep(rng.uniform(*STALL))
                if fault == "drip":
                    step = max(1, len(data) // DRIP_PIECES)
                    for at in range(0, len(data), step):
                        dst.sendall(data[at : at + step])
                        gevent.sleep(rng.uniform(*DRIP_GAP))
                else:
                    dst.sendall(data)
                if fault == "race_close":
                    race[0] = True
                if fault in ("close_after_request", "idle_close"):
                    return
        except OSError:
            pass
        finally:
            done.set()

    def stop(self) -> None:
        self.server.stop(timeout=1)


@dataclass
class Servers:
    """What the three servers saw, shared by their apps."""

    #: request id -> attempt numbers whose head reached a server (any server)
    seen: dict[str, list[int]] = field(default_factory=dict)
    #: call token -> executions of its handler
    executions: Counter[str] = field(default_factory=Counter)
    #: call token -> the request id its executions carried
    token_ids: dict[str, set[str]] = field(default_factory=dict)
    in_flight: int = 0

    def app(self, index: int, make_app: Callable[[], RPCApp] = RPCApp) -> Callable[..., Any]:
        """Server ``index``'s WSGI app: ``make_app()`` with the soak's methods, counted."""
        rpc = make_app()

        def run(token: str, size: int) -> list[Any]:
            self.executions[token] += 1
            self.token_ids.setdefault(token, set()).add(_request_id.get())
            if size:
                gevent.sleep(0)  # a big answer: let other calls interleave
            return [token, index, b"r" * size]

        rpc.register("soak.read", run)
        rpc.register("soak.write", run)

        def wsgi(environ: dict[str, Any], start_response: Any) -> Any:
            rid = environ.get("HTTP_X_REQUEST_ID", "")
            attempt = int(environ.get("HTTP_X_SOAK_ATTEMPT", "0"))
            self.seen.setdefault(rid, []).append(attempt)
            token = _request_id.set(rid)
            self.in_flight += 1
            try:
                return rpc(environ, start_response)
            finally:
                self.in_flight -= 1
                _request_id.reset(token)

        return wsgi


class AttemptLog(Hook):
    """Sends each attempt's number to the server, records each attempt's error."""

    def __init__(self) -> None:
        #: request id -> [(attempt, endpoint, error class name or None, may_have_reached)]
        self.attempts: dict[str, list[tuple[int, str, str | None, bool | None]]] = {}
        #: request ids of the non-idempotent calls
        self.write_ids: set[str] = set()

    def before_attempt(self, event: CallEvent) -> None:
        event.headers.append((b"X-Soak-Attempt", b"%d" % event.attempt))

    def after_attempt(self, event: CallEvent) -> None:
        err = event.error
        if not event.idempotent:
            self.write_ids.add(event.request_id)
        self.attempts.setdefault(event.request_id, []).append(
            (
                event.attempt,
                str(event.endpoint),
                None if err is None else type(err).__name__,
                getattr(err, "may_have_reached_server", None),
            )
        )


@dataclass
class Failure:
    token: str
    idempotent: bool
    error: BaseException
    elapsed: float


@dataclass
class Soak:
    seed: int
    calls: int
    seconds: float
    servers: Servers
    proxies: list[FaultProxy]
    log: AttemptLog
    ok: int
    wrong_answers: list[tuple[str, Any]]
    failures: list[Failure]
    late: list[float]  # seconds past the deadline, per call that ended after it
    tokens: dict[str, bool]  # token -> idempotent
    pools_before_close: dict[str, dict[str, int]]
    pools_after_close: dict[str, dict[str, int]]
    fds_baseline: int
    fds_after: int
    drained: bool

    def rpc_errors(self) -> list[tuple[Failure, E.RPCError]]:
        return [(f, f.error) for f in self.failures if isinstance(f.error, E.RPCError)]

    def seen(self, err: E.RPCError) -> list[int]:
        return self.servers.seen.get(err.request_id or "", [])

    def proxy_fault(self, err: E.RPCError) -> str:
        """What a proxy did to the chunk carrying the call's last request read from the
        client, or ``"no proxy read it"`` (written into a connection the proxy had
        closed or reset: the idle-close race)."""
        for proxy in self.proxies:
            fault = proxy.requests.get(err.request_id or "")
            if fault is not None:
                return fault
        return "no proxy read it"

    def summary(self) -> str:
        errors = Counter(type(f.error).__name__ for f in self.failures)
        faults: Counter[str] = Counter()
        for proxy in self.proxies:
            faults.update(proxy.faults)
        true_never_ran = Counter(
            f"{type(err).__name__}/{'idem' if f.idempotent else 'non-idem'}/"
            f"{'head seen' if self.seen(err) else 'not seen'}/{self.proxy_fault(err)}"
            for f, err in self.rpc_errors()
            if err.may_have_reached_server and not self.servers.executions[f.token]
        )
        late = sorted(self.late)
        p99 = late[int(len(late) * 0.99)] if late else 0.0
        return (
            f"soak: seed={self.seed} calls={self.calls} in {self.seconds:.1f} s, ok={self.ok}, "
            f"errors={dict(errors.most_common())}; faults={dict(faults.most_common())}; "
            f"connections={sum(p.connections for p in self.proxies)}; "
            f"may_have_reached=True but never ran: {dict(true_never_ran.most_common())}; "
            f"ended past the deadline: {len(late)} calls, p99 {p99 * 1000:.0f} ms, "
            f"max {(late[-1] if late else 0.0) * 1000:.0f} ms"
        )


def write_retries(soak: Soak) -> int:
    """Attempts after the first of non-idempotent calls: without dedup only those
    that provably sent nothing before; with it, also re-sends under its scope."""
    return sum(
        len(attempts) - 1
        for rid, attempts in soak.log.attempts.items()
        if attempts and rid in soak.log.write_ids
    )


def idle_close_race_failures(soak: Soak) -> list[str]:
    """Failed non-idempotent calls lost to the idle-close race: the last request went
    out on a reused connection that ended before any byte of an answer
    (``idle_close``) and no proxy read it (the proxy had closed the connection),
    and the retry rules' own bounds did not end the call: its budget was not
    empty, it had attempts and time left."""
    left = TIMEOUT.total or 0.0
    return [
        f"{f.token} {err} after {f.elapsed * 1000:.0f} ms"
        for f, err in soak.rpc_errors()
        if not f.idempotent
        and isinstance(err, E.ConnectionLost)
        and err.idle_close
        and soak.proxy_fault(err) == "no proxy read it"
        and "retry budget" not in err.message
        and err.attempts < ATTEMPTS
        and f.elapsed < left - RETRY_ROOM
    ]


def pool_figures(client: Client) -> dict[str, dict[str, int]]:
    pools: dict[str, dict[str, int]] = client.stats().get("pools", {})
    keys = ("in_use", "idle", "waiting")
    return {url: {k: p.get(k, 0) for k in keys} for url, p in pools.items()}


def run_soak(
    seed: int,
    calls: int,
    *,
    client_options: dict[str, Any] | None = None,
    make_app: Callable[[], RPCApp] = RPCApp,
) -> Soak:
    """One soak run: start everything, make ``calls`` calls, drain, stop; the figures.

    ``client_options`` are added to (or replace) the Client's arguments and
    ``make_app`` builds each server's RPCApp, for runs beside the default one
    (a deduplicating server, other retry settings).
    """
    servers = Servers()
    rpc_servers = [serve(servers.app(i, make_app), "127.0.0.1", 0) for i in range(3)]
    proxies = [FaultProxy(i, s.address[1], seed) for i, s in enumerate(rpc_servers)]
    rng = random.Random(seed)
    plan = [(f"t{n}", rng.random() < 0.5, BIG if rng.random() < 0.1 else 16) for n in range(calls)]
    tokens = {token: idem for token, idem, _ in plan}
    gc.collect()
    fds_baseline = open_fds()
    log = AttemptLog()
    options: dict[str, Any] = {
        "timeout": TIMEOUT,
        "pool_size": POOL_SIZE,
        "idempotent": ["soak.read"],
        "hooks": [log],
        "transport": TRANSPORT,
        **(client_options or {}),
    }
    client = Client({"soak": [p.url for p in proxies]}, **options)
    ok = 0
    wrong: list[tuple[str, Any]] = []
    failures: list[Failure] = []
    late: list[float] = []
    work = iter(plan)
    total = Timeout.coerce(options["timeout"]).total or 0.0

    def worker() -> None:
        nonlocal ok
        for token, idem, size in work:
            started = time.monotonic()
            try:
                result = client.call("soak.read" if idem else "soak.write", [token, size])
            except Exception as exc:  # every kind is recorded and checked
                failures.append(Failure(token, idem, exc, time.monotonic() - started))
            else:
                if not isinstance(result, list) or result[0] != token or len(result[2]) != size:
                    wrong.append((token, result))
                ok += 1
            over = time.monotonic() - started - total
            if over > 0:
                late.append(over)

    started = time.monotonic()
    workers = [gevent.spawn(worker) for _ in range(GREENLETS)]
    try:
        with gevent.Timeout(WALL_LIMIT, AssertionError(f"soak not done in {WALL_LIMIT} s")):
            gevent.joinall(workers, raise_error=True)
        seconds = time.monotonic() - started
        # Everything in flight finishes (a stalled request may still reach a
        # server after its caller gave up) before the figures are read.
        drained = wait_for(lambda: servers.in_flight == 0, 5.0, every=0.05)
        pools_before = pool_figures(client)
    finally:
        gevent.killall(workers)
        client.close()
    drained = wait_for(lambda: all(p.active == 0 for p in proxies), 10.0, every=0.05) and drained
    drained = wait_for(lambda: servers.in_flight == 0, 5.0, every=0.05) and drained
    pools_after = pool_figures(client)

    def fds_back() -> bool:
        gc.collect()
        return open_fds() <= fds_baseline

    wait_for(fds_back, 10.0, every=0.05)
    fds_after = open_fds()
    for proxy in proxies:
        proxy.stop()
    for srv in rpc_servers:
        srv.stop()
    return Soak(
        seed=seed,
        calls=calls,
        seconds=seconds,
        servers=servers,
        proxies=proxies,
        log=log,
        ok=ok,
        wrong_answers=wrong,
        failures=failures,
        late=late,
        tokens=tokens,
        pools_before_close=pools_before,
        pools_after_close=pools_after,
        fds_baseline=fds_baseline,
        fds_after=fds_after,
        drained=drained,
    )


@pytest.fixture(scope="module")
def soak(request: pytest.FixtureRequest) -> Iterator[Soak]:
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")

    def say(line: str) -> None:
        if reporter is not None:
            reporter.write_line(line)
        else:
            print(line)

    say(
        f"soak: seed {SEED} (RPCCLIENT_SOAK_SEED), {CALLS} calls (RPCCLIENT_SOAK_CALLS), "
        f"transport {TRANSPORT} (RPCCLIENT_SOAK_TRANSPORT)"
    )
    result = run_soak(SEED, CALLS)
    say(
        result.summary() + f"; writes lost to the idle-close race: "
        f"{len(idle_close_race_failures(result))}"
    )
    yield result


@pytest.fixture(scope="module")
def dedup_soak(request: pytest.FixtureRequest) -> Iterator[Soak]:
    """The same soak (seed and plan) against servers that deduplicate (issue 15).

    One :class:`MemoryDedupStore` shared by the three servers stands for one
    Redis behind a service: one scope, so a re-send may land on any host.
    """
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    store = MemoryDedupStore()
    result = run_soak(SEED, CALLS, make_app=lambda: RPCApp(dedup=store))
    line = "dedup " + result.summary() + f"; write retries={write_retries(result)}"
    if reporter is not None:
        reporter.write_line(line)
    else:
        print(line)
    yield result


pytestmark = [pytest.mark.slow, pytest.mark.timeout(WALL_LIMIT + 120)]


def describe(soak: Soak, bad: list[str], what: str) -> str:
    return f"{len(bad)} {what} (seed {soak.seed}); first: {bad[:5]}"


def test_every_call_accounted_and_faults_injected(soak: Soak) -> None:
    assert soak.ok + len(soak.failures) == soak.calls
    injected: Counter[str] = Counter()
    for proxy in soak.proxies:
        injected.update(proxy.faults)
    if soak.calls >= 5000:  # a short run (env override) may not meet every kind
        kinds = {"accept_reset"} | {f"up_{n}" for n, _ in UP_FAULTS}
        kinds |= {f"down_{n}" for n, _ in DOWN_FAULTS}
        assert kinds <= set(injected), f"never injected: {kinds - set(injected)}"
    assert soak.failures, "no call failed: the proxy injected nothing that mattered"
    assert soak.ok > soak.calls // 2, f"only {soak.ok} of {soak.calls} calls succeeded"
    assert soak.drained, "proxies or servers still busy 10 s after the client closed"


def test_no_duplicate_execution_of_non_idempotent_calls(soak: Soak) -> None:
    twice = [
        f"{t} x{n}" for t, n in soak.servers.executions.items() if n > 1 and not soak.tokens[t]
    ]
    assert not twice, describe(soak, twice, "non-idempotent calls ran more than once")


def test_every_answer_is_the_calls_own(soak: Soak) -> None:
    assert not soak.wrong_answers, describe(
        soak, [repr(w)[:120] for w in soak.wrong_answers], "wrong answers"
    )
    failed = {f.token for f in soak.failures}
    never_ran = [t for t in soak.tokens if t not in failed and not soak.servers.executions[t]]
    assert not never_ran, describe(soak, never_ran, "successful calls no server ran")
    # the server saw each execution under the request id the client sent
    mixed = [t for t, ids in soak.servers.token_ids.items() if len(ids) != 1]
    assert not mixed, describe(soak, mixed, "tokens executed under several request ids")


def test_only_rpcclient_errors(soak: Soak) -> None:
    foreign = [repr(f.error) for f in soak.failures if not isinstance(f.error, E.RPCError)]
    assert not foreign, describe(soak, foreign, "errors that are not rpcclient.exceptions")
    no_id = [repr(err) for _, err in soak.rpc_errors() if not err.request_id]
    assert not no_id, describe(soak, no_id, "errors without their request id")


def _false_but_seen(soak: Soak, retried: bool, last_only: bool = False) -> list[str]:
    """Errors that said False though a server saw the call (``last_only``: its last attempt)."""
    bad = []
    for f, err in soak.rpc_errors():
        if err.may_have_reached_server or (err.attempts > 1) != retried:
            continue
        seen = soak.seen(err)
        if last_only:
            if err.attempts in seen:
                bad.append(f"{type(err).__name__} attempts={err.attempts} seen {seen}")
        elif seen or soak.servers.executions[f.token]:
            attempts = soak.log.attempts.get(err.request_id or "", [])
            bad.append(
                f"{type(err).__name__} attempts={err.attempts} server saw attempts {seen} "
                f"ran {soak.servers.executions[f.token]}x; per attempt {attempts}"
            )
    return bad


def test_not_reached_means_no_server_saw_it_first_attempt(soak: Soak) -> None:
    """``may_have_reached_server=False`` on a call that was not retried."""
    bad = _false_but_seen(soak, retried=False)
    assert not bad, describe(soak, bad, "errors said False but a server saw the call")


def test_not_reached_means_the_last_attempt_was_not_seen(soak: Soak) -> None:
    """A retried call's False holds at least for its own last attempt.

    (The attempt number travels in ``X-Soak-Attempt``.) Apart from issue 12
    item 5 below: a False that is wrong for the attempt it describes.
    """
    bad = _false_but_seen(soak, retried=True, last_only=True)
    assert not bad, describe(soak, bad, "errors said False but a server saw their last attempt")


def test_not_reached_means_no_server_saw_it_after_retries(soak: Soak) -> None:
    """``may_have_reached_server=False`` on a retried call: no attempt was seen."""
    bad = _false_but_seen(soak, retried=True)
    retried = sum(1 for _, e in soak.rpc_errors() if e.attempts > 1)
    assert not bad, describe(soak, bad, f"of {retried} retried errors said False but were seen")


def test_server_answers_were_seen_by_a_server(soak: Soak) -> None:
    """A RemoteError or HTTPStatusError is a server's answer: it saw the call."""
    answered = (E.RemoteError, E.HTTPStatusError)
    bad = [repr(e) for _, e in soak.rpc_errors() if isinstance(e, answered) and not soak.seen(e)]
    assert not bad, describe(soak, bad, "server answers no server saw")


def test_no_call_ends_long_past_its_deadline(soak: Soak) -> None:
    """Every call returns by its total deadline, within a margin for a loaded machine.

    Issue 12 item 4 (deadline accuracy) has its own tight bound elsewhere;
    this one (1 s past ``total``) only catches a call the faults kept
    running: a stall or a drip that outlives the deadline.
    """
    worst = max(soak.late, default=0.0)
    assert worst < LATE_MARGIN, (
        f"{len(soak.late)} calls ended past their deadline, the latest by {worst * 1000:.0f} ms "
        f"(seed {soak.seed})"
    )


def test_pool_slots_back_to_baseline(soak: Soak) -> None:
    busy = {u: p for u, p in soak.pools_before_close.items() if p["in_use"] or p["waiting"]}
    assert not busy, f"slots still taken after every call returned: {busy} (seed {soak.seed})"
    left = {u: p for u, p in soak.pools_after_close.items() if p["in_use"] or p["idle"]}
    assert not left, f"pool state after close: {left} (seed {soak.seed})"


def test_fds_back_to_baseline(soak: Soak) -> None:
    assert soak.fds_after <= soak.fds_baseline, (
        f"fds {soak.fds_baseline} before the client, {soak.fds_after} after close "
        f"(seed {soak.seed})"
    )


# -- the same soak against deduplicating servers (issue 15, deliverable 1) ----------------


def test_dedup_no_call_ran_twice(dedup_soak: Soak) -> None:
    twice = [f"{t} x{n}" for t, n in dedup_soak.servers.executions.items() if n > 1]
    assert not twice, describe(dedup_soak, twice, "calls ran more than once under dedup")


def test_dedup_every_answer_is_the_calls_own(dedup_soak: Soak) -> None:
    assert dedup_soak.ok + len(dedup_soak.failures) == dedup_soak.calls
    assert not dedup_soak.wrong_answers, describe(
        dedup_soak, [repr(w)[:120] for w in dedup_soak.wrong_answers], "wrong answers"
    )
    foreign = [repr(f.error) for f in dedup_soak.failures if not isinstance(f.error, E.RPCError)]
    assert not foreign, describe(dedup_soak, foreign, "errors that are not rpcclient.exceptions")


def test_dedup_no_failure_from_the_idle_close_race(soak: Soak, dedup_soak: Soak) -> None:
    """Non-idempotent calls are re-sent under the dedup scope after a lost connection
    (the plain run, same seed, loses some to it: its summary line says how many)."""
    if soak.calls >= 5000:  # the race bites without dedup (a short run may not meet it)
        assert idle_close_race_failures(soak), "the plain run lost no write to the race"
    bad = idle_close_race_failures(dedup_soak)
    assert not bad, describe(dedup_soak, bad, "non-idempotent calls lost to the idle-close race")
    assert write_retries(dedup_soak) > write_retries(soak), "dedup re-sent no more writes"


def test_dedup_fails_fewer_non_idempotent_calls(soak: Soak, dedup_soak: Soak) -> None:
    """The plain run loses non-idempotent calls to faults that dedup re-sends cure."""

    def lost(run: Soak) -> int:
        return sum(
            1
            for f, err in run.rpc_errors()
            if not f.idempotent and err.may_have_reached_server and err.attempts == 1
        )

    assert lost(dedup_soak) < lost(soak) / 2, (lost(dedup_soak), lost(soak))
