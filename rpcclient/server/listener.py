"""The listening half of the bundled server: :class:`RPCServer` (interpreted).

It subclasses gevent's ``StreamServer``, a Python class that a mypyc-compiled
class cannot inherit from, so it stays out of the compiled set; the per-request
work (:class:`rpcclient.server._engine.wsgi.RPCHandler`) is compiled. The rules are
:mod:`rpcclient.server._engine.wsgi`'s.
"""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Callable
from typing import Any

import gevent
import gevent.pool
from gevent.server import StreamServer

from ._engine.wsgi import (
    _DATE_LINE,
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    MIN_BODY_RATE,
    DirectAnswer,
    RPCHandler,
    default_max_connections,
)


class RPCServer(StreamServer):  # type: ignore[misc]
    """The strict HTTP/1.1 WSGI server, started or not.

    ``application`` is any WSGI app. ``spawn=None`` (the default) runs each
    connection in an unbounded :class:`gevent.pool.Pool` (the bound is
    ``max_connections``, see the module rules). ``address`` is the bound
    ``(host, port)`` once started; ``url`` its ``http://`` form.
    """

    handler_class: type[RPCHandler] = RPCHandler

    def __init__(
        self,
        listener: Any,
        application: Callable[..., Any],
        *,
        backlog: int | None = None,
        spawn: Any = None,
        handler_class: type[RPCHandler] | None = None,
        max_connections: int | None = None,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        header_timeout: float = DEFAULT_HEADER_TIMEOUT,
        body_timeout: float = DEFAULT_BODY_TIMEOUT,
        **kwargs: Any,
    ) -> None:
        if spawn is None:
            spawn = gevent.pool.Pool()
        for name, value in (
            ("idle_timeout", idle_timeout),
            ("header_timeout", header_timeout),
            ("body_timeout", body_timeout),
        ):
            if not value > 0:
                raise ValueError(f"{name} must be > 0, not {value!r}")
        if max_connections is None:
            max_connections = default_max_connections()
        if max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, not {max_connections!r}")
        super().__init__(listener, backlog=backlog, spawn=spawn, **kwargs)
        self.application = application  # sets direct_answer (the property below)
        if handler_class is not None:
            self.handler_class = handler_class
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.stopping = False
        self.refused_connections = 0
        self.evicted_connections = 0
        self._handlers: dict[RPCHandler, None] = {}
        self._watchdog: Any = None
        self.environ_keys: dict[bytes, str] = {}
        self.base_environ: dict[str, Any] = {}

    @property
    def application(self) -> Callable[..., Any]:
        """The WSGI app; setting it also sets :attr:`direct_answer`."""
        return self._application

    @application.setter
    def application(self, app: Callable[..., Any]) -> None:
        self._application = app
        #: ``app.respond`` when ``app`` is an RPCApp whose ``__call__`` is
        #: RPCApp's own: the handler then answers without ``start_response``
        #: (same bytes on the wire); None for any other app, which gets WSGI
        self.direct_answer: DirectAnswer | None = None
        from ._engine.app import RPCApp  # here: server imports this module

        if isinstance(app, RPCApp) and type(app).__call__ is RPCApp.__call__:
            self.direct_answer = app.respond

    def init_socket(self) -> None:
        super().init_socket()
        host, port = self.address[:2]
        self.base_environ = {
            "SCRIPT_NAME": "",
            "SERVER_NAME": str(host),
            "SERVER_PORT": str(port),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": False,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
            "wsgi.input_terminated": True,
        }

    @property
    def url(self) -> str:
        """``http://host:port`` of the bound address (after start)."""
        host, port = self.address[:2]
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}"

    def date_header(self) -> bytes:
        """``\\r\\nDate: ...\\r\\n`` for the current second (what each answer carries)."""
        return _DATE_LINE.get()

    # -- connections -----------------------------------------------------------------

    def track(self, handler: RPCHandler) -> None:
        self._handlers[handler] = None

    def untrack(self, handler: RPCHandler) -> None:
        self._handlers.pop(handler, None)

    def _make_room(self) -> bool:
        """At the bound: close the longest-waiting connection with no request in progress."""
        if len(self._handlers) < self.max_connections:
            return True
        oldest = None
        for handler in self._handlers:
            idle = not handler.busy and not handler.expired
            if idle and (oldest is None or handler.since < oldest.since):
                oldest = handler
        if oldest is None:
            oldest = self._slowest_body()
        if oldest is None:
            return False
        self.evicted_connections += 1
        oldest.expire()
        self.untrack(oldest)  # its greenlet leaves soon; the slot is free now
        return True

    def _slowest_body(self) -> RPCHandler | None:
        """The connection waiting longest for a body that arrives below MIN_BODY_RATE.

        Its app is blocked reading, not working: at the bound it gives way
        (a second of grace first), so slow uploads cannot hold every slot.
        """
        now = time.monotonic()
        slowest = None
        for handler in self._handlers:
            msg = handler.reading
            if msg is None or handler.expired or not msg.body_start:
                continue
            elapsed = now - msg.body_start
            if elapsed < 1.0 or msg.received >= MIN_BODY_RATE * elapsed:
                continue
            if slowest is None or msg.body_start < slowest[0]:
                slowest = (msg.body_start, handler)
        return None if slowest is None else slowest[1]

    def handle(self, sock: Any, address: Any) -> None:
        """One accepted connection (runs in its own greenlet)."""
        if not self._make_room():
            self.refused_connections += 1
            sock.close()
            return
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass  # not a TCP socket (a UNIX listener): nothing to tune
        self.handler_class(sock, address, self).handle()

    def start(self) -> None:
        super().start()
        if self._watchdog is None:
            self._watchdog = gevent.spawn(self._watch)

    def _watch(self) -> None:
        tick = max(0.05, min(1.0, self.idle_timeout, self.header_timeout, self.body_timeout) / 4)
        while True:
            gevent.sleep(tick)
            now = time.monotonic()
            for handler in list(self._handlers):
                if handler.deadline and handler.deadline < now:
                    handler.expire()

    def close(self) -> None:
        super().close()

    def stop(self, timeout: float | None = None) -> None:
        """Stop accepting; close idle connections now; give busy ones
        ``timeout`` seconds (default :attr:`stop_timeout`), then kill them."""
        self.stopping = True
        self.close()
        for handler in list(self._handlers):
            handler.kill_if_idle()
        try:
            super().stop(timeout)
        finally:
            if self._watchdog is not None:
                self._watchdog.kill()
                self._watchdog = None

    def __repr__(self) -> str:
        busy = sum(1 for h in self._handlers if h.busy)
        state = "stopping" if self.stopping else ("serving" if self.started else "stopped")
        address = getattr(self, "address", None)
        return f"<RPCServer {state} at {address!r} connections={len(self._handlers)} busy={busy}>"
