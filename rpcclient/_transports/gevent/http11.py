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
and collects the answer; it parses nothing itself. A body announced larger
than ``PREALLOCATE_ABOVE`` gets its buffer at its final size (up to
``PREALLOCATE_MAX`` at first: a length the server does not keep costs no
more; beyond it the buffer doubles as the bytes come), and once llhttp has
framed the answer the rest of it is read straight into that buffer
(``recv_into``), past the parser. Limits (head size, body
size) are enforced inside the parser callbacks, so memory stays bounded by
them. TCP_QUICKACK is set only when a ``recv`` returned an incomplete answer:
an ACK is then pending, and delaying it would stall a server that writes its
head and body separately; the common one-segment answer costs no syscall.
"""

from __future__ import annotations

import math
import socket as _stdsocket
import zlib
from collections.abc import Callable, Iterable
from time import monotonic
from typing import Any, Final

import gevent
from geventhttpclient._parser import HTTPParseError, HTTPResponseParser
from mypy_extensions import mypyc_attr

from ..._core.models import Body, Headers, Request, Response, check_request_line

__all__ = [
    "COALESCE_LIMIT",
    "BadAnswer",
    "DeadlinePassed",
    "HeadCache",
    "MessageTooLarge",
    "ResponseReader",
    "build_head",
    "write_request",
]

#: bodies up to this size are copied next to the head; larger ones use sendmsg
COALESCE_LIMIT: Final = 16 * 1024
#: answers with a Content-Length above this get their whole body buffer at once
PREALLOCATE_ABOVE: Final = 64 * 1024
#: the most allocated for such a body before its bytes arrive
PREALLOCATE_MAX: Final = 1024 * 1024
_BODILESS: Final = frozenset({204, 304})  # answers without a body (RFC 9110 6.4.1), like HEAD's
_CHUNK_TERMINATOR: Final = b"0\r\n\r\n"
_HAS_SENDMSG: Final = hasattr(_stdsocket.socket, "sendmsg")
_TCP_QUICKACK: int | None = getattr(_stdsocket, "TCP_QUICKACK", None)
_IPPROTO_TCP: Final = _stdsocket.IPPROTO_TCP
_PEEK_FLAGS: Final = _stdsocket.MSG_PEEK | getattr(_stdsocket, "MSG_DONTWAIT", 0)
#: interim (1xx) answers accepted before the final one (Go's net/http took 5;
#: 102 Processing may come now and then during a long call)
MAX_INTERIM: Final = 32
#: a read loop that goes on this long lets the other greenlets run
YIELD_AFTER: Final = 0.005
#: how: a timer this short makes the event loop run one whole turn (see read_response)
_YIELD_SLEEP: Final = 0.000001


class NothingWritten(Exception):
    """The first write of a request failed: not one byte of it left."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error
        self.__cause__ = error  # as ``raise ... from error``, which compiled code drops


class MessageTooLarge(Exception):
    """Raised inside the parser when a limit is crossed (mapped by the transport)."""

    def __init__(self, what: str, limit: int, seen: int | None = None) -> None:
        super().__init__(what)
        self.what = what
        self.limit = limit
        self.seen = seen


class BadAnswer(Exception):
    """An answer that is well-framed HTTP but must be refused (mapped to ProtocolError)."""


class BadCoding(Exception):
    """A Content-Encoding that is unknown or does not decode (mapped to DecodeError)."""


class DeadlinePassed(Exception):
    """A read loop saw its deadline pass between two reads (mapped to ReadTimeout)."""


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

    def head(self, request: Request) -> bytes:
        """The whole head of ``request``: the cached prefix, then the per-call part."""
        key = request.cache_key
        if key is None:
            prefix = _prefix(request)
        else:
            full_key = (key, request.endpoint.key, request.method, request.target)
            cached = self._heads.get(full_key)
            if cached is None:
                if len(self._heads) >= self.maxsize:
                    self._heads.clear()
                cached = self._heads[full_key] = _prefix(request)
            prefix = cached
        return build_head(prefix, request.headers, body_length(request.body))


def _prefix(request: Request) -> bytes:
    # once per cached head for Client calls (their method and target are checked
    # already); every call for a transport used directly (the requests shim)
    check_request_line(request.method, request.target)
    line = f"{request.method} {request.target} HTTP/1.1\r\n"
    lines = [line.encode("latin-1"), b"Host: %s\r\n" % request.endpoint.host_header.encode()]
    for name, value in request.fixed_headers:
        lines.append(name + b": " + value + b"\r\n")
    return b"".join(lines)


