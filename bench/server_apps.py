"""The apps bench_server.py serves: one RPC method, ``echo.echo``, three ways.

- :data:`rpc_app`: rpcclient's RPCApp (served by ``rpcclient serve`` and by
  gunicorn ``-k gevent``).
- :data:`flask_app`: the same RPC written as a Flask view, the way an RPC
  service is commonly written with a web framework (served by gevent.pywsgi).
"""

from __future__ import annotations

from typing import Any

import msgpack

from rpcclient.server import RPCApp

rpc_app = RPCApp()


@rpc_app.register("echo.echo")
def echo(value: Any) -> Any:
    return value


def _flask_app() -> Any:
    from flask import Flask, Response, request

    app = Flask("bench")
    methods = {"echo.echo": echo}

    @app.route("/<service>/<method>", methods=["POST"])
    def call(service: str, method: str) -> Any:
        fn = methods.get(f"{service}.{method}")
        if fn is None:
            body = msgpack.packb({"error": {"type": "MethodNotFound", "message": "", "data": None}})
            return Response(body, status=404, content_type="application/x-msgpack")
        args = msgpack.unpackb(request.get_data(), raw=False)
        result = fn(*args) if isinstance(args, list) else fn(**args)
        return Response(msgpack.packb(result), content_type="application/x-msgpack")

    return app


def flask_main(argv: list[str]) -> int:
    """``python bench/server_apps.py flask CPU``: Flask on gevent.pywsgi, TCP_NODELAY on."""
    import os
    import socket

    from gevent import pywsgi

    os.sched_setaffinity(0, {int(argv[0])})

    class NoDelay(pywsgi.WSGIHandler):  # type: ignore[misc]
        def handle(self) -> None:
            # without it every keep-alive answer waits ~40 ms (Nagle + delayed ACK)
            self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            super().handle()

    server = pywsgi.WSGIServer(("127.0.0.1", 0), _flask_app(), log=None, handler_class=NoDelay)
    server.start()
    print(f"flask: serving on http://127.0.0.1:{server.address[1]}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(flask_main(sys.argv[2:]) if sys.argv[1] == "flask" else 2)
