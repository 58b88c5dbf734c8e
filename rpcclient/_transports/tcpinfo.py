"""Read TCP counters of a connected socket from Linux ``TCP_INFO`` (no root).

The one parser of ``struct tcp_info`` in the project: the A/B tool's
counting server (rpcclient._tools.ab.counters, which bench/fixed_server.py
uses too) and the tests read their fields through :func:`read_tcp_info`.
One request in one write arrives as one data segment on loopback, a head
and body written apart as two.
"""

from __future__ import annotations

import socket
import struct
from typing import Any, Final

__all__ = [
    "AVAILABLE",
    "BYTES_RECEIVED",
    "DATA_SEGS_IN",
    "DATA_SEGS_OUT",
    "data_segs_in",
    "data_segs_out",
    "read_tcp_info",
]

_TCP_INFO = getattr(socket, "TCP_INFO", None)
#: whether this platform has ``TCP_INFO`` at all (Linux)
AVAILABLE: Final = _TCP_INFO is not None

# Fields of ``struct tcp_info`` (linux/tcp.h, stable ABI since 4.6), as
# (offset, struct format): ... u64 tcpi_bytes_received @128, u32
# tcpi_segs_out @136, tcpi_segs_in @140, tcpi_notsent_bytes @144,
# tcpi_min_rtt @148, tcpi_data_segs_in @152, tcpi_data_segs_out @156
BYTES_RECEIVED: Final = (128, "Q")
DATA_SEGS_IN: Final = (152, "I")
DATA_SEGS_OUT: Final = (156, "I")
#: bytes asked of the kernel: every field above (a newer kernel's struct is longer)
_WANT = 160


def read_tcp_info(sock: Any, *fields: tuple[int, str]) -> tuple[int, ...] | None:
    """The ``fields`` (:data:`DATA_SEGS_IN`...) of ``sock``'s ``tcp_info``,
    from one ``getsockopt``, in order.

    None where they are unknown: no ``TCP_INFO`` here, a socket that is not
    TCP (or closed), a kernel whose struct stops before one of the fields.
    """
    if _TCP_INFO is None:
        return None
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, _WANT)
    except OSError:
        return None
    values = []
    for offset, form in fields:
        if len(raw) < offset + struct.calcsize(form):
            return None  # kernel too old for this field
        values.append(int(struct.unpack_from(form, raw, offset)[0]))
    return tuple(values)


def data_segs_in(sock: Any) -> int | None:
    """Data-carrying segments received on ``sock`` so far; None where unknown."""
    got = read_tcp_info(sock, DATA_SEGS_IN)
    return None if got is None else got[0]


def data_segs_out(sock: Any) -> int | None:
    """Data-carrying segments sent on ``sock`` so far; None where unknown."""
    got = read_tcp_info(sock, DATA_SEGS_OUT)
    return None if got is None else got[0]
