"""One conformance suite, run against every transport (the trio idea).

The same calls must give the same results, and the same faults the same
exception classes, whether the Client runs on gevent, requests or urllib3.
Each fault test also checks that the error is one of ours (no foreign
exception escapes unmapped) and what it says about reaching the server.
"""

from __future__ import annotations

import datetime
from typing import Any

import gevent
import msgpack
import pytest

import rpcclient
from rpcclient import Client, Timeout
from rpcclient import exceptions as E
from tests.support.raw import (
    RawServer,
    free_port,
    http_response,
    keepalive_answering,
    read_request,
    silent,
)
from tests.support.transports import TRANSPORTS, raises_ours


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def make(url: str, transport: str, **kw: Any) -> Client:
    return Client(url, transport=transport, **kw)


# -- results ------------------------------------------------------------------------

VALUES = [
    None,
    True,
    False,
    0,
    -1,
    2**63 - 1,
    -(2**63),
    2**64 - 1,
    1.5,
    -0.0,
    "",
    "text ünïcödé ✓",
    "x" * 70_000,
    b"",
    b"\x00\xff" * 40_000,
    [],
    [1, [2, [3, [4]]]],
    {},
    {"a": 1, "b": [True, None]},
    {1: "int key", -5: "neg", 2.5: "float key"},
    {b"bin": 1},
    msgpack.ExtType(42, b"ext"),
    msgpack.Timestamp(1_700_000_000, 5),
]


@pytest.mark.parametrize(
    "value", VALUES, ids=[type(v).__name__ + str(i) for i, v in enumerate(VALUES)]
)
def test_every_msgpack_type_round_trips(bundled_server: str, transport: str, value: Any) -> None:
    with make(bundled_server, transport) as client:
        assert client.call("echo.echo", [value]) == value


def test_tuples_come_back_as_lists(bundled_server: str, transport: str) -> None:
    with make(bundled_server, transport) as client:
        assert client.call("echo.echo", [(1, (2, 3))]) == [1, [2, 3]]


def test_datetime_codec_option(bundled_server: str, transport: str) -> None:
    codec = rpcclient.Codec(datetime=True, timestamp=3)
    when = datetime.datetime(2026, 11, 29, 6, 0, tzinfo=datetime.UTC)
    with make(bundled_server, transport, codec=codec) as client:
        assert client.call("echo.echo", [when]) == when


def test_kwargs_and_service_proxy(bundled_server: str, transport: str) -> None:
    with make(bundled_server, transport) as client:
        assert client.call("math.add", {"a": 2, "b": 3}) == 5
        assert client.service("math").add(4, 5) == 9


def test_remote_error(bundled_server: str, transport: str) -> None:
    with make(bundled_server, transport) as client:
        err = raises_ours(E.RemoteError, client.call, "debug.fail", ["boom"])
        assert isinstance(err, E.RemoteError) and not isinstance(err, E.MethodNotFound)
        assert err.type == "ValueError" and "boom" in err.remote_message
        assert err.status == 500 and err.may_have_reached_server
        # the connection stays usable
        assert client.call("math.add", [1, 1]) == 2


def test_unknown_method(bundled_server: str, transport: str) -> None:
    with make(bundled_server, transport) as client:
        err = raises_ours(E.MethodNotFound, client.call, "math.nope", [])
        assert isinstance(err, E.MethodNotFound) and err.status == 404


# -- faults ---------------------------------------------------------------------------


def test_non_msgpack_502(raw_server: Any, transport: str) -> None:
    page = b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
    srv: RawServer = raw_server(
        keepalive_answering(
            lambda h, b: http_response(page, "502 Bad Gateway", content_type="text/html")
        )
    )
    with make(srv.url, transport) as client:
        err = raises_ours(E.HTTPStatusError, client.call, "a.b", 1)
        assert isinstance(err, E.HTTPStatusError)
        assert err.status == 502 and "502 Bad Gateway" in err.snippet


def test_connection_refused(transport: str) -> None:
    with make(f"http://127.0.0.1:{free_port()}", transport) as client:
        err = raises_ours(E.ConnectError, client.call, "a.b", 1)
        assert not isinstance(err, E.ConnectTimeout)
        assert err.may_have_reached_server is False


def test_connect_timeout(full_listener: str, transport: str) -> None:
    with make(full_listener, transport, timeout=Timeout(connect=0.2, total=5)) as client:
        err = raises_ours(E.ConnectTimeout, client.call, "a.b", 1)
        assert err.may_have_reached_server is False


def test_read_timeout(raw_server: Any, transport: str) -> None:
    srv: RawServer = raw_server(silent)
    with make(srv.url, transport, timeout=Timeout(read=0.2, total=5)) as client:
        err = raises_ours(E.ReadTimeout, client.call, "a.b", 1)
        assert err.may_have_reached_server is True
    assert len(srv.requests) == 1  # sent once, never re-sent


