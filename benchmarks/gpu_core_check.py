"""GPU check of the core (issue 2): the 7B DiTs in bf16 with random weights at the official video shape.

1. One denoising step (one DiT call) of ``random:inverse-7b`` and ``random:forward-7b`` in bf16 at
   57 x 704 x 1280 (latent 16 x 8 x 88 x 160, 28,160 tokens): median time over CUDA events, peak memory.
2. bf16 vs float32 agreement of the same random 7B weights on a smaller shape (the official bf16 casting:
   weights, residual stream and RoPE/sin-cos buffers in bf16).

Usage: python benchmarks/gpu_core_check.py --out results.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
from pathlib import Path

import torch

from diffusion_renderer.conventions import CONTEXT_INDEX
from diffusion_renderer.models.specs import random_transformer


def git_commit() -> str:
    if os.environ.get("DR_GIT_COMMIT"):  # the device copy of the tree carries no git history
        return os.environ["DR_GIT_COMMIT"]
    try:
        return subprocess.check_output(["git", "rev-parse", "HEAD"], text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def inputs(model, latent: tuple[int, ...], dtype: torch.dtype, seed: int = 0) -> dict:
    generator = torch.Generator(device="cuda").manual_seed(seed)
    x = torch.randn(latent, generator=generator, device="cuda").to(dtype)
    cond = torch.randn((latent[0], model.condition_channels, *latent[2:]), generator=generator, device="cuda")
    kwargs = {"latent_condition": cond.to(dtype), "fps": torch.tensor([24.0], device="cuda")}
    if model.context_embedding is not None:
        kwargs["context_index"] = torch.tensor([[CONTEXT_INDEX["normal"]]], device="cuda")
    t = torch.tensor([0.5], device="cuda").to(dtype)
    return {"hidden_states": x, "timestep": t, **kwargs}


@torch.no_grad()
def time_step(model, kwargs: dict, repeats: int = 3) -> tuple[float, float]:
    model(**kwargs)  # warm-up
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out = model(**kwargs).sample
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1000)
        assert torch.isfinite(out).all(), "non-finite output"
    return sorted(times)[len(times) // 2], torch.cuda.max_memory_allocated() / 2**30


@torch.no_grad()
def bf16_vs_fp32(role: str, latent: tuple[int, ...]) -> dict:
    model = random_transformer(f"{role}-7b", seed=1, device="cuda", dtype=torch.float32)
    kwargs = inputs(model, latent, torch.float32)
    reference = model(**kwargs).sample.double()
    torch.nn.Module.to(model, torch.bfloat16)  # as the official set_up_model: parameters and buffers
    kwargs_bf16 = {k: (v.to(torch.bfloat16) if v.is_floating_point() and k != "fps" else v) for k, v in kwargs.items()}
    out = model(**kwargs_bf16).sample.double()
    del model
    torch.cuda.empty_cache()
    diff = out - reference
    return {
        "latent_shape": list(latent),
        "relative_l2": (diff.norm() / reference.norm()).item(),
        "max_abs_diff_over_max_abs": (diff.abs().max() / reference.abs().max()).item(),
        "mean_abs_diff": diff.abs().mean().item(),
        "reference_std": reference.std().item(),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--video-latent", type=int, nargs=5, default=[1, 16, 8, 88, 160])
    parser.add_argument("--image-latent", type=int, nargs=5, default=[1, 16, 1, 88, 160])
    parser.add_argument("--parity-latent", type=int, nargs=5, default=[1, 16, 2, 32, 48])
    args = parser.parse_args()

    import diffusers

    report: dict = {
        "what": "issue 2 GPU check: 7B DiT bf16 step at the official shapes; bf16 vs fp32 agreement",
        "device": torch.cuda.get_device_name(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "versions": {
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "python": platform.python_version(),
        },
        "steps": {},
        "bf16_vs_fp32": {},
    }
    for role in ("inverse", "forward"):
        model = random_transformer(f"{role}-7b", seed=0, device="cuda", dtype=torch.bfloat16)
        params = sum(p.numel() for p in model.parameters())
        for name, latent in (("video_57x704x1280", args.video_latent), ("image_704x1280", args.image_latent)):
            seconds, peak = time_step(model, inputs(model, tuple(latent), torch.bfloat16))
            report["steps"][f"{role}.{name}"] = {
                "latent_shape": latent,
                "tokens": latent[2] * latent[3] * latent[4] // 4,
                "seconds_per_step_median": round(seconds, 4),
                "peak_gib": round(peak, 2),
                "parameters": params,
            }
            print(role, name, report["steps"][f"{role}.{name}"], flush=True)
        del model
        torch.cuda.empty_cache()
    for role in ("inverse", "forward"):
        report["bf16_vs_fp32"][role] = bf16_vs_fp32(role, tuple(args.parity_latent))
        print(role, "bf16 vs fp32", report["bf16_vs_fp32"][role], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
