"""The requests and urllib3 transports, directly: what the conformance suite does not cover.

Round trips and remote errors through ``Client(url, transport=...)``; the
bounds our layer adds to theirs (pool wait, idle and age limits, the read
bound in an unpatched process); connection reuse and capacity coming back;
the raw seam (chunked bodies, repeated headers); TLS options; fork.
"""

from __future__ import annotations

import http.client
import ssl
import textwrap
from collections.abc import Iterator
from typing import Any

import gevent
import pytest
import trustme

import rpcclient
from rpcclient import Client, Timeout
from rpcclient import exceptions as E
from rpcclient._transports.blocking.common import EndpointSlots
from rpcclient._transports.blocking.exchange import Exchange, map_foreign_error
from tests.support.proc import run_python
from tests.support.raw import (
    RawServer,
    echo,
    http_response,
    keepalive_answering,
    raw_request,
    read_request,
    silent,
)

TRANSPORTS = ["requests", "urllib3"]


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_round_trip_and_remote_error(bundled_server: str, transport: str) -> None:
    with Client(bundled_server, transport=transport) as client:
        assert client.transport.name == transport
        assert client.call("math.add", [2, 3]) == 5
        with pytest.raises(E.RemoteError) as info:
            client.call("debug.fail", ["boom"])
        assert info.value.type == "ValueError" and info.value.status == 500
        assert client.service("echo").echo({"k": [1, b"\x00"]}) == {"k": [1, b"\x00"]}


def test_connections_are_reused_and_capacity_comes_back(raw_server: Any, transport: str) -> None:
    srv: RawServer = raw_server(keepalive_answering(echo))
    with Client(srv.url, transport=transport, pool_size=3) as client:
        for i in range(5):
            assert client.call("a.b", [i]) == [i]
        jobs = [gevent.spawn(client.call, "a.b", i) for i in range(6)]
        gevent.joinall(jobs, raise_error=True)
        assert sorted(j.value for j in jobs) == list(range(6))
        (pool,) = client.transport.stats()["pools"].values()
        assert pool == {"size": 3, "in_use": 0}
        assert "in_use" in repr(client.transport)
    assert srv.connections <= 3


def test_pool_timeout_and_slot_given_back(raw_server: Any, transport: str) -> None:
    srv: RawServer = raw_server(silent)
    timeout = Timeout(pool=0.1, read=0.5, total=5)
    with Client(srv.url, transport=transport, pool_size=1, timeout=timeout) as client:
        busy = gevent.spawn(client.call, "a.b", 1)
        gevent.sleep(0.05)
        with pytest.raises(E.PoolTimeout) as info:
            client.call("a.b", 2)
        assert info.value.may_have_reached_server is False
        with pytest.raises(E.ReadTimeout):
            busy.get()
        (pool,) = client.transport.stats()["pools"].values()
        assert pool["in_use"] == 0
    assert len(srv.requests) == 1


@pytest.mark.parametrize("option", ["idle_timeout", "max_connection_age"])
def test_idle_and_old_connections_are_not_reused(
    raw_server: Any, transport: str, option: str
) -> None:
    srv: RawServer = raw_server(keepalive_answering(echo))
    options: dict[str, Any] = {option: 0.1}
    with Client(srv.url, transport=transport, **options) as client:
        assert client.call("a.b", 1) == 1
        assert client.call("a.b", 2) == 2
        assert srv.connections == 1
        gevent.sleep(0.2)
        assert client.call("a.b", 3) == 3
        assert srv.connections == 2


def test_closed_transport_refuses(raw_server: Any, transport: str) -> None:
    srv: RawServer = raw_server(keepalive_answering(echo))
    client = Client(srv.url, transport=transport)
    assert client.call("a.b", 1) == 1
    client.transport.close()
    client.transport.close()  # idempotent
    with pytest.raises(E.ClientClosed):
        client.call("a.b", 1)
    client.close()