def test_total_deadline_stops_a_slow_drip(raw_server: Any, transport: str) -> None:
    def drip(sock: Any, server: RawServer) -> None:
        if read_request(sock) is None:
            return
        answer = http_response(b"\xc0" * 0 + msgpack.packb("x" * 200))
        for byte in answer:
            sock.sendall(bytes([byte]))
            gevent.sleep(0.02)

    srv: RawServer = raw_server(drip)
    timeout = Timeout(read=0.5, total=0.5)
    with make(srv.url, transport, timeout=timeout) as client:
        t0 = gevent.get_hub().loop.now()
        raises_ours(E.ReadTimeout, client.call, "a.b", 1)
        gevent.get_hub().loop.update_now()
        assert gevent.get_hub().loop.now() - t0 < 2.0


def test_server_closes_before_answering(raw_server: Any, transport: str) -> None:
    def close_after_read(sock: Any, server: RawServer) -> None:
        req = read_request(sock)
        if req is not None:
            server.requests.append(req)

    srv: RawServer = raw_server(close_after_read)
    with make(srv.url, transport) as client:
        err = raises_ours(E.ConnectionLost, client.call, "a.b", 1)
        assert err.may_have_reached_server is True
    assert len(srv.requests) == 1  # ran once, not retried


def test_truncated_body(raw_server: Any, transport: str) -> None:
    def truncate(sock: Any, server: RawServer) -> None:
        if read_request(sock) is not None:
            sock.sendall(http_response(msgpack.packb("y" * 100))[:-40])

    srv: RawServer = raw_server(truncate)
    with make(srv.url, transport) as client:
        raises_ours(E.ProtocolError, client.call, "a.b", 1)


@pytest.mark.parametrize(
    "status_line",
    [b"HTTX/1.1 200 OK", b"HTTP/1.1 abc OK", b"garbage", b"HTTP/1.1 200 OK\r\nBad Header Line"],
)
def test_malformed_status_line(raw_server: Any, transport: str, status_line: bytes) -> None:
    def bad(sock: Any, server: RawServer) -> None:
        if read_request(sock) is not None:
            sock.sendall(status_line + b"\r\nContent-Length: 1\r\n\r\n\xc0")

    srv: RawServer = raw_server(bad)
    with make(srv.url, transport) as client:
        raises_ours(E.ProtocolError, client.call, "a.b", 1)


def test_response_over_size_limit(raw_server: Any, transport: str) -> None:
    big = msgpack.packb(b"z" * 10_000)
    srv: RawServer = raw_server(keepalive_answering(lambda h, b: http_response(big)))
    with make(srv.url, transport, max_response_size=1000) as client:
        err = raises_ours(E.ResponseTooLarge, client.call, "a.b", 1)
        assert err.may_have_reached_server is True


def test_response_over_size_limit_without_length(raw_server: Any, transport: str) -> None:
    big = msgpack.packb(b"z" * 10_000)

    def close_framed(sock: Any, server: RawServer) -> None:
        if read_request(sock) is not None:
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-msgpack\r\n\r\n" + big)

    srv: RawServer = raw_server(close_framed)
    with make(srv.url, transport, max_response_size=1000) as client:
        raises_ours(E.ResponseTooLarge, client.call, "a.b", 1)


def test_pool_timeout(raw_server: Any, transport: str) -> None:
    srv: RawServer = raw_server(silent)
    client = make(srv.url, transport, pool_size=1, timeout=Timeout(pool=0.1, read=5, total=5))
    busy = gevent.spawn(client.call, "a.b", 1)
    gevent.sleep(0.1)
    try:
        err = raises_ours(E.PoolTimeout, client.call, "a.b", 2)
        assert err.may_have_reached_server is False
        assert len(srv.requests) == 1
    finally:
        busy.kill()
        client.close()


def test_caller_timeout_propagates_unchanged(raw_server: Any, transport: str) -> None:
    srv: RawServer = raw_server(silent)
    with make(srv.url, transport) as client:
        mine = gevent.Timeout(0.2)
        with pytest.raises(gevent.Timeout) as info:
            with mine:
                client.call("a.b", 1)
        assert info.value is mine


def test_bad_input_is_refused_before_any_connection(raw_server: Any, transport: str) -> None:
    srv: RawServer = raw_server(keepalive_answering(lambda h, b: http_response(b"\xc0")))
    with make(srv.url, transport) as client:
        raises_ours(E.InvalidRequest, client.call, "a.b\r\nX: y", 1)
        raises_ours(E.InvalidRequest, client.call, "a.b", 1, headers={"X": "a\nb"})
        raises_ours(E.InvalidRequest, client.call, "a.b", object())
    assert srv.connections == 0


def test_same_answers_for_the_same_garbage(raw_server: Any) -> None:
    """Every transport raises the same class for the same broken answer."""
    answers = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n\xc1\xc1",
        b"\x00\x01\x02",
    ]
    for answer in answers:

        def handler(sock: Any, server: RawServer, answer: bytes = answer) -> None:
            if read_request(sock) is not None:
                sock.sendall(answer)

        srv: RawServer = raw_server(handler)
        classes = set()
        for transport in TRANSPORTS:
            with make(srv.url, transport) as client:
                classes.add(type(raises_ours(E.RPCError, client.call, "a.b", 1)))
        assert len(classes) == 1, f"{answer!r}: {classes}"
