"""The plain call path's slow branches, as pure units (no sockets: MockTransport).

``ClientCore._call`` keeps its success path straight and leaves each other
way to a named slow path; these pin what those paths must keep doing.
"""

from __future__ import annotations

from typing import Any

import pytest

from rpcclient import Client, Codec, MockTransport, RequestTooLarge, msgpack_response


class CountingCodec(Codec):
    """The default codec, counting what it packs (a class list: Codec is frozen)."""

    packed: list[Any] = []  # noqa: RUF012 - shared on purpose, reset by each test

    def pack(self, obj: Any, *, name: str | None = None) -> bytes:
        CountingCodec.packed.append(obj)
        return super().pack(obj, name=name)


def _client(**kw: Any) -> tuple[Client, MockTransport]:
    mock = MockTransport(lambda request: msgpack_response("ok"))
    return Client("http://127.0.0.1:9", transport=mock, codec=CountingCodec(), **kw), mock


def test_an_oversized_body_is_packed_once_and_never_sent() -> None:
    CountingCodec.packed = []
    client, mock = _client(max_request_size=100)
    with client, pytest.raises(RequestTooLarge, match="request body of 202 bytes"):
        client.call("svc.m", b"x" * 200)
    assert len(CountingCodec.packed) == 1  # was 2: the error packed the args again
    assert mock.requests == []


def test_a_body_at_the_limit_is_packed_once_and_sent() -> None:
    CountingCodec.packed = []
    client, mock = _client(max_request_size=202)
    with client:
        assert client.call("svc.m", b"x" * 200) == "ok"
    assert len(CountingCodec.packed) == 1
    assert len(mock.requests) == 1


def test_prepare_refuses_an_oversized_body_the_same_way() -> None:
    CountingCodec.packed = []
    client, _ = _client(max_request_size=100)
    with client, pytest.raises(RequestTooLarge, match="above max_request_size \\(100\\)"):
        client.prepare("svc.m", b"x" * 200)
    assert len(CountingCodec.packed) == 1