def _send(transport: rpcclient.Transport, url: str, body: Any) -> rpcclient.Response:
    request = raw_request(url, target="/raw?x=1", body=body, headers=[(b"X-Test", b"yes")])
    return transport.send(request, Timeout().start())


def test_raw_seam_chunked_body_and_repeated_headers(raw_server: Any, transport: str) -> None:
    def answer(head: bytes, body: bytes) -> bytes:
        return http_response(body, headers=[("X-Dup", "a"), ("X-Dup", "b")])

    srv: RawServer = raw_server(keepalive_answering(answer))
    client = Client(srv.url, transport=transport)
    try:
        response = _send(client.transport, srv.url, (c for c in [b"one-", b"two"]))
        assert response.status == 200 and response.reason == "OK"
        assert bytes(response.body) == b"one-two"
        assert response.headers.get_all("x-dup") == ["a", "b"]
        assert response.http_version == "1.1"
        head = srv.requests[0][0].lower()
        assert b"transfer-encoding: chunked" in head and b"x-test: yes" in head
        assert head.startswith(b"post /raw?x=1 http/1.1")
    finally:
        client.close()


def test_foreign_errors_never_escape_the_edge(transport: str) -> None:
    """Any foreign exception becomes ours; ours and BaseExceptions pass as they are."""
    request = raw_request("http://127.0.0.1:1", target="/", name="a.b")
    ex = Exchange(Timeout().start())
    for foreign in [RuntimeError("x"), KeyError("k"), OSError(5, "io")]:
        assert isinstance(map_foreign_error(foreign, ex, request), E.ConnectError)
    ex.phase = "read"
    for foreign in [RuntimeError("x"), KeyError("k")]:
        assert type(map_foreign_error(foreign, ex, request)) is E.ProtocolError
    assert type(map_foreign_error(OSError(5, "io"), ex, request)) is E.ConnectionLost
    ours = E.ReadTimeout("mine")
    assert map_foreign_error(ours, ex, request) is ours
    kill = gevent.GreenletExit()
    assert map_foreign_error(kill, ex, request) is kill


def test_a_failed_first_write_means_not_sent() -> None:
    """A stale keep-alive connection whose first write fails: the request never left."""
    request = raw_request("http://127.0.0.1:1", target="/", name="a.b")
    closed = http.client.RemoteDisconnected("Remote end closed connection without response")
    ex = Exchange(Timeout(connect=None, read=None, pool=None, total=None).start())
    ex.before_write()
    ex.after_write(False)  # urllib3 swallows the BrokenPipeError and reads the answer
    err = map_foreign_error(closed, ex, request)
    assert type(err) is E.ConnectionLost and err.may_have_reached_server is False
    ex = Exchange(Timeout(connect=None, read=None, pool=None, total=None).start())
    ex.before_write()
    ex.after_write(True)
    ex.after_write(False)
    err = map_foreign_error(closed, ex, request)
    assert type(err) is E.ConnectionLost and err.may_have_reached_server is True


def test_endpoint_slots_bound_the_wait() -> None:
    slots = EndpointSlots(1)
    key = ("http", "h", 1)
    assert slots.acquire(key, 0)
    assert not slots.acquire(key, 0)
    assert not slots.acquire(key, 0.01)
    assert slots.stats() == {"http://h:1": {"size": 1, "in_use": 1}}
    slots.release(key)
    assert slots.in_use(key) == 0


# -- TLS ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_server(raw_server: Any, ca: trustme.CA) -> Iterator[RawServer]:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    yield raw_server(keepalive_answering(echo), ssl_context=ctx)


def test_tls_custom_ca_and_verification(
    tls_server: RawServer, ca: trustme.CA, tmp_path: Any, transport: str
) -> None:
    ca_file = str(tmp_path / "ca.pem")
    ca.cert_pem.write_to_path(ca_file)
    with Client(tls_server.url, transport=transport, ca_certs=ca_file) as client:
        for i in range(3):
            assert client.call("a.b", [i, "tls"]) == [i, "tls"]
    assert tls_server.connections == 1
    with Client(tls_server.url, transport=transport) as client:
        with pytest.raises(E.ConnectError) as info:
            client.call("a.b", 1)
        assert info.value.may_have_reached_server is False
    assert len(tls_server.requests) == 3


