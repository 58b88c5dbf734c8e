"""``rpcclient ab``: one workload through two clients, side by side.

The rules of a fair A/B run, and how this module keeps them:

- **Each arm is its own process**, started fresh for every repetition; the
  server is another process. So an arm's CPU figure (``getrusage`` of that
  process, over the measured calls only) is the client's alone, and one
  arm's warm caches or garbage never bill the other. Arms whose transport is
  only cooperative under monkey-patching (``requests``, ``urllib3``) call
  ``gevent.monkey.patch_all()`` first thing in their process; ``gevent``
  arms run unpatched, as users run them.
- **Interleaved repetitions** (A B A B ...): a noisy neighbour slows both
  arms alike instead of one. The table shows each figure's median over the
  repetitions and its spread (min-max); ratios are B/A of the medians.
- **Separate cores** when there are two or more: the server on the last
  core, the arms on the first (``os.sched_setaffinity``).
- **Packets are counted at the server, without root.** The default target is
  the bundled server (:mod:`rpcclient.server`, example app) run by
  :func:`serve_counting`: it keeps a duplicate descriptor of every accepted
  connection and reads Linux ``TCP_INFO`` from it (``tcpi_data_segs_in``,
  ``tcpi_bytes_received``), so client-to-server data segments and request
  bytes per call are measured for any client. The totals are served at
  :data:`CONTROL_PATH` (``GET``), answered before the RPC app sees the
  request; the connection that asks is left out of the counts. Against a
  ``--url`` that does not answer that path, both figures are "n/a".

The measuring loop (:func:`measure`) and the counter protocol
(:func:`fetch_tcp_totals`) are reused by the scripts in ``bench/``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import select
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "CONTROL_PATH",
    "ArmFailed",
    "ArmSpec",
    "ConnectionCounters",
    "ServerProcess",
    "compare",
    "configure_parser",
    "fetch_tcp_totals",
    "format_table",
    "measure",
    "percentile",
    "pin_cpus",
    "run",
    "serve_counting",
    "start_server",
    "summarize_latencies",
]

#: ``GET`` here answers the connection counters as JSON (see the module docstring)
CONTROL_PATH = "/.rpcclient-ab/tcp-info"
#: the first stdout line of a counting server process starts with this
SERVING_PREFIX = "rpcclient ab: serving on "
#: arms whose transport needs a monkey-patched process to be cooperative
PATCHED_TRANSPORTS = frozenset({"requests", "urllib3"})
#: ``Client`` options an arm spec may set (``gevent:pool_size=5,timeout=none``)
ARM_OPTIONS = frozenset(
    {"pool_size", "timeout", "stats", "deadline_header", "idle_timeout", "max_connection_age"}
)
METHOD = "echo.echo"

# struct tcp_info (linux/tcp.h): u64 tcpi_bytes_received @128, u32 tcpi_data_segs_in @152
_TCP_INFO = getattr(socket, "TCP_INFO", None)
_BYTES_RECEIVED = 128
_DATA_SEGS_IN = 152
_TCP_INFO_LEN = 160


# -- counting at the server ----------------------------------------------------------


def tcp_counters(sock: Any) -> tuple[int, int] | None:
    """``(data_segs_in, bytes_received)`` of a connected TCP socket; None where unknown."""
    if _TCP_INFO is None:
        return None
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, _TCP_INFO_LEN)
    except OSError:
        return None
    if len(raw) < _DATA_SEGS_IN + 4:
        return None  # kernel older than 4.6
    (segs,) = struct.unpack_from("I", raw, _DATA_SEGS_IN)
    (received,) = struct.unpack_from("Q", raw, _BYTES_RECEIVED)
    return int(segs), int(received)


class ConnectionCounters:
    """Received data segments and bytes over every connection a server accepted.

    ``opened``/``closed`` bracket a connection; ``totals()`` adds the live
    ones (read now) to the sum left by closed ones, so it only grows. A
    connection marked ``control`` (the one asking for the totals) counts
    nowhere. Bookkeeping only: callers own the sockets they pass in.
    """

    def __init__(self) -> None:
        self._live: dict[int, Any] = {}
        self._control: set[int] = set()
        self._closed_segs = 0
        self._closed_bytes = 0
        self.connections = 0
        self.available = _TCP_INFO is not None

    def opened(self, key: int, probe: Any) -> None:
        self._live[key] = probe
        self.connections += 1

    def mark_control(self, key: int) -> None:
        if key in self._live and key not in self._control:
            self._control.add(key)
            self.connections -= 1

    def closed(self, key: int) -> None:
        probe = self._live.pop(key, None)
        if key in self._control:
            self._control.discard(key)
            return
        if probe is not None:
            counters = tcp_counters(probe)
            if counters is None:
                self.available = False
            else:
                self._closed_segs += counters[0]
                self._closed_bytes += counters[1]

    def totals(self) -> dict[str, Any]:
        segs, received = self._closed_segs, self._closed_bytes
        available = self.available
        for key, probe in list(self._live.items()):
            if key in self._control:
                continue
            counters = tcp_counters(probe)
            if counters is None:
                available = False
                continue
            segs += counters[0]
            received += counters[1]
        return {
            "available": available,
            "data_segs_in": segs,
            "bytes_in": received,
            "connections": self.connections,
        }


def serve_counting(app: Callable[..., Any], host: str = "127.0.0.1", port: int = 0) -> Any:
    """Start the bundled server on ``app`` with connection counters; returns it started.

    The server is an :class:`rpcclient.server.RPCServer` (the bundled one,
    unchanged on the RPC path) whose ``counters`` attribute is a
    :class:`ConnectionCounters`, and whose app answers :data:`CONTROL_PATH`.
    """
    from .server import RPCServer

    counters = ConnectionCounters()

    class _CountingServer(RPCServer):  # type: ignore[misc]
        def handle(self, sock: Any, address: Any) -> None:
            # pywsgi closes the socket before handle() returns; a duplicate
            # descriptor keeps TCP_INFO readable until we have read it.
            key = id(sock)
            try:
                probe: Any = socket.socket(fileno=os.dup(sock.fileno()))
            except OSError:
                probe = None
            counters.opened(key, probe)
            try:
                super().handle(sock, address)
            finally:
                counters.closed(key)
                if probe is not None:
                    probe.close()

    def control_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if environ.get("PATH_INFO") == CONTROL_PATH:
            sock = getattr(environ.get("wsgi.input"), "socket", None)
            if sock is not None:
                counters.mark_control(id(sock))
            body = json.dumps(counters.totals()).encode()
            start_response(
                "200 OK",
                [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
            )
            return [body]
        return app(environ, start_response)

    server = _CountingServer((host, port), control_app)
    server.counters = counters
    server.start()
    return server


def fetch_tcp_totals(url: str, timeout: float = 5.0) -> dict[str, Any] | None:
    """``GET url + CONTROL_PATH`` on a fresh connection; the counters, or None.

    None when the server does not answer that path with JSON counters (not
    one of ours) or its kernel has no ``TCP_INFO``. Works with plain and
    gevent-patched sockets alike.
    """
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname is None:
        return None
    base = parts.path.rstrip("/")
    host = parts.hostname
    request = (
        f"GET {base}{CONTROL_PATH} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n\r\n"
    ).encode("latin-1")
    try:
        with socket.create_connection((host, parts.port or 80), timeout=timeout) as sock:
            sock.sendall(request)
            chunks = []
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                chunks.append(data)
    except OSError:
        return None
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    if not head.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200")):
        return None
    try:
        totals = json.loads(body)
    except ValueError:
        return None
    if not isinstance(totals, dict) or not totals.get("available"):
        return None
    return totals


# -- measuring ---------------------------------------------------------------------


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``0 < q <= 1``) of an ascending sequence."""
    if not ordered:
        return math.nan
    index = max(0, math.ceil(q * len(ordered)) - 1)
    return ordered[min(index, len(ordered) - 1)]


