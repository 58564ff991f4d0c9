"""Training stack at tiny size on the CPU: tokenizer, shards, renderer files, examples, loss, loop, resume."""

from __future__ import annotations

import json
import math
import re
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from diffusion_renderer.checkpoints.quantization import dequantize_rows_int8, quantize_rows_int8
from diffusion_renderer.checkpoints.renderer_file import (
    average_renderer_files,
    dit_defaults,
    read_renderer_file,
    save_renderer_file,
)
from diffusion_renderer.checkpoints.safe_load import CheckpointError
from diffusion_renderer.conventions import (
    CONTEXT_INDEX,
    FORWARD_CONDITION_KEYS,
    GBUFFER_KEYS,
    INVERSE_PASSES,
    display_rgb,
    from_model,
    srgb_to_linear,
)
from diffusion_renderer.data.shards import (
    FIXED_CAMERA_HINT,
    HDR_KEYS,
    HINT_KEYS,
    HINT_VERSION_META,
    SHARD_KEYS,
    dequantize,
    encode_clip,
    read_shard,
    write_shard,
)
from diffusion_renderer.models.edm import c_in, c_noise, denoised_from_output, loss_weight
from diffusion_renderer.models.space_to_depth import SpaceToDepthTokenizer
from diffusion_renderer.models.specs import SHIPPED_DIR, ModelSpecError, load_model
from diffusion_renderer.training.examples import choose_passes, forward_example, inverse_example, latent_weights
from diffusion_renderer.training.frames import INVERSE_KEYS, FrameBank, bank_device, bank_keys, stack_shards
from diffusion_renderer.training.losses import (
    add_noise,
    edm_loss,
    edm_output_target,
    off_plane_weights,
    pure_noise_inputs,
    sample_sigma_lognormal,
)
from diffusion_renderer.training.trainer import (
    SCHEDULE_CLOCK_AFTER_STEPS,
    TrainConfig,
    Trainer,
    denoiser_loss,
    lr_at,
    schedule_fraction,
)

SIZE, FRAMES, CLIPS = 32, 3, 4


def synthetic_clip(rng: np.random.Generator) -> dict[str, torch.Tensor]:
    gbuffers = {
        "basecolor": rng.random((FRAMES, SIZE, SIZE, 3)),
        "normal": rng.random((FRAMES, SIZE, SIZE, 3)) * 2 - 1,
        "depth": rng.random((FRAMES, SIZE, SIZE, 1)) * 2 - 1,
        "roughness": rng.random((FRAMES, SIZE, SIZE, 1)),
        "metallic": rng.random((FRAMES, SIZE, SIZE, 1)),
        "mask": (rng.random((FRAMES, SIZE, SIZE, 1)) > 0.3).astype(np.float32),
    }
    env = torch.from_numpy(rng.random((FRAMES, SIZE, SIZE, 3)) * 4).float()
    return encode_clip(rng.random((FRAMES, SIZE, SIZE, 3)), gbuffers, env)


def write_synthetic_data(root, seed: int, train: int = 3, val: int = 1) -> None:
    """A make-data folder in the shards layout with ``train`` and ``val`` synthetic clips."""
    from diffusion_renderer.data.shards import shard_meta, shard_path

    rng = np.random.default_rng(seed)
    for split, count in (("train", train), ("val", val)):
        for i in range(count):
            clip = f"scene_{i:08d}"
            write_shard(shard_path(root, split, clip), synthetic_clip(rng), shard_meta({}, clip, split))


@pytest.fixture(scope="module")
def bank() -> FrameBank:
    rng = np.random.default_rng(0)
    clips = [synthetic_clip(rng) for _ in range(CLIPS)]
    return FrameBank({k: torch.stack([c[k] for c in clips]) for k in clips[0]}, [f"c{i}" for i in range(CLIPS)])


def small_config(role: str, **kwargs) -> TrainConfig:
    base = {"role": role, "model_config": "small", "batch_size": 4, "clip_frames": 2, "warmup_steps": 1}
    base.update(log_every=2, val_every=0, checkpoint_every=0, ema_decay=0.9)
    return TrainConfig(**{**base, **kwargs})


# ----------------------------------------------------------------------------------------- tokenizer, files


def test_space_to_depth_is_exact_and_any_length():
    tok = SpaceToDepthTokenizer(factor=8)
    x = torch.rand(2, 3, 5, 16, 24) * 2 - 1
    z = tok.encode(x)
    assert z.shape == (2, 192, 5, 2, 3) == (2, tok.latent_channels, *tok.latent_shape(5, 16, 24))
    assert torch.equal(tok.decode(z), x)
    with pytest.raises(ValueError, match="multiple of 8"):
        tok.latent_shape(1, 12, 16)
    assert SpaceToDepthTokenizer.from_config(tok.config()).config() == tok.config()


def test_int8_rows_error_bound_and_file_round_trip(tmp_path):
    weight = torch.randn(64, 96) * torch.logspace(-2, 1, 64)[:, None]  # rows of very different scales
    q, scale = quantize_rows_int8(weight)
    back = dequantize_rows_int8(q, scale)
    assert q.dtype == torch.int8
    assert ((back - weight).abs().amax(1) <= weight.abs().amax(1) / 254 * 1.01 + 1e-7).all()

    model = load_model("random:small", "inverse").transformer
    state = model.state_dict()
    for storage, tol in (("float32", 0.0), ("float16", 1e-2), ("int8", 2e-2)):
        path = save_renderer_file(
            tmp_path / f"{storage}.safetensors",
            state,
            role="inverse",
            dit_config=dict(model.config),
            tokenizer_config=SpaceToDepthTokenizer().config(),
            storage=storage,
        )
        loaded, meta = read_renderer_file(path)
        assert meta["role"] == "inverse" and set(loaded) == set(state)
        worst = max(float((loaded[k] - v).abs().max() / v.abs().max().clamp_min(1e-8)) for k, v in state.items())
        assert worst <= tol
    sizes = {s: (tmp_path / f"{s}.safetensors").stat().st_size for s in ("float32", "float16", "int8")}
    assert sizes["int8"] < 0.3 * sizes["float32"]
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a file")
    with pytest.raises(CheckpointError, match=r"bad\.safetensors"):
        read_renderer_file(bad)
    with pytest.raises(ModelSpecError, match="inverse model, not the forward"):
        load_model(str(tmp_path / "int8.safetensors"), "forward")


