"""``eval inverse``'s regions: the ground plane found in path-traced data-engine clips (Mitsuba, CPU, tiny)."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from conftest import require_mitsuba
from diffusion_renderer.conventions import depth_range, normalize_depth
from diffusion_renderer.data.scenes import NormalMapSpec, sample_scene
from diffusion_renderer.eval.evaluate import ground_region, region_metrics
from diffusion_renderer.eval.metrics import normal_angle_deg
from diffusion_renderer.lighting.presets import resolve_envmap

render = require_mitsuba()
SIZE = (40, 48)


def rendered(spec) -> tuple[dict, dict[str, np.ndarray]]:
    """(meta, G-buffers) of ``spec`` as make-data stores them: depth normalised, its range in the meta."""
    b = render.render_clip(spec, spp=1)
    z, mask = torch.from_numpy(b.depth), torch.from_numpy(b.mask)
    meta = {"scene": spec.to_dict(), "depth_range": list(depth_range(z, mask))}
    gbuffers = {"normal": b.normal, "depth": normalize_depth(z, mask).numpy(), "mask": b.mask}
    return meta, gbuffers


def test_ground_region_is_the_rendered_plane() -> None:
    spec = sample_scene(7, resolution=SIZE, hdri_paths=[resolve_envmap("park")[1]], spp=1)
    flat = dataclasses.replace(spec, ground=dataclasses.replace(spec.ground, normal_map=None))
    meta, gb = rendered(flat)
    region = ground_region(meta, gb["depth"], gb["mask"])[0, ..., 0] > 0.5
    foreground = gb["mask"][0, ..., 0] > 0.5
    up = np.asarray(flat.camera.c2w[0])[:3, :3].T @ np.array([0.0, 1.0, 0.0])  # the plane's camera-space normal
    tilt = normal_angle_deg(gb["normal"][0], np.broadcast_to(up, gb["normal"][0].shape).astype(np.float32))
    assert region.sum() > 0.2 * region.size and not (region & ~foreground).any()
    assert (tilt[region] < 2.0).mean() > 0.97  # the region is the plane (objects' contact bands aside) ...
    objects = foreground & ~region
    assert (tilt[objects] > 10.0).any()  # ... and the objects are the rest (their up-facing tops included)
    assert region[foreground & (tilt < 2.0)].mean() > 0.8

    # a normal map changes the shading normals, not the geometry: the same region
    bumps = dataclasses.replace(
        flat, ground=dataclasses.replace(flat.ground, normal_map=NormalMapSpec("bumps", strength=0.6, uv_scale=20.0))
    )
    meta_b, gb_b = rendered(bumps)
    assert np.array_equal(ground_region(meta_b, gb_b["depth"], gb_b["mask"])[0, ..., 0] > 0.5, region)
    assert (normal_angle_deg(gb_b["normal"][0], gb["normal"][0])[region] > 5.0).mean() > 0.3

    # no ground plane: an empty ground region, every foreground pixel an object's
    meta_n, gb_n = rendered(dataclasses.replace(flat, ground=None))
    assert not ground_region(meta_n, gb_n["depth"], gb_n["mask"]).any()
    assert ground_region({"hdri": "park"}, gb["depth"], gb["mask"]) is None  # not a data-engine clip
    for bad in ({**meta, "depth_range": [2.0]}, {**meta, "scene": {**meta["scene"], "camera": {"fov_deg": 40}}}):
        assert ground_region(bad, gb["depth"], gb["mask"]) is None  # malformed: no regions, not a failed clip


def test_region_metrics_measure_each_part_alone() -> None:
    spec = sample_scene(7, resolution=SIZE, hdri_paths=[resolve_envmap("park")[1]], spp=1)
    meta, gb = rendered(spec)
    region = ground_region(meta, gb["depth"], gb["mask"]) > 0.5  # (1, H, W, 1)
    pred = {"normal": np.where(region, gb["normal"], -gb["normal"])}  # the ground right, the objects flipped
    metrics = region_metrics(pred, gb, meta)
    assert metrics["ground"]["normal_angle_mean"] < 1e-2
    assert metrics["objects"]["normal_angle_mean"] > 179.0
    assert region_metrics(pred, gb, {"hdri": "park"}) == {}
