"""gevent.pywsgi, specialised for many small RPC answers on keep-alive connections.

Stock pywsgi is a sound HTTP/1.1 server (hard limits on the request line and
headers, CR/LF refused in response headers). This module changes only what
costs an RPC server latency or correctness, and states each rule here:

- **One write per response.** When the head goes out together with a known
  first body chunk (a WSGI app returning ``[body]``), head and body leave in
  ONE ``sendall``. Stock pywsgi sends the head, then the body: two writes, so
  with ``TCP_NODELAY`` two segments, and without it a Nagle / delayed-ACK
  stall on the second. A body above :data:`COALESCE_LIMIT` is not copied
  whole: the head travels with its first :data:`COALESCE_LIMIT` bytes and the
  rest follows, so the head never goes alone and no response is copied twice.
- **TCP_NODELAY** on every accepted connection: an answer is complete when it
  is written; nothing is gained by holding it back.
- **A response that closes the connection does not drain the request body.**
  Stock pywsgi reads (and throws away) whatever request body the app did not
  read, before the next request; for a ``413`` answered to a 1 GiB
  ``Content-Length`` that means reading 1 GiB, or waiting forever for a client
  that only sent the head. When the response says ``Connection: close``, the
  unread body is abandoned. The close is a lingering one (RFC 9112, 9.6): the
  connection is half-closed, then at most :data:`LINGER_BYTES` are read for at
  most :data:`LINGER_SECONDS`, so that a client still sending its body can
  finish and read the answer instead of meeting a reset.
- **Graceful stop.** :meth:`RPCServer.stop` stops accepting, closes idle
  keep-alive connections at once, lets requests in progress finish (their
  responses say ``Connection: close``) for up to ``timeout`` seconds, then
  kills what is left.
- Access log off by default; errors go to the ``rpcclient.server`` logger.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

import gevent
import gevent.pool
from gevent import pywsgi

__all__ = ["COALESCE_LIMIT", "LINGER_BYTES", "LINGER_SECONDS", "RPCHandler", "RPCServer"]

#: largest body copied behind the head into one write
COALESCE_LIMIT = 256 * 1024
#: how long, and how much, a closing connection reads of an abandoned body
LINGER_SECONDS = 2.0
LINGER_BYTES = 1024 * 1024

_log = logging.getLogger("rpcclient.server")


class _Input(pywsgi.Input):  # type: ignore[misc]
    """pywsgi's request body reader, with a switch to skip the final drain."""

    __slots__ = ("abandoned",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.abandoned = False

    def unread(self) -> bool:
        """True when part of the body may still be on the wire."""
        # A chunked body's end is only known to its reader; assume some is left.
        return bool(self.chunked_input or self.position < (self.content_length or 0))

    def _discard(self) -> None:
        if not self.abandoned:
            super()._discard()


class RPCHandler(pywsgi.WSGIHandler):  # type: ignore[misc]
    """One connection: pywsgi's keep-alive loop with the rules of this module."""

    #: True from the moment a request line arrived until its response is done;
    #: an idle handler (waiting for the next request) may be killed at stop.
    busy = False
    _greenlet: Any = None
    wsgi_input: Any  # pywsgi's attribute; an _Input once get_environ() ran

    def handle(self) -> None:
        server = self.server
        self._greenlet = gevent.getcurrent()
        server.track(self)
        try:
            super().handle()
        finally:
            server.untrack(self)

    def kill_if_idle(self) -> None:
        if not self.busy and self._greenlet is not None:
            gevent.kill(self._greenlet)  # asynchronous: raises GreenletExit there

    def read_requestline(self) -> str:
        line: str = super().read_requestline()
        self.busy = True
        return line

    def handle_one_request(self) -> Any:
        try:
            return super().handle_one_request()
        finally:
            self.busy = False

    def get_environ(self) -> dict[str, Any]:
        environ: dict[str, Any] = super().get_environ()
        stock: Any = self.wsgi_input
        ours = _Input(
            stock.rfile,
            stock.content_length,
            socket=stock.socket,
            chunked_input=stock.chunked_input,
        )
        self.wsgi_input = ours
        if environ.get("wsgi.input") is stock:
            environ["wsgi.input"] = ours
        return environ

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Any:
        if self.server.stopping and not any(k.lower() == "connection" for k, _ in headers):
            headers = [*headers, ("Connection", "close")]
        write = super().start_response(status, headers, exc_info)
        if self.close_connection and isinstance(self.wsgi_input, _Input):
            self.wsgi_input.abandoned = True
        return write

    def handle_one_response(self) -> None:
        super().handle_one_response()
        inp = self.wsgi_input
        if isinstance(inp, _Input) and inp.abandoned and inp.unread() and self.socket is not None:
            self.busy = False  # the answer is out: stop() may cut the linger short
            self._linger()

    def _linger(self) -> None:
        # Closing a socket with unread data makes the kernel answer the client's
        # next segment with a reset: a client still writing its body gets an
        # error instead of our answer, and a reset may discard the answer from
        # its receive buffer. Half-close, then read (bounded) until it closes.
        sock = self.socket
        drained = 0
        try:
            sock.shutdown(socket.SHUT_WR)
            with gevent.Timeout(LINGER_SECONDS, False):
                while drained < LINGER_BYTES:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    drained += len(chunk)
        except OSError:
            pass

    def _write_with_headers(self, data: bytes) -> None:
        self.headers_sent = True
        self.finalize_headers()
        lines = [b"HTTP/1.1 " + self.status]
        lines.extend(name + b": " + value for name, value in self.response_headers)
        prefix = b"\r\n".join(lines) + b"\r\n\r\n"
        suffix = b""
        if data and self.response_use_chunked:
            prefix += b"%x\r\n" % len(data)
            suffix = b"\r\n"
        if len(data) <= COALESCE_LIMIT:
            self._sendall(prefix + data + suffix)
            return
        view = memoryview(data)
        self._sendall(prefix + view[:COALESCE_LIMIT])
        self._sendall(view[COALESCE_LIMIT:])
        if suffix:
            self._sendall(suffix)


class RPCServer(pywsgi.WSGIServer):  # type: ignore[misc]
    """A pywsgi server using :class:`RPCHandler`, started or not.

    ``spawn=None`` (the default) runs each connection in an unbounded
    :class:`gevent.pool.Pool`, so :meth:`stop` can wait for and kill them; an
    ``int`` bounds the number of connections (more wait in the backlog).
    ``address`` is the bound ``(host, port)`` once started.
    """

    handler_class = RPCHandler

    def __init__(
        self,
        listener: Any,
        application: Any,
        *,
        backlog: int | None = None,
        spawn: Any = None,
        log: Any = None,
        error_log: Any = _log,
        **kwargs: Any,
    ) -> None:
        if spawn is None:
            spawn = gevent.pool.Pool()
        super().__init__(
            listener,
            application,
            backlog=backlog,
            spawn=spawn,
            log=log,
            error_log=error_log,
            **kwargs,
        )
        self.stopping = False
        self._handlers: set[RPCHandler] = set()

    @property
    def url(self) -> str:
        """``http://host:port`` of the bound address (after start)."""
        host, port = self.address[:2]
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}"

    def track(self, handler: RPCHandler) -> None:
        self._handlers.add(handler)

    def untrack(self, handler: RPCHandler) -> None:
        self._handlers.discard(handler)

    def handle(self, sock: Any, address: Any) -> None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass  # not a TCP socket (a UNIX listener): nothing to tune
        super().handle(sock, address)

    def stop(self, timeout: float | None = None) -> None:
        """Stop accepting; close idle connections now; give busy ones
        ``timeout`` seconds (default :attr:`stop_timeout`), then kill them."""
        self.stopping = True
        self.close()
        for handler in list(self._handlers):
            handler.kill_if_idle()
        super().stop(timeout)

    def __repr__(self) -> str:
        busy = sum(1 for h in self._handlers if h.busy)
        state = "stopping" if self.stopping else ("serving" if self.started else "stopped")
        address = getattr(self, "address", None)
        return f"<RPCServer {state} at {address!r} connections={len(self._handlers)} busy={busy}>"