def load_tool(name: str):
    """The module of ``tools/{name}.py`` (the tools are scripts, not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "tools" / f"{name}.py")
    tool = importlib.util.module_from_spec(spec)
    sys.modules[name] = tool  # dataclasses look their module up while the tool runs
    spec.loader.exec_module(tool)
    return tool


def test_averaged_renderer_files_are_the_weighted_mean(tmp_path, capsys):
    """tools/average_weights.py: the weighted mean of two fine-tunes, the first file's config, each source's
    record; files of another role, DiT config or other tensors are refused in one line naming the file. diffusers'
    bookkeeping keys do not count: ``_use_default_values`` is a set, written in each process's hash order."""
    tool = load_tool("average_weights")
    g = torch.Generator().manual_seed(0)
    config = {"in_channels": 4}
    defaults = [["base_fps", "img_context_dim_in"], ["img_context_dim_in", "base_fps"]]  # one set, two orders
    states = [{"w": torch.randn(8, 8, generator=g), "b": torch.randn(8, generator=g)} for _ in range(2)]
    for i, state in enumerate(states):
        save_renderer_file(tmp_path / f"{i}.safetensors", state, role="inverse",
                           dit_config={**config, "_use_default_values": defaults[i]},
                           tokenizer_config={}, record={"run": i})  # fmt: skip
    out = tmp_path / "soup.safetensors"
    assert tool.main([str(tmp_path / "0.safetensors"), str(tmp_path / "1.safetensors"), "--weights", "1", "3",
                      "--out", str(out), "--storage", "float32"]) == 0  # fmt: skip
    soup, meta = read_renderer_file(out)
    for key in ("w", "b"):
        torch.testing.assert_close(soup[key], 0.25 * states[0][key] + 0.75 * states[1][key])
    assert meta["role"] == "inverse" and meta["record"]["run"] == 0
    assert [(s["weight"], s["record"]["run"]) for s in meta["record"]["averaged_from"]] == [(1.0, 0), (3.0, 1)]
    save_renderer_file(tmp_path / "fwd.safetensors", states[0], role="forward", dit_config=config, tokenizer_config={})
    save_renderer_file(tmp_path / "other.safetensors", {"w": states[0]["w"]}, role="inverse", dit_config=config,
                       tokenizer_config={})  # fmt: skip
    save_renderer_file(tmp_path / "wide.safetensors", states[1], role="inverse", dit_config={"in_channels": 8},
                       tokenizer_config={})  # fmt: skip
    capsys.readouterr()
    for other, message in (
        ("fwd", "fwd.safetensors: another role than"),
        ("wide", "wide.safetensors: another dit_config than"),
        ("other", "other.safetensors: other tensors"),
    ):
        assert (
            tool.main([str(tmp_path / "0.safetensors"), str(tmp_path / f"{other}.safetensors"), "--out", str(out)])
            == 1
        )
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0]