def build_head(prefix: bytes, headers: list[tuple[bytes, bytes]], length: int | None) -> bytes:
    """Finish a head: per-call headers, then Content-Length (or chunked)."""
    # joined once; no bytes %-formatting (a slow generic path, once per header)
    parts = [prefix]
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    if length is None:
        parts.append(b"Transfer-Encoding: chunked\r\n\r\n")
    else:
        parts += (b"Content-Length: ", str(length).encode(), b"\r\n\r\n")
    return b"".join(parts)


def body_length(body: Body | None) -> int | None:
    """Content-Length of a body, or None for a chunked (iterable) body."""
    if type(body) is bytes:  # the common case first: no isinstance on a union per call
        return len(body)
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


def write_request(
    sock: Any, head: bytes, body: Body | None, *, tls: bool = False, raw: Any = None
) -> None:
    """Write head and body; see the module docstring for the write rules.

    ``raw`` is the OS-level non-blocking socket under a plain (not TLS)
    gevent socket: a small request is tried on it first, without gevent's
    Python ``send`` around it; gevent's takes over only if the kernel could
    not take it all (it then waits for room). Raises :class:`NothingWritten`
    when the very first write failed (the server cannot have seen any of the
    request), ``OSError`` after that.
    """
    if type(body) is bytes and len(body) <= COALESCE_LIMIT:
        data = head + body  # the common case, without _send_all()'s frames
        try:
            if raw is None or tls:
                sent = sock.send(data)
            else:
                try:
                    sent = raw.send(data)
                except BlockingIOError:
                    sent = sock.send(data)  # waits for room in the socket buffer
        except OSError as exc:
            raise NothingWritten(exc) from exc
        if sent < len(data):
            _send_all(sock, memoryview(data)[sent:])
        return
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


@mypyc_attr(native_class=False)  # a native class would overwrite its C base's layout
class _Parser(HTTPResponseParser):
    """geventhttpclient's C parser; its callbacks are slots the reader fills.

    The C code looks each callback up by name on this object, twice per
    token (``hasattr``, then ``getattr``, with a new string each time). As
    slots they are found in the first class dictionary searched; as instance
    attributes every lookup searched the whole MRO before the instance dict.
    """

    __slots__ = (
        "_on_body",
        "_on_header_field",
        "_on_header_value",
        "_on_headers_complete",
        "_on_message_begin",
        "_on_message_complete",
        "_on_status",
    )
    _on_body: Callable[[bytearray], object]
    _on_header_field: Callable[[str], object]
    _on_header_value: Callable[[str], object]
    _on_headers_complete: Callable[[], bool]
    _on_message_begin: Callable[[], object]
    _on_message_complete: Callable[[], None]
    _on_status: Callable[[str], object]


def _closed_feed(data: bytes) -> object:
    raise EOFError("closed")  # a closed connection's reader is never fed