# -- without monkey-patching -----------------------------------------------------------

UNPATCHED = textwrap.dedent(
    """
    import sys
    import gevent.monkey
    from rpcclient import Client, Timeout, ReadTimeout

    assert not gevent.monkey.is_module_patched("socket")
    echo_url, silent_url, transport = sys.argv[1:4]
    with Client(echo_url, transport=transport) as client:
        assert client.call("a.b", [1, "x"]) == [1, "x"]
    with Client(silent_url, transport=transport, timeout=Timeout(read=0.3, total=5)) as client:
        try:
            client.call("a.b", 1)
        except ReadTimeout:
            print("read timeout")
    print("ok")
    """
)


def test_unpatched_process_keeps_socket_level_bounds(raw_server: Any, transport: str) -> None:
    echo_srv: RawServer = raw_server(keepalive_answering(echo))
    silent_srv: RawServer = raw_server(silent)
    result = run_python(UNPATCHED, echo_srv.url, silent_srv.url, transport)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["read", "timeout", "ok"]


# -- fork --------------------------------------------------------------------------------


def test_a_pool_pushed_out_by_other_endpoints_closes_its_sockets(
    raw_server: Any, transport: str
) -> None:
    """pool_connections=1: the second endpoint's pool pushes the first one out.

    urllib3 forgets such a pool and its finalizer closes the pool's sockets
    when the pool object goes; our own pool tracking must not keep it alive
    (this fails if PoolFamily holds its pools strongly).
    """
    from rpcclient._transports.blocking.requests import RequestsTransport
    from rpcclient._transports.blocking.urllib3 import Urllib3Transport

    first: RawServer = raw_server(keepalive_answering(echo))
    second: RawServer = raw_server(keepalive_answering(echo))
    kind = {"requests": RequestsTransport, "urllib3": Urllib3Transport}[transport]
    with Client({"a": first.url, "b": second.url}, transport=kind(pool_connections=1)) as client:
        assert client.call("a.echo", 1) == 1
        assert client.call("b.echo", 2) == 2  # the pool of "a" is pushed out here
        with gevent.Timeout(5):
            while first._socks:  # its handler ends when the client's socket closes
                gevent.sleep(0.01)
        assert client.call("a.echo", 3) == 3  # and comes back on a new connection
    assert first.connections == 2


# -- interim (1xx) answers ----------------------------------------------------------------


def _interim_then(interims: bytes) -> Any:
    """Each request is answered by ``interims`` and then its echo."""

    def answer(head: bytes, body: bytes) -> bytes:
        return interims + http_response(body)

    return keepalive_answering(answer)


@pytest.mark.parametrize(
    "interims",
    [
        b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n",
        b"HTTP/1.1 102 Processing\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\n" * 3,
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
        b"HTTP/1.1 199 Whatever\r\nX-A: 1\r\n\r\n",
    ],
    ids=["103", "102", "100x3", "mixed"],
)
def test_interim_answers_are_skipped(raw_server: Any, transport: str, interims: bytes) -> None:
    """A 1xx is never the answer; the next call never gets the previous call's answer."""
    srv: RawServer = raw_server(_interim_then(interims))
    with Client(srv.url, transport=transport) as client:
        for i in range(4):
            assert client.call("a.b", [i]) == [i]
    assert srv.connections == 1 and len(srv.requests) == 4


def test_endless_interim_answers_are_refused(raw_server: Any, transport: str) -> None:
    """A flood of 1xx ends in a bounded count: ProtocolError, the connection dropped."""
    srv: RawServer = raw_server(_interim_then(b"HTTP/1.1 103 Early Hints\r\n\r\n" * 1000))
    with Client(srv.url, transport=transport, timeout=Timeout(total=5)) as client:
        with pytest.raises(E.ProtocolError):
            client.call("a.b", 1)
        (pool,) = client.transport.stats()["pools"].values()
        assert pool["in_use"] == 0
    with gevent.Timeout(5):
        while srv._socks:  # the client dropped the connection
            gevent.sleep(0.01)


