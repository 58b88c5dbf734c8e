"""The standing benchmark: rpcclient with every production default on, in one command.

    python bench/bench_standing.py                  # ~100 B body, ~4 minutes
    python bench/bench_standing.py --sizes all      # also 4 KiB, 64 KiB, 1 MiB
    python bench/bench_standing.py --repeat 3 --duration 0.3 --no-strace   # quick look

"Production defaults" (the ``rpcclient-prod`` arm): deadlines (``Timeout()``,
watchdog), the default ``Retry()`` policy, balancing over two endpoints
(``Client({"*": [url1, url2]})``, each its own server process on the server
core), stats on. Its pool is split over the endpoints so that it holds as
many connections as the other clients (5 + 5 for "pool of 10").

Sections (each arm a fresh process on the client core, repetitions
interleaved, medians; ratios are of medians from the same run):

``matrix``
    bench_core's matrix (fixed and bundled servers; ``seq``: one greenlet,
    ``conc``: 50 greenlets on 10 connections) with ``rpcclient-prod`` in
    place of ``rpcclient``; latency p50/p99 under load is the ``conc`` rows.
``features``
    The cost of each feature: the same arm with one switched off at a time
    (``stats=False``, ``retry=NO_RETRY``, ``timeout=None``, one endpoint,
    ``deadline_mode="timer"`` as the alternative deadline mechanism,
    ``deadline_header=False``, ``outlier_ejection=None``,
    ``OutlierEjection(latency=None)`` (the latency rule alone off); ``balance="p2c-ewma"``
    as the alternative balancer), then all of them at once (the core alone),
    as ratios against all-on.
``stats``
    The stats bookkeeping alone, in-process against a fake in-memory socket
    (stats on vs off, interleaved): a 2% difference is below the noise of a
    loopback run, not of this one.
``memory``
    Memory per idle pooled connection (tracemalloc and RSS deltas over N).
``10k``
    10,000 greenlets calling one client at once (bundled echo servers,
    distinct payloads): completes, all correct, time and peak RSS.

The targets (printed PASS/FAIL, never asserted), fixed server, small body:
  1. rpcclient-prod seq CPU per call <= 1.3x the floor's
  2. rpcclient-prod conc calls/s >= 0.8x the floor's (also shown, not a
     target: against ``floor-fifo``, the floor with a fair slot queue like
     rpcclient's; gevent's ``Semaphore`` in the plain floor lets a greenlet
     retake the slot it just released, which is cheaper and starves others)
  3. rpcclient-prod 1.00 client-to-server data segment per call (seq, conc)
  4. stats bookkeeping < 2% of a call's client CPU (seq)

Clients are bench_core's, built by ``floor_client``; this file only adds
the ``rpcclient-prod`` arm and the probes. JSON goes to
``bench/results/standing-<time>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import time
from contextlib import ExitStack
from typing import Any

import bench_core
import floor_client
import harness
from harness import fmt, median, progress, render

from rpcclient._tools.ab import child_env, fetch_tcp_totals, measure

MODES = bench_core.MODES
PEERS = ("floor", "floor-fifo", "floor-fifo-send", "geventhttpclient", "requests", "urllib3")
#: the feature switched off, as arm options (``{}``: all on)
FEATURES: dict[str, dict[str, Any]] = {
    "all on": {},
    "stats=False": {"stats": False},
    "retry=NO_RETRY": {"retry": "none"},
    "timeout=None": {"timeout": "none"},
    "one endpoint": {"endpoints": 1},
    'deadline_mode="timer"': {"deadline_mode": "timer"},
    "deadline_header=False": {"deadline_header": False},
    "outlier_ejection=None": {"outlier": "none"},
    "latency rule off": {"outlier": "errors"},
    'balance="p2c-ewma"': {"balance": "p2c-ewma"},
    "all of the above": {
        "outlier": "none",
        "stats": False,
        "retry": "none",
        "timeout": "none",
        "endpoints": 1,
        "deadline_header": False,
    },
}
PROD = "rpcclient-prod"

# Like floor_client.ARM_BOOT, through this module so that it knows rpcclient-prod.
BOOT = """\
import json, sys
config = json.loads(sys.argv[1])
if config["patch"]:
    from gevent import monkey
    monkey.patch_all()
