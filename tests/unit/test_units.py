"""Pure units: values, validation, codec, protocol decoding, the public door.

No sockets here except where a test proves that bad input takes none.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib
import pkgutil
from typing import Any

import msgpack
import pytest

import rpcclient
from rpcclient import (
    Client,
    Codec,
    Endpoint,
    Headers,
    InvalidRequest,
    MockTransport,
    Request,
    Response,
    Timeout,
    msgpack_response,
)
from rpcclient import exceptions as exc_mod
from rpcclient._protocol import decode_response, split_name
from rpcclient._transports import base as transports_base
from tests.support.raw import RawServer, http_response, keepalive_answering

# -- the public door ------------------------------------------------------------


def test_all_is_sorted_complete_and_importable() -> None:
    names = rpcclient.__all__
    assert names == sorted(names)
    for name in names:
        assert hasattr(rpcclient, name), name
    # every public exception is re-exported at the top
    for name in exc_mod.__all__:
        assert name in names, f"rpcclient.exceptions.{name} missing from rpcclient.__all__"
    # every module of the package imports, every name its __all__ lists exists,
    # and a name rpcclient exports is the same object wherever it is listed
    for mod in _package_modules():
        for public in getattr(mod, "__all__", []):
            obj = getattr(mod, public)  # AttributeError: __all__ names what is not there
            private = any(part.startswith("_") for part in mod.__name__.split("."))
            if public in names and private:  # (compat.requests mirrors requests' names)
                assert getattr(rpcclient, public) is obj, f"{mod.__name__}.{public}"


def _package_modules() -> list[Any]:
    """Every module under rpcclient (found by walking it, not from a list)."""
    found = []
    for info in pkgutil.walk_packages(rpcclient.__path__, "rpcclient."):
        if info.name.endswith(".__main__"):
            continue  # running it is the CLI (tests/wire/test_ab.py, test_server.py)
        found.append(importlib.import_module(info.name))
    assert len(found) > 40, [m.__name__ for m in found]
    return found


def test_exception_tree_and_reach_flags() -> None:
    E = exc_mod
    assert issubclass(E.ConnectTimeout, E.ConnectError)
    assert issubclass(E.ConnectTimeout, E.RPCTimeout)
    assert issubclass(E.PoolTimeout, E.RPCTimeout) and issubclass(E.ReadTimeout, E.RPCTimeout)
    assert issubclass(E.MethodNotFound, E.RemoteError)
    assert issubclass(E.ResponseTooLarge, E.ProtocolError)
    assert issubclass(E.InvalidRequest, ValueError)
    never = [E.InvalidRequest, E.PoolTimeout, E.ConnectError, E.ConnectTimeout, E.ClientClosed]
    for cls in never:
        assert cls("x").may_have_reached_server is False, cls
    for cls in [E.ReadTimeout, E.ConnectionLost, E.ProtocolError]:
        assert cls("x").may_have_reached_server is True, cls


def test_error_str_names_call_endpoint_and_reach() -> None:
    err = exc_mod.ReadTimeout("no answer", name="user.get", endpoint="http://h:1")
    text = str(err)
    assert "user.get" in text and "http://h:1" in text and "may have reached" in text
    err2 = exc_mod.ConnectError("refused", name="a.b")
    assert "did not reach" in str(err2)


# -- Timeout / Deadline --------------------------------------------------------------


def test_timeout_is_immutable_and_validated() -> None:
    t = Timeout(connect=1, read=2, pool=3, total=4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.read = 5  # type: ignore[misc]
    assert t.with_(read=9).read == 9 and t.read == 2
    for bad in (0, -1, float("nan"), float("inf"), "1", True):
        with pytest.raises((ValueError, TypeError)):
            Timeout(read=bad)  # type: ignore[arg-type]
    assert Timeout.coerce(3) == Timeout(3, 3, 3, 3)
    assert Timeout.coerce(None).total is None


def test_deadline_cuts_each_phase_to_what_is_left() -> None:
    d = Timeout(connect=5, read=5, pool=5, total=2).start(now=100.0)
    assert d.expires == 102.0
    import time

    d2 = Timeout(connect=5, read=0.5, pool=None, total=60).start()
    assert d2.read_for() == 0.5
    pool = d2.pool_for()
    assert pool is not None and 59 < pool <= 60
    d3 = Timeout(total=None, read=None).start()
    assert d3.read_for() is None and d3.remaining() is None
    expired = Timeout(total=1).start(now=time.monotonic() - 5)
    assert expired.expired() and expired.connect_for() == 0.0


# -- codec -----------------------------------------------------------------------------


def test_codec_round_trips_and_keeps_int_map_keys() -> None:
    c = Codec()
    value = {1: "a", -2: [b"\x00", 1.5, None, True], "s": {"nested": (1, 2)}}
    assert c.unpack(c.pack(value)) == {
        1: "a",
        -2: [b"\x00", 1.5, None, True],
        "s": {"nested": [1, 2]},
    }


def test_codec_errors_are_ours() -> None:
    c = Codec()
    with pytest.raises(InvalidRequest, match="cannot be encoded"):
        c.pack(object(), name="a.b")
    with pytest.raises(rpcclient.DecodeError):
        c.unpack(b"\xc1")
    with pytest.raises(rpcclient.DecodeError):
        c.unpack(msgpack.packb(1) + b"\x01")  # trailing bytes
    small = Codec(max_str_len=3)
    with pytest.raises(rpcclient.DecodeError):
        small.unpack(msgpack.packb("abcd"))


def test_codec_limits_hold_on_either_side_of_the_short_path() -> None:
    """Bodies up to the smallest limit skip passing the limits: the answers stay the same."""
    c = Codec(max_str_len=40, max_map_len=5)
    assert c._short_limit == 10  # a map of 5 entries needs 10 bytes or more
    fits = msgpack.packb({1: "ab", 2: "c"})
    assert len(fits) <= c._short_limit and c.unpack(fits) == {1: "ab", 2: "c"}
    with pytest.raises(rpcclient.DecodeError, match="max_str_len"):
        c.unpack(msgpack.packb("x" * 41))
    with pytest.raises(rpcclient.DecodeError, match="max_map_len"):
        c.unpack(msgpack.packb(dict.fromkeys(range(6), 0)))
    assert Codec(raw=True).unpack(msgpack.packb("é")) == "é".encode()  # options still apply
    with pytest.raises(rpcclient.DecodeError):
        Codec().unpack(msgpack.packb(1) + b"\x01")  # trailing bytes, short path


def test_client_uses_a_codec_subclass_own_methods(raw_server: Any) -> None:
    class Tagged(Codec):
        def pack(self, obj: Any, *, name: str | None = None) -> bytes:
            return super().pack(["tag", obj], name=name)

        def unpack(self, data: Any, *, name: str | None = None) -> Any:
            return ("unpacked", super().unpack(data, name=name))

    srv: RawServer = raw_server(keepalive_answering(lambda h, b: http_response(b)))
    with Client(srv.url, codec=Tagged()) as client:
        assert client.call("echo.echo", 1) == ("unpacked", ["tag", 1])


def test_codec_is_pluggable_for_old_servers_and_ext_types() -> None:
    raw = Codec(raw=True, use_bin_type=False)
    assert raw.unpack(raw.pack("text")) == b"text"
    hooked = Codec(
        default=lambda o: msgpack.ExtType(5, o.isoformat().encode()),
        ext_hook=lambda code, data: (code, data.decode()),
    )
    day = datetime.date(2026, 11, 29)
    assert hooked.unpack(hooked.pack(day)) == (5, "2026-11-29")


# -- names, headers, endpoints -----------------------------------------------------


@pytest.mark.parametrize(
    "name",
    # "admin.." -> /admin/.., which servers and proxies normalise to another route
    [
        "",
        "nodot",
        ".m",
        "s.",
        "s..",
        "s...",
        "a/b.c",
        "a.b/c",
        "a b.c",
        "a.b\r\nX: y",
        "a.b\x00",
        "a\n.b",
        7,
    ],
)
def test_bad_names_are_refused(name: Any) -> None:
    with pytest.raises(InvalidRequest):
        split_name(name)


def test_good_names_split_at_first_dot() -> None:
    assert split_name("user.get_profile") == ("user", "get_profile")
    assert split_name("a-b.c.d") == ("a-b", "c.d")
    assert split_name("a.b..c") == ("a", "b..c")


@pytest.mark.parametrize(
    "header",
    [
        ("X-A", "a\r\nX-B: b"),
        ("X-A\r\n", "v"),
        ("X A", "v"),
        ("X-A", "a\x00"),
        ("", "v"),
        ("X", " v"),
    ],
)
def test_bad_headers_refused_before_any_connection(raw_server: Any, header: Any) -> None:
    srv: RawServer = raw_server(keepalive_answering(lambda h, b: http_response(b"\xc0")))
    client = Client(srv.url)
    with pytest.raises(InvalidRequest):
        client.call("a.b", 1, headers=dict([header]))
    with pytest.raises(InvalidRequest):
        Client(srv.url, headers=dict([header]))
    with pytest.raises(InvalidRequest):
        client.call("a.b\r\nEvil: 1", 1)
    client.close()
    assert srv.connections == 0


@pytest.mark.parametrize(
    "url",
    ["ftp://h", "http://", "h:80", "http://u:p@h", "http://h/?q=1", "http://h:99999", "http://h x"],
)
def test_bad_endpoints_refused(url: str) -> None:
    with pytest.raises(InvalidRequest):
        Endpoint.parse(url)


def test_endpoint_parsing() -> None:
    e = Endpoint.parse("http://[::1]:8080/api/")
    assert (e.host, e.port, e.base_path, e.host_header) == ("::1", 8080, "/api", "[::1]:8080")
    assert Endpoint.parse("https://example.test").host_header == "example.test"


def test_headers_are_case_insensitive() -> None:
    h = Headers([("Content-Type", "a"), ("X-Y", "1"), ("x-y", "2")])
    assert h["content-type"] == "a" and h["X-Y"] == "1, 2" and h.get_all("x-Y") == ["1", "2"]
    assert "CONTENT-TYPE" in h and len(h) == 2


# -- decoding answers ----------------------------------------------------------------


def _resp(status: int, body: bytes, ctype: str = "application/x-msgpack") -> Response:
    return Response(status, "R", Headers([("Content-Type", ctype)]), body)


def test_decode_response_maps_envelopes_and_foreign_bodies() -> None:
    c = Codec()
    assert decode_response(_resp(200, c.pack([1, 2])), c, "a.b") == [1, 2]
    env = c.pack({"error": {"type": "KeyError", "message": "nope", "data": {"k": 1}}})
    with pytest.raises(rpcclient.RemoteError) as info:
        decode_response(_resp(500, env), c, "a.b")
    assert (info.value.type, info.value.remote_message, info.value.data) == (
        "KeyError",
        "nope",
        {"k": 1},
    )
    assert info.value.status == 500
    nf = c.pack({"error": {"type": "MethodNotFound", "message": "no", "data": None}})
    with pytest.raises(rpcclient.MethodNotFound):
        decode_response(_resp(404, nf), c, "a.b")
    html = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
    with pytest.raises(rpcclient.HTTPStatusError) as info2:
        decode_response(_resp(502, html, "text/html"), c, "a.b")
    assert info2.value.status == 502 and "502 Bad Gateway" in info2.value.snippet
    with pytest.raises(rpcclient.DecodeError):
        decode_response(_resp(200, b"\xc1"), c, "a.b")


def test_custom_error_decoder_is_used() -> None:
    def decoder(status: int, headers: Any, body: bytes, codec: Codec, name: str) -> Any:
        return rpcclient.RemoteError("legacy", type="Legacy", status=status, name=name)

    client = Client(
        "http://127.0.0.1:9",
        transport=MockTransport(lambda r: _resp(500, b"oops", "text/plain")),
        error_decoder=decoder,
    )
    with pytest.raises(rpcclient.RemoteError, match="legacy"):
        client.call("a.b")


# -- Client and proxy with MockTransport -------------------------------------------


def test_mock_transport_and_service_proxy_payloads() -> None:
    seen: list[Any] = []

    def handler(request: rpcclient.Request) -> Response:
        assert isinstance(request.body, bytes)
        seen.append((request.target, msgpack.unpackb(request.body, strict_map_key=False)))
        return msgpack_response("ok")

    mock = MockTransport(handler)
    client = Client({"user": "http://h1:8001/base", "*": "http://h2"}, transport=mock)
    user = client.service("user")
    assert user.get(1, 2) == "ok"
    assert user.get(id=1) == "ok"
    assert user.get() == "ok"
    assert client.call("other.m", {1: 2}) == "ok"
    assert seen == [
        ("/base/user/get", [1, 2]),
        ("/base/user/get", {"id": 1}),
        ("/base/user/get", None),
        ("/other/m", {1: 2}),
    ]
    with pytest.raises(InvalidRequest, match="not both"):
        user.get(1, id=2)
    with pytest.raises(AttributeError):
        user._private  # noqa: B018
    strict = client.service("user", methods=["get"])
    with pytest.raises(AttributeError, match="no method 'gte'"):
        strict.gte  # noqa: B018
    assert mock.requests[0].endpoint.host == "h1"
    assert mock.requests[-1].endpoint.host == "h2"


def test_path_template_and_unknown_service() -> None:
    mock = MockTransport(lambda r: msgpack_response(r.target))
    client = Client({"user": "http://h/x"}, transport=mock, path_template="/rpc/{service}.{method}")
    assert client.call("user.get") == "/x/rpc/user.get"
    with pytest.raises(InvalidRequest, match="no endpoint for service"):
        client.call("billing.charge")
    with pytest.raises(InvalidRequest):
        Client("http://h", path_template="no-slash")


def test_request_too_large_is_refused_before_sending() -> None:
    mock = MockTransport(lambda r: msgpack_response(None))
    client = Client("http://h", transport=mock, max_request_size=100)
    with pytest.raises(rpcclient.RequestTooLarge):
        client.call("a.b", b"x" * 200)
    assert mock.requests == []


def test_transport_chosen_by_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RPCCLIENT_TRANSPORT", "nonexistent")
    with pytest.raises(ValueError, match="unknown transport 'nonexistent'"):
        Client("http://h")
    monkeypatch.setenv("RPCCLIENT_TRANSPORT", "gevent")
    client = Client("http://h")
    assert client.transport.name == "gevent"
    client.close()


def test_codec_packer_recovers_after_a_failed_pack() -> None:
    c = Codec()
    with pytest.raises(InvalidRequest):
        c.pack([1, 2, object()])
    assert c.pack([7]) == msgpack.packb([7])  # nothing left over from the failed call


def test_missing_transport_library_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "requests", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "rpcclient._transports.blocking.requests", raising=False)

    monkeypatch.delitem(transports_base._TRANSPORTS, "requests", raising=False)
    with pytest.raises(ValueError, match="needs 'requests', which is not installed"):
        Client("http://h", transport="requests")


def test_request_and_response_compare_and_print_by_their_fields() -> None:
    endpoint = Endpoint.parse("http://127.0.0.1:1")
    one = Request(endpoint, "POST", "/a/b", [(b"X-A", b"1")], b"\x90", "a.b")
    assert one == Request(endpoint, "POST", "/a/b", [(b"X-A", b"1")], b"\x90", "a.b")
    assert one != Request(endpoint, "POST", "/a/c", [(b"X-A", b"1")], b"\x90", "a.b")
    assert "target='/a/b'" in repr(one) and repr(one).startswith("Request(endpoint=")
    answer = Response(200, "OK", Headers([("A", "1")]), b"x")
    assert answer == Response(200, "OK", Headers([("A", "1")]), b"x")
    assert answer != Response(200, "OK", Headers([("A", "1")]), b"y")
    assert answer != one and repr(answer).endswith("body=b'x', http_version='1.1')")
    with pytest.raises(TypeError):
        hash(answer)  # mutable, as the dataclasses they replace were


def test_policies_and_models_copy_and_pickle_as_they_are() -> None:
    """In both builds: compiled dataclasses lose the support dataclasses add."""
    import copy
    import pickle

    values = [
        Timeout(connect=0.5, read=2.0),
        rpcclient.Retry(attempts=4),
        Endpoint.parse("http://127.0.0.1:8000/base"),
        Codec(use_bin_type=False),
        Response(200, "OK", Headers([("A", "1")]), b"x"),
        Request(Endpoint.parse("http://h:1"), "POST", "/a", [], b"\x90", "a.b"),
    ]
    for value in values:
        for other in (copy.copy(value), copy.deepcopy(value), pickle.loads(pickle.dumps(value))):
            assert type(other) is type(value) and other == value, value
    endpoint = pickle.loads(pickle.dumps(values[2]))
    assert endpoint.key == values[2].key  # the derived field is derived again


def test_a_client_can_be_mocked_extended_and_subclassed_as_python_code_expects() -> None:
    """In the compiled build too: Client and GeventTransport are interpreted subclasses."""
    from unittest import mock

    with Client("http://127.0.0.1:1") as client:
        with mock.patch.object(client, "call", return_value="on the instance"):
            assert client.call("a.b", []) == "on the instance"
        with mock.patch.object(Client, "call", return_value="on the class"):
            assert client.call("a.b", []) == "on the class"
        client.app_state = {"k": 1}  # type: ignore[attr-defined]
        assert client.app_state == {"k": 1}  # type: ignore[attr-defined]
        injected = rpcclient.ConnectionLost("injected")
        with mock.patch.object(client.transport, "send", side_effect=injected):
            with pytest.raises(rpcclient.ConnectionLost, match="injected"):
                client.call("a.b", [])

    class Tagging(Client):
        def call(self, name: str, args: Any = None, **kw: Any) -> Any:
            return ("tagged", super().call(name, args, **kw))

    handler = MockTransport(lambda request: msgpack_response(request.name))
    with Tagging("http://users", transport=handler) as tagging:
        assert tagging.call("user.get", [1]) == ("tagged", "user.get")