class ResponseReader:
    """Collects one answer from geventhttpclient's C parser.

    ``final`` turns true when a final (non-1xx) answer ended; ``reusable()``
    says whether the connection may carry another request (keep-alive, and
    nothing after the answer). ``feed_data`` raises :class:`MessageTooLarge`
    when a limit is crossed and ``HTTPParseError`` for malformed HTTP.

    The parser (a :class:`_Parser` the reader owns; the reader's own state
    stays in a plain, compilable class) calls back into Python for every
    token, so the common case calls C instead. While a head arrives in one
    read, llhttp hands over each token whole, strictly name, value, name,
    value (an empty value too; it refuses obs-fold), so the status and
    header callbacks are plain ``list.append`` (no Python frame) and the
    pairs are zipped once the head is complete. When a head spans reads, a
    token may be cut at the boundary: the reader then switches to the joining
    methods below (:meth:`_join_tokens`) for the rest of it. Trailers, if
    any, land in the same lists after the head's tokens; they are never
    headers, only measured against the head limit after each read. With a
    Content-Length within the limit, the body pieces go to ``list.append``
    (llhttp never hands over more than announced, and each piece is a new
    ``bytearray``: a body that came in one piece is that piece, never copied).
    Every other body (chunked, framed by the close, or one that spans reads:
    :meth:`spanned`) is accumulated in one ``bytearray``, so memory follows
    the body's size, not the number of its pieces (1-byte chunks cost ~169
    bytes per body byte as a list of pieces).

    Bounds: the status line counts against the head limit with the fields;
    at most :data:`MAX_INTERIM` interim answers (:class:`BadAnswer`). While
    the head is collected the reader notes ``X-Request-Id`` and
    ``Content-Encoding`` (``request_id``, ``coding``) for the transport.
    """

    # the joining methods' state, set only once they take over (no cost per answer)
    _pairs: list[tuple[str, str]]
    _filled: int  # bytes in a preallocated body so far (_fill)
    _size: int  # bytes of a body of unknown length so far (_checked_body)
    _expected: int  # its Content-Length
    _field: str
    _value: str | None
    _head_size: int
    _keep_alive: bool  # the head's own verdict, for a body read past llhttp

    def __init__(self, head_request: bool, max_head: int, max_body: int) -> None:
        self.final = False
        self.extra = False
        self.status = 0
        self.fields: list[tuple[str, str]] = []
        self.body = bytearray()  # a preallocated body (_fill); else the pieces below
        self._pieces: list[bytearray] = []
        self._swapped = False  # the parser's _on_body is another method for this answer
        self._head_request = head_request
        self._max_head = max_head
        self._max_body = max_body
        self._fast = True  # appends, not the joining methods
        self._fed = 0  # bytes fed while fast
        self.preallocated = False  # the body buffer was sized from Content-Length (_fill)
        self.bypassed = False  # the body was read past llhttp: reset() takes a new parser
        self._tokens = -1  # header names of the head once it is complete
        self._names: list[str] = []
        self._values: list[str] = []
        self._reason: list[str] = []
        self._interim = 0  # 1xx answers before this one
        self.request_id: str | None = None  # the answer's X-Request-Id, if any
        self.dedup: str | None = None  # its X-Rpc-Dedup, if any (rpcclient._core.retry)
        self.coding: str | None = None  # its Content-Encoding, if any
        self._parser = self._new_parser()

    def _new_parser(self) -> _Parser:
        """A parser at the start of a message, its callbacks set to this reader's.

        The parser refers back to the reader: :meth:`close` ends that cycle.
        """
        parser = _Parser()
        self.feed: Callable[[bytes], object] = parser.feed
        parser._on_message_begin = int  # returns 0: go on (see _on_message_complete)
        parser._on_status = self._reason.append
        parser._on_header_field = self._names.append
        parser._on_header_value = self._values.append
        parser._on_headers_complete = self._on_headers_complete
        parser._on_body = self._pieces.append
        parser._on_message_complete = self._on_message_complete
        return parser

    def close(self) -> None:
        """Drop the parser (and its references back to this reader) with the connection.

        A bare parser takes its place (an exchange ended by the watchdog may
        still reset the reader before its read fails); nothing feeds it.
        """
        self.feed = _closed_feed
        self._parser = _Parser()

    def reset(self, head_request: bool) -> None:
        """Make ready for the next answer on the same connection.

        Cheaper than a new reader (no parser allocation), and llhttp itself
        is at the start of a message after a reusable answer: a connection
        that ended any other way is closed, its reader with it. After a body
        read past the parser (``bypassed``) the reader takes a new parser.
        """
        if self.bypassed:  # the old parser stopped inside a body
            self.bypassed = False
            self._parser = self._new_parser()
        self.final = False
        self.extra = False
        self.status = 0
        self._head_request = head_request
        self._fed = 0
        self._tokens = -1
        self._interim = 0
        self.request_id = self.coding = self.dedup = None
        self._names.clear()
        self._values.clear()
        self._reason.clear()
        self._pieces.clear()
        parser = self._parser
        parser._on_message_begin = int
        if self._swapped:
            self._swapped = self.preallocated = False
            self.body = bytearray()
            parser._on_body = self._pieces.append
        if not self._fast:
            self._fast = True
            parser._on_status = self._reason.append
            parser._on_header_field = self._names.append
            parser._on_header_value = self._values.append

    def nothing_read(self) -> bool:
        """True while no byte of this answer has arrived (since the last reset)."""
        return self._fed == 0 and self.status == 0 and not self.final

    def should_keep_alive(self) -> bool:
        """The final answer's keep-alive verdict.

        The C parser caches llhttp's verdict when a message completes, a 1xx
        too, and answers from that cache until the next message completes:
        for a body read past it (``bypassed``), its answer would be the
        1xx's. The reader's own verdict, read off the head, stands then.
        """
        if self.bypassed:
            return self._keep_alive
        return bool(self._parser.should_keep_alive())

    def _head_keep_alive(self) -> bool:
        # RFC 9112 9.3: HTTP/1.1 persists unless "close"; 1.0 only with "keep-alive"
        tokens: list[str] = []
        for name, value in self.fields:
            if len(name) == 10 and name.lower() == "connection":
                tokens += [t.strip().lower() for t in value.split(",")]
        if self._parser.get_http_version() == "HTTP/1.0":
            return "keep-alive" in tokens
        return "close" not in tokens

    def _note_fields(self) -> None:
        # X-Request-Id, X-Rpc-Dedup and Content-Encoding, in one pass over the names
        for name, value in self.fields:
            size = len(name)
            if size == 12:
                if name.lower() == "x-request-id":
                    self.request_id = value
            elif size == 11:
                if name.lower() == "x-rpc-dedup":
                    self.dedup = value
            elif size == 16 and name.lower() == "content-encoding":
                self.coding = value if self.coding is None else self.coding + ", " + value

    # llhttp callbacks (the ones that are not C callables)
    def _on_headers_complete(self) -> bool:
        if self._fast:
            names = self._names
            self._tokens = len(names)
            self.fields = list(zip(names, self._values))  # noqa: B905 - paired by llhttp
            if self._fed > self._max_head:  # a read that large: measure the head
                self._check_tokens(0, "response head")
        else:
            if self._value is not None or self._field:
                self._pairs.append((self._field, self._value or ""))
            self.fields, self._tokens = self._pairs, 0
            # trailers, if any, are joined (and bounded) apart from the head
            self._pairs = []
            self._field, self._value, self._head_size = "", None, 0
        parser = self._parser
        self.status = status = parser.get_code()
        if status >= 200:
            self._note_fields()
            remaining = parser.get_remaining_content_length()
            if self._head_request or status in _BODILESS:
                pass  # no body follows, whatever the Content-Length says
            # llhttp reports 0 or 2**64-1 when there is no Content-Length
            elif 0 < remaining < 2**63:
                if remaining > self._max_body:
                    raise MessageTooLarge("response body", self._max_body, remaining)
                if remaining > PREALLOCATE_ABOVE:
                    # one allocation of the final size: a large buffer grown
                    # read by read makes glibc take fresh pages from the kernel
                    # on every answer (bench/README.rst: page faults at 1 MiB)
                    self.body = bytearray(min(remaining, PREALLOCATE_MAX))
                    self._filled, self._expected = 0, remaining
                    self.preallocated = self._swapped = True
                    self._keep_alive = self._head_keep_alive()
                    parser._on_body = self._fill
                # else: the pieces, by list.append (set once, in __init__)
            else:
                self._size = 0
                self._swapped = True
                parser._on_body = self._checked_body
        return self._head_request

    def _fill(self, data: bytearray) -> None:
        # llhttp never hands over more than the Content-Length announced, and
        # only the read that ends the head reaches here (read_response then
        # reads the rest itself): at most one read, within PREALLOCATE_MAX
        start = self._filled
        end = self._filled = start + len(data)
        self.body[start:end] = data

    def _checked_body(self, data: bytearray) -> None:
        size = self._size + len(data)
        if size > self._max_body:
            raise MessageTooLarge("response body", self._max_body, size)
        self._size = size
        self.body += data  # one buffer, whatever the number of pieces

    def _extend(self, data: bytearray) -> None:
        self.body += data  # a Content-Length body: llhttp bounds it

    def spanned(self) -> None:
        """The answer goes on in another read: collect its body in one buffer.

        Called by the read loop after every read that did not end the answer.
        A small Content-Length body that arrives in many small reads would
        otherwise be kept as one ``bytearray`` per read.
        """
        if not self._swapped and self.status >= 200:
            self._swapped = True
            self.body = bytearray().join(self._pieces)
            self._pieces.clear()
            self._parser._on_body = self._extend

    # the read past llhttp (_read_rest_of_body): it moves the reader's state
    # only through these
    def body_filled(self) -> int:
        """Bytes of a preallocated body so far (``preallocated``)."""
        return self._filled

    def body_expected(self) -> int:
        """The Content-Length of a preallocated body."""
        return self._expected

    def filled_to(self, filled: int) -> None:
        """Note ``filled`` bytes of a preallocated body read past the parser."""
        self._filled = filled

    def ended_past_parser(self, extra: bool) -> None:
        """The preallocated body was read whole past the parser: the answer is final.

        ``extra``: bytes came after it (the connection is not reusable).
        The parser stopped inside the body, so the reader is ``bypassed``:
        its next :meth:`reset` takes a new parser.
        """
        self.bypassed = True
        self.final = True
        self.extra = extra

    def _on_message_complete(self) -> None:
        if self.status >= 200:
            self.final = True
            # a message after this one is bytes past the answer: a truthy
            # result from the begin callback stops llhttp with an error, which
            # feed_data() reads as ``extra`` (no Python frame per answer)
            self._parser._on_message_begin = object
        else:  # an interim 1xx answer: the final one starts afresh
            self._interim += 1
            if self._interim > MAX_INTERIM:
                raise BadAnswer(f"more than {MAX_INTERIM} interim (1xx) answers")
            self._reason.clear()
            self._names.clear()
            self._values.clear()
            self.fields = []
            self._tokens = -1
            self._pairs = []
            self._field, self._value, self._head_size = "", None, 0

    def feed_data(self, data: bytes) -> None:
        fast = self._fast  # only the token check below can end it
        if fast:
            self._fed += len(data)
        try:
            self.feed(data)
        except HTTPParseError:
            if not self.final:
                raise
            self.extra = True  # a second message began (_on_message_complete)
        if not fast:
            return
        tokens = self._tokens
        if tokens < 0:
            self._join_tokens()  # the head goes on in the next read
        elif len(self._names) > tokens:
            self._check_tokens(tokens, "response trailers")

    # the slow path: a head cut across reads
    def _check_tokens(self, start: int, what: str) -> None:
        names, values = self._names, self._values
        size = sum(map(len, names[start:])) + sum(map(len, values[start:]))
        if not start:  # the head: its status line counts too
            size += sum(map(len, self._reason)) + 4
        if size + 4 * (len(names) - start) > self._max_head:
            raise MessageTooLarge(what, self._max_head)

    def _join_tokens(self) -> None:
        """Switch to the joining methods, keeping the tokens that came whole."""
        names, values = self._names, self._values
        pairs = list(zip(names, values, strict=False))
        if len(names) > len(values):  # the last name may go on; no value yet
            self._field, self._value = names[-1], None
        elif names:  # the last value may go on
            pairs.pop()
            self._field, self._value = names[-1], values[-1]
        else:
            self._field, self._value = "", None
        self._pairs = pairs
        self._head_size = (
            sum(map(len, names))
            + sum(map(len, values))
            + 4 * len(names)
            + sum(map(len, self._reason))
        )
        if self._head_size > self._max_head:
            raise MessageTooLarge("response head", self._max_head)
        self._fast = False
        parser = self._parser
        parser._on_status = self._join_status
        parser._on_header_field = self._join_field
        parser._on_header_value = self._join_value

    def _join_status(self, text: str) -> None:
        # a reason phrase cut across reads: counted like the fields
        self._head_size += len(text)
        if self._head_size > self._max_head:
            raise MessageTooLarge("response head", self._max_head)
        self._reason.append(text)

    def _join_field(self, text: str) -> None:
        self._head_size += len(text) + 4  # inline: this runs for every header
        if self._head_size > self._max_head:
            raise MessageTooLarge("response head", self._max_head)
        if self._value is not None:
            self._pairs.append((self._field, self._value))
            self._field, self._value = text, None
        else:
            self._field += text

    def _join_value(self, text: str) -> None:
        self._head_size += len(text)
        if self._head_size > self._max_head:
            raise MessageTooLarge("response head", self._max_head)
        self._value = text if self._value is None else self._value + text

    def reusable(self) -> bool:
        return self.final and not self.extra and self.should_keep_alive()

    def response(self) -> Response:
        body: bytes | bytearray
        if self._swapped:
            body = self.body
        else:
            pieces = self._pieces
            body = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        return Response(
            self.status, "".join(self._reason), Headers(self.fields, self.dedup, True), body
        )