def test_retargeted_forward_file_keeps_its_weights_and_takes_the_new_hint(tmp_path, capsys):
    """tools/retarget_hint.py: a version 4 forward file moved to version 5 keeps every stored tensor bit for bit and
    its record (with ``hint_version_from``), its config saying version 5; moves that would change more than the
    shadow test's sampling (another version, an inverse file) are refused in one line naming the file."""
    from safetensors import safe_open

    tool = load_tool("retarget_hint")
    model = load_model("random:forward-medium-normalized", "forward").transformer
    state = dict(model.state_dict())
    source, out = tmp_path / "v4.safetensors", tmp_path / "v5.safetensors"
    save_renderer_file(source, state, role="forward", dit_config=dict(model.config), tokenizer_config={"name": "s2d"},
                       storage="int8", record={"run": 42})  # fmt: skip
    assert tool.main([str(source), "--hint-version", "5", "--out", str(out)]) == 0
    with safe_open(str(source), "pt") as a, safe_open(str(out), "pt") as b:
        names = list(a.keys())
        assert set(names) == set(b.keys()) and all(torch.equal(a.get_tensor(k), b.get_tensor(k)) for k in names)
    _, meta = read_renderer_file(out)
    assert meta["dit_config"]["shading_hint"] == 5 and meta["storage"] == "int8"
    assert meta["record"] == {"run": 42, "hint_version_from": 4}
    save_renderer_file(tmp_path / "v3.safetensors", state, role="forward",
                       dit_config={**dict(model.config), "shading_hint": 3}, tokenizer_config={})  # fmt: skip
    save_renderer_file(tmp_path / "inv.safetensors", {"w": torch.ones(2)}, role="inverse", dit_config={},
                       tokenizer_config={})  # fmt: skip
    capsys.readouterr()
    for name in ("v3", "inv"):
        assert tool.main([str(tmp_path / f"{name}.safetensors"), "--hint-version", "5", "--out", str(out)]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"{name}.safetensors: a " in err[0] and "only forward models move" in err[0]


def test_averaging_fills_config_keys_a_file_predates(tmp_path):
    """A file written before a DiT config key existed (the shipped inverse lacks ``exposure_level``) averages
    with its own fine-tune, which writes the key at its default; a non-default value is still another config."""
    assert dit_defaults()["exposure_level"] == 0.0
    state = {"w": torch.ones(2, 2)}
    for name, extra in (("old", {}), ("new", {"exposure_level": 0.0}), ("lit", {"exposure_level": 0.18})):
        save_renderer_file(tmp_path / f"{name}.safetensors", state, role="inverse",
                           dit_config={"in_channels": 4, **extra}, tokenizer_config={})  # fmt: skip
    soup, _ = average_renderer_files([tmp_path / "old.safetensors", tmp_path / "new.safetensors"])
    torch.testing.assert_close(soup["w"], state["w"])
    with pytest.raises(CheckpointError, match=r"lit\.safetensors: another dit_config"):
        average_renderer_files([tmp_path / "old.safetensors", tmp_path / "lit.safetensors"])


def test_shards_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    clip = synthetic_clip(rng)
    assert set(clip) == set(SHARD_KEYS) | set(HDR_KEYS) | set(HINT_KEYS) | {FIXED_CAMERA_HINT}
    assert clip["normal"].dtype == torch.uint16 and clip["rgb"].dtype == torch.uint8
    # the stored hint is its linear radiance display-encoded like rgb (8 bits)
    hint = torch.from_numpy(display_rgb(clip["shading_linear"].float().numpy()))
    assert (
        clip["shading"].dtype == torch.uint8
        and (dequantize("shading", clip["shading"]) - hint).abs().max() <= 0.5 / 255 + 1e-3
    )
    assert all(clip[k].dtype == torch.float16 and clip[k].shape == clip["rgb"].shape for k in HDR_KEYS)
    path = write_shard(tmp_path / "scene_00000001.safetensors", clip, {"clip": "scene_00000001", "seed": 1})
    tensors, meta = read_shard(path)
    assert meta["seed"] == 1 and all(torch.equal(tensors[k], clip[k]) for k in clip)
    normal = dequantize("normal", tensors["normal"])
    assert normal.min() >= -1 and normal.max() <= 1
    stacked, names, version = stack_shards([path, path], first_frames=1)
    assert stacked["rgb"].shape == (2, 1, 3, SIZE, SIZE) and names == ["scene_00000001"] * 2 and version == 1
    # hints of two versions (render/hint.py) are not stacked together; a bank refuses clips of another version
    newer = write_shard(tmp_path / "scene_00000003.safetensors", clip, {"clip": "newer", HINT_VERSION_META: 2})
    two, _, version = stack_shards([path, newer])
    assert version is None and not set(two) & {*HINT_KEYS, "shading_linear"} and "rgb_linear" in two
    with pytest.raises(ValueError, match="newer: shading hints of version 2, not 1"):
        FrameBank(*stack_shards([path])).add(*stack_shards([newer]))
    # A shard from before the HDR tensors: a mixed folder stacks without them, every key covering every clip.
    old = write_shard(tmp_path / "scene_00000002.safetensors", {k: clip[k] for k in SHARD_KEYS}, {"clip": "old"})
    mixed, names, _ = stack_shards([path, old])
    assert set(mixed) == set(SHARD_KEYS) and all(v.shape[0] == 2 for v in mixed.values())
    bank = FrameBank(mixed, names)
    bank.add(*stack_shards([path]))  # new clips' extra keys are left out
    assert set(bank.tensors) == set(SHARD_KEYS) and bank.num_clips == 3
    hdr_bank = FrameBank(*stack_shards([path]))
    with pytest.raises(ValueError, match="old: no env_hdr, rgb_linear"):
        hdr_bank.add(*stack_shards([old]))
    with pytest.raises(ValueError, match=r"missing\.safetensors: no such file"):
        read_shard(tmp_path / "missing.safetensors")


# ----------------------------------------------------------------------------------------- examples and loss


def test_bank_batches_and_exact_mirror(bank):
    g = torch.Generator().manual_seed(0)
    batch = bank.sample(6, 2, g)
    assert set(batch) == set(SHARD_KEYS) - {"mask"} | {"env_nrm", *HINT_KEYS}
    assert all(v.shape == (6, 3, 2, SIZE, SIZE) and v.min() >= -1 and v.max() <= 1 for v in batch.values())
    # The mirror is exact: a flipped batch equals the unflipped one mirrored, with normal x negated.
    plain = bank.sample(1, 1, torch.Generator().manual_seed(5), flip=False)
    for seed in range(20):
        flipped = bank.sample(1, 1, torch.Generator().manual_seed(seed))
        if not torch.equal(flipped["rgb"], plain["rgb"]) and torch.equal(flipped["rgb"], plain["rgb"].flip(-1)):
            assert torch.equal(flipped["normal"][:, 0], -plain["normal"][:, 0].flip(-1))
            assert torch.equal(flipped["env_ldr"], plain["env_ldr"].flip(-1))
            break


def test_exposure_scales_frame_and_light_by_one_gain(bank):
    """rgb and env_log of an exposed batch are the stored radiance and environment times the same per-example
    gain (read back through the sRGB and log encodings), with gains spread over ±stops."""
    from diffusion_renderer.lighting.envmap import LOG_SCALE

    one = FrameBank({k: v[:1] for k, v in bank.tensors.items()}, ["c0"])  # one clip: every example is frame 0..T
    batch = one.sample(16, FRAMES, torch.Generator().manual_seed(3), flip=False, exposure_stops=2.0)
    stored = {k: one.tensors[k][0].float().transpose(0, 1)[None] for k in HDR_KEYS}  # (1, 3, T, H, W)
    rgb = srgb_to_linear((batch["rgb"] + 1) / 2)
    env = torch.expm1(srgb_to_linear((batch["env_log"] + 1) / 2) * math.log1p(LOG_SCALE))

    def gains(encoded: torch.Tensor, radiance: torch.Tensor, top: float) -> torch.Tensor:
        ratio = encoded / radiance.clamp_min(1e-3)
        valid = (radiance > 0.05) & (encoded > 1e-3) & (encoded < top)  # neither black nor clipped
        return torch.stack([r[v].median() for r, v in zip(ratio, valid, strict=True)])

    k_rgb = gains(rgb, stored["rgb_linear"], 0.99)
    k_env = gains(env, stored["env_hdr"], LOG_SCALE * 0.9)
    k_hint = gains(srgb_to_linear((batch["shading"] + 1) / 2), stored["shading_linear"], 0.99)
    assert torch.allclose(k_rgb, k_env, rtol=1e-3) and torch.allclose(k_rgb, k_hint, rtol=1e-3)
    assert k_rgb.min() >= 0.25 * 0.999 and k_rgb.max() <= 4.0 * 1.001 and k_rgb.max() / k_rgb.min() > 2
    # Without exposure the batch is the stored 8-bit encodings; with ±0 stops (gain 1) they agree to 8 bits.
    plain = one.sample(4, FRAMES, torch.Generator().manual_seed(3), flip=False)
    near = one.sample(4, FRAMES, torch.Generator().manual_seed(3), flip=False, exposure_stops=1e-9)
    for key in ("rgb", "env_ldr", "env_log", "shading"):
        assert (plain[key] - near[key]).abs().max() <= 2 / 255 + 1e-3, key
    old = FrameBank({k: v for k, v in bank.tensors.items() if k not in HDR_KEYS}, bank.names)
    assert old.missing_hdr() == ["env_hdr", "rgb_linear", "shading_fixed_linear", "shading_linear"]
    with pytest.raises(ValueError, match="env_hdr, rgb_linear"):
        old.sample(2, 1, torch.Generator(), exposure_stops=1.0)


def test_exposure_normalisation_brings_every_light_to_the_models_hint_level(bank):
    """With an exposure level, each example's light is scaled so that its hint has that level, and its frame with
    it: the batch does not depend on the light's strength (a bank four times as bright draws the same batch, and so
    does exposure augmentation), while without it the brighter bank draws brighter frames."""
    from diffusion_renderer.render.hint import hint_level

    frames = bank.tensors["shading_linear"].float().flatten(0, 1)[:, None]  # (N T, 1, 3, H, W): one clip a frame
    level = 0.25 * float(hint_level(frames, channel_dim=2).min())  # every example is dimmed: no bound reached
    bright = FrameBank({k: v * 4 if k in HDR_KEYS else v for k, v in bank.tensors.items()}, bank.names)
    keys = ("rgb", "env_ldr", "env_log", "shading")

    def draw(source: FrameBank, **kwargs) -> dict[str, torch.Tensor]:
        return source.sample(8, FRAMES, torch.Generator().manual_seed(4), flip=False, keys=keys, **kwargs)

    normal = draw(bank, exposure_level=level)
    for other in (draw(bright, exposure_level=level), draw(bank, exposure_level=level, exposure_stops=1.5)):
        assert all(torch.allclose(normal[k], other[k], atol=1e-4) for k in keys)
    hint = srgb_to_linear((normal["shading"] + 1) / 2)  # (B, 3, T, H, W)
    assert torch.allclose(hint_level(hint, channel_dim=1), torch.full((8,), level), rtol=1e-3)
    plain, brighter = draw(bank, exposure_stops=1e-9), draw(bright, exposure_stops=1e-9)  # re-made from the HDR
    assert not torch.allclose(plain["rgb"], brighter["rgb"], atol=0.05)
    old = FrameBank({k: v for k, v in bank.tensors.items() if k not in HDR_KEYS}, bank.names)
    with pytest.raises(ValueError, match="exposure normalisation needs env_hdr"):
        old.sample(2, 1, torch.Generator(), exposure_level=level)


@pytest.mark.parametrize("stops", [0.0, 1.0])
def test_a_share_of_hints_comes_through_the_fixed_camera(bank, stops):
    """With a fixed-camera share, each example's hint is either its own or the fixed-camera one (re-exposed like
    it), both occur, and every other draw (clip, frames, mirror, exposure) is the one a run without it makes."""
    tensors = dict(bank.tensors)
    tensors[FIXED_CAMERA_HINT] = torch.zeros_like(tensors["shading"])  # tell the two hints apart: black
    tensors[f"{FIXED_CAMERA_HINT}_linear"] = torch.zeros_like(tensors["shading_linear"])
    marked = FrameBank(tensors, bank.names)
    plain = marked.sample(32, 2, torch.Generator().manual_seed(5), exposure_stops=stops)
    mixed = marked.sample(32, 2, torch.Generator().manual_seed(5), exposure_stops=stops, fixed_camera_share=0.5)
    for key in ("rgb", "basecolor", "normal", "env_ldr"):
        assert torch.equal(plain[key], mixed[key]), key
    own = (mixed["shading"] == plain["shading"]).flatten(1).all(1)
    black = (mixed["shading"] == -1).flatten(1).all(1)  # zero radiance in the model's [-1, 1]
    assert bool((own | black).all()) and 8 < int(black.sum()) < 24 and not bool((plain["shading"] == -1).all())
    never = marked.sample(32, 2, torch.Generator().manual_seed(5), exposure_stops=stops, fixed_camera_share=0.0)
    assert torch.equal(never["shading"], plain["shading"])
    with pytest.raises(ValueError, match="shading_fixed in the shards"):
        FrameBank({k: v for k, v in bank.tensors.items() if not k.startswith(FIXED_CAMERA_HINT)}).sample(
            2, 1, torch.Generator(), fixed_camera_share=0.5
        )


LEAN_CASES = [("inverse", 0.0, 0.0), ("inverse", 0.5, 0.0), ("forward", 0.0, 0.0), ("forward", 1.5, 0.5)]


@pytest.mark.parametrize(("role", "stops", "share"), LEAN_CASES)
def test_a_bank_of_its_trainers_keys_draws_the_same_batches(tmp_path, role, stops, share):
    """A bank that keeps only what its trainer reads (``bank_keys``: with exposure, the HDR forms in place of the
    display encodings re-made from them) is smaller and draws batches equal to the full bank's."""
    from diffusion_renderer.data.shards import list_shards

    write_synthetic_data(tmp_path, seed=7, train=3, val=0)
    paths = list_shards(tmp_path, "train")
    full = FrameBank(*stack_shards(paths))
    lean = FrameBank(*stack_shards(paths, keys=bank_keys(role, stops, share)))
    nbytes = [b.nbytes for b in (full, lean)]
    assert nbytes[1] < 0.75 * nbytes[0] and "mask" not in lean.tensors and lean.hint_version == full.hint_version
    if role == "inverse":
        assert not {"env_ldr", "env_hdr", *HINT_KEYS} & set(lean.tensors)
    assert ("rgb" in lean.tensors) == (stops == 0) and ("rgb_linear" in lean.tensors) == (stops > 0)
    keys = INVERSE_KEYS if role == "inverse" else None
    draw = {"exposure_stops": stops, "fixed_camera_share": share, "keys": keys}
    want = full.sample(8, 2, torch.Generator().manual_seed(2), **draw)
    got = lean.sample(8, 2, torch.Generator().manual_seed(2), **draw)
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
    if stops > 0:  # drawn without exposure, the display encodings are re-made at gain 1: the stored ones to 8 bits
        plain = {k: full.sample(4, 1, torch.Generator().manual_seed(3), keys=keys)[k] for k in ("rgb",)}
        remade = lean.sample(4, 1, torch.Generator().manual_seed(3), keys=keys)
        assert (plain["rgb"] - remade["rgb"]).abs().max() <= 2 / 255 + 1e-3


def test_a_lean_bank_refuses_a_shard_without_the_hdr_it_keeps(tmp_path):
    from diffusion_renderer.data.shards import list_shards, shard_meta, shard_path

    write_synthetic_data(tmp_path, seed=8, train=2, val=0)
    clip = synthetic_clip(np.random.default_rng(9))
    old = shard_path(tmp_path, "train", "scene_00000009")  # after the others in name order
    write_shard(old, {k: clip[k] for k in SHARD_KEYS}, shard_meta({}, "scene_00000009", "train"))
    paths = list_shards(tmp_path, "train")
    with pytest.raises(ValueError, match=r"scene_00000009\.safetensors: no rgb_linear, which the other shards have"):
        stack_shards(paths, keys=bank_keys("inverse", exposure_stops=0.5))
    assert set(stack_shards(paths, keys=bank_keys("inverse"))[0]) == {"rgb", *INVERSE_PASSES}  # no HDR asked for


def test_the_bank_lives_on_the_gpu_only_when_it_fits(monkeypatch):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (100, 200))  # 100 bytes free
    assert bank_device(35, "cuda") == torch.device("cuda")
    assert bank_device(36, "cuda") == torch.device("cpu")  # over 35 % of the free memory: host memory
    assert bank_device(10**12, "cpu") == torch.device("cpu")


