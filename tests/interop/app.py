"""The interop suite's server side: one set of methods, served two ways.

``rpc_app`` is the bundled :class:`rpcclient.server.RPCApp`; ``flask_app`` is a
Flask app that speaks wire protocol v1 by hand (README "Wire protocol v1"), as a
team's pre-rpcclient service would. Both serve the same methods under the
service ``t``:

- ``t.echo(value)``: the value back.
- ``t.count()``: records one execution of the call's ``X-Request-Id`` and
  returns that id, so a caller can tell its own answer from another call's.
- ``t.slow(seconds)``: records, sleeps, returns the id (stalls, kills).
- ``t.size(n)``: ``n`` bytes.
- ``t.boom(message)``: raises :class:`Boom` (with a ``data`` attribute).
- ``t.relay(url, value)``: ``t.echo(value)`` on another server, through a
  Client shared by the worker's threads.
- ``t.peer()``: ``[pid, port]``: the worker's pid and the client port of the
  connection the request came on (the proxy's ``X-Client-Port`` when a proxy
  sets it), so tests count connections server-side.

Executions are appended to the file named by ``INTEROP_LOG`` (one
``O_APPEND`` write of ``"<request id> <pid> <client port>\\n"`` each, atomic between the
worker processes of one server), so a test counts executions by request id
across workers, reloads and killed workers.

Run as ``python -m tests.interop.app bundled|waitress FD APP`` to serve ``APP``
on the listening socket inherited as file descriptor ``FD`` (``hangup FD -``:
an upstream that reads each request and closes without an answer).
"""

from __future__ import annotations

import os
import sys
import threading
from contextvars import ContextVar
from typing import Any

import gevent
import msgpack

from rpcclient.server import RPCApp

_environ: ContextVar[dict[str, Any] | None] = ContextVar("interop_environ", default=None)


class Boom(Exception):
    """What ``t.boom`` raises; its ``data`` travels in the error envelope."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.data = {"why": message, "n": 1}


def _current_environ() -> dict[str, Any]:
    environ = _environ.get()
    if environ is None:
        import flask

        environ = flask.request.environ
    return environ


def _request_id() -> str:
    return str(_current_environ().get("HTTP_X_REQUEST_ID", ""))


def _record() -> str:
    request_id = _request_id()
    path = os.environ.get("INTEROP_LOG")
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{request_id} {os.getpid()} {peer()[1]}\n".encode())
        finally:
            os.close(fd)
    return request_id


def echo(value: Any) -> Any:
    return value


def count() -> str:
    return _record()


def slow(seconds: float) -> str:
    request_id = _record()
    # gevent.sleep: cooperative under gevent workers, and a plain blocking
    # sleep (on the thread's own hub) under sync, threaded and uWSGI workers.
    gevent.sleep(seconds)
    return request_id


def size(n: int) -> bytes:
    return b"x" * n


def boom(message: str) -> None:
    raise Boom(message)


def peer() -> list[int]:
    environ = _current_environ()
    port = int(environ.get("HTTP_X_CLIENT_PORT") or environ.get("REMOTE_PORT") or 0)
    if not port and "uwsgi.version" in environ:
        # uWSGI's --http11-socket leaves REMOTE_PORT out; ask the socket itself.
        import socket

        import uwsgi  # type: ignore[import-not-found]  # only inside a uWSGI worker

        sock = socket.socket(fileno=os.dup(uwsgi.connection_fd()))
        try:
            port = int(sock.getpeername()[1])
        finally:
            sock.close()
    return [os.getpid(), port]


_relay_clients: dict[str, Any] = {}
_relay_lock = threading.Lock()


def relay(url: str, value: Any) -> Any:
    """``t.echo(value)`` on ``url`` through one Client per process, shared by its threads.

    What a service on gunicorn's gthread worker does when it calls another
    service (issue 12 item 9: a Client shared by OS threads).
    """
    from rpcclient import Client, Timeout

    with _relay_lock:
        client = _relay_clients.get(url)
        if client is None:
            client = _relay_clients[url] = Client(url, timeout=Timeout(total=5.0))
    return client.call("t.echo", [value])


METHODS = {
    "t.echo": echo,
    "t.count": count,
    "t.slow": slow,
    "t.size": size,
    "t.boom": boom,
    "t.peer": peer,
    "t.relay": relay,
}

_rpc = RPCApp()
for _name, _fn in METHODS.items():
    _rpc.register(_name, _fn)


def rpc_app(environ: dict[str, Any], start_response: Any) -> Any:
    """RPCApp, with the WSGI environ visible to the methods."""
    token = _environ.set(environ)
    try:
        return _rpc(environ, start_response)
    finally:
        _environ.reset(token)


def _make_flask() -> Any:
    import flask

    app = flask.Flask(__name__)
    msgpack_type = "application/x-msgpack"

    def answer(status: int, value: Any) -> Any:
        response = flask.Response(msgpack.packb(value, use_bin_type=True), status=status)
        response.headers["Content-Type"] = msgpack_type
        request_id = flask.request.headers.get("X-Request-Id")
        if request_id:
            response.headers["X-Request-Id"] = request_id
        return response

    def error(status: int, type_: str, message: str, data: Any = None) -> Any:
        return answer(status, {"error": {"type": type_, "message": message, "data": data}})

    @app.post("/<service>/<method>")
    def call(service: str, method: str) -> Any:
        fn = METHODS.get(f"{service}.{method}")
        if fn is None:
            return error(404, "MethodNotFound", f"no method {service}.{method}")
        if flask.request.mimetype != msgpack_type:
            return error(415, "UnsupportedMediaType", "Content-Type must be msgpack")
        try:
            args = msgpack.unpackb(flask.request.get_data(), raw=False, strict_map_key=False)
        except Exception as exc:  # any undecodable body is the caller's
            return error(400, "BadRequest", f"undecodable body: {exc}")
        try:
            if isinstance(args, list):
                result = fn(*args)
            elif isinstance(args, dict):
                result = fn(**args)
            elif args is None:
                result = fn()
            else:
                result = fn(args)
        except TypeError as exc:
            return error(400, "BadArguments", str(exc))
        except Exception as exc:  # the envelope carries any handler error
            return error(500, type(exc).__name__, str(exc), getattr(exc, "data", None))
        return answer(200, result)

    return app


flask_app = _make_flask()


def _hang_up(fd: int) -> None:
    """A broken upstream: reads each request whole, then closes without answering."""
    import socket

    listener = socket.socket(fileno=fd)
    listener.setblocking(True)  # inherited from a gevent socket: O_NONBLOCK is set
    while True:
        conn, _ = listener.accept()
        with conn:
            # Read until the peer pauses: closing with unread bytes would send
            # a reset, a different failure from "closed without an answer".
            conn.settimeout(0.2)
            try:
                while conn.recv(65536):
                    pass
            except OSError:
                pass


def _main(argv: list[str]) -> None:
    kind, fd, name = argv[0], int(argv[1]), argv[2]
    if kind == "hangup":
        _hang_up(fd)
        return
    app = {"rpc_app": rpc_app, "flask_app": flask_app}[name]
    if kind == "bundled":
        import gevent.socket

        from rpcclient.server import RPCServer

        RPCServer(gevent.socket.socket(fileno=fd), app).serve_forever()
    elif kind == "waitress":
        import socket

        import waitress

        waitress.serve(app, sockets=[socket.socket(fileno=fd)], threads=4, _quiet=True)
    else:
        raise SystemExit(f"unknown server kind {kind!r}")


if __name__ == "__main__":
    _main(sys.argv[1:])
