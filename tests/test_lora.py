"""LoRA adapters on the tiny DiT: identity at init, scaling, save/load, unload, gradients, bad files, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from diffusion_renderer.cli.main import main
from diffusion_renderer.io.images import read_image, write_image
from diffusion_renderer.models.lora import (
    HEADER_KEY,
    LORA_TARGETS,
    adapter_names,
    add_lora,
    load_lora,
    lora_layers,
    lora_state_dict,
    merge_lora,
    read_lora_header,
    save_lora,
    set_lora_scale,
    unload_lora,
    unmerge_lora,
)
from diffusion_renderer.models.specs import load_model

FAST = ["--resolution", "32", "--steps", "1", "--quiet", "--envmap-method", "direct", "--no-contact-sheet"]


def tiny_dit(role: str = "forward"):
    return load_model("random:tiny", role).transformer


def inputs(model, seed: int = 0) -> dict:
    """Random DiT inputs: latent (1, 16, 2, 4, 6), its condition, a timestep (and a pass index if inverse)."""
    generator = torch.Generator().manual_seed(seed)
    kwargs = {
        "hidden_states": torch.randn((1, model.config.out_channels, 2, 4, 6), generator=generator),
        "timestep": torch.tensor([0.3]),
        "latent_condition": torch.randn((1, model.condition_channels, 2, 4, 6), generator=generator),
    }
    if model.context_embedding is not None:
        kwargs["context_index"] = torch.tensor([[2]])
    return kwargs


def run(model, seed: int = 0) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs(model, seed)).sample


def perturb_(model, adapter: str = "real", seed: int = 1) -> None:
    """Give the adapter a non-zero update (B starts at zero)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if f"lora_B.{adapter}." in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.2)


def test_fresh_adapter_is_identity_and_scale_interpolates() -> None:
    model = tiny_dit()
    base = run(model)
    add_lora(model, rank=4)
    assert torch.equal(run(model), base)  # B = 0
    perturb_(model)
    full = run(model)
    assert (full - base).abs().max() > 1e-3
    set_lora_scale(model, 0.0)
    assert torch.equal(run(model), base)  # exactly the base model
    set_lora_scale(model, 0.5)
    half = run(model)
    d_half, d_full = (half - base).norm(), (full - base).norm()
    assert 0 < d_half < d_full and (full - half).norm() < d_full
    # the update of each layer is linear in the scale: scaling = scale * alpha / r
    _, layer = next(lora_layers(model))
    delta_half = layer.get_delta_weight("real")
    set_lora_scale(model, 1.0)
    torch.testing.assert_close(layer.get_delta_weight("real"), 2 * delta_half)
    torch.testing.assert_close(run(model), full)


def test_only_lora_trains_and_gets_gradients() -> None:
    model = tiny_dit("inverse")  # the inverse DiT uses cross-attention, so every adapter is on the path
    model.train()
    add_lora(model, rank=4, alpha=8)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A.real." in n or ".lora_B.real." in n for n in trainable)
    assert len(trainable) == 2 * 2 * 10  # 2 blocks x (attn1 4 + attn2 4 + ff 2) layers x (A, B)
    perturb_(model)  # with B = 0 the gradient of A is exactly zero
    model(**inputs(model)).sample.square().mean().backward()
    for name, param in model.named_parameters():
        if param.requires_grad:
            assert param.grad is not None and param.grad.abs().sum() > 0, name
        else:
            assert param.grad is None, name


def test_forward_model_cross_attention_adapters_are_inert() -> None:
    model = tiny_dit("forward")
    add_lora(model, rank=2)
    perturb_(model)
    model(**inputs(model)).sample.sum().backward()
    for name, param in model.named_parameters():
        if param.requires_grad:
            assert (param.grad is None) == (".attn2." in name), name  # its blocks skip cross-attention


