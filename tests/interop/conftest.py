"""Fixtures of the interop suite: third-party servers and proxies as subprocesses.

Every server gets its listening socket from the test process: the fixture binds
``127.0.0.1`` port 0, listens, and hands the socket over as an inherited file
descriptor (gunicorn ``fd://N``, uWSGI ``fd://N``, waitress ``sockets=``, nginx
through its ``NGINX`` inherited-sockets variable, haproxy ``fd@N``). So no port
is ever fixed or guessed, and a connect can never reach another process.

Readiness is a real call (``t.echo``) with a bounded wait; a server that exits
or never answers fails the test with the tail of its output. Each server runs
in its own process group and is killed (SIGKILL to the group) at teardown.

Binaries: nginx and haproxy come from the system's packages (``.ci/run``
installs them); gunicorn, waitress, pyuwsgi and flask from the ``test`` extra.
A missing one fails the test under ``CI=true`` and skips it (with the reason)
elsewhere.
"""

from __future__ import annotations

import collections
import contextlib
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent
import gevent.pool
import msgpack
import pytest

from rpcclient import Client, RPCError, Timeout

ROOT = Path(__file__).resolve().parents[2]
TRANSPORTS = ("gevent", "requests", "urllib3")
IN_CI = os.environ.get("CI", "").lower() in ("true", "1", "yes")


def need(what: str) -> None:
    """A missing server: a failure in CI, a skip (with the reason) elsewhere."""
    message = f"{what} is not installed (.ci/run installs it)"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def binary(name: str) -> str:
    path = shutil.which(
        name, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    )
    if path is None:
        need(f"the {name} binary")
    assert path is not None
    return path


def module(name: str) -> None:
    try:
        __import__(name)
    except ImportError:
        need(f"the Python package {name!r}")


def listener() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    return sock