def test_examples_follow_the_inference_layout(bank):
    tok = SpaceToDepthTokenizer()
    g = torch.Generator().manual_seed(0)
    batch = bank.sample(8, 1, g)
    inv = inverse_example(batch, tok, g, condition_drop=0.0)
    assert inv.condition.latent_condition.shape == inv.x0.shape == (8, 192, 1, 4, 4)
    # Each target is the pass its context index names.
    for b in range(8):
        index = int(inv.condition.context_index[b])
        name = next(p for p in INVERSE_PASSES if CONTEXT_INDEX[p] == index)
        assert torch.equal(inv.x0[b], tok.encode(batch[name][b : b + 1])[0])
    dropped = inverse_example(batch, tok, g, condition_drop=1.0)
    assert not dropped.condition.latent_condition.any()

    fwd = forward_example(batch, tok, g, key_drop=0.0, condition_drop=0.0)
    cond = fwd.condition.latent_condition  # (B, 8 x 193, T, h, w)
    assert cond.shape[1] == len(FORWARD_CONDITION_KEYS) * 193
    masks = cond[:, 192::193]
    assert torch.equal(masks, torch.ones_like(masks))
    real = forward_example(batch, tok, g, key_drop=0.0, condition_drop=0.0, drop_lighting=True)
    per_key = real.condition.latent_condition.unflatten(1, (len(FORWARD_CONDITION_KEYS), 193))
    assert per_key[:, len(GBUFFER_KEYS) :].abs().sum() == 0 and per_key[:, : len(GBUFFER_KEYS)].abs().sum() > 0


