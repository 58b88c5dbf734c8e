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
  ``enforcement_percentage``.

An ejection never leaves more than ``max_ejection_percent`` of the hosts
out of service (connect-failure ejections count too) and never the last
host in service. A host's ``n``-th ejection in a row lasts
``base_ejection_time * n`` (at most ``max(base_ejection_time,
max_ejection_time)``); ``n`` falls by one per interval the host stays in
service. This module is interpreted (it runs once per interval); the
per-attempt bookkeeping lives in the compiled rpcclient._balance.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

__all__ = ["FailurePercentage", "OutlierEjection", "SuccessRate", "judge"]


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
class OutlierEjection:
    """When hosts of a group are ejected by their outcomes (module docstring).

    ``success_rate`` / ``failure_percentage``: the two rules, None to turn
    one off. Times are seconds.
    """

    interval: float = 10.0
    base_ejection_time: float = 30.0
    max_ejection_time: float = 300.0
    max_ejection_percent: int = 50
    success_rate: SuccessRate | None = field(default_factory=SuccessRate)
    failure_percentage: FailurePercentage | None = field(default_factory=FailurePercentage)

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

    def ejection_time(self, times: int) -> float:
        """How long the ``times``-th ejection in a row lasts."""
        longest = max(self.base_ejection_time, self.max_ejection_time)
        return min(self.base_ejection_time * times, longest)


def judge(
    policy: OutlierEjection,
    counts: Sequence[tuple[int, int, bool]],
    draw: Callable[[], float] = random.random,
) -> list[tuple[int, str]]:
    """Which hosts to eject now, as ``(index, reason)``, in order.

    ``counts[i]`` is host ``i``'s ``(ok, failed, out_of_service)`` over the
    interval that ended. Pure arithmetic (the caller ejects and resets);
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
                    out += 1
    return chosen
