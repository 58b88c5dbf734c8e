"""Hostile review: a TLS handshake cut short by the caller (its own
gevent.Timeout, a kill, or a hedge's _Superseded) closes its socket at once.

A scripted raw-socket server on loopback (tests/support/raw.py RawServer) that
takes the ClientHello and never answers it.
"""

from __future__ import annotations

import gc
from typing import Any

import gevent
import gevent.event
import pytest

from rpcclient import Client
from tests.support.raw import RawServer


def test_a_tls_handshake_cut_by_the_callers_timeout_closes_its_socket(raw_server: Any) -> None:
    closed = gevent.event.Event()

    def hello_then_silence(sock: Any, server: RawServer) -> None:
        if sock.recv(65536):  # the ClientHello: never answered
            while sock.recv(65536):
                pass
        closed.set()  # the client closed its end

    srv: RawServer = raw_server(hello_then_silence)
    url = srv.url.replace("http://", "https://")
    with Client(url) as client:
        # the exception keeps the cut handshake's frames (and so the TLS socket
        # object) alive: only an explicit close ends the connection now
        gc.disable()
        try:
            with pytest.raises(gevent.Timeout), gevent.Timeout(0.2):
                client.call("svc.who", 1, timeout=5.0)
            assert closed.wait(3.0), "the cut handshake's connection was left open"
        finally:
            gc.enable()
