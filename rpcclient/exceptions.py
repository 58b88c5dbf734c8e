"""Every error rpcclient raises, in one tree.

Grouped by the phase of a call in which it happens. The phase decides the one
question a caller must be able to answer: *may the request have reached the
server?* (``may_have_reached_server``). Errors raised before a byte was written
(bad input, pool wait, connect) say ``False``: the call certainly did not run,
and retrying it is always safe. Errors raised after the write started say
``True``: the call may have run, and only an idempotent call may be re-sent.
Remote and HTTP status errors say ``True`` (a server answered).

::

    RPCError
    ├── InvalidRequest (ValueError)        bad name, header or argument; nothing sent
    │   └── RequestTooLarge                request body above the client's limit
    ├── ClientClosed                       the client was closed; nothing sent
    ├── TransportError                     no complete HTTP answer was had
    │   ├── PoolTimeout (RPCTimeout)       no free connection in time; nothing sent
    │   ├── ConnectError                   DNS or TCP/TLS connect failed; nothing sent
    │   │   └── ConnectTimeout (RPCTimeout)
    │   ├── ReadTimeout (RPCTimeout)       sent, no complete answer in time
    │   ├── ConnectionLost                 sent (or sending), then the peer closed or reset
    │   └── ProtocolError                  the answer broke HTTP/1.1 or the wire protocol
    │       ├── ResponseTooLarge           body above the client's limit
    │       └── DecodeError                body is not the msgpack the codec accepts
    ├── HTTPStatusError                    4xx/5xx that is not an RPC error envelope
    └── RemoteError                        the server answered with an error envelope
        └── MethodNotFound                 ... saying the method does not exist

    RPCTimeout                             mixin base of every timeout above

Every error carries ``name`` (``"service.method"`` or the URL for raw requests),
``endpoint`` (the base URL used, or ``None``), ``may_have_reached_server`` and
``attempts`` (how many times the request was sent or tried, at least 1 once a
transport was involved). After retries ``may_have_reached_server`` is the
call's: True when any attempt may have reached the server (a ``PoolTimeout``
after a ``ReadTimeout`` says True). The caller's own ``gevent.Timeout`` and
``GreenletExit`` are never turned into one of these.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = [
    "ClientClosed",
    "ConnectError",
    "ConnectTimeout",
    "ConnectionLost",
    "DecodeError",
    "HTTPStatusError",
    "InvalidRequest",
    "MethodNotFound",
    "PoolTimeout",
    "ProtocolError",
    "RPCError",
    "RPCTimeout",
    "ReadTimeout",
    "RemoteError",
    "RequestTooLarge",
    "ResponseTooLarge",
    "TransportError",
]


# what must never reach a log line raw: C0 and C1 controls, DEL, and the
# Unicode line and paragraph separators (a remote error's text is the server's)
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _escape_char(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` with control characters escaped (``\\x0a``): one log line, never two."""
    return _UNPRINTABLE.sub(_escape_char, text)


