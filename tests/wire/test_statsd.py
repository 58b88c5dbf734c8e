"""The StatsD reporter, driven by real calls, read by a real UDP socket on loopback.

Also the ``rpcclient stats`` report command, which reads what ``dump_stats`` wrote.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
from collections.abc import Iterator
from typing import Any

import gevent
import gevent.os
import gevent.socket
import msgpack
import pytest

import rpcclient
from rpcclient import CallEvent, Client
from rpcclient._integrations.statsd import StatsdReporter
from rpcclient._integrations.statsfile import dump_stats
from rpcclient._tools.stats import configure_parser, run
from tests.support.proc import run_in_fork
from tests.support.raw import RawServer, http_response, keepalive_answering


def answer(head: bytes, body: bytes) -> bytes:
    value = msgpack.unpackb(body)
    if value == "fail":
        err = {"error": {"type": "ValueError", "message": "no", "data": None}}
        return http_response(msgpack.packb(err), "500 Internal Server Error")
    return http_response(msgpack.packb(value))


class Agent:
    """A UDP socket standing in for the statsd agent."""

    def __init__(self) -> None:
        self.sock = gevent.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]

    def datagrams(self, wait: float = 0.3, count: int | None = None) -> list[bytes]:
        """What arrives until nothing more has for ``wait`` seconds (or ``count`` came)."""
        got: list[bytes] = []
        self.sock.settimeout(wait)
        while count is None or len(got) < count:
            try:
                got.append(self.sock.recv(65536))
            except TimeoutError:
                break
        return got

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def agent() -> Iterator[Agent]:
    a = Agent()
    yield a
    a.close()


def parse(line: bytes) -> tuple[str, str, str, dict[str, str]]:
    """``name:value|type|#k:v,...`` -> (name, value, type, tags)."""
    name, _, rest = line.decode().partition(":")
    value, kind, *extra = rest.split("|")
    tags = dict(t.split(":", 1) for t in extra[0][1:].split(",")) if extra else {}
    return name, value, kind, tags


def lines_of(datagrams: list[bytes]) -> list[tuple[str, str, str, dict[str, str]]]:
    return [parse(line) for d in datagrams for line in d.split(b"\n")]


def synthetic(name: str = "svc.m", elapsed: float = 0.002) -> CallEvent:
    event = CallEvent(name, "id-1", False, "gevent")
    event.endpoint = "http://127.0.0.1:9"
    event.elapsed = elapsed
    return event


def test_timer_and_counter_per_call_with_all_tags_batched(raw_server: Any, agent: Agent) -> None:
    srv: RawServer = raw_server(keepalive_answering(answer))
    # a long interval: everything goes in close()'s flush, so batching is visible
    reporter = StatsdReporter(
        port=agent.port, variant="b", tags={"env": "test"}, flush_interval=60, max_datagram=512
    )
    with Client(srv.url, hooks=[reporter]) as client:
        for i in range(10):
            assert client.call("user.get", i) == i
        for _ in range(2):
            with pytest.raises(rpcclient.RemoteError):
                client.call("user.put", "fail")
        stats = client.stats()["stats"]["methods"]
    reporter.close()
    datagrams = agent.datagrams()
    assert all(len(d) <= 512 for d in datagrams)
    assert len(datagrams) >= 2 and any(d.count(b"\n") >= 2 for d in datagrams)  # batched
    lines = lines_of(datagrams)
    timers = [x for x in lines if x[0] == "rpcclient.call.latency"]
    counters = [x for x in lines if x[0] == "rpcclient.call.count"]
    assert len(timers) == 12 and all(kind == "ms" for _, _, kind, _ in timers)
    assert all(float(value) > 0 for _, value, _, _ in timers)
    host = f"127.0.0.1:{srv.port}"
    common = {"server": host, "transport": "gevent", "variant": "b", "env": "test"}
    for _, _, _, tags in timers + counters:
        assert tags.items() >= common.items()
    ok = [t for t in timers if t[3]["method"] == "get"]
    assert len(ok) == 10 and all(t[3]["status"] == "ok" and t[3]["service"] == "user" for t in ok)
    failed = [t for t in timers if t[3]["method"] == "put"]
    assert len(failed) == 2 and all(t[3]["status"] == "RemoteError" for t in failed)
    # the timer is the call's own elapsed time, the one client.stats() adds up
    total_ms = sum(float(t[1]) for t in ok)
    assert abs(total_ms / 1000 - stats["user.get"]["total_time"]) < 1e-4
    # counters are summed per tag set within a flush
    counts = {(t["method"], t["status"]): int(v) for _, v, kind, t in counters if kind == "c"}
    assert counts == {("get", "ok"): 10, ("put", "RemoteError"): 2}
    assert reporter.dropped == 0 and reporter.send_errors == 0
    assert reporter.datagrams == len(datagrams)