def summarize_latencies(latencies_s: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/max in milliseconds."""
    ordered = sorted(latencies_s)
    return {
        "p50": percentile(ordered, 0.50) * 1000.0,
        "p90": percentile(ordered, 0.90) * 1000.0,
        "p99": percentile(ordered, 0.99) * 1000.0,
        "max": (ordered[-1] * 1000.0) if ordered else math.nan,
    }


def _cpu_seconds() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _drive(
    call: Callable[[], Any],
    concurrency: int,
    calls: int | None,
    stop_at: float,
    record: Callable[[float], None],
) -> tuple[int, str | None]:
    """Call from ``concurrency`` greenlets until ``calls`` are done or ``stop_at``
    (a ``perf_counter`` time) passed; ``record`` each latency. (errors, first error)."""
    import gevent

    clock = time.perf_counter
    remaining = -1 if calls is None else calls
    errors = 0
    first_error: str | None = None

    def worker() -> None:
        nonlocal remaining, errors, first_error
        while remaining != 0:
            # no greenlet switch can happen between the test and the decrement
            remaining -= 1
            started = clock()
            if started >= stop_at:
                return
            try:
                call()
            except Exception as exc:  # noqa: BLE001 - counted and reported, never hidden
                errors += 1
                if first_error is None:
                    first_error = repr(exc)
            record(clock() - started)

    if concurrency == 1:
        worker()
    else:
        gevent.joinall([gevent.spawn(worker) for _ in range(concurrency)], raise_error=True)
    return errors, first_error


def measure(
    call: Callable[[], Any],
    *,
    calls: int | None = None,
    duration: float | None = None,
    concurrency: int = 1,
    warmup: int = 100,
    counters_url: str | None = None,
    mark: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run ``call()`` from ``concurrency`` greenlets; return the figures of the run.

    Exactly ``calls`` calls, or as many as start within ``duration`` seconds
    (give one of the two), after ``warmup`` untimed calls made with the same
    concurrency, so that every pooled connection is open before the clock
    starts. CPU is this process's user+system time (``getrusage``) over the
    measured calls only. With ``counters_url``, the server's connection
    counters are read before and after, giving segments and request bytes
    per call (None when unavailable). ``mark("start")``/``mark("end")``
    bracket the measured calls (for syscall tracing). A call that raises is
    counted in ``errors`` and the run goes on; the first error's repr is kept.
    Latencies are the caller's view: pool wait included.
    """
    if (calls is None) == (duration is None):
        raise ValueError("give exactly one of calls and duration")
    if concurrency < 1:
        raise ValueError("concurrency must be >= 1")
    if warmup:
        _drive(call, concurrency, warmup, math.inf, lambda _latency: None)
    before = fetch_tcp_totals(counters_url) if counters_url else None
    latencies: list[float] = []
    if mark is not None:
        mark("start")
    cpu0 = _cpu_seconds()
    t0 = time.perf_counter()
    stop_at = math.inf if duration is None else t0 + duration
    errors, first_error = _drive(call, concurrency, calls, stop_at, latencies.append)
    elapsed = time.perf_counter() - t0
    cpu = _cpu_seconds() - cpu0
    if mark is not None:
        mark("end")
    after = fetch_tcp_totals(counters_url) if counters_url else None
    done = len(latencies)
    per_call_us = cpu * 1e6 / done if done else math.nan
    result: dict[str, Any] = {
        "calls": done,
        "elapsed_s": elapsed,
        "calls_per_s": done / elapsed if elapsed > 0 else math.nan,
        "cpu_us_per_call": per_call_us,
        "cpu_ms_per_1000": per_call_us,  # the same number, in the unit of the ab table
        "latency_ms": summarize_latencies(latencies),
        "segments_per_call": None,
        "request_bytes_per_call": None,
        "errors": errors,
        "first_error": first_error,
        "latencies_s": latencies,
    }
    if before is not None and after is not None and done:
        result["segments_per_call"] = (after["data_segs_in"] - before["data_segs_in"]) / done
        result["request_bytes_per_call"] = (after["bytes_in"] - before["bytes_in"]) / done
    return result


# -- arms ----------------------------------------------------------------------------


class ArmFailed(Exception):
    """An arm could not be built or its process failed; the message says why."""


def _parse_value(text: str) -> Any:
    lowered = text.lower()
    if lowered in {"none", "null"}:
        return None
    if lowered in {"true", "yes", "on"}:
        return True
    if lowered in {"false", "no", "off"}:
        return False
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    raise ArmFailed(f"cannot read option value {text!r} (a number, true/false or none)")


@dataclass(frozen=True)
class ArmSpec:
    """One arm: a transport and ``Client`` options, from text like
    ``"gevent"`` or ``"gevent:pool_size=5,timeout=none"``."""

    text: str
    transport: str
    options: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> ArmSpec:
        """Raises :class:`ArmFailed` for an empty transport or an unknown option."""
        name, _, rest = text.strip().partition(":")
        if not name:
            raise ArmFailed(f"arm {text!r}: no transport name")
        options: dict[str, Any] = {}
        for item in filter(None, (p.strip() for p in rest.split(","))):
            key, eq, value = item.partition("=")
            key = key.strip()
            if not eq or key not in ARM_OPTIONS:
                raise ArmFailed(
                    f"arm {text!r}: bad option {item!r} (known: {', '.join(sorted(ARM_OPTIONS))})"
                )
            options[key] = _parse_value(value.strip())
        return cls(text.strip(), name, options)

    def client_options(self, pool_size: int) -> dict[str, Any]:
        return {"pool_size": pool_size, **self.options}

    def check(self, pool_size: int) -> None:
        """Build (and close) the client without I/O: ArmFailed if it cannot be built."""
        from ._public import Client

        try:
            Client(
                "http://127.0.0.1:9", transport=self.transport, **self.client_options(pool_size)
            ).close()
        except (ValueError, TypeError, ImportError) as exc:
            raise ArmFailed(f"arm {self.text!r}: cannot build the client: {exc}") from None


def pin_cpus() -> tuple[int | None, int | None]:
    """``(client_cpu, server_cpu)``: different cores when 2+ are usable, else Nones."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None, None
    if len(cpus) < 2:
        return None, None
    return cpus[0], cpus[-1]


def child_env() -> dict[str, str]:
    """This environment, with rpcclient importable in a child started anywhere."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    return env


def _pin(cpu: int | None) -> None:
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})