def test_save_load_round_trip_and_unload(tmp_path: Path) -> None:
    model = tiny_dit()
    base = run(model)
    add_lora(model, rank=4, alpha=2.0)
    perturb_(model)
    adapted = run(model)
    path = save_lora(model, tmp_path / "real.safetensors", metadata={"steps": 12, "data": "clips"})
    header = read_lora_header(path)
    assert header["role"] == "forward" and header["rank"] == 4 and header["alpha"] == 2.0
    assert header["metadata"] == {"steps": 12, "data": "clips"} and header["targets"] == LORA_TARGETS
    stored = load_file(path)
    assert stored.keys() == lora_state_dict(model, "real").keys()
    assert all(".lora_A." in k or ".lora_B." in k for k in stored)

    fresh = tiny_dit()
    assert load_lora(fresh, path) == "real"
    assert torch.equal(run(fresh), adapted)
    load_lora(fresh, path, adapter_name="again", scale=0.0)  # a second adapter leaves the first active
    assert sorted(fresh.active_adapters()) == ["again", "real"]
    assert torch.equal(run(fresh), adapted)
    unload_lora(fresh)
    assert adapter_names(fresh) == [] and not any(True for _ in lora_layers(fresh))
    assert torch.equal(run(fresh), base)
    assert all(p.requires_grad for p in fresh.parameters())  # flags as before the adapters
    add_lora(fresh, rank=2)  # adapters can be added again after unloading
    assert adapter_names(fresh) == ["real"]

    unload_lora(model)
    assert torch.equal(run(model), base)


def test_merge_matches_unmerged(tmp_path: Path) -> None:
    model = tiny_dit()
    base = run(model)
    add_lora(model, rank=4)
    perturb_(model)
    set_lora_scale(model, 0.5)
    unmerged = run(model)
    merge_lora(model)
    torch.testing.assert_close(run(model), unmerged, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="merged"):
        set_lora_scale(model, 1.0)
    unmerge_lora(model)
    torch.testing.assert_close(run(model), unmerged, atol=1e-5, rtol=1e-5)
    merge_lora(model)
    unload_lora(model)  # unmerges first: the base weights come back (up to rounding)
    torch.testing.assert_close(run(model), base, atol=1e-5, rtol=1e-5)