def test_pass_weights_set_how_often_each_pass_is_the_target(bank):
    tok = SpaceToDepthTokenizer()
    batch = bank.sample(8, 1, torch.Generator().manual_seed(0))
    only = [1.0 if p == "normal" else 0.0 for p in INVERSE_PASSES]
    inv = inverse_example(batch, tok, torch.Generator().manual_seed(1), condition_drop=0.0, pass_weights=only)
    assert inv.condition.context_index.flatten().tolist() == [CONTEXT_INDEX["normal"]] * 8
    weights = [3.0, 1.0, 0.0, 0.0, 0.0]
    chosen = choose_passes(5, 40_000, torch.Generator().manual_seed(2), torch.device("cpu"), weights)
    share = torch.bincount(chosen, minlength=5).float() / len(chosen)
    assert torch.allclose(share, torch.tensor(weights) / 4, atol=0.01)
    uniform = choose_passes(5, 64, torch.Generator().manual_seed(3), torch.device("cpu"))  # the official draw
    assert torch.equal(uniform, torch.randint(5, (64,), generator=torch.Generator().manual_seed(3)))
    with pytest.raises(ValueError, match="5 non-negative numbers"):
        choose_passes(5, 4, torch.Generator(), torch.device("cpu"), [1.0, -1.0, 1.0, 1.0, 1.0])


def test_edm_loss_is_the_weighted_denoising_error():
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(5, 4, 1, 2, 2, generator=g)
    sigma = sample_sigma_lognormal(5, g)
    assert (sigma >= 2e-4).all() and (sigma <= 80).all()
    noisy = add_noise(x0, sigma, torch.randn(x0.shape, generator=g))
    output = torch.randn(x0.shape, generator=g)
    s = sigma.view(-1, 1, 1, 1, 1)
    weighted = loss_weight(s) * (denoised_from_output(noisy, output, s) - x0).square()
    assert torch.allclose(edm_loss(output, x0, noisy, sigma), weighted.flatten(1).mean(1), rtol=1e-4)
    exact = edm_output_target(x0, noisy, sigma)
    assert edm_loss(exact, x0, noisy, sigma).max() < 1e-10
    assert torch.allclose(denoised_from_output(noisy, exact, s), x0, atol=1e-5)


def test_edm_loss_weights_each_element():
    g = torch.Generator().manual_seed(0)
    x0, output = torch.randn(3, 4, 1, 2, 2, generator=g), torch.randn(3, 4, 1, 2, 2, generator=g)
    sigma = torch.tensor([0.3, 1.0, 5.0])
    noisy = add_noise(x0, sigma, torch.randn(x0.shape, generator=g))
    plain = edm_loss(output, x0, noisy, sigma)
    assert torch.allclose(edm_loss(output, x0, noisy, sigma, weight=torch.ones_like(x0)), plain)
    exact = edm_output_target(x0, noisy, sigma)
    wrong_half = exact.clone()
    wrong_half[:, :2] += 1.0  # an error of 1 on half the elements
    weight = torch.ones_like(x0)
    weight[:, :2] = 0.0  # ... that the weights ignore
    assert edm_loss(wrong_half, x0, noisy, sigma, weight=weight).max() < 1e-10
    assert torch.allclose(edm_loss(wrong_half, x0, noisy, sigma, weight=2 - weight), torch.full((3,), 1.0))


def test_off_plane_weights_mark_what_leaves_the_dominant_surface():
    up = torch.tensor([0.0, 0.6, 0.8])  # a ground seen from above at an angle: the frame's dominant normal
    tilted = torch.tensor([0.6, 0.0, 0.8])  # an object's side: 53 degrees away
    normal = up.view(1, 3, 1, 1, 1).repeat(2, 1, 2, 8, 8)  # (B, 3, T, H, W)
    normal[0, :, 0, :2, :3] = tilted.view(3, 1, 1)  # 6 object pixels in frame 0 of example 0
    normal[0, :, 0, 7, :] = 0.0  # a background row: weight 1
    normal[0, :, 1, 0, 0] = torch.tensor([0.0, 0.66, 0.75])  # 5 degrees off: still the surface
    normal[1, :, 1] = tilted.view(3, 1, 1)  # frame 1 of example 1 sees only the object: its own dominant normal
    w = off_plane_weights(normal, 4.0)
    assert w.shape == (2, 1, 2, 8, 8)
    assert torch.allclose(w.flatten(1).mean(1), torch.ones(2))  # mean 1 per example
    raw = w[0, 0] / w[0, 0, 1, 7, 7]  # the weights before normalisation: 4 off the surface, 1 elsewhere
    expected = torch.ones(2, 8, 8)
    expected[0, :2, :3] = 4.0
    assert torch.allclose(raw, expected)
    assert torch.allclose(w[1], torch.ones_like(w[1]))  # each frame has its own dominant surface


