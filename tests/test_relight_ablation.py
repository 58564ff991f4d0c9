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
