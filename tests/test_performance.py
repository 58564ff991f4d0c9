"""Speed settings keep the numbers (attention kernel order, block compilation) and the bench command runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO, run_cli
from diffusion_renderer.eval.speed import dit_flops
from diffusion_renderer.io.images import read_image
from diffusion_renderer.models.performance import resolve_attention
from diffusion_renderer.models.specs import load_model

PEER = REPO.parent / "shared" / "peer_baseline_h100.json"


def tiny_inputs(net) -> dict:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 16, 2, 8, 12, generator=generator)
    condition = torch.randn(1, net.condition_channels, 2, 8, 12, generator=generator)
    return {
        "hidden_states": x,
        "timestep": torch.tensor([0.3]),
        "latent_condition": condition,
        "context_index": torch.tensor([[3]]),
        "fps": 24,
    }


@torch.no_grad()
def test_attention_kernels_and_compiled_blocks_keep_the_outputs() -> None:
    net = load_model("random:tiny", "inverse").transformer
    kwargs = tiny_inputs(net)
    reference = net(**kwargs).sample
    for name in ("math", "efficient", "flash", "cudnn", "default"):  # unsupported kernels fall back in order
        net.set_attention(name)
        torch.testing.assert_close(net(**kwargs).sample, reference, atol=2e-5, rtol=2e-5, msg=name)
    net.set_attention("auto")
    net.compile_repeated_blocks(backend="aot_eager")  # the graph capture, without a C++ toolchain
    torch.testing.assert_close(net(**kwargs).sample, reference, atol=2e-5, rtol=2e-5)
    # A new batch size compiles once more (dynamic batch), then every block and call reuses that graph.
    torch._dynamo.utils.counters.clear()
    batched = {k: v.expand(3, *v.shape[1:]) if torch.is_tensor(v) and v.dim() > 1 else v for k, v in kwargs.items()}
    for _ in range(2):
        torch.testing.assert_close(net(**batched).sample[:1], reference, atol=2e-5, rtol=2e-5)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1
    with pytest.raises(ValueError, match="unknown attention backend 'fast'"):
        net.set_attention("fast")
    assert resolve_attention("auto", "cpu") == "default"


def test_flop_count_matches_the_peer_baseline() -> None:
    """One 7B step at 57 x 704 x 1280 (28,160 tokens): the peer's count leaves the context's k / v out."""
    flops = dit_flops(tokens=28160, context_tokens=0, width=4096, blocks=28)
    expected = json.loads(PEER.read_text())["dit_video57"]["tflop"] * 1e12 if PEER.is_file() else 734.18170957824e12
    assert flops == pytest.approx(expected, rel=1e-9)
    batched = dit_flops(tokens=3520, context_tokens=512, width=4096, blocks=28, batch=5)
    assert batched == pytest.approx(5 * dit_flops(3520, 512, 4096, 28))


def test_bench_command_smoke(tmp_path: Path, capsys) -> None:
    out = tmp_path / "bench.json"
    args = ["--size", "tiny", "--device", "cpu", "--variants", "stock", "default", "math", "--repeats", "1"]
    code, lines = run_cli(
        capsys, "bench", *args, "--steps", "1", "--frames", "9", "--resolution", 64, 96, "--out", out
    )
    assert code == 0, lines
    report = json.loads(out.read_text())
    assert report["versions"]["torch"] == torch.__version__ and report["git_commit"]
    rows = report["dit"]["math"]
    assert set(rows) == {"video_9x64x96", "image_64x96", "image_64x96_5passes"}
    for name, row in rows.items():
        assert row["seconds"] > 0 and row["tflop"] > 0 and row["relative_l2_to_first"] < 1e-5, name
        assert report["dit"]["default"][name]["relative_l2_to_first"] == 0.0
    assert rows["image_64x96_5passes"]["tflop"] == pytest.approx(5 * rows["image_64x96"]["tflop"])
    vae = report["vae"]["9x64x96"]
    assert set(vae) == {"whole", "stream1", "stream2", "stream4"}
    assert all(row["latent_shape"] == [1, 16, 2, 8, 12] for row in vae.values())
    assert (
        vae["stream1"]["encode_relative_l2_to_whole"] < 1e-5 and vae["stream1"]["decode_relative_l2_to_whole"] < 1e-5
    )
    assert report["pipeline"]["inverse"]["frames"] == 9 and report["pipeline"]["forward"]["seconds"] > 0


def test_render_commands_take_the_attention_option(tmp_path: Path, capsys) -> None:
    image = REPO / "examples" / "coffee.png"
    common = ["--resolution", "64", "--quiet", "--envmap", "street_lamp", "--envmap-method", "direct"]
    for name in ("default", "math"):
        code, lines = run_cli(capsys, "relight", image, "--out", tmp_path / name, "--attention", name, *common)
        assert code == 0, lines
    a, b = (read_image(tmp_path / name / "coffee" / "0000.0000.street_lamp.png") for name in ("default", "math"))
    assert np.abs(a - b).max() <= 1 / 255 + 1e-6  # the kernels differ by float rounding: one 8-bit step at most
