"""Material editing on G-buffer arrays: selections, feathering, edits that touch exactly the selected pixels."""

from __future__ import annotations

import numpy as np
import pytest

from diffusion_renderer.apps.material_edit import (
    MaterialEdit,
    apply_material_edit,
    check_selection,
    feather,
    mask_from_image,
    parse_color,
    select_by_color,
    select_by_depth,
    shift_hue,
)
from diffusion_renderer.conventions import CHANNELS, GBUFFER_KEYS, VALUE_RANGE


def random_gbuffers(frames: int = 2, height: int = 24, width: int = 32, seed: int = 0) -> dict[str, np.ndarray]:
    """G-buffers in the conventions' ranges, roughness and metallic in [0, 0.5] (so setting 0.9 changes them)."""
    rng = np.random.default_rng(seed)
    out = {}
    for key in GBUFFER_KEYS:
        lo, hi = VALUE_RANGE[key]
        if key in ("roughness", "metallic"):
            hi = 0.5
        out[key] = rng.uniform(lo, hi, (frames, height, width, CHANNELS[key])).astype(np.float32)
    n = out["normal"]
    out["normal"] = n / np.linalg.norm(n, axis=-1, keepdims=True)
    return out


def disc_mask(height: int = 24, width: int = 32) -> np.ndarray:
    y, x = np.mgrid[:height, :width]
    return (x - 14) ** 2 + (y - 11) ** 2 < 8**2


@pytest.mark.parametrize("radius", [0.0, 3.0])
def test_edit_leaves_pixels_outside_the_mask_unchanged(radius: float) -> None:
    gbuffers = random_gbuffers()
    mask = disc_mask()
    edit = MaterialEdit(basecolor=(0.1, 0.2, 0.9), roughness_scale=1.7, metallic=0.9)
    edited = apply_material_edit(gbuffers, feather(mask, radius), edit)
    for key in GBUFFER_KEYS:
        assert edited[key].dtype == gbuffers[key].dtype
        np.testing.assert_array_equal(edited[key][:, ~mask], gbuffers[key][:, ~mask], err_msg=key)
    for key in ("normal", "depth"):  # passes the edit does not name are the same arrays
        assert edited[key] is gbuffers[key]


@pytest.mark.parametrize("radius", [0.0, 3.0])
def test_roughness_and_metallic_edits_change_exactly_the_masked_pixels(radius: float) -> None:
    gbuffers = random_gbuffers()
    mask = disc_mask()
    edited = apply_material_edit(gbuffers, feather(mask, radius), MaterialEdit(roughness=0.9, metallic=1.0))
    for key, value in (("roughness", 0.9), ("metallic", 1.0)):
        changed = (edited[key] != gbuffers[key])[..., 0]
        np.testing.assert_array_equal(changed, np.broadcast_to(mask, changed.shape), err_msg=key)
        assert edited[key].min() >= 0 and edited[key].max() <= 1
        if radius == 0:
            np.testing.assert_allclose(edited[key][:, mask], value)


def test_feather_ramps_inward_only() -> None:
    mask = np.zeros((20, 20), bool)
    mask[4:16, 4:16] = True
    w = feather(mask, 3.0)
    assert (w[~mask] == 0).all() and (w[mask] > 0).all()
    # distance to the nearest unselected pixel / radius: 1/3, 2/3, then 1 from the edge inward
    np.testing.assert_allclose(w[4:8, 10], [1 / 3, 2 / 3, 1, 1], atol=1e-3)
    np.testing.assert_array_equal(feather(mask, 0), mask.astype(np.float32))
    edge = np.zeros((8, 8), bool)
    edge[:, :4] = True  # the image border is not an edge of the selection
    assert feather(edge, 2.0)[4, 0] == 1.0


def test_hue_shift_turns_hue_and_keeps_value() -> None:
    rgb = np.array([[[0.8, 0.1, 0.1]]], np.float32)
    green = shift_hue(rgb, 120.0)
    np.testing.assert_allclose(green, [[[0.1, 0.8, 0.1]]], atol=1e-5)
    np.testing.assert_allclose(shift_hue(rgb, 360.0), rgb, atol=1e-5)
    gbuffers = random_gbuffers()
    edited = apply_material_edit(gbuffers, disc_mask().astype(np.float32), MaterialEdit(hue_shift=90))
    np.testing.assert_allclose(edited["basecolor"].max(-1), gbuffers["basecolor"].max(-1), atol=1e-5)


def test_selections() -> None:
    gbuffers = random_gbuffers()
    target = gbuffers["basecolor"][0, 5, 7]
    picked = select_by_color(gbuffers["basecolor"], tuple(target.tolist()), 0.05)
    assert picked[0, 5, 7] and picked.mean() < 0.05
    near = select_by_depth(gbuffers["depth"], -1.0, 0.0)
    np.testing.assert_array_equal(near, gbuffers["depth"][..., 0] <= 0)
    image = np.zeros((4, 4, 3), np.float32)
    image[1:3, 1:3] = 1.0
    assert mask_from_image(image).sum() == 4


def test_selection_errors() -> None:
    with pytest.raises(ValueError, match="the mask is 5x4, the G-buffers are 32x24"):
        check_selection(np.ones((4, 5), bool), (2, 24, 32))
    with pytest.raises(ValueError, match="empty"):
        check_selection(np.zeros((24, 32), bool), (2, 24, 32))
    with pytest.raises(ValueError, match="3 frames"):
        check_selection(np.ones((3, 24, 32), bool), (2, 24, 32))
    assert check_selection(disc_mask(), (2, 24, 32)).shape == (2, 24, 32)


def test_colours_and_edit_validation() -> None:
    assert parse_color("#ff8000") == (1.0, 128 / 255, 0.0)
    assert parse_color("0.1,0.2,0.3") == (0.1, 0.2, 0.3)
    for bad in ("red", "#ff80", "1,2,3", "0.1,0.2"):
        with pytest.raises(ValueError, match="colour"):
            parse_color(bad)
    with pytest.raises(ValueError, match="nothing to edit"):
        MaterialEdit()
    with pytest.raises(ValueError, match="roughness must be in"):
        MaterialEdit(roughness=1.5)
    with pytest.raises(ValueError, match="not both"):
        MaterialEdit(basecolor=(1, 0, 0), hue_shift=10)
    assert MaterialEdit(hue_shift=5, metallic=1).passes() == ("basecolor", "metallic")
    with pytest.raises(ValueError, match="lack roughness"):
        apply_material_edit({"basecolor": np.zeros((1, 2, 2, 3))}, np.ones((2, 2)), MaterialEdit(roughness=0.5))
