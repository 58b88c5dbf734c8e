"""The bundled msgpack RPC server: a plain WSGI app and a gevent runner for it.

:class:`RPCApp` is the server side of wire protocol v1 with no web framework
underneath; it runs on any WSGI server, and :func:`serve` runs it on the
bundled gevent server (:mod:`rpcclient.server._engine.wsgi`). Its rules:

- One request is one call: ``POST {base_path}/{service}/{method}`` with the
  msgpack of the arguments as body. Every answer, success or failure, is
  msgpack with the codec's Content-Type: ``200`` carries the result, ``4xx``
  and ``5xx`` carry ``{"error": {"type": str, "message": str, "data": any}}``.
- Everything that can be decided from the head is decided before a byte of
  the body is read, in this order: ``405 MethodNotAllowed`` (with
  ``Allow: POST``), ``404 MethodNotFound`` (also for any name part starting
  with ``_``), ``415 UnsupportedMediaType``, ``411 LengthRequired`` (neither
  Content-Length nor chunked), ``413 RequestTooLarge`` (Content-Length above
  ``max_body_size``), ``400 BadRequest`` (malformed ``X-Rpc-Timeout-Ms``),
  ``503 Unavailable`` (load shedding). Then the body is read (a chunked body
  only up to the limit: ``413`` past it), decoded (``400 BadRequest``) and
  bound to the handler's signature (``400 BadArguments``).
- An answer given without reading the body closes the connection when that
  body is chunked or above the limit: the server never drains more than
  ``max_body_size`` bytes of a body it will not use.
- A handler never runs with arguments it cannot accept: they are bound
  against its signature first. A TypeError from the binding is the caller's
  fault (``400 BadArguments``); one raised inside the handler is the
  handler's (``500``).
- An exception raised by a handler (any ``Exception``, and a
  ``gevent.Timeout`` escaping it) is ``500`` with ``type`` its class name,
  ``message`` its ``str()`` and ``data`` its ``data`` attribute (nil if absent
  or not encodable). The traceback goes to the ``rpcclient.server`` logger,
  never to the wire. A result msgpack cannot encode is ``500 EncodeError``.
- ``503 Unavailable`` with ``data == {"not_run": True}`` and ``Retry-After: 1``
  promises the handler did not run: any call may be retried.
- ``X-Request-Id`` is echoed back on every answer (when it is at most 200
  visible ASCII characters). ``X-Rpc-Timeout-Ms`` (the client's remaining
  budget) becomes :func:`current_deadline` for the handler.

Layout: ``_engine/`` is the per-request path, compiled (``wsgi``: the
strict HTTP/1.1 handler; ``app``: RPCApp). ``listener`` is :class:`RPCServer`
(interpreted: it subclasses gevent's ``StreamServer``, which a compiled class
cannot). ``dedup`` is the exactly-once store behind ``RPCApp(dedup=...)``,
interpreted because stores call out to Redis and are the user's to replace.
"""

from ._engine.app import (
    DEFAULT_MAX_BODY_SIZE,
    MSGPACK_CONTENT_TYPES,
    RPCApp,
    current_deadline,
    serve,
)
from .dedup import DedupStore, MemoryDedupStore, RedisDedupStore
from .listener import RPCServer

__all__ = [
    "DEFAULT_MAX_BODY_SIZE",
    "MSGPACK_CONTENT_TYPES",
    "DedupStore",
    "MemoryDedupStore",
    "RPCApp",
    "RPCServer",
    "RedisDedupStore",
    "current_deadline",
    "serve",
]
