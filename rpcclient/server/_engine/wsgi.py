"""The bundled WSGI server: strict HTTP/1.1 framing on gevent's StreamServer.

The request parser is llhttp (Node.js's parser, through ``httptools``, as in
uvicorn): C, maintained, and strict by default about what decides where a
message ends. This module adds the rules llhttp leaves to its caller and runs
any PEP 3333 app. The rules:

- **Framing (RFC 9112 sections 6-7).** A body is framed by exactly one
  ``Content-Length`` of digits, or by ``Transfer-Encoding: chunked`` alone
  (one field, one coding). Two Content-Length fields (even equal ones), a
  list, Content-Length with Transfer-Encoding, chunked twice or not last,
  Transfer-Encoding in HTTP/1.0, obs-fold, a bare LF, a field name that is
  not a token, a control byte (NUL, VT, DEL ...; HTAB is allowed in values)
  in the request line or a field, a missing or a second ``Host`` in
  HTTP/1.1, a malformed chunk size: ``400``; a coding other than chunked
  (``gzip, chunked``, ``xchunked``): ``501``; an HTTP version other than
  1.0/1.1: ``505``. llhttp refuses the grammar errors (CL/TE conflicts,
  obs-fold, bare LF, tokens, control bytes, chunk sizes); this module adds
  Host, the exact Transfer-Encoding, HTTP/1.0, the version and the limits.
  Each of these answers closes the connection and no app runs for that
  request, nor for anything sent after it on the connection.
- **Bounded head.** Request line and fields together at most
  :data:`MAX_HEAD` bytes, the target at most :data:`MAX_TARGET`, at most
  :data:`MAX_FIELDS` fields (``431``/``414``, closed). Header names carrying
  ``_`` are dropped from the environ: ``X_Forwarded_For`` must not pass for
  ``X-Forwarded-For`` (both map to ``HTTP_X_FORWARDED_FOR``).
- **Bounded body framing.** llhttp keeps no buffer per chunk; a chunked body
  must also not cost more wire than body: chunk sizes, extensions and
  trailers together at most :data:`MAX_HEAD` + 8 bytes per body byte, and
  after :data:`MAX_SMALL_CHUNKS` chunks the mean chunk must hold at least
  :data:`MIN_MEAN_CHUNK` bytes (each chunk costs a Python call): ``400``.
- **Timeouts**, enforced by one watchdog greenlet on a coarse tick (no timer
  per read): a connection waiting for a request line closes after
  ``idle_timeout`` s after its last answer (bytes that start no head, such
  as CRLF, do not extend it); a head must be complete ``header_timeout`` s
  after its first byte (slowloris); a body read waits at most
  ``body_timeout`` s for more bytes, and the whole body must arrive within
  ``body_timeout`` s plus 1 s per :data:`MIN_BODY_RATE` bytes (R.U.D.Y.: a
  byte every few seconds); a write waits ``body_timeout`` s for the client
  to take it (a client that stops reading). An app that is running has no deadline from the server.
- **A bound on connections**, ``max_connections`` (default: the process's
  open-file limit less a margin, at most 10,000). At the bound a new
  connection is accepted, and the connection that has waited longest without
  a request in progress (idle keep-alive, or a head still arriving) is closed
  to make room; failing that, the one whose app has waited longest for a
  body arriving below :data:`MIN_BODY_RATE` (after a second of grace); when
  every connection has a request in progress otherwise, the new one is
  closed at once. Either way the accept loop never stalls on EMFILE and a
  slow client cannot keep a fresh one out.
- **An answer that leaves a body unread** closes the connection (the answer
  says ``Connection: close``), unless what is left is a Content-Length
  remainder of at most :data:`DRAIN_LIMIT` bytes the client was not asked to
  wait for (no pending ``Expect: 100-continue``), which is read and dropped
  before the next request. ``100 Continue`` goes out when the app first
  reads the body, only to an HTTP/1.1 client and only while no answer's
  head has left (never inside an answer). The close is a lingering one (RFC 9112, 9.6):
  half-close, then read at most :data:`LINGER_BYTES` for at most
  :data:`LINGER_SECONDS`, so a client still sending can read the answer.
- **One write per response.** A response whose body is known at the first
  write (an app returning ``[body]``) leaves, head and body, in ONE ``send``;
  a body above :data:`COALESCE_LIMIT` travels with its first bytes and the
  rest follows. ``TCP_NODELAY`` on every connection.
- **Graceful stop.** :meth:`RPCServer.stop` stops accepting, closes idle
  connections at once, lets requests in progress finish (their answers say
  ``Connection: close``) for up to ``timeout`` s, then kills what is left.
- Access log off; errors go to the ``rpcclient.server`` logger.
"""

