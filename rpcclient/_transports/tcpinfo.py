"""Read TCP counters of a connected socket from Linux ``TCP_INFO`` (no root).

Used by the bundled server (A/B tool) and tests to count the data segments
a peer sent: one request in one write arrives as one data segment on
loopback, a head and body written apart as two.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

__all__ = ["data_segs_in", "data_segs_out"]

# Offsets in ``struct tcp_info`` (linux/tcp.h, stable ABI since 4.6):
# ... u32 tcpi_segs_out @136, tcpi_segs_in @140, tcpi_notsent_bytes @144,
# tcpi_min_rtt @148, tcpi_data_segs_in @152, tcpi_data_segs_out @156
_DATA_SEGS_IN = 152
_DATA_SEGS_OUT = 156
_TCP_INFO = getattr(socket, "TCP_INFO", None)


def _read_u32(sock: Any, offset: int) -> int | None:
    if _TCP_INFO is None:
        return None
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, 256)
    except OSError:
        return None
    if len(raw) < offset + 4:
        return None  # kernel too old for this field
    return int(struct.unpack_from("I", raw, offset)[0])


def data_segs_in(sock: Any) -> int | None:
    """Data-carrying segments received on ``sock`` so far; None where unknown."""
    return _read_u32(sock, _DATA_SEGS_IN)


def data_segs_out(sock: Any) -> int | None:
    """Data-carrying segments sent on ``sock`` so far; None where unknown."""
    return _read_u32(sock, _DATA_SEGS_OUT)
