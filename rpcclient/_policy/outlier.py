"""Outlier ejection by outcome: the policy value and its once-per-interval arithmetic.

After gRPC's A50 proposal, in our own terms. Every attempt adds one to its
host's ``ok`` or ``failed`` counter of the current interval (a failure: a
5xx answer, a timeout, a connection error; a 4xx is the server answering,
a PoolTimeout is our own queue). Once per ``interval`` (lazily, by the
first attempt to end after it) the counters are judged and reset:

- success rate: among the hosts with at least ``request_volume`` attempts
  (needing at least ``minimum_hosts`` of them), a host whose success rate
  is below ``mean - stdev_factor * stdev`` is ejected with probability
  ``enforcement_percentage``;
- failure percentage: among the same kind of hosts, one whose failure
  share is above ``threshold`` percent is ejected with probability
  ``enforcement_percentage``;
- latency: among the hosts with at least ``request_volume`` latency
  samples (needing at least ``minimum_hosts`` of them), a host whose
  median latency over the interval is above ``factor`` times the median of
  the other hosts' medians is ejected with probability
  ``enforcement_percentage``, the slowest first.

The first two see only errors: a host that answers, slowly, is never an
outlier by them. The latency rule compares a host with its peers, not with
a fixed bound, so a service that is slow everywhere (a slow method, a busy
database behind every host) ejects nobody. Its samples are the attempts the
host answered (a 4xx too) and those that timed out (their time is a lower
bound of the host's latency, so a host timing out counts as slow); a fast
failure (a refused connect, a 5xx, a lost connection) is no latency sample,
or a failing host would look fast. A median, not a mean or the balancer's
peak-EWMA: one stall (a collection pause, a scheduling hiccup of this
client) moves a mean and sets a peak, but leaves a median of dozens of
samples where it was.

An ejection never leaves more than ``max_ejection_percent`` of the hosts
out of service (connect-failure ejections count too) and never the last
host in service. A host's ``n``-th ejection in a row lasts
``base_ejection_time * n`` (at most ``max(base_ejection_time,
max_ejection_time)``); ``n`` falls by one per interval the host stays in
service. A rested host comes back through one probe call
(rpcclient._core.balance); one ejected for latency comes back only if that call
answers within ``factor`` times the median of its peers' medians, else it
rests again as its next ejection. This module is interpreted (it runs once per interval); the
per-attempt bookkeeping lives in the compiled rpcclient._core.balance.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

__all__ = [
    "FailurePercentage",
    "LatencyOutlier",
    "OutlierEjection",
    "SuccessRate",
    "judge",
    "median",
]


def _check_number(owner: str, name: str, value: object, *, positive: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise TypeError(f"{owner}.{name} must be a number, not {value!r}")
    if value < 0 or (positive and value == 0) or math.isinf(value):
        kind = "a positive finite number" if positive else "a finite number >= 0"
        raise ValueError(f"{owner}.{name} must be {kind}, not {value!r}")


def _check_int(owner: str, name: str, value: object, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{owner}.{name} must be an int, not {value!r}")
    if value < low or (high is not None and value > high):
        span = f">= {low}" if high is None else f"in {low}..{high}"
        raise ValueError(f"{owner}.{name} must be {span}, not {value!r}")


@dataclass(frozen=True)
class SuccessRate:
    """Eject a host whose success rate lies ``stdev_factor`` deviations below the mean."""

    stdev_factor: float = 1.9
    enforcement_percentage: int = 100
    minimum_hosts: int = 5
    request_volume: int = 100

    def __post_init__(self) -> None:
        _check_number("SuccessRate", "stdev_factor", self.stdev_factor)
        _check_int("SuccessRate", "enforcement_percentage", self.enforcement_percentage, 0, 100)
        _check_int("SuccessRate", "minimum_hosts", self.minimum_hosts, 2)
        _check_int("SuccessRate", "request_volume", self.request_volume, 1)


@dataclass(frozen=True)
class FailurePercentage:
    """Eject a host whose share of failed attempts is above ``threshold`` percent."""

    threshold: int = 50
    enforcement_percentage: int = 100
    minimum_hosts: int = 2
    request_volume: int = 20

    def __post_init__(self) -> None:
        _check_int("FailurePercentage", "threshold", self.threshold, 0, 100)
        _check_int(
            "FailurePercentage", "enforcement_percentage", self.enforcement_percentage, 0, 100
        )
        _check_int("FailurePercentage", "minimum_hosts", self.minimum_hosts, 2)
        _check_int("FailurePercentage", "request_volume", self.request_volume, 1)


@dataclass(frozen=True)
class LatencyOutlier:
    """Eject a host whose median latency is above ``factor`` times its peers'.

    ``factor`` > 1; ``request_volume``: latency samples a host needs in the
    interval to be judged (or to serve as a peer); ``minimum_hosts``: how
    many such hosts the rule needs (3: every host is then measured against
    the median of at least two others, never against a single peer).
    """

    factor: float = 3.0
    enforcement_percentage: int = 100
    minimum_hosts: int = 3
    request_volume: int = 20

    def __post_init__(self) -> None:
        _check_number("LatencyOutlier", "factor", self.factor, positive=True)
        if self.factor <= 1:
            # at 1 or below the rule would eject a host no slower than its peers
            raise ValueError(f"LatencyOutlier.factor must be above 1, not {self.factor!r}")
        _check_int("LatencyOutlier", "enforcement_percentage", self.enforcement_percentage, 0, 100)
        _check_int("LatencyOutlier", "minimum_hosts", self.minimum_hosts, 2)
        _check_int("LatencyOutlier", "request_volume", self.request_volume, 1)


@dataclass(frozen=True)
class OutlierEjection:
    """When hosts of a group are ejected by their outcomes (module docstring).

    ``success_rate`` / ``failure_percentage`` / ``latency``: the three
    rules, None to turn one off. Times are seconds.
    """

    interval: float = 10.0
    base_ejection_time: float = 30.0
    max_ejection_time: float = 300.0
    max_ejection_percent: int = 50
    success_rate: SuccessRate | None = field(default_factory=SuccessRate)
    failure_percentage: FailurePercentage | None = field(default_factory=FailurePercentage)
    latency: LatencyOutlier | None = field(default_factory=LatencyOutlier)

    def __post_init__(self) -> None:
        _check_number("OutlierEjection", "interval", self.interval, positive=True)
        _check_number(
            "OutlierEjection", "base_ejection_time", self.base_ejection_time, positive=True
        )
        _check_number("OutlierEjection", "max_ejection_time", self.max_ejection_time)
        _check_int("OutlierEjection", "max_ejection_percent", self.max_ejection_percent, 0, 100)
        if self.success_rate is not None and not isinstance(self.success_rate, SuccessRate):
            raise TypeError(
                f"OutlierEjection.success_rate must be a SuccessRate or None, "
                f"not {self.success_rate!r}"
            )
        if self.failure_percentage is not None and not isinstance(
            self.failure_percentage, FailurePercentage
        ):
            raise TypeError(
                f"OutlierEjection.failure_percentage must be a FailurePercentage or None, "
                f"not {self.failure_percentage!r}"
            )
        if self.latency is not None and not isinstance(self.latency, LatencyOutlier):
            raise TypeError(
                f"OutlierEjection.latency must be a LatencyOutlier or None, not {self.latency!r}"
            )

    def ejection_time(self, times: int) -> float:
        """How long the ``times``-th ejection in a row lasts."""
        longest = max(self.base_ejection_time, self.max_ejection_time)
        return min(self.base_ejection_time * times, longest)


def median(values: Sequence[float]) -> float:
    """The median of ``values`` (not empty): the middle one, or the mean of the two."""
    ordered = sorted(values)
    half = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[half]
    return (ordered[half - 1] + ordered[half]) / 2


def judge(
    policy: OutlierEjection,
    counts: Sequence[tuple[int, int, bool]],
    draw: Callable[[], float] = random.random,
    latencies: Sequence[tuple[int, float]] = (),
) -> list[tuple[int, str]]:
    """Which hosts to eject now, as ``(index, reason)``, in order.

    ``counts[i]`` is host ``i``'s ``(ok, failed, out_of_service)`` over the
    interval that ended; ``latencies[i]``, if given, its ``(samples,
    median seconds)`` over the same interval (empty: the latency rule has
    nothing to judge). Pure arithmetic (the caller ejects and resets);
    ``draw()`` in [0, 1) decides the enforcement percentages.
    """
    n = len(counts)
    out = sum(1 for _, _, o in counts if o)
    cap = policy.max_ejection_percent * n  # out * 100 may not exceed this
    chosen: list[tuple[int, str]] = []
    taken: set[int] = set()

    def room() -> bool:
        # never past the cap, never the last host in service
        return (out + 1) * 100 <= cap and out + 1 < n

    rate = policy.success_rate
    if rate is not None:
        volume = [
            (i, ok / (ok + failed))
            for i, (ok, failed, o) in enumerate(counts)
            if not o and ok + failed >= rate.request_volume
        ]
        if len(volume) >= rate.minimum_hosts:
            rates = [r for _, r in volume]
            mean = sum(rates) / len(rates)
            stdev = math.sqrt(sum((r - mean) ** 2 for r in rates) / len(rates))
            floor = mean - rate.stdev_factor * stdev
            for i, r in volume:
                if r < floor and room() and draw() * 100 < rate.enforcement_percentage:
                    chosen.append((i, "success_rate"))
                    taken.add(i)
                    out += 1
    share = policy.failure_percentage
    if share is not None:
        volume = [
            (i, failed * 100 / (ok + failed))
            for i, (ok, failed, o) in enumerate(counts)
            if not o and i not in taken and ok + failed >= share.request_volume
        ]
        # the minimum counts hosts with enough volume, those just ejected included
        enough = len(volume) + sum(
            1 for i in taken if counts[i][0] + counts[i][1] >= share.request_volume
        )
        if enough >= share.minimum_hosts:
            for i, pct in sorted(volume, key=lambda v: -v[1]):  # the worst first
                if pct > share.threshold and room() and draw() * 100 < share.enforcement_percentage:
                    chosen.append((i, "failure_percentage"))
                    taken.add(i)
                    out += 1
    slow = policy.latency
    if slow is not None and latencies:
        # hosts just ejected by the rules above still serve as peers: they were
        # in service through the interval, so their medians describe it
        peers = [
            (i, m)
            for i, (samples, m) in enumerate(latencies)
            if not counts[i][2] and samples >= slow.request_volume
        ]
        if len(peers) >= slow.minimum_hosts:
            over: list[tuple[float, int]] = []
            for i, m in peers:
                if i in taken:
                    continue
                others = median([p for j, p in peers if j != i])
                if m > slow.factor * others:
                    over.append((m / others if others > 0 else math.inf, i))
            for _, i in sorted(over, key=lambda v: -v[0]):  # the slowest (by ratio) first
                if room() and draw() * 100 < slow.enforcement_percentage:
                    chosen.append((i, "latency"))
                    out += 1
    return chosen
