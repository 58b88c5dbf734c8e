"""Exactly-once calls, client side (issue 15, DEDUP_PROTOCOL.md "Client side").

A scripted raw-socket server speaks the contract: it advertises
``X-Rpc-Dedup``, records every request's id and attempt headers, and for
the calls named ``t.flaky`` follows a plan per attempt: run the call and
then drop the connection (ConnectionLost), stall (ReadTimeout), truncate
the answer (ProtocolError), or answer. Each test runs on every transport.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gevent
import msgpack
import pytest

from rpcclient import Client, Retry, Timeout
from rpcclient import exceptions as E
from rpcclient._core.balance import Host
from rpcclient._core.models import Endpoint
from rpcclient._core.retry import DEDUP_MARGIN, dedup_resend_scope, parse_dedup
from tests.support.raw import RawServer, http_response, read_request

TRANSPORTS = ["gevent", "requests", "urllib3"]


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _headers(head: bytes) -> dict[str, str]:
    out = {}
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        out[k.strip().lower().decode()] = v.strip().decode()
    return out


class Script:
    """What the scripted server does, and what it saw."""

    def __init__(
        self,
        advertise: str | None = "s1; window=60",
        plan: list[str] | None = None,
        close: bool = False,
    ) -> None:
        self.advertise = advertise
        self.close = close
        self.plan = list(plan or [])
        self.seen: list[dict[str, str]] = []  # headers of every t.flaky request
        self.ran: list[str] = []  # request ids of executions (drop/stall/truncate ran it)

    def handler(self, sock: Any, server: RawServer) -> None:
        buf = bytearray()
        while True:
            got = read_request(sock, buf)
            if got is None:
                return
            head, _ = got
            hdrs = _headers(head)
            extra = [("X-Rpc-Dedup", self.advertise)] if self.advertise else []
            if self.close:
                extra.append(("Connection", "close"))
            body = msgpack.packb("ok")
            if b"/t/flaky" not in head.split(b"\r\n", 1)[0]:
                sock.sendall(http_response(body, headers=extra))
                if self.close:
                    return
                continue
            self.seen.append(hdrs)
            action = self.plan.pop(0) if self.plan else "ok"
            if action == "ok":
                self.ran.append(hdrs["x-request-id"])
                sock.sendall(http_response(body, headers=extra))
                if self.close:
                    return
                continue
            self.ran.append(hdrs["x-request-id"])
            if action == "drop":
                return
            if action == "stall":
                gevent.sleep(2)
                return
            if action == "truncate":
                whole = http_response(b"x" * 20, headers=extra)
                sock.sendall(whole[:-10])
                return
            if action == "unknown":  # the server lost the record: 409 OutcomeUnknown
                env = msgpack.packb(
                    {
                        "error": {
                            "type": "OutcomeUnknown",
                            "message": "record expired",
                            "data": {"outcome_unknown": True},
                        }
                    }
                )
                sock.sendall(http_response(env, status="409 Conflict", headers=extra))
                continue
            if action == "mismatch":
                env = msgpack.packb(
                    {
                        "error": {
                            "type": "DedupScopeMismatch",
                            "message": "not my scope",
                            "data": {"not_run": True},
                        }
                    }
                )
                sock.sendall(http_response(env, status="503 Service Unavailable", headers=extra))
                self.ran.pop()  # not run
                continue
            raise AssertionError(action)


@pytest.fixture
def scripted(raw_server: Callable[..., RawServer]) -> Callable[..., tuple[Script, str]]:
    def start(**kw: Any) -> tuple[Script, str]:
        script = Script(**kw)
        srv = raw_server(script.handler)
        return script, srv.url

    return start


def _client(urls: str | list[str], transport: str, **kw: Any) -> Client:
    kw.setdefault("timeout", Timeout(read=0.3, total=5))
    kw.setdefault("retry", Retry(backoff=0.0))
    return Client({"t": urls} if isinstance(urls, list) else urls, transport=transport, **kw)


@pytest.mark.parametrize("fault", ["drop", "stall", "truncate"])
def test_resent_with_same_id_and_headers(scripted: Any, transport: str, fault: str) -> None:
    script, url = scripted(plan=[fault, "ok"])
    with _client(url, transport) as client:
        client.call("t.warm")  # the host advertises its scope
        assert client.call("t.flaky", request_id="call-1") == "ok"
        first, second = script.seen
        assert first["x-request-id"] == second["x-request-id"] == "call-1"
        assert "x-rpc-attempt" not in first and "x-rpc-dedup-scope" not in first
        assert second["x-rpc-attempt"] == "2"
        assert second["x-rpc-dedup-scope"] == "s1"
        assert 0 <= int(second["x-rpc-dedup-age-ms"]) < 5000
        snap = client.stats()
        assert snap["stats"]["methods"]["t.flaky"]["dedup_resends"] == 1


def test_not_resent_without_advertisement(scripted: Any, transport: str) -> None:
    script, url = scripted(advertise=None, plan=["drop", "ok"])
    with _client(url, transport) as client:
        client.call("t.warm")
        with pytest.raises(E.ConnectionLost) as info:
            client.call("t.flaky")
        assert info.value.may_have_reached_server is True
        assert len(script.seen) == 1


def test_host_forgets_when_advertisement_stops(scripted: Any, transport: str) -> None:
    script, url = scripted(plan=["drop", "ok"])
    with _client(url, transport) as client:
        client.call("t.warm")
        script.advertise = None
        client.call("t.warm")  # answered without the header: forgotten
        with pytest.raises(E.ConnectionLost):
            client.call("t.flaky")
        assert len(script.seen) == 1


def test_not_resent_past_the_window(scripted: Any, transport: str) -> None:
    # a window no longer than the margin: every call is too old to re-send
    script, url = scripted(advertise=f"s1; window={DEDUP_MARGIN}", plan=["drop", "ok"])
    with _client(url, transport) as client:
        client.call("t.warm")
        with pytest.raises(E.ConnectionLost):
            client.call("t.flaky")
        assert len(script.seen) == 1


def test_not_resent_past_the_deadline(scripted: Any, transport: str) -> None:
    script, url = scripted(plan=["stall", "ok"])
    # the read timeout is the whole deadline: nothing is left for a re-send
    with _client(url, transport, timeout=Timeout(read=0.3, total=0.3)) as client:
        client.call("t.warm")
        with pytest.raises(E.ReadTimeout):
            client.call("t.flaky")
        assert len(script.seen) == 1


def test_not_resent_when_budget_empty(scripted: Any, transport: str) -> None:
    script, url = scripted(plan=["drop", "ok"])
    policy = Retry(backoff=0.0, budget_ratio=0.0, budget_min_per_second=0.0)
    with _client(url, transport, retry=policy) as client:
        client.call("t.warm")
        budget = client._routes["t.warm"][0].budget
        while budget.withdraw():  # drain it (bounded: its cap)
            pass
        with pytest.raises(E.ConnectionLost) as info:
            client.call("t.flaky")
        assert "budget" in str(info.value)
        assert len(script.seen) == 1


def test_not_resent_past_attempts(scripted: Any, transport: str) -> None:
    script, url = scripted(plan=["drop", "drop", "drop", "ok"])
    with _client(url, transport, retry=Retry(attempts=2, backoff=0.0)) as client:
        client.call("t.warm")
        with pytest.raises(E.ConnectionLost) as info:
            client.call("t.flaky")
        assert info.value.attempts == 2
        assert len(script.seen) == 2


def test_outcome_unknown_not_resent(scripted: Any, transport: str) -> None:
    script, url = scripted(plan=["drop", "unknown", "ok"])
    with _client(url, transport) as client:
        client.call("t.warm")
        with pytest.raises(E.RemoteError) as info:
            client.call("t.flaky")
        assert info.value.type == "OutcomeUnknown"
        assert info.value.may_have_reached_server is True
        assert len(script.seen) == 2


def test_scope_mismatch_retried_as_not_run(scripted: Any, transport: str) -> None:
    script, url = scripted(plan=["drop", "mismatch", "ok"])
    with _client(url, transport) as client:
        client.call("t.warm")
        assert client.call("t.flaky") == "ok"
        assert len(script.seen) == 3
        assert script.seen[2]["x-rpc-attempt"] == "3"
        assert script.seen[2]["x-rpc-dedup-scope"] == "s1"


def test_idempotent_retry_sends_no_dedup_headers(scripted: Any, transport: str) -> None:
    script, url = scripted(plan=["drop", "ok"])
    with _client(url, transport) as client:
        client.call("t.warm")
        assert client.call("t.flaky", idempotent=True) == "ok"
        assert "x-rpc-dedup-scope" not in script.seen[1]
        assert client.stats()["stats"]["methods"]["t.flaky"]["dedup_resends"] == 0


def test_resend_goes_to_a_host_of_the_scope(scripted: Any, transport: str) -> None:
    # a (scope s1) runs the call and drops the connection; b advertises another
    # scope, c shares s1: the re-send lands on c (a host of s1 not tried yet),
    # never on b. Answers close their connection: every attempt is on a fresh one,
    # so a drop is never taken for a stale keep-alive connection.
    a, url_a = scripted(advertise="s1; window=60", close=True)
    b, url_b = scripted(advertise="other; window=60", close=True)
    c, url_c = scripted(advertise="s1; window=60", close=True)
    with _client([url_a, url_b, url_c], transport) as client:
        for _ in range(30):  # every host answers and advertises (bounded)
            client.call("t.warm")
        assert all(h["dedup_scope"] for h in client.stats()["groups"]["t"]["hosts"])
        for _ in range(20):  # until a call's first attempt lands on a (bounded)
            for s in (a, b, c):
                s.seen.clear()
            a.plan = ["drop"] * 5
            assert client.call("t.flaky") == "ok"
            if a.seen:
                break
        assert a.seen and "x-rpc-attempt" not in a.seen[0]
        assert not b.seen
        assert [h["x-rpc-dedup-scope"] for h in c.seen] == ["s1"]


# -- pure units ---------------------------------------------------------------------


def test_parse_dedup() -> None:
    assert parse_dedup("mem-3f9a; window=60") == ("mem-3f9a", 60.0)
    assert parse_dedup("a.b_c-1;window=2.5") == ("a.b_c-1", 2.5)
    for bad in (None, "", "s1", "s 1; window=60", "s1; window=x", "s1; window=0", "s1; window=inf"):
        assert parse_dedup(bad) is None, bad


def test_dedup_resend_scope_decision() -> None:
    lost = E.ConnectionLost("lost", may_have_reached_server=True)
    assert dedup_resend_scope(lost, False, "s1", 60.0, 1.0, None) == "s1"
    assert dedup_resend_scope(lost, True, "s1", 60.0, 1.0, None) is None  # idempotent anyway
    assert dedup_resend_scope(lost, False, None, 60.0, 1.0, None) is None
    assert dedup_resend_scope(lost, False, "s1", 60.0, 59.5, None) is None  # margin
    assert dedup_resend_scope(lost, False, "s1", 60.0, 1.0, "s2") is None  # other scope
    too_large = E.ResponseTooLarge("big", may_have_reached_server=True)
    assert dedup_resend_scope(too_large, False, "s1", 60.0, 1.0, None) is None
    remote = E.RemoteError("x", type="Boom", status=500, may_have_reached_server=True)
    assert dedup_resend_scope(remote, False, "s1", 60.0, 1.0, None) is None


def test_host_notes_dedup() -> None:
    host = Host(Endpoint.parse("http://127.0.0.1:1"))
    host.note_dedup("s1; window=30")
    assert (host.dedup_scope, host.dedup_window) == ("s1", 30.0)
    host.note_dedup(None)
    assert host.dedup_scope is None


def test_headers_dedup_scanned_or_noted() -> None:
    from rpcclient._core.models import Headers

    scanned = Headers([("Content-Length", "1"), ("x-RPC-dedup", "s1; window=5")])
    assert scanned.dedup == "s1; window=5"
    assert Headers([("Content-Length", "1")]).dedup is None
    # a transport that noted the field while parsing: no scan
    assert Headers([], "s2; window=5", True).dedup == "s2; window=5"


# -- end to end, with the real RPCApp and its in-process store ---------------------


def test_end_to_end_with_rpcapp_dedup(
    raw_server: Callable[..., RawServer], wsgi_server: Callable[..., str], transport: str
) -> None:
    """A proxy forwards each call to a real ``RPCApp(dedup=MemoryDedupStore())``
    and, for half the request ids, drops the client's connection once the
    server answered the first attempt (the call ran; the client sees
    ConnectionLost). Every non-idempotent call must succeed, each handler
    run exactly once per call, the re-sends answered by replay."""
    import random
    import socket

    from rpcclient.server import RPCApp
    from rpcclient.server.dedup import MemoryDedupStore

    runs: dict[str, int] = {}
    app = RPCApp(dedup=MemoryDedupStore())

    @app.register("t.once")
    def once(token: str) -> str:
        runs[token] = runs.get(token, 0) + 1
        return token

    upstream = wsgi_server(app).rsplit(":", 1)[1]
    rng = random.Random(15)
    dropped: set[bytes] = set()
    replayed = []

    def proxy(sock: Any, server: RawServer) -> None:
        buf = bytearray()
        while True:
            got = read_request(sock, buf)
            if got is None:
                return
            head, body = got
            line, _, rest = head.partition(b"\r\n")
            rid = _headers(head)["x-request-id"].encode()
            up = socket.create_connection(("127.0.0.1", int(upstream)))
            try:
                up.sendall(line + b"\r\nConnection: close\r\n" + rest + b"\r\n\r\n" + body)
                answer = b""
                while chunk := up.recv(65536):
                    answer += chunk
            finally:
                up.close()
            if b"x-rpc-replayed" in answer.lower():
                replayed.append(rid)
            if rid not in dropped and rng.random() < 0.5:
                dropped.add(rid)
                return  # it ran; the client never hears
            sock.sendall(answer)

    srv = raw_server(proxy)
    n = 60
    # a budget that covers one re-send per call: half the calls need one
    policy = Retry(backoff=0.0, budget_ratio=1.0)
    with Client(
        srv.url, transport=transport, timeout=Timeout(read=2, total=10), retry=policy
    ) as client:
        while True:  # until an answer advertised the scope (bounded by the drop odds)
            try:
                client.call("t.once", ["warm2"], idempotent=True)
                break
            except E.ConnectionLost:
                assert len(runs) < 50
        for i in range(n):
            assert client.call("t.once", [f"c{i}"]) == f"c{i}"
        resends = client.stats()["stats"]["methods"]["t.once"]["dedup_resends"]
    calls = {k: v for k, v in runs.items() if k.startswith("c")}
    assert len(calls) == n and set(calls.values()) == {1}, calls
    assert resends >= 10 and len(replayed) >= 10
