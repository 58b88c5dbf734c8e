"""Tail latency with one of 3 hosts 10x slower: peak-EWMA P2C and ejection on vs off.

    python bench/bench_eject.py                 # 5 interleaved reps, about 45 s
    python bench/bench_eject.py --reps 9 --calls 400 --concurrency 8
    python bench/bench_eject.py --tau 0.3      # the EWMA's decay time (private knob)
    python bench/bench_eject.py --scale 0.02   # the latency arms' time scale

Three host processes on loopback (this file with ``--serve DELAY``: a gevent
server answering every request after DELAY seconds, concurrently), 2 ms,
2 ms and 20 ms. Arms, each a fresh client in this process, ``--concurrency``
greenlets making ``--calls`` calls each after a warm-up of at least 50
calls per greenlet (so the balancer has seen every host) and ``--warmup``
seconds (so the latency arms' first judgements are behind them):

- ``healthy only``: the two 2 ms hosts alone (the goal's yardstick);
- ``off``: all three, ``balance="p2c"``, ``outlier_ejection=None``;
- ``ewma+errors``: all three, ``balance="p2c-ewma"``, ejection by errors only
  (``OutlierEjection(latency=None)``: the rules before the latency rule);
- ``latency``: all three, ``balance="p2c"`` (the default), ``OutlierEjection()``
  with every rule at its default (the latency rule too) but the time
  constants scaled by ``--scale`` (0.03: interval 0.3 s, rests 0.9 s growing
  to 9 s), so that an arm of a few seconds sees what a client sees over
  minutes: rests, probes of the slow host and their verdicts (not more: the
  slow host needs ``request_volume`` 20 samples in an interval to be judged,
  about 14 per 0.1 s here);
- ``ewma+latency``: the same with ``balance="p2c-ewma"``.

The first judgement (at ``10 * scale`` s) falls in the warm-up (0.7 s): the
table is the steady state after a detection, not the detection (which costs
one interval of the slow host's share; ``--warmup 0`` puts it in). The arms
run interleaved, rep after rep; the table shows medians of the per-run
p50/p99, of the slow host's share of the measured calls, and the ratios of
the p99 medians against ``healthy only``. Goal (issue 15): ``latency`` p99
within 1.5x of ``healthy only``. Bounded: every call has a 2 s deadline,
every server process is killed at the end.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from typing import Any

RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/x-msgpack\r\nContent-Length: 1\r\n\r\n\xc0"
)


def serve(delay: float) -> None:
    """One host: answer every request (by Content-Length) after ``delay`` seconds."""
    import socket

    from gevent import monkey

    monkey.patch_all()
    import gevent
    from gevent.server import StreamServer

    def handle(sock: Any, _address: Any) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = sock.recv(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(buf) < length:
                    data = sock.recv(65536)
                    if not data:
                        return
                    buf += data
                buf = buf[length:]
                gevent.sleep(delay)
                sock.sendall(RESPONSE)
        except OSError:
            pass
        finally:
            sock.close()

    server = StreamServer(("127.0.0.1", 0), handle, backlog=256)
    server.start()
    print(f"http://127.0.0.1:{server.address[1]}", flush=True)
    server.serve_forever()


def run_arm(
    urls: list[str],
    options: dict[str, Any],
    calls: int,
    concurrency: int,
    tau: float | None,
    slow_url: str,
    warmup: float,
) -> tuple[list[float], float]:
    """The measured calls' latencies, and the slow host's share of them."""
    import gevent

    import rpcclient

    client = rpcclient.Client(urls, timeout=rpcclient.Timeout(total=2.0), **options)
    if tau is not None:  # an experiment's knob: the groups' private decay time
        for group in client._groups.values():
            group._tau = tau
    latencies: list[float] = []
    errors = 0

    def worker(count: int, keep: bool, until: float = 0.0) -> None:
        nonlocal errors
        done = 0
        while done < count or time.perf_counter() < until:
            done += 1
            started = time.perf_counter()
            try:
                client.call("echo.echo", 1)
            except rpcclient.RPCError:
                errors += 1
            if keep:
                latencies.append(time.perf_counter() - started)

    def slow_calls() -> int:
        hosts = client.stats()["groups"]["*"]["hosts"]
        return sum(h["calls"] for h in hosts if h["url"] == slow_url)

    try:
        until = time.perf_counter() + warmup
        gevent.joinall([gevent.spawn(worker, 50, False, until) for _ in range(concurrency)])
        before = slow_calls()
        gevent.joinall([gevent.spawn(worker, calls, True) for _ in range(concurrency)])
        share = (slow_calls() - before) / (calls * concurrency)
    finally:
        client.close()
    if errors:
        print(f"  ({errors} errors)", file=sys.stderr)
    return latencies, share


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--serve", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--calls", type=int, default=300, help="per greenlet per run")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--fast", type=float, default=0.002)
    parser.add_argument("--slow", type=float, default=0.020)
    parser.add_argument("--tau", type=float, help="EWMA decay time, s (default: the client's)")
    parser.add_argument(
        "--scale", type=float, default=0.03, help="the latency arms' time constants x this"
    )
    parser.add_argument("--warmup", type=float, default=0.7, help="seconds of warm-up, at least")
    args = parser.parse_args()
    if args.serve is not None:
        serve(args.serve)
        return
    from gevent import monkey

    monkey.patch_all()
    import rpcclient

    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--serve", str(d)], stdout=subprocess.PIPE, text=True
        )
        for d in (args.fast, args.fast, args.slow)
    ]
    try:
        urls = [p.stdout.readline().strip() for p in procs]  # type: ignore[union-attr]
        errors_only = rpcclient.OutlierEjection(latency=None)
        defaults = rpcclient.OutlierEjection()
        scaled = rpcclient.OutlierEjection(  # every rule at its default, times scaled
            interval=defaults.interval * args.scale,
            base_ejection_time=defaults.base_ejection_time * args.scale,
            max_ejection_time=defaults.max_ejection_time * args.scale,
        )
        arms: dict[str, tuple[list[str], dict[str, Any]]] = {
            "healthy only": (urls[:2], {}),
            "off": (urls, {"balance": "p2c", "outlier_ejection": None}),
            "ewma+errors": (urls, {"balance": "p2c-ewma", "outlier_ejection": errors_only}),
            "latency": (urls, {"balance": "p2c", "outlier_ejection": scaled}),
            "ewma+latency": (urls, {"balance": "p2c-ewma", "outlier_ejection": scaled}),
        }
        p50s: dict[str, list[float]] = {k: [] for k in arms}
        p99s: dict[str, list[float]] = {k: [] for k in arms}
        shares: dict[str, list[float]] = {k: [] for k in arms}
        for rep in range(args.reps):
            for name, (arm_urls, options) in arms.items():
                lat, share = run_arm(
                    arm_urls, options, args.calls, args.concurrency, args.tau, urls[2], args.warmup
                )
                p50s[name].append(pct(lat, 0.5) * 1000)
                p99s[name].append(pct(lat, 0.99) * 1000)
                shares[name].append(share * 100)
            print(
                f"rep {rep + 1}/{args.reps}: "
                + ", ".join(f"{k} p99 {p99s[k][-1]:.2f} ms" for k in arms),
                file=sys.stderr,
                flush=True,
            )
        base = statistics.median(p99s["healthy only"])
        print(
            f"hosts {args.fast * 1000:g}/{args.fast * 1000:g}/{args.slow * 1000:g} ms, "
            f"{args.concurrency} greenlets x {args.calls} calls, medians of {args.reps} "
            f"interleaved runs, tau {args.tau or 'default'}, latency arms' scale {args.scale:g}, "
            f"warm-up {args.warmup:g} s"
        )
        print(f"{'arm':14} {'p50 ms':>8} {'p99 ms':>8} {'slow %':>8} {'p99 x healthy':>14}")
        for name in arms:
            p99 = statistics.median(p99s[name])
            print(
                f"{name:14} {statistics.median(p50s[name]):8.2f} {p99:8.2f} "
                f"{statistics.median(shares[name]):8.2f} {p99 / base:14.2f}"
            )
        on = statistics.median(p99s["latency"]) / base
        verdict = "PASS" if on <= 1.5 else "FAIL"
        print(f"goal: latency p99 <= 1.5x healthy only: {verdict} ({on:.2f}x)")
    finally:
        for p in procs:
            p.kill()
            p.wait()


if __name__ == "__main__":
    main()
