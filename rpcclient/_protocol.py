"""Wire protocol v1: how a call becomes an HTTP request and an answer a result.

Rules (README.rst, "Wire protocol v1"):

- ``name = "service.method"``; service is the text before the first dot.
  Both parts are non-empty and made of letters, digits, ``_``, ``-`` and (in
  the method) ``.``; anything else (``/``, spaces, CR, LF, NUL) is refused
  before a connection is taken.
- ``POST {base path}{path template}``, default template ``/{service}/{method}``.
- Body: msgpack of ``args``; ``Content-Type: application/x-msgpack``.
- 200: the body is msgpack of the result.
- 4xx/5xx with a msgpack ``{"error": {"type", "message", "data"}}`` body:
  :class:`RemoteError` (``MethodNotFound`` for type ``MethodNotFound``).
- any other non-2xx: :class:`HTTPStatusError` with the status and a snippet.

The error-envelope decoder is pluggable (``error_decoder=`` on the client): a
callable ``(status, headers, body, codec, name) -> RPCError | None``; ``None``
falls back to :class:`HTTPStatusError`.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from typing import Any, Final

from ._core.codec import Codec
from ._core.models import PATH_TEXT, Headers, Response
from ._core.retry import parse_retry_after
from .exceptions import (
    DecodeError,
    HTTPStatusError,
    InvalidRequest,
    MethodNotFound,
    RemoteError,
    RPCError,
)

__all__ = [
    "DEFAULT_PATH_TEMPLATE",
    "ECHOED_REQUEST_ID",
    "METHOD_NAME",
    "REQUEST_ID",
    "SERVICE_NAME",
    "TIMEOUT_MS",
    "ErrorDecoder",
    "decode_error_envelope",
    "decode_response",
    "name_parts",
    "split_name",
]

DEFAULT_PATH_TEMPLATE = "/{service}/{method}"
SNIPPET_CHARS = 200

# -- the grammar, both sides ---------------------------------------------------------
# The one home of what client and bundled server must agree on: the client
# refuses to send what these refuse, the server refuses to register (or to
# echo) it. Compiled once here; the compiled server imports the objects
# themselves, so a request costs the same as with its own copies.

#: a service: the text of a call name before its first dot
SERVICE_NAME: Final = re.compile(r"[A-Za-z0-9_\-]+\Z")
#: a method: the rest of the name, dots allowed but not dots alone ("admin.."
#: would be the target /admin/.., which servers and proxies normalise to another route)
METHOD_NAME: Final = re.compile(r"(?!\.+\Z)[A-Za-z0-9_\-.]+\Z")
#: an ``X-Request-Id`` a caller may give a call (``request_id=``): what the
#: client sends
REQUEST_ID: Final = re.compile(r"[A-Za-z0-9._:\-]{1,200}\Z")
#: an ``X-Request-Id`` the bundled server echoes and deduplicates on: any
#: visible ASCII, for ids from other clients too. Wider than
#: :data:`REQUEST_ID` on purpose; every id a client sends is one of these
#: (tests/test_protocol_grammar.py).
ECHOED_REQUEST_ID: Final = re.compile(r"[\x21-\x7e]{1,200}\Z")
#: an ``X-Rpc-Timeout-Ms`` value: whole milliseconds (the client writes ``%d``)
TIMEOUT_MS: Final = re.compile(r"[0-9]{1,12}\Z")


def name_parts(name: str) -> tuple[str, str] | None:
    """``"user.get_profile"`` -> ``("user", "get_profile")``; None when the
    name breaks the grammar (each side raises its own error for that)."""
    service, dot, method = name.partition(".")
    if not dot or not SERVICE_NAME.match(service) or not METHOD_NAME.match(method):
        return None
    return service, method


ErrorDecoder = Callable[[int, Headers, bytes, Codec, str], "RPCError | None"]


def split_name(name: object) -> tuple[str, str]:
    """``"user.get_profile"`` -> ``("user", "get_profile")``; InvalidRequest if malformed."""
    if not isinstance(name, str):
        raise InvalidRequest(f"call name must be a str 'service.method', not {name!r}")
    parts = name_parts(name)
    if parts is None:
        raise InvalidRequest(
            f"invalid call name {name!r}: expected 'service.method' made of letters, "
            "digits, '_' and '-', the method '.' too but not dots alone (no '/', spaces or "
            "control characters)",
            name=name if len(name) < 200 else None,
        )
    return parts


def check_path_template(template: str) -> str:
    """Refuse a template that cannot produce a valid request target.

    Its text must be plain ASCII path characters (RFC 3986 ``pchar`` and
    ``/``; anything else percent-encoded) starting with ``/``, and its only
    fields ``{service}`` and ``{method}`` as they are: no attribute or index
    (``{service.__class__}``), format spec (``{service:>4}``) or conversion
    (``{method!r}``), which would put arbitrary text in the request line.
    """
    if not isinstance(template, str) or not template.startswith("/"):
        raise InvalidRequest(f"path template must be a str starting with '/': {template!r}")
    try:
        pieces = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise InvalidRequest(f"malformed path template {template!r}: {exc}") from None
    for text, field, spec, conversion in pieces:
        if not PATH_TEXT.match(text):
            raise InvalidRequest(
                f"path template must be plain ASCII path characters (no spaces, control "
                f"characters, '?' or '#'; percent-encode the rest): {template!r}"
            )
        if field is None:
            continue
        if field not in ("service", "method") or spec or conversion is not None:
            raise InvalidRequest(
                f"path template may use only {{service}} and {{method}}, without attributes, "
                f"indexes, conversions or format specs: {template!r} (found {{{field}...}})"
            )
    return template


def snippet(body: bytes | bytearray) -> str:
    """The first characters of a body, printable, for error messages."""
    text = bytes(body[: SNIPPET_CHARS * 4]).decode("utf-8", "replace")
    text = " ".join(text.split())
    return text[:SNIPPET_CHARS] + ("..." if len(text) > SNIPPET_CHARS else "")


def decode_error_envelope(
    status: int, headers: Headers, body: bytes, codec: Codec, name: str
) -> RPCError | None:
    """The default error decoder: a msgpack ``{"error": {...}}`` -> RemoteError.

    Returns ``None`` when the body is not such an envelope.
    """
    ctype = headers.get("content-type", "")
    if "msgpack" not in ctype.lower():
        return None
    try:
        payload = codec.unpack(body, name=name)
    except DecodeError:
        return None
    if not isinstance(payload, dict):
        return None
    err = payload.get("error")
    if not isinstance(err, dict) or not isinstance(err.get("type"), str):
        return None
    etype: str = err["type"]
    message = err.get("message")
    message = message if isinstance(message, str) else repr(message)
    cls = MethodNotFound if etype == "MethodNotFound" else RemoteError
    return cls(
        f"remote {etype} (HTTP {status}): {message}",
        type=etype,
        remote_message=message,
        data=err.get("data"),
        status=status,
        name=name,
    )


def decode_response(
    response: Response,
    codec: Codec,
    name: str,
    error_decoder: ErrorDecoder = decode_error_envelope,
) -> Any:
    """The call's result, or raise what the answer says went wrong."""
    status = response.status
    if 200 <= status < 300:
        return codec.unpack(response.body, name=name)
    body = bytes(response.body)
    err = error_decoder(status, response.headers, body, codec, name)
    if err is None:
        err = HTTPStatusError(
            f"HTTP {status} {response.reason} with a non-RPC body: {snippet(body)!r}",
            status=status,
            snippet=snippet(body),
            name=name,
        )
    if status == 503:
        err.retry_after = parse_retry_after(response.headers.get("retry-after"))
    raise err
