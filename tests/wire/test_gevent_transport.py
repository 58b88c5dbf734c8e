"""The gevent transport's own guarantees, on real loopback servers.

One write per request, TCP_NODELAY, the pool's bounds and expiry, stale
keep-alive recovery without a re-send, and cleanup under gevent.Timeout and
greenlet.kill(). Cross-transport behaviour is in test_conformance.py.
"""

from __future__ import annotations

import socket
import tracemalloc
from typing import Any, ClassVar

import gevent
import gevent.socket
import msgpack
import pytest

import rpcclient
from rpcclient import Client, GeventTransport, Timeout
from rpcclient._transports.gevent.http11 import COALESCE_LIMIT, PREALLOCATE_ABOVE, PREALLOCATE_MAX
from tests.support.proc import FdWatch
from tests.support.raw import (
    RawServer,
    http_response,
    keepalive_answering,
    raw_request,
    read_request,
)


def echo_answer(head: bytes, body: bytes) -> bytes:
    return http_response(msgpack.packb(msgpack.unpackb(body, raw=False), use_bin_type=True))


class CountingSocket(gevent.socket.socket):
    """A real gevent socket that records each write call and its size."""

    writes: list[tuple[str, int]]

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.writes = []
        CountingSocket.instances.append(self)

    instances: ClassVar[list[CountingSocket]] = []

    def send(self, data: Any, *args: Any, **kw: Any) -> int:
        n: int = super().send(data, *args, **kw)
        self.writes.append(("send", n))
        return n

    def sendall(self, data: Any, *args: Any, **kw: Any) -> None:
        self.writes.append(("sendall", len(data)))
        super().sendall(data, *args, **kw)

    def sendmsg(self, buffers: Any, *args: Any, **kw: Any) -> int:
        n: int = super().sendmsg(buffers, *args, **kw)
        self.writes.append(("sendmsg", n))
        return n


@pytest.fixture
def counting() -> type[CountingSocket]:
    CountingSocket.instances = []
    return CountingSocket


def counting_client(url: str, **kw: Any) -> Client:
    transport = GeventTransport(socket_factory=CountingSocket, **kw)
    return Client(url, transport=transport)


def test_small_body_is_one_send_and_one_segment(raw_server: Any, counting: Any) -> None:
    srv: RawServer = raw_server(keepalive_answering(echo_answer))
    with counting_client(srv.url) as client:
        for i in range(20):
            assert client.call("echo.echo", [i, "x" * 100]) == [i, "x" * 100]
        (sock,) = counting.instances
        assert [kind for kind, _ in sock.writes] == ["send"] * 20  # one send per call
        segs = srv.live_segments()
    assert segs == 20, f"{segs} data segments for 20 calls"


def test_one_mib_body_never_sends_the_head_alone(raw_server: Any, counting: Any) -> None:
    srv: RawServer = raw_server(keepalive_answering(lambda h, b: http_response(b"\xc0")))
    body = b"\x01" * (1024 * 1024)
    with counting_client(srv.url) as client:
        for _ in range(3):
            assert client.call("blob.put", body) is None
        (sock,) = counting.instances
        head, got = srv.requests[0]
        assert got == msgpack.packb(body, use_bin_type=True)
        # the first write of each request carries the head AND body bytes
        first_writes = []
        total = 0
        for kind, n in sock.writes:
            if total == 0:
                first_writes.append((kind, n))
            total += n
            if total >= len(head) + 4 + len(got):
                total = 0
        for kind, n in first_writes:
            assert kind == "sendmsg"
            assert n > len(head) + 4, "a write carried the head alone"


@pytest.mark.parametrize("size", [0, 1, COALESCE_LIMIT, COALESCE_LIMIT + 1, 300_000])
@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_bytes_like_bodies_arrive_intact(raw_server: Any, size: int, kind: Any) -> None:
    """Raw requests with every bytes-like body type go out whole (one write when small)."""
    srv: RawServer = raw_server(
        keepalive_answering(lambda h, b: http_response(b, content_type="x"))
    )
    transport = GeventTransport()
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    request = raw_request(srv.url, body=kind(payload))
    try:
        response = transport.send(request, Timeout().start())
    finally:
        transport.close()
    assert bytes(response.body) == payload


