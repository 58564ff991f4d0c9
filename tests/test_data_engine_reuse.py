"""Data engine: a clip rendered with one scene moved per frame (``reuse_scene=True``) equals per-frame rebuilds.

CPU only (llvm_ad_rgb), 24 px, 8 spp, 3-frame clips; skipped without Mitsuba or LLVM.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import require_mitsuba
from diffusion_renderer.data.scenes import sample_scene
from diffusion_renderer.lighting.presets import list_presets, resolve_envmap

render = require_mitsuba()

HDRIS = [resolve_envmap(n)[1] for n in list_presets()]
GBUFFERS = ("basecolor", "normal", "depth", "roughness", "metallic", "mask")

# (motion, seed, lighting kind): every motion under an HDRI and under the baked sun-sky, light rotation under a
# procedural map; with normal maps (17, 26, 41, 5), an analytic sphere that moves (5) or turns with the light (41),
# and trimesh shapes (7, 25).
CASES = [
    ("static", 3, "hdri"),
    ("static", 17, "sunsky"),
    ("orbit", 2, "hdri"),
    ("orbit", 7, "sunsky"),
    ("oscillation", 3, "hdri"),
    ("oscillation", 26, "sunsky"),
    ("light_rotation", 1, "hdri"),
    ("light_rotation", 41, "sunsky"),
    ("object_motion", 5, "hdri"),
    ("object_motion", 25, "sunsky"),
    ("light_rotation", 4, "procedural"),  # a training clip's procedural map (light_augment)
]


@pytest.mark.parametrize(("motion", "seed", "kind"), CASES)
def test_reused_scene_matches_rebuild(motion: str, seed: int, kind: str) -> None:
    augment = kind == "procedural"  # the other cases pin the lighting kind of their seed without variations
    spec = sample_scene(
        seed, resolution=(24, 24), num_frames=3, hdri_paths=HDRIS, motion=motion, spp=8, light_augment=augment
    )
    assert spec.lighting.kind == kind and spec.motion == motion
    old = render.render_clip(spec, reuse_scene=False)
    new = render.render_clip(spec)  # default: reuse_scene=True
    for name in GBUFFERS:
        np.testing.assert_array_equal(getattr(new, name), getattr(old, name), err_msg=name)
    assert new.mask.any()
    if motion == "light_rotation":
        # Updating the envmap's to_world moves the radiance by float32 rounding (measured <= 1.3e-5 absolute).
        np.testing.assert_allclose(new.rgb_linear, old.rgb_linear, rtol=1e-4, atol=2e-5)
    else:
        np.testing.assert_array_equal(new.rgb_linear, old.rgb_linear)
    np.testing.assert_array_equal(new.c2w, old.c2w)
    np.testing.assert_array_equal(new.env_rotation_deg, old.env_rotation_deg)


def test_clip_scene_updates_only_what_changes() -> None:
    """Camera motion touches only the sensor; object motion only the moving meshes (no rebuild)."""
    mi = render.load_mitsuba(render.CPU_VARIANT)
    orbit = sample_scene(2, resolution=(24, 24), num_frames=3, hdri_paths=HDRIS, motion="orbit", spp=1)
    clip = render.ClipScene(mi, orbit, spp=1)
    scene = clip.scene
    before = {k: v.copy() for k, v in clip.current.items()}
    assert clip.set_frame(2) is scene  # same Mitsuba scene, moved
    changed = {k for k in before if not np.array_equal(before[k], clip.current[k])}
    assert changed == {"sensor.to_world"}
    moving = sample_scene(2, resolution=(24, 24), num_frames=3, hdri_paths=HDRIS, motion="object_motion", spp=1)
    clip = render.ClipScene(mi, moving, spp=1)
    scene = clip.scene
    assert clip.set_frame(1) is scene
    keys = [k for k in clip.current if k.endswith("vertex_positions")]
    assert keys
    for key in keys:  # the scene holds the frame's vertices
        np.testing.assert_array_equal(np.array(clip.params[key]), clip.current[key])
