"""Wire protocol v1's grammar has one home, rpcclient._protocol, for both sides.

Pure units: the client's checks (split_name, request ids), the bundled
server's (registration, the X-Request-Id it echoes, X-Rpc-Timeout-Ms) and the
tracing middleware's span names all use the patterns defined there, so a
name one side accepts is a name the other accepts. One loopback test shows
the server echoing every id the client may send.
"""

from __future__ import annotations

import io
import string

import msgpack
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from rpcclient import Client, InvalidRequest
from rpcclient import _protocol as protocol
from rpcclient._core.observe import REQUEST_IDS
from rpcclient._integrations import tracing
from rpcclient.server import RPCApp
from rpcclient.server import dedup as server_dedup
from rpcclient.server._engine import app as server_app

NAME_CHARS = string.ascii_letters + string.digits + "_-." + "/ :\r\n\x00_"


def _client_accepts(name: str) -> bool:
    try:
        protocol.split_name(name)
    except InvalidRequest:
        return False
    return True


def _server_registers(name: str) -> bool:
    try:
        RPCApp().register(name, lambda: None)
    except ValueError:
        return False
    return True


def _private(name: str) -> bool:
    service, _, method = name.partition(".")
    return service.startswith("_") or any(p.startswith("_") for p in method.split("."))


def test_the_server_and_tracing_use_the_protocol_patterns_themselves() -> None:
    # one home: the same compiled objects, no copies that could drift apart
    assert server_app._SERVICE is protocol.SERVICE_NAME
    assert server_app._REQUEST_ID is protocol.ECHOED_REQUEST_ID
    assert server_app._TIMEOUT_MS is protocol.TIMEOUT_MS
    assert server_dedup.ECHOED_REQUEST_ID is protocol.ECHOED_REQUEST_ID
    assert tracing.SERVICE_NAME is protocol.SERVICE_NAME
    assert tracing.METHOD_NAME is protocol.METHOD_NAME


@pytest.mark.parametrize("name", ["admin..", "admin...", "a.."])
def test_a_method_of_dots_alone_is_refused_by_both_sides(name: str) -> None:
    # the server registered these before (its own pattern allowed dots alone):
    # methods no client could call, at /admin/.. which proxies normalise away
    assert not _client_accepts(name)
    assert not _server_registers(name)


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=NAME_CHARS, min_size=0, max_size=12))
@example("a..")  # the server's old pattern registered it; the client never sent it
@example("a._b")
def test_a_public_name_is_callable_exactly_when_it_is_registrable(name: str) -> None:
    if _private(name):
        assert not _server_registers(name)  # the server's own rule on top
    else:
        assert _client_accepts(name) == _server_registers(name), name


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=string.printable + "\x7f\u00e9", min_size=0, max_size=210))
def test_every_request_id_a_client_sends_is_one_the_server_echoes(rid: str) -> None:
    if protocol.REQUEST_ID.match(rid):
        assert protocol.ECHOED_REQUEST_ID.match(rid)


def test_generated_request_ids_pass_both_rules() -> None:
    for _ in range(100):
        rid = REQUEST_IDS.next()
        assert protocol.REQUEST_ID.match(rid) and protocol.ECHOED_REQUEST_ID.match(rid)


def test_the_client_refuses_a_request_id_outside_its_rule() -> None:
    with Client("http://127.0.0.1:9") as client:
        with pytest.raises(InvalidRequest, match="invalid request id"):
            client.call("svc.m", request_id="a/b")


_ECHO_APP = RPCApp()
_ECHO_APP.register("echo.echo", lambda value: value)


def _echoed(rid: str) -> str | None:
    """The X-Request-Id the bundled app answers a call carrying ``rid`` with."""
    body = msgpack.packb([1])
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/echo/echo",
        "CONTENT_TYPE": "application/x-msgpack",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
        "HTTP_X_REQUEST_ID": rid,
    }
    status, headers, _ = _ECHO_APP.respond(environ)
    assert status == "200 OK"
    return dict(headers).get("X-Request-Id")


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=string.ascii_letters + string.digits + "._:-", min_size=1, max_size=200))
def test_the_server_echoes_every_request_id_the_client_may_send(rid: str) -> None:
    assert protocol.REQUEST_ID.match(rid)
    assert _echoed(rid) == rid


def test_the_server_echoes_no_id_a_header_could_not_carry() -> None:
    assert _echoed("a b") is None
    assert _echoed("x" * 201) is None
    assert _echoed("a/b=") == "a/b="  # another client's id: wider than ours, still echoed


def test_timeout_ms_is_whole_milliseconds() -> None:
    assert protocol.TIMEOUT_MS.match("0") and protocol.TIMEOUT_MS.match("999999999999")
    for bad in ("", "1.5", "-1", "1e3", "9999999999999", "12 "):
        assert not protocol.TIMEOUT_MS.match(bad), bad


def test_name_parts_is_the_grammar_and_raises_nothing() -> None:
    assert protocol.name_parts("user.get.profile") == ("user", "get.profile")
    for bad in ("user", ".m", "user.", "us er.m", "user.a/b", "user..", "user.m\n"):
        assert protocol.name_parts(bad) is None, bad
