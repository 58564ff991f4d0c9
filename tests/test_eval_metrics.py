"""Evaluation metrics on hand-made cases whose answers are known exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest

from diffusion_renderer.eval.metrics import (
    abs_rel,
    angle_stats,
    delta1,
    depth_metrics,
    exposure_gain,
    exposure_psnr,
    fit_scale_shift,
    flip,
    least_squares_scale,
    normal_angle_deg,
    normal_metrics,
    psnr,
    rmse,
    si_psnr,
    ssim,
)

RNG = np.random.default_rng(0)


def image(h: int = 16, w: int = 16, c: int = 3) -> np.ndarray:
    return RNG.random((h, w, c))


def test_si_psnr_ignores_a_per_channel_scale_and_beats_plain_psnr() -> None:
    gt = image()
    mask = np.ones((16, 16, 1))
    mask[:4] = 0
    assert si_psnr(gt * np.array([0.5, 2.0, 3.0]), gt, mask) == math.inf
    np.testing.assert_allclose(least_squares_scale(gt * 4.0, gt), [0.25] * 3)
    gt32 = gt.astype(np.float32)
    assert si_psnr(gt32 * np.float32(3.0), gt32, mask) == math.inf  # float32 rounding is no error
    noisy = np.clip(gt * 0.7 + RNG.normal(0, 0.02, gt.shape), 0, 1)
    assert math.isfinite(si_psnr(noisy, gt, mask)) and si_psnr(noisy, gt, mask) > psnr(noisy, gt, mask) + 3
    garbage_outside = gt * 2.0
    garbage_outside[:4] = 0.0  # outside the mask: does not count
    assert si_psnr(garbage_outside, gt, mask) == math.inf
    assert math.isnan(si_psnr(gt, gt, np.zeros((16, 16, 1))))  # empty mask: undefined


def test_exposure_psnr_ignores_one_exposure_gain_but_not_shading() -> None:
    from diffusion_renderer.conventions import linear_to_srgb

    radiance = RNG.random((2, 16, 16, 3)) * 0.9  # linear light, nothing clipped
    gt = linear_to_srgb(radiance)
    dim = linear_to_srgb(radiance * 0.25)  # the light's power 4x too low: same shading
    assert exposure_gain(dim, gt) == pytest.approx(4.0)
    assert exposure_psnr(dim, gt) == math.inf and psnr(dim, gt) < 15
    tinted = linear_to_srgb(radiance * np.array([0.25, 0.5, 0.25]))  # one gain cannot fix a colour cast
    assert exposure_psnr(tinted, gt) < 30
    # clipped ground-truth pixels do not pull the fit: rows over-exposed in both, the rest half as bright
    bright = radiance.copy()
    bright[:, :4] = 5.0
    truth, half = linear_to_srgb(np.clip(bright, 0, 1)), linear_to_srgb(np.clip(bright * 0.5, 0, 1))
    assert exposure_gain(half, truth) == pytest.approx(2.0)
    assert exposure_gain(np.zeros_like(gt), gt) == 1.0  # nothing to fit: unchanged
    assert math.isnan(exposure_psnr(gt, gt, np.zeros((2, 16, 16, 1))))


def test_psnr_and_rmse_known_values() -> None:
    gt = np.full((4, 4, 3), 0.2)
    assert psnr(gt + 0.1, gt) == pytest.approx(20.0)
    assert psnr(gt, gt) == math.inf
    assert rmse(np.full((2, 4, 4, 1), 0.5), np.full((2, 4, 4, 1), 0.2)) == pytest.approx(0.3)
    pred = np.zeros((4, 4, 1))
    pred[0, 0] = 1.0  # the only wrong pixel ...
    mask = np.ones((4, 4, 1))
    assert rmse(pred, np.zeros((4, 4, 1)), mask) == pytest.approx(0.25)  # sqrt(1 / 16)
    mask[0, 0] = 0  # ... masked out
    assert rmse(pred, np.zeros((4, 4, 1)), mask) == 0.0


def test_normal_angles_in_degrees() -> None:
    up = np.zeros((3, 5, 3))
    up[..., 2] = 1.0
    right = np.zeros_like(up)
    right[..., 0] = 2.0  # not unit: renormalised
    np.testing.assert_allclose(normal_angle_deg(right, up), 90.0)
    np.testing.assert_allclose(normal_angle_deg(up, up), 0.0, atol=1e-12)
    np.testing.assert_allclose(normal_angle_deg(up + right / 2, up), 45.0)
    np.testing.assert_allclose(normal_angle_deg(-up, up), 180.0)
    stats = normal_metrics(right, up)
    assert stats["mean"] == pytest.approx(90.0) and stats["median"] == pytest.approx(90.0)
    assert stats["within_11.25"] == stats["within_22.5"] == stats["within_30"] == 0.0
    assert normal_metrics(up, up)["within_11.25"] == 100.0
    stats = angle_stats(np.array([5.0, 15.0, 25.0, 40.0]))
    assert (stats["within_11.25"], stats["within_22.5"], stats["within_30"]) == (25.0, 50.0, 75.0)
    assert stats["mean"] == pytest.approx(21.25) and stats["median"] == pytest.approx(20.0)


def test_depth_after_scale_and_shift() -> None:
    z = np.linspace(2.0, 10.0, 2 * 6 * 6).reshape(2, 6, 6, 1)
    code = (z - 6.0) / 4.0 * 0.7 + 0.1  # any affine code of z: recovered exactly
    a, b = fit_scale_shift(code, z)
    np.testing.assert_allclose(a * code + b, z, rtol=1e-9)
    mask = np.ones_like(z)
    mask[:, 0] = 0
    code[:, 0] = 5.0  # garbage outside the mask
    result = depth_metrics(code, z, mask)
    assert result["abs_rel"] == pytest.approx(0.0, abs=1e-9) and result["delta1"] == 1.0
    assert abs_rel(np.array([2.0, 1.0]), np.array([1.0, 1.0])) == pytest.approx(0.5)
    assert delta1(np.array([1.2, 1.3, -1.0, 0.81]), np.ones(4)) == pytest.approx(0.5)  # 1.2 and 1/0.81 < 1.25


def test_ssim_identical_is_one_and_drops_with_noise() -> None:
    x = image(32, 32)
    assert ssim(x, x) == pytest.approx(1.0)
    noisy = np.clip(x + RNG.normal(0, 0.1, x.shape), 0, 1)
    value = ssim(noisy, x)
    assert 0.0 < value < 0.99 and value == pytest.approx(ssim(x, noisy))
    assert ssim(x[:8, :8], x[:8, :8]) == pytest.approx(1.0)  # smaller than the window
    assert ssim(np.zeros((16, 16)), np.ones((16, 16))) < 0.01


def test_flip_identical_is_zero() -> None:
    x = image(24, 32).astype(np.float32)
    mean, error_map = flip(x, x)
    assert mean == 0.0 and error_map.shape == (24, 32) and not error_map.any()
    worse, _ = flip(1.0 - x, x)
    assert 0.1 < worse <= 1.0
