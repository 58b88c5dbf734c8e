"""Fault injection on loopback, against every transport.

Scripted raw servers and a small fault proxy in front of the bundled server
produce the faults; each test checks the guarantee the client makes (ran
exactly once, pool whole, no descriptor left, the caller's exception
unchanged), not only that something was raised.
"""

from __future__ import annotations

import gc
import socket
import struct
import warnings
from collections.abc import Iterator
from typing import Any

import gevent
import gevent.server
import gevent.socket
import msgpack
import pytest

from rpcclient import Client, Retry, Timeout
from rpcclient import exceptions as E
from tests.support.proc import FdWatch, open_fds
from tests.support.raw import RawServer, free_port, http_response, keepalive_answering, read_request
from tests.support.transports import TRANSPORTS, raises_ours


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def ok(value: Any) -> bytes:
    return http_response(msgpack.packb(value, use_bin_type=True))


def pool_stats(client: Client) -> dict[str, int]:
    """Summed pool figures of a client (every transport reports these)."""
    pools = client.stats().get("pools", {})
    total = {"in_use": 0, "idle": 0}
    for p in pools.values():
        total["in_use"] += p.get("in_use", 0)
        total["idle"] += p.get("idle", 0)
    return total


# -- a small fault proxy ---------------------------------------------------------


