"""How late stalled calls come back: the deadline watchdog against a timer per call.

    python bench/deadline_lateness.py                  # this tree, ~30 s
    python bench/deadline_lateness.py /tmp/other_tree  # rpcclient imported from another tree

400 concurrent calls with ``Timeout(total=0.05)`` to a listener that never
accepts (the kernel completes each connect and buffers each request; nothing
in this process serves them), with a pool of 400 (exchanges time out) and of
10 (pool waiters time out), per deadline mode: ``watchdog`` at its default
tick, ``watchdog`` at a 10 ms tick (the default before) and ``timer``.
Interleaved, 5 runs each, after a warm-up; prints the median over runs of
each run's p50 and p99 lateness (ms past the deadline) and the CPU wait of
the process (``/proc/self/schedstat``) during the runs.
"""

from __future__ import annotations

import socket
import statistics
import sys
import time
from typing import Any

if len(sys.argv) > 1:
    sys.path.insert(0, sys.argv[1])

import gevent

import rpcclient
from rpcclient import Client, GeventTransport, Timeout

TOTAL = 0.05
CALLS = 400


def cpu_wait() -> float:
    with open("/proc/self/schedstat", encoding="ascii") as fh:
        return int(fh.read().split()[1]) / 1e9


def run(mode: str, tick: float | None, pool: int) -> tuple[float, float, float]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    options: dict[str, Any] = {"watchdog_tick": tick} if tick is not None else {}
    transport = GeventTransport(deadline_mode=mode, pool_size=pool, **options)
    bounds = Timeout(connect=1, read=5, pool=5, total=TOTAL)
    client = Client(
        f"http://127.0.0.1:{listener.getsockname()[1]}",
        transport=transport,
        timeout=bounds,
        retry=rpcclient.NO_RETRY,
    )
    late: list[float] = []

    def one() -> None:
        started = time.monotonic()
        try:
            client.call("a.b")
        except rpcclient.RPCError:
            pass
        late.append((time.monotonic() - started - TOTAL) * 1000)

    waited = cpu_wait()
    gevent.joinall([gevent.spawn(one) for _ in range(CALLS)])
    waited = cpu_wait() - waited
    client.close()
    listener.close()
    late.sort()
    return late[len(late) // 2], late[int(0.99 * (len(late) - 1))], waited * 1000


def main() -> None:
    arms = [("watchdog", None), ("watchdog", 0.01), ("timer", None)]
    results: dict[tuple[str, float | None, int], list[tuple[float, float, float]]] = {}
    for pool in (CALLS, 10):
        run("watchdog", None, pool)  # warm-up
    for _ in range(5):
        for pool in (CALLS, 10):
            for mode, tick in arms:
                results.setdefault((mode, tick, pool), []).append(run(mode, tick, pool))
    print(f"{rpcclient.__file__} (compiled: {rpcclient.COMPILED})")
    for (mode, tick, pool), runs in results.items():
        p50, p99, wait = (statistics.median(r[i] for r in runs) for i in range(3))
        what = "exchanges" if pool == CALLS else "pool waiters"
        label = f"{mode}{'' if tick is None else f' tick={tick}'}"
        print(f"{what:12} {label:20} p50 {p50:5.1f} ms  p99 {p99:5.1f} ms  cpu wait {wait:5.1f} ms")


if __name__ == "__main__":
    main()