sys.path.insert(0, config["bench_dir"])
import bench_standing
sys.exit(bench_standing.arm_main(config))
"""


# -- inside an arm process ----------------------------------------------------------


def build_client(urls: list[str], pool_size: int, options: dict[str, Any]) -> Any:
    """The production-default Client over ``urls``, with ``options`` switched off."""
    import rpcclient

    urls = urls[: options.get("endpoints", len(urls))]
    transport = rpcclient.GeventTransport(
        pool_size=max(1, pool_size // len(urls)),
        deadline_mode=options.get("deadline_mode", "watchdog"),
    )
    return rpcclient.Client(
        {"*": urls},
        transport=transport,
        stats=options.get("stats", True),
        retry=rpcclient.NO_RETRY if options.get("retry") == "none" else rpcclient.Retry(),
        timeout=None if options.get("timeout") == "none" else rpcclient.Timeout(),
        deadline_header=options.get("deadline_header", True),
        **({"outlier_ejection": None} if options.get("outlier") == "none" else {}),
        **(
            {"outlier_ejection": rpcclient.OutlierEjection(latency=None)}
            if options.get("outlier") == "errors"
            else {}
        ),
        balance=options.get("balance", "p2c"),
    )


class ProdArm:
    """``echo.echo`` on the production-default client (floor_client's arm protocol)."""

    def __init__(self, urls: list[str], pool_size: int, payload: bytes, options: dict[str, Any]):
        self.client = build_client(urls, pool_size, options)
        self.args = [payload]

    def call(self) -> Any:
        return self.client.call("echo.echo", self.args)

    def close(self) -> None:
        self.client.close()


def _segments(urls: list[str]) -> dict[str, float] | None:
    totals = [fetch_tcp_totals(u) for u in urls]
    if any(t is None for t in totals):
        return None
    return {k: sum(t[k] for t in totals) for k in ("data_segs_in", "bytes_in")}  # type: ignore[index]


def _prod_main(config: dict[str, Any]) -> dict[str, Any]:
    payload = b"x" * config["body_size"]
    urls = config["urls"][: config["options"].get("endpoints", len(config["urls"]))]
    arm = ProdArm(urls, config["pool_size"], payload, config["options"])
    try:
        arm.call()
        # warm up here, so that the counters of both servers bracket the measured calls only
        measure(arm.call, calls=config["warmup"], concurrency=config["concurrency"], warmup=0)
        before = _segments(urls)
        result = measure(
            arm.call,
            duration=config.get("duration"),
            calls=config.get("calls"),
            concurrency=config["concurrency"],
            warmup=0,
            mark=floor_client._mark if config.get("mark") else None,
        )
        after = _segments(urls)
    finally:
        arm.close()
    if before and after and result["calls"]:
        result["segments_per_call"] = (after["data_segs_in"] - before["data_segs_in"]) / result[
            "calls"
        ]
        result["request_bytes_per_call"] = (after["bytes_in"] - before["bytes_in"]) / result[
            "calls"
        ]
    return result


class FakeSock:
    """Takes every send whole, answers every recv with one canned response."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer

    def send(self, data: Any) -> int:
        return len(data)

    def recv(self, _size: int) -> bytes:
        return self.answer

    def getsockopt(self, *_args: Any) -> bytes:
        return bytes([1]) + bytes(103)  # TCP_INFO: ESTABLISHED

    def setsockopt(self, *_args: Any) -> None:
        pass

    def close(self) -> None:
        pass

    # what the transport uses of a gevent socket besides send/recv
    _read_event = None

    def _wait(self, _event: Any) -> None:
        pass


def fake_client(options: dict[str, Any]) -> Any:
    """A production-default client whose connections are FakeSocks (no I/O at all)."""
    import fixed_server

    from rpcclient._core.models import Endpoint
    from rpcclient._transports.gevent.pool import Connection

    urls = ["http://127.0.0.1:1", "http://127.0.0.1:2"]
    client = build_client(urls, 10, options)
    answer = fixed_server.build_response()
    # every pool starts full of fake connections, so none is ever connected
    # (the compiled transport cannot have _connect replaced on the instance)
    transport = client.transport
    for url in urls[: options.get("endpoints", len(urls))]:
        pool = transport._new_pool(Endpoint.parse(url), "echo.echo")
        for _ in range(pool.size):
            pool.checkin(Connection(FakeSock(answer), tls=False))
    return client


def _stats_probe(config: dict[str, Any]) -> dict[str, Any]:
    """Python cost per call with stats on and off, interleaved; us per call."""
    clients = {"on": fake_client({}), "off": fake_client({"stats": False})}
    args = [b"x" * 100]
    n = config["calls"]

    def run(client: Any) -> float:
        call = client.call
        t0 = time.process_time()
        for _ in range(n):
            call("echo.echo", args)
        return (time.process_time() - t0) / n * 1e6

    for client in clients.values():
        run(client)
    runs: dict[str, list[float]] = {"on": [], "off": []}
    for _ in range(config["repeat"]):
        for key, client in clients.items():
            runs[key].append(run(client))
    diffs = [a - b for a, b in zip(runs["on"], runs["off"], strict=True)]
    return {
        "us_per_call_on": statistics.median(runs["on"]),
        "us_per_call_off": statistics.median(runs["off"]),
        "stats_us_per_call": statistics.median(diffs),
        "runs": runs,
    }


def _rss_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _memory_probe(config: dict[str, Any]) -> dict[str, Any]:
    """Memory held per idle pooled connection: open N at once, let them go idle."""
    import gc
    import tracemalloc

    import gevent

    n = config["connections"]
    client = build_client(config["urls"], n, {})
    client.call("echo.echo", [b"x"])  # imports and caches before the baseline
    gc.collect()
    tracemalloc.start()
    rss0, mem0 = _rss_kib(), tracemalloc.get_traced_memory()[0]
    # the servers are stopped while the calls start, so that every call
    # holds its own connection (none is answered and reused meanwhile)
    for pid in config["server_pids"]:
        os.kill(pid, signal.SIGSTOP)
    try:
        jobs = [gevent.spawn(client.call, "echo.echo", [b"x"]) for _ in range(n)]
        gevent.sleep(0.3)
    finally:
        for pid in config["server_pids"]:
            os.kill(pid, signal.SIGCONT)
    gevent.joinall(jobs, raise_error=True)
    del jobs
    gc.collect()
    rss1, mem1 = _rss_kib(), tracemalloc.get_traced_memory()[0]
    idle = sum(p["idle"] for p in client.transport.stats()["pools"].values())
    tracemalloc.stop()
    client.close()
    return {
        "idle_connections": idle,
        "tracemalloc_bytes_per_conn": (mem1 - mem0) / idle if idle else None,
        "rss_bytes_per_conn": (rss1 - rss0) * 1024 / idle if idle else None,
    }


def _ten_k_probe(config: dict[str, Any]) -> dict[str, Any]:
    """``greenlets`` greenlets call one client at once, each with its own payload."""
    import resource

    import gevent

    import rpcclient

    client = build_client(config["urls"], 2 * 10, {})  # pool of 10 per endpoint
    # 10,000 calls queued on 20 connections wait longer than the default 2 s
    # pool bound by design; everything else stays at its production default
    queue_ok = rpcclient.Timeout(pool=60.0, total=60.0)
    client.call("echo.echo", [b"warm"])
    rss0 = _rss_kib()
    n = config["greenlets"]

    def one(i: int) -> bool:
        payload = b"%d" % i
        return bool(client.call("echo.echo", payload, timeout=queue_ok) == payload)

    t0 = time.perf_counter()
    jobs = [gevent.spawn(one, i) for i in range(n)]
    gevent.joinall(jobs)
    elapsed = time.perf_counter() - t0
    errors: dict[str, int] = {}
    for job in jobs:
        if job.exception is not None:
            name = type(job.exception).__name__
            errors[name] = errors.get(name, 0) + 1
    correct = sum(1 for job in jobs if job.value is True)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    client.close()
    return {
        "greenlets": n,
        "correct": correct,
        "errors": errors,
        "elapsed_s": elapsed,
        "calls_per_s": n / elapsed,
        "rss_before_mib": rss0 / 1024,
        "peak_rss_mib": peak_kib / 1024,
    }


PROBES = {"stats-probe": _stats_probe, "memory": _memory_probe, "10k": _ten_k_probe}


def arm_main(config: dict[str, Any]) -> int:
    """One arm or probe process: floor_client's kinds, rpcclient-prod, the probes."""
    kind = config["kind"]
    if kind != PROD and kind not in PROBES:
        return floor_client.arm_main(config)
    if config.get("cpu") is not None:
        os.sched_setaffinity(0, {config["cpu"]})
    result = _prod_main(config) if kind == PROD else PROBES[kind](config)
    if not config.get("keep_latencies"):
        result.pop("latencies_s", None)
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


# -- the driver ---------------------------------------------------------------------


def run_arm(config: dict[str, Any], timeout: float = 180.0) -> dict[str, Any]:
    """harness.run_arm through :data:`BOOT`."""
    return harness.run_arm_command(
        [sys.executable, "-c", BOOT, json.dumps(config)], config, timeout, child_env()
    )


def arm(kind: str, urls: list[str], **kw: Any) -> dict[str, Any]:
    config = harness.arm_config(kind, urls[0], **kw)
    config["urls"] = urls
    config.setdefault("options", {})
    return config


def summarize(rs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "calls_per_s": median([r["calls_per_s"] for r in rs]),
        "calls_per_s_range": harness.spread([r["calls_per_s"] for r in rs]),
        "cpu_us_per_call": median([r["cpu_us_per_call"] for r in rs]),
        "p50_ms": median([r["latency_ms"]["p50"] for r in rs]),
        "p99_ms": median([r["latency_ms"]["p99"] for r in rs]),
        "segments_per_call": median([r["segments_per_call"] for r in rs]),
        "request_bytes_per_call": median([r["request_bytes_per_call"] for r in rs]),
        "errors": sum(r["errors"] for r in rs),
        "first_error": next((r["first_error"] for r in rs if r["first_error"]), None),
        "runs": rs,
        "syscalls": None,
    }


def run_interleaved(
    configs: dict[str, dict[str, Any]], repeat: int, label: str
) -> dict[str, dict[str, Any]]:
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in configs}
    for rep in range(repeat):
        for key, config in configs.items():
            runs[key].append(run_arm(config))
        progress(
            f"{label} rep {rep + 1}/{repeat}: "
            + ", ".join(f"{k} {runs[k][-1]['calls_per_s']:,.0f}/s" for k in configs)
        )
    return {k: summarize(rs) for k, rs in runs.items()}