def test_inverse_examples_carry_the_off_plane_weights_to_the_latent(bank):
    tok = SpaceToDepthTokenizer()
    batch = bank.sample(4, 1, torch.Generator().manual_seed(0))
    plain = inverse_example(batch, tok, torch.Generator().manual_seed(1))
    weighted = inverse_example(batch, tok, torch.Generator().manual_seed(1), off_plane_weight=3.0)
    assert plain.weight is None and torch.equal(plain.x0, weighted.x0)  # the same draws, the same target
    pixels = off_plane_weights(batch["normal"], 3.0)
    assert weighted.weight.shape == weighted.x0.shape
    assert torch.allclose(tok.decode(weighted.weight), pixels.expand(-1, 3, -1, -1, -1))  # pixel-aligned
    with pytest.raises(ValueError, match="space-to-depth"):
        latent_weights(pixels, object())  # a tokenizer that mixes pixels has no per-pixel latent


def test_pure_noise_inputs_are_the_samplers_first_input():
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(4, 3, 1, 2, 2, generator=g), torch.randn(4, 3, 1, 2, 2, generator=g)
    sigma = torch.tensor([0.5, 1.0, 2.0, 3.0])
    pure = torch.tensor([True, False, True, False])
    noisy, new_sigma = pure_noise_inputs(add_noise(x0, sigma, noise), sigma, noise, pure)
    assert new_sigma.tolist() == [80.0, 1.0, 80.0, 3.0]
    assert torch.allclose(noisy[pure], noise[pure] * math.sqrt(80.0**2 + 1))  # no x0 in it: as x_T
    assert torch.equal(noisy[~pure], add_noise(x0, sigma, noise)[~pure])