from __future__ import annotations

import logging
import resource
import socket
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable
from email.utils import formatdate
from typing import Any
from urllib.parse import unquote_to_bytes

import gevent
import httptools
from mypy_extensions import mypyc_attr

__all__ = [
    "COALESCE_LIMIT",
    "DRAIN_LIMIT",
    "LINGER_BYTES",
    "LINGER_SECONDS",
    "MAX_FIELDS",
    "MAX_HEAD",
    "MAX_TARGET",
    "MIN_BODY_RATE",
    "RPCHandler",
    "RPCServer",
    "default_max_connections",
]

#: largest body copied behind the head into one write
COALESCE_LIMIT = 256 * 1024
#: how long, and how much, a closing connection reads of an abandoned body
LINGER_SECONDS = 2.0
LINGER_BYTES = 1024 * 1024
#: request line + fields, in bytes
MAX_HEAD = 64 * 1024
#: the request target, in bytes
MAX_TARGET = 8 * 1024
#: fields in one head (and in one trailer section)
MAX_FIELDS = 100
#: an unread Content-Length remainder up to this many bytes is drained, not closed
DRAIN_LIMIT = 64 * 1024
#: chunks after which the mean chunk size is checked
MAX_SMALL_CHUNKS = 65536
MIN_MEAN_CHUNK = 16
#: one recv
RECV_SIZE = 65536
#: a body must arrive at this many bytes per second on average, after a
#: first ``body_timeout`` of grace (R.U.D.Y.: a byte every few seconds)
MIN_BODY_RATE = 500

DEFAULT_IDLE_TIMEOUT = 15.0
DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_BODY_TIMEOUT = 30.0

_log = logging.getLogger("rpcclient.server")

_STATUS_TEXT = {
    400: "Bad Request",
    408: "Request Timeout",
    414: "URI Too Long",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    505: "HTTP Version Not Supported",
}
_OWS = (b" ", b"\t")
#: the fields that decide framing and routing, by lowercase name
_HOST, _TE, _CL, _EXPECT = 1, 2, 3, 4
_SPECIAL = {b"host": _HOST, b"transfer-encoding": _TE, b"content-length": _CL, b"expect": _EXPECT}


class _DateLine:
    """The ``Date`` line of the current second, formatted once per second.

    Compiled with the handler: reading it through the interpreted RPCServer
    cost ~2k instructions per answer.
    """

    def __init__(self) -> None:
        self.second = -1
        self.line = b""

    def get(self) -> bytes:
        now = int(time.time())
        if now != self.second:
            self.second = now
            self.line = b"\r\nDate: " + formatdate(now, usegmt=True).encode("ascii") + b"\r\n"
        return self.line


#: shared by every server in the process (the clock is)
_DATE_LINE = _DateLine()

#: RPCApp.respond: environ -> (status line, headers without Content-Length, body)
DirectAnswer = Callable[[dict[str, Any]], tuple[str, list[tuple[str, str]], bytes]]


def default_max_connections() -> int:
    """The open-file soft limit less 64 (listener, logs, the app's own files), 10,000 at most."""
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return 1000
    if soft == resource.RLIM_INFINITY:
        return 10_000
    return max(16, min(10_000, soft - 64))