# The first statements an arm process runs: patch (when the transport needs it)
# before anything else imports socket, ssl or threading.
_ARM_BOOT = """\
import json, sys
config = json.loads(sys.argv[1])
if config["patch"]:
    from gevent import monkey
    monkey.patch_all()
from rpcclient._ab import _arm_main
sys.exit(_arm_main(config))
"""


def _arm_main(config: dict[str, Any]) -> int:
    """Body of an arm process: one measured run, its figures as JSON on stdout."""
    _pin(config.get("cpu"))
    from ._public import Client

    payload = b"x" * config["body_size"]
    args = [payload]
    with Client(config["url"], transport=config["transport"], **config["options"]) as client:
        if client.call(METHOD, args) != payload:
            print("rpcclient ab: echo.echo answered something else", file=sys.stderr)
            return 1
        result = measure(
            lambda: client.call(METHOD, args),
            calls=config["calls"],
            concurrency=config["concurrency"],
            warmup=config["warmup"],
            counters_url=config["url"] if config["counters"] else None,
        )
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


def run_arm_process(config: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run one arm in a fresh interpreter; its result dict, or ArmFailed."""
    command = [sys.executable, "-c", _ARM_BOOT, json.dumps(config)]
    try:
        done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ArmFailed(f"arm {config['label']!r} did not finish within {timeout:.0f} s") from None
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-8:])
        raise ArmFailed(f"arm {config['label']!r} exited with {done.returncode}:\n{tail}")
    lines = done.stdout.strip().splitlines()
    try:
        result: dict[str, Any] = json.loads(lines[-1])
    except (IndexError, ValueError):
        raise ArmFailed(f"arm {config['label']!r} printed no result") from None
    return result


# -- the server process --------------------------------------------------------------


def _server_main(argv: Sequence[str]) -> int:
    """Body of a server process: the counting bundled server until SIGTERM or orphaned."""
    import gevent

    cpu = int(argv[0]) if argv and argv[0] != "-" else None
    _pin(cpu)
    from .example import app

    server = serve_counting(app, "127.0.0.1", 0)
    parent = os.getppid()
    gevent.signal_handler(signal.SIGTERM, server.close)
    print(f"{SERVING_PREFIX}{server.url}", flush=True)

    def orphan_watch() -> None:
        # never outlive the tool that started us
        while os.getppid() == parent:
            gevent.sleep(1.0)
        server.close()

    gevent.spawn(orphan_watch)
    server.serve_forever(stop_timeout=1.0)
    return 0


@dataclass
class ServerProcess:
    """A server running in a child process, reachable at ``url``."""

    process: subprocess.Popen[str]
    url: str

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5.0)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


def start_process_server(command: Sequence[str], timeout: float = 15.0) -> ServerProcess:
    """Start ``command``; wait for its first stdout line ``...serving... on URL``.

    The URL is the last word of that line. Raises RuntimeError if the
    process exits or says nothing within ``timeout`` seconds.
    """
    process = subprocess.Popen(
        list(command), stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=child_env()
    )
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    line = process.stdout.readline() if ready else ""
    if "serving" not in line:
        process.kill()
        process.wait()
        raise RuntimeError(f"server {command!r} did not start: {line.strip()!r}")
    return ServerProcess(process, line.split()[-1])


@contextmanager
def start_server(cpu: int | None = None) -> Iterator[ServerProcess]:
    """The bundled server (example app, counting connections) in its own process."""
    code = (
        "import sys; from rpcclient._ab import _server_main; sys.exit(_server_main(sys.argv[1:]))"
    )
    server = start_process_server([sys.executable, "-c", code, "-" if cpu is None else str(cpu)])
    try:
        yield server
    finally:
        server.stop()


# -- the comparison ------------------------------------------------------------------

#: (key, label, higher is better, format) of each row of the table
_ROWS: list[tuple[str, str, bool, str]] = [
    ("calls_per_s", "calls/s", True, "{:,.0f}"),
    ("p50", "latency p50 ms", False, "{:.3f}"),
    ("p90", "latency p90 ms", False, "{:.3f}"),
    ("p99", "latency p99 ms", False, "{:.3f}"),
    ("max", "latency max ms", False, "{:.2f}"),
    ("cpu_ms_per_1000", "client CPU ms/1000 calls", False, "{:.1f}"),
    ("request_bytes_per_call", "request bytes/call", False, "{:.1f}"),
    ("segments_per_call", "client->server segs/call", False, "{:.2f}"),
]


def _flat(run: Mapping[str, Any]) -> dict[str, float | None]:
    flat: dict[str, float | None] = {key: run.get(key) for key, *_ in _ROWS}
    flat.update(run["latency_ms"])
    return flat


def _summary(runs: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float] | None]:
    """Per metric: median, min and max over the runs (None when not measured)."""
    out: dict[str, dict[str, float] | None] = {}
    flats = [_flat(r) for r in runs]
    for key, *_ in _ROWS:
        values = [f[key] for f in flats]
        clean = [float(v) for v in values if v is not None]
        out[key] = (
            {"median": statistics.median(clean), "min": min(clean), "max": max(clean)}
            if clean and len(clean) == len(values)
            else None
        )
    return out


def compare(
    a: ArmSpec,
    b: ArmSpec,
    *,
    calls: int = 3000,
    concurrency: int = 10,
    pool_size: int = 10,
    body_size: int = 100,
    repeat: int = 5,
    url: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run A and B interleaved ``repeat`` times; the result document (see ``--json``).

    Without ``url``, the bundled server is started for the run in its own
    process. Raises :class:`ArmFailed` when an arm cannot be built or fails;
    nothing is measured then.
    """
    if calls < 1 or concurrency < 1 or repeat < 1 or pool_size < 1 or body_size < 0:
        raise ArmFailed("calls, concurrency, repeat and pool size must be >= 1, body size >= 0")
    for spec in (a, b):
        spec.check(pool_size)
    say = progress or (lambda _text: None)
    client_cpu, server_cpu = pin_cpus()
    warmup = min(200, max(10, calls // 10))
    latencies: dict[str, list[float]] = {"A": [], "B": []}
    runs: dict[str, list[dict[str, Any]]] = {"A": [], "B": []}
    started = time.monotonic()

    def measure_all(target: str, counters: bool) -> None:
        for rep in range(repeat):
            for key, spec in (("A", a), ("B", b)):
                config = {
                    "label": f"{key}: {spec.text}",
                    "url": target,
                    "transport": spec.transport,
                    "options": spec.client_options(pool_size),
                    "patch": spec.transport in PATCHED_TRANSPORTS,
                    "calls": calls,
                    "concurrency": concurrency,
                    "warmup": warmup,
                    "body_size": body_size,
                    "counters": counters,
                    "cpu": client_cpu,
                }
                result = run_arm_process(config, timeout=60.0 + calls / 50.0)
                latencies[key].extend(result.pop("latencies_s"))
                runs[key].append(result)
                say(
                    f"rpcclient ab: rep {rep + 1}/{repeat} {key} ({spec.text}): "
                    f"{result['calls_per_s']:,.0f} calls/s, p50 "
                    f"{result['latency_ms']['p50']:.3f} ms"
                    + (f", {result['errors']} errors" if result["errors"] else "")
                )

    if url is None:
        with start_server(server_cpu) as server:
            target = server.url
            say(f"rpcclient ab: bundled server at {target} (pid {server.process.pid})")
            measure_all(target, True)
        bundled = True
        counters = True
    else:
        target = url
        bundled = False
        counters = fetch_tcp_totals(url) is not None
        measure_all(target, counters)
    summaries = {key: _summary(runs[key]) for key in runs}
    ratios: dict[str, float | None] = {}
    for key, *_ in _ROWS:
        sa, sb = summaries["A"][key], summaries["B"][key]
        ratios[key] = (
            sb["median"] / sa["median"]
            if sa is not None and sb is not None and sa["median"]
            else None
        )
    from ._version import __version__

    return {
        "tool": "rpcclient ab",
        "version": __version__,
        "config": {
            "calls": calls,
            "concurrency": concurrency,
            "pool_size": pool_size,
            "body_size": body_size,
            "repeat": repeat,
            "warmup": warmup,
            "method": METHOD,
            "client_cpu": client_cpu,
            "server_cpu": server_cpu,
        },
        "target": {"url": target, "bundled": bundled, "counters": counters},
        "arms": {
            key: {"spec": spec.text, "runs": runs[key], "summary": summaries[key]}
            for key, spec in (("A", a), ("B", b))
        },
        "ratios_b_over_a": ratios,
        "wall_s": round(time.monotonic() - started, 2),
        "_latencies_s": latencies,  # for --plot; dropped from the JSON file
    }


def format_table(result: Mapping[str, Any]) -> str:
    """The side-by-side text table of a :func:`compare` result."""
    cfg = result["config"]
    arms = result["arms"]
    head = (
        f"rpcclient ab: {cfg['repeat']} x {cfg['calls']} calls of {METHOD} "
        f"({cfg['body_size']} B payload), concurrency {cfg['concurrency']}, "
        f"pool {cfg['pool_size']}, target {result['target']['url']}"
        f"{' (bundled server)' if result['target']['bundled'] else ''}"
    )
    cells = [["", f"A: {arms['A']['spec']}", f"B: {arms['B']['spec']}", "B/A"]]
    for key, label, higher, fmt in _ROWS:
        row = [label]
        for arm in ("A", "B"):
            s = arms[arm]["summary"][key]
            row.append(
                "n/a"
                if s is None
                else f"{fmt.format(s['median'])} ({fmt.format(s['min'])}-{fmt.format(s['max'])})"
            )
        ratio = result["ratios_b_over_a"][key]
        row.append(
            "n/a" if ratio is None else f"{ratio:.2f}x" + ("" if higher else " (lower better)")
        )
        cells.append(row)
    widths = [max(len(r[i]) for r in cells) for i in range(4)]
    lines = [head, "median (min-max) over interleaved repetitions", ""]
    for row in cells:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    errors = {k: sum(r["errors"] for r in arms[k]["runs"]) for k in ("A", "B")}
    for key, count in errors.items():
        if count:
            first = next(r["first_error"] for r in arms[key]["runs"] if r["errors"])
            lines.append(f"WARNING: arm {key} had {count} failed calls, first: {first}")
    if not result["target"]["counters"]:
        lines.append("segments and bytes: n/a (the target does not serve our TCP counters)")
    return "\n".join(lines)


def plot(result: Mapping[str, Any], path: str) -> None:
    """Write the two latency distributions to a PNG; ImportError without matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (hist, cdf) = plt.subplots(1, 2, figsize=(11, 4))
    samples = result["_latencies_s"]
    everything = [v for key in ("A", "B") for v in samples[key] if v > 0]
    low, high = min(everything) * 1000.0, max(everything) * 1000.0
    bins = [low * (high / low) ** (i / 60) for i in range(61)] if high > low else 30
    for key in ("A", "B"):
        ms = sorted(v * 1000.0 for v in samples[key])
        label = f"{key}: {result['arms'][key]['spec']}"
        hist.hist(ms, bins=bins, histtype="step", label=label)
        cdf.plot(ms, [(i + 1) / len(ms) for i in range(len(ms))], label=label)
    for ax, where in ((hist, "upper right"), (cdf, "lower right")):
        ax.set_xscale("log")
        ax.set_xlabel("latency (ms, log scale)")
        ax.legend(loc=where, fontsize="small")
    hist.set_ylabel("calls")
    cdf.set_ylabel("fraction of calls")
    cfg = result["config"]
    fig.suptitle(
        f"rpcclient ab: {cfg['repeat']} x {cfg['calls']} calls, concurrency {cfg['concurrency']}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# -- the command line ----------------------------------------------------------------


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``rpcclient ab`` arguments to ``parser``."""
    parser.description = (
        "Compare two clients on one workload (echo.echo with a bytes payload): calls/s, "
        "latency, client CPU, request bytes and client-to-server TCP data segments per "
        "call, over interleaved repetitions, each arm in its own process."
    )
    parser.add_argument(
        "--a", default="requests", metavar="ARM",
        help="arm A: a transport, optionally with Client options, e.g. "
        "'gevent:pool_size=5,timeout=none' (default: requests)",
    )  # fmt: skip
    parser.add_argument("--b", default="gevent", metavar="ARM", help="arm B (default: gevent)")
    parser.add_argument("--calls", type=int, default=3000, help="measured calls per run")
    parser.add_argument("--concurrency", type=int, default=10, help="greenlets calling at once")
    parser.add_argument("--pool-size", type=int, default=10, help="connections per client")
    parser.add_argument("--body-size", type=int, default=100, help="payload bytes per call")
    parser.add_argument("--repeat", type=int, default=5, help="interleaved runs of each arm")
    parser.add_argument(
        "--url",
        help="target base URL (default: the bundled server, started on loopback for the run); "
        "segments and bytes are n/a unless it serves our counters",
    )
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON ('-': stdout)")
    parser.add_argument(
        "--plot", metavar="PNG", help="plot both latency distributions (matplotlib)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")


def run(args: argparse.Namespace) -> int:
    """Run ``rpcclient ab``; 0 on success, 2 for bad arguments, 1 when an arm fails."""
    try:
        a, b = ArmSpec.parse(args.a), ArmSpec.parse(args.b)
    except ArmFailed as exc:
        print(f"rpcclient ab: {exc}", file=sys.stderr)
        return 2
    if args.plot:
        try:
            import matplotlib  # noqa: F401 - fail before measuring, not after
        except ImportError:
            print(
                "rpcclient ab: --plot needs matplotlib (pip install 'rpcclient[bench]')",
                file=sys.stderr,
            )
            return 2

    def progress(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    try:
        result = compare(
            a,
            b,
            calls=args.calls,
            concurrency=args.concurrency,
            pool_size=args.pool_size,
            body_size=args.body_size,
            repeat=args.repeat,
            url=args.url,
            progress=None if args.quiet else progress,
        )
    except (ArmFailed, RuntimeError) as exc:
        print(f"rpcclient ab: {exc}", file=sys.stderr)
        return 1
    document = {k: v for k, v in result.items() if not k.startswith("_")}
    table = format_table(result)
    if args.json == "-":
        print(table, file=sys.stderr)
        json.dump(document, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(table)
        if args.json:
            with open(args.json, "w", encoding="utf-8") as fh:
                json.dump(document, fh, indent=2)
                fh.write("\n")
    if args.plot:
        plot(result, args.plot)
        print(f"rpcclient ab: latency plot written to {args.plot}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m rpcclient._ab [options]``: the same as ``rpcclient ab``."""
    parser = argparse.ArgumentParser(prog="rpcclient ab")
    configure_parser(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
