"""Instructions per call of the client process, counted by valgrind's callgrind.

    python bench/bench_callgrind.py                          # this tree, seq and conc
    python bench/bench_callgrind.py --tree /tmp/main-before  # another tree's rpcclient
    python bench/bench_callgrind.py --tree /tmp/before --tree /tmp/after   # side by side
    python bench/bench_callgrind.py --modes seq --repeat 3 --calls 1000,3000

Wall-clock figures move 2-5x between these shared machines; instruction
counts do not. The client runs under ``valgrind --tool=callgrind`` (the client
process only: the server is a separate process, not traced) against
``bench/fixed_server.py`` on loopback port 0, once for each of two call counts;
the difference of the two totals divided by the difference of the counts is
the cost of one call, with interpreter start-up, imports, connects and the
warm-up calls cancelled out. ``PYTHONHASHSEED=0`` keeps dict and set layouts
the same from run to run.

Modes: ``seq`` (one greenlet, one connection), ``conc`` (50 greenlets on
10 connections) and ``seq-hedged`` (``seq`` with ``Hedge(delay=1.0)`` on an
idempotent method: the hedged path, no hedge ever sent). The client is
``rpcclient.Client(url)`` with every default (deadlines, retries, stats), one
endpoint, a 100-byte bytes argument; the server answers a fixed 100-byte
bytes value.

``--tree PATH`` imports ``rpcclient`` from that source tree instead of this
one (a checkout or a ``git archive`` of another commit, interpreted or with
its mypyc extensions built in place); given more than once, the trees are
measured in turn and shown side by side, ratios against the first. The
server and this script are always this tree's. JSON of every run goes to
``bench/results/callgrind-<time>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import harness
from harness import fmt, progress, render

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: the client process: imports rpcclient from the tree, warms up, then makes
#: ``calls`` calls and prints what it did as one JSON line
CLIENT = """\
import json, sys
config = json.loads(sys.argv[1])
sys.path.insert(0, config["tree"])
import gevent
import rpcclient
assert rpcclient.__file__.startswith(config["tree"]), rpcclient.__file__
hedged = config.get("hedge", 0)
client = rpcclient.Client(
    config["url"],
    pool_size=config["pool_size"],
    # a hedge that never fires (1 s): the cost of the hedged path itself
    hedge=rpcclient.Hedge(delay=1.0) if hedged else None,
    idempotent=["bench.echo"] if hedged else (),
)
arg = b"a" * 100
expected = b"x" * 100
call = client.call

def run(n):
    for _ in range(n):
        if call("bench.echo", [arg]) != expected:
            raise SystemExit("wrong answer")

def spread(n, greenlets):
    share, extra = divmod(n, greenlets)
    jobs = [gevent.spawn(run, share + (1 if i < extra else 0)) for i in range(greenlets)]
    gevent.joinall(jobs, raise_error=True)

greenlets = config["greenlets"]
spread(config["warmup"], greenlets)
spread(config["calls"], greenlets)
stats = client.stats()
client.close()
print(json.dumps({"calls": config["calls"], "compiled": rpcclient.COMPILED,
                  "file": rpcclient.__file__, "pools": stats["pools"]}))
