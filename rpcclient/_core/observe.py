"""What the client measures about its own calls, and the hooks users add.

**Stats** are on by default and cheap (a few attribute updates and one
``frexp`` per call; bench/ measures the overhead): per ``service.method`` and
per endpoint host, calls, errors by class, retries, total time, a latency
histogram (4 buckets per octave: percentiles within ~10%), body bytes sent
and received. :meth:`Stats.snapshot` returns plain data; :func:`report`
ranks methods by total time (``avg latency x calls``): the top row is where
the time goes, the one to profile first.

**Hooks** are objects with any of ``before_call``, ``before_attempt``,
``after_attempt``, ``after_call`` (subclass :class:`Hook`). Order per call:
``before_call``, then per attempt ``before_attempt`` / ``after_attempt``, then
``after_call``; hooks run in the order given, synchronously, in the calling
greenlet, so each costs what it does (keep them short; ship data elsewhere in
a background greenlet, as the statsd reporter does). They see one mutable
:class:`CallEvent` per call; ``before_attempt`` may add request headers
(``event.headers``). An exception from a hook is logged and swallowed: an
observer never breaks a call.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
from collections.abc import Iterable, Sequence
from typing import Any, Final

from mypy_extensions import mypyc_attr

from .._fork import on_fork_in_child

__all__ = ["CallEvent", "Hook", "Stats", "report"]

log = logging.getLogger("rpcclient")

_BUCKETS_PER_OCTAVE: Final = 4
_NBUCKETS: Final = 40 * _BUCKETS_PER_OCTAVE  # 1 us .. ~12 days
_SUB: Final = 2 * _BUCKETS_PER_OCTAVE
frexp: Final = math.frexp


def _bucket(seconds: float) -> int:
    us = seconds * 1e6
    if us < 1.0:
        return 0
    mantissa, exponent = frexp(us)  # us = m * 2**e, 0.5 <= m < 1
    index = exponent * _BUCKETS_PER_OCTAVE + int((mantissa - 0.5) * _SUB)
    return index if index < _NBUCKETS else _NBUCKETS - 1


def _bucket_upper(index: int) -> float:
    """Upper bound, in seconds, of a histogram bucket."""
    exponent, sub = divmod(index, _BUCKETS_PER_OCTAVE)
    return (0.5 + (sub + 1) / (2 * _BUCKETS_PER_OCTAVE)) * 2.0**exponent / 1e6


class Counter:
    """Figures of one method or one host."""

    __slots__ = (
        "bytes_received",
        "bytes_sent",
        "calls",
        "dedup_resends",
        "errors",
        "hedges",
        "hedges_won",
        "hist",
        "retries",
        "total",
    )

    def __init__(self) -> None:
        self.calls = 0
        self.retries = 0
        #: retries re-sent for the server to deduplicate (non-idempotent calls)
        self.dedup_resends = 0
        self.hedges = 0  # hedged attempts sent (see rpcclient._policy.hedge)
        self.hedges_won = 0  # calls a hedge answered first
        self.total = 0.0
        self.bytes_sent = 0
        self.bytes_received = 0
        self.errors: dict[str, int] = {}
        self.hist = [0] * _NBUCKETS

    def add(self, elapsed: float, error: str | None, sent: int, received: int) -> None:
        self.calls += 1
        self.total += elapsed
        self.hist[_bucket(elapsed)] += 1
        self.bytes_sent += sent
        self.bytes_received += received
        if error is not None:
            self.errors[error] = self.errors.get(error, 0) + 1

    def merge(self, other: Counter) -> None:
        """Add ``other``'s figures to these."""
        self.calls += other.calls
        self.retries += other.retries
        self.dedup_resends += other.dedup_resends
        self.hedges += other.hedges
        self.hedges_won += other.hedges_won
        self.total += other.total
        self.bytes_sent += other.bytes_sent
        self.bytes_received += other.bytes_received
        self.hist = [a + b for a, b in zip(self.hist, other.hist, strict=True)]
        for error, count in other.errors.items():
            self.errors[error] = self.errors.get(error, 0) + count

    def percentile(self, q: float) -> float | None:
        """Latency (s) below which a share ``q`` of calls fell (bucket upper bound)."""
        n = sum(self.hist)
        if not n:
            return None
        rank = q * n
        seen = 0
        for index, count in enumerate(self.hist):
            seen += count
            if count and seen >= rank:
                return _bucket_upper(index)
        return None

    def snapshot(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "errors": dict(self.errors),
            "error_count": sum(self.errors.values()),
            "retries": self.retries,
            "dedup_resends": self.dedup_resends,
            "hedges": self.hedges,
            "hedges_won": self.hedges_won,
            "total_time": self.total,
            "avg_latency": self.total / self.calls if self.calls else None,
            "p50": self.percentile(0.5),
            "p90": self.percentile(0.9),
            "p99": self.percentile(0.99),
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
        }