def decode_content(body: bytes | bytearray, coding: str, limit: int) -> bytes | bytearray:
    """Undo ``coding`` (a Content-Encoding: gzip, deflate, identity; last applied first).

    The decoded size is bounded by ``limit`` as it is decoded (a gzip bomb
    raises :class:`MessageTooLarge` after at most ``limit + 1`` bytes), and
    an unknown coding or a body that does not decode raises
    :class:`BadCoding`.
    """
    if not body:  # a 204, a HEAD's answer, a proxy's empty 503: nothing was encoded
        return body
    for name in reversed([c.strip().lower() for c in coding.split(",")]):
        if name in ("", "identity"):
            continue
        if name in ("gzip", "x-gzip"):
            formats = [16 + zlib.MAX_WBITS]
        elif name == "deflate":  # zlib-wrapped per RFC 9110; raw deflate in the wild
            formats = [zlib.MAX_WBITS, -zlib.MAX_WBITS]
        else:
            raise BadCoding(f"Content-Encoding {name!r} is not supported")
        for wbits in formats:
            try:
                out = _inflate(body, wbits, limit, name)
            except zlib.error as exc:
                if wbits == formats[-1]:
                    raise BadCoding(f"{name} body does not decode: {exc}") from None
                continue
            body = out
            break
    return body


