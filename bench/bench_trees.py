"""The same production-default arm from several rpcclient source trees, side by side.

    python bench/bench_trees.py /tmp/rpcclient-mypyc             # this tree vs that one
    python bench/bench_trees.py /tmp/a /tmp/b --modes conc --repeat 7

For build experiments (a compiled copy of the hot modules, a patch to try):
each tree is a checkout whose ``rpcclient`` package the arm process imports
(``PYTHONPATH``), everything else (servers, arm code, measurement) is this
tree's. Arms are ``bench_standing``'s ``rpcclient-prod`` (``--options``
switch features off as in its features section) plus ``--peers`` (the
``floor`` by default) from this tree, run as
fresh processes on the client core, interleaved, medians; fixed servers.
Results go to ``bench/results/trees-<time>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import bench_core
import bench_standing
import harness
from harness import fmt, progress, render

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# bench_standing's arm boot, with rpcclient imported from the tree first: harness
# puts this tree's root first on sys.path when it is imported, too late by then.
TREE_BOOT = """\
import json, sys
config = json.loads(sys.argv[1])
sys.path.insert(0, config["bench_dir"])
sys.path.insert(0, config["tree"])
import rpcclient
assert rpcclient.__file__.startswith(config["tree"]), rpcclient.__file__
import bench_standing
sys.exit(bench_standing.arm_main(config))
"""


def run_tree_arm(config: dict[str, Any], tree: str) -> dict[str, Any]:
    """One arm process importing rpcclient from ``tree``."""
    config = {**config, "tree": tree + os.sep}
    command = [sys.executable, "-c", TREE_BOOT, json.dumps(config)]
    return harness.run_arm_command(command, config, 180.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("trees", nargs="+", help="other source trees (this one is always first)")
    parser.add_argument("--modes", default="seq,conc")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--duration", type=float, default=0.5)
    parser.add_argument("--options", default="{}", help="rpcclient-prod options, as JSON")
    parser.add_argument("--peers", default="floor", help="floor_client kinds to run alongside")
    parser.add_argument("--out", default=os.path.join(harness.BENCH_DIR, "results"))
    args = parser.parse_args(argv)
    trees = [HERE, *(os.path.abspath(t) for t in args.trees)]
    for tree in trees:
        if not os.path.isdir(os.path.join(tree, "rpcclient")):
            parser.error(f"{tree} has no rpcclient package")
    options = json.loads(args.options)
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    doc: dict[str, Any] = {"tool": "bench/bench_trees.py", "trees": trees, "options": options}
    rows = [["mode", "arm", "calls/s", "x first", "CPU us/call", "x first"]]
    with harness.fixed_server() as one, harness.fixed_server() as two:
        urls = [one.url, two.url]
        for mode in (m.strip() for m in args.modes.split(",")):
            arms: dict[str, tuple[dict[str, Any], str]] = {
                peer: (
                    bench_standing.arm(peer, urls, duration=args.duration, warmup=50,
                                       **bench_core.MODES[mode]),
                    HERE,
                )
                for peer in peers
            }  # fmt: skip
            for tree in trees:
                config = bench_standing.arm(
                    bench_standing.PROD, urls, duration=args.duration, warmup=50,
                    options=options, counters=False, **bench_core.MODES[mode],
                )  # fmt: skip
                arms[tree] = (config, tree)
            runs: dict[str, list[dict[str, Any]]] = {k: [] for k in arms}
            for rep in range(args.repeat):
                for key, (config, tree) in arms.items():
                    runs[key].append(run_tree_arm(config, tree))
                progress(f"{mode} rep {rep + 1}/{args.repeat}")
            cell = {k: bench_standing.summarize(rs) for k, rs in runs.items()}
            doc[mode] = cell
            first = cell[HERE]
            for key, figures in cell.items():
                rows.append(
                    [
                        mode,
                        key,
                        fmt(figures["calls_per_s"]),
                        fmt(figures["calls_per_s"] / first["calls_per_s"], "{:.2f}"),
                        fmt(figures["cpu_us_per_call"], "{:.1f}"),
                        fmt(figures["cpu_us_per_call"] / first["cpu_us_per_call"], "{:.2f}"),
                    ]
                )
    print(render(rows), flush=True)
    print(f"medians of {args.repeat}; JSON in {harness.save_json(doc, args.out, 'trees')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
