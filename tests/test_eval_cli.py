"""``diffusion-renderer eval`` end to end on a tiny synthetic split (32², one frame per clip) and bad input."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import require_mitsuba, run_cli
from diffusion_renderer.conventions import depth_range, normalize_depth, srgb_to_linear
from diffusion_renderer.data.scenes import LightingSpec, NormalMapSpec, sample_scene
from diffusion_renderer.data.storage import write_clip
from diffusion_renderer.eval.evaluate import (
    EvalConfig,
    ground_kind,
    ground_plane_depth,
    relight_target,
    render_forward,
)
from diffusion_renderer.lighting.presets import resolve_envmap
from diffusion_renderer.render.splitsum import SplitSumRenderer

SIZE = 32
FAST = ["--steps", "1", "--quiet"]
INVERSE_KEYS = {
    "basecolor_si_psnr",
    "basecolor_psnr",
    "normal_angle_mean",
    "normal_angle_median",
    "normal_angle_within_11.25",
    "normal_angle_within_22.5",
    "normal_angle_within_30",
    "depth_abs_rel",
    "depth_delta1",
    "roughness_rmse",
    "metallic_rmse",
}
IMAGE_KEYS = {"psnr", "psnr_fg", "psnr_exposure", "ssim", "flip"}


def synthetic_gbuffers(seed: int, plane: np.ndarray) -> tuple[dict[str, np.ndarray], list[float]]:
    """(1, 32, 32, C) G-buffers and their depth range: random materials, camera-facing normals, the depth of the
    scene's ground plane (``plane``: (H, W) planar depth) with a block standing 15 % nearer, the top rows and any
    pixel above the horizon background."""
    rng = np.random.default_rng(seed)
    normal = rng.normal(size=(1, SIZE, SIZE, 3)) * [0.3, 0.3, 0.0] + [0.0, 0.0, 1.0]
    mask = np.isfinite(plane)[None, :, :, None].astype(np.float32)
    mask[:, :6] = 0
    z = np.where(np.isfinite(plane), plane, 1.0)
    z[18:26, 8:16] *= 0.85  # an object's pixels: off the plane
    z = torch.from_numpy(z[None, :, :, None].astype(np.float32))
    gbuffers = {
        "basecolor": rng.random((1, SIZE, SIZE, 3)).astype(np.float32),
        "normal": (normal / np.linalg.norm(normal, axis=-1, keepdims=True)).astype(np.float32),
        "depth": normalize_depth(z, torch.from_numpy(mask)).numpy(),
        "roughness": rng.random((1, SIZE, SIZE, 1)).astype(np.float32),
        "metallic": (rng.random((1, SIZE, SIZE, 1)) > 0.7).astype(np.float32),
        "mask": mask,
    }
    return gbuffers, list(depth_range(z, torch.from_numpy(mask)))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """Two val clips and one train clip. Their RGB is the split-sum rendering of their own G-buffers under their
    own lighting, so ``eval forward --model classical:splitsum`` must reproduce it (up to 8-bit storage)."""
    root = tmp_path_factory.mktemp("eval") / "data"
    for seed, (split, preset) in enumerate([("val", "park"), ("val", "city"), ("train", "studio")]):
        name, path = resolve_envmap(preset)
        spec = sample_scene(seed, resolution=(SIZE, SIZE), hdri_paths=[path], spp=4)
        spec = dataclasses.replace(spec, lighting=LightingSpec(name, str(path), 1.0, 40.0 * seed, [0.0]))
        bumps = NormalMapSpec("bumps", strength=0.6) if seed == 0 else None  # one val ground of each kind
        spec = dataclasses.replace(spec, ground=dataclasses.replace(spec.ground, normal_map=bumps))
        plane = ground_plane_depth(np.asarray(spec.camera.c2w[0]), spec.camera.fov_deg, SIZE, SIZE)
        gbuffers, z_range = synthetic_gbuffers(seed, plane)
        config = EvalConfig(root, root, "forward", "classical:splitsum")
        display = render_forward(SplitSumRenderer(), gbuffers, spec, config, mask=gbuffers["mask"])
        meta = {"seed": seed, "frames": 1, "depth_range": z_range, "hdri": name, "scene": spec.to_dict()}
        write_clip(root, split, f"scene_{seed:08d}", srgb_to_linear(display), gbuffers, meta)
    return root


def check_outputs(out: Path, mode: str, model: str, keys: set[str], count: int = 2) -> dict:
    record = json.loads((out / "metrics.json").read_text())
    assert record["mode"] == mode and record["model"] == model and record["split"] == "val"
    assert record["count"] == count and record["frames"] == count and not record["failed"]
    assert {"data", "date", "version", "settings", "mean", "samples"} <= set(record)
    assert set(record["mean"]) == keys
    report = (out / "report.html").read_text()
    for sample in record["samples"]:
        assert set(sample["metrics"]) == keys
        assert all(isinstance(v, float) and math.isfinite(v) for v in sample["metrics"].values()), sample
        assert (out / sample["grid"]).is_file() and sample["grid"] in report
    by_light = record["by_light"]  # each light's mean is the mean of its own samples
    assert sum(group["count"] for group in by_light.values()) == count and "Per light" in report
    for light, group in by_light.items():
        mine = [s["metrics"] for s in record["samples"] if s["light"] == light]
        assert len(mine) == group["count"]
        for key in keys:
            assert group["mean"][key] == pytest.approx(float(np.mean([m[key] for m in mine])), rel=1e-9), key
    kinds = [sample["ground"] for sample in record["samples"]]
    assert set(kinds) <= {"normal-mapped", "flat"} and len(set(kinds)) == count  # the fixture: one of each kind
    by_ground = record["by_ground"]
    assert {kind: group["count"] for kind, group in by_ground.items()} == {k: kinds.count(k) for k in kinds}
    assert "Per ground" in report
    for kind, group in by_ground.items():
        (mine,) = [s["metrics"] for s in record["samples"] if s["ground"] == kind]
        assert group["mean"] == pytest.approx(mine, rel=1e-9)
    by_region = record["by_region"]  # the fixture's depth is its ground plane with a block standing before it
    assert set(by_region) == {"ground", "objects"} and "Per region" in report
    region_keys = keys if mode == "inverse" else {"psnr", "flip"}
    for region, group in by_region.items():
        mine = [s["regions"][region] for s in record["samples"] if region in s.get("regions", {})]
        assert group["count"] == len(mine) == count and set(group["mean"]) == region_keys
        for key in region_keys:
            assert group["mean"][key] == pytest.approx(float(np.mean([m[key] for m in mine])), rel=1e-9), key
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]
    return record


def test_ground_kind_reads_the_scene_spec() -> None:
    flat = sample_scene(3, resolution=(SIZE, SIZE), hdri_paths=[resolve_envmap("park")[1]]).to_dict()
    flat["ground"]["normal_map"] = None
    assert ground_kind({"scene": flat}) == "flat"
    flat["ground"]["normal_map"] = dataclasses.asdict(NormalMapSpec("noise"))
    assert ground_kind({"scene": flat}) == "normal-mapped"
    flat["ground"] = None
    assert ground_kind({"scene": flat}) == "none"
    assert ground_kind({"hdri": "park"}) == ""  # not a data-engine clip: no group
    flat["ground"] = "grass"
    assert ground_kind({"scene": flat}) == ""  # malformed: no group rather than a wrong one


def test_inverse_random_tiny(dataset: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "inverse"
    code, lines = run_cli(capsys, "eval", "inverse", dataset, "--out", out, "--model", "random:tiny", *FAST)
    assert code == 0, lines
    record = check_outputs(out, "inverse", "random:tiny", INVERSE_KEYS)
    assert [s["clip"] for s in record["samples"]] == ["scene_00000000", "scene_00000001"]
    assert [s["light"] for s in record["samples"]] == ["park", "city"]  # the light the input was rendered under
    assert 0.0 <= record["mean"]["depth_delta1"] <= 1.0 and 0.0 <= record["mean"]["normal_angle_mean"] <= 180.0
    assert record["settings"]["ensemble"] == 1  # random:tiny records no default: one sample, no views
    assert record["settings"]["ensemble_mirror"] is False and record["settings"]["ensemble_shift"] is False
    assert record["settings"]["basecolor_detail"] == 0.0  # and no basecolor detail
    mirrored = tmp_path / "mirrored"
    args = ("--model", "random:tiny", "--ensemble", "2", "--ensemble-mirror", "--no-ensemble-shift", *FAST)
    args += ("--basecolor-detail", "2")
    code, lines = run_cli(capsys, "eval", "inverse", dataset, "--out", mirrored, *args)
    assert code == 0, lines
    other = json.loads((mirrored / "metrics.json").read_text())
    assert other["settings"]["ensemble"] == 2 and other["settings"]["ensemble_mirror"] is True
    assert other["settings"]["ensemble_shift"] is False and other["settings"]["basecolor_detail"] == 2.0
    assert other["mean"]["normal_angle_mean"] != record["mean"]["normal_angle_mean"]


def test_forward_classical_reproduces_its_own_rendering(dataset: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "splitsum"
    code, lines = run_cli(capsys, "eval", "forward", dataset, "--out", out, "--model", "classical:splitsum", "--quiet")
    assert code == 0, lines
    record = check_outputs(out, "forward", "classical:splitsum", IMAGE_KEYS)
    assert record["mean"]["psnr"] > 40 and record["mean"]["ssim"] > 0.99 and record["mean"]["flip"] < 0.02
    for group in record["by_region"].values():  # each part of the frame reproduced too
        assert group["mean"]["psnr"] > 40 and group["mean"]["flip"] < 0.02


def test_forward_random_tiny_and_limits(dataset: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "forward"
    argv = ["eval", "forward", dataset, "--out", out, "--model", "random:tiny", "--max-clips", "1", *FAST]
    code, lines = run_cli(capsys, *argv, "--split", "train")
    assert code == 0, lines
    record = json.loads((out / "metrics.json").read_text())
    assert record["split"] == "train" and [s["clip"] for s in record["samples"]] == ["scene_00000002"]
    code, lines = run_cli(capsys, *argv, "--resolution", "16")  # processing size differs from the data's
    assert code == 0, lines
    record = check_outputs(out, "forward", "random:tiny", IMAGE_KEYS, count=1)
    assert record["settings"]["resolution"] == 16 and record["mean"]["psnr"] < 30
    assert all(group["mean"]["psnr"] < 30 for group in record["by_region"].values())


def test_known_fov_gives_a_hint_model_the_clips_camera(dataset: Path, tmp_path: Path, capsys) -> None:
    records = {}
    for flag in ((), ("--known-fov",)):
        out = tmp_path / f"forward{len(flag)}"
        argv = ["eval", "forward", dataset, "--out", out, "--model", "random:forward-medium-residual", *FAST, *flag]
        code, lines = run_cli(capsys, *argv)
        assert code == 0, lines
        records[bool(flag)] = json.loads((out / "metrics.json").read_text())
    assert records[True]["settings"]["known_fov"] and not records[False]["settings"]["known_fov"]
    assert records[False]["settings"]["correction_blur"] is None  # the pipeline's default
    assert records[False]["settings"]["fitted_shadows"] is True  # forward's G-buffers are the truth
    # the ramp-and-bumps G-buffers hold no plane to read the camera from: without it the hint takes 40 degrees
    assert records[True]["mean"]["psnr"] != records[False]["mean"]["psnr"]


def test_fitted_shadows_default_to_the_g_buffers_origin(tmp_path: Path) -> None:
    """Forward scores true G-buffers (the hint shadows through the camera read off them, as in training); relight
    scores predicted ones, whose depth casts false shadows where a camera fit passes: off unless asked."""
    import dataclasses

    from diffusion_renderer.eval.evaluate import EvalConfig, fitted_shadows

    for mode, default in (("forward", True), ("relight", False)):
        config = EvalConfig(tmp_path, tmp_path / "out", mode, "tiny")
        assert fitted_shadows(config) is default
        assert fitted_shadows(dataclasses.replace(config, fitted_shadows=not default)) is (not default)


def test_relight_renders_the_reference_once(dataset: Path, tmp_path: Path, capsys) -> None:
    require_mitsuba()
    out = tmp_path / "relight"
    argv = ["eval", "relight", dataset, "--out", out, "--model", "random:tiny", "--spp", "4", "--variant", "cpu"]
    code, lines = run_cli(capsys, *argv, *FAST)
    assert code == 0, lines
    record = check_outputs(out, "relight", "random:tiny", IMAGE_KEYS)
    assert [s["lighting"] for s in record["samples"]] == ["scene_00000001 (city)", "scene_00000000 (park)"]
    assert [s["light"] for s in record["samples"]] == ["city", "park"]  # grouped by the target light
    references = sorted((out / "references").glob("*.npz"))
    stamps = [p.stat().st_mtime_ns for p in references]
    assert len(references) == 2
    code, lines = run_cli(capsys, *argv, *FAST, "--model", "classical:splitsum", "--inverse-model", "random:tiny")
    assert code == 0, lines
    assert [p.stat().st_mtime_ns for p in references] == stamps  # cached: not rendered again
    check_outputs(out, "relight", "classical:splitsum", IMAGE_KEYS)


def test_relight_target_swaps_the_light_only() -> None:
    _, park = resolve_envmap("park")
    spec = sample_scene(3, resolution=(SIZE, SIZE), num_frames=3, hdri_paths=[park])
    other = sample_scene(4, resolution=(SIZE, SIZE), num_frames=3, hdri_paths=[park])
    target, source = relight_target(spec, other, "clip4")
    assert target.lighting.intensity == other.lighting.intensity and source == f"clip4 ({other.lighting.name})"
    assert target.lighting.frame_rotation_deg == spec.lighting.frame_rotation_deg and target.objects == spec.objects
    alone, source = relight_target(spec, None)
    assert alone.lighting.base_rotation_deg == pytest.approx((spec.lighting.base_rotation_deg + 180) % 360)
    assert source.endswith("turned 180°")


def test_bad_input_is_one_line(dataset: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    out = tmp_path / "o"
    code, lines = run_cli(capsys, "eval", "inverse", tmp_path / "missing", "--out", out, "--model", "random:tiny")
    assert code == 2 and len(lines) == 1 and "no such data folder" in lines[0], lines
    empty = tmp_path / "empty"
    (empty / "train" / "meta").mkdir(parents=True)
    code, lines = run_cli(capsys, "eval", "forward", empty, "--out", out, "--model", "random:tiny")
    assert code == 2 and len(lines) == 1 and "no finished val clips" in lines[0], lines
    code, lines = run_cli(capsys, "eval", "inverse", dataset, "--out", out, "--model", "classical:splitsum")
    assert code == 2 and len(lines) == 1 and "only renders" in lines[0], lines
    code, lines = run_cli(capsys, "eval", "forward", dataset, "--out", out, "--model", "tiny", "--correction-blur", -1)
    assert code == 2 and len(lines) == 1 and "--correction-blur must be a finite number of pixels >= 0" in lines[0]
    code, lines = run_cli(
        capsys, "eval", "inverse", dataset, "--out", out, "--model", "tiny", "--basecolor-detail", -1
    )
    assert code == 2 and len(lines) == 1 and "--basecolor-detail must be a finite number of pixels >= 0" in lines[0]
    assert not out.exists() or not list(out.iterdir())
    monkeypatch.setitem(sys.modules, "mitsuba", None)  # as if Mitsuba were not installed
    code, lines = run_cli(capsys, "eval", "relight", dataset, "--out", out, "--model", "random:tiny", *FAST)
    assert code == 2 and len(lines) == 1 and "Mitsuba is not installed" in lines[0], lines
