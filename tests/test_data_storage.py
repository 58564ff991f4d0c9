"""Dataset storage (no renderer needed): clips round-trip, manifest, splits, and the layout the CLI reads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from diffusion_renderer.conventions import depth_range, normalize_depth
from diffusion_renderer.data.make_data import split_maps, split_of
from diffusion_renderer.data.storage import (
    display_rgb,
    finished_clips,
    is_finished,
    read_clip,
    write_clip,
    write_manifest,
)
from diffusion_renderer.io.layout import find_gbuffer_clips


def synthetic_clip(frames: int = 2, size: int = 12) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    normal = rng.normal(size=(frames, size, size, 3)).astype(np.float32)
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
    gbuffers = {
        "basecolor": rng.random((frames, size, size, 3), dtype=np.float32),
        "normal": normal,
        "depth": rng.random((frames, size, size, 1), dtype=np.float32) * 2 - 1,
        "roughness": rng.random((frames, size, size, 1), dtype=np.float32),
        "metallic": rng.random((frames, size, size, 1), dtype=np.float32),
        "mask": (rng.random((frames, size, size, 1)) > 0.3).astype(np.float32),
    }
    return rng.random((frames, size, size, 3), dtype=np.float32) * 4, gbuffers


def test_clip_round_trip_and_manifest(tmp_path: Path) -> None:
    rgb, gbuffers = synthetic_clip()
    write_clip(tmp_path, "val", "scene_00000007", rgb, gbuffers, {"seed": 7, "hdri": "park", "scene": {"x": 1}})
    assert is_finished(tmp_path, "val", "scene_00000007")
    clip = read_clip(tmp_path, "val", "scene_00000007")
    np.testing.assert_allclose(clip.rgb, display_rgb(rgb), atol=0.5 / 255 + 1e-6)
    for key, value in gbuffers.items():
        signed = key in ("normal", "depth")  # 16-bit PNG over the range [-1, 1]; the others 8-bit over [0, 1]
        half_step = 0.5 / 65535 * 2 if signed else 0.5 / 255
        np.testing.assert_allclose(clip.gbuffers[key], value, atol=half_step + 1e-6, err_msg=key)
    hdr = sorted((tmp_path / "val" / "hdr" / "scene_00000007").iterdir())
    assert len(hdr) == 2 and hdr[0].suffix == ".exr"
    write_manifest(tmp_path)
    lines = (tmp_path / "manifest.jsonl").read_text().splitlines()
    assert [json.loads(line)["seed"] for line in lines] == [7] and "scene" not in json.loads(lines[0])
    assert list(finished_clips(tmp_path)) == [("val", "scene_00000007")]


def test_ground_truth_folder_is_what_forward_reads(tmp_path: Path) -> None:
    rgb, gbuffers = synthetic_clip(frames=3)
    write_clip(tmp_path, "train", "scene_00000001", rgb, gbuffers, {"seed": 1})
    clips, errors = find_gbuffer_clips(tmp_path / "train", ["basecolor", "normal", "depth", "roughness", "metallic"])
    assert not errors and set(clips) == {"scene_00000001"}
    assert {k: len(v) for k, v in clips["scene_00000001"].items()} == dict.fromkeys(
        ["basecolor", "depth", "metallic", "normal", "roughness"], 3
    )


def test_splits_hold_out_maps_and_seeds() -> None:
    maps = [Path(f"m{i}.hdr") for i in range(10)]
    train, val = split_maps(maps, 0.2, seed=3)
    assert len(val) == 2 and not set(train) & set(val) and set(train) | set(val) == set(maps)
    assert split_maps(maps, 0.2, seed=3) == (train, val)  # seeded
    assert [split_of(i, 0.25) for i in range(8)] == ["train", "train", "train", "val"] * 2
    assert split_maps(maps[:1], 0.5, seed=0) == (maps[:1], maps[:1])  # one map: nothing to hold out


def test_depth_normalisation_per_clip() -> None:
    z = torch.linspace(2.0, 12.0, 2 * 10 * 10).reshape(2, 10, 10, 1)
    mask = torch.ones_like(z)
    mask[:, 0, 0] = 0  # background
    depth = normalize_depth(z, mask)
    near, far = depth_range(z, mask)
    assert 2.0 < near < far < 12.0
    assert depth[mask.bool()].min() == -1 and depth[mask.bool()].max() == 1
    assert (depth[:, 0, 0] == 1).all()  # background is far
    inside = (z > near) & (z < far) & mask.bool()
    torch.testing.assert_close(depth[inside], ((z[inside] - near) / (far - near)) * 2 - 1)
    surface = mask.bool()
    assert depth[1][surface[1]].min() >= depth[0][surface[0]].max() - 1e-6  # one scale per clip: frame 1 is farther
    with pytest.raises(TypeError):
        normalize_depth(z, mask, quantiles=0.5)  # type: ignore[arg-type]
