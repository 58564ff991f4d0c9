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


def test_scenes_draw_light_variations_independently_of_the_rest() -> None:
    specs = [sample_scene(s, resolution=(16, 16), hdri_paths=HDRIS) for s in range(40)]
    kelvins = np.array([s.lighting.kelvin for s in specs])
    tinted = kelvins != REFERENCE_KELVIN
    assert 15 <= tinted.sum() <= 38 and (LIGHT_KELVIN_RANGE[0] <= kelvins[tinted]).all()
    assert (kelvins[tinted] <= LIGHT_KELVIN_RANGE[1]).all() and (kelvins[tinted] < REFERENCE_KELVIN).any()
    assert 8 <= sum(s.lighting.mirror for s in specs) <= 32
    procedural = [s for s in specs if s.lighting.name == "procedural"]
    night = [s for s in specs if s.lighting.name == "procedural_night"]
    key = [s for s in specs if s.lighting.name == "procedural_key"]
    area = [s for s in specs if s.lighting.name == "procedural_area"]
    assert 3 <= len(procedural) <= 20 and 1 <= len(night) <= 16 and 1 <= len(key) <= 12 and 1 <= len(area) <= 12
    assert all(s.lighting.kind == "procedural" for s in procedural + night + key + area)
    for spec in procedural:
        sky, *lights = spec.lighting.procedural
        assert len(sky) == 6 and 1 <= len(lights) <= 4 and all(len(row) == 6 for row in lights)
        assert all(2 <= row[2] <= 25 and -10.5 <= row[1] <= 90 and min(row[3:]) >= 0 for row in lights)
    for spec in night:  # a dark sky, 2-6 small lamps near the horizon, perhaps a street lit by them (9 values)
        sky, *lights = spec.lighting.procedural
        dark = sky[:6]  # zenith and ground
        assert len(sky) in (6, 9) and max(dark) <= 0.05 * 1.5 and 2 <= len(lights) <= 6
        assert all(0.25 <= row[2] <= 2 and -5.5 <= row[1] <= 37 and min(row[3:]) > 1000 * max(dark) for row in lights)
    for spec in key:  # a dim room and 1-3 small, bright lights above the horizon
        sky, *lights = spec.lighting.procedural
        assert len(sky) == 6 and max(sky) <= 0.3 * 1.5 and 1 <= len(lights) <= 3
        assert all(1 <= row[2] <= 6 and 15 <= row[1] <= 60.5 and min(row[3:]) > 30 * max(sky) for row in lights)
    for spec in area:  # 1-4 sharp-edged lights of 1-25° half sizes, 6-72° up, far brighter than the sky
        sky, *lights = spec.lighting.procedural
        assert len(sky) == 6 and max(sky) <= 1.5 and 1 <= len(lights) <= 4 and all(len(row) == 9 for row in lights)
        for azimuth, elevation, half_width, half_height, roll, exponent, *colour in lights:
            assert 0 <= azimuth <= 360 and 5.7 <= elevation <= 72 and 0 <= roll <= 180 and 1 <= exponent <= 16
            assert 2 <= half_width <= 25 and 1 <= half_height <= half_width and min(colour) > max(sky)
    for seed, spec in enumerate(specs[:12]):
        plain = sample_scene(seed, resolution=(16, 16), hdri_paths=HDRIS, light_augment=False)
        assert plain.lighting.kelvin == REFERENCE_KELVIN and not plain.lighting.mirror
        assert plain.lighting.procedural is None
        a, b = spec.to_dict(), plain.to_dict()
        la, lb = a.pop("lighting"), b.pop("lighting")
        assert a == b  # the light draw leaves the rest of the scene as it was
        for key in ("intensity", "base_rotation_deg", "frame_rotation_deg"):
            assert la[key] == lb[key]
        if la["kind"] != "procedural":
            assert {k: v for k, v in la.items() if k not in ("kelvin", "mirror")} == {
                k: v for k, v in lb.items() if k not in ("kelvin", "mirror")
            }
    old = specs[0].to_dict()
    for key in ("kelvin", "mirror", "procedural"):
        old["lighting"].pop(key)
    assert SceneSpec.from_dict(old).lighting.kelvin == REFERENCE_KELVIN  # specs written before still load


@pytest.mark.parametrize(("share", "name"), [("KEY_P", "procedural_key"), ("AREA_P", "procedural_area")])
def test_a_later_light_family_leaves_the_other_scenes_of_a_seed_as_they_were(
    monkeypatch, share: str, name: str
) -> None:
    """Families added later draw after the others: without one family every other scene is drawn the same."""
    from diffusion_renderer.data import scenes

    specs = [sample_scene(s, resolution=(16, 16), hdri_paths=HDRIS) for s in range(40)]
    monkeypatch.setattr(scenes, share, 0.0)
    without = [sample_scene(s, resolution=(16, 16), hdri_paths=HDRIS) for s in range(40)]
    changed = [a.lighting.name == name for a in specs]
    assert 1 <= sum(changed) <= 12
    for spec, plain, is_changed in zip(specs, without, changed, strict=True):
        unchanged = spec.to_dict() == plain.to_dict()
        # without key lights a key-light scene may become an area-light one (the family drawn after it)
        assert unchanged != is_changed
        if is_changed:  # only the map differs: what the light does over the clip stays
            assert plain.lighting.name not in ("procedural", "procedural_night", name)
            assert spec.lighting.kelvin == plain.lighting.kelvin


def test_a_light_family_lights_every_scene_as_the_seed_would_have_drawn_it() -> None:
    """``light_family`` (``make-data --light-family``): every scene gets that family's map, the very rows the seed
    draws for it, and the rest of the scene (the colour temperature and mirror too) stays as it was."""
    from diffusion_renderer.data.scenes import LIGHT_FAMILIES

    for family in LIGHT_FAMILIES:
        for seed in range(12):
            plain = sample_scene(seed, resolution=(16, 16), hdri_paths=HDRIS)
            forced = sample_scene(seed, resolution=(16, 16), hdri_paths=HDRIS, light_family=family)
            assert forced.lighting.name == family and forced.lighting.kind == "procedural"
            a, b = plain.to_dict(), forced.to_dict()
            la, lb = a.pop("lighting"), b.pop("lighting")
            assert a == b and la["kelvin"] == lb["kelvin"] and la["mirror"] == lb["mirror"]
            if plain.lighting.name == family:
                assert la == lb
    with pytest.raises(ValueError, match="light_family"):
        sample_scene(0, resolution=(16, 16), hdri_paths=HDRIS, light_family="sunsky")
    with pytest.raises(ValueError, match="light_family"):
        sample_scene(0, resolution=(16, 16), hdri_paths=HDRIS, light_family="procedural", light_augment=False)