class Stats:
    """Per-method and per-host counters of one client (greenlet-safe: no switches).

    A call made in one attempt counts the same for its method and its host, so
    it is counted once, in the figures of its (method, host) pair (``pairs``);
    everything else (calls retried, attempts that failed before a retry) goes
    to ``methods`` and ``hosts`` apart. :meth:`snapshot` adds them up.
    """

    __slots__ = ("enabled", "hosts", "methods", "pairs")

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.methods: dict[str, Counter] = {}
        self.hosts: dict[str, Counter] = {}
        self.pairs: dict[str, dict[str, Counter]] = {}  # method -> host URL -> figures

    def pair(self, name: str, url: str) -> Counter:
        by_url = self.pairs.get(name)
        if by_url is None:
            by_url = self.pairs[name] = {}
        counter = by_url.get(url)
        if counter is None:
            counter = by_url[url] = Counter()
        return counter

    def method(self, name: str) -> Counter:
        counter = self.methods.get(name)
        if counter is None:
            counter = self.methods[name] = Counter()
        return counter

    def host(self, url: str) -> Counter:
        counter = self.hosts.get(url)
        if counter is None:
            counter = self.hosts[url] = Counter()
        return counter

    def record(  # noqa: PLR0917 - once per call, positional for speed
        self,
        name: str,
        url: str | None,
        elapsed: float,
        attempt_elapsed: float,
        error: str | None,
        sent: int,
        received: int,
        retries: int,
    ) -> None:
        """One finished call: its method's figures, and its last attempt's host's.

        Earlier (retried) attempts were counted on their hosts as they failed.
        ``url`` is None when the last attempt was counted already (or none
        began). A first attempt is timed from the call's start, so for most
        calls both figures are the same: one counter, that of the pair.
        """
        if url is not None and not retries and attempt_elapsed == elapsed:
            self.pair(name, url).add(elapsed, error, sent, received)
            return
        # retried, failed (its attempt counted already) or never begun: rarer
        counter = self.method(name)
        counter.add(elapsed, error, sent, received)
        counter.retries += retries
        if url is not None:
            self.host(url).add(attempt_elapsed, error, sent, received)

    def snapshot(self) -> dict[str, Any]:
        methods: dict[str, Counter] = {}
        hosts: dict[str, Counter] = {}
        for into, apart in ((methods, self.methods), (hosts, self.hosts)):
            for key, counter in apart.items():
                into[key] = Counter()
                into[key].merge(counter)
        for name, by_url in self.pairs.items():
            for url, counter in by_url.items():
                for into, key in ((methods, name), (hosts, url)):
                    if key not in into:
                        into[key] = Counter()
                    into[key].merge(counter)
        return {
            "methods": {k: v.snapshot() for k, v in methods.items()},
            "hosts": {k: v.snapshot() for k, v in hosts.items()},
        }

    def reset(self) -> None:
        self.methods.clear()
        self.hosts.clear()
        self.pairs.clear()


def report(snapshot: dict[str, Any], *, top: int | None = None) -> str:
    """A table of methods ranked by total time (``avg latency x calls``).

    ``snapshot`` is ``client.stats()`` or ``Stats.snapshot()``.
    """
    methods = snapshot.get("stats", snapshot).get("methods", {})
    rows = sorted(methods.items(), key=lambda kv: kv[1]["total_time"], reverse=True)
    if top is not None:
        rows = rows[:top]
    grand = sum(m["total_time"] for _, m in rows) or 1.0
    header = (
        f"{'method':<32} {'calls':>8} {'errors':>7} {'retries':>7} {'avg ms':>8} "
        f"{'p50 ms':>8} {'p99 ms':>8} {'total s':>9} {'share':>6}"
    )
    lines = [header, "-" * len(header)]

    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v * 1000:.2f}"

    for name, m in rows:
        lines.append(
            f"{name[:32]:<32} {m['calls']:>8} {m['error_count']:>7} {m['retries']:>7} "
            f"{ms(m['avg_latency']):>8} {ms(m['p50']):>8} {ms(m['p99']):>8} "
            f"{m['total_time']:>9.3f} {m['total_time'] / grand:>6.1%}"
        )
    return "\n".join(lines)


