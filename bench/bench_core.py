"""The core benchmark: rpcclient against its peers and the floor, in one run.

    python bench/bench_core.py                 # small (~100 B) body, ~3-4 minutes
    python bench/bench_core.py --sizes all     # also 4 KiB, 64 KiB, 1 MiB (~4x longer)
    python bench/bench_core.py --repeat 3 --duration 0.3 --no-strace   # quick look

Loopback; each server (``fixed_server.py``, then the bundled server) in its
own process on one core, each client run a fresh process on another.
Two modes: ``seq`` (one greenlet, one connection) and ``conc`` (50 greenlets
on a pool of 10). Every (server, mode) cell runs each client ``--repeat``
times, interleaved (c1 c2 ... c1 c2 ...), ``--duration`` seconds each after
a warm-up; the table shows medians, ratios are of medians from the same run.

Measured per client: calls/s; client CPU us per call (``getrusage`` of the
client process over the measured calls); client-to-server TCP data segments
and request bytes per call (server-side ``TCP_INFO``); send syscalls and all
syscalls per call (a separate, untimed ``strace -f`` pass of a fixed number
of calls, counting only between markers; skipped without strace).

The bars (printed PASS/FAIL, never asserted), small body:
  1. rpcclient seq calls/s >= 5x requests'
  2. rpcclient seq CPU per call <= 1.6x the floor's
  3. rpcclient conc calls/s >= 2x geventhttpclient's
  4. rpcclient sends 1.00 client-to-server data segment per call

JSON with every run goes to ``bench/results/core-<time>.json``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from typing import Any

import harness
from harness import fmt, median, progress, render

CLIENTS = ("rpcclient", "requests", "urllib3", "geventhttpclient", "floor")
MODES = {"seq": {"concurrency": 1, "pool_size": 1}, "conc": {"concurrency": 50, "pool_size": 10}}
SIZES = {"small": [100], "all": [100, 4096, 65536, 1024 * 1024]}
STRACE_CALLS = {"seq": 300, "conc": 600}


def measure_cell(
    server_name: str, url: str, mode: str, size: int, args: argparse.Namespace, strace: bool
) -> dict[str, Any]:
    """Every client of one (server, mode, size) cell, interleaved; medians per client."""
    runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in args.clients}
    for rep in range(args.repeat):
        for kind in args.clients:
            config = harness.arm_config(
                kind, url, duration=args.duration, body_size=size, warmup=50, **MODES[mode]
            )
            result = harness.run_arm(config)
            runs[kind].append(result)
            if result["errors"]:
                progress(f"  {kind}: {result['errors']} errors, first {result['first_error']}")
        progress(
            f"{server_name}/{mode}/{size} B rep {rep + 1}/{args.repeat}: "
            + ", ".join(f"{k} {runs[k][-1]['calls_per_s']:,.0f}/s" for k in args.clients)
        )
    cell: dict[str, Any] = {}
    for kind in args.clients:
        rs = runs[kind]
        cell[kind] = {
            "calls_per_s": median([r["calls_per_s"] for r in rs]),
            "calls_per_s_range": harness.spread([r["calls_per_s"] for r in rs]),
            "cpu_us_per_call": median([r["cpu_us_per_call"] for r in rs]),
            "p50_ms": median([r["latency_ms"]["p50"] for r in rs]),
            "p99_ms": median([r["latency_ms"]["p99"] for r in rs]),
            "segments_per_call": median([r["segments_per_call"] for r in rs]),
            "request_bytes_per_call": median([r["request_bytes_per_call"] for r in rs]),
            "errors": sum(r["errors"] for r in rs),
            "runs": rs,
            "syscalls": None,
        }
        if strace:
            config = harness.arm_config(
                kind, url, calls=STRACE_CALLS[mode], body_size=size, warmup=50, **MODES[mode]
            )
            cell[kind]["syscalls"] = harness.count_syscalls(config)
    return cell


def table(cell: dict[str, Any]) -> str:
    floor = cell.get("floor")
    rows = [
        [
            "client",
            "calls/s",
            "x floor",
            "CPU us/call",
            "x floor",
            "p50 ms",
            "p99 ms",
            "segs/call",
            "req B/call",
            "sends/call",
            "syscalls/call",
        ]
    ]
    for kind, c in cell.items():
        sc = c["syscalls"]
        rows.append(
            [
                kind,
                fmt(c["calls_per_s"]),
                fmt(c["calls_per_s"] / floor["calls_per_s"], "{:.2f}") if floor else "-",
                fmt(c["cpu_us_per_call"], "{:.1f}"),
                fmt(c["cpu_us_per_call"] / floor["cpu_us_per_call"], "{:.2f}") if floor else "-",
                fmt(c["p50_ms"], "{:.3f}"),
                fmt(c["p99_ms"], "{:.3f}"),
                fmt(c["segments_per_call"], "{:.2f}"),
                fmt(c["request_bytes_per_call"], "{:.0f}"),
                fmt(sc and sc["sends_per_call"], "{:.2f}"),
                fmt(sc and sc["syscalls_per_call"], "{:.1f}"),
            ]
        )
    return render(rows)


def bars(results: dict[str, Any], size: int) -> list[dict[str, Any]]:
    """The four bars, for each server, from the cells of body size ``size``."""
    out = []
    for server in results:
        seq, conc = results[server]["seq"], results[server]["conc"]

        def ratio(cell: dict[str, Any], a: str, b: str, key: str) -> float | None:
            if a not in cell or b not in cell or not cell[b][key]:
                return None
            return float(cell[a][key] / cell[b][key])

        checks = [
            ("rpcclient seq calls/s >= 5x requests'", ratio(seq, "rpcclient", "requests",
             "calls_per_s"), lambda v: v >= 5.0, "{:.2f}x"),
            ("rpcclient seq CPU/call <= 1.6x floor's", ratio(seq, "rpcclient", "floor",
             "cpu_us_per_call"), lambda v: v <= 1.6, "{:.2f}x"),
            ("rpcclient conc calls/s >= 2x geventhttpclient's", ratio(conc, "rpcclient",
             "geventhttpclient", "calls_per_s"), lambda v: v >= 2.0, "{:.2f}x"),
        ]  # fmt: skip
        if size <= 1024 and "rpcclient" in seq:
            worst = max(seq["rpcclient"]["segments_per_call"] or 0, conc["rpcclient"]
                        ["segments_per_call"] or 0)  # fmt: skip
            checks.append(
                ("rpcclient 1.00 data segment/call (seq, conc)", worst,
                 lambda v: round(v, 2) <= 1.00, "{:.3f}")
            )  # fmt: skip
        for name, value, ok, pattern in checks:
            out.append(
                {
                    "server": server,
                    "bar": name,
                    "value": value,
                    "shown": "n/a" if value is None else pattern.format(value),
                    "pass": None if value is None else bool(ok(value)),
                }
            )
    return out


def environment() -> dict[str, Any]:
    import gevent
    import geventhttpclient
    import msgpack
    import requests
    import urllib3

    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            model = next((ln.split(":", 1)[1].strip() for ln in fh if "model name" in ln), "")
    except OSError:
        pass
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_model": model,
        "cpus": os.cpu_count(),
        "client_cpu": harness.CLIENT_CPU,
        "server_cpu": harness.SERVER_CPU,
        "versions": {
            "gevent": gevent.__version__,
            "geventhttpclient": geventhttpclient.__version__,
            "requests": requests.__version__,
            "urllib3": urllib3.__version__,
            "msgpack": ".".join(map(str, msgpack.version)),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", default="small", help="'small', 'all' or bytes, e.g. 100,4096")
    parser.add_argument("--repeat", type=int, default=5, help="interleaved runs per client")
    parser.add_argument("--duration", type=float, default=0.5, help="seconds per measured run")
    parser.add_argument("--servers", default="fixed,bundled", help="fixed, bundled or both")
    parser.add_argument("--modes", default="seq,conc")
    parser.add_argument("--clients", default=",".join(CLIENTS))
    parser.add_argument("--no-strace", action="store_true", help="skip the syscall pass")
    parser.add_argument("--out", default=os.path.join(harness.BENCH_DIR, "results"))
    args = parser.parse_args(argv)
    sizes = SIZES.get(args.sizes) or [int(s) for s in args.sizes.split(",")]
    args.clients = [c.strip() for c in args.clients.split(",")]
    servers = [s.strip() for s in args.servers.split(",")]
    modes = [m.strip() for m in args.modes.split(",")]
    strace = not args.no_strace and harness.have_strace()
    if not args.no_strace and not strace:
        progress("bench_core: strace unavailable: sends/syscalls per call are n/a")
    started = time.monotonic()
    document: dict[str, Any] = {
        "tool": "bench/bench_core.py",
        "argv": sys.argv[1:] if argv is None else argv,
        "environment": environment(),
        "config": {
            "sizes": sizes,
            "repeat": args.repeat,
            "duration_s": args.duration,
            "modes": {m: MODES[m] for m in modes},
            "clients": args.clients,
            "strace": strace,
        },
        "results": {},
        "bars": {},
    }
    report: list[str] = []
    for size in sizes:
        by_server: dict[str, Any] = {}
        for server_name in servers:
            starter = harness.fixed_server if server_name == "fixed" else harness.bundled_server
            with starter() as server:
                by_server[server_name] = {}
                for mode in modes:
                    cell = measure_cell(server_name, server.url, mode, size, args, strace)
                    by_server[server_name][mode] = cell
                    m = MODES[mode]
                    title = (
                        f"== {server_name} server, {mode} ({m['concurrency']} greenlets, pool "
                        f"{m['pool_size']}), body {size} B: medians of {args.repeat} runs"
                    )
                    report += [title, table(cell), ""]
                    print(title + "\n" + table(cell) + "\n", flush=True)
        document["results"][str(size)] = by_server
        if set(modes) == {"seq", "conc"}:
            checked = bars(by_server, size)
            document["bars"][str(size)] = checked
            lines = [f"== bars, body {size} B"]
            for b in checked:
                verdict = {True: "PASS", False: "FAIL", None: "n/a "}[b["pass"]]
                lines.append(f"{verdict}  {b['server']:8} {b['bar']:48} {b['shown']}")
            report += [*lines, ""]
            print("\n".join(lines) + "\n", flush=True)
    document["wall_s"] = round(time.monotonic() - started, 1)
    path = harness.save_json(document, args.out, "core")
    print(f"bench_core: {document['wall_s']} s; JSON in {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
