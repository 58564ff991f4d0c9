"""Light colour: white-balance gains along the Planckian locus, and the data engine's use of them."""

from __future__ import annotations

import numpy as np
import pytest

from diffusion_renderer.data.scenes import LIGHT_KELVIN_RANGE, SceneSpec, sample_scene
from diffusion_renderer.lighting.presets import list_presets, resolve_envmap
from diffusion_renderer.lighting.white_balance import (
    LUMA,
    REFERENCE_KELVIN,
    planckian_rgb,
    planckian_xy,
    white_balance_gain,
)

HDRIS = [resolve_envmap(name)[1] for name in list_presets()]


def test_planckian_locus_passes_known_points() -> None:
    # CIE 1931 chromaticities of black bodies (Wyszecki & Stiles): 2856 K is illuminant A, 6504 K near D65
    for kelvin, xy in [(2856.0, (0.4476, 0.4074)), (5000.0, (0.3451, 0.3516)), (6504.0, (0.3135, 0.3236))]:
        np.testing.assert_allclose(planckian_xy(kelvin), xy, atol=1.5e-3)
    with pytest.raises(ValueError, match="outside"):
        planckian_xy(1000.0)


def test_gains_are_warm_below_and_cool_above_the_reference() -> None:
    np.testing.assert_allclose(white_balance_gain(REFERENCE_KELVIN), np.ones(3), atol=1e-12)
    previous = None
    for kelvin in (2500.0, 3500.0, 5000.0, 8000.0, 12000.0, 20000.0):
        gain = white_balance_gain(kelvin)
        assert abs(float(LUMA @ gain) - 1.0) < 1e-12 and (gain >= 0).all()  # luminance kept
        assert (gain[0] > gain[2]) == (kelvin < REFERENCE_KELVIN)  # warm: red over blue
        if previous is not None:
            assert gain[2] / gain[0] > previous[2] / previous[0]  # bluer as the temperature rises
        previous = gain
    assert abs(float(LUMA @ planckian_rgb(3000.0)) - 1.0) < 1e-12


def test_scenes_draw_light_colour_independently_of_the_rest() -> None:
    specs = [sample_scene(s, resolution=(16, 16), hdri_paths=HDRIS) for s in range(40)]
    kelvins = np.array([s.lighting.kelvin for s in specs])
    tinted = kelvins != REFERENCE_KELVIN
    assert 15 <= tinted.sum() <= 38 and (LIGHT_KELVIN_RANGE[0] <= kelvins[tinted]).all()
    assert (kelvins[tinted] <= LIGHT_KELVIN_RANGE[1]).all() and (kelvins[tinted] < REFERENCE_KELVIN).any()
    assert 8 <= sum(s.lighting.mirror for s in specs) <= 32
    for seed, spec in enumerate(specs[:8]):
        plain = sample_scene(seed, resolution=(16, 16), hdri_paths=HDRIS, light_colour=False)
        assert plain.lighting.kelvin == REFERENCE_KELVIN and not plain.lighting.mirror
        a, b = spec.to_dict(), plain.to_dict()
        for d in (a, b):
            d["lighting"].pop("kelvin"), d["lighting"].pop("mirror")
        assert a == b  # the colour draw leaves the rest of the scene as it was
    old = specs[0].to_dict()
    old["lighting"].pop("kelvin"), old["lighting"].pop("mirror")
    assert SceneSpec.from_dict(old).lighting.kelvin == REFERENCE_KELVIN  # specs written before still load