class RPCError(Exception):
    """Base of every rpcclient error.

    ``str()`` of an error names the call, the endpoint and whether the request
    may have reached the server, so a log line alone is enough to act on. It
    escapes control characters (CR, LF, ESC...): text a server sent (a remote
    error's type and message) cannot forge log lines; ``message`` and the
    remote fields keep the raw values.
    """

    #: class default; instances may override it (e.g. a ConnectionLost raised
    #: before the first byte left says False).
    may_have_reached_server: bool = True

    def __init__(
        self,
        message: str,
        *,
        name: str | None = None,
        endpoint: str | None = None,
        may_have_reached_server: bool | None = None,
        attempts: int = 1,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.name = name
        self.endpoint = endpoint
        if may_have_reached_server is not None:
            self.may_have_reached_server = may_have_reached_server
        self.attempts = attempts
        #: the X-Request-Id of the call, when it got that far
        self.request_id: str | None = None
        #: seconds from a 503's Retry-After header, when there was one
        self.retry_after: float | None = None

    def __str__(self) -> str:
        parts = [printable(self.message)]
        where = []
        if self.name:
            where.append(f"call {self.name}")
        if self.endpoint:
            where.append(f"endpoint {self.endpoint}")
        if self.request_id:
            where.append(f"request id {self.request_id}")
        if where:
            parts.append(f"[{', '.join(where)}]")
        if not isinstance(self, InvalidRequest | ClientClosed):
            reached = "may have reached" if self.may_have_reached_server else "did not reach"
            parts.append(f"(request {reached} the server")
            parts[-1] += f"; attempts: {self.attempts})" if self.attempts != 1 else ")"
        return " ".join(parts)

    def with_context(self, *, name: str | None = None, endpoint: str | None = None) -> RPCError:
        """Fill in ``name``/``endpoint`` where still unknown; returns ``self``."""
        if self.name is None:
            self.name = name
        if self.endpoint is None:
            self.endpoint = endpoint
        return self


class RPCTimeout(RPCError):
    """Mixin base of every timeout: ``except RPCTimeout`` catches them all."""


class InvalidRequest(RPCError, ValueError):
    """The call was rejected before any connection was taken: a bad service
    or method name, a header with CR/LF/NUL, both ``*args`` and ``**kwargs``,
    arguments msgpack cannot encode. Never sent."""

    may_have_reached_server = False


class RequestTooLarge(InvalidRequest):
    """The encoded request body is above the client's ``max_request_size``."""


class ClientClosed(RPCError):
    """The client (or its transport) was closed before the call. Never sent."""

    may_have_reached_server = False


class TransportError(RPCError):
    """The call did not get a complete HTTP answer."""


class PoolTimeout(TransportError, RPCTimeout):
    """No pooled connection came free within the pool timeout. Never sent."""

    may_have_reached_server = False


class ConnectError(TransportError):
    """Name resolution, TCP connect or TLS handshake failed. Never sent."""

    may_have_reached_server = False


class ConnectTimeout(ConnectError, RPCTimeout):
    """The connect (or TLS handshake) did not finish within its timeout."""


class ReadTimeout(TransportError, RPCTimeout):
    """The request was sent (or being sent) and no complete answer arrived in
    time: the read timeout or the call's total deadline ran out."""


class ConnectionLost(TransportError):
    """The peer closed or reset the connection before a complete answer.

    ``idle_close`` is True when the connection was a reused keep-alive one
    and it ended before any byte of the answer: the signature of a server
    that closed the idle connection as the request went out (it may also
    have crashed on the request: ``may_have_reached_server`` stays True).
    Only a request that is safe to repeat may be re-sent for it, as Go's
    ``net/http`` does for idempotent requests; ``rpcclient.compat.requests``
    does so once, on a new connection.
    """

    idle_close = False


class ProtocolError(TransportError):
    """The answer was not valid HTTP/1.1 (bad status line, conflicting
    framing, truncated body, oversized head) or not valid wire protocol."""


class ResponseTooLarge(ProtocolError):
    """The response body is above the client's ``max_response_size``;
    detected from Content-Length before reading, or at the cap while reading."""


class DecodeError(ProtocolError):
    """A 2xx body, or an error envelope, that the codec cannot decode."""


class HTTPStatusError(RPCError):
    """A 4xx/5xx whose body is not an RPC error envelope (say, a proxy's HTML
    502). ``status`` and a short ``snippet`` of the body say what came back."""

    def __init__(self, message: str, *, status: int, snippet: str = "", **kw: Any) -> None:
        super().__init__(message, **kw)
        self.status = status
        self.snippet = snippet


class RemoteError(RPCError):
    """The server answered with an error envelope
    ``{"error": {"type", "message", "data"}}``: the call reached it.

    ``type``, ``remote_message``, ``data`` and ``status`` are the server's.
    """

    def __init__(
        self,
        message: str,
        *,
        type: str,
        remote_message: str = "",
        data: Any = None,
        status: int = 500,
        **kw: Any,
    ) -> None:
        super().__init__(message, **kw)
        self.type = type
        self.remote_message = remote_message
        self.data = data
        self.status = status


class MethodNotFound(RemoteError):
    """The server does not know the called ``service.method``."""
