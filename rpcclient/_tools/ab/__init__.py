"""``rpcclient ab``: one workload through two clients, side by side, with a verdict.

The rules of a fair A/B run, and the module that keeps each:

- **Each arm is its own process** (:mod:`.arms`), started fresh for every
  repetition; the server is another process. So an arm's CPU figure
  (``getrusage`` of that process, over the measured calls only) is the
  client's alone, and one arm's warm caches or garbage never bill the other.
  Arms whose transport is only cooperative under monkey-patching
  (``requests``, ``urllib3``) call ``gevent.monkey.patch_all()`` first thing
  in their process; ``gevent`` arms run unpatched, as users run them.
- **Interleaved repetitions in ABBA order** (:mod:`.compare`): a noisy
  neighbour slows both arms alike, and neither always goes first.
- **Separate cores** when there are two or more: the server on the last
  core, the arms on the first (``os.sched_setaffinity``).
- **Closed or open loop** (:mod:`.load`): closed loop by default; with
  ``--rate`` calls are started on a fixed schedule and timed from when they
  were due, so a stalled server shows in the percentiles (coordinated
  omission corrected, as wrk2 does).
- **Percentiles from an HDR histogram** (:mod:`.hdr`), to p99.99 and max,
  per run and over all runs.
- **A verdict per figure** (:mod:`.stats`): exact Mann-Whitney U over the
  repetitions and the Hodges-Lehmann interval of the B/A ratio; "~ no
  difference" when the evidence is not there.
- **Packets are counted at the server, without root** (:mod:`.counters`):
  the bundled server reads Linux ``TCP_INFO`` of every connection. Against
  a ``--target`` that does not serve those counters both figures are "n/a".

This package's top level re-exports what ``bench/`` and the CLI use.
"""

from __future__ import annotations

from .arms import (
    ARM_OPTIONS,
    ECHO,
    PATCHED_TRANSPORTS,
    SERVING_PREFIX,
    TOOL_OPTIONS,
    ArmFailed,
    ArmSpec,
    ServerProcess,
    child_env,
    pin_cpus,
    run_arm_process,
    start_process_server,
    start_server,
)
from .cli import check_target, configure_parser, main, run
from .compare import ROWS, BadSettings, compare, format_table
from .counters import (
    CONTROL_PATH,
    ConnectionCounters,
    fetch_tcp_totals,
    serve_counting,
    tcp_counters,
)
from .load import measure, percentile, summarize_latencies

#: the default workload's method (``echo.echo``)
METHOD = ECHO

__all__ = [
    "ARM_OPTIONS",
    "CONTROL_PATH",
    "ECHO",
    "METHOD",
    "PATCHED_TRANSPORTS",
    "ROWS",
    "SERVING_PREFIX",
    "TOOL_OPTIONS",
    "ArmFailed",
    "ArmSpec",
    "BadSettings",
    "ConnectionCounters",
    "ServerProcess",
    "check_target",
    "child_env",
    "compare",
    "configure_parser",
    "fetch_tcp_totals",
    "format_table",
    "main",
    "measure",
    "percentile",
    "pin_cpus",
    "run",
    "run_arm_process",
    "serve_counting",
    "start_process_server",
    "start_server",
    "summarize_latencies",
    "tcp_counters",
]