def probe(port: int, timeout: float) -> bool:
    """One real call ``t.echo`` on a fresh connection; True when it is answered 200."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(
            "POST",
            "/t/echo",
            body=msgpack.packb([1]),
            headers={"Content-Type": "application/x-msgpack"},
        )
        response = conn.getresponse()
        response.read()
        return response.status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


@dataclass
class ServerProcess:
    """One server (or proxy) subprocess with its inherited listening sockets."""

    name: str
    argv: list[str]
    tmp: Path
    sockets: list[socket.socket]
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self._ports = [s.getsockname()[1] for s in self.sockets]

    @property
    def port(self) -> int:
        return self.ports[0]

    @property
    def ports(self) -> list[int]:
        return self._ports

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url_of(self, index: int) -> str:
        return f"http://127.0.0.1:{self.ports[index]}"

    @property
    def log_path(self) -> Path:
        return self.tmp / f"{self.name}.executions"

    @property
    def output_path(self) -> Path:
        return self.tmp / f"{self.name}.output"

    def start(self, ready_timeout: float = 30.0, check_ready: bool = True) -> ServerProcess:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
            "INTEROP_LOG": str(self.log_path),
            **self.env,
        }
        env.pop("CI", None)  # nothing of ours reads it in the server
        with open(self.output_path, "wb") as out:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=self.tmp,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                pass_fds=[s.fileno() for s in self.sockets],
                start_new_session=True,
            )
        # The server holds its copies; ours would keep a dead server's port
        # accepting connects into a backlog nobody reads.
        for sock in self.sockets:
            sock.close()
        if check_ready:
            self.wait_ready(ready_timeout)
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                pytest.fail(f"{self.name} exited with {self.proc.returncode}:\n{self.output()}")
            if probe(self.port, timeout=min(2.0, max(0.1, deadline - time.monotonic()))):
                return
            gevent.sleep(0.05)
        pytest.fail(f"{self.name} did not answer within {timeout} s:\n{self.output()}")

    def output(self) -> str:
        try:
            return self.output_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def executions(self) -> collections.Counter[str]:
        """How many times each request id ran (over every worker, ever)."""
        try:
            text = self.log_path.read_text()
        except FileNotFoundError:
            return collections.Counter()
        return collections.Counter(line.split(" ", 1)[0] for line in text.splitlines() if line)

    def pids(self, request_ids: Iterator[str] | Sequence[str]) -> set[int]:
        """The worker pids that ran these request ids."""
        wanted = set(request_ids)
        pids = set()
        for line in self.log_path.read_text().splitlines():
            request_id, pid, _ = line.split(" ")
            if request_id in wanted:
                pids.add(int(pid))
        return pids

    def last_pid(self) -> int:
        """The pid of the worker that ran the latest execution."""
        return int(self.log_path.read_text().splitlines()[-1].split(" ")[1])

    def client_ports(self) -> dict[str, int]:
        """The client port (the proxy's ``X-Client-Port``) each request id ran on."""
        ports = {}
        for line in self.log_path.read_text().splitlines():
            request_id, _, port = line.split(" ")
            ports[request_id] = int(port)
        return ports

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def reload_nginx(self) -> None:
        """``nginx -s reload`` with this instance's prefix and config (via its pid file)."""
        assert self.argv[1] == "-p" and self.argv[3] == "-c", self.argv
        result = subprocess.run(
            [*self.argv[:5], "-s", "reload"], capture_output=True, timeout=30, check=False
        )
        assert result.returncode == 0, result.stderr.decode(errors="replace")

    def children(self) -> list[int]:
        """The pids of the master's direct children (gunicorn workers)."""
        assert self.proc is not None
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return [int(pid) for pid in path.read_text().split()]

    def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        self.proc = None


# -- the servers ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """A server kind, the app it serves, and whether it keeps connections alive."""

    name: str
    app: str
    keepalive: bool


SERVERS = [
    Spec("bundled", "rpc_app", True),
    Spec("gunicorn-gevent", "rpc_app", True),
    Spec("gunicorn-sync", "rpc_app", False),
    Spec("gunicorn-gthread", "rpc_app", True),
    Spec("waitress", "rpc_app", True),
    Spec("uwsgi", "rpc_app", True),
    Spec("gunicorn-gevent", "flask_app", True),
    Spec("waitress", "flask_app", True),
    Spec("uwsgi", "flask_app", True),
]


def server_argv(kind: str, app: str, fd: int) -> list[str]:
    py = sys.executable
    target = f"tests.interop.app:{app}"
    if kind == "bundled":
        return [py, "-m", "tests.interop.app", "bundled", str(fd), app]
    if kind == "waitress":
        module("waitress")
        return [py, "-m", "tests.interop.app", "waitress", str(fd), app]
    if kind.startswith("gunicorn-"):
        module("gunicorn")
        worker = kind.removeprefix("gunicorn-")
        argv = [py, "-m", "gunicorn", "--bind", f"fd://{fd}", "-k", worker]
        # gthread's old workers serve their keep-alive connections until this
        # bound after a HUP: short, so a reload completes within a test.
        argv += ["--graceful-timeout", "2"]
        argv += ["-w", "2", "--threads", "4"] if worker == "gthread" else ["-w", "2"]
        return [*argv, target]
    if kind.startswith("uwsgi"):
        module("pyuwsgi")
        # --http11-socket keeps connections alive; --http-socket ("uwsgi-close")
        # answers without "Connection: close" and then closes (issue 12 item 6).
        option = "--http-socket" if kind == "uwsgi-close" else "--http11-socket"
        return [
            py, "-c", "import sys, pyuwsgi; pyuwsgi.run(sys.argv[1:])",
            option, f"fd://{fd}", "--module", target, "--master", "--processes", "2",
            "--threads", "8", "--disable-logging", "--die-on-term", "--need-app",
        ]  # fmt: skip
    raise AssertionError(kind)


def start_server(kind: str, app: str, tmp: Path, name: str | None = None) -> ServerProcess:
    if app == "flask_app":
        module("flask")
    sock = listener()
    srv = ServerProcess(name or f"{kind}-{app}", server_argv(kind, app, sock.fileno()), tmp, [sock])
    try:
        return srv.start()
    except BaseException:
        srv.stop()
        raise


@pytest.fixture(scope="module", params=SERVERS, ids=lambda s: f"{s.name}-{s.app}")
def server(request: Any, tmp_path_factory: Any) -> Iterator[tuple[Spec, ServerProcess]]:
    spec: Spec = request.param
    srv = start_server(spec.name, spec.app, tmp_path_factory.mktemp(spec.name))
    yield spec, srv
    srv.stop()


@pytest.fixture(params=TRANSPORTS)
def transport(request: Any) -> str:
    return str(request.param)


@pytest.fixture
def make_client(transport: str) -> Iterator[Callable[..., Client]]:
    clients: list[Client] = []

    def make(url: str, **kw: Any) -> Client:
        kw.setdefault("timeout", Timeout(total=10.0))
        client = Client(url, transport=transport, **kw)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


# -- the proxies ---------------------------------------------------------------------------


def _dead_port() -> socket.socket:
    """A socket bound to a loopback port and never listening: connects are refused."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock


NGINX_SITES = ("main", "down", "few", "gzip", "broken")


def nginx_conf(tmp: Path, ports: dict[str, int], upstream: int, dead: int, broken: int) -> str:
    """One nginx, one server block per behaviour under test (see NGINX_SITES)."""
    user = "user root;\n" if os.geteuid() == 0 else ""
    proxy = (
        'proxy_http_version 1.1; proxy_set_header Connection "";'
        " proxy_set_header X-Client-Port $remote_port; proxy_read_timeout 1s;"
    )
    return f"""{user}daemon off;
master_process on;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx.error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/client_body; proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi; uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
    keepalive_timeout 1s;
    client_max_body_size 4k;
    upstream up {{ server 127.0.0.1:{upstream}; keepalive 16; }}
    upstream dead {{ server 127.0.0.1:{dead}; }}
    upstream broken {{ server 127.0.0.1:{broken}; }}
    server {{ listen 127.0.0.1:{ports["main"]}; location / {{ proxy_pass http://up; {proxy} }} }}
    server {{ listen 127.0.0.1:{ports["down"]}; location / {{ proxy_pass http://dead; {proxy} }} }}
    server {{
        listen 127.0.0.1:{ports["broken"]};
        location / {{ proxy_pass http://broken; proxy_next_upstream off; {proxy} }}
    }}
    server {{
        listen 127.0.0.1:{ports["few"]};
        keepalive_timeout 30s; keepalive_requests 3;
        location / {{ proxy_pass http://up; {proxy} }}
    }}
    server {{
        listen 127.0.0.1:{ports["gzip"]};
        keepalive_timeout 30s;
        gzip on; gzip_types application/x-msgpack; gzip_min_length 1; gzip_proxied any;
        location / {{ proxy_pass http://up; {proxy} }}
    }}
}}
"""


def start_nginx(tmp: Path, upstream: int, dead: int, broken: int) -> ServerProcess:
    exe = binary("nginx")
    socks = [listener() for _ in NGINX_SITES]
    ports = {site: s.getsockname()[1] for site, s in zip(NGINX_SITES, socks, strict=True)}
    conf = tmp / "nginx.conf"
    conf.write_text(nginx_conf(tmp, ports, upstream, dead, broken))
    srv = ServerProcess(
        "nginx",
        [exe, "-p", str(tmp), "-c", str(conf), "-e", str(tmp / "nginx.error.log")],
        tmp,
        socks,
        # nginx's own inherited-listeners mechanism (its binary upgrade): each
        # listen directive takes the inherited socket bound to its address.
        env={"NGINX": "".join(f"{s.fileno()};" for s in socks)},
    )
    try:
        return srv.start()
    except BaseException:
        srv.stop()
        raise


HAPROXY_SITES = ("main", "down", "broken")


def haproxy_conf(fds: dict[str, int], upstream: int, dead: int, broken: int) -> str:
    return f"""global
    maxconn 1024
defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 1s
    timeout http-keep-alive 1s
    timeout http-request 10s
frontend main
    bind fd@{fds["main"]}
    http-request set-header X-Client-Port %[src_port]
    http-request deny deny_status 413 if {{ req.hdr_val(content-length) gt 4096 }}
    default_backend up
frontend down
    bind fd@{fds["down"]}
    default_backend dead
frontend broken
    bind fd@{fds["broken"]}
    default_backend broken
backend up
    server s1 127.0.0.1:{upstream}
backend dead
    retries 0
    server s1 127.0.0.1:{dead}
backend broken
    retries 0
    server s1 127.0.0.1:{broken}
"""


def start_haproxy(tmp: Path, upstream: int, dead: int, broken: int) -> ServerProcess:
    exe = binary("haproxy")
    socks = [listener() for _ in HAPROXY_SITES]
    fds = {site: s.fileno() for site, s in zip(HAPROXY_SITES, socks, strict=True)}
    conf = tmp / "haproxy.cfg"
    conf.write_text(haproxy_conf(fds, upstream, dead, broken))
    srv = ServerProcess("haproxy", [exe, "-db", "-f", str(conf)], tmp, socks)
    try:
        return srv.start()
    except BaseException:
        srv.stop()
        raise


@dataclass
class Proxied:
    """A proxy in front of a bundled server; ``url(site)`` is one of its listeners."""

    kind: str
    proxy: ServerProcess
    upstream: ServerProcess
    sites: Sequence[str]
    broken: ServerProcess
    dead: socket.socket

    def stop(self) -> None:
        self.proxy.stop()
        self.upstream.stop()
        self.broken.stop()
        self.dead.close()

    def url(self, site: str = "main") -> str:
        return self.proxy.url_of(list(self.sites).index(site))


def start_proxied(kind: str, tmp: Path) -> Proxied:
    """A bundled server, a refusing port and a hanging-up upstream behind the proxy."""
    upstream = start_server("bundled", "rpc_app", tmp, name=f"{kind}-upstream")
    dead = _dead_port()
    sock = listener()
    broken = ServerProcess(
        f"{kind}-broken",
        [sys.executable, "-m", "tests.interop.app", "hangup", str(sock.fileno()), "-"],
        tmp,
        [sock],
    )
    try:
        broken.start(check_ready=False)
        starter = start_nginx if kind == "nginx" else start_haproxy
        proxy = starter(tmp, upstream.port, dead.getsockname()[1], broken.port)
    except BaseException:
        upstream.stop()
        broken.stop()
        dead.close()
        raise
    sites = NGINX_SITES if kind == "nginx" else HAPROXY_SITES
    return Proxied(kind, proxy, upstream, sites, broken, dead)


@pytest.fixture(scope="module", params=["nginx", "haproxy"])
def proxied(request: Any, tmp_path_factory: Any) -> Iterator[Proxied]:
    env = start_proxied(str(request.param), tmp_path_factory.mktemp(str(request.param)))
    yield env
    env.stop()


# -- load with executions counted by request id --------------------------------------------


@dataclass
class Outcome:
    request_id: str
    result: Any = None
    error: RPCError | None = None
    finished: float = field(default_factory=time.monotonic)


_ids = iter(range(1, 10**9))


def new_id(tag: str) -> str:
    return f"ix-{tag}-{os.getpid()}-{next(_ids)}"


def call_counted(
    client: Client, tag: str, method: str = "t.count", args: Any = None, **kw: Any
) -> Outcome:
    request_id = new_id(tag)
    try:
        return Outcome(request_id, client.call(method, args, request_id=request_id, **kw))
    except RPCError as exc:
        return Outcome(request_id, error=exc)


def load(
    client: Client,
    tag: str,
    *,
    greenlets: int,
    calls: int,
    method: str = "t.count",
    args: Any = None,
    during: Callable[[], None] | None = None,
    after: float = 0.3,
    **kw: Any,
) -> list[Outcome]:
    """``calls`` counted calls over ``greenlets`` greenlets, ``during()`` beside them.

    With ``during``, the calls go on until ``after`` seconds past its end (so the
    load spans whatever it does), ``calls`` then being a cap.
    """
    outcomes: list[Outcome] = []
    remaining = [calls]
    done: list[float] = []

    def busy() -> bool:
        if remaining[0] <= 0:
            return False
        if during is None:
            return True
        return not done or time.monotonic() < done[0] + after

    def worker() -> None:
        while busy():
            remaining[0] -= 1
            outcomes.append(call_counted(client, tag, method, args, **kw))

    def run_during() -> None:
        assert during is not None
        try:
            during()
        finally:
            done.append(time.monotonic())

    pool = gevent.pool.Pool()
    for _ in range(greenlets):
        pool.spawn(worker)
    if during is not None:
        pool.spawn(run_during)
    pool.join(timeout=120, raise_error=True)
    assert not pool, "the load did not finish within 120 s"
    return outcomes


def check_counted(
    outcomes: list[Outcome], executions: collections.Counter[str], *, idempotent: bool = False
) -> list[Outcome]:
    """The invariants of counted calls; returns the failed ones.

    - every answer is the call's own (``t.count``/``t.slow`` return the id);
    - a call that succeeded ran (exactly once unless idempotent: a retried
      idempotent call may legitimately have run twice);
    - a non-idempotent call never ran twice (0 duplicate executions);
    - a failed call that the server ran says ``may_have_reached_server``.
    """
    failed = []
    for out in outcomes:
        ran = executions[out.request_id]
        if not idempotent:
            assert ran <= 1, f"{out.request_id} ran {ran} times (a duplicate execution)"
        if out.error is None:
            assert out.result == out.request_id, f"{out.request_id} got {out.result!r}"
            assert ran >= 1, f"{out.request_id} succeeded but the server never ran it"
        else:
            failed.append(out)
            if ran:
                assert out.error.may_have_reached_server, (
                    f"{out.request_id} ran on the server but its error says it did not: "
                    f"{out.error!r}"
                )
    return failed
