"""Relighting's light strength: ``auto`` finds, with the renderer itself, the factor on each map that gives the
relit frames the input's mean level, also where a frame does not follow its light one to one."""

from __future__ import annotations

import math

import numpy as np
import pytest

from diffusion_renderer.apps.relight import (
    MATCH_TOLERANCE,
    STRENGTH_BOUNDS,
    check_light_strength,
    log2_level,
    match_level,
    mean_linear_luminance,
    scale_lighting,
    secant_step,
)
from diffusion_renderer.conventions import display_rgb


class Renderer:
    """Frames whose linear radiance is ``base`` x factor^``gamma`` (display-clipped), one ``base`` per lighting;
    counts its calls."""

    def __init__(self, bases: list[float], gamma: float = 1.0) -> None:
        self.bases, self.gamma, self.calls = bases, gamma, 0
        self.texture = np.linspace(0.2, 1.8, 48).reshape(1, 4, 4, 3)  # (T, H, W, 3): not flat, some of it clips

    def __call__(self, factors: list[float]) -> list[np.ndarray]:
        self.calls += 1
        return [display_rgb(b * self.texture * f**self.gamma) for b, f in zip(self.bases, factors, strict=True)]


def test_a_frame_that_follows_its_light_is_matched_in_one_step() -> None:
    target = display_rgb(np.full((1, 4, 4, 3), 0.1))
    render = Renderer([0.02, 0.4])  # too dark, too bright
    factors, images = match_level(render, 2, target)
    assert render.calls == 2  # the map as given, then the factor
    for image in images:
        assert abs(log2_level(image) - log2_level(target)) <= MATCH_TOLERANCE
    assert factors[0] > 1 > factors[1]


@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_secant_steps_match_a_frame_that_does_not(gamma: float) -> None:
    target = display_rgb(np.full((2, 4, 4, 3), 0.08))  # a clip of two frames
    render = Renderer([0.01, 0.03], gamma)
    factors, images = match_level(render, 2, target)
    assert render.calls <= 3
    for image in images:
        assert abs(log2_level(image) - log2_level(target)) <= MATCH_TOLERANCE
    assert all(f > 1 for f in factors)


def test_the_search_stays_within_bounds() -> None:
    black = Renderer([0.0])  # no light reaches the frame: nothing to match
    factors, _ = match_level(black, 1, display_rgb(np.full((1, 4, 4, 3), 0.2)))
    assert STRENGTH_BOUNDS[0] <= factors[0] <= STRENGTH_BOUNDS[1]
    step = secant_step(0.0, -40.0, None, 0.0)
    assert step == math.log2(STRENGTH_BOUNDS[1])
    assert secant_step(1.0, -1.0, (0.0, -1.0), 0.0) == pytest.approx(5.0)  # a flat response: the slowest slope, 1/4


def test_levels_and_strengths() -> None:
    assert mean_linear_luminance(display_rgb(np.full((2, 3, 3), 0.25))) == pytest.approx(0.25, rel=1e-5)
    assert mean_linear_luminance(display_rgb(np.full((2, 3, 1), 0.25))) == pytest.approx(0.25, rel=1e-5)  # grey
    assert check_light_strength("auto") == "auto" and check_light_strength("0.5") == 0.5
    for bad in (0, -2, "nan", "inf", "bright", None):
        with pytest.raises(ValueError, match="light strength must be a number > 0 or 'auto'"):
            check_light_strength(bad)
    hdr = np.ones((2, 4, 3), dtype=np.float32)
    assert scale_lighting(hdr, 1.0) is hdr and scale_lighting(None, 3.0) is None
    np.testing.assert_array_equal(scale_lighting(hdr, 3.0), hdr * 3)
