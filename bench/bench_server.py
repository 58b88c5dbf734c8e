"""Server throughput and latency under wrk: the bundled server against its peers.

Each server runs in its own process pinned to core 1 (``taskset``); wrk runs
with one thread pinned to core 0, 10 connections, POSTing a 100-byte msgpack
body (``[b"x" * 97]``) to ``/echo/echo`` through a generated Lua script. The
servers:

- ``rpcclient``: ``rpcclient serve bench.server_apps:rpc_app`` (the strict
  HTTP/1.1 layer, RPCApp);
- ``flask``: the same RPC as a Flask view on gevent.pywsgi (TCP_NODELAY on);
- ``gunicorn``: RPCApp on ``gunicorn -k gevent -w 1``;
- ``fixed``: bench/fixed_server.py, a raw gevent server answering one
  pre-built response (no parsing beyond Content-Length): the ceiling.

Repetitions are interleaved (A B C D A B C D ...); the table shows medians of
req/s and of wrk's p50/p99 latency. Results go to
``bench/results/server-<timestamp>.json``.

Run: ``python bench/bench_server.py [--duration 5] [--reps 3]`` (needs wrk,
flask and gunicorn: ``apt-get install -y wrk``, ``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgpack

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BODY = msgpack.packb([b"x" * 97])
assert len(BODY) == 100
SERVER_CPU = "1"
CLIENT_CPU = "0"


def lua_script() -> str:
    escaped = "".join(f"\\{b}" for b in BODY)  # Lua decimal escapes: any byte
    return (
        'wrk.method = "POST"\n'
        f'wrk.body = "{escaped}"\n'
        'wrk.headers["Content-Type"] = "application/x-msgpack"\n'
    )


def _env() -> dict[str, str]:
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    return dict(os.environ, PYTHONPATH=path)


def _commands() -> dict[str, tuple[list[str], str]]:
    """name -> (command, regex finding the URL in its output)."""
    py = sys.executable
    pin = ["taskset", "-c", SERVER_CPU]
    gunicorn = shutil.which("gunicorn", path=os.path.dirname(py)) or "gunicorn"
    return {
        "rpcclient": (
            [
                *pin,
                py,
                "-m",
                "rpcclient",
                "serve",
                "bench.server_apps:rpc_app",
                "--bind",
                "127.0.0.1:0",
            ],
            r"(http://127\.0\.0\.1:\d+)",
        ),
        "flask": (
            [*pin, py, str(ROOT / "bench" / "server_apps.py"), "flask", SERVER_CPU],
            r"(http://127\.0\.0\.1:\d+)",
        ),
        "gunicorn": (
            [
                *pin,
                gunicorn,
                "-k",
                "gevent",
                "-w",
                "1",
                "-b",
                "127.0.0.1:0",
                "--log-level",
                "info",
                "bench.server_apps:rpc_app",
            ],
            r"Listening at: (http://127\.0\.0\.1:\d+)",
        ),
        "fixed": (
            [*pin, py, str(ROOT / "bench" / "fixed_server.py")],
            r"(http://127\.0\.0\.1:\d+)",
        ),
    }


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU of every live process in group ``pgid`` (server + workers)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


@contextmanager
def running(name: str) -> Iterator[tuple[str, int]]:
    command, pattern = _commands()[name]
    proc = subprocess.Popen(
        command,
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        assert proc.stdout is not None
        url = None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            found = re.search(pattern, line)
            if found:
                url = found.group(1)
                break
        if url is None:
            raise RuntimeError(f"{name} did not start: {command}")
        # drain the rest of its output so it never blocks on a full pipe
        subprocess.Popen(["cat"], stdin=proc.stdout, stdout=subprocess.DEVNULL)
        yield url, proc.pid  # start_new_session: the pid is the group id
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * _UNITS[unit]


def run_wrk(
    url: str, script: str, duration: float, connections: int, pgid: int = 0
) -> dict[str, float]:
    cpu_before = group_cpu_seconds(pgid) if pgid else 0.0
    out = subprocess.run(
        [
            "taskset",
            "-c",
            CLIENT_CPU,
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(duration))}s",
            "--latency",
            "-s",
            script,
            url + "/echo/echo",
        ],
        capture_output=True,
        text=True,
        timeout=duration + 60,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    cpu = group_cpu_seconds(pgid) - cpu_before if pgid else 0.0
    total = float(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    return {
        "rps": rps,
        "p50_ms": p50,
        "p99_ms": p99,
        # the server's own cost, which the shared machine's load moves less than req/s
        "server_cpu_us_per_req": 1e6 * cpu / total if total else 0.0,
        "server_core_busy": cpu / duration,
        "non_2xx": float(errors.group(1)) if errors else 0.0,
        "socket_errors": 1.0 if socket_errors else 0.0,
    }


def check_answer(url: str) -> None:
    """One call by hand: the server answers the RPC (not a 404 at 100k req/s)."""
    import socket

    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(
            b"POST /echo/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-msgpack\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(BODY), BODY)
        )
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
        assert data.startswith(b"HTTP/1.1 200"), data[:100]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--reps", type=int, default=3, help="interleaved repetitions")
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--servers", default="rpcclient,flask,gunicorn,fixed")
    args = parser.parse_args(argv)
    names = args.servers.split(",")
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as lua:
        lua.write(lua_script())
    try:
        with _all_running(names) as urls:
            for name in names:
                check_answer(urls[name][0])
                run_wrk(urls[name][0], lua.name, 1.0, args.connections)  # warm-up
            for rep in range(args.reps):
                for name in names:
                    url, pgid = urls[name]
                    result = run_wrk(url, lua.name, args.duration, args.connections, pgid)
                    runs[name].append(result)
                    print(
                        f"rep {rep + 1} {name:10} {result['rps']:9.0f} req/s "
                        f"p50 {result['p50_ms']:.2f} ms p99 {result['p99_ms']:.2f} ms "
                        f"server {result['server_cpu_us_per_req']:.1f} us CPU/req "
                        f"(core {100 * result['server_core_busy']:.0f}% busy)",
                        flush=True,
                    )
    finally:
        os.unlink(lua.name)
    medians = {
        name: {key: statistics.median(r[key] for r in results) for key in results[0]}
        for name, results in runs.items()
    }
    report: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "setup": {
            "wrk": "1 thread on core 0",
            "connections": args.connections,
            "duration_s": args.duration,
            "reps": args.reps,
            "server_core": 1,
            "body_bytes": len(BODY),
            "load": os.getloadavg(),
        },
        "runs": runs,
        "medians": medians,
    }
    if "rpcclient" in medians:
        ours = medians["rpcclient"]["rps"]
        report["ratios"] = {f"rpcclient/{n}": ours / m["rps"] for n, m in medians.items()}
        cost = medians["rpcclient"]["server_cpu_us_per_req"]
        report["cpu_ratios"] = {
            f"{n}/rpcclient": m["server_cpu_us_per_req"] / cost for n, m in medians.items()
        }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"server-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"\n{'server':10} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'rpcclient/x':>12} "
        f"{'CPU us/req':>11} {'x/rpcclient CPU':>16}"
    )
    for name, med in medians.items():
        ratio = report.get("ratios", {}).get(f"rpcclient/{name}")
        cpu_ratio = report.get("cpu_ratios", {}).get(f"{name}/rpcclient")
        print(
            f"{name:10} {med['rps']:9.0f} {med['p50_ms']:8.2f} {med['p99_ms']:8.2f} "
            f"{'' if ratio is None else f'{ratio:.2f}x':>12} "
            f"{med['server_cpu_us_per_req']:11.1f} "
            f"{'' if cpu_ratio is None else f'{cpu_ratio:.2f}x':>16}"
        )
    print(f"\nwritten: {out.relative_to(ROOT)}")
    return 0


@contextmanager
def _all_running(names: list[str]) -> Iterator[dict[str, tuple[str, int]]]:
    from contextlib import ExitStack

    with ExitStack() as stack:
        yield {name: stack.enter_context(running(name)) for name in names}


if __name__ == "__main__":
    raise SystemExit(main())
