"""What the gevent transport's reader refuses, and what it bounds (issue 12, items 1-3, 10).

Never a wrong answer: a pooled connection is reused only when provably idle
(no byte after the answer, not closed by the peer), an answer whose
``X-Request-Id`` is another request's is refused, and the keep-alive
verdict of a large answer after a ``1xx`` is the final answer's own. Every
read loop honours the deadline and lets other greenlets run whatever a fast
peer sends; every limit bounds memory, not only bytes on the wire.
Flood servers run in their own process (:mod:`tests.hostile.peer`), so that
they keep sending while the client parses.
"""

from __future__ import annotations

import socket
import time
from typing import Any

import gevent
import msgpack
import pytest

import rpcclient
from rpcclient import Client, Timeout

from .conftest import RawServer, http_response, keepalive_answering, read_request
from .hostile.peer import Peer, Ticker


def _id_of(head: bytes) -> str:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"x-request-id":
            return value.strip().decode()
    return ""


def echoing(head: bytes, body: bytes) -> bytes:
    """The argument back, with the request's id echoed (as the bundled server does)."""
    return http_response(body, headers=[("X-Request-Id", _id_of(head))])


# -- item 1: never a wrong answer ---------------------------------------------------


def test_stray_bytes_on_an_idle_connection_are_never_an_answer(raw_server: Any) -> None:
    """An answer that arrives after the call's own (a late duplicate) ends the connection."""

    def handler(sock: Any, server: RawServer) -> None:
        buf = bytearray()
        while (req := read_request(sock, buf)) is not None:
            sock.sendall(http_response(req[1]))
            gevent.sleep(0.01)
            sock.sendall(http_response(req[1]))  # the same answer again, late

    srv = raw_server(handler)
    with Client(srv.url) as client:
        for i in range(5):
            assert client.call("echo.echo", i) == i
            gevent.sleep(0.05)  # the duplicate is in the socket now
    assert srv.connections == 5


def test_a_fin_on_an_idle_connection_ends_it(raw_server: Any) -> None:
    def handler(sock: Any, server: RawServer) -> None:
        req = read_request(sock)
        assert req is not None
        sock.sendall(http_response(req[1]))
        sock.shutdown(socket.SHUT_WR)
        sock.recv(1)

    srv = raw_server(handler)
    with Client(srv.url) as client:
        for i in range(3):
            assert client.call("echo.echo", i) == i
            gevent.sleep(0.02)
    assert srv.connections == 3


def test_another_requests_id_is_refused_and_the_connection_dropped(raw_server: Any) -> None:
    def answer(head: bytes, body: bytes) -> bytes:
        return http_response(body, headers=[("X-Request-Id", "someone-else")])

    srv = raw_server(keepalive_answering(answer))
    with Client(srv.url) as client:
        for _ in range(2):
            with pytest.raises(rpcclient.ProtocolError, match="X-Request-Id"):
                client.call("echo.echo", 1, request_id="mine-1")
        assert client.call("echo.echo", 2, request_id="someone-else") == 2
    assert srv.connections == 3


def test_an_echoed_id_that_matches_keeps_the_connection(raw_server: Any) -> None:
    srv = raw_server(keepalive_answering(echoing))
    with Client(srv.url) as client:
        for i in range(10):
            assert client.call("echo.echo", i) == i
    assert srv.connections == 1


def test_a_close_answer_above_64k_after_a_1xx_is_not_reused(raw_server: Any) -> None:
    big = msgpack.packb(b"x" * 100_000)

    def answer(head: bytes, body: bytes) -> bytes:
        return b"HTTP/1.1 100 Continue\r\n\r\n" + http_response(
            big, headers=[("Connection", "close")]
        )

    srv = raw_server(keepalive_answering(answer))  # keeps the connection open anyway
    with Client(srv.url) as client:
        for _ in range(3):
            assert client.call("echo.echo", 1) == b"x" * 100_000
    assert srv.connections == 3


def test_late_duplicates_never_return_another_calls_result() -> None:
    """The issue's scenario: answers re-sent 0.5-3 ms late on one connection."""
    with Peer() as peer, Client(peer.url, timeout=2.0) as client:
        wrong = ok = 0
        for i in range(300):
            try:
                got = client.call("echo.echo", i, headers={"X-Case": "late-duplicate"})
            except rpcclient.ProtocolError:
                continue
            if got == i:
                ok += 1
            else:
                wrong += 1
        assert wrong == 0
        assert ok > 100  # most calls still succeed


# -- item 2: every read loop yields and honours the deadline ----------------------------

FLOODS = {
    "1xx": (b"", b"HTTP/1.1 100 Continue\r\n\r\n"),
    "1xx-with-headers": (b"", b"HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\n"),
    "chunk-extension": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;x=",
        b"a" * 4096,
    ),
    "one-byte-chunks": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"1\r\nx\r\n" * 1024,
    ),
    "header-drip-fast": (b"HTTP/1.1 200 OK\r\n", b"X-A: b\r\n" * 512),
    "eof-framed-body": (b"HTTP/1.1 200 OK\r\n\r\n", b"\x00" * 65536),
}


@pytest.mark.parametrize("flood", sorted(FLOODS))
def test_a_fast_flood_ends_by_the_deadline_and_starves_nobody(flood: str) -> None:
    prefix, unit = FLOODS[flood]
    with (
        Peer() as peer,
        Client(peer.url, timeout=Timeout(total=0.5), max_response_size=1 << 40) as client,
    ):
        ticker = Ticker()
        started = time.monotonic()
        with pytest.raises((rpcclient.ReadTimeout, rpcclient.ProtocolError)):
            client.call("echo.echo", 1, headers=peer.flood(prefix, unit))
        late = time.monotonic() - started - 0.5
        gap = ticker.stop()
        assert late < 0.05, f"{late * 1000:.0f} ms past the deadline"
        assert gap < 0.05, f"another greenlet waited {gap * 1000:.0f} ms"


def test_interim_answers_are_counted_and_bounded(raw_server: Any) -> None:
    def answer(head: bytes, body: bytes) -> bytes:
        return b"HTTP/1.1 102 Processing\r\n\r\n" * 1000 + http_response(body)

    srv = raw_server(keepalive_answering(answer))
    with Client(srv.url) as client, pytest.raises(rpcclient.ProtocolError, match="1xx"):
        client.call("echo.echo", 1)


def test_a_few_interim_answers_are_fine(raw_server: Any) -> None:
    def answer(head: bytes, body: bytes) -> bytes:
        return (
            b"HTTP/1.1 100 Continue\r\n\r\n"
            + b"HTTP/1.1 103 Early\r\nLink: x\r\n\r\n" * 3
            + (http_response(body))
        )

    srv = raw_server(keepalive_answering(answer))
    with Client(srv.url) as client:
        assert [client.call("echo.echo", i) for i in range(3)] == [0, 1, 2]
    assert srv.connections == 1
