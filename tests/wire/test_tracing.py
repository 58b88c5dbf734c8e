"""OpenTelemetry spans and trace-context propagation, over real loopback traffic.

Spans go to an in-memory exporter on a private TracerProvider: the global
provider is never set. Tests that need the SDK skip without it (the ``otel``
extra); the ones about its absence always run.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest

import rpcclient
from rpcclient import Client, Retry
from rpcclient._integrations.tracing import (
    OTEL_EXTRA,
    RPC_SYSTEM,
    OpenTelemetryHook,
    TraceContextMiddleware,
)
from tests.support.raw import RawServer, http_response, keepalive_answering, read_request


class Otel:
    def __init__(self) -> None:
        sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from opentelemetry.trace import SpanKind, StatusCode

        self.exporter = InMemorySpanExporter()
        self.provider = sdk_trace.TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.SpanKind = SpanKind
        self.StatusCode = StatusCode

    def spans(self) -> dict[str, list[Any]]:
        by_name: dict[str, list[Any]] = {}
        for span in self.exporter.get_finished_spans():
            by_name.setdefault(span.name, []).append(span)
        return by_name


@pytest.fixture
def otel() -> Iterator[Otel]:
    o = Otel()
    yield o
    o.provider.shutdown()


def answer(head: bytes, body: bytes) -> bytes:
    value = msgpack.unpackb(body)
    if value == "fail":
        err = {"error": {"type": "ValueError", "message": "no", "data": None}}
        return http_response(msgpack.packb(err), "500 Internal Server Error")
    return http_response(msgpack.packb(value))


def header(head: bytes, name: str) -> str | None:
    for line in head.decode("latin-1").split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name:
            return value.strip()
    return None


def test_a_call_span_with_an_attempt_child_and_traceparent_sent(
    raw_server: Any, otel: Otel
) -> None:
    srv: RawServer = raw_server(keepalive_answering(answer))
    with Client(srv.url, hooks=[OpenTelemetryHook(otel.provider)]) as client:
        assert client.call("user.get_profile", 42, request_id="req-1") == 42
    spans = otel.spans()
    (call,) = spans["user/get_profile"]
    (attempt,) = spans["POST"]
    assert call.kind == attempt.kind == otel.SpanKind.CLIENT
    assert call.parent is None  # nothing was current in the caller
    assert attempt.parent.span_id == call.context.span_id
    assert attempt.context.trace_id == call.context.trace_id
    assert call.status.status_code == attempt.status.status_code == otel.StatusCode.UNSET
    assert dict(call.attributes) == {
        "rpc.system": RPC_SYSTEM,
        "rpc.service": "user",
        "rpc.method": "get_profile",
        "rpcclient.request_id": "req-1",
        "server.address": "127.0.0.1",
        "server.port": srv.port,
        "rpcclient.attempts": 1,
    }
    assert dict(attempt.attributes) == {
        "rpc.system": RPC_SYSTEM,
        "rpc.service": "user",
        "rpc.method": "get_profile",
        "server.address": "127.0.0.1",
        "server.port": srv.port,
        "http.request.method": "POST",
        "rpcclient.attempt": 1,
        "http.response.status_code": 200,
    }
    # the server got the attempt span's context: version-trace-span-flags
    ((head, _),) = srv.requests
    traceparent = header(head, "traceparent")
    assert traceparent is not None
    version, trace_id, span_id, flags = traceparent.split("-")
    assert version == "00" and int(flags, 16) & 1  # sampled (0x02, "random id", may be set)
    assert int(trace_id, 16) == call.context.trace_id
    assert int(span_id, 16) == attempt.context.span_id


def test_the_call_span_continues_the_callers_current_span(raw_server: Any, otel: Otel) -> None:
    srv: RawServer = raw_server(keepalive_answering(answer))
    tracer = otel.provider.get_tracer("test")
    with Client(srv.url, hooks=[OpenTelemetryHook(otel.provider)]) as client:
        with tracer.start_as_current_span("outer") as outer:
            client.call("a.b", 1)
    (call,) = otel.spans()["a/b"]
    assert call.parent.span_id == outer.get_span_context().span_id
    assert call.context.trace_id == outer.get_span_context().trace_id


def test_a_remote_error_marks_both_spans(raw_server: Any, otel: Otel) -> None:
    srv: RawServer = raw_server(keepalive_answering(answer))
    with Client(srv.url, hooks=[OpenTelemetryHook(otel.provider)]) as client:
        with pytest.raises(rpcclient.RemoteError):
            client.call("user.put", "fail")
    spans = otel.spans()
    (call,) = spans["user/put"]
    (attempt,) = spans["POST"]
    assert call.status.status_code == otel.StatusCode.ERROR
    assert call.attributes["error.type"] == "rpcclient.exceptions.RemoteError"
    assert call.attributes["rpcclient.remote_error.type"] == "ValueError"
    assert [e.name for e in call.events] == ["exception"]
    # HTTP convention on the attempt: the status code is the error type
    assert attempt.status.status_code == otel.StatusCode.ERROR
    assert attempt.attributes["http.response.status_code"] == 500
    assert attempt.attributes["error.type"] == "500"


def test_each_attempt_has_its_span_and_its_own_traceparent(raw_server: Any, otel: Otel) -> None:
    heads: list[bytes] = []

    def close_first(sock: Any, server: RawServer) -> None:
        req = read_request(sock)
        if req is None:
            return
        heads.append(req[0])
        if server.connections > 1:
            sock.sendall(answer(*req))

    srv: RawServer = raw_server(close_first)
    with Client(srv.url, retry=Retry(backoff=0), hooks=[OpenTelemetryHook(otel.provider)]) as c:
        assert c.call("a.b", 5, idempotent=True) == 5
    spans = otel.spans()
    (call,) = spans["a/b"]
    first, second = sorted(spans["POST"], key=lambda s: s.attributes["rpcclient.attempt"])
    assert call.attributes["rpcclient.attempts"] == 2
    assert call.status.status_code == otel.StatusCode.UNSET  # the call succeeded
    assert first.parent.span_id == second.parent.span_id == call.context.span_id
    assert first.status.status_code == otel.StatusCode.ERROR
    assert first.attributes["error.type"].startswith("rpcclient.exceptions.")
    assert "http.response.status_code" not in first.attributes
    assert "http.request.resend_count" not in first.attributes
    assert second.attributes["http.request.resend_count"] == 1
    sent = [header(h, "traceparent") for h in heads]
    assert [int(str(t).split("-")[2], 16) for t in sent] == [
        first.context.span_id,
        second.context.span_id,
    ]


def test_an_unsampled_call_records_nothing_but_still_propagates(raw_server: Any) -> None:
    sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    exporter = InMemorySpanExporter()
    provider = sdk_trace.TracerProvider(sampler=ALWAYS_OFF)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    srv: RawServer = raw_server(keepalive_answering(answer))
    with Client(srv.url, hooks=[OpenTelemetryHook(provider)]) as client:
        client.call("a.b", 1)
    provider.shutdown()
    assert exporter.get_finished_spans() == ()
    traceparent = header(srv.requests[0][0], "traceparent")
    assert traceparent is not None
    assert not int(traceparent.split("-")[3], 16) & 1  # the sampled flag is clear


def test_the_middleware_continues_the_trace_on_the_server(wsgi_server: Any, otel: Otel) -> None:
    from opentelemetry import trace

    from rpcclient.server import RPCApp

    seen: list[Any] = []
    app = RPCApp()

    @app.register("user.get_profile")
    def get_profile(user_id: int) -> dict[str, Any]:
        seen.append(trace.get_current_span().get_span_context())
        return {"id": user_id}

    @app.register("user.broken")
    def broken() -> None:
        raise RuntimeError("handler bug")

    url = wsgi_server(TraceContextMiddleware(app, otel.provider))
    with Client(url, hooks=[OpenTelemetryHook(otel.provider)]) as client:
        assert client.call("user.get_profile", [7], request_id="req-7") == {"id": 7}
        with pytest.raises(rpcclient.RemoteError):
            client.call("user.broken")
        with pytest.raises(rpcclient.MethodNotFound):
            client.call("user.nope")
    spans = otel.spans()
    client_attempts = {s.context.span_id: s for s in spans["POST"] if s.kind.name == "CLIENT"}
    (server,) = [s for s in spans["user/get_profile"] if s.kind == otel.SpanKind.SERVER]
    (call,) = [s for s in spans["user/get_profile"] if s.kind == otel.SpanKind.CLIENT]
    parent = client_attempts[server.parent.span_id]  # KeyError if not a client attempt
    assert parent.parent.span_id == call.context.span_id
    assert server.context.trace_id == call.context.trace_id
    assert server.parent.is_remote
    # the server span is current while the handler runs
    assert [s.span_id for s in seen] == [server.context.span_id]
    attrs = server.attributes
    assert attrs["rpc.service"] == "user" and attrs["rpc.method"] == "get_profile"
    assert attrs["http.response.status_code"] == 200 and attrs["url.path"] == "/user/get_profile"
    assert attrs["rpcclient.request_id"] == "req-7" and attrs["server.address"] == "127.0.0.1"
    assert server.status.status_code == otel.StatusCode.UNSET
    (failed,) = [s for s in spans["user/broken"] if s.kind == otel.SpanKind.SERVER]
    assert failed.status.status_code == otel.StatusCode.ERROR
    assert failed.attributes["error.type"] == "500"
    # an unknown method's made-up path does not name a span
    (missing,) = [s for s in spans["POST"] if s.kind == otel.SpanKind.SERVER]
    assert missing.attributes["http.response.status_code"] == 404
    assert missing.status.status_code == otel.StatusCode.UNSET


def test_the_middleware_ends_a_streamed_body_span_on_close(otel: Otel) -> None:
    def streaming_app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"a"
        yield b"b"

    middleware = TraceContextMiddleware(streaming_app, otel.provider)
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/health", "wsgi.url_scheme": "http"}
    body = middleware(environ, lambda status, headers, exc_info=None: None)
    assert list(body) == [b"a", b"b"]
    assert otel.exporter.get_finished_spans() == ()  # still open until the server closes
    body.close()  # type: ignore[attr-defined]
    (span,) = otel.exporter.get_finished_spans()
    assert span.name == "GET" and span.parent is None


def test_without_opentelemetry_the_classes_say_which_extra(monkeypatch: Any) -> None:
    for name in [m for m in sys.modules if m.split(".")[0] == "opentelemetry"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "opentelemetry", None)  # "not installed"
    with pytest.raises(ImportError, match=r"rpcclient\[otel\]"):
        OpenTelemetryHook()
    with pytest.raises(ImportError, match=r"rpcclient\[otel\]"):
        TraceContextMiddleware(lambda environ, start_response: [])
    assert OTEL_EXTRA == "rpcclient[otel]"


def test_importing_rpcclient_never_imports_opentelemetry() -> None:
    code = (
        "import sys, rpcclient, rpcclient._integrations.tracing\n"
        "import rpcclient._integrations.statsd, rpcclient._tools.stats\n"
        "loaded = [m for m in sys.modules if m.startswith('opentelemetry')]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
