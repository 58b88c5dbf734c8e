"""Time this thread spent ready to run but without a CPU: what a loaded machine adds.

A timed assertion ("back within the deadline + 50 ms", "no greenlet waited over
50 ms") is about the code under test, yet on a loaded shared 2-core machine the
wall clock also counts the time the kernel kept this process off a CPU while it
had work to do. Linux records that per thread: the second field of
``/proc/thread-self/schedstat`` is the run-queue delay in nanoseconds (the
wait between becoming runnable and being run). Subtracting it from a measured
interval leaves what the process itself did or waited for (a sleep, a
deadline, a peer), so a bound can stay tight without flaking under load:

- a loop that never yields, or ignores its deadline, is *on* a CPU (or asleep)
  while it is late, so its lateness is not run-queue delay and still counts;
- the load of other processes only makes the process wait in the run queue,
  and that wait is subtracted.

What it does not see: time a virtual machine's vCPU was not run by its host
(steal). Where schedstat is missing (not Linux, or a kernel without
CONFIG_SCHED_INFO) :func:`run_delay` is always 0.0 and every figure is the
plain wall clock: the bounds are then as strict as before, never looser.
"""

from __future__ import annotations

import bisect
import os
import threading
import time

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


class Lateness:
    """How late things ended past their deadlines, less what the machine's load added.

    A greenlet samples the clock and :func:`run_delay` every ``period`` s.
    ``late(deadline)`` is ``now - deadline`` less the run-queue delay after
    ``deadline``: the time the process waited for a CPU once the deadline had
    passed (while it should have been noticing it and unwinding). Of the
    wait between the two samples either side of the deadline, at most the
    part of that interval after it counts. Only that is forgiven:

    - queueing before the deadline is not subtracted (a call that honours
      its deadline ends at it however long the process queued before);
    - a loop that keeps the CPU past the deadline without yielding keeps the
      sampler from running too, so nothing of its lateness is forgiven;
    - a loop that yields but ignores its deadline is on the CPU meanwhile,
      not queued, so its lateness counts as well.

    The sampler is one cheap timer in the hub; ``stop()`` ends it.
    """

    def __init__(self, period: float = 0.001) -> None:
        import gevent

        self.period = period
        self._times: list[float] = [time.monotonic()]
        self._delays: list[float] = [run_delay()]
        self._greenlet = gevent.spawn(self._run)

    def _run(self) -> None:
        import gevent

        while True:
            gevent.sleep(self.period)
            self._times.append(time.monotonic())
            self._delays.append(run_delay())

    @staticmethod
    def now() -> tuple[float, float]:
        """The clock and the run-queue delay now: an end to pass to :meth:`late` later."""
        return time.monotonic(), run_delay()

    def late(self, deadline: float, end: tuple[float, float] | None = None) -> float:
        """Seconds ``end`` (default: now) is past ``deadline``, less the
        run-queue delay after it; negative when early."""
        now, delay = end if end is not None else self.now()
        wall = now - deadline
        at = bisect.bisect_left(self._times, deadline)
        if wall <= 0 or at >= len(self._times):
            return wall  # nothing sampled after the deadline: nothing forgiven
        queued = delay - self._delays[at]
        if at > 0:
            # the wait between the samples either side of the deadline: of it,
            # no more than the part of that interval after the deadline
            around = self._delays[at] - self._delays[at - 1]
            queued += min(around, self._times[at] - deadline)
        return wall - max(0.0, queued)

    def stop(self) -> None:
        """End the sampler."""
        self._greenlet.kill()


class Stopwatch:
    """Wall-clock time since creation, with and without this thread's run-queue delay.

    ``elapsed()`` is the plain monotonic interval; ``on_machine()`` is that
    interval less the time the thread was runnable but not running, i.e. the
    time a machine with a free CPU would have shown. Never negative.
    """

    def __init__(self) -> None:
        self.started = time.monotonic()
        self._delay0 = run_delay()

    def elapsed(self) -> float:
        """Seconds since creation, by the wall clock."""
        return time.monotonic() - self.started

    def delayed(self) -> float:
        """Seconds of that the thread waited for a CPU."""
        return max(0.0, run_delay() - self._delay0)

    def on_machine(self) -> float:
        """Seconds since creation less the run-queue delay meanwhile."""
        delayed = self.delayed()
        return max(0.0, self.elapsed() - delayed)
