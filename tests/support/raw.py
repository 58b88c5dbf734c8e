"""Scripted raw-socket servers and the bytes they read and write.

:class:`RawServer` runs a scripted handler per accepted connection (the
urllib3 ``dummyserver`` idea): byte-exact faults, counters of connections
and of TCP data segments received. It uses gevent's own sockets, so it
serves whether or not the test process is monkey-patched. The handlers and
answer builders here are the ones several test files share.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable
from typing import Any

import gevent.server
import gevent.socket

from rpcclient import Endpoint, Request
from rpcclient._transports.tcpinfo import data_segs_in

Handler = Callable[[Any, "RawServer"], None]


def read_request(sock: Any, buf: bytearray | None = None) -> tuple[bytes, bytes] | None:
    """Read one request (head, body by Content-Length or chunked) or None on EOF."""
    data = buf if buf is not None else bytearray()
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, rest = bytes(data).partition(b"\r\n\r\n")
    length = 0
    chunked = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
        if name.strip().lower() == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    body = bytearray(rest)
    if chunked:
        while not body.endswith(b"0\r\n\r\n"):
            chunk = sock.recv(65536)
            if not chunk:
                return None
            body += chunk
        decoded = bytearray()
        view = bytes(body)
        while True:
            size_line, _, view = view.partition(b"\r\n")
            size = int(size_line, 16)
            if size == 0:
                break
            decoded += view[:size]
            view = view[size + 2 :]
        body, leftover = decoded, b""
    else:
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                return None
            body += chunk
        body, leftover = body[:length], body[length:]
    if buf is not None:
        buf[:] = leftover
    return head, bytes(body)


def http_response(
    body: bytes = b"",
    status: str = "200 OK",
    headers: list[tuple[str, str]] | None = None,
    content_type: str = "application/x-msgpack",
) -> bytes:
    hdrs = [("Content-Type", content_type), ("Content-Length", str(len(body)))]
    hdrs += headers or []
    head = f"HTTP/1.1 {status}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs) + "\r\n"
    return head.encode("latin-1") + body


class RawServer:
    """A scripted TCP server: ``handler(sock, server)`` runs per connection."""

    def __init__(
        self, handler: Handler, *, backlog: int | None = None, ssl_context: Any = None
    ) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[tuple[bytes, bytes]] = []
        self.segments: list[int] = []  # data segments received per closed connection
        self._socks: list[Any] = []
        listener = gevent.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(backlog if backlog is not None else 128)
        kw = {"ssl_context": ssl_context} if ssl_context is not None else {}
        self.server = gevent.server.StreamServer(listener, self._handle, **kw)
        self.server.start()
        self.port = listener.getsockname()[1]
        scheme = "https" if ssl_context is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}"

    def _handle(self, sock: Any, address: Any) -> None:
        self.connections += 1
        self._socks.append(sock)
        try:
            self.handler(sock, self)
        except OSError:
            pass
        finally:
            segs = data_segs_in(sock)
            if segs is not None:
                self.segments.append(segs)
            sock.close()
            self._socks.remove(sock)

    def live_segments(self) -> int:
        """Data segments received so far on connections still open."""
        return sum(data_segs_in(s) or 0 for s in self._socks)

    def stop(self) -> None:
        for sock in list(self._socks):
            with contextlib.suppress(OSError):
                sock.close()
        self.server.stop(timeout=1)


def keepalive_answering(answer: Callable[[bytes, bytes], bytes]) -> Handler:
    """A handler that answers every request on a connection with ``answer(head, body)``."""

    def handler(sock: Any, server: RawServer) -> None:
        buf = bytearray()
        while True:
            req = read_request(sock, buf)
            if req is None:
                return
            server.requests.append(req)
            sock.sendall(answer(*req))

    return handler


def closes_when_reused(how: str, answer: bytes | None = None) -> Handler:
    """A handler that answers a connection's first request, then, when the next one
    arrives, closes: unread (``reset``: the kernel answers with RST) or read
    (``fin``) - what a server that closes idle keep-alive connections, or
    closes after each answer without saying so, does as a request goes out.
    ``answer``: the bytes of the one answer (a text/plain ``ok`` by default)."""

    def handler(sock: Any, server: RawServer) -> None:
        req = read_request(sock)
        if req is None:
            return
        server.requests.append(req)
        sock.sendall(answer or http_response(b"ok", content_type="text/plain"))
        if how == "reset":
            sock.recv(1, socket.MSG_PEEK)  # the next request is here, left unread
        else:
            again = read_request(sock)
            if again is not None:
                server.requests.append(again)

    return handler


def free_port() -> int:
    """A loopback port nobody listens on (bound once, then released)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


def raw_request(
    url: str,
    *,
    method: str = "POST",
    target: str = "/x",
    body: Any = b"",
    headers: list[tuple[bytes, bytes]] | None = None,
    name: str = "raw",
) -> Request:
    """A request for a transport's ``send``, past the Client."""
    return Request(
        endpoint=Endpoint.parse(url),
        method=method,
        target=target,
        headers=headers or [],
        body=body,
        name=name,
    )


def silent(sock: Any, server: RawServer) -> None:
    """A handler that records one request and never answers (returns when the client goes)."""
    req = read_request(sock)
    if req is not None:
        server.requests.append(req)
        sock.recv(1)


def echo(head: bytes, body: bytes) -> bytes:
    """An answer for :func:`keepalive_answering`: the request's body back, as msgpack."""
    return http_response(body)
