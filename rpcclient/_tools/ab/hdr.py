"""Latency percentiles from an HDR histogram (HdrHistogram_py, ``pip install hdrhistogram``).

Why that library: it is HdrHistogram itself (Gil Tene's design, the one
wrk2, HdrHistogram tools and most load testers report with), maintained,
with a small C codec; its encoded form (compressed, base64) is the standard
HdrHistogram interchange format, so a histogram in our JSON opens in any
HdrHistogram tool, and the histograms of the repetitions add up exactly.

Values are recorded in whole microseconds, from 1 us to one hour, with 3
significant digits: every percentile is within 0.1% of the recorded value
(1 us below 2 ms). A latency outside that range is clamped to it and the
clamping is counted (``clamped``), never dropped.

The measuring loop does not record into the histogram while it is timed
(about 0.8 us of interpreted code per value would be billed to the arm's
CPU): it appends to an ``array('d')`` and :func:`from_seconds` builds the
histogram after the clock stopped.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = [
    "HIGHEST_US",
    "PERCENTILES",
    "SIGNIFICANT_DIGITS",
    "HdrMissing",
    "decode",
    "encode",
    "from_seconds",
    "merge",
    "new",
    "percentile_curve",
    "summary_ms",
]

LOWEST_US = 1
HIGHEST_US = 3_600_000_000
SIGNIFICANT_DIGITS = 3
#: (key, percentile) of the figures of a latency summary, besides "max"
PERCENTILES: tuple[tuple[str, float], ...] = (
    ("p50", 50.0),
    ("p90", 90.0),
    ("p99", 99.0),
    ("p99.9", 99.9),
    ("p99.99", 99.99),
)


class HdrMissing(ImportError):
    """hdrhistogram is not installed; the message says how to install it."""


def _library() -> Any:
    try:
        from hdrh.histogram import HdrHistogram
    except ImportError as exc:
        raise HdrMissing(
            f"rpcclient ab needs the hdrhistogram package ({exc}): pip install 'rpcclient[ab]'"
        ) from None
    return HdrHistogram


def new() -> Any:
    """An empty histogram: 1 us .. 1 h, 3 significant digits."""
    return _library()(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)


def from_seconds(latencies_s: Iterable[float]) -> tuple[Any, int]:
    """``(histogram, clamped)`` of latencies given in seconds."""
    hist = new()
    record = hist.record_value
    clamped = 0
    for seconds in latencies_s:
        us = round(seconds * 1e6)
        if us < LOWEST_US or us > HIGHEST_US:
            clamped += 1
            us = min(max(us, LOWEST_US), HIGHEST_US)
        record(us)
    return hist, clamped


def summary_ms(hist: Any) -> dict[str, float]:
    """p50 .. p99.99, max and mean in milliseconds (NaN for an empty histogram)."""
    if hist.get_total_count() == 0:
        return {**{key: float("nan") for key, _ in PERCENTILES}, "max": float("nan"),
                "mean": float("nan")}  # fmt: skip
    out = {key: hist.get_value_at_percentile(q) / 1000.0 for key, q in PERCENTILES}
    out["max"] = hist.get_max_value() / 1000.0
    out["mean"] = hist.get_mean_value() / 1000.0
    return out


def encode(hist: Any) -> str:
    """The standard HdrHistogram compressed base64 form."""
    data = hist.encode()
    return data.decode("ascii") if isinstance(data, bytes) else str(data)


def decode(text: str) -> Any:
    _library()
    from hdrh.histogram import HdrHistogram

    return HdrHistogram.decode(text)


def merge(encoded: Iterable[str]) -> Any:
    """One histogram holding every value of the encoded ones."""
    total = new()
    for text in encoded:
        total.add(decode(text))
    return total


def percentile_curve(hist: Any, points_per_decade: int = 20) -> tuple[list[float], list[float]]:
    """``(q, latency_ms)`` pairs for a percentile plot: q from 0 up to the last
    recorded value, spaced evenly in ``log10(1 / (1 - q))``, then the max."""
    count = hist.get_total_count()
    if count == 0:
        return [], []
    qs: list[float] = []
    values: list[float] = []
    step = 0
    while True:
        q = 1.0 - 10.0 ** (-step / points_per_decade)
        if q >= 1.0 - 1.0 / count:
            break
        qs.append(q)
        values.append(hist.get_value_at_percentile(q * 100.0) / 1000.0)
        step += 1
    qs.append(1.0 - 1.0 / count)  # the max, drawn where its rank puts it
    values.append(hist.get_max_value() / 1000.0)
    return qs, values
