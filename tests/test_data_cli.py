"""make-data / show-data end to end (Mitsuba on the CPU, tiny), and the split-sum baseline against it."""

from __future__ import annotations

import json

import numpy as np

from conftest import require_mitsuba
from diffusion_renderer.cli.main import main

require_mitsuba()


def make_data(out, *extra: str) -> int:
    argv = ["make-data", "--out", str(out), "--resolution", "24", "--spp", "4", "--quiet", *extra]
    return main(argv)


def test_make_data_resumes_and_splits(tmp_path, capsys) -> None:
    out = tmp_path / "data"
    assert make_data(out, "--scenes", "4", "--frames", "2", "--val-fraction", "0.25") == 0
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [(r["clip"], r["split"]) for r in records] == [
        ("scene_00000000", "train"), ("scene_00000001", "train"), ("scene_00000002", "train"),
        ("scene_00000003", "val"),
    ]  # fmt: skip
    train_maps = {r["hdri"] for r in records if r["split"] == "train"}
    assert {r["hdri"] for r in records if r["split"] == "val"}.isdisjoint(train_maps)  # held-out lighting
    frames = sorted((out / "train" / "gbuffer_frames" / "scene_00000001").glob("*.depth.png"))
    assert [f.name for f in frames] == ["0000.0000.depth.png", "0000.0001.depth.png"]
    meta = json.loads((out / "val" / "meta" / "scene_00000003.json").read_text())
    assert meta["seed"] == 3 and len(meta["c2w"]) == 2 and "scene" in meta
    capsys.readouterr()

    before = (out / "train" / "rgb" / "scene_00000000" / "frame_0000.png").read_bytes()
    (out / "train" / "meta" / "scene_00000002.json").unlink()  # as if the run had stopped before this clip ended
    assert make_data(out, "--scenes", "4", "--frames", "2", "--val-fraction", "0.25") == 0
    assert "1 clips written, 3 already there" in capsys.readouterr().err
    assert (out / "train" / "rgb" / "scene_00000000" / "frame_0000.png").read_bytes() == before
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]

    assert main(["show-data", str(out), "--count", "3"]) == 0
    assert (out / "samples.png").stat().st_size > 0


def test_same_seed_same_files(tmp_path) -> None:
    for name in ("a", "b"):
        assert make_data(tmp_path / name, "--scenes", "1", "--seed", "11") == 0
    files = [tmp_path / n / "train" / "gbuffer_frames" / "scene_00000011" / "0000.0000.normal.png" for n in "ab"]
    assert files[0].read_bytes() == files[1].read_bytes()


