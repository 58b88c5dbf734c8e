"""Shared fixtures: real servers on 127.0.0.1, port 0, started per test.

- ``raw_server`` starts :class:`tests.support.raw.RawServer`s (scripted
  handler per connection) and stops them after the test.
- ``wsgi_server`` runs any WSGI app on gevent.pywsgi (stock, Nagle on).
- ``bundled_server`` runs :mod:`rpcclient.server` with the example app.
- ``no_fd_leak`` fails a test that leaves descriptors open.

The helpers these build on live in :mod:`tests.support`; this file holds
fixtures only. The test process may or may not be monkey-patched; the gevent
transport needs no patching, so these servers use gevent's own sockets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.proc import FdWatch
from tests.support.raw import Handler, RawServer


@pytest.fixture
def raw_server() -> Iterator[Callable[..., RawServer]]:
    servers: list[RawServer] = []

    def start(handler: Handler, **kw: Any) -> RawServer:
        srv = RawServer(handler, **kw)
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.stop()


@pytest.fixture
def wsgi_server() -> Iterator[Callable[..., str]]:
    """Start a WSGI app on stock gevent.pywsgi; returns its base URL."""
    from gevent.pywsgi import WSGIServer

    servers: list[Any] = []

    def start(app: Any) -> str:
        srv = WSGIServer(("127.0.0.1", 0), app, log=None, error_log=None)
        srv.start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_port}"

    yield start
    for srv in servers:
        srv.stop(timeout=1)


@pytest.fixture
def bundled_server() -> Iterator[str]:
    """The bundled RPC server with the example app, on a free loopback port."""
    from rpcclient.example import app
    from rpcclient.server import serve

    server = serve(app, "127.0.0.1", 0)
    host, port = server.address[:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def no_fd_leak() -> Iterator[FdWatch]:
    """Fail the test if it leaves file descriptors open past ``mark()``."""
    watch = FdWatch()
    yield watch
    watch.check()