def _inflate(body: bytes | bytearray, wbits: int, limit: int, name: str) -> bytes:
    """One coding undone, within ``limit``. gzip may hold several members (RFC
    1952; urllib3 decodes them all); any other byte after the end is refused,
    never dropped: what it meant is unknown."""
    parts: list[bytes] = []
    size = 0
    rest = body
    while True:
        decoder = zlib.decompressobj(wbits)
        out = decoder.decompress(rest, limit + 1 - size)
        size += len(out)
        if size > limit or decoder.unconsumed_tail:
            raise MessageTooLarge("decoded response body", limit)
        if not decoder.eof:
            raise BadCoding(f"{name} body is cut short")
        parts.append(out)
        rest = decoder.unused_data
        if not rest:
            return out if len(parts) == 1 else b"".join(parts)
        if wbits != 16 + zlib.MAX_WBITS or not rest.startswith(b"\x1f\x8b"):
            raise BadCoding(f"{len(rest)} bytes after the end of the {name} body")


def read_response(
    sock: Any,
    reader: ResponseReader,
    bufsize: int = 65536,
    *,
    wait_first: bool = False,
    tls: bool = False,
    raw: Any = None,
    expires: float = math.inf,
) -> None:
    """Read until ``reader`` has a final answer, by ``expires`` (a ``monotonic()`` time).

    ``tls``: the socket is a TLS one (what is past a large body is asked of
    the TLS layer, not peeked at on the OS socket).
    ``wait_first`` (plain gevent sockets only: a TLS socket may hold
    decrypted bytes that the file descriptor does not show): wait until the
    socket is readable before the first ``recv``. Right after a request the
    answer is almost never there yet, and gevent's ``recv`` would first fail
    with EAGAIN (a wasted syscall and exception) and then wait the same way.
    ``raw``: the OS-level socket under a plain gevent socket that is readable
    now (after ``wait_first``, or when the hub woke us for the answer): the
    first ``recv`` goes there, without gevent's Python ``recv`` around it.

    Raises ``EOFError("closed")`` when the peer closed before any byte of the
    answer, ``EOFError("truncated")`` when it closed in the middle.

    The loop bounds itself: gevent's ``recv`` returns at once, without a
    switch, while bytes are buffered, so against a peer that sends fast
    (1xx after 1xx, endless chunk extensions, 1-byte chunks) neither the
    deadline watchdog nor any other greenlet would run. So after every read
    that did not end the answer the loop reads the clock: past ``expires``
    it raises :class:`DeadlinePassed`, and every :data:`YIELD_AFTER` s it
    lets the event loop run one turn (a 1 us sleep: ``sleep(0)`` runs only
    the greenlets already ready, not timers or I/O, so neither the watchdog
    nor a ``gevent.Timeout`` could fire; ``gevent.idle()`` waits until the
    loop has nothing else to do, which a busy process may never reach). An
    answer read in one ``recv`` (the common case) reads no clock.
    """
    recv = sock.recv
    got_any = False
    quickack = _TCP_QUICKACK
    yield_at = 0.0  # set at the first read that did not end the answer
    if wait_first:
        sock._wait(sock._read_event)  # gevent's own wait, as in its recv()
    while True:
        if raw is None:
            data = recv(bufsize)
        else:
            try:
                data = raw.recv(bufsize)
            except BlockingIOError:
                data = recv(bufsize)  # woken for nothing: gevent's recv waits again
            raw = None
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
        now = monotonic()
        if now >= expires:
            raise DeadlinePassed()
        if not yield_at:
            yield_at = now + YIELD_AFTER
        elif now >= yield_at:
            gevent.sleep(_YIELD_SLEEP)
            yield_at = monotonic() + YIELD_AFTER
        if quickack is not None:
            try:
                sock.setsockopt(_IPPROTO_TCP, quickack, 1)
            except OSError:
                quickack = None
        if reader.preallocated:
            _read_rest_of_body(sock, reader, tls=tls, expires=expires)
            return
        reader.spanned()


