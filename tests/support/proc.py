"""Helpers about this test process: fresh interpreters, forks, open descriptors."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from collections.abc import Callable

import gevent
import gevent.os


def run_python(
    script: str, *args: str, timeout: float = 60, flags: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in a fresh interpreter (not monkey-patched) that imports this tree.

    subprocess is cooperative here when the test process is patched, so the
    loopback servers of the test keep serving while it runs.
    """
    return subprocess.run(
        [sys.executable, *flags, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
        check=False,
    )


def open_fds() -> int:
    return len(os.listdir(f"/proc/{os.getpid()}/fd"))


class FdWatch:
    """Open descriptors of this process; ``mark()`` after servers are up."""

    def __init__(self) -> None:
        self.before = 0
        self.mark()

    def mark(self) -> None:
        gc.collect()
        self.before = open_fds()

    def check(self) -> None:
        gevent.sleep(0)
        gc.collect()
        after = open_fds()
        assert after <= self.before, f"fds before {self.before}, after {after}"


def run_in_fork(check: Callable[[], bool]) -> None:
    """Run ``check`` in a forked child; fail here unless it returned True there.

    The child reports one byte through a pipe (read by gevent's threadpool,
    so the parent's hub keeps serving loopback servers meanwhile) and exits
    without running the parent's cleanup.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            code = 0 if check() else 2
        finally:
            os.write(write_fd, bytes([code]))
            os._exit(code)
    os.close(write_fd)
    with gevent.Timeout(10):
        got = gevent.os.tp_read(read_fd, 1)
    os.close(read_fd)
    os.waitpid(pid, 0)
    assert got == b"\x00", f"the check failed in the child (code {got!r})"