def test_switching_protocols_unasked_drops_the_connection(raw_server: Any, transport: str) -> None:
    srv: RawServer = raw_server(_interim_then(b"HTTP/1.1 101 Switching Protocols\r\n\r\n"))
    with Client(srv.url, transport=transport, timeout=Timeout(total=5)) as client:
        with pytest.raises(E.ProtocolError):
            client.call("a.b", 1)
        with pytest.raises(E.ProtocolError):
            client.call("a.b", 2)
    assert srv.connections == 2


# -- first come, first served ---------------------------------------------------------------


def test_endpoint_slots_are_first_come_first_served() -> None:
    """A released slot goes to the oldest waiter, not back to the releaser."""
    slots = EndpointSlots(1)
    key = ("http", "h", 1)
    order: list[str] = []
    assert slots.acquire(key, None)

    def waiter(tag: str) -> None:
        assert slots.acquire(key, 5)
        order.append(tag)
        gevent.sleep(0.01)
        slots.release(key)

    jobs = [gevent.spawn(waiter, t) for t in "abc"]
    gevent.sleep(0.01)
    slots.release(key)
    assert not slots.acquire(key, 0)  # the releaser queues behind a, b and c
    assert slots.acquire(key, 5)
    order.append("me")
    slots.release(key)
    gevent.joinall(jobs, raise_error=True)
    assert order == ["a", "b", "c", "me"]
    assert slots.in_use(key) == 0


def test_no_pool_timeouts_with_fifty_greenlets_on_ten_connections(
    raw_server: Any, transport: str
) -> None:
    """50 greenlets, 10 connections, a healthy 5 ms server, total=1.0: no PoolTimeout."""

    def slow_echo(sock: Any, server: RawServer) -> None:
        buf = bytearray()
        while True:
            req = read_request(sock, buf)
            if req is None:
                return
            gevent.sleep(0.005)
            sock.sendall(echo(*req))

    srv: RawServer = raw_server(slow_echo)
    errors: list[BaseException] = []
    with Client(srv.url, transport=transport, pool_size=10, timeout=Timeout(total=1.0)) as client:

        def work() -> None:
            for i in range(30):
                try:
                    assert client.call("a.b", i) == i
                except E.RPCError as exc:
                    errors.append(exc)

        jobs = [gevent.spawn(work) for _ in range(50)]
        gevent.joinall(jobs, timeout=60, raise_error=True)
    pool_timeouts = [e for e in errors if isinstance(e, E.PoolTimeout)]
    assert not pool_timeouts, f"{len(pool_timeouts)} PoolTimeouts of 1500 calls"
    assert not errors, errors[:3]


# -- Accept-Encoding ---------------------------------------------------------------------


def test_accept_encoding_only_as_the_caller_asks(raw_server: Any, transport: str) -> None:
    """No Accept-Encoding unless the caller sets one (as the gevent transport);
    a caller's ``gzip`` goes out as written and a gzip answer is decoded."""
    import gzip

    def answer(head: bytes, body: bytes) -> bytes:
        if b"accept-encoding: gzip" in head.lower():
            return http_response(gzip.compress(body), headers=[("Content-Encoding", "gzip")])
        return http_response(body)

    srv: RawServer = raw_server(keepalive_answering(answer))
    with Client(srv.url, transport=transport) as client:
        assert client.call("a.b", [1]) == [1]
        assert client.call("a.b", [2], headers={"Accept-Encoding": "gzip"}) == [2]
    first, second = (head.lower() for head, _ in srv.requests)
    assert b"accept-encoding" not in first
    assert second.count(b"accept-encoding") == 1 and b"accept-encoding: gzip\r\n" in second
