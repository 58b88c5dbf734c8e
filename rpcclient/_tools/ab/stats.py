"""The verdict of an A/B: is B's figure really different from A's, and by how much.

Pure functions, no I/O. One value per repetition and arm goes in (the
calls/s of each run, its p99, ...); per metric comes out:

- **the test**: a two-sided exact Mann-Whitney U (Wilcoxon rank-sum) test,
  as benchstat uses. Ties get midranks and the p-value comes from the
  exact permutation distribution of the rank sum *given those ties* (every
  way of splitting the pooled values into the two arms, counted by a
  generating function), so it stays exact where our figures tie (segments
  per call are 1.00 in every run of both arms). scipy's ``method="exact"``
  ignores ties and its ``"auto"`` switches to the normal approximation when
  there are any; without ties the two agree (see tests/unit/test_ab_stats.py).
- **the interval**: the Hodges-Lehmann estimate of the B/A ratio (the
  median of every pairwise ``log(b) - log(a)``, exponentiated) with its
  distribution-free confidence interval (order statistics of those
  differences, cut where the no-ties null distribution of U puts
  ``alpha/2``). Without ties the interval excludes 1.0 exactly when the
  test rejects at the same ``alpha``, so the two never contradict.

The exact distribution makes small samples honest: with n repetitions per
arm no split is rarer than one in ``C(2n, n)``, so the smallest two-sided
p-value is ``2 / C(2n, n)``: 0.0079 for 5 vs 5, 0.1 for 3 vs 3 (no verdict
is possible at 5%). :func:`smallest_p` says it; the table prints it.

Why not scipy: with at most :data:`MAX_PER_ARM` values per arm the exact
counts take milliseconds here, the answer is identical on every install,
and scipy (over 150 MB with numpy) is not pulled in for ~100 lines.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "MAX_PER_ARM",
    "MannWhitney",
    "Verdict",
    "mann_whitney",
    "midranks",
    "shift_interval",
    "smallest_p",
    "verdict",
]

#: the exact counts grow as ``C(2n, n)``; 50 per arm still takes well under a second
MAX_PER_ARM = 50


def midranks(values: Sequence[float]) -> list[float]:
    """Ranks from 1 in the order of ``values``; tied values share their mean rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        rank = (start + end) / 2.0 + 1.0
        for k in range(start, end + 1):
            ranks[order[k]] = rank
        start = end + 1
    return ranks


