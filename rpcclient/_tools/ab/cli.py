"""The ``rpcclient ab`` command line: arguments in, checks before any traffic, table out."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from . import hdr
from .arms import ArmFailed, ArmSpec
from .compare import BadSettings, compare, format_table
from .plot import PlotUnavailable, plot, require

__all__ = ["check_target", "configure_parser", "main", "run"]


def check_target(url: str) -> str:
    """The target base URL, or ArmFailed: only ``http(s)://host[:port][/path]``.

    No credentials, query or fragment: the URL names a service, nothing else.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ArmFailed(f"--target {url!r}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ArmFailed(f"--target {url!r}: expected http://HOST[:PORT] or https://HOST[:PORT]")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ArmFailed(f"--target {url!r}: no credentials, query or fragment in the URL")
    if port == 0:
        raise ArmFailed(f"--target {url!r}: port 0")
    return url.rstrip("/")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``rpcclient ab`` arguments to ``parser``."""
    parser.description = (
        "Compare two clients on one workload (by default echo.echo with a bytes payload): "
        "calls/s, latency percentiles (HDR histogram, to p99.99), client CPU, request bytes "
        "and client-to-server TCP data segments per call, over repetitions in ABBA order, "
        "each arm in its own process, with a verdict per figure (exact Mann-Whitney U) and "
        "the B/A ratio's confidence interval. Closed loop by default; --rate for open loop."
    )
    parser.add_argument(
        "--a", default="requests", metavar="ARM",
        help="arm A: a transport, optionally with Client options, e.g. "
        "'gevent:pool_size=5,timeout=none'; delay_ms=N makes an arm wait N ms in every call "
        "(default: requests)",
    )  # fmt: skip
    parser.add_argument("--b", default="gevent", metavar="ARM", help="arm B (default: gevent)")
    parser.add_argument("--calls", type=int, default=3000, help="measured calls per run")
    parser.add_argument(
        "--duration", type=float, metavar="SECONDS",
        help="measure for this long per run instead of --calls (with --rate: rate x duration "
        "calls)",
    )  # fmt: skip
    parser.add_argument(
        "--rate", type=float, metavar="CALLS_PER_S",
        help="open loop: start calls at this constant rate per arm, whatever the server does, "
        "and time each from when it was due (coordinated omission corrected); --concurrency "
        "then bounds the calls in flight",
    )  # fmt: skip
    parser.add_argument(
        "--concurrency", type=int, default=10,
        help="greenlets calling at once (with --rate: most calls in flight)",
    )  # fmt: skip
    parser.add_argument("--pool-size", type=int, default=10, help="connections per client")
    parser.add_argument("--body-size", type=int, default=100, help="payload bytes per call")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each arm (ABBA order)")
    parser.add_argument(
        "--alpha", type=float, default=0.05, help="significance level of the verdicts"
    )
    parser.add_argument(
        "--target", "--url", dest="target", metavar="URL",
        help="a service you run (your own test network): both arms call it instead of the "
        "bundled server; segments and bytes are n/a unless it serves our counters",
    )  # fmt: skip
    parser.add_argument(
        "--call", metavar="NAME", help="the method each call runs (default: echo.echo)"
    )
    parser.add_argument(
        "--args", metavar="JSON",
        help="its arguments as JSON: an array (positional) or an object (keywords); "
        "default: none, or echo.echo's payload of --body-size bytes",
    )  # fmt: skip
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON ('-': stdout)")
    parser.add_argument(
        "--plot", metavar="PNG",
        help="plot the latency distributions and calls/s per repetition (matplotlib)",
    )  # fmt: skip
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")


def _fail(text: str, status: int) -> int:
    print(f"rpcclient ab: {text}", file=sys.stderr)
    return status


def run(args: argparse.Namespace) -> int:
    """Run ``rpcclient ab``; 0 on success, 2 for bad arguments, 1 when an arm fails."""
    try:
        a, b = ArmSpec.parse(args.a), ArmSpec.parse(args.b)
        target = None if args.target is None else check_target(args.target)
    except ArmFailed as exc:
        return _fail(str(exc), 2)
    call_args: Any = None
    if args.args is not None:
        try:
            call_args = json.loads(args.args)
        except ValueError as exc:
            return _fail(f"--args is not JSON: {exc}", 2)
        if not isinstance(call_args, list | dict):
            return _fail("--args must be a JSON array or object", 2)
    if args.call is not None and (not args.call or any(c.isspace() for c in args.call)):
        return _fail(f"--call {args.call!r}: expected a method name like service.method", 2)
    try:
        hdr.new()
        if args.plot:
            require()  # fail before measuring, not after
    except (hdr.HdrMissing, PlotUnavailable) as exc:
        return _fail(str(exc), 2)

    def progress(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    if target is not None:
        amount = f"{args.duration:g} s" if args.duration else f"{args.calls} calls"
        rate = f" at {args.rate:g} calls/s" if args.rate else ""
        progress(
            f"rpcclient ab: traffic goes to {target}: 2 arms x {args.repeat} runs x {amount}"
            f"{rate} of {args.call or 'echo.echo'}, at most {args.concurrency} in flight"
        )
    try:
        result = compare(
            a,
            b,
            calls=args.calls,
            concurrency=args.concurrency,
            pool_size=args.pool_size,
            body_size=args.body_size,
            repeat=args.repeat,
            url=target,
            progress=None if args.quiet else progress,
            rate=args.rate,
            duration=args.duration,
            alpha=args.alpha,
            method=args.call,
            args=call_args,
        )
    except BadSettings as exc:
        return _fail(str(exc), 2)
    except (ArmFailed, RuntimeError) as exc:
        return _fail(str(exc), 1)
    table = format_table(result)
    if args.json == "-":
        print(table, file=sys.stderr)
        json.dump(result, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(table)
        if args.json:
            with open(args.json, "w", encoding="utf-8") as fh:
                json.dump(result, fh, indent=2)
                fh.write("\n")
    if args.plot:
        plot(result, args.plot)
        print(f"rpcclient ab: plot written to {args.plot}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m rpcclient._tools.ab [options]``: the same as ``rpcclient ab``."""
    parser = argparse.ArgumentParser(prog="rpcclient ab")
    configure_parser(parser)
    return run(parser.parse_args(argv))