def count_syscalls(config: dict[str, Any]) -> dict[str, Any] | None:
    """harness.count_syscalls, through :data:`BOOT` (the strace pass needs no other change)."""
    saved = floor_client.ARM_BOOT
    floor_client.ARM_BOOT = BOOT
    try:
        return harness.count_syscalls(config)
    finally:
        floor_client.ARM_BOOT = saved


def matrix(
    server: str, urls: list[str], size: int, args: argparse.Namespace, strace: bool
) -> dict[str, Any]:
    out = {}
    for mode in args.modes:
        configs = {
            kind: arm(kind, urls, duration=args.duration, body_size=size, warmup=50, **MODES[mode])
            for kind in (PROD, *args.peers)
        }
        cell = run_interleaved(configs, args.repeat, f"{server}/{mode}/{size} B")
        if strace:
            for kind in cell:
                config = arm(
                    kind,
                    urls,
                    calls=bench_core.STRACE_CALLS[mode],
                    body_size=size,
                    warmup=50,
                    **MODES[mode],
                )
                cell[kind]["syscalls"] = count_syscalls(config)
        out[mode] = cell
        m = MODES[mode]
        title = (
            f"== {server} server(s), {mode} ({m['concurrency']} greenlets, {m['pool_size']} "
            f"connections), body {size} B: medians of {args.repeat} runs"
        )
        print(title + "\n" + bench_core.table(cell) + "\n", flush=True)
    return out


