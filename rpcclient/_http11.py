"""HTTP/1.1 on a gevent socket: the one-write request writer and the answer reader.

The writer's rule: **one write per request**, as the code sees it. The head is
never written alone:

- a small body is joined to the head and sent by one ``send`` (the copy of a
  few KiB costs less than a second syscall);
- a large body goes by one scatter-gather ``sendmsg([head, body])``, never
  copied;
- on TLS sockets (no ``sendmsg``) the head travels with the first
  ``COALESCE_LIMIT`` bytes of the body;
- a chunked body (an iterable) sends the head with the first chunk, then one
  write per chunk, the terminator joined to the last chunk.

A write is continued only when the kernel took part of it (a full socket
buffer); that is the only case where a request leaves in more than one call.

The reader feeds geventhttpclient's C parser (``HTTPResponseParser``, llhttp)
and collects the answer; it parses nothing itself. Limits (head size, body
size) are enforced inside the parser callbacks, so memory stays bounded by
them. TCP_QUICKACK is set only when a ``recv`` returned an incomplete answer:
an ACK is then pending, and delaying it would stall a server that writes its
head and body separately; the common one-segment answer costs no syscall.
"""

from __future__ import annotations

import socket as _stdsocket
from collections.abc import Iterable
from typing import Any

from geventhttpclient._parser import HTTPParseError, HTTPResponseParser

from ._models import Body, Headers, Request, Response

__all__ = [
    "COALESCE_LIMIT",
    "HeadCache",
    "MessageTooLarge",
    "ResponseReader",
    "build_head",
    "write_request",
]

#: bodies up to this size are copied next to the head; larger ones use sendmsg
COALESCE_LIMIT = 16 * 1024
_CHUNK_TERMINATOR = b"0\r\n\r\n"
_HAS_SENDMSG = hasattr(_stdsocket.socket, "sendmsg")
_TCP_QUICKACK: int | None = getattr(_stdsocket, "TCP_QUICKACK", None)
_IPPROTO_TCP = _stdsocket.IPPROTO_TCP


