"""`diffusion-renderer compare`: two eval runs paired clip by clip, on hand-made metrics files whose answer is
known (a constant gain is called, pure noise is not, lower-is-better metrics read the right way round)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from diffusion_renderer.cli.main import main
from diffusion_renderer.eval.compare import MetricComparison, compare_evaluations, higher_is_better, load_evaluation
from diffusion_renderer.io.errors import InputError

CLIPS = [f"scene_{i:08d}" for i in range(30)]


def evaluation(metrics: dict[str, np.ndarray], mode: str = "relight", lights: list[str] | None = None) -> dict:
    """An eval metrics.json record with one sample per clip."""
    samples = []
    for i, clip in enumerate(CLIPS):
        sample = {
            "clip": clip,
            "frames": 1,
            "light": "studio",
            "metrics": {k: float(v[i]) for k, v in metrics.items()},
        }
        if lights is not None:
            sample["lighting"] = lights[i]
        samples.append(sample)
    return {"mode": mode, "model": "m", "mean": {}, "samples": samples}


def write(folder: Path, record: dict) -> Path:
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps(record))
    return folder


@pytest.fixture
def base() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"psnr": rng.normal(17, 2, 30), "flip": rng.uniform(0.3, 0.6, 30)}


def test_a_constant_gain_is_called_and_noise_is_not(base) -> None:
    rng = np.random.default_rng(1)
    noise = rng.normal(0, 1.5, 30)
    better = {"psnr": base["psnr"] + 1.0 + 0.1 * noise, "flip": base["flip"] - 0.05}
    result = {c.metric: c for c in compare_evaluations(evaluation(base), evaluation(better))}
    psnr = result["psnr"]
    d = better["psnr"] - base["psnr"]
    assert psnr.count == 30 and psnr.difference == pytest.approx(d.mean())
    assert psnr.standard_error == pytest.approx(d.std(ddof=1) / math.sqrt(30))
    assert psnr.verdict == "B better" and psnr.wins_b == 30
    assert result["flip"].verdict == "B better" and result["flip"].z < -1e6  # lower flip is better; no spread
    noisy = compare_evaluations(evaluation(base), evaluation({"psnr": base["psnr"] + 0.05 + noise}), ["psnr"])[0]
    assert noisy.verdict == "within noise" and abs(noisy.z) < 2
    worse = compare_evaluations(evaluation(better), evaluation(base), ["psnr"])[0]
    assert worse.verdict == "A better" and worse.wins_b == 0


def test_which_way_is_better() -> None:
    lower = ["normal_angle_mean", "normal_angle_median", "roughness_rmse", "metallic_rmse", "depth_abs_rel", "flip"]
    higher = ["psnr", "psnr_exposure", "basecolor_si_psnr", "ssim", "depth_delta1", "normal_angle_within_11.25"]
    assert not any(higher_is_better(m) for m in lower) and all(higher_is_better(m) for m in higher)


def test_non_finite_pairs_are_left_out(base, tmp_path: Path) -> None:
    a = {"psnr": base["psnr"].copy()}
    b = {"psnr": base["psnr"] + 1.0}
    a["psnr"][0], b["psnr"][1] = math.nan, math.inf  # undefined on one side, perfect on the other
    comparison = compare_evaluations(evaluation(a), evaluation(b))[0]
    assert comparison.count == 28 and comparison.difference == pytest.approx(1.0)
    # as eval writes them: non-finite values are null in metrics.json
    files = [write(tmp_path / name, evaluation(m)) for name, m in (("a", a), ("b", b))]
    for folder in files:
        record = json.loads((folder / "metrics.json").read_text(), parse_constant=lambda _: None)
        (folder / "metrics.json").write_text(json.dumps(record, allow_nan=False))
    loaded = compare_evaluations(*(load_evaluation(f) for f in files))[0]
    assert loaded.count == 28 and loaded.difference == pytest.approx(1.0)
    one_clip = MetricComparison("psnr", 1, 17.0, 18.0, 1.0, math.nan, 1)  # no spread to measure
    assert one_clip.verdict == "within noise"
    record = json.loads(json.dumps(one_clip.to_dict(), allow_nan=False))  # valid JSON: null, not NaN
    assert record["standard_error"] is None and record["z"] is None and record["difference"] == 1.0


def test_evaluations_of_different_tasks_are_refused(base) -> None:
    with pytest.raises(InputError, match="an inverse evaluation, B a relight one"):
        compare_evaluations(evaluation(base, mode="inverse"), evaluation(base))
    other_clips = evaluation(base)
    for sample in other_clips["samples"]:
        sample["clip"] += "_x"
    with pytest.raises(InputError, match="share no clips"):
        compare_evaluations(evaluation(base), other_clips)
    lights = [f"scene_{i:08d} (studio)" for i in range(30)]
    moved = [*lights[:3], lights[4], *lights[4:]]  # clip 3 relit under another clip's map
    with pytest.raises(InputError, match="scene_00000003 was relit under different lights"):
        compare_evaluations(evaluation(base, lights=lights), evaluation(base, lights=moved))


def test_compare_command(tmp_path: Path, base, capsys) -> None:
    a = write(tmp_path / "a", evaluation(base))
    b = write(tmp_path / "b", evaluation({"psnr": base["psnr"] + 1.0, "flip": base["flip"]}))
    assert main(["compare", str(a), str(b / "metrics.json"), "--out", str(tmp_path / "c.json")]) == 0
    table = capsys.readouterr().out
    assert "psnr" in table and "B better" in table and "within noise" in table  # flip unchanged
    record = json.loads((tmp_path / "c.json").read_text())
    assert [m["metric"] for m in record["metrics"]] == ["psnr", "flip"] and record["mode"] == "relight"
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "metrics.json").write_text("{not json")
    assert main(["compare", str(a), str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad/metrics.json: not a JSON file" in err[0]
    assert main(["compare", str(a), str(tmp_path / "missing")]) == 2
    assert "missing: no metrics.json" in capsys.readouterr().err
    write(tmp_path / "clipless", {"mode": "relight", "samples": [{"metrics": {}}]})
    assert main(["compare", str(a), str(tmp_path / "clipless")]) == 2
    assert "clipless/metrics.json: a sample without its clip name" in capsys.readouterr().err
    assert load_evaluation(a)["mode"] == "relight"
    write(tmp_path / "other", evaluation({"ssim": base["psnr"] / 30}))
    assert main(["compare", str(a), str(tmp_path / "other")]) == 2
    assert "report no metric in common" in capsys.readouterr().err


def test_region_metrics_are_paired_after_the_whole_frame(base) -> None:
    def with_regions(record: dict, objects_angle: np.ndarray) -> dict:
        for sample, angle in zip(record["samples"], objects_angle, strict=True):
            sample["regions"] = {"objects": {"normal_angle_mean": float(angle)}, "ground": {"normal_angle_mean": 7.0}}
        return record

    angle = np.random.default_rng(2).uniform(25, 35, 30)
    a = with_regions(evaluation(base, mode="inverse"), angle)
    b = with_regions(evaluation(base, mode="inverse"), angle - 2.0)  # the objects read 2 degrees better
    result = compare_evaluations(a, b)
    assert [c.metric for c in result] == ["psnr", "flip", "objects/normal_angle_mean", "ground/normal_angle_mean"]
    objects = result[2]
    assert objects.difference == pytest.approx(-2.0) and objects.verdict == "B better" and objects.wins_b == 30
    assert result[3].verdict == "within noise" and result[3].difference == 0.0
    plain = compare_evaluations(evaluation(base, mode="inverse"), b)  # A predates regions: whole-frame metrics only
    assert [c.metric for c in plain] == ["psnr", "flip"]
