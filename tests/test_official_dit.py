"""Parity of the DiT with the official DiffusionRendererGeneralDIT, driven by every fixture in the folder.

Shapes, configs, passes and cases come from each file: a case is every ``<prefix>.output`` tensor; inputs
are the file's base inputs overridden by ``<prefix>.<input>`` tensors; internals are checked when present.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import assert_close, fixture_files, params, read_fixture
from diffusion_renderer.checkpoints.official import dit_from_official_state_dict
from diffusion_renderer.pipelines.conditions import assemble_latent_condition

pytestmark = pytest.mark.official

INPUT_NAMES = ("x", "timesteps", "latent_condition", "fps", "padding_mask", "context_index", "crossattn_emb")
DIT_FILES = fixture_files("dit_*.weights.safetensors")


def io_path(weights: Path) -> Path:
    return weights.with_name(weights.name.replace(".weights.", ".io."))


def load_case_model(weights: Path):
    state_dict, meta = read_fixture(weights)
    model = dit_from_official_state_dict(state_dict, meta["net_config"], source=weights)
    io, io_meta = read_fixture(io_path(weights))
    return model, io, io_meta


def case_inputs(io: dict[str, torch.Tensor], prefix: str | None, net: dict) -> dict:
    """Base inputs, overridden by the case's own ``<prefix>.<name>`` tensors."""
    inputs = {name: io[name] for name in INPUT_NAMES if name in io}
    if prefix is not None:
        inputs.update({name: io[f"{prefix}.{name}"] for name in INPUT_NAMES if f"{prefix}.{name}" in io})
    if "crossattn_emb" not in inputs:
        # The official pipeline passes the dataset's all-zero dummy T5 embedding; its length is the mask's.
        batch, length = io["crossattn_mask"].shape
        inputs["crossattn_emb"] = torch.zeros(batch, length, net["crossattn_emb_channels"])
    return inputs


def run(model, inputs: dict) -> torch.Tensor:
    with torch.no_grad():
        return model(
            inputs["x"],
            inputs["timesteps"],
            encoder_hidden_states=inputs["crossattn_emb"],
            latent_condition=inputs["latent_condition"],
            context_index=inputs.get("context_index") if model.context_embedding is not None else None,
            fps=inputs["fps"],
            padding_mask=inputs["padding_mask"],
        ).sample


def output_prefixes(io: dict) -> list[str]:
    return sorted(k[: -len(".output")] for k in io if k.endswith(".output"))


@pytest.mark.parametrize("weights", params(DIT_FILES))
def test_official_dit_outputs(weights: Path) -> None:
    model, io, meta = load_case_model(weights)
    prefixes = output_prefixes(io)
    assert prefixes, f"{weights.name}: no <case>.output tensors"
    for prefix in prefixes:
        out = run(model, case_inputs(io, prefix, meta["net_config"]))
        assert_close(out, io[f"{prefix}.output"], f"{weights.name}:{prefix}")


@pytest.mark.parametrize("weights", params(DIT_FILES))
def test_official_dit_passes_match_context_indices(weights: Path) -> None:
    """Each inverse pass ran with the official GBUFFER_INDEX_MAPPING row of our conventions module."""
    from diffusion_renderer.conventions import CONTEXT_INDEX

    _, io, meta = load_case_model(weights)
    for name, index in meta.get("passes", {}).items():
        assert CONTEXT_INDEX[name] == index[0] == int(io[f"{name}.context_index"].flatten()[0])
    for name, index in meta.get("gbuffer_index_mapping", {}).items():
        assert CONTEXT_INDEX[name] == index


@pytest.mark.parametrize("weights", params(DIT_FILES))
def test_official_dit_skipping_zero_cross_attention_is_exact(weights: Path) -> None:
    """No context (cross-attention skipped) gives bit-identical outputs to the all-zero dummy context."""
    model, io, meta = load_case_model(weights)
    if model.context_embedding is not None:
        pytest.skip("the inverse model always has a context (its embedding row)")
    inputs = case_inputs(io, None, meta["net_config"])
    with_zeros = run(model, inputs)
    skipped = run(model, {**inputs, "crossattn_emb": None})
    assert torch.equal(with_zeros, skipped)
    random_ctx = run(model, {**inputs, "crossattn_emb": torch.randn_like(inputs["crossattn_emb"])})
    assert not torch.equal(with_zeros, random_ctx), "cross-attention must matter for a non-zero context"