class _Refuse(Exception):
    """The request cannot be served: answer ``status`` and close."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Message:
    """One request as the parser delivered it."""

    __slots__ = (
        "abandoned",
        "answered",
        "body",
        "body_start",
        "chunked",
        "complete",
        "expect_continue",
        "fields",
        "head_bytes",
        "head_done",
        "hosts",
        "keep_alive",
        "length",
        "method",
        "pieces",
        "received",
        "target",
        "trailer_fields",
        "version",
    )

    def __init__(self) -> None:
        self.target = b""
        self.fields: list[tuple[bytes, bytes]] = []
        self.hosts = 0
        self.length: int | None = None
        self.chunked = False
        self.expect_continue = False
        self.head_done = False
        self.head_bytes = 0
        self.body = bytearray()
        self.received = 0
        self.body_start = 0.0
        self.pieces = 0
        self.trailer_fields = 0
        self.complete = False
        self.abandoned = False
        self.answered = False
        self.version = "HTTP/1.1"
        self.method = "GET"
        self.keep_alive = True


class _Input:
    """``wsgi.input``: exactly the request's body, as the parser framed it.

    Reads block (cooperatively) for more of the body, at most
    ``body_timeout`` s per wait. A broken chunked framing or a client gone
    mid-body raises ``OSError``; reading past the end returns ``b""``.
    ``socket`` is the connection's socket (for tools that read TCP_INFO).
    """

    __slots__ = ("_conn", "_msg", "socket")

    def __init__(self, conn: RPCHandler, msg: _Message) -> None:
        self._conn = conn
        self._msg = msg
        self.socket = conn.socket

    def _want(self, size: int) -> None:
        msg = self._msg
        while len(msg.body) < size and not msg.complete:
            self._conn.fill_body(msg)

    def read(self, size: int | None = -1) -> bytes:
        msg = self._msg
        if size is None or size < 0:
            size = sys.maxsize
        self._want(size)
        body = msg.body
        if size >= len(body):
            data = bytes(body)
            body.clear()
            return data
        data = bytes(body[:size])
        del body[:size]
        return data

    def readline(self, size: int | None = -1) -> bytes:
        msg = self._msg
        limit = sys.maxsize if size is None or size < 0 else size
        while True:
            at = msg.body.find(b"\n", 0, limit)
            if at >= 0:
                return self.read(at + 1)
            if msg.complete or len(msg.body) >= limit:
                return self.read(limit)
            self._conn.fill_body(msg)

    def readlines(self, hint: int = -1) -> list[bytes]:
        lines: list[bytes] = []
        total = 0
        while True:
            line = self.readline()
            if not line:
                return lines
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                return lines

    def __iter__(self) -> _Input:
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line


@mypyc_attr(allow_interpreted_subclasses=True)  # handler_class may subclass it
class RPCHandler:
    """One connection: parse, run the app, answer, until it closes.

    It is also the llhttp callback object (``on_*`` methods). ``busy`` is
    True while a request is being served; ``deadline`` (a monotonic time, 0
    for none) is when the watchdog closes the connection.
    """

    def __init__(self, sock: Any, address: Any, server: RPCServer) -> None:
        self.socket = sock
        self.client_address = address
        self.server = server
        self.parser = httptools.HttpRequestParser(self)
        self.pending: deque[_Message] = deque()
        self.current: _Message | None = None
        self.busy = False
        self.writing = False
        self.reading: _Message | None = None  # the body a read waits for
        self.deadline = 0.0
        self.since = time.monotonic()
        self.expired = False
        self.refusal: _Refuse | None = None
        self.upgraded = False
        self.greenlet: Any = None
        self.head_deadline = 0.0
        self.base_environ = dict(server.base_environ)
        self.direct_answer = server.direct_answer  # read once per connection
        if address:
            self.base_environ["REMOTE_ADDR"] = str(address[0])
            self.base_environ["REMOTE_PORT"] = str(address[1])
        # Wire accounting (see _account): bytes the callbacks saw in this
        # feed (known head bytes, body bytes), those since the last message
        # ended in it, and what the message in progress carries from
        # earlier feeds.
        self._f_known = 0
        self._f_body = 0
        self._f_before = 0  # known + body bytes of this feed up to the last message end
        self._f_body_before = 0  # the body bytes among them
        self._f_ended = False
        self._touched: list[_Message] = []
        self._residue = 0  # unexplained (framing) bytes of the message in progress
        self._seg_body = 0  # its body bytes

    # -- llhttp callbacks ------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.current = _Message()

    def on_url(self, url: bytes) -> None:
        msg = self.current
        assert msg is not None
        msg.target += url
        self._f_known += len(url)
        if len(msg.target) > MAX_TARGET:
            raise _Refuse(414, f"request target above {MAX_TARGET} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        msg = self.current
        assert msg is not None
        if msg.head_done:  # a trailer field: bounded, then ignored
            msg.trailer_fields += 1
            if msg.trailer_fields > MAX_FIELDS:
                raise _Refuse(431, f"more than {MAX_FIELDS} trailer fields")
            return
        # llhttp has refused every control byte but HTAB in the value, and a
        # name that is not a token. Count and size are checked per field: a
        # head that never ends must not hold more than MAX_FIELDS objects.
        fields = msg.fields
        if len(fields) >= MAX_FIELDS:
            raise _Refuse(431, f"more than {MAX_FIELDS} header fields")
        fields.append((name, value))
        msg.head_bytes += len(name) + len(value) + 4
        self._f_known += len(name) + len(value) + 3  # at least "name:" CRLF
        if msg.head_bytes + len(msg.target) > MAX_HEAD:
            raise _Refuse(431, f"request head above {MAX_HEAD} bytes")
        special = _SPECIAL.get(name.lower())
        if special is None:
            return
        if special == _HOST:
            msg.hosts += 1
        elif special == _TE:
            if msg.chunked:
                raise _Refuse(400, "Transfer-Encoding sent twice")
            codings = [c.strip(b" \t") for c in value.lower().split(b",")]
            if codings != [b"chunked"]:
                if codings[-1] == b"chunked" and b"chunked" not in codings[:-1]:
                    # framed soundly, by a coding we do not decode (gzip, chunked)
                    raise _Refuse(501, "only the chunked transfer coding is supported")
                if b"chunked" in codings or not all(codings):
                    raise _Refuse(400, "chunked must be the final and only transfer coding")
                raise _Refuse(501, "only the chunked transfer coding is supported")
            msg.chunked = True
        elif special == _CL:
            # llhttp has refused a second one and anything but digits
            msg.length = int(value)
        else:
            msg.expect_continue = value.strip(b" \t").lower() == b"100-continue"

    def on_headers_complete(self) -> None:
        msg = self.current
        assert msg is not None
        parser = self.parser
        version = parser.get_http_version()
        if version == "1.1":
            if msg.hosts != 1:
                raise _Refuse(400, "an HTTP/1.1 request needs exactly one Host field")
        elif version == "1.0":
            msg.version = "HTTP/1.0"
            if msg.chunked:
                raise _Refuse(400, "Transfer-Encoding in an HTTP/1.0 request")
            if msg.hosts > 1:
                raise _Refuse(400, "more than one Host field")
        else:
            raise _Refuse(505, f"HTTP/{version} is not supported")
        target = msg.target
        if (
            not target.startswith(b"/")
            and target != b"*"
            and not target.lower().startswith((b"http://", b"https://"))
        ):
            raise _Refuse(400, "request target must be a path or an absolute URI")
        msg.method = parser.get_method().decode("ascii")
        msg.keep_alive = parser.should_keep_alive()
        msg.head_done = True
        # at least "METHOD SP target SP HTTP/1.x CRLF" and the blank line
        self._f_known += len(msg.method) + 14
        self._touched.append(msg)
        self.pending.append(msg)

    def on_body(self, body: bytes) -> None:
        msg = self.current
        assert msg is not None
        size = len(body)
        msg.received += size
        msg.pieces += 1
        self._f_body += size
        if not msg.abandoned:
            msg.body += body
        if msg.pieces > MAX_SMALL_CHUNKS and msg.pieces * MIN_MEAN_CHUNK > msg.received:
            raise _Refuse(400, f"chunks average below {MIN_MEAN_CHUNK} bytes")

    def on_message_complete(self) -> None:
        msg = self.current
        assert msg is not None
        msg.complete = True
        self.current = None
        self._touched.append(msg)
        self._f_before += self._f_known + self._f_body
        self._f_body_before += self._f_body
        self._f_known = 0
        self._f_body = 0
        self._f_ended = True

    # -- reading ---------------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        """Parse ``data``; a framing error is kept in ``refusal`` (answered later)."""
        self._f_known = self._f_body = self._f_before = self._f_body_before = 0
        self._f_ended = False
        if self._touched:
            self._touched.clear()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.upgraded = True  # served as a plain request, then closed
        except httptools.HttpParserError as exc:
            own: object = exc.__context__  # typed object: compiled, Any narrows wrongly
            if isinstance(own, _Refuse):
                self.refusal = own
            elif isinstance(exc, httptools.HttpParserInvalidMethodError):
                self.refusal = _Refuse(400, "invalid method")
            else:
                reason = str(exc) or type(exc).__name__
                self.refusal = _Refuse(400, f"malformed request: {reason}")
        else:
            self._account(len(data))
            if self.refusal is None:
                return
        # after an error nothing more from this connection is parsed or run
        current = self.current
        pending = self.pending
        if current is not None and not current.complete and pending and pending[-1] is current:
            pending.pop()

    def _account(self, size: int) -> None:
        """Bound the bytes of ``size`` fed that are neither head fields nor body.

        llhttp reports no positions, so the unexplained bytes of one feed
        (chunk sizes and extensions, trailers, OWS, a head still arriving)
        are known only in total: they count against the message in progress
        when the feed began. If that overruns its budget, the refusal covers
        every message whose head or end was parsed in this feed: none of them
        runs (a body being read fails), whatever their order on the wire.
        """
        f_rest = self._f_known + self._f_body
        msg = self.current
        if msg is None and not self._residue and not self._seg_body:
            # the common case, whole messages in one feed: the general path, shortened
            if size - self._f_before - f_rest > MAX_HEAD + 8 * (self._f_body_before + self._f_body):
                self._refuse_feed(_Refuse(400, "chunked framing larger than its body"))
            return
        residue = self._residue + size - self._f_before - f_rest
        body = self._seg_body + self._f_body
        if self._f_ended:
            # a message ended in this feed: its own residue is all of the
            # above at most; the next one's starts at its end
            if residue > MAX_HEAD + 8 * (body + self._f_body_before):
                self._refuse_feed(_Refuse(400, "chunked framing larger than its body"))
                return
            residue = size - self._f_before - f_rest
            body = self._f_body
        self._residue = residue
        self._seg_body = body
        if msg is None:
            self._residue = self._seg_body = 0  # between messages: all accounted
        elif not msg.head_done:
            if residue + msg.head_bytes + len(msg.target) > MAX_HEAD:
                self._refuse_feed(_Refuse(431, f"request head above {MAX_HEAD} bytes"))
        elif residue > MAX_HEAD + 8 * body:
            self._refuse_feed(_Refuse(400, "chunked framing larger than its body"))

    def _refuse_feed(self, refusal: _Refuse) -> None:
        self.refusal = refusal
        touched = self._touched
        for msg in touched:
            msg.complete = False  # its framing is not trusted: a read fails
        if touched:
            self.pending = deque(m for m in self.pending if m not in touched)

    def _recv(self, deadline: float) -> bytes:
        self.deadline = deadline
        try:
            return self.socket.recv(RECV_SIZE)  # type: ignore[no-any-return]
        finally:
            self.deadline = 0.0

    def fill_body(self, msg: _Message) -> None:
        """Read more of ``msg``'s body; OSError if the client or its framing failed."""
        if self.refusal is not None:
            raise OSError(f"request body framing: {self.refusal.message}")
        if msg.expect_continue:
            msg.expect_continue = False
            # never inside an answer whose head has left, and not to HTTP/1.0
            # (RFC 9110 10.1.1): such a client sends its body when it stops waiting
            if not msg.answered and msg.version == "HTTP/1.1":
                self._sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        now = time.monotonic()
        timeout = self.server.body_timeout
        if not msg.body_start:
            msg.body_start = now
        # per read: body_timeout; in all: body_timeout plus 1 s per
        # MIN_BODY_RATE bytes received, which a slow sender cannot stretch
        deadline = min(now + timeout, msg.body_start + timeout + msg.received / MIN_BODY_RATE)
        self.reading = msg
        try:
            data = self._recv(deadline)
        finally:
            self.reading = None
        if not data:
            self.refusal = _Refuse(400, "connection closed inside the body")
            raise OSError("the client closed the connection inside the request body")
        self._feed(data)
        refusal = self._refusal()  # mypy narrowed self.refusal to None; mypyc trusts it
        if refusal is not None and not msg.complete:
            raise OSError(f"request body framing: {refusal.message}")

    def _refusal(self) -> _Refuse | None:
        return self.refusal

    def _next_message(self) -> _Message | None:
        """The next request whose head is complete; None when the connection is done."""
        server = self.server
        # from the end of the last answer (handle() sets ``since``), once per
        # wait: bytes that start no head (CRLF) do not refresh it
        idle_deadline = self.since + server.idle_timeout
        while not self.pending:
            if self.refusal is not None:
                self._refuse(self.refusal)
                return None
            if self.upgraded or server.stopping:
                return None
            if self.current is None:
                deadline = idle_deadline
            else:  # a head has begun: it must be complete in header_timeout
                if not self.head_deadline:
                    self.head_deadline = time.monotonic() + server.header_timeout
                deadline = self.head_deadline
            data = self._recv(deadline)
            if not data:
                return None
            self._feed(data)
        self.head_deadline = 0.0
        return self.pending.popleft()

    # -- the connection --------------------------------------------------------------

    def handle(self) -> None:
        """Serve the connection until it closes; never raises."""
        server = self.server
        self.greenlet = gevent.getcurrent()
        server.track(self)
        try:
            while True:
                msg = self._next_message()
                if msg is None:
                    break
                self.busy = True
                try:
                    keep = self._serve(msg)
                finally:
                    self.busy = False
                    self.since = time.monotonic()
                if not keep:
                    break
        except OSError:
            pass  # the client went away, or the watchdog shut the socket
        except gevent.GreenletExit:
            pass  # killed at stop
        except Exception:  # noqa: BLE001 - a bug here must not kill the server
            _log.exception("connection from %s failed", self.client_address)
        finally:
            server.untrack(self)
            try:
                self.socket.close()
            except OSError:
                pass

    def expire(self) -> None:
        """Called by the watchdog (or at stop): close the connection under its reader."""
        self.expired = True
        try:
            # Reads end (recv returns b""), writes still work: a reader that
            # was waiting for a body can still answer 400 before the close.
            self.socket.shutdown(socket.SHUT_RDWR if self.writing else socket.SHUT_RD)
        except OSError:
            pass

    def kill_if_idle(self) -> None:
        if not self.busy:
            self.expire()

    def _refuse(self, refusal: _Refuse) -> None:
        status = refusal.status
        body = refusal.message.encode("latin-1", "replace") + b"\n"
        head = (
            b"HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
            b"Connection: close\r\n\r\n" % (status, _STATUS_TEXT[status].encode(), len(body))
        )
        try:
            self._sendall(head + body)
        except OSError:
            return
        self._linger()

    def _linger(self) -> None:
        # Closing with unread data makes the kernel answer the client's next
        # segment with a reset, which can destroy our answer before it is
        # read. Half-close, then read (bounded) until the client closes.
        sock = self.socket
        drained = 0
        try:
            sock.shutdown(socket.SHUT_WR)
            with gevent.Timeout(LINGER_SECONDS, False):
                while drained < LINGER_BYTES:
                    chunk = sock.recv(RECV_SIZE)
                    if not chunk:
                        break
                    drained += len(chunk)
        except OSError:
            pass

    def _sendall(self, data: bytes | memoryview) -> None:
        """The one place bytes are written (tests count the calls)."""
        # gevent's sendall() calls getsockopt(SO_SNDBUF) every time (13% of
        # the server's samples under wrk); one send() takes a whole small
        # answer, sendall() is left for the rest of a large one
        # A client that stops reading blocks the send: it gets body_timeout
        # seconds (the watchdog then shuts the socket both ways).
        self.writing = True
        self.deadline = time.monotonic() + self.server.body_timeout
        try:
            sent = self.socket.send(data)
            if sent < len(data):
                self.socket.sendall(memoryview(data)[sent:])
        finally:
            self.writing = False
            self.deadline = 0.0

    def _environ(self, msg: _Message, inp: _Input) -> dict[str, Any]:
        server = self.server
        environ = self.base_environ.copy()
        target = msg.target
        if target[:1] != b"/" and target != b"*":  # absolute-form: keep the path
            rest = target.split(b"://", 1)[1]
            slash = rest.find(b"/")
            target = rest[slash:] if slash >= 0 else b"/"
        path, _, query = target.partition(b"?")
        # find(), not `b"#" in query`: bytes.__contains__ first tries its
        # argument as an int and builds and drops a TypeError (~2k
        # instructions each, twice per request)
        fragment = query.find(b"#")
        if fragment >= 0:
            query = query[:fragment]
        if path.find(b"%") >= 0:
            path = unquote_to_bytes(path)
        environ["REQUEST_METHOD"] = msg.method
        environ["PATH_INFO"] = path.decode("latin-1")
        environ["QUERY_STRING"] = query.decode("latin-1")
        environ["SERVER_PROTOCOL"] = msg.version
        environ["wsgi.input"] = inp
        keys = server.environ_keys
        for name, raw in msg.fields:
            key = keys.get(name)
            if key is None:
                key = _environ_key(name)
                if len(keys) < 512:
                    keys[name] = key
            if not key:
                continue  # a name with '_'
            # llhttp strips leading whitespace, not trailing
            value = raw.rstrip(b" \t") if raw[-1:] in _OWS else raw
            text = value.decode("latin-1")
            if key in environ and key.startswith("HTTP_"):
                environ[key] += "," + text
            else:
                environ[key] = text
        return environ

    def _serve(self, msg: _Message) -> bool:
        """Run the app for ``msg`` and answer; True to keep the connection."""
        server = self.server
        inp = _Input(self, msg)
        environ = self._environ(msg, inp)
        head_only = msg.method == "HEAD"
        state = _Response(self, msg, head_only)
        direct = self.direct_answer
        if direct is not None:
            return self._serve_direct(direct, environ, state)
        try:
            result: Iterable[bytes] = server.application(environ, state.start_response)
        except (Exception, gevent.Timeout):  # noqa: BLE001 - the app's bug: 500
            _log.exception("WSGI app raised")
            return state.fail()
        try:
            if (
                type(result) is list
                and len(result) == 1
                and state.status is not None
                and not state.head_sent
            ):
                state.write_all(result[0])
            else:
                for data in result:
                    if data:
                        state.write(data)
                state.finish()
        except OSError:
            raise
        except (Exception, gevent.Timeout):  # noqa: BLE001 - the app's bug: 500
            _log.exception("WSGI app raised while iterating its body")
            return state.fail()
        finally:
            # A list (RPCApp's answer) has no close(): getattr() would build
            # and drop an AttributeError, ~4k instructions (5% of a request)
            close = None if type(result) is list else getattr(result, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:  # noqa: BLE001
                    _log.exception("WSGI body close() raised")
        return state.done()

    def _serve_direct(
        self, direct: DirectAnswer, environ: dict[str, Any], state: _Response
    ) -> bool:
        """``_serve`` for an RPCApp: its ``respond``, no ``start_response`` (the same bytes)."""
        try:
            status, headers, body = direct(environ)
            state.answer(status, headers, body)
        except OSError:
            raise
        except (Exception, gevent.Timeout):  # noqa: BLE001 - the app's bug: 500
            _log.exception("WSGI app raised")
            return state.fail()
        return state.done()


def _environ_key(name: bytes) -> str:
    if b"_" in name:
        return ""
    upper = name.decode("latin-1").upper().replace("-", "_")
    if upper in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        return upper
    return "HTTP_" + upper


class _Response:
    """start_response, write() and the head of one answer."""

    __slots__ = (
        "block",
        "chunked",
        "close",
        "conn",
        "head_only",
        "head_sent",
        "length",
        "msg",
        "no_body",
        "overrun",
        "says_close",
        "sent",
        "status",
    )

    def __init__(self, conn: RPCHandler, msg: _Message, head_only: bool) -> None:
        self.conn = conn
        self.msg = msg
        self.head_only = head_only
        self.status: bytes | None = None
        self.block = b""
        self.says_close = False
        self.head_sent = False
        self.close = not msg.keep_alive or conn.upgraded
        self.length: int | None = None
        self.chunked = False
        self.sent = 0
        self.no_body = head_only
        self.overrun = False

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], None]:
        if exc_info is not None:
            try:
                if self.head_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status is not None:
            raise AssertionError("start_response called twice without exc_info")
        if not isinstance(status, str) or "\r" in status or "\n" in status:
            raise ValueError(f"invalid status {status!r}")
        code = status[:3]
        if not code.isdigit() or status[3:4] != " ":
            raise ValueError(f"status must be 'NNN reason': {status!r}")
        length = None
        lines = []
        for name, value in headers:
            if type(name) is not str or type(value) is not str or ":" in name:
                raise ValueError(
                    f"header names and values must be str, no ':' in a name: {name!r}: {value!r}"
                )
            lines.append(f"{name}: {value}\r\n")
            if len(name) in (10, 14):  # only these two lengths matter below
                lower = name.lower()
                if lower == "content-length":
                    length = int(value)
                elif lower == "connection" and "close" in value.lower():
                    self.close = True
                    self.says_close = True
        block = "".join(lines)
        # no CR or LF but the line ends: a value cannot add a field (injection)
        if block.count("\n") != len(lines) or block.count("\r") != len(lines):
            raise ValueError(f"a response header holds CR or LF: {headers!r}")
        self.status = status.encode("latin-1")
        self.block = block.encode("latin-1")
        self.length = length
        self.no_body = self.head_only or code.startswith("1") or code in ("204", "304")
        return self.write

    def answer(self, status: str, headers: list[tuple[str, str]], body: bytes) -> None:
        """Send a whole answer whose headers hold no Content-Length (RPCApp.respond's).

        What start_response then write_all do for it, with fewer checks: the
        status and the header names come from RPCApp, not a client. A header
        value's CR or LF is still refused (ValueError, before anything is
        sent), as start_response refuses it.
        """
        lines = []
        for name, value in headers:
            lines.append(name + ": " + value + "\r\n")
            if len(name) == 10 and name.lower() == "connection" and "close" in value.lower():
                self.close = True
                self.says_close = True
        length = len(body)
        lines.append(f"Content-Length: {length}\r\n")
        block = "".join(lines)
        if block.count("\n") != len(lines) or block.count("\r") != len(lines):
            raise ValueError(f"a response header holds CR or LF: {headers!r}")
        self.status = status.encode("latin-1")
        self.block = block.encode("latin-1")
        self.length = length
        self.write_all(body)

    def _head(self, body_length: int | None) -> bytes:
        conn = self.conn
        msg = self.msg
        status = self.status
        if status is None:
            raise AssertionError("the app wrote before calling start_response")
        extra = []
        if self.length is None and not self.no_body:
            if body_length is not None:
                self.length = body_length
                extra.append(b"Content-Length: %d\r\n" % body_length)
            elif msg.version == "HTTP/1.1":
                self.chunked = True
                extra.append(b"Transfer-Encoding: chunked\r\n")
            else:
                self.close = True
        if not msg.complete and not self.close:
            left = None if msg.length is None else msg.length - msg.received
            if left is None or left > DRAIN_LIMIT or msg.expect_continue:
                # the body's rest is not read (see the module rules); a client
                # still waiting for its 100 Continue may never send it
                self.close = True
        if conn.server.stopping:
            self.close = True
        if self.close and not self.says_close:
            extra.append(b"Connection: close\r\n")
        if msg.version == "HTTP/1.0" and not self.close:
            extra.append(b"Connection: keep-alive\r\n")
        self.head_sent = True
        msg.answered = True
        head = b"HTTP/1.1 " + status + _DATE_LINE.get() + self.block
        if extra:
            head += b"".join(extra)
        return head + b"\r\n"

    def _clip(self, data: bytes) -> bytes:
        """``data`` cut to what the declared Content-Length has left.

        Bytes past it would reach the client as the start of another answer
        (a forged response); the connection closes after this one instead.
        A body that is not bytes raises TypeError before any head is sent,
        so the app's bug is answered 500.
        """
        if type(data) is not bytes and not isinstance(data, (bytearray, memoryview)):
            raise TypeError(f"a WSGI body must be bytes, not {type(data).__name__}")
        length = self.length
        if length is None or self.no_body or self.sent + len(data) <= length:
            return data
        self.overrun = True
        self.close = True
        return data[: max(0, length - self.sent)]

    def write_all(self, data: bytes) -> None:
        """The whole body at once: head and body in one write."""
        data = self._clip(data)
        self._send(self._head(len(data)), data)
        self.sent += len(data)

    def write(self, data: bytes) -> None:
        data = self._clip(data)
        if not self.head_sent:
            self._send(self._head(None), data)
        else:
            self._send(b"", data)
        self.sent += len(data)

    def _send(self, prefix: bytes, data: bytes) -> None:
        if self.no_body or not data:
            if prefix:
                self.conn._sendall(prefix)
            return
        suffix = b""
        if self.chunked:
            prefix += b"%x\r\n" % len(data)
            suffix = b"\r\n"
        if len(data) <= COALESCE_LIMIT:
            self.conn._sendall(prefix + data + suffix)
            return
        view = memoryview(data)
        self.conn._sendall(prefix + view[:COALESCE_LIMIT])
        self.conn._sendall(view[COALESCE_LIMIT:])
        if suffix:
            self.conn._sendall(suffix)

    def finish(self) -> None:
        if not self.head_sent:
            self.conn._sendall(self._head(0))
        elif self.chunked:
            self.conn._sendall(b"0\r\n\r\n")

    def fail(self) -> bool:
        """The app raised: a 500 if nothing was sent yet; close either way."""
        if not self.head_sent:
            body = b"Internal Server Error\n"
            self.conn._sendall(
                b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
            )
        if not self.msg.complete:
            self.conn._linger()
        return False

    def done(self) -> bool:
        """After the answer: drain a small remainder, or linger-close; True to go on."""
        msg = self.msg
        conn = self.conn
        if self.overrun:
            _log.error("WSGI app sent more body than its Content-Length %s: cut", self.length)
            if not msg.complete:
                conn._linger()
            return False
        if self.length is not None and self.sent != self.length and not self.no_body:
            _log.error("WSGI app sent %d body bytes for Content-Length %d", self.sent, self.length)
            return False
        if not msg.complete:
            msg.abandoned = True
            msg.expect_continue = False
            msg.body.clear()
            if self.close:
                conn._linger()
                return False
            try:
                while not msg.complete:
                    conn.fill_body(msg)
            except OSError:
                return False
        return not self.close


# The server class lives in an interpreted module: its base is gevent's
# StreamServer, which mypyc cannot subclass (compiled, it loses the base).
from ..listener import RPCServer  # noqa: E402 - after RPCHandler, which it uses
