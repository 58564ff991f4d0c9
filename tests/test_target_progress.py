"""`benchmarks/target_progress.py`: the log2 fit and its crossing on hand-made laws, and every milestone it plots
found in the committed evaluation record."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import target_progress


def test_log2_fit_recovers_a_law_and_meets_the_target_where_it_should() -> None:
    minutes = [10.0, 20.0, 40.0, 80.0]
    values = [20.0 + 1.5 * np.log2(m / 10.0) for m in minutes]  # +1.5 dB per doubling from 20 dB at 10 minutes
    intercept, slope = target_progress.log2_fit(minutes, values)
    assert slope == pytest.approx(1.5)
    crossing = target_progress.crossing_log2_minutes(intercept, slope, 23.0, higher_is_better=True)
    assert crossing == pytest.approx(np.log2(40.0))
    # a figure moving away from its target never meets it
    assert target_progress.crossing_log2_minutes(intercept, slope, 10.0, higher_is_better=False) is None
    assert target_progress.crossing_log2_minutes(intercept, 0.0, 23.0, higher_is_better=True) is None


def test_trend_reports_the_gap_and_minutes_left_from_the_last_point() -> None:
    points = [{"label": str(m), "minutes": m, "value": 12.0 - np.log2(m)} for m in (4.0, 8.0, 16.0)]
    fit = target_progress.trend(points, "minutes", 6.0, higher_is_better=False, since=8.0)
    assert fit["fitted_on"] == ["8.0", "16.0"]
    assert fit["gap"] == pytest.approx(2.0)  # 8 (at 16 minutes) against a target of 6, lower being better
    assert fit["target_at_minutes"] == pytest.approx(64.0) and fit["minutes_left"] == pytest.approx(48.0)
    assert fit["doublings_needed"] == pytest.approx(2.0)


def test_a_target_the_last_model_meets_is_met_though_the_line_passes_below_it() -> None:
    # the last point is above the target, the fitted line at its minutes below it (the points scatter)
    points = [{"label": str(m), "minutes": m, "value": v} for m, v in ((16.0, 28.5), (32.0, 27.0), (64.0, 28.1))]
    fit = target_progress.trend(points, "minutes", 28.0, higher_is_better=True, since=0.0)
    assert fit["intercept"] + fit["slope_per_doubling"] * 6.0 < 28.0  # log2(64): the line is below the target
    assert fit["met"] and fit["gap"] == pytest.approx(-0.1)
    assert fit["doublings_needed"] == 0.0 and fit["minutes_left"] == 0.0
    higher = target_progress.trend(points, "minutes", 28.2, higher_is_better=True, since=0.0)
    assert not higher["met"] and higher["doublings_needed"] is None  # not met, and the line falls away from it


def test_the_gap_is_the_last_shipped_models_though_a_tried_run_has_more_minutes() -> None:
    points = [{"label": str(m), "minutes": m, "value": 12.0 - np.log2(m)} for m in (4.0, 8.0)]
    points.append({"label": "tried", "minutes": 16.0, "value": 7.5, "shipped": False})  # on the fit, not shipped
    fit = target_progress.trend(points, "minutes", 6.0, higher_is_better=False, since=0.0)
    assert fit["fitted_on"] == ["4.0", "8.0", "tried"]
    assert fit["last_point"] == "8.0" and fit["gap"] == pytest.approx(3.0)  # 9 at 8 minutes against 6
    assert fit["minutes_left"] == pytest.approx(fit["target_at_minutes"] - 8.0)


def test_a_nearly_flat_line_gives_doublings_but_no_minutes() -> None:
    points = [{"label": str(m), "minutes": m, "value": 17.0 + 1e-4 * np.log2(m)} for m in (64.0, 128.0)]
    fit = target_progress.trend(points, "minutes", 25.0, higher_is_better=True, since=0.0)
    assert fit["doublings_needed"] == pytest.approx(8.0 / 1e-4 - 7.0, rel=1e-6)  # no overflow on the way
    assert fit["target_at_minutes"] is None and fit["minutes_left"] is None


def test_every_milestone_is_in_the_committed_record_and_minutes_only_grow() -> None:
    tree = json.loads(target_progress.EVALUATION.read_text())
    result = target_progress.progress(tree)  # raises KeyError naming any key that is missing
    for name in ("forward", "relight", "normal_angle_mean", "basecolor_si_psnr"):
        assert len(result[name]["points"]) >= 4 and np.isfinite(result[name]["trend"]["slope_per_doubling"])
    for role in ("forward_minutes", "inverse_minutes"):
        minutes = [getattr(m, role) for m in target_progress.MILESTONES]
        assert minutes == sorted(minutes)
    with pytest.raises(KeyError, match=re.escape("no 'results.nothing'")):
        target_progress.lookup(tree, "results.nothing", "psnr")


def test_a_missing_milestone_stops_the_script_with_one_line_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = tmp_path / "eval_tiny_cpu.json"
    record.write_text(json.dumps({"results": {}}))
    out = tmp_path / "progress.json"
    monkeypatch.setattr(target_progress, "EVALUATION", record)
    monkeypatch.setattr(sys, "argv", ["target_progress.py", "--out", str(out)])
    with pytest.raises(SystemExit, match=r"^target_progress: error: eval_tiny_cpu\.json has no '.+'$"):
        target_progress.main()
    assert list(tmp_path.iterdir()) == [record]