def test_chunked_iterable_body_head_rides_with_first_chunk(raw_server: Any, counting: Any) -> None:
    srv: RawServer = raw_server(
        keepalive_answering(lambda h, b: http_response(b, content_type="x"))
    )
    transport = GeventTransport(socket_factory=CountingSocket)
    chunks = [b"alpha", b"", b"beta" * 1000, b"gamma"]
    request = raw_request(srv.url, method="PUT", body=iter(chunks))
    try:
        response = transport.send(request, Timeout().start())
    finally:
        transport.close()
    assert bytes(response.body) == b"".join(chunks)
    head, _ = srv.requests[0]
    assert b"transfer-encoding: chunked" in head.lower()
    (sock,) = counting.instances
    # three non-empty chunks: the head with the first, the terminator with the last
    assert len(sock.writes) == 3
    assert sock.writes[0][1] > len(head)


def test_tcp_nodelay_is_set(raw_server: Any, counting: Any) -> None:
    srv: RawServer = raw_server(keepalive_answering(echo_answer))
    with counting_client(srv.url) as client:
        client.call("echo.echo", 1)
        (sock,) = counting.instances
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_no_stall_against_stock_pywsgi(wsgi_server: Any) -> None:
    """Stock pywsgi writes head and body apart with Nagle on; no 40 ms stalls."""

    def app(environ: Any, start_response: Any) -> Any:
        body = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "application/x-msgpack")])
        return [body]  # pywsgi adds Content-Length, then writes head and body apart

    url = wsgi_server(app)
    with Client(url) as client:
        client.call("echo.echo", 0)  # connect outside the measurement
        import time

        took = []
        for i in range(30):
            t0 = time.perf_counter()
            assert client.call("echo.echo", i) == i
            took.append(time.perf_counter() - t0)
    # A delayed-ACK stall costs >= 40 ms on every call, so the median call
    # would be >= 40 ms; unstalled ones take ~1 ms. The median (not the sum)
    # is used because a loaded machine preempting a few calls moves the sum,
    # not the median.
    median = sorted(took)[len(took) // 2]
    assert median < 0.02, f"median call {median * 1000:.1f} ms: delayed-ACK stalls"


def test_stale_keepalive_connection_is_replaced_without_resend(raw_server: Any) -> None:
    """The server closes idle connections after each answer: every call still
    succeeds, and the server sees each request exactly once."""

    def one_per_connection(sock: Any, server: RawServer) -> None:
        req = read_request(sock)
        if req is None:
            return
        server.requests.append(req)
        sock.sendall(echo_answer(*req))  # keep-alive answer, then close anyway

    srv: RawServer = raw_server(one_per_connection)
    with Client(srv.url) as client:
        for i in range(10):
            assert client.call("echo.echo", i) == i
            gevent.sleep(0.01)  # let the server's FIN arrive
    bodies = [msgpack.unpackb(b) for _, b in srv.requests]
    assert bodies == list(range(10))
    assert srv.connections == 10


def test_thousand_greenlets_over_pool_of_ten(raw_server: Any, no_fd_leak: FdWatch) -> None:
    srv: RawServer = raw_server(keepalive_answering(echo_answer))
    no_fd_leak.mark()
    client = Client(srv.url, pool_size=10, timeout=Timeout(pool=30, total=30))
    results: dict[int, Any] = {}

    def work(i: int) -> None:
        results[i] = client.call("echo.echo", {"i": i, "pad": "p" * (i % 50)})

    jobs = [gevent.spawn(work, i) for i in range(1000)]
    gevent.joinall(jobs, timeout=60, raise_error=True)
    assert all(results[i] == {"i": i, "pad": "p" * (i % 50)} for i in range(1000))
    stats = client.stats()["pools"]
    (pool,) = stats.values()
    assert pool["in_use"] == 0 and pool["waiting"] == 0
    assert pool["connections_created"] <= 10
    assert srv.connections <= 10
    client.close()
    gevent.sleep(0.05)


def test_pool_timeout_is_bounded_and_pool_recovers(raw_server: Any) -> None:
    release = gevent.event.Event()

    def slow(head: bytes, body: bytes) -> bytes:
        release.wait(5)
        return echo_answer(head, body)

    srv: RawServer = raw_server(keepalive_answering(slow))
    client = Client(srv.url, pool_size=2, timeout=Timeout(pool=0.1, total=5))
    busy = [gevent.spawn(client.call, "echo.echo", i) for i in range(2)]
    gevent.sleep(0.05)
    with pytest.raises(rpcclient.PoolTimeout) as info:
        client.call("echo.echo", 99)
    assert info.value.may_have_reached_server is False
    assert len(srv.requests) == 2  # the timed-out call never reached the server
    release.set()
    assert [g.get(timeout=5) for g in busy] == [0, 1]
    assert client.call("echo.echo", 3) == 3
    client.close()


def _blocking_server(raw_server: Any, phase: str) -> RawServer:
    """A server that stalls in a given phase of the exchange."""

    def handler(sock: Any, server: RawServer) -> None:
        buf = bytearray()
        while True:
            req = read_request(sock, buf)
            if req is None:
                return
            server.requests.append(req)
            value = msgpack.unpackb(req[1])
            # stalls last until the client closes its end (recv returns b"")
            if value == "stall-head":
                sock.recv(1)
                return
            elif value == "stall-body":
                answer = echo_answer(*req)
                sock.sendall(answer[:-2])
                sock.recv(1)
                return
            else:
                sock.sendall(echo_answer(*req))

    return raw_server(handler)


@pytest.mark.parametrize("stall", ["stall-head", "stall-body"])
@pytest.mark.parametrize("how", ["gevent.Timeout", "kill"])
def test_caller_timeout_and_kill_leave_pool_whole(
    raw_server: Any, stall: str, how: str, no_fd_leak: FdWatch
) -> None:
    srv = _blocking_server(raw_server, stall)
    no_fd_leak.mark()
    client = Client(srv.url, pool_size=1)
    assert client.call("echo.echo", "warm") == "warm"
    if how == "gevent.Timeout":
        mine = gevent.Timeout(0.1)
        with pytest.raises(gevent.Timeout) as info, mine:
            client.call("echo.echo", stall)
        assert info.value is mine  # unchanged, not mapped
    else:
        g = gevent.spawn(client.call, "echo.echo", stall)
        gevent.sleep(0.1)
        g.kill(block=True, timeout=2)
        assert isinstance(g.value, gevent.GreenletExit)
    (pool,) = client.stats()["pools"].values()
    assert pool["in_use"] == 0 and pool["idle"] == 0  # slot back, half-read socket gone
    # the next call gets its own answer on a new connection
    assert client.call("echo.echo", "next") == "next"
    assert srv.connections == 2
    client.close()
    gevent.sleep(0.05)


def test_read_timeout_is_our_error_and_discards_socket(raw_server: Any) -> None:
    srv = _blocking_server(raw_server, "stall-head")
    with Client(srv.url, timeout=Timeout(read=0.1)) as client:
        with pytest.raises(rpcclient.ReadTimeout) as info:
            client.call("echo.echo", "stall-head")
        assert info.value.may_have_reached_server is True
        assert "echo.echo" in str(info.value)
        assert client.call("echo.echo", 5) == 5
    assert srv.connections == 2


def test_idle_connections_expire(raw_server: Any) -> None:
    srv: RawServer = raw_server(keepalive_answering(echo_answer))
    with Client(srv.url, idle_timeout=0.05) as client:
        client.call("echo.echo", 1)
        client.call("echo.echo", 2)
        assert srv.connections == 1
        gevent.sleep(0.1)
        client.call("echo.echo", 3)
        assert srv.connections == 2


def test_connection_close_answer_is_not_reused(raw_server: Any) -> None:
    def closing(head: bytes, body: bytes) -> bytes:
        return http_response(body, headers=[("Connection", "close")])

    srv: RawServer = raw_server(keepalive_answering(closing))
    with Client(srv.url) as client:
        assert client.call("echo.echo", 1) == 1
        assert client.call("echo.echo", 2) == 2
    assert srv.connections == 2


def test_split_server_writes_are_read_whole(raw_server: Any) -> None:
    """An answer in several segments (head, then body in pieces) is joined."""

    def dribble(sock: Any, server: RawServer) -> None:
        buf = bytearray()
        while (req := read_request(sock, buf)) is not None:
            answer = echo_answer(*req)
            for i in range(0, len(answer), 7):
                sock.sendall(answer[i : i + 7])
                gevent.sleep(0.001)

    srv: RawServer = raw_server(dribble)
    with Client(srv.url) as client:
        assert client.call("echo.echo", {"k": "v" * 40}) == {"k": "v" * 40}


def test_closed_client_raises_before_io(raw_server: Any) -> None:
    srv: RawServer = raw_server(keepalive_answering(echo_answer))
    client = Client(srv.url)
    client.close()
    with pytest.raises(rpcclient.ClientClosed):
        client.call("echo.echo", 1)
    assert srv.connections == 0


def test_repr_shows_pool_state(raw_server: Any) -> None:
    srv: RawServer = raw_server(keepalive_answering(echo_answer))
    with Client(srv.url) as client:
        client.call("echo.echo", 1)
        text = repr(client)
    assert "in_use=0" in text and "idle=1" in text


def test_pool_is_first_come_first_served() -> None:
    """A released slot goes to the oldest waiter, not back to the releaser."""
    from rpcclient._transports.gevent.pool import Pool

    pool = Pool(1, idle_timeout=None, max_age=None)
    order: list[str] = []
    assert pool.acquire(None)

    def waiter(tag: str) -> None:
        assert pool.acquire(5)
        order.append(tag)
        gevent.sleep(0.01)
        pool.release()

    jobs = [gevent.spawn(waiter, t) for t in "abc"]
    gevent.sleep(0.01)
    assert pool.waiting == 3
    pool.release()
    # the releaser asks again at once: it must queue behind a, b and c
    assert not pool.acquire(0)
    assert pool.acquire(5)
    order.append("me")
    pool.release()
    gevent.joinall(jobs, raise_error=True)
    assert order == ["a", "b", "c", "me"]
    assert pool.in_use == 0 and pool.waiting == 0


def test_pool_waiter_killed_or_timed_out_leaves_no_hole() -> None:
    from rpcclient._transports.gevent.pool import Pool

    pool = Pool(1, idle_timeout=None, max_age=None)
    assert pool.acquire(None)
    assert not pool.acquire(0.01)  # timed out: leaves the queue
    job = gevent.spawn(pool.acquire, None)
    gevent.sleep(0.01)
    job.kill()
    assert pool.waiting == 0
    pool.release()
    assert pool.in_use == 0
    assert pool.acquire(0) and pool.in_use == 1


def test_no_pool_timeouts_under_sustained_contention(raw_server: Any) -> None:
    srv: RawServer = raw_server(keepalive_answering(echo_answer))
    client = Client(srv.url, pool_size=2, timeout=Timeout(pool=1.0, total=5))

    def work() -> None:
        for i in range(20):
            assert client.call("echo.echo", i) == i

    jobs = [gevent.spawn(work) for _ in range(40)]
    gevent.joinall(jobs, timeout=30)
    assert all(j.successful() for j in jobs), [j.exception for j in jobs if j.exception][:1]
    client.close()


def test_close_ends_the_idle_watchdog(raw_server: Any) -> None:
    srv: RawServer = raw_server(keepalive_answering(echo_answer))
    client = Client(srv.url, timeout=Timeout(read=30, total=30))
    client.call("echo.echo", 1)
    watchdog = client.transport._watchdog  # type: ignore[attr-defined]
    greenlet = watchdog._greenlet
    assert greenlet is not None  # sleeping until the 30 s expiry it knows
    client.close()
    gevent.sleep(0)
    assert greenlet.dead


# -- large answers: read past the parser, straight into their buffer -----------------------


@pytest.mark.parametrize("size", [PREALLOCATE_ABOVE + 1, 1 << 20, 3 * PREALLOCATE_MAX + 7])
def test_large_answers_arrive_whole_and_keep_the_connection(raw_server: Any, size: int) -> None:
    """Large and small answers alternate on one connection, each intact."""
    srv: RawServer = raw_server(keepalive_answering(echo_answer))
    blob = bytes(range(256)) * (size // 256)
    readers = []  # kept alive: identity, not a reused id()
    with Client(srv.url) as client:
        pool = None
        for i in range(3):
            assert client.call("echo.echo", blob) == blob
            assert client.call("echo.echo", i) == i  # on the same connection: a new parser
            pool = pool or next(iter(client.transport._pools.values()))
            readers.append(pool._idle[0].reader)
    assert srv.connections == 1
    assert len(srv.requests) == 6
    assert all(r is readers[0] for r in readers)  # one reader per connection, whatever its answers


def test_a_large_answer_in_pieces_is_read_whole(raw_server: Any) -> None:
    """Head alone, then the body in uneven pieces with pauses (each read is partial)."""

    def pieces(sock: Any, server: RawServer) -> None:
        buf = bytearray()
        while (req := read_request(sock, buf)) is not None:
            answer = echo_answer(*req)
            head_end = answer.index(b"\r\n\r\n") + 4
            sock.sendall(answer[:head_end])
            for start in range(head_end, len(answer), 70_001):
                gevent.sleep(0.002)
                sock.sendall(answer[start : start + 70_001])

    srv: RawServer = raw_server(pieces)
    blob = bytes(range(256)) * 2000  # 512,000 bytes
    with Client(srv.url) as client:
        assert client.call("echo.echo", blob) == blob
        assert client.call("echo.echo", "after") == "after"
    assert srv.connections == 1


@pytest.mark.parametrize(
    ("size", "one_read", "stray"),
    [
        (100, False, b"HTTP/1.1 200 OK\r\n"),
        (100, True, b"HTTP/1.1 200 OK\r\n"),  # the first read, inlined in read_response
        (100, True, b"\x00not http"),
        (PREALLOCATE_ABOVE * 2, False, b"HTTP/1.1 200 OK\r\n"),
    ],
)
def test_bytes_past_the_answer_end_the_connection(
    raw_server: Any, size: int, one_read: bool, stray: bytes
) -> None:
    """More than the Content-Length announced: the answer counts, the connection goes."""

    def overlong(sock: Any, server: RawServer) -> None:
        buf = bytearray()
        while (req := read_request(sock, buf)) is not None:
            server.requests.append(req)
            answer = echo_answer(*req)
            if one_read:
                sock.sendall(answer + stray)
                continue
            sock.sendall(answer[:-10])
            gevent.sleep(0.01)  # the tail and the stray bytes arrive together
            sock.sendall(answer[-10:] + stray)

    srv: RawServer = raw_server(overlong)
    blob = b"b" * size
    with Client(srv.url) as client:
        for _ in range(3):
            assert client.call("echo.echo", blob) == blob
    assert srv.connections == 3  # none reused after the stray bytes


def test_a_large_answer_cut_short_is_a_protocol_error(raw_server: Any) -> None:
    def cut(sock: Any, server: RawServer) -> None:
        req = read_request(sock)
        if req is not None:
            server.requests.append(req)
            answer = echo_answer(*req)
            sock.sendall(answer[: len(answer) // 2])

    srv: RawServer = raw_server(cut)
    blob = b"c" * (PREALLOCATE_ABOVE * 4)
    with Client(srv.url, retry=rpcclient.NO_RETRY) as client:
        with pytest.raises(rpcclient.ProtocolError, match="in the middle of the answer"):
            client.call("echo.echo", blob)
    assert len(srv.requests) == 1


def test_a_length_the_server_does_not_keep_costs_little_memory(raw_server: Any) -> None:
    """32 MiB announced, 10 bytes sent: the buffer grows with the bytes, not the claim."""

    def liar(sock: Any, server: RawServer) -> None:
        if read_request(sock) is not None:
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (32 << 20) + b"x" * 10)
            sock.recv(1)  # then nothing, until the client goes

    srv: RawServer = raw_server(liar)
    tracemalloc.start()
    try:
        with Client(srv.url, timeout=Timeout(read=0.2), retry=rpcclient.NO_RETRY) as client:
            with pytest.raises(rpcclient.ReadTimeout):
                client.call("echo.echo", 1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < PREALLOCATE_MAX * 4


@pytest.mark.parametrize(
    ("method", "status"),
    [("HEAD", "200 OK"), ("POST", "204 No Content"), ("POST", "304 Not Modified")],
)
def test_a_bodiless_answer_ignores_its_content_length(
    raw_server: Any, method: str, status: str
) -> None:
    """HEAD, 204 and 304 have no body whatever their Content-Length says.

    Not refused as too large (2 MB announced, max_response_size 1 MB), no
    body buffer sized from it, and the connection stays.
    """
    head = f"HTTP/1.1 {status}\r\nContent-Length: 2000000\r\n\r\n".encode()
    srv: RawServer = raw_server(keepalive_answering(lambda h, b: head))
    transport = GeventTransport(max_response_size=1_000_000)
    request = raw_request(srv.url, method=method)
    try:
        for _ in range(2):
            response = transport.send(request, Timeout().start())
            assert (response.status, bytes(response.body)) == (int(status[:3]), b"")
    finally:
        transport.close()
    assert srv.connections == 1


# -- handover: a released connection carries the next waiter's request ---------------------


@pytest.mark.parametrize(
    ("timeout", "pad"), [(Timeout(pool=30, total=30), 7), (None, 7), (Timeout(), 10_000)]
)
def test_contended_calls_go_out_on_released_connections(
    raw_server: Any, no_fd_leak: FdWatch, timeout: Timeout | None, pad: int
) -> None:
    """Waiters' requests are sent by the greenlet that frees a connection: one segment each."""
    srv: RawServer = raw_server(keepalive_answering(echo_answer))
    no_fd_leak.mark()
    client = Client(srv.url, pool_size=3, timeout=timeout)
    assert client.call("echo.echo", "warm") == "warm"
    before = srv.live_segments()
    results: dict[int, Any] = {}

    def work(i: int) -> None:
        results[i] = client.call("echo.echo", [i, "x" * (pad - i % 7)])

    gevent.joinall([gevent.spawn(work, i) for i in range(200)], timeout=30, raise_error=True)
    assert results == {i: [i, "x" * (pad - i % 7)] for i in range(200)}
    (pool,) = client.stats()["pools"].values()
    assert pool["handovers"] > 100
    assert pool["in_use"] == 0 and pool["waiting"] == 0
    assert srv.connections <= 3
    assert srv.live_segments() - before == 200
    client.close()
    gevent.sleep(0.05)


@pytest.mark.parametrize("how", ["kill", "gevent.Timeout", "read timeout"])
def test_a_call_ended_after_its_request_was_handed_over_leaves_the_pool_whole(
    raw_server: Any, how: str, no_fd_leak: FdWatch
) -> None:
    """The waiter's request is on the wire, its answer never comes: it ends cleanly."""
    first_in, let_first_go = gevent.event.Event(), gevent.event.Event()

    def handler(sock: Any, server: RawServer) -> None:
        buf = bytearray()
        while (req := read_request(sock, buf)) is not None:
            server.requests.append(req)
            value = msgpack.unpackb(req[1])
            if value == "first":
                first_in.set()
                let_first_go.wait(5)
            elif value == "second":
                sock.recv(1)  # never answers; returns when the client closes
                return
            sock.sendall(echo_answer(*req))

    srv: RawServer = raw_server(handler)
    no_fd_leak.mark()
    read = 0.3 if how == "read timeout" else 5.0
    client = Client(srv.url, pool_size=1, timeout=Timeout(read=read, pool=5, total=10))

    def second() -> Any:
        if how != "gevent.Timeout":
            return client.call("echo.echo", "second")
        mine = gevent.Timeout(0.3)
        try:
            with mine:
                client.call("echo.echo", "second")
        except gevent.Timeout as exc:
            return exc is mine  # unchanged, never mapped
        return None

    first = gevent.spawn(client.call, "echo.echo", "first")
    assert first_in.wait(5)
    waiting = gevent.spawn(second)
    gevent.sleep(0.05)  # queued, with its request offered
    let_first_go.set()
    assert first.get(timeout=5) == "first"
    with gevent.Timeout(5):
        while len(srv.requests) < 2:  # sent for it on the released connection
            gevent.sleep(0.01)
    (pool,) = client.stats()["pools"].values()
    assert pool["handovers"] == 1
    if how == "kill":
        waiting.kill(block=True, timeout=2)
        assert isinstance(waiting.value, gevent.GreenletExit)
    elif how == "gevent.Timeout":
        assert waiting.get(timeout=5) is True
    else:
        with pytest.raises(rpcclient.ReadTimeout) as info:
            waiting.get(timeout=5)
        assert info.value.may_have_reached_server is True
    (pool,) = client.stats()["pools"].values()
    assert pool["in_use"] == 0 and pool["idle"] == 0  # the connection owed an answer: gone
    assert client.call("echo.echo", "third") == "third"  # its own answer, on a new connection
    assert srv.connections == 2
    client.close()
    gevent.sleep(0.05)
