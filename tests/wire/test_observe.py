"""In-process stats, request ids and hooks, driven by real traffic on loopback."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

import rpcclient
from rpcclient import CallEvent, Client, Hook, Retry, report
from rpcclient._core.observe import Counter, _bucket, _bucket_upper
from tests.support.raw import RawServer, http_response, keepalive_answering, read_request


def answer(head: bytes, body: bytes) -> bytes:
    value = msgpack.unpackb(body)
    if value == "fail":
        err = {"error": {"type": "ValueError", "message": "no", "data": None}}
        return http_response(msgpack.packb(err), "500 Internal Server Error")
    return http_response(msgpack.packb(value))


def test_stats_count_calls_errors_bytes_and_rank_by_total_time(raw_server: Any) -> None:
    srv: RawServer = raw_server(keepalive_answering(answer))
    with Client(srv.url) as client:
        for i in range(30):
            client.call("user.get", i)
        for _ in range(3):
            with pytest.raises(rpcclient.RemoteError):
                client.call("user.put", "fail")
        client.call("user.put", "x" * 1000)
        stats = client.stats()
    methods = stats["stats"]["methods"]
    get, put = methods["user.get"], methods["user.put"]
    assert get["calls"] == 30 and get["error_count"] == 0
    assert put["calls"] == 4 and put["errors"] == {"RemoteError": 3}
    assert put["bytes_sent"] == 3 * len(msgpack.packb("fail")) + len(msgpack.packb("x" * 1000))
    assert get["p50"] is not None and get["p50"] <= get["p99"]
    assert abs(get["avg_latency"] * 30 - get["total_time"]) < 1e-9
    (host,) = stats["stats"]["hosts"].values()
    assert host["calls"] == 34
    table = report(stats)
    lines = table.splitlines()
    assert lines[0].split()[0] == "method"
    ranked = [line.split()[0] for line in lines[2:]]
    expected = sorted(methods, key=lambda m: methods[m]["total_time"], reverse=True)
    assert ranked == expected


def test_stats_can_be_switched_off(raw_server: Any) -> None:
    srv: RawServer = raw_server(keepalive_answering(answer))
    with Client(srv.url, stats=False) as client:
        client.call("a.b", 1)
        assert client.stats()["stats"]["methods"] == {}


def test_retries_are_counted(raw_server: Any) -> None:
    def close_first(sock: Any, server: RawServer) -> None:
        req = read_request(sock)
        if req is None:
            return
        if server.connections > 1:
            sock.sendall(answer(*req))

    srv: RawServer = raw_server(close_first)
    with Client(srv.url, retry=Retry(backoff=0)) as client:
        client.call("a.b", 1, idempotent=True)
        m = client.stats()["stats"]["methods"]["a.b"]
    assert m["calls"] == 1 and m["retries"] == 1


def test_request_id_sent_generated_or_given_and_carried_in_errors(raw_server: Any) -> None:
    srv: RawServer = raw_server(keepalive_answering(answer))
    with Client(srv.url) as client:
        client.call("a.b", 1)
        client.call("a.b", 2, request_id="given-42")
        with pytest.raises(rpcclient.RemoteError) as info:
            client.call("a.b", "fail", request_id="trace-me")
        with pytest.raises(rpcclient.InvalidRequest):
            client.call("a.b", 1, request_id="bad\r\nid")
    ids = []
    for head, _ in srv.requests:
        line = next(x for x in head.decode().split("\r\n") if x.lower().startswith("x-request-id"))
        ids.append(line.split(":", 1)[1].strip())
    assert ids[1:] == ["given-42", "trace-me"]
    assert len(ids[0]) > 8
    assert info.value.request_id == "trace-me" and "trace-me" in str(info.value)


class Recorder(Hook):
    def __init__(self) -> None:
        self.log: list[tuple[str, Any]] = []

    def before_call(self, event: CallEvent) -> None:
        self.log.append(("before_call", event.name))

    def before_attempt(self, event: CallEvent) -> None:
        self.log.append(("before_attempt", event.attempt))
        event.headers.append((b"X-Hooked", b"yes"))

    def after_attempt(self, event: CallEvent) -> None:
        self.log.append(("after_attempt", (event.status, type(event.error).__name__)))

    def after_call(self, event: CallEvent) -> None:
        self.log.append(("after_call", (event.result, type(event.error).__name__)))


class Broken(Hook):
    def after_call(self, event: CallEvent) -> None:
        raise RuntimeError("a broken hook must not break the call")


def test_hooks_run_in_documented_order_and_may_add_headers(raw_server: Any) -> None:
    srv: RawServer = raw_server(keepalive_answering(answer))
    rec = Recorder()
    with Client(srv.url, hooks=[rec, Broken()]) as client:
        assert client.call("a.b", 7) == 7
        with pytest.raises(rpcclient.RemoteError):
            client.call("a.b", "fail")
    assert rec.log == [
        ("before_call", "a.b"),
        ("before_attempt", 1),
        ("after_attempt", (200, "NoneType")),
        ("after_call", (7, "NoneType")),
        ("before_call", "a.b"),
        ("before_attempt", 1),
        ("after_attempt", (500, "RemoteError")),
        ("after_call", (None, "RemoteError")),
    ]
    assert all(b"X-Hooked: yes" in head for head, _ in srv.requests)


def test_histogram_buckets_bound_their_values() -> None:
    for seconds in [0.000_003, 0.0001, 0.00123, 0.05, 1.7, 30.0]:
        idx = _bucket(seconds)
        assert _bucket_upper(idx - 1) <= seconds * 1.0000001 <= _bucket_upper(idx) * 1.0000001
    c = Counter()
    for ms in range(1, 101):
        c.add(ms / 1000, None, 0, 0)
    p50, p99 = c.percentile(0.5), c.percentile(0.99)
    assert p50 is not None and p99 is not None
    assert 0.045 <= p50 <= 0.06 and 0.09 <= p99 <= 0.12
