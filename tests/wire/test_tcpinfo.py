"""One TCP_INFO parser (rpcclient._transports.tcpinfo), which the A/B tool's
counters read through.

Parsing is checked on a built ``struct tcp_info`` (a pure unit: a fake socket
that only answers getsockopt), the reading on a real loopback connection.
"""

from __future__ import annotations

import socket
import struct
import sys
from typing import Any

import pytest

from rpcclient._tools.ab import counters
from rpcclient._transports import tcpinfo
from rpcclient._transports.tcpinfo import (
    BYTES_RECEIVED,
    DATA_SEGS_IN,
    DATA_SEGS_OUT,
    data_segs_in,
    data_segs_out,
    read_tcp_info,
)

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not hasattr(socket, "TCP_INFO"),
    reason="needs Linux TCP_INFO",
)


class FakeInfo:
    """A socket whose TCP_INFO is ``raw`` (or raises ``error``)."""

    def __init__(self, raw: bytes = b"", error: OSError | None = None) -> None:
        self.raw = raw
        self.error = error

    def getsockopt(self, level: int, option: int, size: int) -> bytes:
        assert level == socket.IPPROTO_TCP
        if self.error is not None:
            raise self.error
        return self.raw[:size]


def _struct(length: int = 232) -> bytes:
    """A ``struct tcp_info`` with known fields, cut to what a kernel of that length gives."""
    raw = bytearray(232)
    struct.pack_into("Q", raw, BYTES_RECEIVED[0], 123_456_789_012)
    struct.pack_into("I", raw, DATA_SEGS_IN[0], 7)
    struct.pack_into("I", raw, DATA_SEGS_OUT[0], 9)
    return bytes(raw[:length])


@linux_only
def test_fields_are_read_at_their_offsets_from_one_getsockopt() -> None:
    sock = FakeInfo(_struct())
    assert read_tcp_info(sock, DATA_SEGS_IN, BYTES_RECEIVED, DATA_SEGS_OUT) == (
        7,
        123_456_789_012,
        9,
    )
    assert data_segs_in(sock) == 7
    assert data_segs_out(sock) == 9
    assert counters.tcp_counters(sock) == (7, 123_456_789_012)


@linux_only
def test_a_kernel_struct_too_short_for_a_field_is_unknown() -> None:
    short = FakeInfo(_struct(156))  # ends before tcpi_data_segs_out
    assert data_segs_in(short) == 7
    assert data_segs_out(short) is None
    assert read_tcp_info(short, DATA_SEGS_IN, DATA_SEGS_OUT) is None
    assert counters.tcp_counters(FakeInfo(_struct(150))) is None


def test_a_socket_without_tcp_info_is_unknown() -> None:
    assert data_segs_in(FakeInfo(error=OSError("not TCP"))) is None
    assert counters.tcp_counters(FakeInfo(error=OSError("not TCP"))) is None


def test_the_ab_counters_use_the_one_parser() -> None:
    assert counters.read_tcp_info is tcpinfo.read_tcp_info
    assert not hasattr(counters, "struct")  # no second struct tcp_info reader there


@linux_only
def test_a_loopback_connection_counts_what_it_carried() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname()[:2])
    server, _ = listener.accept()
    try:
        before = counters.tcp_counters(server)
        assert before is not None
        client.sendall(b"x" * 100)
        got = b""
        while len(got) < 100:
            got += server.recv(100)
        after: Any = counters.tcp_counters(server)
        assert after[0] == before[0] + 1  # one write, one data segment on loopback
        assert after[1] == before[1] + 100
        assert data_segs_out(client) == data_segs_in(server)
    finally:
        for s in (client, server, listener):
            s.close()
