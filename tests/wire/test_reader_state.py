"""The response reader's read past the parser, as units over a socket pair.

A body announced above PREALLOCATE_ABOVE gets its buffer at once, and once
the head is framed the rest is read into it past llhttp; the reader's state
then moves by its own methods only (body_filled, filled_to,
ended_past_parser), never by writes from outside.
"""

from __future__ import annotations

import socket

import pytest

from rpcclient._transports.gevent.http11 import (
    PREALLOCATE_ABOVE,
    DeadlinePassed,
    ResponseReader,
    _read_rest_of_body,
)

SIZE = PREALLOCATE_ABOVE + 1000
BODY = bytes(range(256)) * (SIZE // 256) + bytes(SIZE % 256)


def _head(extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n" % (SIZE, extra)


def _started(first: int, extra: bytes = b"") -> ResponseReader:
    reader = ResponseReader(False, 65536, 1 << 24)
    reader.feed_data(_head(extra) + BODY[:first])
    assert reader.preallocated and not reader.final
    assert reader.body_filled() == first and reader.body_expected() == SIZE
    return reader


def test_the_reader_methods_move_its_state() -> None:
    reader = _started(100)
    reader.filled_to(5000)
    assert reader.body_filled() == 5000
    reader.ended_past_parser(extra=True)
    assert reader.final and reader.extra and reader.bypassed
    assert not reader.reusable()
    reader.reset(False)  # a new parser: the old one stopped inside the body
    assert not reader.bypassed and not reader.final and not reader.extra
    reader.feed_data(b"HTTP/1.1 204 No Content\r\n\r\n")
    assert reader.final and reader.status == 204 and reader.reusable()


@pytest.mark.parametrize("after", [b"", b"HTTP/1.1 200 OK\r\n"])
def test_the_rest_of_a_large_body_is_read_into_its_buffer(after: bytes) -> None:
    ours, theirs = socket.socketpair()
    try:
        reader = _started(100)
        theirs.sendall(BODY[100:] + after)
        _read_rest_of_body(ours, reader, tls=False)
        assert reader.final and reader.bypassed
        assert reader.body_filled() == SIZE
        assert bytes(reader.response().body) == BODY
        assert reader.extra is bool(after)  # bytes past the answer: not reusable
        assert reader.reusable() is not bool(after)
    finally:
        ours.close()
        theirs.close()


def test_a_large_body_read_past_the_parser_keeps_the_heads_close() -> None:
    ours, theirs = socket.socketpair()
    try:
        reader = _started(0, b"Connection: close\r\n")
        theirs.sendall(BODY)
        _read_rest_of_body(ours, reader, tls=False)
        assert reader.final and not reader.extra
        assert not reader.should_keep_alive()  # the head's verdict, not the parser's
    finally:
        ours.close()
        theirs.close()


def test_a_body_cut_short_notes_how_far_it_got() -> None:
    ours, theirs = socket.socketpair()
    try:
        reader = _started(100)
        theirs.sendall(BODY[100:3100])
        theirs.shutdown(socket.SHUT_WR)
        with pytest.raises(EOFError, match="truncated"):
            _read_rest_of_body(ours, reader, tls=False)
        assert reader.body_filled() == 3100
        assert not reader.final
    finally:
        ours.close()
        theirs.close()


def test_a_body_past_its_deadline_notes_how_far_it_got() -> None:
    ours, theirs = socket.socketpair()
    try:
        reader = _started(100)
        theirs.sendall(BODY[100:2100])
        with pytest.raises(DeadlinePassed):
            _read_rest_of_body(ours, reader, tls=False, expires=0.0)  # long past
        assert reader.body_filled() == 2100
        assert not reader.final
    finally:
        ours.close()
        theirs.close()
