"""Reproduce the packet regression: head and body written apart.

    python bench/bench_split.py            # ~1 minute

One greenlet, one keep-alive connection, a small body. Clients (all the
floor client of ``floor_client.py`` but for the last):

``floor``              one write (head + body), TCP_NODELAY on: the rpcclient way
``floor-nagle``        one write, Nagle left on
``floor-split``        head and body in two sends, TCP_NODELAY on (requests, urllib3)
``floor-split-nagle``  two sends, Nagle on (the regression)
``rpcclient``          rpcclient.Client, for reference

Servers, each in its own process:

``fixed/head``     answers as soon as the head is in (its answer carries the
                   ACK the client's Nagle waits for)
``fixed/request``  answers after the whole request, like every RPC server
``bundled``        the bundled server (also waits for the whole request)

The expected picture: two sends cost one extra client-to-server segment
per call always; with Nagle on, the body waits in the client until the head
is ACKed, and a server that waits for the body only ACKs when its delayed-ACK
timer fires (~40 ms on Linux): calls/s collapses to ~25.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import harness
from harness import fmt, median, progress, render

CLIENTS = ("floor", "floor-nagle", "floor-split", "floor-split-nagle", "rpcclient")
SERVERS = ("fixed/head", "fixed/request", "bundled")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--duration", type=float, default=1.0, help="seconds per run")
    parser.add_argument("--body-size", type=int, default=100)
    parser.add_argument("--out", default=os.path.join(harness.BENCH_DIR, "results"))
    args = parser.parse_args(argv)
    started = time.monotonic()
    document: dict[str, Any] = {"tool": "bench/bench_split.py", "config": vars(args), "results": {}}
    for server_name in SERVERS:
        if server_name == "bundled":
            starter = harness.bundled_server()
        else:
            starter = harness.fixed_server(reply_after=server_name.split("/")[1])
        runs: dict[str, list[dict[str, Any]]] = {k: [] for k in CLIENTS}
        with starter as server:
            for rep in range(args.repeat):
                for kind in CLIENTS:
                    config = harness.arm_config(
                        kind, server.url, duration=args.duration, body_size=args.body_size,
                        warmup=5,
                    )  # fmt: skip
                    runs[kind].append(harness.run_arm(config))
                progress(
                    f"{server_name} rep {rep + 1}/{args.repeat}: "
                    + ", ".join(f"{k} {runs[k][-1]['calls_per_s']:,.0f}/s" for k in CLIENTS)
                )
        cell = {
            kind: {
                "calls_per_s": median([r["calls_per_s"] for r in rs]),
                "p50_ms": median([r["latency_ms"]["p50"] for r in rs]),
                "p99_ms": median([r["latency_ms"]["p99"] for r in rs]),
                "segments_per_call": median([r["segments_per_call"] for r in rs]),
                "cpu_us_per_call": median([r["cpu_us_per_call"] for r in rs]),
                "runs": rs,
            }
            for kind, rs in runs.items()
        }
        document["results"][server_name] = cell
        base = cell["floor"]
        rows = [["client", "calls/s", "p50 ms", "p99 ms", "segs/call", "extra segs", "p50 cost ms"]]
        for kind, c in cell.items():
            rows.append(
                [
                    kind,
                    fmt(c["calls_per_s"]),
                    fmt(c["p50_ms"], "{:.3f}"),
                    fmt(c["p99_ms"], "{:.3f}"),
                    fmt(c["segments_per_call"], "{:.2f}"),
                    fmt(c["segments_per_call"] - base["segments_per_call"], "{:+.2f}")
                    if c["segments_per_call"] is not None and base["segments_per_call"] is not None
                    else "n/a",
                    fmt(c["p50_ms"] - base["p50_ms"], "{:+.3f}"),
                ]
            )
        print(
            f"== {server_name} server, body {args.body_size} B, 1 connection, "
            f"medians of {args.repeat} runs\n{render(rows)}\n",
            flush=True,
        )
    document["wall_s"] = round(time.monotonic() - started, 1)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, time.strftime("split-%Y%m%d-%H%M%S.json"))
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(document, fh, indent=1)
    print(f"bench_split: {document['wall_s']} s; JSON in {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
