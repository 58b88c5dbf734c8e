"""Counting at the server, without root: request data segments and bytes per call.

The bundled server run by :func:`serve_counting` keeps a duplicate
descriptor of every accepted connection and reads Linux ``TCP_INFO`` from it
(``tcpi_data_segs_in``, ``tcpi_bytes_received``), so client-to-server data
segments and request bytes per call are measured for any client. The totals
are served at :data:`CONTROL_PATH` (``GET``), answered before the RPC app
sees the request; the connection that asks is left out of the counts.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from ..._transports.tcpinfo import AVAILABLE, BYTES_RECEIVED, DATA_SEGS_IN, read_tcp_info

__all__ = [
    "CONTROL_PATH",
    "ConnectionCounters",
    "fetch_tcp_totals",
    "serve_counting",
    "tcp_counters",
]

#: ``GET`` here answers the connection counters as JSON (see the module docstring)
CONTROL_PATH = "/.rpcclient-ab/tcp-info"

# -- counting at the server ----------------------------------------------------------


def tcp_counters(sock: Any) -> tuple[int, int] | None:
    """``(data_segs_in, bytes_received)`` of a connected TCP socket; None where unknown
    (read by rpcclient._transports.tcpinfo, the one ``TCP_INFO`` parser)."""
    got = read_tcp_info(sock, DATA_SEGS_IN, BYTES_RECEIVED)
    return None if got is None else (got[0], got[1])


class ConnectionCounters:
    """Received data segments and bytes over every connection a server accepted.

    ``opened``/``closed`` bracket a connection; ``totals()`` adds the live
    ones (read now) to the sum left by closed ones, so it only grows. A
    connection marked ``control`` (the one asking for the totals) counts
    nowhere. Bookkeeping only: callers own the sockets they pass in.
    """

    def __init__(self) -> None:
        self._live: dict[int, Any] = {}
        self._control: set[int] = set()
        self._closed_segs = 0
        self._closed_bytes = 0
        self.connections = 0
        self.available = AVAILABLE

    def opened(self, key: int, probe: Any) -> None:
        self._live[key] = probe
        self.connections += 1

    def mark_control(self, key: int) -> None:
        if key in self._live and key not in self._control:
            self._control.add(key)
            self.connections -= 1

    def closed(self, key: int) -> None:
        probe = self._live.pop(key, None)
        if key in self._control:
            self._control.discard(key)
            return
        if probe is not None:
            counters = tcp_counters(probe)
            if counters is None:
                self.available = False
            else:
                self._closed_segs += counters[0]
                self._closed_bytes += counters[1]

    def totals(self) -> dict[str, Any]:
        segs, received = self._closed_segs, self._closed_bytes
        available = self.available
        for key, probe in list(self._live.items()):
            if key in self._control:
                continue
            counters = tcp_counters(probe)
            if counters is None:
                available = False
                continue
            segs += counters[0]
            received += counters[1]
        return {
            "available": available,
            "data_segs_in": segs,
            "bytes_in": received,
            "connections": self.connections,
        }


def serve_counting(app: Callable[..., Any], host: str = "127.0.0.1", port: int = 0) -> Any:
    """Start the bundled server on ``app`` with connection counters; returns it started.

    The server is an :class:`rpcclient.server.RPCServer` (the bundled one,
    unchanged on the RPC path) whose ``counters`` attribute is a
    :class:`ConnectionCounters`, and whose app answers :data:`CONTROL_PATH`.
    """
    from ...server._engine.app import RPCServer

    counters = ConnectionCounters()

    class _CountingServer(RPCServer):  # type: ignore[misc]
        def handle(self, sock: Any, address: Any) -> None:
            # pywsgi closes the socket before handle() returns; a duplicate
            # descriptor keeps TCP_INFO readable until we have read it.
            key = id(sock)
            try:
                probe: Any = socket.socket(fileno=os.dup(sock.fileno()))
            except OSError:
                probe = None
            counters.opened(key, probe)
            try:
                super().handle(sock, address)
            finally:
                counters.closed(key)
                if probe is not None:
                    probe.close()

    def control_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if environ.get("PATH_INFO") == CONTROL_PATH:
            sock = getattr(environ.get("wsgi.input"), "socket", None)
            if sock is not None:
                counters.mark_control(id(sock))
            body = json.dumps(counters.totals()).encode()
            start_response(
                "200 OK",
                [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
            )
            return [body]
        return app(environ, start_response)

    server = _CountingServer((host, port), control_app)
    server.counters = counters
    server.start()
    return server


def fetch_tcp_totals(url: str, timeout: float = 5.0) -> dict[str, Any] | None:
    """``GET url + CONTROL_PATH`` on a fresh connection; the counters, or None.

    None when the server does not answer that path with JSON counters (not
    one of ours) or its kernel has no ``TCP_INFO``. Works with plain and
    gevent-patched sockets alike.
    """
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname is None:
        return None
    base = parts.path.rstrip("/")
    host = parts.hostname
    request = (
        f"GET {base}{CONTROL_PATH} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n\r\n"
    ).encode("latin-1")
    try:
        with socket.create_connection((host, parts.port or 80), timeout=timeout) as sock:
            sock.sendall(request)
            chunks = []
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                chunks.append(data)
    except OSError:
        return None
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    if not head.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200")):
        return None
    try:
        totals = json.loads(body)
    except ValueError:
        return None
    if not isinstance(totals, dict) or not totals.get("available"):
        return None
    return totals
