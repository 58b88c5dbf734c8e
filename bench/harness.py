"""What the bench scripts share: servers in processes, arm processes, syscall counts.

Every arm is a fresh process (``floor_client.ARM_BOOT``) pinned to the
client core; every server another process pinned to the server core. The
figures of a run are :func:`rpcclient._tools.ab.measure`'s.

Syscalls are counted in a separate pass under ``strace -f`` (its timings are
thrown away): the arm brackets its measured calls with two marker ``stat``
calls, and only syscalls between the markers count. That is honest for every
client, whatever wraps its sockets (gevent's ``sendall``, ``http.client``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH_DIR)
sys.path.insert(0, ROOT)

import floor_client  # noqa: E402

from rpcclient._tools.ab import (  # noqa: E402
    ServerProcess,
    child_env,
    pin_cpus,
    start_process_server,
    start_server,
)

CLIENT_CPU, SERVER_CPU = pin_cpus()
_SYSCALL = re.compile(r"^\d+\s+(?:<\.\.\. )?(\w+)")
SEND_SYSCALLS = frozenset({"sendto", "sendmsg", "sendmmsg", "send", "writev"})


@contextmanager
def fixed_server(reply_after: str = "request") -> Iterator[ServerProcess]:
    """bench/fixed_server.py in its own process on the server core."""
    command = [sys.executable, os.path.join(BENCH_DIR, "fixed_server.py")]
    command += ["--reply-after", reply_after]
    if SERVER_CPU is not None:
        command += ["--cpu", str(SERVER_CPU)]
    server = start_process_server(command)
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def bundled_server() -> Iterator[ServerProcess]:
    """The bundled server (example app, counting) in its own process on the server core."""
    with start_server(SERVER_CPU) as server:
        yield server


def arm_config(kind: str, url: str, **kw: Any) -> dict[str, Any]:
    config = {
        "kind": kind,
        "url": url,
        "patch": kind in floor_client.PATCHED_KINDS,
        "bench_dir": BENCH_DIR,
        "cpu": CLIENT_CPU,
        "pool_size": 1,
        "concurrency": 1,
        "body_size": 100,
        "warmup": 100,
        "counters": True,
    }
    config.update(kw)
    return config


def _command(config: dict[str, Any]) -> list[str]:
    return [sys.executable, "-c", floor_client.ARM_BOOT, json.dumps(config)]


def save_json(document: dict[str, Any], out_dir: str, prefix: str) -> str:
    """Write one run's figures to ``out_dir/PREFIX-YYYYmmdd-HHMMSS.json``; returns the path."""
    import time

    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, time.strftime(f"{prefix}-%Y%m%d-%H%M%S.json"))
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(document, fh, indent=1)
    return path


def run_arm_command(
    command: list[str], config: dict[str, Any], timeout: float, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run one arm process (``command`` ends with its JSON config); its figures.

    RuntimeError with the arm's stderr if it fails.
    """
    done = subprocess.run(
        command, check=False, capture_output=True, text=True, timeout=timeout, env=env
    )
    if done.returncode != 0:
        raise RuntimeError(f"arm {config['kind']} failed:\n{done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def run_arm(config: dict[str, Any], timeout: float = 120.0) -> dict[str, Any]:
    """One arm process; its figures. RuntimeError with its stderr if it fails."""
    return run_arm_command(_command(config), config, timeout, child_env())


def have_strace() -> bool:
    if shutil.which("strace") is None:
        return False
    probe = subprocess.run(
        ["strace", "-f", "-qq", "-o", os.devnull, "true"], check=False, capture_output=True
    )
    return probe.returncode == 0


def count_syscalls(config: dict[str, Any], timeout: float = 180.0) -> dict[str, Any] | None:
    """Syscalls per call between the arm's markers, under strace; None without strace.

    ``config`` must give ``calls`` (not ``duration``): strace slows the arm,
    and a fixed count keeps the pass short.
    """
    config = {**config, "mark": True, "counters": False}
    with tempfile.TemporaryDirectory() as tmp:
        log = os.path.join(tmp, "strace.log")
        command = ["strace", "-f", "-qq", "-o", log, *_command(config)]
        done = subprocess.run(
            command, check=False, capture_output=True, text=True, timeout=timeout, env=child_env()
        )
        if done.returncode != 0:
            raise RuntimeError(f"strace pass of {config['kind']} failed:\n{done.stderr[-2000:]}")
        calls = json.loads(done.stdout.strip().splitlines()[-1])["calls"]
        counts: Counter[str] = Counter()
        inside = False
        with open(log, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if "rpcclient-bench-mark-start" in line:
                    inside = True
                    continue
                if "rpcclient-bench-mark-end" in line:
                    break
                if not inside or "resumed>" in line:
                    continue  # a resumed call was counted when it began
                match = _SYSCALL.match(line)
                if match:
                    counts[match.group(1)] += 1
    sends = sum(n for name, n in counts.items() if name in SEND_SYSCALLS)
    return {
        "calls": calls,
        "sends_per_call": sends / calls,
        "syscalls_per_call": sum(counts.values()) / calls,
        "per_call": {name: round(n / calls, 3) for name, n in counts.most_common()},
    }


def median(values: Sequence[float | None]) -> float | None:
    clean = [v for v in values if v is not None]
    return statistics.median(clean) if clean and len(clean) == len(values) else None


def spread(values: Sequence[float | None]) -> tuple[float, float] | None:
    clean = [v for v in values if v is not None]
    return (min(clean), max(clean)) if clean else None


def render(rows: Sequence[Sequence[str]]) -> str:
    """Align a table of strings; the first row is the header."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for index, row in enumerate(rows):
        cells = [
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells))
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def fmt(value: float | None, pattern: str = "{:,.0f}") -> str:
    return "n/a" if value is None else pattern.format(value)


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
