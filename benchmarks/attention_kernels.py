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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tokens", type=int, default=28160)
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
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