class CallEvent:
    """One call as hooks see it; mutable, one per call, reused across attempts
    (a hedged call's attempts, which run at once, each get a copy).

    Fields filled before the call: ``name``, ``request_id``, ``idempotent``,
    ``transport``. Per attempt: ``attempt``, ``endpoint`` (URL), ``headers``
    (extra request headers a ``before_attempt`` hook may append byte pairs
    to). After an attempt/the call: ``elapsed`` (s), ``error`` (the
    RPCError or None), ``status`` (HTTP status or None), ``result``,
    ``received`` (response body bytes of the call).
    ``scratch`` is a dict where hooks keep their own state (spans, timers).
    """

    __slots__ = (
        "attempt",
        "elapsed",
        "endpoint",
        "error",
        "headers",
        "idempotent",
        "name",
        "received",
        "request_id",
        "result",
        "scratch",
        "status",
        "transport",
    )

    def __init__(self, name: str, request_id: str, idempotent: bool, transport: str) -> None:
        self.name = name
        self.request_id = request_id
        self.idempotent = idempotent
        self.transport = transport
        self.attempt = 0
        self.endpoint = ""
        self.headers: list[tuple[bytes, bytes]] = []
        self.elapsed = 0.0
        self.error: BaseException | None = None
        self.status: int | None = None
        self.result: Any = None
        self.received = 0
        self.scratch: dict[str, Any] = {}

    @property
    def service(self) -> str:
        return self.name.partition(".")[0]

    @property
    def method(self) -> str:
        return self.name.partition(".")[2]


@mypyc_attr(allow_interpreted_subclasses=True)  # users subclass it
class Hook:
    """Base of call hooks: override any of the four methods (no-ops here)."""

    def before_call(self, event: CallEvent) -> None:
        """Before anything is sent."""

    def before_attempt(self, event: CallEvent) -> None:
        """Before each attempt; may append to ``event.headers``."""

    def after_attempt(self, event: CallEvent) -> None:
        """After each attempt, with ``elapsed``, ``error``/``status`` of that attempt."""

    def after_call(self, event: CallEvent) -> None:
        """After the call, with the call's total ``elapsed`` and final ``error``."""


class HookSet:
    """The hooks of one client, pre-sorted by phase so unused phases cost nothing."""

    __slots__ = ("after_attempt", "after_call", "before_attempt", "before_call")

    def __init__(self, hooks: Sequence[Any]) -> None:
        def bound(phase: str) -> tuple[Any, ...]:
            out = []
            for hook in hooks:
                fn = getattr(hook, phase, None)
                if fn is None or getattr(type(hook), phase, None) is getattr(Hook, phase):
                    continue
                out.append(fn)
            return tuple(out)

        self.before_call = bound("before_call")
        self.before_attempt = bound("before_attempt")
        self.after_attempt = bound("after_attempt")
        self.after_call = bound("after_call")

    def __bool__(self) -> bool:
        return bool(
            self.before_call or self.before_attempt or self.after_attempt or self.after_call
        )


def run_hooks(fns: Iterable[Any], event: CallEvent) -> None:
    for fn in fns:
        try:
            fn(event)
        except Exception:
            log.exception("rpcclient hook %r failed for %s", fn, event.name)


class RequestIds:
    """Cheap unique request ids: a random per-process prefix and a counter.

    Several times cheaper than uuid4 per call, and unique across processes:
    a forked child draws a new prefix (:mod:`rpcclient._fork`), so no
    ``getpid()`` per call.
    """

    __slots__ = ("_prefix", "next")

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._prefix = os.urandom(6).hex()
        # ``next()`` is a C iterator's __next__: formatting the count runs in
        # C, without a Python frame per id
        self.next = map(f"{self._prefix}-{{:x}}".format, itertools.count(1)).__next__


REQUEST_IDS = RequestIds()
_FORK_HOOK = on_fork_in_child(REQUEST_IDS.reset)  # kept: the registry holds hooks weakly