def _sum_counts(doubled_ranks: Sequence[int], n: int) -> list[int]:
    """``counts[s]``: how many n-element subsets of the items have doubled-rank sum ``s``.

    A generating function in one big integer per subset size: coefficient
    ``s`` lives in a fixed-width bit field, wide enough that no count (at
    most ``C(N, n)``) carries into the next, so adding a shifted copy adds
    polynomials at C speed.
    """
    width = (math.comb(len(doubled_ranks), n).bit_length() + 8) // 8 * 8
    ways = [0] * (n + 1)
    ways[0] = 1
    for i, rank in enumerate(doubled_ranks):
        shift = rank * width
        for size in range(min(i + 1, n), 0, -1):
            ways[size] += ways[size - 1] << shift
    step = width // 8
    raw = ways[n].to_bytes((ways[n].bit_length() + 7) // 8 + step, "little")
    return [
        int.from_bytes(raw[i : i + step], "little") for i in range(0, len(raw) - step + 1, step)
    ]


@dataclass(frozen=True)
class MannWhitney:
    """``u_b``: pairs (a, b) with b > a, ties counted 1/2; ``p``: two-sided exact p-value."""

    u_b: float
    p: float


def _check(a: Sequence[float], b: Sequence[float]) -> None:
    if not a or not b:
        raise ValueError("both samples need at least one value")
    if len(a) > MAX_PER_ARM or len(b) > MAX_PER_ARM:
        raise ValueError(f"at most {MAX_PER_ARM} values per sample")
    if any(math.isnan(v) for v in (*a, *b)):
        raise ValueError("NaN in a sample")


def mann_whitney(a: Sequence[float], b: Sequence[float]) -> MannWhitney:
    """Two-sided exact Mann-Whitney U test of A against B (ties: exact, conditional).

    ``p = min(1, 2 * min(P(W <= w), P(W >= w)))`` where W is B's rank sum over
    every equally likely split of the pooled values. Raises ValueError for an
    empty sample, a NaN or more than :data:`MAX_PER_ARM` values.
    """
    _check(a, b)
    pooled = [*a, *b]
    doubled = [round(2 * r) for r in midranks(pooled)]
    n = len(b)
    observed = sum(doubled[len(a) :])
    counts = _sum_counts(doubled, n)
    total = math.comb(len(pooled), n)
    at_most = sum(counts[: observed + 1])
    at_least = sum(counts[observed:])
    p = min(1.0, 2.0 * min(at_most, at_least) / total)
    return MannWhitney(observed / 2.0 - n * (n + 1) / 2.0, p)


def smallest_p(n_a: int, n_b: int) -> float:
    """The smallest two-sided exact p-value ``n_a`` vs ``n_b`` values can give."""
    return min(1.0, 2.0 / math.comb(n_a + n_b, n_b))


def _null_u_cdf(n_a: int, n_b: int) -> list[float]:
    """``cdf[u] = P(U <= u)`` under the null, no ties, ``u = 0 .. n_a * n_b``."""
    counts = _sum_counts([2 * (i + 1) for i in range(n_a + n_b)], n_b)
    lowest = n_b * (n_b + 1)  # doubled rank sum of the n_b smallest ranks: U = 0
    total = math.comb(n_a + n_b, n_b)
    cdf: list[float] = []
    running = 0
    for u in range(n_a * n_b + 1):
        running += counts[lowest + 2 * u]
        cdf.append(running / total)
    return cdf


def shift_interval(
    a: Sequence[float], b: Sequence[float], alpha: float
) -> tuple[float, float | None, float | None, float | None]:
    """Hodges-Lehmann shift of B over A with its distribution-free interval.

    Returns ``(estimate, low, high, level)``: the median of every ``b - a``,
    and ``[d_(k), d_(N+1-k)]`` of the sorted ``N = n_a * n_b`` differences
    for the largest ``k`` whose level ``1 - 2 P(U <= k-1)`` is at least
    ``1 - alpha`` (``level`` is that achieved level). ``low``, ``high`` and
    ``level`` are None when even ``k = 1`` falls short (too few values).
    Pass logarithms to get a ratio interval.
    """
    _check(a, b)
    if not 0.0 < alpha < 1.0:
        raise ValueError("alpha must be between 0 and 1")
    diffs = sorted(y - x for x in a for y in b)
    estimate = statistics.median(diffs)
    cdf = _null_u_cdf(len(a), len(b))
    k = 0
    while k < len(cdf) and 2.0 * cdf[k] <= alpha:
        k += 1
    if k == 0:
        return estimate, None, None, None
    return estimate, diffs[k - 1], diffs[len(diffs) - k], 1.0 - 2.0 * cdf[k - 1]


@dataclass(frozen=True)
class Verdict:
    """B against A on one metric, over the repetitions.

    ``verdict`` is ``"better"``, ``"worse"``, ``"no difference"`` or
    ``"n/a"`` (a value missing, or too few repetitions for any p-value to
    reach ``alpha``). ``ratio`` and ``ci_low``/``ci_high`` are B/A
    (Hodges-Lehmann, :func:`shift_interval` on logarithms) and None where a
    value is not positive.
    """

    verdict: str
    p: float | None
    ratio: float | None
    ci_low: float | None
    ci_high: float | None
    ci_level: float | None

    def as_dict(self) -> dict[str, float | str | None]:
        return {
            "verdict": self.verdict,
            "p_value": self.p,
            "ratio_hodges_lehmann": self.ratio,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "ci_level": self.ci_level,
        }


def verdict(
    a: Sequence[float | None], b: Sequence[float | None], *, higher_is_better: bool, alpha: float
) -> Verdict:
    """Compare B's values of one metric with A's (one value per repetition)."""
    if not a or not b or any(v is None or math.isnan(v) for v in (*a, *b)):
        return Verdict("n/a", None, None, None, None, None)
    xs = [float(v) for v in a if v is not None]
    ys = [float(v) for v in b if v is not None]
    test = mann_whitney(xs, ys)
    ratio = low = high = level = None
    shift = statistics.median(ys) - statistics.median(xs)
    if min(*xs, *ys) > 0:
        est, lo, hi, level = shift_interval(
            [math.log(v) for v in xs], [math.log(v) for v in ys], alpha
        )
        ratio = math.exp(est)
        low = None if lo is None else math.exp(lo)
        high = None if hi is None else math.exp(hi)
        shift = est if est != 0 else shift
    if smallest_p(len(xs), len(ys)) > alpha:
        word = "n/a"
    elif test.p > alpha or shift == 0:
        word = "no difference"
    else:
        word = "better" if (shift > 0) == higher_is_better else "worse"
    return Verdict(word, test.p, ratio, low, high, level)
