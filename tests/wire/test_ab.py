"""The A/B engine (rpcclient._tools.ab), end to end on loopback with a tiny workload.

Runs the real thing: the bundled server in its own process, each arm in its
own process, the counters read from the server's TCP_INFO.
"""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import pytest

from rpcclient._tools import ab as _ab
from rpcclient._tools.ab import hdr

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not hasattr(socket, "TCP_INFO"),
    reason="segment counts need Linux TCP_INFO",
)

METRICS = {
    "calls_per_s",
    "p50",
    "p90",
    "p99",
    "p99.9",
    "p99.99",
    "max",
    "cpu_ms_per_1000",
    "request_bytes_per_call",
    "segments_per_call",
}


@pytest.mark.timeout(30)
def test_ab_gevent_vs_small_pool_writes_complete_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "ab.json"
    status = _ab.main(
        [
            "--a", "gevent", "--b", "gevent:pool_size=2",
            "--calls", "50", "--repeat", "1", "--concurrency", "4",
            "--json", str(out), "--quiet",
        ]
    )  # fmt: skip
    assert status == 0
    table = capsys.readouterr().out
    assert "calls/s" in table and "B/A" in table
    doc = json.loads(out.read_text())
    assert doc["tool"] == "rpcclient ab"
    assert doc["target"]["bundled"] is True and doc["target"]["counters"] is True
    assert doc["config"]["calls"] == 50 and doc["config"]["repeat"] == 1
    assert "_latencies_s" not in doc
    assert set(doc["ratios_b_over_a"]) == METRICS
    assert set(doc["verdicts"]) == METRICS
    # one repetition per arm: no verdict is possible, and the document says so
    assert {v["verdict"] for v in doc["verdicts"].values()} == {"n/a"}
    assert doc["statistics"]["smallest_possible_p"] == 1.0
    assert "cannot reach p <= 0.05" in table
    for key, spec in (("A", "gevent"), ("B", "gevent:pool_size=2")):
        arm = doc["arms"][key]
        assert arm["spec"] == spec
        assert len(arm["runs"]) == 1
        run = arm["runs"][0]
        assert run["calls"] == 50 and run["errors"] == 0
        assert run["calls_per_s"] > 0
        assert run["cpu_ms_per_1000"] > 0
        assert run["request_bytes_per_call"] > 100  # head + the 100-byte payload
        # measured at the server: one write per request is one data segment
        assert 0 < run["segments_per_call"] <= 1.05
        assert set(arm["summary"]) == METRICS
        assert all(arm["summary"][m] is not None for m in METRICS)
        lat = run["latency_ms"]
        assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p99.9"] <= lat["max"]
        merged = hdr.decode(arm["all_runs"]["hdr"])
        assert merged.get_total_count() == 50
        assert arm["all_runs"]["latency_ms"]["max"] == lat["max"]


def test_ab_rejects_unknown_arm_options_before_running(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert _ab.main(["--a", "gevent:no_such_option=1", "--quiet"]) == 2
    assert "no_such_option" in capsys.readouterr().err


def test_arm_spec_parses_options() -> None:
    spec = _ab.ArmSpec.parse("gevent:pool_size=5,timeout=none,stats=false")
    assert spec.transport == "gevent"
    assert dict(spec.options) == {"pool_size": 5, "timeout": None, "stats": False}
    assert spec.client_options(10) == {"pool_size": 5, "timeout": None, "stats": False}


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert _ab.percentile(values, 0.5) == 50.0
    assert _ab.percentile(values, 0.99) == 99.0
    assert _ab.percentile(values, 1.0) == 100.0


def test_hdr_percentiles_are_within_a_tenth_of_a_percent() -> None:
    latencies = [i / 1e5 for i in range(1, 10_001)]  # 10 us .. 100 ms, evenly
    hist, clamped = hdr.from_seconds(latencies)
    assert clamped == 0 and hist.get_total_count() == 10_000
    summary = hdr.summary_ms(hist)
    ordered = sorted(latencies)
    for key, q in hdr.PERCENTILES:
        exact = _ab.percentile(ordered, q / 100.0) * 1000.0
        assert summary[key] == pytest.approx(exact, rel=1e-3), key
    assert summary["max"] == pytest.approx(100.0, rel=1e-3)
    # the encoded form round-trips and merges exactly
    again = hdr.merge([hdr.encode(hist), hdr.encode(hist)])
    assert again.get_total_count() == 20_000
    assert hdr.summary_ms(again)["p99"] == summary["p99"]


def test_hdr_clamps_out_of_range_values_and_counts_them() -> None:
    hist, clamped = hdr.from_seconds([0.0, 1e-3, 10_000.0])
    assert clamped == 2 and hist.get_total_count() == 3
    qs, values = hdr.percentile_curve(hist)
    assert qs == sorted(qs) and values == sorted(values) and qs[-1] == pytest.approx(2 / 3)


def test_rate_warning_when_an_arm_falls_behind_or_drops_calls() -> None:
    from rpcclient._tools.ab.compare import _rate_warnings

    spec = _ab.ArmSpec.parse("gevent")
    kept = {"rate_asked": 400.0, "calls_per_s": 396.0, "dropped": 0}
    slow = {"rate_asked": 400.0, "calls_per_s": 300.0, "dropped": 0}
    dropping = {"rate_asked": 400.0, "calls_per_s": 399.0, "dropped": 7}
    closed = {"calls_per_s": 10.0}
    assert _rate_warnings("A", spec, [kept, closed]) == []
    (behind,) = _rate_warnings("B", spec, [kept, slow])
    assert "arm B" in behind and "rep 2" in behind and "300 achieved (75%)" in behind
    (dropped,) = _rate_warnings("A", spec, [dropping])
    assert "7 calls dropped" in dropped and "understate" in dropped
