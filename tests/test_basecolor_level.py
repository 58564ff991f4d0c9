"""`benchmarks/basecolor_level.py`'s measures on hand-made cases: the level reads only the mask, the fit recovers
known weights, and a renderer exact but for the level scores what its scale error gives."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from diffusion_renderer.conventions import linear_to_srgb
from diffusion_renderer.eval.metrics import psnr

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import basecolor_level


def test_level_is_the_log2_linear_luminance_over_the_mask() -> None:
    linear = np.full((1, 4, 4, 3), 0.25)
    linear[:, :, 2:] = 0.9  # outside the mask: ignored
    mask = np.zeros((1, 4, 4, 1))
    mask[:, :, :2] = 1
    assert basecolor_level.log2_level(linear_to_srgb(linear), mask) == pytest.approx(-2.0, abs=1e-9)
    grey_red = linear_to_srgb(np.broadcast_to([0.5, 0.0, 0.0], (1, 4, 4, 3)))  # luminance 0.2126 x 0.5
    assert basecolor_level.log2_level(grey_red, np.ones((1, 4, 4, 1))) == pytest.approx(np.log2(0.1063), abs=1e-6)


def test_least_squares_fit_recovers_a_linear_law() -> None:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(50, 2))
    target = 0.7 * features[:, 0] - 0.2 * features[:, 1] + 1.5
    weights = basecolor_level.least_squares_fit(features, target)
    np.testing.assert_allclose(weights, [0.7, -0.2, 1.5], atol=1e-9)
    np.testing.assert_allclose(basecolor_level.predict(weights, features), target, atol=1e-9)


def test_relight_psnr_scales_only_the_foreground() -> None:
    linear = np.full((1, 8, 8, 3), 0.2)
    mask = np.zeros((1, 8, 8, 1))
    mask[:, :4] = 1
    assert basecolor_level.relight_psnr(linear, mask, 0.0) == basecolor_level.PSNR_CAP  # exact level: capped
    expected = linear.copy()
    expected[:, :4] *= 2.0  # one stop too bright, on the foreground only
    got = basecolor_level.relight_psnr(linear, mask, 1.0)
    assert got == pytest.approx(psnr(linear_to_srgb(expected), linear_to_srgb(linear)))
    assert basecolor_level.relight_psnr(linear, mask, 0.5) > got  # a smaller error scores higher