def features(urls: list[str], args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    rows = [["switched off", "seq CPU/call", "x all-on", "conc calls/s", "x all-on", "conc p99"]]
    cells = {}
    for mode in ("seq", "conc"):
        configs = {
            name: arm(
                PROD, urls, duration=args.duration, body_size=100, warmup=50, options=opts,
                counters=False, **MODES[mode],
            )
            for name, opts in FEATURES.items()
        }  # fmt: skip
        cells[mode] = run_interleaved(configs, args.feature_repeat, f"features/{mode}")
    base_seq, base_conc = cells["seq"]["all on"], cells["conc"]["all on"]
    for name in FEATURES:
        seq, conc = cells["seq"][name], cells["conc"][name]
        out[name] = {
            "seq_cpu_us_per_call": seq["cpu_us_per_call"],
            "seq_cpu_ratio": seq["cpu_us_per_call"] / base_seq["cpu_us_per_call"],
            "conc_calls_per_s": conc["calls_per_s"],
            "conc_calls_ratio": conc["calls_per_s"] / base_conc["calls_per_s"],
            "conc_p99_ms": conc["p99_ms"],
            "runs": {"seq": seq["runs"], "conc": conc["runs"]},
        }
        rows.append(
            [
                name,
                fmt(seq["cpu_us_per_call"], "{:.1f} us"),
                fmt(out[name]["seq_cpu_ratio"], "{:.2f}"),
                fmt(conc["calls_per_s"]),
                fmt(out[name]["conc_calls_ratio"], "{:.2f}"),
                fmt(conc["p99_ms"], "{:.2f} ms"),
            ]
        )
    print(
        f"== cost of each feature (fixed servers, body 100 B, medians of {args.feature_repeat})\n"
        + render(rows)
        + "\n",
        flush=True,
    )
    return out


def targets(cells: dict[str, Any], stats_probe: dict[str, Any] | None) -> list[dict[str, Any]]:
    seq, conc = cells["seq"], cells["conc"]
    prod_seq, prod_conc = seq[PROD], conc[PROD]
    floor_seq, floor_conc = seq.get("floor"), conc.get("floor")
    checks: list[tuple[str, float | None, bool, str]] = []
    if floor_seq and floor_conc:
        cpu = prod_seq["cpu_us_per_call"] / floor_seq["cpu_us_per_call"]
        calls = prod_conc["calls_per_s"] / floor_conc["calls_per_s"]
        checks.append(("seq CPU/call <= 1.3x floor's", cpu, cpu <= 1.3, f"{cpu:.2f}x"))
        fair = conc.get("floor-fifo")
        against_fair = (
            f" ({prod_conc['calls_per_s'] / fair['calls_per_s']:.2f}x floor-fifo's)" if fair else ""
        )
        checks.append(
            ("conc calls/s >= 0.8x floor's", calls, calls >= 0.8, f"{calls:.2f}x{against_fair}")
        )
    segs = [prod_seq["segments_per_call"], prod_conc["segments_per_call"]]
    if None not in segs:
        worst = max(segs)
        checks.append(
            ("1.00 data segment/call (seq, conc)", worst, round(worst, 2) <= 1.0, f"{worst:.3f}")
        )
    if stats_probe is not None:
        share = stats_probe["stats_us_per_call"] / prod_seq["cpu_us_per_call"]
        checks.append(
            (
                "stats < 2% of a call's client CPU",
                share,
                share < 0.02,
                f"{share:.1%} ({stats_probe['stats_us_per_call']:.2f} us of "
                f"{prod_seq['cpu_us_per_call']:.1f})",
            )
        )
    return [{"target": n, "value": v, "pass": ok, "shown": s} for n, v, ok, s in checks]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", default="small", help="'small', 'all' or bytes, e.g. 100,4096")
    parser.add_argument("--repeat", type=int, default=5, help="interleaved runs per client")
    parser.add_argument("--feature-repeat", type=int, default=5)
    parser.add_argument("--duration", type=float, default=0.5, help="seconds per measured run")
    parser.add_argument("--servers", default="fixed,bundled")
    parser.add_argument("--modes", default="seq,conc")
    parser.add_argument("--peers", default=",".join(PEERS))
    parser.add_argument(
        "--sections", default="matrix,features,stats,memory,10k", help="which sections to run"
    )
    parser.add_argument("--connections", type=int, default=200, help="memory: idle connections")
    parser.add_argument("--greenlets", type=int, default=10_000)
    parser.add_argument("--no-strace", action="store_true")
    parser.add_argument("--out", default=os.path.join(harness.BENCH_DIR, "results"))
    args = parser.parse_args(argv)
    sizes = bench_core.SIZES.get(args.sizes) or [int(s) for s in args.sizes.split(",")]
    args.modes = [m.strip() for m in args.modes.split(",")]
    args.peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    sections = {s.strip() for s in args.sections.split(",")}
    servers = [s.strip() for s in args.servers.split(",")]
    strace = not args.no_strace and harness.have_strace()
    started = time.monotonic()
    doc: dict[str, Any] = {
        "tool": "bench/bench_standing.py",
        "argv": sys.argv[1:] if argv is None else argv,
        "environment": bench_core.environment(),
        "config": {**{k: v for k, v in vars(args).items() if k != "out"}, "strace": strace},
        "matrix": {},
    }
    with ExitStack() as stack:
        fixed_servers = [stack.enter_context(harness.fixed_server()) for _ in range(2)]
        fixed = [server.url for server in fixed_servers]
        if "matrix" in sections:
            for size in sizes:
                doc["matrix"][str(size)] = {}
                for server in servers:
                    if server == "fixed":
                        urls = fixed
                    else:
                        urls = [stack.enter_context(harness.bundled_server()).url for _ in range(2)]
                    doc["matrix"][str(size)][server] = matrix(server, urls, size, args, strace)
        if "features" in sections:
            doc["features"] = features(fixed, args)
        if "stats" in sections:
            config = arm("stats-probe", fixed, calls=20_000, repeat=9)
            doc["stats_probe"] = probe = run_arm(config)
            print(
                f"== stats bookkeeping (fake socket, in-process, medians of 9): "
                f"{probe['stats_us_per_call']:.2f} us/call "
                f"(on {probe['us_per_call_on']:.2f}, off {probe['us_per_call_off']:.2f})\n",
                flush=True,
            )
        if "memory" in sections:
            pids = [server.process.pid for server in fixed_servers]
            config = arm("memory", fixed, connections=args.connections, server_pids=pids)
            doc["memory"] = mem = run_arm(config)
            print(
                f"== memory per idle pooled connection ({mem['idle_connections']} idle): "
                f"{fmt(mem['tracemalloc_bytes_per_conn'])} B Python objects (tracemalloc), "
                f"{fmt(mem['rss_bytes_per_conn'])} B RSS\n",
                flush=True,
            )
        if "10k" in sections:
            with ExitStack() as echo:
                urls = [echo.enter_context(harness.bundled_server()).url for _ in range(2)]
                doc["10k"] = tk = run_arm(arm("10k", urls, greenlets=args.greenlets))
            print(
                f"== {tk['greenlets']:,} concurrent greenlets on one client (2 bundled echo "
                f"servers, 10 connections each): {tk['correct']:,} correct, errors "
                f"{tk['errors'] or 'none'}, {tk['elapsed_s']:.2f} s ({tk['calls_per_s']:,.0f} "
                f"calls/s), peak RSS {tk['peak_rss_mib']:.0f} MiB (before "
                f"{tk['rss_before_mib']:.0f} MiB)\n",
                flush=True,
            )
    small = doc["matrix"].get(str(sizes[0]), {}).get("fixed")
    if small and {"seq", "conc"} <= set(small):
        doc["targets"] = checked = targets(small, doc.get("stats_probe"))
        lines = [f"== targets (fixed servers, body {sizes[0]} B)"]
        for t in checked:
            lines.append(f"{'PASS' if t['pass'] else 'FAIL'}  {t['target']:40} {t['shown']}")
        print("\n".join(lines) + "\n", flush=True)
    doc["wall_s"] = round(time.monotonic() - started, 1)
    path = harness.save_json(doc, args.out, "standing")
    print(f"bench_standing: {doc['wall_s']} s; JSON in {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