"""

MODES: dict[str, dict[str, int]] = {
    "seq": {"greenlets": 1, "pool_size": 1},
    "conc": {"greenlets": 50, "pool_size": 10},
    "seq-hedged": {"greenlets": 1, "pool_size": 1, "hedge": 1},
}

_SUMMARY = re.compile(r"^(?:summary|totals):\s*(\d+)", re.MULTILINE)


def count_instructions(
    tree: str,
    url: str,
    mode: str,
    calls: int,
    warmup: int,
    timeout: float = 900.0,
    hashseed: int = 0,
    keep: str | None = None,
) -> dict[str, Any]:
    """One client process under callgrind; its total instructions and what it reported."""
    config = {"tree": tree, "url": url, "calls": calls, "warmup": warmup, **MODES[mode]}
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONHASHSEED"] = str(hashseed)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "callgrind.out")
        command = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            sys.executable,
            "-c",
            CLIENT,
            json.dumps(config),
        ]
        if harness.CLIENT_CPU is not None and shutil.which("taskset"):
            command = ["taskset", "-c", str(harness.CLIENT_CPU), *command]
        done = subprocess.run(
            command, check=False, capture_output=True, text=True, timeout=timeout, env=env
        )
        if done.returncode != 0:
            raise RuntimeError(f"client under callgrind failed:\n{done.stderr[-3000:]}")
        with open(out, encoding="utf-8", errors="replace") as fh:
            match = _SUMMARY.search(fh.read())
        if keep is not None:  # for callgrind_annotate: where the instructions went
            os.makedirs(keep, exist_ok=True)
            name = f"{os.path.basename(tree.rstrip('/'))}-{mode}-{calls}-seed{hashseed}.out"
            shutil.copy(out, os.path.join(keep, name))
    if match is None:
        raise RuntimeError("no summary line in callgrind's output")
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return {"instructions": int(match.group(1)), **report}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--tree",
        action="append",
        help="source tree whose rpcclient is measured (repeatable; default: this one)",
    )
    parser.add_argument("--modes", default="seq,conc", help="seq, conc or both")
    parser.add_argument("--calls", default="1000,3000", help="the two call counts: LOW,HIGH")
    parser.add_argument("--warmup", type=int, default=200, help="calls before the counted ones")
    parser.add_argument("--repeat", type=int, default=2, help="measurements per mode")
    parser.add_argument(
        "--vary-hashseed",
        action="store_true",
        help="repetition i runs with PYTHONHASHSEED=i (default: 0 for all): the spread then "
        "includes dict layouts, which move when module or attribute names change",
    )
    parser.add_argument(
        "--keep", metavar="DIR", help="keep each callgrind.out in DIR (callgrind_annotate)"
    )
    parser.add_argument("--out", default=os.path.join(harness.BENCH_DIR, "results"))
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        parser.error("valgrind is not installed (Debian: apt-get install valgrind)")
    trees = [os.path.abspath(t) for t in args.tree or [HERE]]
    for tree in trees:
        if not os.path.isdir(os.path.join(tree, "rpcclient")):
            parser.error(f"{tree} has no rpcclient package")
    low, high = (int(n) for n in args.calls.split(","))
    if not 0 < low < high:
        parser.error("--calls must be LOW,HIGH with 0 < LOW < HIGH")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for mode in modes:
        if mode not in MODES:
            parser.error(f"unknown mode {mode!r}: {', '.join(MODES)}")
    doc: dict[str, Any] = {
        "tool": "bench/bench_callgrind.py",
        "trees": trees,
        "calls": [low, high],
        "warmup": args.warmup,
        "python": sys.version.split()[0],
        "valgrind": subprocess.run(
            ["valgrind", "--version"], capture_output=True, text=True, check=False
        ).stdout.strip(),
        "modes": {},
    }
    rows = [["tree", "mode", "instructions/call", "x first", "runs", "spread", "compiled"]]
    started = time.monotonic()
    with harness.fixed_server() as server:
        for mode in modes:
            first = None
            for tree in trees:
                runs = []
                for rep in range(args.repeat):
                    # the two counts interleaved, so a drift of the machine hits both alike
                    seed = rep if args.vary_hashseed else 0
                    few = count_instructions(
                        tree, server.url, mode, low, args.warmup, hashseed=seed, keep=args.keep
                    )
                    many = count_instructions(
                        tree, server.url, mode, high, args.warmup, hashseed=seed, keep=args.keep
                    )
                    per_call = (many["instructions"] - few["instructions"]) / (high - low)
                    runs.append({"per_call": per_call, "low": few, "high": many})
                    progress(f"{tree} {mode} {rep + 1}/{args.repeat}: {per_call:,.0f} per call")
                figures = [r["per_call"] for r in runs]
                middle = statistics.median(figures)
                first = middle if first is None else first
                spread = (max(figures) - min(figures)) / middle if middle else 0.0
                doc["modes"].setdefault(mode, {})[tree] = {
                    "per_call": figures,
                    "median": middle,
                    "spread": spread,
                    "runs": runs,
                }
                rows.append(
                    [
                        tree,
                        mode,
                        fmt(middle),
                        fmt(middle / first, "{:.3f}"),
                        ", ".join(fmt(f) for f in figures),
                        f"{spread:.1%}",
                        str(runs[0]["low"]["compiled"]),
                    ]
                )
    doc["seconds"] = round(time.monotonic() - started, 1)
    print(render(rows), flush=True)
    path = harness.save_json(doc, args.out, "callgrind")
    print(f"{high} minus {low} calls, medians of {args.repeat}; {doc['seconds']} s; JSON in {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
