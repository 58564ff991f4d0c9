"""The DiT class beyond parity: configs, serialisation, compile marking, no torchvision; model specs; CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from diffusion_renderer.cli.main import main
from diffusion_renderer.models import DiffusionRendererTransformer3DModel, DiffusionRendererTransformerBlock
from diffusion_renderer.models.configs import OFFICIAL_NETS, dit_config
from diffusion_renderer.models.specs import ModelSpecError, load_model, random_transformer


def tiny_inputs(model: DiffusionRendererTransformer3DModel, frames: int = 2, batch: int = 1) -> dict:
    generator = torch.Generator().manual_seed(0)
    shape = (batch, model.config.out_channels, frames, 4, 6)
    kwargs = {
        "hidden_states": torch.randn(shape, generator=generator),
        "timestep": torch.tensor([0.3]),
        "latent_condition": torch.randn((batch, model.condition_channels, frames, 4, 6), generator=generator),
    }
    if model.context_embedding is not None:
        kwargs["context_index"] = torch.tensor([[3]] * batch)
    return kwargs


@pytest.mark.parametrize("name", ["inverse-tiny", "forward-tiny"])
def test_save_and_from_pretrained_round_trip(tmp_path: Path, name: str) -> None:
    model = random_transformer(name, seed=5)
    model.save_pretrained(tmp_path / name)
    config = json.loads((tmp_path / name / "config.json").read_text())
    assert config["_class_name"] == "DiffusionRendererTransformer3DModel"
    assert config["in_channels"] == dit_config(name)["in_channels"]
    loaded = DiffusionRendererTransformer3DModel.from_pretrained(tmp_path / name).eval()
    assert all(isinstance(b, DiffusionRendererTransformerBlock) for b in loaded.transformer_blocks)
    assert {b.attn1.norm_q.eps for b in loaded.transformer_blocks} == {1e-6}
    with torch.no_grad():
        torch.testing.assert_close(loaded(**tiny_inputs(loaded)).sample, model(**tiny_inputs(model)).sample)


def test_bf16_load_computes_positions_in_bf16(tmp_path: Path) -> None:
    """A bf16 model computes RoPE angles in bf16 (the official behaviour), whichever path loaded it."""
    model = random_transformer("inverse-tiny", seed=0)
    model.save_pretrained(tmp_path / "m")
    loaded = DiffusionRendererTransformer3DModel.from_pretrained(tmp_path / "m", torch_dtype=torch.bfloat16)
    seen = {}

    def record(module, args, kwargs, output) -> None:
        seen["dtype"] = kwargs["dtype"]

    loaded.rope.register_forward_hook(record, with_kwargs=True)
    inputs = {k: (v.to(torch.bfloat16) if v.is_floating_point() else v) for k, v in tiny_inputs(loaded).items()}
    with torch.no_grad():
        out = loaded(**inputs).sample
    assert seen["dtype"] == torch.bfloat16 and out.dtype == torch.bfloat16 and torch.isfinite(out).all()


def test_batch_and_per_sample_timesteps_match_single_runs() -> None:
    model = random_transformer("inverse-tiny", seed=2)
    batch = tiny_inputs(model, batch=2)
    batch["timestep"] = torch.tensor([0.3, -0.5])
    batch["context_index"] = torch.tensor([[0], [4]])
    with torch.no_grad():
        together = model(**batch).sample
        for i in range(2):
            single = {k: v[i : i + 1] for k, v in batch.items()}
            torch.testing.assert_close(model(**single).sample, together[i : i + 1], atol=1e-5, rtol=1e-5)


def test_bad_inputs_give_clear_errors() -> None:
    model = random_transformer("inverse-tiny", seed=0)
    inputs = tiny_inputs(model)
    with pytest.raises(ValueError, match="context_index"):
        model(**{**inputs, "context_index": None})
    with pytest.raises(ValueError, match="latent_condition has 3 channels, expected 16"):
        model(**{**inputs, "latent_condition": inputs["latent_condition"][:, :3]})
    with pytest.raises(ValueError, match="not a multiple"):
        model(**{**inputs, "hidden_states": inputs["hidden_states"][..., :5]})
    with pytest.raises(ValueError, match="exceeds the RoPE table"):
        model.rope(1, 121, 4)


def test_repeated_blocks_are_marked_for_regional_compile() -> None:
    model = random_transformer("forward-tiny", seed=0)
    model.compile_repeated_blocks()
    assert all(block._compiled_call_impl is not None for block in model.transformer_blocks)


def test_cpu_path_needs_no_torchvision() -> None:
    code = (
        "import sys; sys.modules['torchvision'] = None\n"
        "import torch\n"
        "from diffusion_renderer.models.specs import random_transformer\n"
        "m = random_transformer('forward-tiny', seed=0)\n"
        "x = torch.randn(1, 16, 1, 4, 4); c = torch.randn(1, 136, 1, 4, 4)\n"
        "print(m(x, torch.tensor([0.1]), latent_condition=c, padding_mask=torch.zeros(1, 1, 32, 32)).sample.shape)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "torch.Size([1, 16, 1, 4, 4])" in result.stdout


def test_named_configs_build_on_meta_at_official_sizes() -> None:
    for name in OFFICIAL_NETS:
        with torch.device("meta"):
            model = DiffusionRendererTransformer3DModel(**dit_config(name))
        params = sum(p.numel() for p in model.parameters())
        if name.endswith("7b"):
            assert 7.1e9 < params < 7.3e9
    with pytest.raises(ValueError, match="unknown DiT configuration"):
        dit_config("huge")


def test_random_specs_and_errors(tmp_path: Path) -> None:
    for role in ("inverse", "forward"):
        model = load_model("random:tiny", role, seed=1)
        assert model.role == role and (model.transformer.context_embedding is not None) == (role == "inverse")
        again = load_model("random:tiny", role, seed=1)
        for a, b in zip(model.transformer.parameters(), again.transformer.parameters(), strict=True):
            assert torch.equal(a, b)
    with pytest.raises(ModelSpecError, match="is a inverse model, not forward"):
        load_model("random:inverse-7b", "forward")
    with pytest.raises(ModelSpecError, match="unknown model spec"):
        load_model("random:huge", "inverse")
    with pytest.raises(ModelSpecError, match="unknown model spec"):
        load_model(str(tmp_path / "missing"), "inverse")
    with pytest.raises(ModelSpecError, match="neither a converted"):
        load_model(str(tmp_path), "inverse")


def test_cli_check_model_runs_end_to_end(capsys) -> None:
    assert main(["check-model", "--model", "random:tiny", "--steps", "2", "--height", "32", "--width", "48"]) == 0
    out = capsys.readouterr().out
    assert "inverse:" in out and "forward:" in out and "finite=True" in out
    assert main(["check-model", "--model", "nonsense"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("diffusion-renderer: error: unknown model spec") and err.count("\n") == 1