class FaultProxy:
    """A TCP proxy to ``upstream``; ``mode`` decides what it does to answers.

    ``pass``: forward both ways. ``rst_after:N``: forward N answer bytes,
    then reset the client connection (SO_LINGER 0). ``cut_after:N``: forward
    N bytes, then close cleanly.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.mode = "pass"
        self.server = gevent.server.StreamServer(("127.0.0.1", 0), self._handle)
        self.server.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def _handle(self, client: Any, address: Any) -> None:
        upstream = gevent.socket.create_connection(("127.0.0.1", self.upstream_port))

        def pump_up() -> None:
            try:
                while data := client.recv(65536):
                    upstream.sendall(data)
            except OSError:
                pass

        up = gevent.spawn(pump_up)
        mode, sent = "pass", 0
        try:
            while data := upstream.recv(65536):
                if self.mode != mode:  # the mode applies from the next answer bytes on
                    mode, sent = self.mode, 0
                limit = int(mode.split(":")[1]) if ":" in mode else None
                if limit is not None and sent + len(data) >= limit:
                    client.sendall(data[: limit - sent])
                    if mode.startswith("rst_after"):
                        client.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                    break
                client.sendall(data)
                sent += len(data)
        except OSError:
            pass
        finally:
            up.kill()
            upstream.close()
            client.close()

    def stop(self) -> None:
        self.server.stop(timeout=1)


@pytest.fixture
def fault_proxy(bundled_server: str) -> Iterator[FaultProxy]:
    proxy = FaultProxy(int(bundled_server.rsplit(":", 1)[1]))
    yield proxy
    proxy.stop()


@pytest.mark.parametrize("mode", ["rst_after:60", "cut_after:60"])
def test_reset_or_cut_mid_body_through_the_proxy(
    fault_proxy: FaultProxy, transport: str, mode: str
) -> None:
    with Client(fault_proxy.url, transport=transport) as client:
        assert client.call("echo.echo", [b"x" * 500]) == b"x" * 500  # pass mode works
        fault_proxy.mode = mode
        err = raises_ours(E.TransportError, client.call, "echo.echo", [b"y" * 500])
        assert isinstance(err, E.ConnectionLost | E.ProtocolError)
        assert err.may_have_reached_server
        fault_proxy.mode = "pass"
        assert client.call("echo.echo", [1]) == 1


# -- exactly once ---------------------------------------------------------------------


def close_unanswered_first(sock: Any, server: RawServer) -> None:
    req = read_request(sock)
    if req is None:
        return
    server.requests.append(req)
    if server.connections > 1:
        sock.sendall(ok("second"))


def test_non_idempotent_runs_exactly_once(raw_server: Any, transport: str) -> None:
    srv: RawServer = raw_server(close_unanswered_first)
    with Client(srv.url, transport=transport) as client:
        err = raises_ours(E.ConnectionLost, client.call, "pay.charge", [5])
        assert err.may_have_reached_server and err.attempts == 1
    assert len(srv.requests) == 1


def test_an_error_keeps_the_transport_error_behind_it(raw_server: Any) -> None:
    """The exchange error is the cause, in the compiled build and the interpreted one."""
    srv: RawServer = raw_server(close_unanswered_first)
    with Client(srv.url) as client:
        err = raises_ours(E.ConnectionLost, client.call, "pay.charge", [5])
    assert isinstance(err.__cause__, EOFError), repr(err.__cause__)


def test_idempotent_is_retried_once_on_a_new_connection(raw_server: Any, transport: str) -> None:
    srv: RawServer = raw_server(close_unanswered_first)
    with Client(srv.url, transport=transport, retry=Retry(backoff=0)) as client:
        assert client.call("pay.status", [5], idempotent=True) == "second"
    assert len(srv.requests) == 2 and srv.connections == 2


def test_stale_idle_connection_succeeds_without_retry(raw_server: Any, transport: str) -> None:
    def answer_then_close(sock: Any, server: RawServer) -> None:
        req = read_request(sock)
        if req is not None:
            server.requests.append(req)
            sock.sendall(ok(msgpack.unpackb(req[1])))  # keep-alive promised, then closed

    srv: RawServer = raw_server(answer_then_close)
    with Client(srv.url, transport=transport, retry=Retry(attempts=1)) as client:
        for i in range(5):
            assert client.call("a.b", i) == i
            gevent.sleep(0.02)
    assert [msgpack.unpackb(b) for _, b in srv.requests] == list(range(5))


# -- pool exhaustion ------------------------------------------------------------------


def test_pool_exhaustion_bounded_then_all_succeed(raw_server: Any, transport: str) -> None:
    gate = gevent.event.Event()

    def gated(head: bytes, body: bytes) -> bytes:
        gate.wait(5)
        return ok(msgpack.unpackb(body))

    srv: RawServer = raw_server(keepalive_answering(gated))
    client = Client(srv.url, transport=transport, pool_size=3, timeout=Timeout(pool=0.1, total=10))
    busy = [gevent.spawn(client.call, "a.b", i) for i in range(3)]
    gevent.sleep(0.1)
    raises_ours(E.PoolTimeout, client.call, "a.b", 99)
    gate.set()
    assert [g.get(timeout=5) for g in busy] == [0, 1, 2]
    results = gevent.joinall([gevent.spawn(client.call, "a.b", i) for i in range(30)], timeout=10)
    assert sorted(g.value for g in results) == list(range(30))
    assert pool_stats(client)["in_use"] == 0
    client.close()


# -- the caller's gevent.Timeout and kill() in every phase ------------------------


def phase_server(raw_server: Any, phase: str, release: gevent.event.Event) -> RawServer:
    """The first connection stalls in ``phase``; later ones answer normally."""

    def handler(sock: Any, server: RawServer) -> None:
        buf = bytearray()
        first = server.connections == 1
        if phase == "send" and first:
            release.wait(5)  # read nothing until released: the client's big write blocks
            while sock.recv(65536):
                pass
            return
        while (req := read_request(sock, buf)) is not None:
            value = msgpack.unpackb(req[1])
            if value == "stall" and first:
                if phase == "body":
                    sock.sendall(ok("z" * 1000)[:-100])
                sock.recv(1)  # returns when the client closes
                return
            sock.sendall(ok(value))

    return raw_server(handler)


@pytest.mark.parametrize("phase", ["connect", "send", "header", "body"])
@pytest.mark.parametrize("how", ["timeout", "kill"])
def test_caller_interrupts_leave_pool_whole(
    raw_server: Any, full_listener: str, transport: str, phase: str, how: str, no_fd_leak: FdWatch
) -> None:
    release = gevent.event.Event()
    if phase == "connect":
        url = full_listener
        arg: Any = "stall"
    else:
        srv = phase_server(raw_server, phase, release)
        url = srv.url
        arg = b"s" * (8 * 1024 * 1024) if phase == "send" else "stall"
    no_fd_leak.mark()
    client = Client(url, transport=transport, pool_size=1, timeout=Timeout(connect=5, total=10))
    if how == "timeout":
        mine = gevent.Timeout(0.3)
        with pytest.raises(gevent.Timeout) as info:
            with mine:
                client.call("a.b", arg)
        assert info.value is mine
    else:
        job = gevent.spawn(client.call, "a.b", arg)
        gevent.sleep(0.3)
        job.kill(block=True, timeout=3)
        assert job.dead and isinstance(job.value, gevent.GreenletExit)
    release.set()
    assert pool_stats(client)["in_use"] == 0
    if phase != "connect":
        assert client.call("a.b", "next") == "next"  # its own answer, on a new connection
    client.close()
    gevent.sleep(0.1)


# -- many failures leave nothing behind --------------------------------------------


def test_ten_thousand_failed_calls_leave_no_fd_and_no_resource_warning(
    raw_server: Any, transport: str
) -> None:
    kinds = ["remote", "close", "garbage", "refused"]

    def handler(sock: Any, server: RawServer) -> None:
        buf = bytearray()
        while (req := read_request(sock, buf)) is not None:
            kind = msgpack.unpackb(req[1])
            if kind == "remote":
                env = {"error": {"type": "KeyError", "message": "k", "data": None}}
                sock.sendall(http_response(msgpack.packb(env), "500 Internal Server Error"))
            elif kind == "close":
                return
            else:
                sock.sendall(b"HTTP/1.1 2OO OK\r\n\r\n")
                return

    srv: RawServer = raw_server(handler)
    dead = f"http://127.0.0.1:{free_port()}"
    client = Client({"ok": srv.url, "dead": dead}, transport=transport, retry=Retry(attempts=1))
    client.call_many([])  # warm imports
    gc.collect()
    before = open_fds()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for i in range(10_000):
            kind = kinds[i % 4]
            name = "dead.m" if kind == "refused" else "ok.m"
            with pytest.raises(E.RPCError):
                client.call(name, kind)
        gc.collect()
    assert open_fds() <= before + 1, (before, open_fds())
    client.close()
    gc.collect()
    assert open_fds() <= before


# -- bounded memory against hostile answers -------------------------------------


@pytest.mark.parametrize(
    "bomb",
    [
        b"\xdd\xff\xff\xff\xff",  # array claiming 4 billion items
        b"\xdf\xff\xff\xff\xff",  # map claiming 4 billion pairs
        b"\xdb\xff\xff\xff\xff",  # str claiming 4 GiB
        b"\xc6\x7f\xff\xff\xff",  # bin claiming 2 GiB
        b"\x91" * 200_000,  # nesting far deeper than any real payload
    ],
    ids=["array", "map", "str", "bin", "deep"],
)
def test_msgpack_bombs_are_decode_errors(raw_server: Any, transport: str, bomb: bytes) -> None:
    srv: RawServer = raw_server(keepalive_answering(lambda h, b: http_response(bomb)))
    with Client(srv.url, transport=transport) as client:
        raises_ours(E.DecodeError, client.call, "a.b", 1)


def test_oversized_length_is_refused_before_reading(raw_server: Any, transport: str) -> None:
    sent: list[int] = []

    def liar(sock: Any, server: RawServer) -> None:
        if read_request(sock) is None:
            return
        head = b"HTTP/1.1 200 OK\r\nContent-Length: 10000000000\r\n\r\n"
        sock.sendall(head)
        try:
            for _ in range(200):  # would be 13 MB; the client must stop long before
                sock.sendall(b"\x00" * 65536)
                sent.append(65536)
        except OSError:
            pass

    srv: RawServer = raw_server(liar)
    with Client(srv.url, transport=transport, max_response_size=1_000_000) as client:
        raises_ours(E.ResponseTooLarge, client.call, "a.b", 1)


def test_header_bomb_is_refused(raw_server: Any, transport: str) -> None:
    def many_headers(sock: Any, server: RawServer) -> None:
        if read_request(sock) is None:
            return
        sock.sendall(b"HTTP/1.1 200 OK\r\n")
        try:
            for i in range(20_000):
                sock.sendall(b"X-Filler-%d: %s\r\n" % (i, b"v" * 100))
        except OSError:
            pass

    srv: RawServer = raw_server(many_headers)
    with Client(srv.url, transport=transport, max_head_size=64 * 1024) as client:
        raises_ours(E.ProtocolError, client.call, "a.b", 1)


def test_retry_storm_against_dead_service_is_budgeted(transport: str) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    policy = Retry(attempts=4, backoff=0, budget_ratio=0.1, budget_min_per_second=1)
    with Client(dead, transport=transport, retry=policy) as client:
        attempts = 0
        for _ in range(200):
            try:
                client.call("a.b", 1)
            except E.ConnectError as exc:
                attempts += exc.attempts
    retries = attempts - 200
    assert retries <= 0.1 * 200 + 10 + 10, retries  # ratio share + cap + a few seconds