def test_the_flusher_sends_on_its_interval_without_close(raw_server: Any, agent: Agent) -> None:
    srv: RawServer = raw_server(keepalive_answering(answer))
    with StatsdReporter(port=agent.port, flush_interval=0.05) as reporter:
        with Client(srv.url, hooks=[reporter]) as client:
            client.call("a.b", 1)
            first = lines_of(agent.datagrams(wait=2.0, count=1))
            client.call("a.b", 2)
            second = lines_of(agent.datagrams(wait=2.0, count=1))
    assert [x[0] for x in first] == ["rpcclient.call.latency", "rpcclient.call.count"]
    assert [x[0] for x in second] == ["rpcclient.call.latency", "rpcclient.call.count"]
    assert "pending=0" in repr(reporter) and "closed" in repr(reporter)


def test_a_half_full_buffer_wakes_the_flusher_early(raw_server: Any, agent: Agent) -> None:
    srv: RawServer = raw_server(keepalive_answering(answer))
    reporter = StatsdReporter(port=agent.port, flush_interval=60, max_buffer=10)
    with Client(srv.url, hooks=[reporter]) as client:
        for i in range(5):
            client.call("a.b", i)
        gevent.sleep(0.01)
        timers = [x for x in lines_of(agent.datagrams()) if x[2] == "ms"]
    assert len(timers) == 5  # sent long before the 60 s interval
    reporter.close()


def test_plain_statsd_folds_tags_into_the_name(raw_server: Any, agent: Agent) -> None:
    srv: RawServer = raw_server(keepalive_answering(answer))
    reporter = StatsdReporter(
        port=agent.port, prefix="app.rpc", variant="a", tags={"dropped": "yes"}, dogstatsd=False
    )
    with Client(srv.url, hooks=[reporter]) as client:
        client.call("user.get_profile", 1)
        with pytest.raises(rpcclient.RemoteError):
            client.call("user.get_profile", "fail")
    reporter.close()
    raw = b"\n".join(agent.datagrams())
    assert b"#" not in raw and b"dropped" not in raw and b"127.0.0.1" not in raw
    names = sorted((name, kind) for name, _, kind, _ in lines_of([raw]))
    assert names == [
        ("app.rpc.a.user.get_profile.RemoteError.count", "c"),
        ("app.rpc.a.user.get_profile.RemoteError.latency", "ms"),
        ("app.rpc.a.user.get_profile.ok.count", "c"),
        ("app.rpc.a.user.get_profile.ok.latency", "ms"),
    ]


def test_a_full_buffer_drops_and_counts(agent: Agent) -> None:
    reporter = StatsdReporter(port=agent.port, flush_interval=60, max_buffer=5)
    # A burst with no greenlet switch: the flusher cannot run in between.
    for _ in range(20):
        reporter.after_call(synthetic())
    assert reporter.dropped == 15 and "pending=5 dropped=15" in repr(reporter)
    reporter.close()
    lines = lines_of(agent.datagrams())
    assert sum(1 for x in lines if x[2] == "ms") == 5
    assert [int(v) for _, v, kind, _ in lines if kind == "c"] == [5]
    reporter.after_call(synthetic())  # after close: counted, never sent
    assert reporter.dropped == 16


