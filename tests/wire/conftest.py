"""Fixtures of the wire tier (the client and its transports on loopback)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import gevent
import pytest


@pytest.fixture
def full_listener() -> Iterator[str]:
    """A listener whose accept queue is full: new connects hang (SYN dropped)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    addr = listener.getsockname()
    fillers = []
    for _ in range(4):
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect(addr)
        except BlockingIOError:
            pass
        fillers.append(s)
    gevent.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{addr[1]}"
    finally:
        for s in fillers:
            s.close()
        listener.close()
