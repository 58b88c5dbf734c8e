"""A raw HTTP/1.1 client for tests of the bundled server: what is asserted is
exactly what went over the wire.

Every read is bounded by :data:`IO_TIMEOUT` through gevent sockets, so it is
cooperative whether or not the process is monkey-patched.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gevent.socket
import msgpack

IO_TIMEOUT = 5.0
REPO = Path(__file__).resolve().parents[2]


# -- a raw HTTP/1.1 client -----------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    head: bytes
    body: bytes

    @property
    def error(self) -> dict[str, Any]:
        assert self.headers["content-type"] == "application/x-msgpack"
        payload = msgpack.unpackb(self.body, raw=False, strict_map_key=False)
        assert set(payload) == {"error"}
        err: dict[str, Any] = payload["error"]
        assert set(err) == {"type", "message", "data"}
        assert isinstance(err["type"], str) and isinstance(err["message"], str)
        return err

    @property
    def result(self) -> Any:
        assert self.status == 200, (self.status, self.body)
        assert self.headers["content-type"] == "application/x-msgpack"
        return msgpack.unpackb(self.body, raw=False, strict_map_key=False)


class Conn:
    """One client connection; every read is bounded by IO_TIMEOUT."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.sock = gevent.socket.create_connection(address[:2], timeout=IO_TIMEOUT)
        self.buf = bytearray()

    def __enter__(self) -> Conn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buf += chunk
        return bool(chunk)

    def read_reply(self, *, with_body: bool = True) -> Reply:
        while b"\r\n\r\n" not in self.buf:
            if not self._fill():
                raise EOFError(f"connection closed after {bytes(self.buf)!r}")
        head, _, rest = bytes(self.buf).partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers["content-length"]) if with_body else 0
        self.buf[:] = rest
        while len(self.buf) < length:
            if not self._fill():
                raise EOFError("connection closed inside the body")
        body = bytes(self.buf[:length])
        del self.buf[:length]
        return Reply(status, headers, head, body)

    def at_eof(self) -> bool:
        """True when the server closed: recv returns b'' (bounded by IO_TIMEOUT)."""
        return not self.buf and not self._fill()

    def call(self, path: str, args: Any = None, **kw: Any) -> Reply:
        self.send(post(path, msgpack.packb(args), **kw))
        return self.read_reply()


def post(
    path: str,
    body: bytes = b"",
    *,
    method: str = "POST",
    content_type: str | None = "application/x-msgpack",
    headers: dict[str, str] | None = None,
    length: int | None = None,
) -> bytes:
    """A request head (and body); ``length=-1`` sends no Content-Length."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    if content_type is not None:
        lines.append(f"Content-Type: {content_type}")
    if length != -1:
        lines.append(f"Content-Length: {len(body) if length is None else length}")
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
