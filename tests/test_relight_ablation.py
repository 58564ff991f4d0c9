"""`benchmarks/relight_ablation.py`'s level row on hand-made cases: the basecolor re-levelled in linear light, the
image-level estimate's error in stops, and its fit read from a basecolor_level results file."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from diffusion_renderer.conventions import linear_to_srgb, srgb_to_linear

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import relight_ablation


def test_relevelled_scales_linear_light_and_clips() -> None:
    linear = np.array([[0.05, 0.2, 0.6]])
    basecolor = linear_to_srgb(linear)
    np.testing.assert_allclose(relight_ablation.relevelled(basecolor, 0.0), basecolor, atol=1e-6)
    np.testing.assert_allclose(srgb_to_linear(relight_ablation.relevelled(basecolor, -1.0)), linear / 2, atol=1e-6)
    brighter = srgb_to_linear(relight_ablation.relevelled(basecolor, 1.0))
    np.testing.assert_allclose(brighter, [[0.1, 0.4, 1.0]], atol=1e-6)  # 1.2 clipped at 1


def test_image_level_error_is_estimate_minus_truth_in_stops() -> None:
    albedo = np.full((1, 4, 4, 3), 0.2)
    albedo[:, :, 2:] = 0.7  # outside the mask: ignored
    mask = np.zeros((1, 4, 4, 1))
    mask[:, :, :2] = 1
    frame = linear_to_srgb(albedo * 2.0)  # lit one stop above the albedo
    clip = SimpleNamespace(rgb=frame, gbuffers={"mask": mask, "basecolor": linear_to_srgb(albedo)})
    assert relight_ablation.image_level_error(clip, np.array([1.0, 0.0])) == pytest.approx(1.0, abs=1e-6)
    assert relight_ablation.image_level_error(clip, np.array([1.0, -1.0])) == pytest.approx(0.0, abs=1e-6)
    assert relight_ablation.image_level_error(clip, np.array([0.0, np.log2(0.2)])) == pytest.approx(0.0, abs=1e-6)


def test_read_level_fit_takes_the_image_level_fit_or_exits_in_one_line(tmp_path: Path) -> None:
    good = tmp_path / "level.json"
    good.write_text(json.dumps({"fits": {"image_level": [0.25, -2.0], "model_calibrated": [1, 0, 0]}}))
    np.testing.assert_allclose(relight_ablation.read_level_fit(good), [0.25, -2.0])
    for name, text in (("missing.json", None), ("no_fit.json", "{}"), ("bad.json", '{"fits": {"image_level": [1]}}')):
        path = tmp_path / name
        if text is not None:
            path.write_text(text)
        with pytest.raises(SystemExit) as error:
            relight_ablation.read_level_fit(path)
        message = str(error.value)
        assert message.startswith(f"relight_ablation: error: {path}") and "\n" not in message


def test_row_names_are_the_rows_clip_rows_renders_in_order() -> None:
    shape = (1, 2, 2, 3)
    pred = {key: np.full(shape, 0.25) for key in relight_ablation.GBUFFER_KEYS}
    gt = {key: np.full(shape, 0.5) for key in relight_ablation.GBUFFER_KEYS}
    rows = list(relight_ablation.mixes(pred, gt, np.ones(3)))
    assert relight_ablation.row_names() == rows
    names = relight_ablation.row_names(level=True, gains=(-0.25, 0.5))
    assert names == [
        *rows,
        "ground_truth_image_level",
        "predicted_basecolor_gain_-0.25",
        "predicted_basecolor_gain_+0.50",
    ]


def test_clip_rows_renders_only_the_asked_rows_and_a_gain_moves_the_exposure(monkeypatch) -> None:
    """A forward 'model' that shows the basecolor as the frame: the gain row's frame is 2^S brighter in linear light,
    so the eval's exposure gain on it is S stops lower than the all-predicted row's."""
    shape = (1, 4, 4, 3)
    gt = {key: np.full(shape, 0.5) for key in relight_ablation.GBUFFER_KEYS}
    pred = {key: np.full(shape, 0.3) for key in relight_ablation.GBUFFER_KEYS}
    clip = SimpleNamespace(rgb=np.zeros(shape), gbuffers={**gt, "mask": np.ones((1, 4, 4, 1))})
    monkeypatch.setattr(relight_ablation, "read_clip", lambda *args: clip)
    monkeypatch.setattr(relight_ablation, "cut_clip", lambda clip, frames: clip)
    monkeypatch.setattr(relight_ablation, "reference_frames", lambda *args: linear_to_srgb(np.full(shape, 0.2)))
    monkeypatch.setattr(relight_ablation, "reference_path", lambda *args: None)
    monkeypatch.setattr(relight_ablation, "run_inverse", lambda *args: dict(pred))
    monkeypatch.setattr(relight_ablation, "render_forward", lambda forward, gbuffers, *args: gbuffers["basecolor"])
    config = relight_ablation.EvalConfig(Path("data"), Path("out"), "relight", "tiny", max_frames=1, progress=False)
    gain = relight_ablation.gain_row(0.5)
    rows, scale = relight_ablation.clip_rows(None, None, config, "c", None, gains=(0.5,), only={"all_predicted", gain})
    assert set(rows) == {"all_predicted", gain}
    np.testing.assert_allclose(scale, 0.5 / 0.3)
    shift = rows["all_predicted"]["log2_exposure"] - rows[gain]["log2_exposure"]
    assert shift == pytest.approx(0.5, abs=1e-6)


def test_an_unknown_row_exits_in_one_line_before_any_work(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "out.json"
    argv = ["relight_ablation.py", str(tmp_path), "--references", str(tmp_path / "references"), "--out", str(out)]
    monkeypatch.setattr(sys, "argv", [*argv, "--basecolor-gain", "0.25", "--rows", "all_predicted", "no_such_row"])
    with pytest.raises(SystemExit) as error:
        relight_ablation.main()
    assert str(error.value) == "relight_ablation: error: --rows: no such row: no_such_row"
    assert not out.exists()
