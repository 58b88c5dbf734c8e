"""rpcclient._tools.ab.stats: the Mann-Whitney test and the B/A interval, pure units.

Oracles: the exact test is defined as "every split of the pooled values into
the two arms is equally likely", so brute-force enumeration of those splits
(itertools.combinations) is an independent exact reference, ties included;
and a few p-values printed by scipy 1.17.1 (``scipy.stats.mannwhitneyu(b, a,
method="exact")`` without ties, ``method=PermutationMethod()`` with ties),
which our implementation matched to 1e-16 on 300 random samples.
"""

from __future__ import annotations

import itertools
import math
import random

import pytest

from rpcclient._tools.ab import stats


def brute_force_p(a: list[float], b: list[float]) -> float:
    pooled = a + b
    ranks = stats.midranks(pooled)
    observed = sum(ranks[len(a) :])
    sums = [
        sum(ranks[i] for i in pick) for pick in itertools.combinations(range(len(pooled)), len(b))
    ]
    low = sum(1 for s in sums if s <= observed + 1e-9)
    high = sum(1 for s in sums if s >= observed - 1e-9)
    return min(1.0, 2.0 * min(low, high) / len(sums))


def test_midranks_share_ties() -> None:
    assert stats.midranks([3.0, 1.0, 3.0, 2.0]) == [3.5, 1.0, 3.5, 2.0]
    assert stats.midranks([5.0, 5.0, 5.0]) == [2.0, 2.0, 2.0]


def test_complete_separation_5_vs_5_is_the_smallest_p() -> None:
    result = stats.mann_whitney([1, 2, 3, 4, 5], [6, 7, 8, 9, 10])
    assert result.u_b == 25.0
    assert result.p == pytest.approx(2 / 252)
    assert stats.smallest_p(5, 5) == pytest.approx(0.0079, abs=1e-4)
    assert stats.smallest_p(3, 3) == pytest.approx(0.1)
    # the other direction is as rare
    assert stats.mann_whitney([6, 7, 8, 9, 10], [1, 2, 3, 4, 5]).p == pytest.approx(2 / 252)


@pytest.mark.parametrize(
    ("a", "b", "u_b", "p"),
    [
        # scipy 1.17.1: mannwhitneyu(b, a, alternative="two-sided", method="exact")
        ([1.1, 2.3, 3.2, 4.8, 5.5], [2.0, 3.9, 6.1, 7.4, 8.8], 19.0, 0.2222222222222222),
        ([10.0, 12.0, 13.5, 9.0], [11.0, 14.0, 15.0, 16.0, 17.0, 18.0], 22.0, 0.0380952380952381),
        ([0.3, 0.1, 0.2], [0.25, 0.05, 0.35], 5.0, 1.0),
        # with ties: method=PermutationMethod() (exact: every split enumerated)
        ([1.0, 1.0, 2.0, 3.0], [2.0, 3.0, 3.0, 4.0], 13.5, 0.2),
    ],
)
def test_known_values(a: list[float], b: list[float], u_b: float, p: float) -> None:
    result = stats.mann_whitney(a, b)
    assert result.u_b == u_b
    assert result.p == pytest.approx(p, rel=1e-12)


def test_exact_distribution_matches_enumeration_with_and_without_ties() -> None:
    rng = random.Random(16)
    for _ in range(60):
        n, m = rng.randint(1, 6), rng.randint(1, 6)
        pool = [1.0, 2.0, 3.0] if rng.random() < 0.5 else None
        a = [rng.choice(pool) if pool else rng.random() for _ in range(n)]
        b = [rng.choice(pool) if pool else rng.random() + 0.2 for _ in range(m)]
        assert stats.mann_whitney(a, b).p == pytest.approx(brute_force_p(a, b), abs=1e-12)


def test_all_tied_is_no_difference() -> None:
    v = stats.verdict([1.0] * 5, [1.0] * 5, higher_is_better=False, alpha=0.05)
    assert v.verdict == "no difference" and v.p == 1.0
    assert v.ratio == 1.0 and v.ci_low == 1.0 and v.ci_high == 1.0


def test_interval_order_statistics_and_level() -> None:
    # 5 vs 5 at alpha 0.05: k = 3 (2 * P(U <= 2) = 8/252 <= 0.05 < 2 * P(U <= 3) = 14/252)
    a = [0.0, 1.0, 2.0, 3.0, 4.0]
    b = [10.0, 11.0, 12.0, 13.0, 14.0]
    est, low, high, level = stats.shift_interval(a, b, 0.05)
    diffs = sorted(y - x for x in a for y in b)
    assert est == 10.0
    assert (low, high) == (diffs[2], diffs[-3])
    assert level == pytest.approx(1 - 8 / 252)
    # 3 vs 3 cannot reach 95%: no interval
    assert stats.shift_interval([1.0, 2.0, 3.0], [4.0, 5.0, 6.0], 0.05)[1:] == (None, None, None)


def test_interval_excludes_one_exactly_when_the_test_rejects() -> None:
    rng = random.Random(7)
    for _ in range(200):
        a = [math.exp(rng.gauss(0, 0.2)) for _ in range(5)]
        b = [math.exp(rng.gauss(rng.choice([0, 0.3]), 0.2)) for _ in range(5)]
        v = stats.verdict(a, b, higher_is_better=True, alpha=0.05)
        assert v.ci_low is not None and v.ci_high is not None and v.p is not None
        excludes = v.ci_low > 1.0 or v.ci_high < 1.0
        assert excludes == (v.p <= 0.05), (a, b, v)
        assert v.ci_low <= v.ratio <= v.ci_high  # type: ignore[operator]


def test_verdict_direction_follows_the_metric() -> None:
    slow = [1.3, 1.31, 1.32, 1.33, 1.34]
    fast = [1.0, 1.01, 1.02, 1.03, 1.04]
    assert stats.verdict(fast, slow, higher_is_better=False, alpha=0.05).verdict == "worse"
    assert stats.verdict(fast, slow, higher_is_better=True, alpha=0.05).verdict == "better"
    assert stats.verdict(slow, fast, higher_is_better=False, alpha=0.05).verdict == "better"
    v = stats.verdict(fast, slow, higher_is_better=False, alpha=0.05)
    assert v.ratio == pytest.approx(1.3, rel=0.02)
    assert v.ci_low is not None and v.ci_low > 1.2


def test_too_few_or_missing_values_give_no_verdict() -> None:
    assert stats.verdict([1, 2, 3], [7, 8, 9], higher_is_better=True, alpha=0.05).verdict == "n/a"
    assert stats.verdict([1, None], [2, 3], higher_is_better=True, alpha=0.05).verdict == "n/a"
    # values that are not all positive: a test, but no ratio
    v = stats.verdict([0, 1, 2, 3, 4], [5, 6, 7, 8, 9], higher_is_better=True, alpha=0.05)
    assert v.verdict == "better" and v.ratio is None


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        stats.mann_whitney([], [1.0])
    with pytest.raises(ValueError, match="NaN"):
        stats.mann_whitney([math.nan], [1.0])
    with pytest.raises(ValueError, match="at most"):
        stats.mann_whitney([1.0] * (stats.MAX_PER_ARM + 1), [1.0])


def test_largest_samples_stay_exact_and_fast_enough() -> None:
    rng = random.Random(3)
    a = [rng.random() for _ in range(stats.MAX_PER_ARM)]
    b = [v + 0.5 for v in a]
    result = stats.mann_whitney(a, b)
    assert 0 < result.p < 1e-6  # a real, tiny exact p-value: no float underflow to 0 or overflow
