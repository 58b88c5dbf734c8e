"""pytest plugin that runs requests' own test suite here: loopback only, shim or real.

Loaded with ``-p rpcclient_suite_plugin`` by ``tests/interop/test_requests_suite.py``
(see ``tests/interop/requests_suite/suite_runner.py``). It does three things:

- **Loopback only.** Name lookups of anything but ``localhost`` and connects
  to anything but a loopback address fail at once (``socket.gaierror`` /
  ``ConnectionRefusedError``), on stdlib and gevent sockets alike: requests'
  suite has tests that reach for public hosts and unroutable addresses, and
  nothing here may leave the machine.
- **The shim as requests** (``RPCCLIENT_SUITE_SHIM=1``): real requests is
  imported first (the shim's exceptions subclass requests' own), then
  ``sys.modules["requests"]`` and every ``requests.*`` entry are replaced by
  :mod:`rpcclient.compat.requests` and its submodules; a submodule the shim
  does not have is removed, so importing it fails as it would for a user.
- **A threaded httpbin**: pytest-httpbin's server answers one request at a
  time, so a delay endpoint held up the tests after it (same for both runs).
- **Outcomes** of every test (``passed``, ``failed``, ``skipped``, ``error``,
  ``xfailed``, ``xpassed``) are written as JSON to ``RPCCLIENT_SUITE_REPORT``.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import sys
from typing import Any

_LOCAL_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost"})


def _is_loopback(host: Any) -> bool:
    if host is None or host in ("", b""):
        return True
    if isinstance(host, bytes):
        host = host.decode("latin-1")
    host = str(host).strip("[]").split("%")[0]
    if host.lower() in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _guard_lookup(original: Any) -> Any:
    def getaddrinfo(host: Any, *args: Any, **kw: Any) -> Any:
        if not _is_loopback(host):
            raise socket.gaierror(socket.EAI_NONAME, f"loopback only in this suite: {host!r}")
        return original(host, *args, **kw)

    return getaddrinfo


def _guard_connect(original: Any, ex: bool) -> Any:
    def connect(self: Any, address: Any, *args: Any) -> Any:
        if isinstance(address, tuple) and not _is_loopback(address[0]):
            if ex:
                return 111  # ECONNREFUSED
            raise ConnectionRefusedError(111, f"loopback only in this suite: {address!r}")
        return original(self, address, *args)

    return connect


def _install_guards() -> None:
    import gevent.socket
    from gevent import _socket3

    socket.getaddrinfo = _guard_lookup(socket.getaddrinfo)  # type: ignore[assignment]
    gevent.socket.getaddrinfo = _guard_lookup(gevent.socket.getaddrinfo)
    for cls in (socket.socket, _socket3.socket):
        cls.connect = _guard_connect(cls.connect, ex=False)  # type: ignore[method-assign]
        cls.connect_ex = _guard_connect(cls.connect_ex, ex=True)  # type: ignore[method-assign]


def _install_shim() -> None:
    import requests  # noqa: F401 - the real one first: the shim builds on its exceptions

    import rpcclient.compat.requests as shim

    provided = {"requests": shim}
    for name, module in list(sys.modules.items()):
        if name.startswith("rpcclient.compat.requests."):
            provided["requests." + name.removeprefix("rpcclient.compat.requests.")] = module
    for name in [n for n in sys.modules if n == "requests" or n.startswith("requests.")]:
        if not name.startswith("requests.packages."):  # requests' aliases of urllib3, idna
            del sys.modules[name]
    sys.modules.update(provided)


def _threaded_httpbin() -> None:
    # pytest-httpbin serves one request at a time: a test of a 10 s delay
    # that times out after 2 s then holds up the next tests for 8 s
    try:
        import pytest_httpbin.serve as serve
    except ImportError:
        return
    from socketserver import ThreadingMixIn

    original = serve.make_server

    def make_server(host: Any, port: Any, app: Any, server_class: Any = None, **kw: Any) -> Any:
        base = server_class or serve.WSGIServer
        threaded = type(
            f"Threaded{base.__name__}", (ThreadingMixIn, base), {"daemon_threads": True}
        )
        return original(host, port, app, server_class=threaded, **kw)

    serve.make_server = make_server


_install_guards()
_threaded_httpbin()
if os.environ.get("RPCCLIENT_SUITE_SHIM") == "1":
    _install_shim()

_OUTCOMES: dict[str, str] = {}


def pytest_runtest_logreport(report: Any) -> None:
    nodeid = report.nodeid
    if report.when == "call" or (report.when != "call" and report.outcome != "passed"):
        if hasattr(report, "wasxfail"):
            outcome = "xpassed" if report.outcome == "passed" else "xfailed"
        elif report.when != "call" and report.outcome == "failed":
            outcome = "error"
        else:
            outcome = report.outcome
        if _OUTCOMES.get(nodeid) in (None, "passed"):
            _OUTCOMES[nodeid] = outcome


def pytest_sessionfinish(session: Any, exitstatus: Any) -> None:
    path = os.environ.get("RPCCLIENT_SUITE_REPORT")
    if path:
        with open(path, "w", encoding="utf-8") as out:
            json.dump(_OUTCOMES, out, indent=0, sort_keys=True)
