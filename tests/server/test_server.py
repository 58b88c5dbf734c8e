"""The bundled server (rpcclient.server, rpcclient.server._engine.wsgi) over real sockets.

Every test talks raw HTTP/1.1 to a server on 127.0.0.1, port 0, through
gevent sockets with a timeout (cooperative whether or not the process is
monkey-patched), so what is asserted is exactly what went over the wire.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import gevent
import gevent.event
import gevent.socket
import gevent.subprocess
import msgpack
import pytest
from gevent import pywsgi

from rpcclient._tools import cli as _cli
from rpcclient._transports.tcpinfo import data_segs_in
from rpcclient.server import RPCApp, current_deadline, serve
from rpcclient.server._engine.wsgi import COALESCE_LIMIT, RPCHandler, RPCServer
from tests.support.rawhttp import IO_TIMEOUT, REPO, Conn, Reply, post

pytestmark = pytest.mark.timeout(60)


def chunked(path: str, body: bytes, pieces: int = 3) -> bytes:
    size = max(1, len(body) // pieces)
    parts = [body[i : i + size] for i in range(0, len(body), size)]
    framed = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
    head = post(path, headers={"Transfer-Encoding": "chunked"}, length=-1)
    return head + framed


def wait_until(predicate: Callable[[], bool], timeout: float = IO_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        gevent.sleep(0.005)


# -- the app and server under test --------------------------------------------------


class Probe:
    """State the test handlers share with the tests."""

    def __init__(self) -> None:
        self.runs: dict[str, int] = {}
        self.release = gevent.event.Event()

    def ran(self, name: str) -> None:
        self.runs[name] = self.runs.get(name, 0) + 1


class DataError(Exception):
    def __init__(self, message: str, data: Any) -> None:
        super().__init__(message)
        self.data = data


class Hidden:
    def visible(self) -> str:
        return "visible"

    def _hidden(self) -> str:
        return "hidden"

    attribute = 42  # not callable: not served


def build_app(probe: Probe, **kw: Any) -> RPCApp:
    app = RPCApp(**kw)

    @app.register("t.echo")
    def echo(value: Any) -> Any:
        return value

    @app.register("t.pair")
    def pair(a: Any, b: Any = "default") -> list[Any]:
        probe.ran("t.pair")
        return [a, b]

    @app.register("t.nothing")
    def nothing() -> str:
        return "called with nothing"

    @app.register("t.kinds")
    def kinds(*args: Any, **kwargs: Any) -> dict[str, Any]:
        return {"args": list(args), "kwargs": kwargs}

    @app.register("t.inner_type_error")
    def inner_type_error() -> None:
        probe.ran("t.inner_type_error")
        raise TypeError("raised inside the handler")

    @app.register("t.fail")
    def fail(message: str) -> None:
        raise ValueError(message)

    @app.register("t.fail_with_data")
    def fail_with_data(data: Any) -> None:
        raise DataError("with data", data)

    @app.register("t.fail_with_unpackable_data")
    def fail_with_unpackable_data() -> None:
        raise DataError("with bad data", object())

    @app.register("t.unpackable")
    def unpackable() -> object:
        return object()

    @app.register("t.deadline")
    def deadline() -> float | None:
        when = current_deadline()
        return None if when is None else (when - time.monotonic()) * 1000.0

    @app.register("t.block")
    def block() -> str:
        probe.ran("t.block")
        probe.release.wait(IO_TIMEOUT)
        return "released"

    @app.register("t.large")
    def large(n: int) -> bytes:
        return b"x" * n

    app.register("t.dotted.name", lambda: "dotted")
    app.add_service("hide", Hidden())
    return app


@pytest.fixture
def probe() -> Probe:
    return Probe()


@pytest.fixture
def start(probe: Probe) -> Iterator[Callable[..., RPCServer]]:
    """``start(**app_kw)`` -> a started server on 127.0.0.1:0 with the test app."""
    servers: list[RPCServer] = []

    def _start(*, handler_class: Any = None, **app_kw: Any) -> RPCServer:
        app = build_app(probe, **app_kw)
        if handler_class is None:
            server = serve(app, "127.0.0.1", 0)
        elif issubclass(handler_class, pywsgi.WSGIHandler):
            server = pywsgi.WSGIServer(("127.0.0.1", 0), app, handler_class=handler_class)
            server.start()
        else:
            server = RPCServer(("127.0.0.1", 0), app, handler_class=handler_class)
            server.start()
        servers.append(server)
        return server

    yield _start
    probe.release.set()
    for server in servers:
        server.stop(timeout=1)


@pytest.fixture
def server(start: Callable[..., RPCServer]) -> RPCServer:
    return start()


def assert_error(
    reply: Reply, status: int, etype: str, *, data: Any = None, close: bool = False
) -> dict[str, Any]:
    assert reply.status == status, (reply.status, reply.body)
    err = reply.error
    assert err["type"] == etype, err
    assert err["data"] == data
    assert b"Traceback" not in reply.body and b'File "' not in reply.body
    assert (reply.headers.get("connection") == "close") is close
    return err


# -- results and dispatch ----------------------------------------------------------

VALUES: list[Any] = [
    None,
    True,
    0,
    -(2**63),
    2**64 - 1,
    1.25,
    "",
    "ünïcödé ✓",
    b"",
    b"\x00\xff" * 1000,
    [1, [2, [3, [None]]]],
    {},
    {1: "one", -2: "minus two", "s": b"bytes"},
    {"nested": {"list": [{"deep": [b"\x01"]}], 7: {8: 9}}},
    msgpack.ExtType(5, b"ext"),
]


@pytest.mark.parametrize("value", VALUES, ids=[f"v{i}" for i in range(len(VALUES))])
def test_values_round_trip(server: RPCServer, value: Any) -> None:
    with Conn(server.address) as conn:
        assert conn.call("/t/echo", [value]).result == value


def test_dispatch_by_argument_shape(server: RPCServer) -> None:
    with Conn(server.address) as conn:
        assert conn.call("/t/pair", [1, 2]).result == [1, 2]
        assert conn.call("/t/pair", {"a": 1}).result == [1, "default"]
        assert conn.call("/t/pair", {"b": 2, "a": 1}).result == [1, 2]
        assert conn.call("/t/nothing", None).result == "called with nothing"
        # any other value is the single argument
        assert conn.call("/t/kinds", 5).result == {"args": [5], "kwargs": {}}
        assert conn.call("/t/kinds", "text").result == {"args": ["text"], "kwargs": {}}
        assert conn.call("/t/kinds", b"raw").result == {"args": [b"raw"], "kwargs": {}}
        assert conn.call("/t/kinds", []).result == {"args": [], "kwargs": {}}
        assert conn.call("/t/kinds", {}).result == {"args": [], "kwargs": {}}
        assert conn.call("/t/kinds", [[1]]).result == {"args": [[1]], "kwargs": {}}
        assert conn.call("/t/dotted.name", None).result == "dotted"
        assert conn.call("/hide/visible", []).result == "visible"


def test_bad_arguments_are_400_and_the_handler_never_runs(server: RPCServer, probe: Probe) -> None:
    with Conn(server.address) as conn:
        for args in ([], [1, 2, 3], {"c": 1}, {"b": 1}, None):
            err = assert_error(conn.call("/t/pair", args), 400, "BadArguments")
            assert "t.pair" in err["message"]
        assert probe.runs.get("t.pair") is None
        # a TypeError raised inside the handler is the handler's: 500
        err = assert_error(conn.call("/t/inner_type_error", []), 500, "TypeError")
        assert err["message"] == "raised inside the handler"
        assert probe.runs["t.inner_type_error"] == 1


def test_non_str_keyword_names_are_400(server: RPCServer) -> None:
    with Conn(server.address) as conn:
        assert_error(conn.call("/t/kinds", {1: "x"}), 400, "BadRequest")


# -- errors ---------------------------------------------------------------------------


def test_handler_exception_is_500_with_class_name_and_no_traceback(
    server: RPCServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="rpcclient.server"), Conn(server.address) as conn:
        err = assert_error(conn.call("/t/fail", ["boom"]), 500, "ValueError")
        assert err["message"] == "boom"
        # the connection stays usable after an error answer
        assert conn.call("/t/echo", [1]).result == 1
    logged = [r for r in caplog.records if r.name == "rpcclient.server" and r.exc_info]
    assert logged and "t.fail" in logged[0].getMessage()


def test_exception_data_attribute_is_sent(server: RPCServer) -> None:
    with Conn(server.address) as conn:
        reply = conn.call("/t/fail_with_data", [{"field": "name", "code": 7}])
        assert_error(reply, 500, "DataError", data={"field": "name", "code": 7})
        # data msgpack cannot encode is dropped, the error still arrives
        reply = conn.call("/t/fail_with_unpackable_data", [])
        err = assert_error(reply, 500, "DataError", data=None)
        assert err["message"] == "with bad data"


def test_unencodable_result_is_500(server: RPCServer) -> None:
    with Conn(server.address) as conn:
        assert_error(conn.call("/t/unpackable", []), 500, "EncodeError")


@pytest.mark.parametrize(
    "path",
    ["/t/missing", "/nope/echo", "/t", "/", "/t/echo/extra", "/hide/_hidden", "/hide/attribute"],
)
def test_unknown_and_private_methods_are_404(server: RPCServer, path: str) -> None:
    with Conn(server.address) as conn:
        assert_error(conn.call(path, [1]), 404, "MethodNotFound")
        assert conn.call("/t/echo", [2]).result == 2


def test_non_post_is_405_with_allow(server: RPCServer) -> None:
    with Conn(server.address) as conn:
        for method in ("GET", "PUT", "DELETE"):
            conn.send(post("/t/echo", method=method, content_type=None, length=-1))
            reply = conn.read_reply()
            assert_error(reply, 405, "MethodNotAllowed")
            assert reply.headers["allow"] == "POST"
        # HEAD gets the same head and no body: the next answer follows directly
        conn.send(post("/t/echo", method="HEAD", content_type=None, length=-1))
        reply = conn.read_reply(with_body=False)
        assert reply.status == 405 and int(reply.headers["content-length"]) > 0
        assert conn.call("/t/echo", [1]).result == 1


@pytest.mark.parametrize("ctype", [None, "text/plain", "application/json", "application/xmsgpack"])
def test_wrong_content_type_is_415(server: RPCServer, ctype: str | None) -> None:
    with Conn(server.address) as conn:
        conn.send(post("/t/echo", msgpack.packb([1]), content_type=ctype))
        assert_error(conn.read_reply(), 415, "UnsupportedMediaType")


@pytest.mark.parametrize(
    "ctype",
    ["application/msgpack", "Application/X-Msgpack", "application/x-msgpack; charset=binary"],
)
def test_msgpack_content_types_accepted(server: RPCServer, ctype: str) -> None:
    with Conn(server.address) as conn:
        conn.send(post("/t/echo", msgpack.packb([1]), content_type=ctype))
        assert conn.read_reply().result == 1


@pytest.mark.parametrize("body", [b"", b"\xc1", b"\x92\x01", b"\x01\x02"])
def test_bad_msgpack_is_400(server: RPCServer, body: bytes) -> None:
    with Conn(server.address) as conn:
        conn.send(post("/t/echo", body))
        assert_error(conn.read_reply(), 400, "BadRequest")
        assert conn.call("/t/echo", [3]).result == 3


def test_missing_length_is_411(server: RPCServer) -> None:
    with Conn(server.address) as conn:
        conn.send(post("/t/echo", length=-1))
        assert_error(conn.read_reply(), 411, "LengthRequired")
        assert conn.call("/t/echo", [4]).result == 4


def test_chunked_request_body(server: RPCServer) -> None:
    with Conn(server.address) as conn:
        conn.send(chunked("/t/echo", msgpack.packb([b"z" * 10_000])))
        assert conn.read_reply().result == b"z" * 10_000
        assert conn.call("/t/echo", [5]).result == 5


def test_chunked_body_above_limit_is_413_and_closes(start: Callable[..., RPCServer]) -> None:
    server = start(max_body_size=1000)
    with Conn(server.address) as conn:
        conn.send(chunked("/t/echo", msgpack.packb([b"z" * 5000])))
        assert_error(conn.read_reply(), 413, "RequestTooLarge", close=True)
        assert conn.at_eof()


@pytest.mark.parametrize("expect", [False, True])
def test_413_is_answered_from_the_head_alone(server: RPCServer, expect: bool) -> None:
    # Only the head is sent; a server that tried to read (or drain) the body
    # would never answer. With Expect: 100-continue no 100 may come first.
    headers = {"Expect": "100-continue"} if expect else {}
    with Conn(server.address) as conn:
        conn.send(post("/t/echo", headers=headers, length=10**12))
        started = time.monotonic()
        reply = conn.read_reply()
        assert_error(reply, 413, "RequestTooLarge", close=True)
        assert conn.at_eof()
        assert time.monotonic() - started < 2.0


def test_413_half_closes_and_reads_on_for_a_client_still_sending(server: RPCServer) -> None:
    # RFC 9112 section 9.6: closing with unread data sends a reset, which can
    # destroy the answer before the client read it. The server half-closes
    # and keeps reading (bounded), so a client still writing gets no error.
    with Conn(server.address) as conn:
        conn.send(post("/t/echo", length=64 * 1024 * 1024) + b"\x00" * 65536)
        assert_error(conn.read_reply(), 413, "RequestTooLarge", close=True)
        assert conn.at_eof()
        for _ in range(8):
            conn.send(b"\x00" * 65536)
            gevent.sleep(0.01)


def test_413_from_content_length_above_a_custom_limit(start: Callable[..., RPCServer]) -> None:
    server = start(max_body_size=100)
    with Conn(server.address) as conn:
        assert conn.call("/t/echo", [b"a" * 50]).result == b"a" * 50
        reply = conn.call("/t/echo", [b"a" * 200])
        assert_error(reply, 413, "RequestTooLarge", close=True)


def test_early_error_with_oversized_body_closes_instead_of_draining(server: RPCServer) -> None:
    with Conn(server.address) as conn:
        conn.send(post("/t/missing", length=10**12))
        assert_error(conn.read_reply(), 404, "MethodNotFound", close=True)
        assert conn.at_eof()


# -- headers: request id, deadline -------------------------------------------------


def test_request_id_is_echoed(server: RPCServer) -> None:
    with Conn(server.address) as conn:
        reply = conn.call("/t/echo", [1], headers={"X-Request-Id": "req-123/abc"})
        assert reply.headers["x-request-id"] == "req-123/abc"
        reply = conn.call("/t/missing", [1], headers={"X-Request-Id": "on-error-too"})
        assert reply.status == 404 and reply.headers["x-request-id"] == "on-error-too"
        assert "x-request-id" not in conn.call("/t/echo", [1]).headers
        # a value that is not short visible ASCII is not echoed
        reply = conn.call("/t/echo", [1], headers={"X-Request-Id": "x" * 300})
        assert reply.status == 200 and "x-request-id" not in reply.headers


def test_timeout_header_sets_current_deadline(server: RPCServer) -> None:
    assert current_deadline() is None
    with Conn(server.address) as conn:
        remaining = conn.call("/t/deadline", [], headers={"X-Rpc-Timeout-Ms": "5000"}).result
        assert 4000 < remaining <= 5000
        assert conn.call("/t/deadline", []).result is None
        reply = conn.call("/t/deadline", [], headers={"X-Rpc-Timeout-Ms": "soon"})
        assert_error(reply, 400, "BadRequest")
    assert current_deadline() is None


# -- load shedding ----------------------------------------------------------------------


def test_load_shedding_503_does_not_run_the_call(
    start: Callable[..., RPCServer], probe: Probe
) -> None:
    server = start(max_concurrency=1)
    app: RPCApp = server.application
    with Conn(server.address) as busy, Conn(server.address) as other:
        busy.send(post("/t/block", msgpack.packb([])))
        wait_until(lambda: probe.runs.get("t.block") == 1)
        assert app.in_flight == 1
        reply = other.call("/t/block", [])
        assert_error(reply, 503, "Unavailable", data={"not_run": True})
        assert reply.headers["retry-after"] == "1"
        assert probe.runs["t.block"] == 1
        probe.release.set()
        assert busy.read_reply().result == "released"
        # the shed connection stays open, and the slot came back
        assert other.call("/t/echo", [1]).result == 1
        assert app.in_flight == 0


# -- connection behaviour -----------------------------------------------------------


def test_keep_alive_serves_many_requests_on_one_connection(server: RPCServer) -> None:
    with Conn(server.address) as conn:
        for i in range(5):
            reply = conn.call("/t/echo", [i])
            assert reply.result == i
            assert "connection" not in reply.headers
        # pipelined: both requests in one write, answers in order
        conn.send(post("/t/echo", msgpack.packb(["a"])) + post("/t/echo", msgpack.packb(["b"])))
        assert conn.read_reply().result == "a"
        assert conn.read_reply().result == "b"


def counting_handler(base: type[Any]) -> type[Any]:
    class Counting(base):  # type: ignore[misc]
        writes: ClassVar[list[bytes]] = []
        nodelay: ClassVar[list[int]] = []

        def handle(self) -> None:
            sock_opt = self.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            type(self).nodelay.append(sock_opt)
            super().handle()

        def _sendall(self, data: bytes) -> None:
            type(self).writes.append(bytes(data))
            super()._sendall(data)

    return Counting


def test_each_response_is_one_write(start: Callable[..., RPCServer]) -> None:
    handler = counting_handler(RPCHandler)
    server = start(handler_class=handler)
    with Conn(server.address) as conn:
        for args, path in (([1], "/t/echo"), ([b"y" * 30_000], "/t/echo"), ([1], "/t/missing")):
            del handler.writes[:]
            segs_before = data_segs_in(conn.sock)
            reply = conn.call(path, args)
            assert len(handler.writes) == 1, [w[:40] for w in handler.writes]
            assert handler.writes[0] == reply.head + b"\r\n\r\n" + reply.body
            if segs_before is not None:
                # the client received the whole response as one TCP segment
                assert data_segs_in(conn.sock) == segs_before + 1
    assert handler.nodelay and all(handler.nodelay)


def test_a_large_response_never_sends_the_head_alone(start: Callable[..., RPCServer]) -> None:
    handler = counting_handler(RPCHandler)
    server = start(handler_class=handler)
    with Conn(server.address) as conn:
        n = 3 * COALESCE_LIMIT
        reply = conn.call("/t/large", [n])
        assert reply.result == b"x" * n
        first = handler.writes[0]
        assert first.startswith(reply.head + b"\r\n\r\n")
        assert len(first) == len(reply.head) + 4 + COALESCE_LIMIT
        assert b"".join(handler.writes) == reply.head + b"\r\n\r\n" + reply.body


def test_the_write_count_would_catch_stock_pywsgi(start: Callable[..., RPCServer]) -> None:
    # Control: the same measurement on stock pywsgi's handler sees two writes,
    # so the one-write test above can fail.
    handler = counting_handler(pywsgi.WSGIHandler)
    server = start(handler_class=handler)
    with Conn(server.address) as conn:
        assert conn.call("/t/echo", [1]).result == 1
    assert len(handler.writes) == 2


#: requests whose answers the direct path must send byte for byte as WSGI does
DIRECT_CASES = [
    post("/t/echo", msgpack.packb([1])),
    post("/t/echo", msgpack.packb([1]), headers={"X-Request-Id": "abc-1"}),
    post("/t/missing", msgpack.packb([])),
    post("/t/echo", method="GET"),
    post("/t/echo", method="HEAD"),
    post("/t/echo", msgpack.packb([1]), content_type="text/plain"),
    post("/t/echo", b"\xc1"),
    post("/t/fail", msgpack.packb(["boom"])),
    chunked("/t/echo", msgpack.packb([b"z" * 100])),
    chunked("/t/missing", msgpack.packb([])),  # RPCApp's own Connection: close
]


def _without_date(head: bytes) -> bytes:
    return re.sub(rb"\r\nDate: [^\r]*", b"", head)


def test_rpcapp_is_answered_directly_with_the_bytes_wsgi_sends(probe: Probe) -> None:
    # The same app served twice: directly (RPCApp.respond, no start_response)
    # and through WSGI (a wrapper the server cannot see through).
    app = build_app(probe)
    direct = RPCServer(("127.0.0.1", 0), app)

    def wrapper(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        return app(environ, start_response)

    wsgi = RPCServer(("127.0.0.1", 0), wrapper)
    assert direct.direct_answer is not None and wsgi.direct_answer is None
    direct.start()
    wsgi.start()
    try:
        for request in DIRECT_CASES:
            replies = []
            for server in (direct, wsgi):
                with Conn(server.address) as conn:
                    conn.send(request)
                    with_body = not request.startswith(b"HEAD")
                    reply = conn.read_reply(with_body=with_body)
                    replies.append((_without_date(reply.head), reply.body))
            assert replies[0] == replies[1], request[:40]
    finally:
        direct.stop(timeout=1)
        wsgi.stop(timeout=1)


def test_an_rpcapp_subclass_with_its_own_call_gets_wsgi(probe: Probe) -> None:
    calls: list[str] = []

    class Wrapped(RPCApp):
        def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
            calls.append(environ["PATH_INFO"])
            return super().__call__(environ, start_response)

    app = Wrapped()
    app.register("t.echo", lambda x: x)
    server = serve(app, "127.0.0.1", 0)
    try:
        assert server.direct_answer is None
        with Conn(server.address) as conn:
            assert conn.call("/t/echo", [7]).result == 7
        assert calls == ["/t/echo"]
        # setting another app re-decides: a plain RPCApp is answered directly
        server.application = build_app(probe)
        assert server.direct_answer is not None
    finally:
        server.stop(timeout=1)


def test_stop_closes_idle_connections_and_lets_busy_calls_finish(
    start: Callable[..., RPCServer], probe: Probe
) -> None:
    server = start()
    with Conn(server.address) as idle, Conn(server.address) as busy:
        assert idle.call("/t/echo", [1]).result == 1
        busy.send(post("/t/block", msgpack.packb([])))
        wait_until(lambda: probe.runs.get("t.block") == 1)
        stopper = gevent.spawn(server.stop, timeout=IO_TIMEOUT)
        assert idle.at_eof()
        with pytest.raises(OSError):
            Conn(server.address).close()
        probe.release.set()
        reply = busy.read_reply()
        assert reply.result == "released"
        assert reply.headers["connection"] == "close"
        assert busy.at_eof()
        stopper.join(timeout=IO_TIMEOUT)
        assert stopper.successful()


def test_base_path(start: Callable[..., RPCServer]) -> None:
    server = start(base_path="/rpc/")
    with Conn(server.address) as conn:
        assert conn.call("/rpc/t/echo", [1]).result == 1
        assert_error(conn.call("/t/echo", [1]), 404, "MethodNotFound")
        assert_error(conn.call("/rpcx/t/echo", [1]), 404, "MethodNotFound")


# -- registration --------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "",
        "echo",
        ".echo",
        "echo.",
        "a/b.c",
        "a.b/c",
        "a b.c",
        "a.b c",
        "a.b\r\n",
        "a\x00.b",
        "_a.b",
        "a._b",
        "a.b._c",
        "ü.b",
    ],
)
def test_invalid_names_are_refused_at_registration(name: str) -> None:
    app = RPCApp()
    with pytest.raises(ValueError):
        app.register(name, lambda: None)
    assert app.methods() == []


def test_registration_api() -> None:
    app = RPCApp()

    @app.register("s.decorated")
    def decorated() -> int:
        return 1

    assert decorated() == 1  # the decorator returns the function itself

    def plain() -> int:
        return 2

    assert app.register("s.plain", plain) is plain
    assert app.add_service("hide", Hidden()) == ["hide.visible"]
    assert app.methods() == ["hide.visible", "s.decorated", "s.plain"]
    with pytest.raises(ValueError, match="already registered"):
        app.register("s.plain", plain)
    with pytest.raises(TypeError):
        app.register("s.not_callable", 42)  # type: ignore[call-overload]
    with pytest.raises(ValueError):
        app.add_service("bad/service", Hidden())
    with pytest.raises(ValueError):
        app.add_service("hide", Hidden())  # all or nothing: hide.visible exists
    assert app.methods() == ["hide.visible", "s.decorated", "s.plain"]
    assert "methods=3" in repr(app)


@pytest.mark.parametrize(
    "kw",
    [{"max_body_size": 0}, {"max_concurrency": 0}, {"base_path": "rpc"}, {"base_path": "/a b"}],
)
def test_invalid_app_options(kw: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        RPCApp(**kw)


# -- the command line ------------------------------------------------------------------


def test_cli_parse_bind_and_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli.parse_bind("127.0.0.1:0") == ("127.0.0.1", 0)
    assert _cli.parse_bind("[::1]:8000") == ("::1", 8000)
    for bad in ("127.0.0.1", "host:port", "h:70000"):
        with pytest.raises(_cli.UsageError):
            _cli.parse_bind(bad)
    assert _cli.main(["serve", "no_such_module_xyz:app", "--bind", "127.0.0.1:0"]) == 2
    assert _cli.main(["serve", "rpcclient.example:nope", "--bind", "127.0.0.1:0"]) == 2
    assert _cli.main(["serve", "rpcclient.example:app", "--bind", "nonsense"]) == 2
    assert "error" in capsys.readouterr().err


def test_cli_serve_answers_and_stops_on_sigterm() -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "rpcclient", "serve", "rpcclient.example:app"]
    cmd += ["--bind", "127.0.0.1:0"]
    with gevent.subprocess.Popen(
        cmd, cwd=str(REPO), env=env, stdout=gevent.subprocess.PIPE, stderr=gevent.subprocess.PIPE
    ) as proc:
        try:
            with gevent.Timeout(20):
                line = proc.stdout.readline().decode()
            match = re.fullmatch(
                r"rpcclient: serving rpcclient\.example:app on http://127\.0\.0\.1:(\d+)\n", line
            )
            assert match, line
            port = int(match.group(1))
            with Conn(("127.0.0.1", port)) as conn:
                assert conn.call("/math/add", [2, 3]).result == 5
                proc.send_signal(signal.SIGTERM)
                assert conn.at_eof()  # the idle keep-alive connection is closed
            assert proc.wait(timeout=5) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=5)
        assert b"Traceback" not in proc.stderr.read()
