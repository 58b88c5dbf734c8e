"""The comparison: repetitions of both arms, their summary, the verdicts, the table.

Repetitions are interleaved in ABBA order (A B, B A, A B, ...): a noisy
neighbour or a slow drift hits both arms alike, and neither arm always
runs first (which would bias it by whatever the previous run leaves
behind: a warm server, a busy core). Each figure's median over the
repetitions and its spread (min-max) go in the table; the B/A column is
the ratio of the medians; the verdict and its interval come from
:mod:`.stats` over the per-repetition values.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from . import hdr, stats
from .arms import (
    ECHO,
    PATCHED_TRANSPORTS,
    ArmFailed,
    ArmSpec,
    pin_cpus,
    run_arm_process,
    start_server,
)
from .counters import fetch_tcp_totals

__all__ = ["MAX_CALLS", "MAX_DURATION_S", "ROWS", "BadSettings", "compare", "format_table"]

#: the bounds of one run: calls (or rate x duration) and seconds
MAX_CALLS = 1_000_000
MAX_DURATION_S = 600.0
#: a run below this share of the asked rate "did not keep the rate"
RATE_KEPT = 0.95

#: (key, label, higher is better, format) of each row of the table
ROWS: list[tuple[str, str, bool, str]] = [
    ("calls_per_s", "calls/s", True, "{:,.0f}"),
    ("p50", "latency p50 ms", False, "{:.3f}"),
    ("p90", "latency p90 ms", False, "{:.3f}"),
    ("p99", "latency p99 ms", False, "{:.3f}"),
    ("p99.9", "latency p99.9 ms", False, "{:.3f}"),
    ("p99.99", "latency p99.99 ms", False, "{:.3f}"),
    ("max", "latency max ms", False, "{:.2f}"),
    ("cpu_ms_per_1000", "client CPU ms/1000 calls", False, "{:.1f}"),
    ("request_bytes_per_call", "request bytes/call", False, "{:.1f}"),
    ("segments_per_call", "client->server segs/call", False, "{:.2f}"),
]


class BadSettings(ArmFailed):
    """A setting out of its bounds; raised before anything is sent."""


def _flat(run: Mapping[str, Any]) -> dict[str, float | None]:
    flat: dict[str, float | None] = {key: run.get(key) for key, *_ in ROWS}
    flat.update({k: v for k, v in run["latency_ms"].items() if k in flat})
    return flat


def _summary(runs: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float] | None]:
    """Per metric: median, min and max over the runs (None when not measured)."""
    out: dict[str, dict[str, float] | None] = {}
    flats = [_flat(r) for r in runs]
    for key, *_ in ROWS:
        values = [f[key] for f in flats]
        clean = [float(v) for v in values if v is not None and not math.isnan(v)]
        out[key] = (
            {"median": statistics.median(clean), "min": min(clean), "max": max(clean)}
            if clean and len(clean) == len(values)
            else None
        )
    return out


def _check_bounds(  # noqa: PLR0917 - private, one call site
    calls: int, duration: float | None, rate: float | None, concurrency: int, repeat: int,
    pool_size: int, body_size: int, alpha: float,
) -> None:  # fmt: skip
    if calls < 1 or concurrency < 1 or repeat < 1 or pool_size < 1 or body_size < 0:
        raise BadSettings("calls, concurrency, repeat and pool size must be >= 1, body size >= 0")
    if repeat > stats.MAX_PER_ARM:
        raise BadSettings(f"at most {stats.MAX_PER_ARM} repetitions")
    if not 0.0 < alpha < 0.5:
        raise BadSettings("alpha must be between 0 and 0.5")
    if duration is not None and not 0 < duration <= MAX_DURATION_S:
        raise BadSettings(f"duration must be in (0, {MAX_DURATION_S:.0f}] seconds")
    if rate is not None:
        if not (rate > 0 and math.isfinite(rate)):
            raise BadSettings("rate must be a positive number of calls/s")
        planned = rate * duration if duration is not None else float(calls)
        seconds = planned / rate
        if planned > MAX_CALLS or seconds > MAX_DURATION_S:
            raise BadSettings(
                f"a run is bounded to {MAX_CALLS:,} calls and {MAX_DURATION_S:.0f} s "
                f"({planned:,.0f} calls over {seconds:,.0f} s asked)"
            )
    elif calls > MAX_CALLS:
        raise BadSettings(f"at most {MAX_CALLS:,} calls per run")


def _arm_timeout(calls: int, duration: float | None, rate: float | None) -> float:
    """Seconds an arm process may take before it is killed and the arm fails."""
    if rate is not None:
        span = (rate * duration if duration else calls) / rate
        return 60.0 + span + max(1.0, 0.5 * span)
    return 60.0 + (duration if duration is not None else calls / 50.0)


def compare(
    a: ArmSpec,
    b: ArmSpec,
    *,
    calls: int = 3000,
    concurrency: int = 10,
    pool_size: int = 10,
    body_size: int = 100,
    repeat: int = 5,
    url: str | None = None,
    progress: Callable[[str], None] | None = None,
    rate: float | None = None,
    duration: float | None = None,
    alpha: float = 0.05,
    method: str | None = None,
    args: Any = None,
) -> dict[str, Any]:
    """Run A and B interleaved (ABBA) ``repeat`` times; the result document (``--json``).

    Closed loop by default; open loop at ``rate`` calls/s per arm
    (:mod:`.load`). Each run is ``calls`` calls, or ``duration`` seconds.
    The workload is ``method`` with ``args`` (a JSON value), by default
    ``echo.echo`` of ``body_size`` bytes. Without ``url``, the bundled
    server is started for the run in its own process. Raises
    :class:`ArmFailed` for out-of-bounds settings (before anything is sent)
    and when an arm cannot be built or fails.
    """
    _check_bounds(calls, duration, rate, concurrency, repeat, pool_size, body_size, alpha)
    for spec in (a, b):
        spec.check(pool_size)
    say = progress or (lambda _text: None)
    client_cpu, server_cpu = pin_cpus()
    warmup = min(200, max(10, calls // 10))
    runs: dict[str, list[dict[str, Any]]] = {"A": [], "B": []}
    started = time.monotonic()
    workload = method or ECHO
    arm_timeout = _arm_timeout(calls, duration, rate)

    def measure_all(target: str, counters: bool) -> None:
        for rep in range(repeat):
            order = (("A", a), ("B", b)) if rep % 2 == 0 else (("B", b), ("A", a))
            for key, spec in order:
                config = {
                    "label": f"{key}: {spec.text}",
                    "url": target,
                    "transport": spec.transport,
                    "options": spec.client_options(pool_size),
                    "patch": spec.transport in PATCHED_TRANSPORTS,
                    "calls": calls,
                    "duration": duration,
                    "rate": rate,
                    "concurrency": concurrency,
                    "warmup": warmup,
                    "body_size": body_size,
                    "method": workload,
                    "args": args,
                    "delay_s": spec.delay_s,
                    "counters": counters,
                    "cpu": client_cpu,
                }
                result = run_arm_process(config, timeout=arm_timeout)
                runs[key].append(result)
                say(
                    f"rpcclient ab: rep {rep + 1}/{repeat} {key} ({spec.text}): "
                    f"{result['calls_per_s']:,.0f} calls/s, p50 "
                    f"{result['latency_ms']['p50']:.3f} ms, p99 "
                    f"{result['latency_ms']['p99']:.3f} ms"
                    + (f", {result['errors']} errors" if result["errors"] else "")
                    + (f", {result['dropped']} dropped" if result.get("dropped") else "")
                )

    if url is None:
        with start_server(server_cpu) as server:
            target = server.url
            say(f"rpcclient ab: bundled server at {target} (pid {server.process.pid})")
            measure_all(target, True)
        bundled = True
        counters = True
    else:
        target = url
        bundled = False
        counters = fetch_tcp_totals(url) is not None
        measure_all(target, counters)
    return _document(
        a, b, runs, target=target, bundled=bundled, counters=counters, started=started,
        config={
            "mode": "closed" if rate is None else "open",
            "calls": calls,
            "duration_s": duration,
            "rate": rate,
            "concurrency": concurrency,
            "pool_size": pool_size,
            "body_size": body_size,
            "repeat": repeat,
            "order": "ABBA",
            "warmup": warmup,
            "method": workload,
            "args": args,
            "alpha": alpha,
            "client_cpu": client_cpu,
            "server_cpu": server_cpu,
        },
    )  # fmt: skip


def _rate_warnings(key: str, spec: ArmSpec, runs: Sequence[Mapping[str, Any]]) -> list[str]:
    out = []
    for rep, run in enumerate(runs, 1):
        asked = run.get("rate_asked")
        if asked is None:
            continue
        achieved = run["calls_per_s"]
        dropped = run.get("dropped", 0)
        if achieved < RATE_KEPT * asked or dropped:
            text = (
                f"WARNING: arm {key} ({spec.text}) did not keep {asked:,.0f} calls/s in rep "
                f"{rep}: {achieved:,.0f} achieved ({achieved / asked:.0%})"
            )
            if dropped:
                text += (
                    f", {dropped} calls dropped (not started in time: their latency is "
                    "missing, so the percentiles understate it)"
                )
            out.append(text)
    return out


def _document(
    a: ArmSpec, b: ArmSpec, runs: dict[str, list[dict[str, Any]]], *, target: str,
    bundled: bool, counters: bool, started: float, config: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    from ..._version import __version__

    alpha = config["alpha"]
    summaries = {key: _summary(runs[key]) for key in runs}
    ratios: dict[str, float | None] = {}
    verdicts: dict[str, dict[str, Any]] = {}
    flats = {key: [_flat(r) for r in runs[key]] for key in runs}
    for key, _label, higher, _fmt in ROWS:
        sa, sb = summaries["A"][key], summaries["B"][key]
        ratios[key] = (
            sb["median"] / sa["median"]
            if sa is not None and sb is not None and sa["median"]
            else None
        )
        verdicts[key] = stats.verdict(
            [f[key] for f in flats["A"]], [f[key] for f in flats["B"]],
            higher_is_better=higher, alpha=alpha,
        ).as_dict()  # fmt: skip
    merged = {key: hdr.merge(r["hdr"] for r in runs[key]) for key in runs}
    warnings: list[str] = []
    for key, spec in (("A", a), ("B", b)):
        warnings += _rate_warnings(key, spec, runs[key])
        errors = sum(r["errors"] for r in runs[key])
        if errors:
            first = next(r["first_error"] for r in runs[key] if r["errors"])
            warnings.append(f"WARNING: arm {key} had {errors} failed calls, first: {first}")
    n_a, n_b = len(runs["A"]), len(runs["B"])
    return {
        "tool": "rpcclient ab",
        "version": __version__,
        "config": config,
        "target": {"url": target, "bundled": bundled, "counters": counters},
        "arms": {
            key: {
                "spec": spec.text,
                "runs": runs[key],
                "summary": summaries[key],
                "all_runs": {
                    "latency_ms": hdr.summary_ms(merged[key]),
                    "hdr": hdr.encode(merged[key]),
                },
            }
            for key, spec in (("A", a), ("B", b))
        },
        "ratios_b_over_a": ratios,
        "verdicts": verdicts,
        "statistics": {
            "test": "two-sided exact Mann-Whitney U over the repetitions (ties: midranks, "
            "exact conditional distribution)",
            "interval": "Hodges-Lehmann B/A ratio, distribution-free",
            "alpha": alpha,
            "repetitions": [n_a, n_b],
            "smallest_possible_p": stats.smallest_p(n_a, n_b),
        },
        "warnings": warnings,
        "wall_s": round(time.monotonic() - started, 2),
    }


def _ci_text(v: Mapping[str, Any]) -> str:
    if v["ci_low"] is None or v["ci_high"] is None:
        return "n/a"
    return f"[{v['ci_low']:.2f}, {v['ci_high']:.2f}]"


def _verdict_text(v: Mapping[str, Any]) -> str:
    if v["p_value"] is None:
        return "n/a"
    word = "~ no difference" if v["verdict"] == "no difference" else v["verdict"]
    return f"{word} (p={v['p_value']:.3f})"


def format_table(result: Mapping[str, Any]) -> str:
    """The side-by-side text table of a :func:`compare` result."""
    cfg = result["config"]
    arms = result["arms"]
    amount = f"{cfg['duration_s']:g} s" if cfg.get("duration_s") else f"{cfg['calls']} calls"
    if cfg.get("args") is not None:
        workload = f"{cfg['method']}({json.dumps(cfg['args'])})"
    elif cfg["method"] == ECHO:
        workload = f"{cfg['method']} ({cfg['body_size']} B payload)"
    else:
        workload = f"{cfg['method']}()"
    head = (
        f"rpcclient ab: {cfg['repeat']} x {amount} of {workload}, pool {cfg['pool_size']}, "
        f"target {result['target']['url']}"
        f"{' (bundled server)' if result['target']['bundled'] else ''}"
    )
    if cfg.get("rate"):
        mode = (
            f"open loop: {cfg['rate']:,g} calls/s per arm, at most {cfg['concurrency']} in flight; "
            "latency from each call's due time (coordinated omission corrected)"
        )
    else:
        mode = f"closed loop: {cfg['concurrency']} greenlets calling back to back"
    st = result["statistics"]
    levels = [v["ci_level"] for v in result["verdicts"].values() if v["ci_level"] is not None]
    ci_head = f"{max(levels):.1%} CI" if levels else "CI"
    cells = [["", f"A: {arms['A']['spec']}", f"B: {arms['B']['spec']}", "B/A", ci_head, "verdict"]]
    for key, label, _higher, fmt in ROWS:
        row = [label]
        for arm in ("A", "B"):
            s = arms[arm]["summary"][key]
            row.append(
                "n/a"
                if s is None
                else f"{fmt.format(s['median'])} ({fmt.format(s['min'])}-{fmt.format(s['max'])})"
            )
        ratio = result["ratios_b_over_a"][key]
        row.append("n/a" if ratio is None else f"{ratio:.2f}x")
        row.append(_ci_text(result["verdicts"][key]))
        row.append(_verdict_text(result["verdicts"][key]))
        cells.append(row)
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    lines = [head, mode, "median (min-max) over repetitions in ABBA order; B/A of the medians", ""]
    for row in cells:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    n_a, n_b = st["repetitions"]
    lines.append("")
    lines.append(
        f"verdict: B against A, two-sided exact Mann-Whitney U over {n_a} vs {n_b} "
        f"repetitions at alpha {st['alpha']:g}; CI: Hodges-Lehmann B/A ratio."
    )
    smallest = st["smallest_possible_p"]
    if smallest > st["alpha"]:
        lines.append(
            f"  {n_a} vs {n_b} repetitions cannot reach p <= {st['alpha']:g} (smallest possible "
            f"p {smallest:.4f}): no verdict; use --repeat 5 or more."
        )
    else:
        lines.append(
            f"  Few repetitions make weak evidence: the smallest possible p here is "
            f"{smallest:.4f}; '~ no difference' is not proof of equality (more --repeat "
            "sees smaller differences)."
        )
    for key in ("A", "B"):
        lat = arms[key]["all_runs"]["latency_ms"]
        lines.append(
            f"all runs of {key} (HDR histogram): p50 {lat['p50']:.3f}  p99 {lat['p99']:.3f}  "
            f"p99.9 {lat['p99.9']:.3f}  p99.99 {lat['p99.99']:.3f}  max {lat['max']:.2f} ms"
        )
    if cfg.get("rate"):
        for key in ("A", "B"):
            runs = arms[key]["runs"]
            p99 = max(r["start_lag_ms"]["p99"] for r in runs)
            worst = max(r["start_lag_ms"]["max"] for r in runs)
            dropped = sum(r["dropped"] for r in runs)
            lines.append(
                f"schedule of {key}: calls started after their due time by {p99:.2f} ms at "
                f"p99 (worst run), {worst:.1f} ms at most; {dropped} dropped"
            )
    lines.extend(result["warnings"])
    if not result["target"]["counters"]:
        lines.append("segments and bytes: n/a (the target does not serve our TCP counters)")
    return "\n".join(lines)