@pytest.mark.parametrize("weights", params(DIT_FILES))
def test_official_dit_single_context_token_equals_repeated(weights: Path) -> None:
    """The inverse context row repeated M times (official) and used once (ours by default) agree."""
    model, io, meta = load_case_model(weights)
    if model.context_embedding is None:
        pytest.skip("forward model: no context embedding")
    prefix = output_prefixes(io)[0]
    inputs = case_inputs(io, prefix, meta["net_config"])
    assert_close(run(model, {**inputs, "crossattn_emb": None}), io[f"{prefix}.output"], prefix)


@pytest.mark.parametrize("weights", params(DIT_FILES))
def test_official_dit_latent_condition_assembly(weights: Path) -> None:
    _, io, meta = load_case_model(weights)
    keys = meta.get("condition_keys_order")
    if not keys:
        pytest.skip("no condition assembly in this fixture")
    missing = set(meta.get("missing_condition_keys", []))
    latents = {k: io[f"cond_latent.{k}"] for k in keys if k not in missing and f"cond_latent.{k}" in io}
    shape = tuple(io["x"].shape)
    assembled = assemble_latent_condition(latents, keys, shape)
    assert_close(assembled, io["latent_condition"], "latent_condition")


@pytest.mark.parametrize("weights", params(DIT_FILES))
def test_official_dit_internals(weights: Path) -> None:
    """Intermediate tensors of the first case (what the fixture stores under ``internal.*``)."""
    model, io, meta = load_case_model(weights)
    internals = {k[len("internal.") :]: v for k, v in io.items() if k.startswith("internal.")}
    if not internals:
        pytest.skip("no internals stored")
    first_pass = next(iter(meta.get("passes", {})), None)
    inputs = case_inputs(io, first_pass, meta["net_config"])
    captured: dict[str, torch.Tensor] = {}
    hooks = [
        model.patch_embed.register_forward_hook(lambda m, a, out: captured.setdefault("x_embedder_output", out)),
        model.proj_out.register_forward_hook(lambda m, a, out: captured.setdefault("final_layer_output", out)),
    ]
    for i, block in enumerate(model.transformer_blocks):
        hooks.append(block.register_forward_hook(lambda m, a, out, i=i: captured.setdefault(f"block{i}_output", out)))
    run(model, inputs)
    for hook in hooks:
        hook.remove()

    batch, _, frames, height, width = inputs["x"].shape
    p_t, p_h, p_w = model.config.patch_size
    grid = (frames // p_t, height // p_h, width // p_w)
    with torch.no_grad():
        concat = model.concat_inputs(inputs["x"], inputs["latent_condition"], inputs["padding_mask"])
        timestep = inputs["timesteps"].flatten()
        sinusoid = model.time_embed.time_proj(timestep)
        cos, _ = model.rope(*grid, fps=inputs["fps"])
        ours = {
            "x_embedder_input": concat,
            "t_embedder.out0": sinusoid,
            "t_embedder.out1": model.time_embed.t_embedder(sinusoid),
            "affline_norm_output": model.time_embed.norm(sinusoid),
            "extra_pos_emb": model.extra_pos_embed(*grid).reshape(1, *grid, -1),
            "rope_angles_cos": cos,
        }
        if model.context_embedding is not None:
            ours["context_embedding_output"] = model.prepare_context(
                batch, None, inputs["context_index"], torch.float32
            )
    ours["x_embedder_output"] = captured["x_embedder_output"]
    for i in range(len(model.transformer_blocks)):
        # official layout (T, H, W, B, D); ours (B, THW, D)
        ours[f"block{i}_output"] = captured[f"block{i}_output"].reshape(batch, *grid, -1).permute(1, 2, 3, 0, 4)
    # official (B*T, H*W, p1 p2 t C); ours (B, T*H*W, p1 p2 t C)
    ours["final_layer_output"] = captured["final_layer_output"].reshape(batch * grid[0], grid[1] * grid[2], -1)
    if "rope_freqs" in internals:
        internals["rope_angles_cos"] = torch.cos(internals.pop("rope_freqs").reshape(cos.shape))

    checked = 0
    for name, expected in internals.items():
        if name in ours:
            assert_close(ours[name].float(), expected, f"{weights.name}:internal.{name}")
            checked += 1
    assert checked == len(internals), f"unchecked internals: {sorted(set(internals) - set(ours))}"
    for prefix in output_prefixes(io):
        if f"{prefix}.x_embedder_input" in io:
            case = case_inputs(io, prefix, meta["net_config"])
            concat = model.concat_inputs(case["x"], case["latent_condition"], case["padding_mask"])
            assert_close(concat, io[f"{prefix}.x_embedder_input"], f"{prefix}.x_embedder_input")