def test_bad_hdri_dir_is_one_line(tmp_path, capsys) -> None:
    (tmp_path / "maps").mkdir()
    assert make_data(tmp_path / "d", "--scenes", "1", "--hdri-dir", str(tmp_path / "maps")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no environment maps" in err[0]


def test_splitsum_matches_the_path_tracer_on_a_convex_object_only() -> None:
    """The baseline's lighting model is exact up to shadowing: high PSNR on a lone sphere, low with occlusion."""
    from diffusion_renderer.eval.baseline_check import baseline_scene, compare

    convex = compare(baseline_scene("convex", 0.8, 0.0, "city", 64, 64))
    occluded = compare(baseline_scene("occluded", 0.8, 0.0, "city", 64, 64))
    assert convex > 30.0, convex
    assert occluded < convex - 8.0, (convex, occluded)
    assert np.isfinite(occluded)


def _maps(folder, names: list[str], level: float) -> list[str]:
    from diffusion_renderer.io.hdr import write_hdr

    folder.mkdir()
    for i, name in enumerate(names):  # distinct contents: byte-identical maps count as copies
        write_hdr(folder / f"{name}.hdr", np.full((8, 16, 3), level + 0.1 * i, np.float32))
    return names


def test_training_only_maps_light_training_clips_only(tmp_path) -> None:
    _maps(tmp_path / "maps", ["m0", "m1"], 0.5)
    extra = set(_maps(tmp_path / "extra", ["x0", "x1", "x2"], 2.0))
    out = tmp_path / "d"
    argv = ["--scenes", "16", "--val-fraction", "0.5", "--hdri-dir", str(tmp_path / "maps")]
    assert make_data(out, *argv, "--train-hdri-dir", str(tmp_path / "extra")) == 0
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    analytic = {
        "sunsky",
        "procedural",
        "procedural_night",
        "procedural_key",
        "procedural_area",
    }  # lights that are no map
    val = {r["hdri"] for r in records if r["split"] == "val"} - analytic
    train = {r["hdri"] for r in records if r["split"] == "train"} - analytic
    assert len(val) == 1 and val < {"m0", "m1"}  # validation: the held-out map only
    assert train & extra and not train & val  # training: its share of the maps plus the extra ones


def test_a_light_family_lights_the_training_clips_only(tmp_path) -> None:
    out = tmp_path / "area"
    assert make_data(out, "--scenes", "4", "--val-fraction", "0.25", "--light-family", "procedural_area") == 0
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [r["hdri"] for r in records if r["split"] == "train"] == ["procedural_area"] * 3
    assert [r["hdri"] for r in records if r["split"] == "val"] != ["procedural_area"]  # a held-out map as it is


def test_a_held_out_map_among_the_training_maps_is_refused(tmp_path, capsys) -> None:
    _maps(tmp_path / "maps", ["m0", "m1"], 0.5)
    (tmp_path / "extra").mkdir()
    for name in ("m0", "m1"):  # one of the two is the held-out map, whichever the split picks
        (tmp_path / "extra" / f"copy_{name}.hdr").write_bytes((tmp_path / "maps" / f"{name}.hdr").read_bytes())
    argv = ["--scenes", "2", "--val-fraction", "0.5", "--hdri-dir", str(tmp_path / "maps")]
    assert make_data(tmp_path / "d", *argv, "--train-hdri-dir", str(tmp_path / "extra")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "copy_m" in err[0] and "held-out validation map" in err[0]


def test_shards_keep_the_hdr_that_the_conditions_encode(tmp_path) -> None:
    """Both routes to training shards (make-data's shards layout, and the folder layout packed when a trainer reads
    it) store the same clip, with linear radiance and HDR environment that re-encode to the stored 8-bit rgb,
    env_ldr and env_log: what exposure augmentation relies on."""
    import torch

    from diffusion_renderer.data.mitsuba_render import environment_hdr
    from diffusion_renderer.data.scenes import SceneSpec
    from diffusion_renderer.data.shards import ENVMAP_METHOD_META, dequantize, read_shard
    from diffusion_renderer.training.frames import EXPOSED_FROM, exposed, load_frame_bank

    assert make_data(tmp_path / "folder", "--scenes", "1", "--frames", "2") == 0
    assert make_data(tmp_path / "shards", "--scenes", "1", "--frames", "2", "--layout", "shards") == 0
    banks = [load_frame_bank(tmp_path / name) for name in ("folder", "shards")]  # the folder one is packed here
    assert torch.equal(banks[0].tensors["rgb"], banks[1].tensors["rgb"])
    for key in ("rgb_linear", "env_hdr"):
        assert torch.equal(banks[0].tensors[key], banks[1].tensors[key]), key
    for bank in banks:
        assert float(bank.tensors["env_hdr"].float().amax()) > 1.0  # real HDR, not a display range
        for key, source in EXPOSED_FROM.items():
            again = exposed(key, bank.tensors[source].float())
            assert (again - dequantize(key, bank.tensors[key])).abs().max() <= 0.5 / 255 + 2e-3, key
    # the lighting is projected by area (power-preserving), as the package's own models are run, and recorded
    for shard in sorted((tmp_path / "shards").rglob("*.safetensors")):
        tensors, meta = read_shard(shard)
        assert meta[ENVMAP_METHOD_META] == "area"
        stored = tensors["env_hdr"].float()  # (T, 3, H, W) float16 as stored
        area = environment_hdr(SceneSpec.from_dict(meta["scene"]), *stored.shape[-2:], method="area")
        torch.testing.assert_close(stored, area.permute(0, 3, 1, 2), rtol=2e-3, atol=1e-3)


def test_shards_without_hints_hold_the_rest_and_serve_the_inverse_trainer(tmp_path, capsys) -> None:
    """``make-data --no-hints``: the same shards less the shading hints (the forward model's condition, which the
    inverse trainer never reads); an inverse bank loads them whole, and the folder layout refuses the flag."""
    import torch

    from diffusion_renderer.data.shards import FIXED_CAMERA_HINT, read_shard
    from diffusion_renderer.training.frames import HINT_STORED, INVERSE_KEYS, bank_keys, load_frame_bank

    clip = ("--scenes", "1", "--frames", "2", "--layout", "shards")
    assert make_data(tmp_path / "hints", *clip) == 0
    assert make_data(tmp_path / "bare", *clip, "--no-hints") == 0
    (with_hints, _), (bare, _) = (read_shard(next((tmp_path / d).rglob("*.safetensors"))) for d in ("hints", "bare"))
    hint_keys = {k for k in with_hints if k.startswith(HINT_STORED)}
    assert hint_keys == {"shading", "shading_linear", FIXED_CAMERA_HINT, f"{FIXED_CAMERA_HINT}_linear"}
    assert set(bare) == set(with_hints) - hint_keys
    for key, value in bare.items():
        assert torch.equal(value, with_hints[key]), key
    for stops in (0.0, 0.5):  # with exposure augmentation the bank keeps rgb_linear in place of rgb
        banks = [load_frame_bank(tmp_path / d, keys=bank_keys("inverse", stops)) for d in ("hints", "bare")]
        assert set(INVERSE_KEYS) - {"rgb"} < set(banks[1].tensors) == set(banks[0].tensors)
        assert all(torch.equal(banks[0].tensors[k], banks[1].tensors[k]) for k in banks[1].tensors)
    capsys.readouterr()
    assert make_data(tmp_path / "folder", "--scenes", "1", "--no-hints") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--no-hints (hints=False) is for the shards layout" in err[0]
    assert not list((tmp_path / "folder").rglob("*.png"))
