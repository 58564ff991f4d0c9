"""Where the end-to-end time of the pipelines goes: seconds per named stage, the DiT calls beside them.

Usage: python benchmarks/pipeline_stages.py --out results/pipeline_stages_<device>.json [--variant auto]
[--steps 2] [--size tiny --device cpu]

Each stage (the pipelines' methods, the tokenizer's windowed encode / decode, the DiT's forward) is timed with
the device synchronized before and after, on random weights at the official shapes (``bench``'s inputs), after a
1-step warm-up run. The stages outside the DiT do not depend on the step count, so the end-to-end time at 15 steps
is about ``overhead + 15 x dit_step``; the run reports both. Stages nest (``denoise`` holds the DiT calls).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

from diffusion_renderer.cli.bench import git_commit
from diffusion_renderer.eval.speed import (
    BenchConfig,
    parse_variant,
    pipeline_run,
    prepare_dit,
    random_model,
    run_bench,
    synchronize,
)
from diffusion_renderer.pipelines import pipeline_forward_rendering, pipeline_inverse_rendering

STAGES = {
    "inverse": ("prepare_frames", "prepare_latents", "denoise", "postprocess", "ensemble"),
    "forward": ("prepare_gbuffers", "encode_conditions", "prepare_lighting", "assemble", "postprocess"),
}
MODULES = {"inverse": pipeline_inverse_rendering, "forward": pipeline_forward_rendering}
WINDOW_FUNCTIONS = ("encode_windows", "decode_windows")


def timed(fn: Callable, name: str, totals: dict[str, float], calls: dict[str, int], device: torch.device) -> Callable:
    """``fn`` with its synchronized wall time added to ``totals[name]`` and its calls counted."""

    def wrapper(*args, **kwargs):
        synchronize(device)
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        synchronize(device)
        totals[name] += time.perf_counter() - start
        calls[name] += 1
        return out

    return wrapper


def profile_role(role: str, config: BenchConfig, variant: str) -> dict:
    """{stage: seconds} of one end-to-end run of ``role`` at ``config.steps`` steps, its total, and the estimate
    at 15 steps."""
    device = torch.device(config.device)
    model = random_model(role, config)
    attention, extras = parse_variant(variant)
    prepare_dit(model.transformer, attention, extras)
    pipe, run, frames = pipeline_run(model, config)
    run(num_inference_steps=1)  # warm-up: compilation, kernel selection, allocator
    totals: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)
    for name in STAGES[role]:
        setattr(pipe, name, timed(getattr(pipe, name), name, totals, calls, device))
    module = MODULES[role]
    originals = {name: getattr(module, name) for name in WINDOW_FUNCTIONS}
    for name, fn in originals.items():
        setattr(module, name, timed(fn, f"tokenizer.{name}", totals, calls, device))
    model.transformer.forward = timed(model.transformer.forward, "dit", totals, calls, device)  # instance attribute
    try:
        timed(run, "total", totals, calls, device)()
    finally:
        for name, fn in originals.items():
            setattr(module, name, fn)
        del model.transformer.forward  # back to the class's method
    dit_step = totals["dit"] / config.steps  # every DiT call of one step (passes, guidance)
    overhead = totals["total"] - totals["dit"]
    return {
        **{name: round(seconds, 4) for name, seconds in totals.items()},
        "calls": dict(calls),
        "frames": frames,
        "dit_step_s": round(dit_step, 4),
        "overhead_s": round(overhead, 4),
        "estimate_15_steps_s": round(overhead + 15 * dit_step, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--variant", default="auto", help="attention (+compile, +fp8), as bench's variants")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--roles", nargs="+", choices=("inverse", "forward"), default=["inverse", "forward"])
    parser.add_argument("--size", choices=("7b", "tiny"), default="7b")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--frames", type=int, default=None)
    parser.add_argument("--resolution", type=int, nargs=2, default=None, metavar=("H", "W"))
    args = parser.parse_args()
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    resolution = tuple(args.resolution) if args.resolution else None
    config = BenchConfig(
        size=args.size, device=args.device, dtype=dtype, steps=args.steps, frames=args.frames, resolution=resolution
    )
    report = run_bench(replace(config, cases=()), git_commit())  # device, versions, date, commit, settings
    report["settings"]["variant"] = args.variant
    for role in args.roles:
        report[role] = profile_role(role, config, args.variant)
        print(role, json.dumps(report[role]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