class NothingWritten(Exception):
    """The first write of a request failed: not one byte of it left."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


class MessageTooLarge(Exception):
    """Raised inside the parser when a limit is crossed (mapped by the transport)."""

    def __init__(self, what: str, limit: int, seen: int | None = None) -> None:
        super().__init__(what)
        self.what = what
        self.limit = limit
        self.seen = seen


# -- the writer -------------------------------------------------------------


class HeadCache:
    """Heads per ``(cache_key, target)``: what does not change between calls.

    The cached prefix holds the request line, Host and the client's fixed
    headers; only per-call headers and Content-Length are added per call.
    Bounded: cleared when full (keys are service methods, so it rarely is).
    """

    __slots__ = ("_heads", "maxsize")

    def __init__(self, maxsize: int = 4096) -> None:
        self._heads: dict[Any, bytes] = {}
        self.maxsize = maxsize

    def prefix(self, request: Request) -> bytes:
        key = request.cache_key
        if key is None:
            return _prefix(request)
        full_key = (key, request.endpoint.key, request.method, request.target)
        head = self._heads.get(full_key)
        if head is None:
            if len(self._heads) >= self.maxsize:
                self._heads.clear()
            head = self._heads[full_key] = _prefix(request)
        return head


def _prefix(request: Request) -> bytes:
    line = f"{request.method} {request.target} HTTP/1.1\r\n"
    lines = [line.encode("latin-1"), b"Host: %s\r\n" % request.endpoint.host_header.encode()]
    for name, value in request.fixed_headers:
        lines.append(name + b": " + value + b"\r\n")
    return b"".join(lines)


def build_head(prefix: bytes, headers: list[tuple[bytes, bytes]], length: int | None) -> bytes:
    """Finish a head: per-call headers, then Content-Length (or chunked)."""
    parts = [prefix]
    for name, value in headers:
        parts.append(name + b": " + value + b"\r\n")
    if length is None:
        parts.append(b"Transfer-Encoding: chunked\r\n\r\n")
    else:
        parts.append(b"Content-Length: %d\r\n\r\n" % length)
    return b"".join(parts)


def body_length(body: Body | None) -> int | None:
    """Content-Length of a body, or None for a chunked (iterable) body."""
    if body is None:
        return 0
    if isinstance(body, bytes | bytearray):
        return len(body)
    if isinstance(body, memoryview):
        return body.nbytes
    return None


def _first(call: Any, data: Any) -> int:
    try:
        return call(data)  # type: ignore[no-any-return]
    except OSError as exc:
        raise NothingWritten(exc) from exc


def _send_all(sock: Any, data: bytes | memoryview, first: bool = False) -> None:
    # One send call; continued only when the kernel took part of it.
    sent = _first(sock.send, data) if first else sock.send(data)
    if sent < len(data):
        view = memoryview(data)[sent:]
        while view:
            view = view[sock.send(view) :]


def _sendmsg_all(sock: Any, buffers: list[Any], first: bool = False) -> None:
    # One sendmsg; continued (from where the kernel stopped) only if partial.
    views = [memoryview(b).cast("B") for b in buffers]
    while views:
        sent = _first(sock.sendmsg, views) if first else sock.sendmsg(views)
        first = False
        while views and sent >= len(views[0]):
            sent -= len(views[0])
            views.pop(0)
        if views and sent:
            views[0] = views[0][sent:]


def write_request(sock: Any, head: bytes, body: Body | None, *, tls: bool = False) -> None:
    """Write head and body; see the module docstring for the write rules.

    Raises :class:`NothingWritten` when the very first write failed (the
    server cannot have seen any of the request), ``OSError`` after that.
    """
    if body is None or isinstance(body, bytes | bytearray | memoryview):
        if not body:
            _send_all(sock, head, True)
        elif len(body) <= COALESCE_LIMIT:
            _send_all(sock, head + body, True)
        elif _HAS_SENDMSG and not tls:
            _sendmsg_all(sock, [head, body], True)
        else:
            view = memoryview(body).cast("B")
            _send_all(sock, head + view[:COALESCE_LIMIT], True)
            _send_all(sock, view[COALESCE_LIMIT:])
        return
    _write_chunked(sock, head, body, tls=tls)


def _write_chunked(sock: Any, head: bytes, chunks: Iterable[Any], *, tls: bool) -> None:
    # Look one chunk ahead so that the terminator rides with the last chunk and
    # the head with the first: the head is never written alone.
    pending: list[Any] = [head]
    first = True
    for chunk in chunks:
        if not isinstance(chunk, bytes | bytearray | memoryview):
            raise TypeError(f"chunked body items must be bytes-like, not {type(chunk).__name__}")
        if not len(chunk):
            continue
        if len(pending) > 1:
            _flush(sock, pending, tls, first)
            pending, first = [], False
        pending += [b"%x\r\n" % len(chunk), chunk, b"\r\n"]
    pending.append(_CHUNK_TERMINATOR)
    _flush(sock, pending, tls, first)


def _flush(sock: Any, parts: list[Any], tls: bool, first: bool) -> None:
    total = sum(len(p) for p in parts)
    if total <= COALESCE_LIMIT or tls or not _HAS_SENDMSG:
        _send_all(sock, b"".join(parts), first)
    else:
        _sendmsg_all(sock, parts, first)


# -- the reader -------------------------------------------------------------


class _ExtraData(Exception):
    """Bytes past the end of the answer: a second message began."""


class ResponseReader(HTTPResponseParser):
    """Collects one answer from geventhttpclient's C parser.

    ``final`` turns true when a final (non-1xx) answer ended; ``reusable()``
    says whether the connection may carry another request (keep-alive, and
    nothing after the answer). ``feed`` raises :class:`MessageTooLarge` when a
    limit is crossed and ``HTTPParseError`` for malformed HTTP.
    """

    def __init__(self, head_request: bool, max_head: int, max_body: int) -> None:
        super().__init__()
        self.final = False
        self.extra = False
        self.status = 0
        self.reason = ""
        self.fields: list[tuple[str, str]] = []
        self.body = bytearray()
        self._head_request = head_request
        self._max_head = max_head
        self._max_body = max_body
        self._head_size = 0
        self._field = ""
        self._value: str | None = None

    # llhttp callbacks; tokens may arrive in pieces, so join them
    def _on_message_begin(self) -> None:
        if self.final:
            raise _ExtraData()
        # first message, or the final answer after a 1xx interim one
        self.reason = ""
        self.fields = []

    def _on_status(self, reason: str) -> None:
        self.reason += reason

    def _on_header_field(self, text: str) -> None:
        self._head_size += len(text) + 4  # inline: this runs for every header
        if self._head_size > self._max_head:
            raise MessageTooLarge("response head", self._max_head)
        if self._value is not None:
            self.fields.append((self._field, self._value))
            self._field, self._value = text, None
        else:
            self._field += text

    def _on_header_value(self, text: str) -> None:
        self._head_size += len(text)
        if self._head_size > self._max_head:
            raise MessageTooLarge("response head", self._max_head)
        self._value = text if self._value is None else self._value + text

    def _on_headers_complete(self) -> bool:
        if self._value is not None or self._field:
            self.fields.append((self._field, self._value or ""))
        self._field, self._value = "", None
        self.status = self.get_code()
        if self.status >= 200:
            remaining = self.get_remaining_content_length()
            # llhttp reports 0 or 2**64-1 when there is no Content-Length
            if 0 < remaining < 2**63 and remaining > self._max_body:
                raise MessageTooLarge("response body", self._max_body, remaining)
        return self._head_request

    def _on_body(self, data: bytearray) -> None:
        if len(self.body) + len(data) > self._max_body:
            raise MessageTooLarge("response body", self._max_body, len(self.body) + len(data))
        self.body += data

    def _on_message_complete(self) -> None:
        if self.status >= 200:
            self.final = True

    def feed_data(self, data: bytes) -> None:
        try:
            self.feed(data)
        except _ExtraData:
            self.extra = True

    def reusable(self) -> bool:
        return self.final and not self.extra and self.should_keep_alive()

    def response(self) -> Response:
        return Response(self.status, self.reason, Headers(self.fields), self.body)


def read_response(sock: Any, reader: ResponseReader, bufsize: int = 65536) -> None:
    """Read until ``reader`` has a final answer.

    Raises ``EOFError("closed")`` when the peer closed before any byte of the
    answer, ``EOFError("truncated")`` when it closed in the middle.
    """
    recv = sock.recv
    got_any = False
    quickack = _TCP_QUICKACK
    while True:
        data = recv(bufsize)
        if not data:
            if got_any:
                # an answer framed by the close ends here; anything else is truncated
                reader.feed_data(b"")
                if reader.final:
                    return
            raise EOFError("truncated" if got_any else "closed")
        got_any = True
        reader.feed_data(data)
        if reader.final:
            return
        if quickack is not None:
            try:
                sock.setsockopt(_IPPROTO_TCP, quickack, 1)
            except OSError:
                quickack = None


__all__ += ["HTTPParseError", "NothingWritten", "body_length", "read_response"]
