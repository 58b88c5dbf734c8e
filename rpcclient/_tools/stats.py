"""``rpcclient stats FILE``: the time report of a saved ``client.stats()``.

A process saves its figures with :func:`rpcclient.dump_stats` (say, at exit or on a
signal); the command prints :func:`rpcclient.report` of them: methods ranked
by total time (``avg latency x calls``), the top row being the one to profile
first. ``FILE`` is that JSON, or ``-`` for standard input.
"""

from __future__ import annotations

import argparse
import json
import sys

from .._core.observe import report

__all__ = ["configure_parser", "run"]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``stats`` arguments: ``FILE`` and ``--top N``."""
    parser.add_argument(
        "file", metavar="FILE", help="JSON written by rpcclient.dump_stats ('-': standard input)"
    )
    parser.add_argument(
        "--top", type=int, metavar="N", help="show only the N methods with the most total time"
    )


def run(args: argparse.Namespace) -> int:
    """Print the report; 0 on success, 1 for an unreadable file, 2 for a bad ``--top``."""
    if args.top is not None and args.top < 1:
        print("rpcclient stats: --top must be at least 1", file=sys.stderr)
        return 2
    try:
        if args.file == "-":
            snapshot = json.load(sys.stdin)
        else:
            with open(args.file, encoding="utf-8") as f:
                snapshot = json.load(f)
    except (OSError, ValueError) as exc:  # ValueError: bad JSON or bad UTF-8
        print(f"rpcclient stats: cannot read {args.file}: {exc}", file=sys.stderr)
        return 1
    inner = snapshot.get("stats", snapshot) if isinstance(snapshot, dict) else None
    methods = inner.get("methods") if isinstance(inner, dict) else None
    if not isinstance(methods, dict):
        print(
            f"rpcclient stats: {args.file} is not the JSON of client.stats() (no 'methods')",
            file=sys.stderr,
        )
        return 1
    try:
        print(report(snapshot, top=args.top))
    except (KeyError, TypeError) as exc:  # a hand-edited or foreign file
        print(f"rpcclient stats: {args.file}: malformed method entry: {exc!r}", file=sys.stderr)
        return 1
    return 0
