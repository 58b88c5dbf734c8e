"""The load of one measured run: closed-loop or open-loop, and its figures.

**Closed loop** (the default): ``concurrency`` greenlets each call, wait
for the answer, call again. The load adapts to the server: when it stalls,
nothing is sent, so a stall shows in a handful of calls at most (one per
greenlet) and hides from the percentiles ("coordinated omission").

**Open loop** (``rate``): call ``i`` is due at ``t0 + i / rate``, whatever
the server does, as wrk2 drives it, and its latency runs from the moment it
was due (or from its actual start, if that came first), so time spent
waiting behind a stalled server counts. The calls are run by ``concurrency``
greenlets that take the due times in order: that is the bound on calls in
flight, so a stalled server costs no memory (the schedule is arithmetic,
nothing queues). Past the bound a due call waits for a greenlet to come
free and starts late; it is still timed from its due time (never skipped:
skipping exactly the delayed calls would hide the stall again). A run ends
when every call is done; calls not started ``grace`` seconds after the last
due time (a server that cannot keep up) are **dropped**: counted, reported,
never timed. The achieved rate is completed calls over the time from the
first due time to the last answer.

The event loop's timers have a 1 ms granularity (epoll): a greenlet asks to
wake 1 ms before its call is due and starts it then; timing it from that
actual start keeps the granularity out of the latencies, at the cost of
calls starting up to 1 ms early. ``start_lag_ms`` (actual start minus due
time) shows how well the schedule was kept.

Both modes time with ``time.perf_counter`` and keep each latency in an
``array('d')`` while the clock runs; the HDR histogram is built after.
"""

from __future__ import annotations

import math
import time
from array import array
from collections.abc import Callable, Sequence
from typing import Any

from . import hdr

__all__ = ["measure", "percentile", "summarize_latencies"]


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``0 < q <= 1``) of an ascending sequence."""
    if not ordered:
        return math.nan
    index = max(0, math.ceil(q * len(ordered)) - 1)
    return ordered[min(index, len(ordered) - 1)]


def summarize_latencies(latencies_s: Sequence[float]) -> dict[str, float]:
    """Nearest-rank p50/p90/p99/max in milliseconds of raw latencies (no histogram)."""
    ordered = sorted(latencies_s)
    return {
        "p50": percentile(ordered, 0.50) * 1000.0,
        "p90": percentile(ordered, 0.90) * 1000.0,
        "p99": percentile(ordered, 0.99) * 1000.0,
        "max": (ordered[-1] * 1000.0) if ordered else math.nan,
    }


def _cpu_seconds() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _Errors:
    """How many calls raised, and the first one's repr."""

    def __init__(self) -> None:
        self.count = 0
        self.first: str | None = None

    def add(self, exc: BaseException) -> None:
        self.count += 1
        if self.first is None:
            self.first = repr(exc)


def _drive(
    call: Callable[[], Any],
    concurrency: int,
    calls: int | None,
    stop_at: float,
    record: Callable[[float], None],
) -> tuple[int, str | None]:
    """Closed loop: call from ``concurrency`` greenlets until ``calls`` are done or
    ``stop_at`` (a ``perf_counter`` time) passed; ``record`` each latency."""
    import gevent

    clock = time.perf_counter
    remaining = -1 if calls is None else calls
    errors = _Errors()

    def worker() -> None:
        nonlocal remaining
        while remaining != 0:
            # no greenlet switch can happen between the test and the decrement
            remaining -= 1
            started = clock()
            if started >= stop_at:
                return
            try:
                call()
            except Exception as exc:  # noqa: BLE001 - counted and reported, never hidden
                errors.add(exc)
            record(clock() - started)

    if concurrency == 1:
        worker()
    else:
        gevent.joinall([gevent.spawn(worker) for _ in range(concurrency)], raise_error=True)
    return errors.count, errors.first


#: how early a greenlet wakes before a due call (the event loop's timer granularity)
_WAKE_EARLY_S = 0.001


def _drive_open(  # noqa: PLR0917 - private, one call site
    call: Callable[[], Any],
    concurrency: int,
    calls: int,
    rate: float,
    t0: float,
    grace: float,
    record: Callable[[float], None],
    lag: Callable[[float], None],
) -> tuple[int, str | None, int, float]:
    """Open loop (see the module docstring). ``(errors, first error, dropped, last end)``."""
    import gevent

    clock = time.perf_counter
    interval = 1.0 / rate
    stop_at = t0 + (calls - 1) * interval + grace
    errors = _Errors()
    next_index = 0
    dropped = 0
    stopped = False
    last_end = t0

    def worker() -> None:
        nonlocal next_index, dropped, stopped, last_end
        while not stopped and next_index < calls:
            index = next_index
            next_index = index + 1  # no greenlet switch between the read and the write
            due = t0 + index * interval
            wait = due - clock() - _WAKE_EARLY_S
            if wait > 0:
                gevent.sleep(wait)
            started = clock()
            if started >= stop_at:
                stopped = True
                dropped += 1
                return
            try:
                call()
            except Exception as exc:  # noqa: BLE001 - counted and reported, never hidden
                errors.add(exc)
            ended = clock()
            record(ended - min(due, started))
            lag(started - due)
            last_end = max(last_end, ended)

    gevent.joinall([gevent.spawn(worker) for _ in range(min(concurrency, calls))], raise_error=True)
    return errors.count, errors.first, dropped + (calls - next_index), last_end


