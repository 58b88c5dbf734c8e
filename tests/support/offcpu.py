"""Time the process could not run the code under test: what a loaded machine adds.

A timed assertion ("back within the deadline + 50 ms", "no greenlet waited over
50 ms") is about the code under test, yet the wall clock also counts time in
which nothing of this process ran:

- the kernel's run queue: on a loaded shared 2-core machine the process waits
  for a CPU while it has work to do. Linux records that per thread: the
  second field of ``/proc/thread-self/schedstat`` is the run-queue delay in
  nanoseconds (:func:`run_delay`);
- the cyclic garbage collector: a full collection stops every greenlet, and
  its length follows the whole heap (in the hostile suite, hypothesis's: 80-
  780 ms were seen), not the code under test (:func:`gc_time`, measured by a
  ``gc.callbacks`` hook, its own queueing not counted twice).

:func:`paused` is their sum. Subtracting it from a measured interval leaves
what the process itself did or waited for (a loop, a sleep, a deadline, a
peer), so a bound can stay tight without flaking under load: a loop that
never yields, or ignores its deadline, is *on* the CPU while it is late, and
that still counts in full.

What it does not see: time a virtual machine's vCPU was not run by its host
(steal). Where schedstat is missing (not Linux, or a kernel without
CONFIG_SCHED_INFO) :func:`run_delay` is always 0.0: the bounds are then as
strict as before, less the collector's pauses only.
"""

from __future__ import annotations

import bisect
import gc
import os
import threading
import time
from typing import Any

_PATH = "/proc/thread-self/schedstat"


def _open() -> int | None:
    try:
        return os.open(_PATH, os.O_RDONLY)
    except OSError:
        return None


# One descriptor, re-read with pread: a read costs ~3 us, not an open and close,
# so a test may take one per call (the ticker does every 5 ms).
_FD = _open()
# the descriptor is the opening OS thread's: other threads open their own (the
# native id, since gevent's monkey-patching makes get_ident() a greenlet's)
_FD_THREAD = os.getpid(), threading.get_native_id()


def run_delay() -> float:
    """Seconds the calling thread has waited in a run queue since it started (0.0 if unknown).

    Only differences between two readings in one thread mean anything.
    """
    fd = _FD if (os.getpid(), threading.get_native_id()) == _FD_THREAD else None
    try:
        if fd is not None:
            raw = os.pread(fd, 128, 0)
        else:
            with open(_PATH, "rb") as f:
                raw = f.read()
        return int(raw.split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


class _Collections:
    """The time spent in cyclic garbage collections, kept by a ``gc.callbacks`` hook."""

    def __init__(self) -> None:
        self.total = 0.0
        self._started: tuple[float, float] | None = None
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.monotonic(), run_delay()
        elif self._started is not None:
            began, delay = self._started
            self._started = None
            # a collection queued for a CPU is in run_delay() already
            self.total += max(0.0, (time.monotonic() - began) - (run_delay() - delay))


_COLLECTIONS = _Collections()


def gc_time() -> float:
    """Seconds this process has spent in cyclic garbage collections since this module loaded."""
    return _COLLECTIONS.total


def paused() -> float:
    """Seconds the process could not run the code under test: run-queue delay + collections.

    Only differences between two readings in one thread mean anything.
    """
    return run_delay() + _COLLECTIONS.total


class Lateness:
    """How late things ended past their deadlines, less what the machine's load added.

    A greenlet samples the clock and :func:`paused` every ``period`` s.
    ``late(deadline)`` is ``now - deadline`` less the pause after
    ``deadline``: the time the process waited for a CPU, or collected
    garbage, once the deadline had passed (while it should have been
    noticing it and unwinding). Of the pause between the two samples either
    side of the deadline, at most the part of that interval after it counts;
    when the deadline and the end fall between two samples (a burst of work
    kept the hub from sampling), the pause since the last sample, at most
    the time past the deadline. Only that is forgiven:

    - what the process did on the CPU after the deadline is never forgiven:
      a loop that keeps the CPU without yielding, or yields but ignores its
      deadline, is late by its own work, which counts in full (only its
      pauses do not);
    - a pause well before the deadline is not subtracted (a call that honours
      its deadline ends at it however long the process queued before).

    The sampler is one cheap timer in the hub; ``stop()`` ends it.
    """

    def __init__(self, period: float = 0.001) -> None:
        import gevent

        self.period = period
        self._times: list[float] = [time.monotonic()]
        self._delays: list[float] = [paused()]
        self._greenlet = gevent.spawn(self._run)

    def _run(self) -> None:
        import gevent

        while True:
            gevent.sleep(self.period)
            self._times.append(time.monotonic())
            self._delays.append(paused())

    @staticmethod
    def now() -> tuple[float, float]:
        """The clock and :func:`paused` now: an end to pass to :meth:`late` later."""
        return time.monotonic(), paused()

    def late(self, deadline: float, end: tuple[float, float] | None = None) -> float:
        """Seconds ``end`` (default: now) is past ``deadline``, less the
        pause after it; negative when early."""
        now, delay = end if end is not None else self.now()
        wall = now - deadline
        if wall <= 0:
            return wall
        times, delays = self._times, self._delays
        first = bisect.bisect_left(times, deadline)  # the first sample at or after it
        if first < bisect.bisect_right(times, now):
            # sampled between the deadline and the end: the pause since that
            # sample, and of the pause just before it, no more than the part
            # of that interval after the deadline
            forgiven = delay - delays[first]
            if first > 0:
                forgiven += min(delays[first] - delays[first - 1], times[first] - deadline)
        elif first > 0:
            # the deadline and the end fell between two samples (a burst of
            # work kept the hub from sampling): the pause since the last one
            forgiven = delay - delays[first - 1]
        else:
            forgiven = 0.0
        return wall - min(wall, max(0.0, forgiven))

    def stop(self) -> None:
        """End the sampler."""
        self._greenlet.kill()