def test_bad_files_are_one_line_errors_naming_the_file(tmp_path: Path) -> None:
    model = tiny_dit()
    add_lora(model, rank=4)
    good = save_lora(model, tmp_path / "good.safetensors")
    target = tiny_dit()

    def refused(path: Path, match: str, **kwargs) -> None:
        with pytest.raises(ValueError, match=match) as info:
            load_lora(target, path, **kwargs)
        message = str(info.value)
        assert str(path) in message and "\n" not in message
        assert adapter_names(target) == []  # nothing half-loaded

    refused(tmp_path / "missing.safetensors", "no such LoRA file")
    (tmp_path / "text.safetensors").write_text("not a safetensors file\n")
    refused(tmp_path / "text.safetensors", "not a safetensors")
    save_file({"w": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    refused(tmp_path / "plain.safetensors", "not a diffusion-renderer LoRA")

    state = load_file(good)
    with safe_open(str(good), framework="pt") as handle:
        metadata = handle.metadata()
    future = {**metadata, HEADER_KEY: json.dumps({**json.loads(metadata[HEADER_KEY]), "format": "other/9"})}
    save_file(state, str(tmp_path / "future.safetensors"), metadata=future)
    refused(tmp_path / "future.safetensors", "unsupported LoRA format 'other/9'")
    renamed = {k.replace("transformer_blocks.1.", "transformer_blocks.7."): v for k, v in state.items()}
    save_file(renamed, str(tmp_path / "renamed.safetensors"), metadata=metadata)
    refused(tmp_path / "renamed.safetensors", "do not match this model")
    odd = {k.replace("lora_A", "lora_C"): v for k, v in state.items()}
    save_file(odd, str(tmp_path / "odd.safetensors"), metadata=metadata)
    refused(tmp_path / "odd.safetensors", "not a LoRA weight name")
    wide = {k: torch.cat([v, v], dim=1) if ".lora_A." in k else v for k, v in state.items()}
    save_file(wide, str(tmp_path / "wide.safetensors"), metadata=metadata)
    refused(tmp_path / "wide.safetensors", "shape")
    refused(good, "for the forward model, not the inverse", role="inverse")


def test_role_is_recorded_and_checked(tmp_path: Path) -> None:
    inverse = tiny_dit("inverse")
    add_lora(inverse, rank=2)
    path = save_lora(inverse, tmp_path / "inv.safetensors")
    assert read_lora_header(path)["role"] == "inverse"
    with pytest.raises(ValueError, match="a LoRA for the inverse model, not the forward model"):
        load_lora(tiny_dit("forward"), path)  # same shapes at this size: only the role tells them apart


# ------------------------------------------------------------------------------------------------------- CLI


def gbuffer_root(root: Path) -> Path:
    rng = np.random.default_rng(0)
    write_image(root / "clip" / "0000.0000.basecolor.png", rng.random((24, 32, 3)))
    write_image(root / "clip" / "0000.0000.normal.png", np.full((24, 32, 3), (0.5, 0.5, 1.0)), bit_depth=16)
    return root


def lora_file(path: Path, role: str) -> Path:
    model = tiny_dit(role)
    add_lora(model, rank=4)
    perturb_(model, seed=3)
    return save_lora(model, path)


def forward_cli(capsys, root: Path, out: Path, *extra: str) -> tuple[int, str]:
    code = main(["forward", str(root), "--out", str(out), "--random-lighting", "--model", "random:tiny", *FAST,
                 *extra])  # fmt: skip
    return code, capsys.readouterr().err


def test_cli_forward_with_lora(tmp_path: Path, capsys) -> None:
    root = gbuffer_root(tmp_path / "gbuffer_frames")
    adapter = lora_file(tmp_path / "fwd.safetensors", "forward")
    relit = "clip/0000.0000.random_0000.png"
    outputs = {}
    for name, extra in (
        ("base", []),
        ("off", ["--lora", str(adapter), "--lora-scale", "0"]),
        ("half", ["--lora", str(adapter), "--lora-scale", "0.5"]),
    ):
        code, err = forward_cli(capsys, root, tmp_path / name, *extra)
        assert code == 0, err
        outputs[name] = read_image(tmp_path / name / relit)
    assert outputs["half"].shape == (24, 32, 3)
    assert np.array_equal(outputs["off"], outputs["base"])  # scale 0: the base model
    assert not np.array_equal(outputs["half"], outputs["base"])


def test_cli_refuses_a_lora_of_the_other_role(tmp_path: Path, capsys) -> None:
    root = gbuffer_root(tmp_path / "gbuffer_frames")
    adapter = lora_file(tmp_path / "inv.safetensors", "inverse")
    code, err = forward_cli(capsys, root, tmp_path / "out", "--lora", str(adapter))
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, lines
    assert str(adapter) in lines[0] and "inverse" in lines[0]
    code, err = forward_cli(capsys, root, tmp_path / "out", "--lora", str(tmp_path / "nowhere.safetensors"))
    assert code == 2 and "no such LoRA file" in err and len(err.strip().splitlines()) == 1


def test_train_a_real_footage_lora_on_the_shipped_forward_model(tmp_path: Path) -> None:
    """The real domain has no lighting, so a model with exposure normalisation (the shipped forward model) trains
    its LoRA on real frames as they are: nothing to normalise, and no HDR tensors asked of pseudo-labelled clips."""
    from diffusion_renderer.cli.main import main
    from diffusion_renderer.models.specs import load_model

    assert load_model("tiny", "forward").transformer.config.exposure_level > 0
    image = Path(__file__).resolve().parents[1] / "examples" / "coffee.png"
    args = ["train", "forward", "--real", str(image), "--real-size", "64", "--init", "tiny", "--lora", "2"]
    args += ["--batch-size", "2", "--clip-frames", "1", "--steps", "1", "--warmup", "1", "--quiet", "--device", "cpu"]
    assert main([*args, "--val-every", "0", "--out", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "forward.lora.safetensors").is_file()
