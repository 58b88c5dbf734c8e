"""Shared fixtures: real servers on 127.0.0.1, port 0, started per test.

- :class:`RawServer` runs a scripted handler per accepted connection (the
  urllib3 ``dummyserver`` idea): byte-exact faults, counters of connections
  and of TCP data segments received.
- ``wsgi_server`` runs any WSGI app on gevent.pywsgi (stock, Nagle on).
- ``bundled_server`` runs :mod:`rpcclient.server` with the example app.

The test process may or may not be monkey-patched; the gevent transport
needs no patching, so these servers use gevent's own sockets.
"""

from __future__ import annotations

import contextlib
import gc
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import gevent
import gevent.server
import gevent.socket
import pytest

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


def run_python(
    script: str, *args: str, timeout: float = 60, flags: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in a fresh interpreter (not monkey-patched) that imports this tree.

    subprocess is cooperative here when the test process is patched, so the
    loopback servers of the test keep serving while it runs.
    """
    return subprocess.run(
        [sys.executable, *flags, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
        check=False,
    )


@pytest.fixture
def raw_server() -> Iterator[Callable[..., RawServer]]:
    servers: list[RawServer] = []

    def start(handler: Handler, **kw: Any) -> RawServer:
        srv = RawServer(handler, **kw)
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.stop()


@pytest.fixture
def wsgi_server() -> Iterator[Callable[..., str]]:
    """Start a WSGI app on stock gevent.pywsgi; returns its base URL."""
    from gevent.pywsgi import WSGIServer

    servers: list[Any] = []

    def start(app: Any) -> str:
        srv = WSGIServer(("127.0.0.1", 0), app, log=None, error_log=None)
        srv.start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_port}"

    yield start
    for srv in servers:
        srv.stop(timeout=1)


@pytest.fixture
def bundled_server() -> Iterator[str]:
    """The bundled RPC server with the example app, on a free loopback port."""
    from rpcclient.example import app
    from rpcclient.server import serve

    server = serve(app, "127.0.0.1", 0)
    host, port = server.address[:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def open_fds() -> int:
    return len(os.listdir(f"/proc/{os.getpid()}/fd"))


class FdWatch:
    """Open descriptors of this process; ``mark()`` after servers are up."""

    def __init__(self) -> None:
        self.before = 0
        self.mark()

    def mark(self) -> None:
        gc.collect()
        self.before = open_fds()

    def check(self) -> None:
        gevent.sleep(0)
        gc.collect()
        after = open_fds()
        assert after <= self.before, f"fds before {self.before}, after {after}"


@pytest.fixture
def no_fd_leak() -> Iterator[FdWatch]:
    """Fail the test if it leaves file descriptors open past ``mark()``."""
    watch = FdWatch()
    yield watch
    watch.check()


def run_in_fork(check: Callable[[], bool]) -> None:
    """Run ``check`` in a forked child; fail here unless it returned True there.

    The child reports one byte through a pipe (read by gevent's threadpool,
    so the parent's hub keeps serving loopback servers meanwhile) and exits
    without running the parent's cleanup.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            code = 0 if check() else 2
        finally:
            os.write(write_fd, bytes([code]))
            os._exit(code)
    os.close(write_fd)
    with gevent.Timeout(10):
        got = gevent.os.tp_read(read_fd, 1)
    os.close(read_fd)
    os.waitpid(pid, 0)
    assert got == b"\x00", f"the check failed in the child (code {got!r})"