def measure(
    call: Callable[[], Any],
    *,
    calls: int | None = None,
    duration: float | None = None,
    concurrency: int = 1,
    warmup: int = 100,
    rate: float | None = None,
    counters_url: str | None = None,
    mark: Callable[[str], None] | None = None,
    keep_latencies: bool = True,
) -> dict[str, Any]:
    """Run ``call()`` from ``concurrency`` greenlets; return the figures of the run.

    Exactly ``calls`` calls, or as many as start within ``duration`` seconds
    (give one of the two; with ``rate``, ``duration`` means
    ``ceil(rate * duration)`` calls), after ``warmup`` untimed closed-loop
    calls made with the same concurrency, so that every pooled connection is
    open before the clock starts. With ``rate`` (calls/s) the run is open
    loop and ``concurrency`` bounds the calls in flight (module docstring).

    CPU is this process's user+system time (``getrusage``) over the measured
    calls only. With ``counters_url``, the server's connection counters are
    read before and after, giving segments and request bytes per call (None
    when unavailable). ``mark("start")``/``mark("end")`` bracket the
    measured calls (for syscall tracing). A call that raises is counted in
    ``errors`` and the run goes on; the first error's repr is kept.
    Latencies are the caller's view: pool wait included. ``latency_ms`` comes
    from an HDR histogram (:mod:`.hdr`; ``hdr`` is its encoded form);
    ``latencies_s`` (raw, in order of completion) only with ``keep_latencies``.
    """
    if (calls is None) == (duration is None):
        raise ValueError("give exactly one of calls and duration")
    if concurrency < 1:
        raise ValueError("concurrency must be >= 1")
    if rate is not None and not (rate > 0 and math.isfinite(rate)):
        raise ValueError("rate must be a positive number of calls/s")
    hdr.new()  # fail before measuring, not after, when the library is missing
    if warmup:
        _drive(call, concurrency, warmup, math.inf, lambda _latency: None)
    before = _totals(counters_url)
    latencies = array("d")
    lags = array("d")
    dropped = 0
    if mark is not None:
        mark("start")
    cpu0 = _cpu_seconds()
    if rate is None:
        t0 = time.perf_counter()
        stop_at = math.inf if duration is None else t0 + duration
        errors, first_error = _drive(call, concurrency, calls, stop_at, latencies.append)
        elapsed = time.perf_counter() - t0
        scheduled = None
    else:
        scheduled = calls if calls is not None else max(1, math.ceil(rate * (duration or 0.0)))
        span = (scheduled - 1) / rate
        t0 = time.perf_counter() + 0.001
        errors, first_error, dropped, last_end = _drive_open(
            call, concurrency, scheduled, rate, t0, max(1.0, 0.5 * span), latencies.append,
            lags.append,
        )  # fmt: skip
        elapsed = last_end - t0
    cpu = _cpu_seconds() - cpu0
    if mark is not None:
        mark("end")
    after = _totals(counters_url)
    hist, clamped = hdr.from_seconds(latencies)
    done = len(latencies)
    per_call_us = cpu * 1e6 / done if done else math.nan
    result: dict[str, Any] = {
        "mode": "closed" if rate is None else "open",
        "calls": done,
        "elapsed_s": elapsed,
        "calls_per_s": done / elapsed if elapsed > 0 else math.nan,
        "cpu_us_per_call": per_call_us,
        "cpu_ms_per_1000": per_call_us,  # the same number, in the unit of the ab table
        "latency_ms": hdr.summary_ms(hist),
        "hdr": hdr.encode(hist),
        "hdr_clamped": clamped,
        "segments_per_call": None,
        "request_bytes_per_call": None,
        "errors": errors,
        "first_error": first_error,
    }
    if rate is not None:
        ordered = sorted(lags)
        result.update(
            rate_asked=rate,
            scheduled=scheduled,
            dropped=dropped,
            start_lag_ms={
                "p50": percentile(ordered, 0.5) * 1000.0,
                "p99": percentile(ordered, 0.99) * 1000.0,
                "max": ordered[-1] * 1000.0 if ordered else math.nan,
            },
        )
    if keep_latencies:
        result["latencies_s"] = latencies.tolist()
    if before is not None and after is not None and done:
        result["segments_per_call"] = (after["data_segs_in"] - before["data_segs_in"]) / done
        result["request_bytes_per_call"] = (after["bytes_in"] - before["bytes_in"]) / done
    return result


def _totals(url: str | None) -> dict[str, Any] | None:
    if not url:
        return None
    from .counters import fetch_tcp_totals

    return fetch_tcp_totals(url)