def test_lr_schedule():
    cfg = TrainConfig(steps=100, warmup_steps=10, lr=1.0, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(0.1) and lr_at(10, cfg) == pytest.approx(1.0)
    assert lr_at(100, cfg) == pytest.approx(0.1) and lr_at(20, cfg, time_fraction=1.0) == pytest.approx(0.1)


def test_schedule_fraction_counts_the_time_left_after_the_first_steps():
    assert schedule_fraction(50.0, 0.0, None, 100.0) == 0.0  # still compiling: the cosine has not started
    assert schedule_fraction(60.0, 0.0, 60.0, 100.0) == 0.0
    assert schedule_fraction(80.0, 0.0, 60.0, 100.0) == pytest.approx(0.5)  # half of the 40 s left at the clock
    assert schedule_fraction(100.0, 0.0, 60.0, 100.0) == pytest.approx(1.0)
    assert schedule_fraction(130.0, 0.0, 120.0, 100.0) == 1.0  # the first steps alone outlasted the limit


def test_a_slow_first_step_does_not_use_up_a_time_limited_schedule(bank, tmp_path, monkeypatch):
    """A compile-like 0.4 s first step in a 0.8 s limit: the cosine starts after the first steps, not half spent."""
    trainer = Trainer(small_config("inverse", steps=10_000), tmp_path, bank, progress=False)
    fractions: list[float] = []

    def step(fraction: float = 0.0) -> float:
        time.sleep(0.4 if not fractions else 0.002)
        fractions.append(fraction)
        trainer.step += 1
        return 0.0

    monkeypatch.setattr(trainer, "train_step", step)
    trainer.fit(time_limit_s=0.8)
    assert fractions[:SCHEDULE_CLOCK_AFTER_STEPS] == [0.0] * SCHEDULE_CLOCK_AFTER_STEPS
    later = fractions[SCHEDULE_CLOCK_AFTER_STEPS:]
    assert later[0] < 0.1 and max(later) > 0.8  # the whole cosine in the time left, then the limit stops it
    records = [json.loads(line) for line in (tmp_path / "inverse.log.jsonl").read_text().splitlines()]
    clock = [r for r in records if "schedule_clock_start_s" in r]
    assert len(clock) == 1 and clock[0]["step"] == SCHEDULE_CLOCK_AFTER_STEPS
    assert clock[0]["schedule_clock_start_s"] >= 0.4  # the slow first step is on record


def test_compile_blocks_compiles_each_block_in_place(bank):
    trainer = Trainer(small_config("inverse", compile_blocks=True), "unused", bank, progress=False)
    assert trainer.forward_fn is trainer.model  # not wrapped: the state dict keeps its names
    assert all(block._compiled_call_impl is not None for block in trainer.model.transformer_blocks)
    assert (
        Trainer(small_config("inverse"), "unused", bank, progress=False)
        .model.transformer_blocks[0]
        ._compiled_call_impl
        is None
    )


# ----------------------------------------------------------------------------------------- the loop


@pytest.mark.parametrize(("role", "off_plane_weight"), [("inverse", 1.0), ("inverse", 3.0), ("forward", 1.0)])
def test_training_reduces_the_loss_on_a_fixed_batch(bank, role, off_plane_weight):
    torch.manual_seed(0)
    config = small_config(role, lr=2e-3, off_plane_weight=off_plane_weight)
    trainer = Trainer(config, "unused", bank, progress=False)
    g = torch.Generator().manual_seed(3)
    example = trainer.example(bank.sample(4, 1, g))
    assert (example.weight is None) == (off_plane_weight == 1.0)  # the trainer's setting reaches its examples

    def fixed_loss() -> float:
        with torch.no_grad():
            return float(denoiser_loss(trainer.model, example, torch.Generator().manual_seed(7))[0])

    before = fixed_loss()
    for _ in range(12):
        loss, _ = denoiser_loss(trainer.model, example, torch.Generator().manual_seed(7))
        trainer.optimizer.zero_grad()
        loss.backward()
        trainer.optimizer.step()
    assert fixed_loss() < 0.7 * before


def test_resume_continues_exactly(bank, tmp_path):
    straight = Trainer(small_config("inverse", steps=4), tmp_path / "a", bank, bank, progress=False)
    straight.fit()
    first = Trainer(small_config("inverse", steps=4), tmp_path / "b", bank, bank, progress=False)
    first.fit(steps=2)
    resumed = Trainer(small_config("inverse", steps=4), tmp_path / "b", bank, bank, progress=False)
    assert resumed.resume() and resumed.step == 2
    resumed.fit()
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    # The written model is a model spec, with its provenance.
    model = load_model(str(tmp_path / "b"), "inverse")
    assert model.record["steps"] == 4 and isinstance(model.tokenizer, SpaceToDepthTokenizer)
    assert (tmp_path / "b" / "inverse.log.jsonl").is_file()


def test_validation_writes_a_grid(bank, tmp_path):
    trainer = Trainer(small_config("forward", val_steps=1), tmp_path, bank, bank, progress=False)
    figures = trainer.validate()
    assert set(figures) == {"val_psnr_rgb"} and np.isfinite(figures["val_psnr_rgb"])
    assert (tmp_path / "forward.val" / "step_0000000.png").is_file()


def test_validation_takes_frame_0_of_distinct_clips(bank, tmp_path):
    first = FrameBank({k: v[:, :1] for k, v in bank.tensors.items()}, bank.names)  # the val bank: frame 0 per clip
    trainer = Trainer(small_config("inverse"), tmp_path, bank, first, progress=False)
    rgb = from_model("rgb", trainer.val_batch["rgb"])  # (B, 3, 1, H, W)
    assert rgb.shape[0] == CLIPS  # fewer clips than VAL_SAMPLES: each once, in order, not mirrored
    for b in range(CLIPS):
        expected = dequantize("rgb", bank.tensors["rgb"][b, 0])  # (3, H, W)
        torch.testing.assert_close(rgb[b, :, 0], expected, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="clips of shape"):
        first.sample(3, 1, torch.Generator(), clips=torch.arange(2))


# ----------------------------------------------------------------------------------------- the shipped model


@pytest.mark.parametrize("role", ["inverse", "forward"])
def test_shipped_model_loads_and_renders_in_range(role):
    model = load_model("tiny", role)
    assert model.record["default_steps"] >= 1 and model.record["total_steps"] > 0
    size = sum(p.numel() for p in model.transformer.parameters())
    assert 1e6 < size < 16e6
    # the weight budget of the repository: both files together <= 16 MiB (a GPU run carries the working tree)
    assert sum(path.stat().st_size for path in SHIPPED_DIR.joinpath("tiny").glob("*.safetensors")) <= 16 * 2**20
    x = torch.zeros(1, 192, 1, 4, 4)
    kwargs = {"latent_condition": torch.zeros(1, model.transformer.condition_channels, 1, 4, 4)}
    if role == "inverse":
        kwargs["context_index"] = torch.tensor([[0]])
    with torch.no_grad():
        out = model.transformer(c_in(80.0) * x, c_noise(torch.tensor([80.0])), **kwargs).sample
    assert torch.isfinite(out).all()


def test_train_command_end_to_end_and_resume(tmp_path, capsys):
    from diffusion_renderer.cli.main import main

    write_synthetic_data(tmp_path / "data", seed=2)
    out = tmp_path / "run"
    args = ["train", "forward", "--data", str(tmp_path / "data"), "--out", str(out), "--batch-size", "4"]
    args += ["--clip-frames", "2", "--log-every", "1", "--val-every", "2", "--warmup", "1", "--quiet"]
    args += ["--device", "cpu", "--pure-noise-fraction", "0.5", "--val-steps", "1", "--exposure-stops", "1.5"]
    assert main([*args, "--steps", "2"]) == 0
    assert main([*args, "--steps", "3", "--resume"]) == 0
    err = capsys.readouterr().err
    assert "resumed forward at step 2" in err
    assert re.search(r"step 3 in \d+s, \d+ clips \(0\.\d\d GB on cpu\) -> ", err)  # where the bank lives
    model = load_model(str(out), "forward")
    assert model.record["steps"] == 3 and model.record["train_config"]["pure_noise_fraction"] == 0.5
    assert model.record["train_config"]["val_steps"] == 1 and model.record["train_config"]["exposure_stops"] == 1.5
    assert (out / "forward.val" / "step_0000002.png").is_file()
    assert main(["train", "inverse", "--out", str(out)]) == 2  # no data: one line, no traceback
    assert "give --data" in capsys.readouterr().err
    assert main([*args, "--exposure-stops", "-1"]) == 2
    assert "--exposure-stops must be >= 0" in capsys.readouterr().err
    assert main([*args, "--bank-device", "gpu0", "--out", str(tmp_path / "bank")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--bank-device 'gpu0'" in err[0]
    inverse = [*args[:1], "inverse", *args[2:], "--steps", "1", "--pass-weights", "basecolor=2", "depth=0"]
    assert main([*inverse, "--off-plane-weight", "3", "--out", str(tmp_path / "weighted")]) == 0
    record = load_model(str(tmp_path / "weighted"), "inverse").record
    assert record["train_config"]["pass_weights"] == {"basecolor": 2.0, "depth": 0.0}
    assert record["train_config"]["off_plane_weight"] == 3.0
    capsys.readouterr()
    for bad_args, message in (
        ([*inverse, "--off-plane-weight", "0"], "--off-plane-weight must be > 0"),
        ([*args, "--off-plane-weight", "2"], "not for forward"),
    ):
        assert main([*bad_args, "--out", str(tmp_path / "bad")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0]
    for bad, message in (("albedo=2", "unknown pass 'albedo'"), ("normal=x", "'normal=x' is not PASS=NUMBER")):
        assert main([*inverse, bad, "--out", str(tmp_path / "bad")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0]
    for shard in (tmp_path / "data").rglob("*.safetensors"):  # shards made before the HDR tensors were stored
        tensors, meta = read_shard(shard)
        write_shard(shard, {k: v for k, v in tensors.items() if k not in HDR_KEYS}, meta)
    assert main([*args, "--steps", "1", "--out", str(tmp_path / "old")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--exposure-stops needs env_hdr, rgb_linear, shading_linear in" in err[0]


def test_train_command_carries_its_compile_cache_in_a_file(tmp_path, capsys):
    """``--compile-cache``: the first call writes what it compiled, the next hot-loads it before training (on a fresh
    machine: most of the compile time saved); an unusable file is said and skipped; without compiling, refused."""
    from diffusion_renderer.cli.main import main

    write_synthetic_data(tmp_path / "data", seed=4, train=2, val=0)
    cache = tmp_path / "carried" / "inverse.compile_cache"
    args = ["train", "inverse", "--data", str(tmp_path / "data"), "--batch-size", "2", "--clip-frames", "1"]
    args += ["--warmup", "1", "--quiet", "--device", "cpu", "--val-every", "0", "--steps", "1"]
    args += ["--compile", "--compile-cache", str(cache)]

    def entries(out: Path) -> tuple[int, int]:  # (loaded, written) as the command says them
        assert main([*args, "--out", str(out)]) == 0
        found = re.search(r"inverse: (\d+) compile cache entries loaded, (\d+) written -> ", capsys.readouterr().err)
        return int(found[1]), int(found[2])

    loaded, written = entries(tmp_path / "first")
    assert loaded == 0 and written > 0 and cache.stat().st_size > 0
    assert entries(tmp_path / "second") == (written, written)  # everything it compiled came from the file
    log = [json.loads(line) for line in (tmp_path / "second" / "inverse.log.jsonl").read_text().splitlines()]
    assert {"step": 0, "compile_cache_loaded": written} in log
    cache.write_bytes(b"not a cache")
    assert main([*args, "--out", str(tmp_path / "third")]) == 0  # still trains, compiling from scratch
    err = capsys.readouterr().err
    assert f"{cache}: compile cache not used" in err and "inverse: 0 compile cache entries loaded" in err
    assert main([*args[: args.index("--compile")], "--compile-cache", str(cache), "--out", str(tmp_path / "x")]) == 2
    assert "--compile-cache keeps what --compile or --compile-blocks compiles" in capsys.readouterr().err


def test_train_command_trains_a_normalising_model_and_validates_it_at_its_level(tmp_path, capsys):
    """``--model-config medium-fine-shadow`` from the shipped normalising model: its file records the hint level, its
    validation samples are drawn at that level, and shards without the HDR tensors are refused in one line."""
    from diffusion_renderer.cli.main import main
    from diffusion_renderer.models.configs import EXPOSURE_LEVEL

    write_synthetic_data(tmp_path / "data", seed=5, train=2, val=1)
    args = ["train", "forward", "--data", str(tmp_path / "data"), "--batch-size", "2", "--clip-frames", "1"]
    args += ["--warmup", "1", "--quiet", "--device", "cpu", "--val-every", "1", "--val-steps", "1", "--steps", "1"]
    args += ["--init", "tiny", "--model-config", "medium-fine-shadow"]
    assert main([*args, "--out", str(tmp_path / "run")]) == 0
    assert load_model(str(tmp_path / "run"), "forward").transformer.config.exposure_level == EXPOSURE_LEVEL
    assert list((tmp_path / "run" / "forward.val").glob("step_*.png"))
    first = load_model(str(tmp_path / "run"), "forward").record
    # a resumed call (no --init) keeps the first call's provenance: its file still samples at the shipped 1 step
    again = [*args[: args.index("--steps")], "--steps", "2", "--model-config", "medium-fine-shadow", "--resume"]
    assert main([*again, "--out", str(tmp_path / "run")]) == 0
    resumed = load_model(str(tmp_path / "run"), "forward").record
    assert resumed["steps"] == 2 and resumed["init"] == first["init"] == "tiny"
    assert resumed["default_steps"] == first["default_steps"] == 1
    for shard in (tmp_path / "data").rglob("*.safetensors"):  # shards made before the HDR tensors were stored
        tensors, meta = read_shard(shard)
        write_shard(shard, {k: v for k, v in tensors.items() if k not in HDR_KEYS}, meta)
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "old")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "forward-medium-fine-shadow normalises exposure: it needs env_hdr" in err[0]


def test_train_command_trains_the_residual_model_on_shards_of_its_hint_version(tmp_path, capsys):
    from diffusion_renderer.cli.main import main

    write_synthetic_data(tmp_path / "data", seed=3, train=2, val=0)  # version 5 hints (render/hint.py)
    args = ["train", "forward", "--data", str(tmp_path / "data"), "--batch-size", "2", "--clip-frames", "1"]
    args += ["--warmup", "1", "--quiet", "--device", "cpu", "--val-every", "0", "--steps", "1", "--init", "tiny"]
    assert main([*args, "--model-config", "medium-fine-shadow", "--out", str(tmp_path / "run")]) == 0
    model = load_model(str(tmp_path / "run"), "forward").transformer  # the shipped version-4 model, moved to 5
    assert model.config.hint_residual and model.hint_version == 5 and model.condition_channels == 9 * 193
    mixed = [*args, "--model-config", "medium-fine-shadow", "--hint-fixed-camera", "0.5"]
    assert main([*mixed, "--out", str(tmp_path / "mixed")]) == 0
    assert load_model(str(tmp_path / "mixed"), "forward").record["train_config"]["hint_fixed_camera"] == 0.5
    # with exposure augmentation the bank keeps only the hints' HDR form (it once refused these shards: run 31)
    assert main([*mixed, "--exposure-stops", "1.5", "--out", str(tmp_path / "exposed")]) == 0
    capsys.readouterr()
    for bad, message in (
        ([*mixed[:-1], "1.5"], "--hint-fixed-camera is a share in [0, 1], got 1.5"),
        ([*args[:-2], "--model-config", "small", *mixed[-2:]], "forward-small takes no shading hint"),
    ):
        assert main([*bad, "--out", str(tmp_path / "bad")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0]
    # models of earlier hint versions are not trained on version 5 hints
    for config, version in (("medium-hint", 1), ("medium-residual", 3), ("medium-normalized", 4)):
        assert main([*args, "--model-config", config, "--out", str(tmp_path / f"v{version}")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        message = f"these shards hold version 5 shading hints; this model takes version {version}"
        takers = "(--model-config medium-fine-shadow takes them)"
        assert len(err) == 1 and message in err[0] and takers in err[0]
    for shard in (tmp_path / "data").rglob("*.safetensors"):  # shards made before the fixed-camera hint
        tensors, meta = read_shard(shard)
        write_shard(shard, {k: v for k, v in tensors.items() if not k.startswith(FIXED_CAMERA_HINT)}, meta)
    assert main([*mixed, "--out", str(tmp_path / "older")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data: --hint-fixed-camera needs shards with the fixed-camera hint" in err[0]
    for shard in (tmp_path / "data").rglob("*.safetensors"):  # shards made before the hint was stored
        tensors, meta = read_shard(shard)
        write_shard(shard, {k: v for k, v in tensors.items() if k not in HINT_KEYS}, meta)
    assert main([*args, "--model-config", "medium-fine-shadow", "--out", str(tmp_path / "old")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data: this model takes the shading hint; these shards have none" in err[0]
