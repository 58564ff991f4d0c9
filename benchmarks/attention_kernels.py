"""Which SDPA kernel runs for the DiT's attention, and how fast (H100, bf16, the video step's 28,160 tokens).

Usage (device): python benchmarks/attention_kernels.py --out results/attention_kernels_h100.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from diffusion_renderer.eval.speed import measure
from diffusion_renderer.models.performance import ATTENTION_BACKENDS, attention_backend

BACKEND_NAMES = {int(getattr(SDPBackend, n)): n for n in dir(SDPBackend) if n.isupper()}


def choice(q, k, v) -> str:
    """The kernel PyTorch would pick for these inputs under the current sdpa_kernel settings."""
    return BACKEND_NAMES.get(int(torch._fused_sdp_choice(q, k, v)), "?")


def dit_kernels(device: torch.device) -> dict[str, dict[str, float]]:
    """{attention setting: {attention-like CUDA kernel name: ms}} of one 7B inverse DiT image step."""
    from torch.profiler import ProfilerActivity, profile

    from diffusion_renderer.eval.speed import dit_inputs
    from diffusion_renderer.models.specs import random_transformer

    net = random_transformer("inverse-7b", device=device, dtype=torch.bfloat16)
    kwargs = dit_inputs(net, (1, 16, 1, 88, 160), device, torch.bfloat16, stock=False)
    found = {}
    for name in ("default", "auto", "cudnn"):
        net.set_attention(name)
        with torch.no_grad():
            net(**kwargs)
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                net(**kwargs)
                torch.cuda.synchronize()
        found[name] = {
            e.key[:120]: round(e.device_time_total / 1000, 2)
            for e in prof.key_averages()
            if any(word in e.key.lower() for word in ("attn", "attention", "fmha", "flash", "cudnn", "sdpa"))
        }
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tokens", type=int, default=28160)
    parser.add_argument("--dit", action="store_true", help="also profile one 7B DiT image step per attention setting")
    args = parser.parse_args()
    device = torch.device("cuda")
    q, k, v = (torch.randn(1, 32, args.tokens, 128, device=device, dtype=torch.bfloat16) for _ in range(3))
    flops = 4 * args.tokens**2 * 128 * 32
    report = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "cudnn": torch.backends.cudnn.version(),
        "cudnn_sdp_enabled": torch.backends.cuda.cudnn_sdp_enabled(),
        "tokens": args.tokens,
        "choice_default": choice(q, k, v),
        "kernels": {},
    }
    reference = torch.nn.functional.scaled_dot_product_attention(q, k, v).float()
    for name, order in ATTENTION_BACKENDS.items():
        if name == "math":
            continue
        row = {}
        for mode in ("priority", "only"):
            try:
                with sdpa_kernel(list(order), set_priority=True) if mode == "priority" else sdpa_kernel(order[0]):
                    row[f"{mode}_choice"] = choice(q, k, v)
                    result = measure(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v), device, 5, 2)
                    out = torch.nn.functional.scaled_dot_product_attention(q, k, v).float()
                row[f"{mode}_tflops"] = flops / result["seconds"] / 1e12
                row[f"{mode}_max_abs_diff_to_default"] = (out - reference).abs().max().item()
            except RuntimeError as exc:
                row[f"{mode}_error"] = str(exc).splitlines()[0][:300]
        with attention_backend(name, device):
            row["package_context_choice"] = choice(q, k, v)
        report["kernels"][name] = row
        print(name, row, flush=True)
    if args.dit:
        report["dit_attention_kernels"] = dit_kernels(device)
        print(report["dit_attention_kernels"], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
