"""``--plot``: one PNG that tells the A/B without the table.

Left: the latency distribution of each arm (every run together, from its
HDR histogram) as HdrHistogram tools draw it: percentile on a log scale of
``1 / (1 - q)`` (so 90%, 99%, 99.9% ... are evenly spaced and the tail is
visible), latency on a log scale. Right: calls/s of every repetition of
each arm in run order, with each arm's median, and the verdict. matplotlib
(the ``bench`` extra) is imported on use; :func:`require` fails early.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import hdr

__all__ = ["PlotUnavailable", "plot", "require"]

_COLORS = {"A": "tab:blue", "B": "tab:orange"}


class PlotUnavailable(ImportError):
    """matplotlib is missing; the message says how to install it."""


def require() -> None:
    """Raise :class:`PlotUnavailable` unless matplotlib can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise PlotUnavailable("--plot needs matplotlib: pip install 'rpcclient[bench]'") from None


def _verdict_line(result: Mapping[str, Any], key: str, label: str) -> str:
    v = result["verdicts"][key]
    if v["p_value"] is None:
        return f"{label}: n/a"
    ratio = result["ratios_b_over_a"][key]
    ci = (
        f" [{v['ci_low']:.2f}, {v['ci_high']:.2f}]"
        if v["ci_low"] is not None and v["ci_high"] is not None
        else ""
    )
    return f"{label} B/A {ratio:.2f}x{ci}: {v['verdict']} (p={v['p_value']:.3f})"


def plot(result: Mapping[str, Any], path: str) -> None:
    """Write the plot of a :func:`.compare.compare` result to ``path`` (PNG)."""
    require()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullLocator

    cfg = result["config"]
    arms = result["arms"]
    fig, (dist, reps) = plt.subplots(1, 2, figsize=(13, 5.2), gridspec_kw={"width_ratios": [3, 2]})
    longest = 1.0
    for key in ("A", "B"):
        hist = hdr.decode(arms[key]["all_runs"]["hdr"])
        qs, values = hdr.percentile_curve(hist)
        xs = [1.0 / (1.0 - q) for q in qs]
        longest = max(longest, xs[-1] if xs else 1.0)
        lat = arms[key]["all_runs"]["latency_ms"]
        dist.plot(
            xs, values, color=_COLORS[key], linewidth=2,
            label=f"{key}: {arms[key]['spec']}  (p50 {lat['p50']:.2f}, p99 {lat['p99']:.2f}, "
            f"p99.9 {lat['p99.9']:.2f}, max {lat['max']:.1f} ms)",
        )  # fmt: skip
    dist.set_xscale("log")
    dist.set_yscale("log")
    ticks = [t for t in (1, 2, 10, 100, 1000, 10_000, 100_000, 1_000_000) if t <= longest * 1.01]
    names = {1: "0%", 2: "50%", 10: "90%", 100: "99%", 1000: "99.9%", 10_000: "99.99%",
             100_000: "99.999%", 1_000_000: "99.9999%"}  # fmt: skip
    dist.xaxis.set_major_locator(FixedLocator(ticks))
    dist.xaxis.set_minor_locator(NullLocator())
    dist.set_xticklabels([names[t] for t in ticks])
    dist.set_xlim(1, longest * 1.05)
    plain = FuncFormatter(lambda v, _pos: f"{v:g}")
    dist.yaxis.set_major_formatter(plain)
    dist.yaxis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
    dist.yaxis.set_minor_formatter(plain)
    dist.set_xlabel("percentile (log scale of 1/(1-q))")
    dist.set_ylabel("latency ms (log scale)")
    dist.grid(True, which="major", alpha=0.3)
    dist.legend(loc="upper left", fontsize="small")
    dist.set_title(
        "latency distribution, all runs"
        + (" (from each call's due time)" if cfg.get("rate") else "")
    )

    for key in ("A", "B"):
        values = [r["calls_per_s"] for r in arms[key]["runs"]]
        xs = list(range(1, len(values) + 1))
        reps.plot(xs, values, "o-", color=_COLORS[key], label=f"{key}: {arms[key]['spec']}")
        median = arms[key]["summary"]["calls_per_s"]
        if median is not None:
            reps.axhline(median["median"], color=_COLORS[key], linestyle="--", alpha=0.6)
    if cfg.get("rate"):
        reps.axhline(cfg["rate"], color="gray", linestyle=":", label=f"asked {cfg['rate']:,g}/s")
    reps.set_xlabel("repetition")
    reps.set_ylabel("calls/s (dashed: median)")
    reps.set_ylim(bottom=0)
    reps.set_xticks(range(1, max(len(arms["A"]["runs"]), len(arms["B"]["runs"])) + 1))
    reps.grid(True, alpha=0.3)
    reps.legend(loc="lower right", fontsize="small")
    st = result["statistics"]
    reps.set_title(_verdict_line(result, "calls_per_s", "calls/s"), fontsize="medium")

    mode = (
        f"open loop {cfg['rate']:,g} calls/s, <= {cfg['concurrency']} in flight"
        if cfg.get("rate")
        else f"closed loop, concurrency {cfg['concurrency']}"
    )
    amount = f"{cfg['duration_s']:g} s" if cfg.get("duration_s") else f"{cfg['calls']} calls"
    fig.suptitle(
        f"rpcclient ab: {cfg['method']}, {st['repetitions'][0]} x {amount} per arm, {mode}",
        fontsize="large",
    )
    notes = "   ".join(
        _verdict_line(result, key, label)
        for key, label in (("p50", "p50"), ("p99", "p99"), ("cpu_ms_per_1000", "CPU/call"))
    )
    fig.text(
        0.5, 0.01,
        f"{notes}\nexact Mann-Whitney U over {st['repetitions'][0]} vs {st['repetitions'][1]} "
        f"runs at alpha {st['alpha']:g} (smallest possible p {st['smallest_possible_p']:.4f}); "
        "[interval]: Hodges-Lehmann B/A",
        ha="center", fontsize="small",
    )  # fmt: skip
    fig.tight_layout(rect=(0, 0.06, 1, 0.95))
    fig.savefig(path, dpi=100)
    plt.close(fig)