def test_a_dead_agent_never_breaks_a_call(raw_server: Any) -> None:
    srv: RawServer = raw_server(keepalive_answering(answer))
    dead = gevent.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dead.bind(("127.0.0.1", 0))
    port = dead.getsockname()[1]
    dead.close()  # nobody listens: the kernel answers with ICMP port unreachable
    reporter = StatsdReporter(port=port, flush_interval=0.01)
    with Client(srv.url, hooks=[reporter]) as client:
        for i in range(10):
            assert client.call("a.b", i) == i
            gevent.sleep(0.02)  # a flush per call: later sends see the refusals
    reporter.close()
    assert reporter.send_errors >= 1
    assert reporter.datagrams + reporter.send_errors >= 5
    assert reporter.dropped == 0


def test_bad_names_and_tags_are_refused_at_construction() -> None:
    bad: list[dict[str, Any]] = [
        {"prefix": "a b"},
        {"prefix": ""},
        {"tags": {"k": "a,b"}},
        {"tags": {"k:x": "v"}},
        {"variant": "a|b"},
        {"max_buffer": 0},
    ]
    for kw in bad:
        with pytest.raises(ValueError):
            StatsdReporter(**kw)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_reports_its_own_calls_once(agent: Agent) -> None:
    reporter = StatsdReporter(port=agent.port, flush_interval=60)
    reporter.after_call(synthetic("parent.before_fork"))  # buffered, flusher started
    gevent.sleep(0)

    def child() -> bool:  # an empty buffer, its own flusher and socket
        reporter.after_call(synthetic("child.call"))
        reporter.close()
        return reporter.datagrams == 1 and reporter.dropped == 0

    run_in_fork(child)
    from_child = lines_of(agent.datagrams())
    assert {t["service"] for _, _, _, t in from_child} == {"child"}
    reporter.close()
    from_parent = lines_of(agent.datagrams())
    assert {t["service"] for _, _, _, t in from_parent} == {"parent"}
    assert sum(1 for x in from_parent if x[2] == "ms") == 1


# -- rpcclient stats ------------------------------------------------------------------


def stats_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    return parser.parse_args(argv)


def test_stats_command_reports_a_dumped_file(
    raw_server: Any, tmp_path: Any, capsys: Any, monkeypatch: Any
) -> None:
    srv: RawServer = raw_server(keepalive_answering(answer))
    path = tmp_path / "stats.json"
    with Client(srv.url) as client:
        for i in range(3):
            client.call("user.get", "x" * 100 * i)
        client.call("user.put", 1)
        dump_stats(client, path)
    assert json.loads(path.read_text())["stats"]["methods"]["user.get"]["calls"] == 3
    assert [p.name for p in tmp_path.iterdir()] == ["stats.json"]  # no temp file left
    assert run(stats_args(str(path))) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[0] == "method" and len(out) == 4
    assert run(stats_args(str(path), "--top", "1")) == 0
    top = capsys.readouterr().out.splitlines()
    assert len(top) == 3 and top[2].split()[0] == out[2].split()[0]
    monkeypatch.setattr("sys.stdin", io.StringIO(path.read_text()))
    assert run(stats_args("-")) == 0
    assert capsys.readouterr().out.splitlines() == out


def test_stats_command_refuses_bad_input(tmp_path: Any, capsys: Any) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert run(stats_args(str(bad))) == 1
    bad.write_text('{"something": "else"}')
    assert run(stats_args(str(bad))) == 1
    assert run(stats_args(str(tmp_path / "missing.json"))) == 1
    assert run(stats_args(str(bad), "--top", "0")) == 2
    err = capsys.readouterr().err
    assert "cannot read" in err and "no 'methods'" in err and "--top" in err