def _read_rest_of_body(
    sock: Any, reader: ResponseReader, *, tls: bool, expires: float = math.inf
) -> None:
    """Read the rest of a large Content-Length body straight into its buffer.

    llhttp framed the answer (status, head, length) and took the first part
    of the body; the rest needs no parsing, only counting. ``recv_into`` the
    final buffer skips two copies and a callback per read, and the temporary
    objects whose churn made glibc fault fresh pages in on every answer. The
    parser is left inside the body, so the reader is marked ``bypassed``: its
    next reset() gives it a new parser.

    Nothing past the body is read; then whatever the server sent beyond it
    and is already here marks the answer ``extra`` (the connection is not
    reused), as the parser would have for bytes in the same read: on a plain
    socket one non-blocking ``MSG_PEEK``, on TLS the decrypted bytes the TLS
    layer holds (``pending()``; raw bytes there may be records with no data).
    Like :func:`read_response`, the loop reads the clock after each read:
    past ``expires`` it raises :class:`DeadlinePassed`, and it lets the
    event loop run every :data:`YIELD_AFTER` s.
    """
    body = reader.body
    filled, total = reader.body_filled(), reader.body_expected()
    recv_into = sock.recv_into
    yield_at = monotonic() + YIELD_AFTER
    while True:
        size = len(body)
        with memoryview(body) as view:
            while filled < size:
                got = recv_into(view[filled:])
                if not got:
                    reader.filled_to(filled)
                    raise EOFError("truncated")
                filled += got
                if filled < total:
                    now = monotonic()
                    if now >= expires:
                        reader.filled_to(filled)
                        raise DeadlinePassed()
                    if now >= yield_at:
                        gevent.sleep(_YIELD_SLEEP)
                        yield_at = monotonic() + YIELD_AFTER
        if filled >= total:
            break
        body.extend(bytes(min(size, total - size)))  # doubles, up to the length
    reader.filled_to(filled)
    reader.ended_past_parser(_bytes_after(sock, tls))


def _bytes_after(sock: Any, tls: bool) -> bool:
    """Whether bytes past the answer are here already (never waits)."""
    if tls:
        return bool(sock.pending())
    try:
        return bool(getattr(sock, "_sock", sock).recv(1, _PEEK_FLAGS))
    except BlockingIOError:
        return False  # nothing more: the common case
    except OSError:
        return True


__all__ += [
    "BadCoding",
    "HTTPParseError",
    "NothingWritten",
    "body_length",
    "decode_content",
    "read_response",
]


def check_request_id(request: Request, echoed: str) -> None:
    """Refuse an answer whose X-Request-Id is not the one sent (BadAnswer).

    The answer then belongs to another request (a late duplicate on a
    reused connection, a confused proxy): returning it would give this call
    another call's result. Nothing is checked when none was sent.
    """
    for name, value in request.headers:
        if len(name) == 12 and name.lower() == b"x-request-id":
            if echoed.strip().encode("latin-1") != value:
                raise BadAnswer(
                    f"the answer is for another request: X-Request-Id {echoed[:200]!r}, "
                    f"sent {value.decode('latin-1')!r}"
                )
            return
