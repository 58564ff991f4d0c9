"""FP8 GEMMs (models/fp8.py): exact where e4m3 is exact, close elsewhere, the right layers, every entry point."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from conftest import REPO, run_cli
from diffusion_renderer.eval.speed import parse_variant
from diffusion_renderer.io.images import read_image
from diffusion_renderer.models.fp8 import E4M3_MAX, Float8Linear, convert_to_fp8, quantize_rowwise
from diffusion_renderer.models.lora import add_lora, set_lora_scale
from diffusion_renderer.models.specs import load_model
from test_performance import tiny_inputs


def relative_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def test_rowwise_quantization_maps_each_row_max_to_the_e4m3_max() -> None:
    x = torch.randn(6, 32) * torch.logspace(-3, 3, 6)[:, None]  # rows six decades apart
    q, scale = quantize_rowwise(x)
    assert q.dtype == torch.float8_e4m3fn and scale.shape == (6, 1)
    torch.testing.assert_close(q.float().abs().amax(-1), torch.full((6,), E4M3_MAX))
    error = (q.float() * scale - x).abs() / x.abs().amax(-1, keepdim=True)
    assert error.max() <= 2**-4  # 3 mantissa bits: half a step at the top binade, relative to the row's max


def test_float8_linear_is_exact_on_values_e4m3_holds() -> None:
    """Powers of two (and their 1.75 multiples) survive e4m3 exactly, so the product equals float32's."""
    generator = torch.Generator().manual_seed(0)
    linear = nn.Linear(32, 48, bias=True)
    values = torch.tensor([-2.0, -1.0, -0.5, 0.5, 1.0, 2.0])
    with torch.no_grad():
        linear.weight.copy_(values[torch.randint(6, (48, 32), generator=generator)])
        linear.bias.copy_(torch.randn(48, generator=generator))
    x = values[torch.randint(6, (3, 5, 32), generator=generator)]
    x[..., 0] = 2.0  # every row's max is 2: the scale is a power of two
    linear.weight.data[:, 0] = 2.0
    torch.testing.assert_close(Float8Linear(linear)(x), linear(x), atol=0, rtol=0)


def test_float8_linear_is_close_on_random_values() -> None:
    linear = nn.Linear(64, 80)
    x = torch.randn(4, 9, 64)
    error = relative_l2(Float8Linear(linear)(x), linear(x))
    assert 1e-3 < error < 0.06  # quantized (not a copy), within e4m3's rounding


@torch.no_grad()
def test_convert_to_fp8_takes_the_token_wise_linears_of_the_blocks() -> None:
    net = load_model("random:tiny", "inverse").transformer
    kwargs = tiny_inputs(net)
    reference = net(**kwargs).sample
    before = {n for n, m in net.named_modules() if type(m) is nn.Linear}
    names = convert_to_fp8(net)
    per_block = {n.split(".", 2)[2] for n in names}
    assert per_block == {"attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q"} | {
        "attn2.to_out.0",
        "ff.net.0.proj",
        "ff.net.2",
    }
    assert len(names) == 8 * net.config.num_layers
    left = {n for n, m in net.named_modules() if type(m) is nn.Linear}
    assert left == before - set(names)  # AdaLN, embeddings, final layer, cross-attention k / v stay
    assert all(isinstance(net.get_submodule(n), Float8Linear) for n in names)
    error = relative_l2(net(**kwargs).sample, reference)
    assert 1e-4 < error < 0.1


@torch.no_grad()
def test_fp8_keeps_lora_adapters_in_full_precision() -> None:
    """Adapters added first keep working: their base layers become FP8, the adapter's scale still acts."""
    net = load_model("random:tiny", "forward").transformer
    kwargs = tiny_inputs(net)
    kwargs.pop("context_index")
    add_lora(net, rank=4)
    for name, param in net.named_parameters():
        if "lora_B" in name:
            param.normal_(0, 0.05)  # a trained-looking adapter (B starts at zero)
    with_adapter = net(**kwargs).sample
    convert_to_fp8(net)
    assert any(isinstance(m, Float8Linear) for n, m in net.named_modules() if n.endswith("base_layer"))
    assert not any(isinstance(m, Float8Linear) for n, m in net.named_modules() if "lora_" in n)
    fp8_adapter = net(**kwargs).sample
    assert relative_l2(fp8_adapter, with_adapter) < 0.1
    set_lora_scale(net, 0.0)
    assert relative_l2(net(**kwargs).sample, fp8_adapter) > 0.01  # the adapter still contributes


def test_relight_and_bench_take_fp8(tmp_path: Path, capsys) -> None:
    image = REPO / "examples" / "coffee.png"
    common = ["--resolution", "64", "--quiet", "--envmap", "street_lamp", "--envmap-method", "direct"]
    for name, extra in (("bf", []), ("fp8", ["--fp8"])):
        code, lines = run_cli(capsys, "relight", image, "--out", tmp_path / name, *common, *extra)
        assert code == 0, lines
    a, b = (read_image(tmp_path / n / "coffee" / "0000.0000.street_lamp.png") for n in ("bf", "fp8"))
    assert 0 < np.abs(a - b).mean() < 0.05  # the shipped model, FP8 vs float32: close, not identical

    out = tmp_path / "bench.json"
    args = ["--size", "tiny", "--device", "cpu", "--cases", "dit", "--repeats", "1", "--out", out]
    code, lines = run_cli(capsys, "bench", *args, "--variants", "default+fp8", "default", "--frames", "9")
    assert code == 0, lines
    report = json.loads(out.read_text())
    assert list(report["dit"]) == ["default", "default+fp8"]  # the irreversible one last
    for row in report["dit"]["default+fp8"].values():
        assert 1e-4 < row["relative_l2_to_first"] < 0.1
    with pytest.raises(ValueError, match="unknown fp16"):
        parse_variant("auto+fp16")
