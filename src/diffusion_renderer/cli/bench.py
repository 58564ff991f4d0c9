"""``diffusion-renderer bench``: speed and memory of the DiT, the tokenizer and the pipelines (eval/speed.py)."""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

from diffusion_renderer.distributed import teardown
from diffusion_renderer.io.atomic import atomic_file


def git_commit() -> str:
    """The checkout's commit (``DR_GIT_COMMIT`` where the tree travels without its history)."""
    if os.environ.get("DR_GIT_COMMIT"):
        return os.environ["DR_GIT_COMMIT"]
    try:
        here = Path(__file__).resolve().parent
        return subprocess.check_output(
            ["git", "rev-parse", "HEAD"], cwd=here, text=True, stderr=subprocess.DEVNULL
        ).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def cmd_bench(args: argparse.Namespace) -> int:
    import torch

    from diffusion_renderer.eval.speed import BenchConfig, run_bench

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.startswith("cuda") else "float32"))
    config = BenchConfig(
        size=args.size,
        device=device,
        dtype=dtype,
        cases=tuple(args.cases),
        variants=tuple(args.variants),
        repeats=args.repeats,
        warmup=args.warmup,
        steps=args.steps,
        frames=args.frames,
        resolution=tuple(args.resolution) if args.resolution else None,
        pipeline_variant=args.pipeline_variant,
        offloads=tuple(args.offload),
        vae_streams=tuple(args.vae_streams),
    )
    main = os.environ.get("RANK", "0") == "0"  # under torchrun (the cp case) rank 0 writes
    if args.out and main:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        config.save = functools.partial(save_report, out)  # rewritten as results come: a cut-off run keeps them
    try:
        report = run_bench(config, git_commit())
    except BaseException:
        teardown(wait=False)  # another rank may be inside a collective
        raise
    teardown()
    if not main:
        return 0
    if args.out:
        print(f"wrote {args.out}")
    else:
        print(json.dumps(report, indent=1))
    return 0


def save_report(path: Path, report: dict) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(report, indent=1) + "\n")


def add_bench_parser(sub, set_defaults: Callable[[argparse.ArgumentParser, Callable], None]) -> None:
    from diffusion_renderer.eval.speed import CASES, DEFAULT_CASES
    from diffusion_renderer.models.performance import OFFLOAD_MODES

    p = sub.add_parser(
        "bench",
        help="time and memory of the DiT, tokenizer and pipelines at the official shapes (random weights)",
        epilog="variants: stock (diffusers' CosmosTransformer3DModel), default (PyTorch's attention choice), auto, "
        "cudnn, flash, efficient, math; append +compile to compile the blocks (diffusers compile_repeated_blocks) "
        "and/or +fp8 for FP8 matrix products in the blocks (models/fp8.py)",
    )
    p.add_argument("--size", choices=("7b", "tiny"), default="7b", help="7b: the official networks; tiny: a smoke run")
    p.add_argument(
        "--cases",
        nargs="+",
        choices=tuple(CASES),
        default=list(DEFAULT_CASES),
        help="cp: context parallelism, under torchrun (default: dit vae pipeline)",
    )
    p.add_argument("--variants", nargs="+", default=["stock", "default", "auto", "auto+compile"])
    p.add_argument("--pipeline-variant", default="auto", help="attention (+compile, +fp8) of the end-to-end runs")
    p.add_argument(
        "--offload", nargs="+", choices=OFFLOAD_MODES, default=["none"], help="offload modes of the end-to-end runs"
    )
    p.add_argument(
        "--vae-streams",
        nargs="+",
        type=int,
        default=[0, 1, 2, 4],
        metavar="N",
        help="tokenizer latent frames per streaming step to compare (0: whole clip, the first is the reference)",
    )
    p.add_argument("--repeats", type=int, default=5, help="timed runs per case (median reported)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--steps", type=int, default=15, help="denoising steps of the end-to-end runs")
    p.add_argument("--frames", type=int, default=None, help="clip frames (default: the tokenizer's window, 57)")
    p.add_argument("--resolution", type=int, nargs=2, metavar=("H", "W"), default=None, help="default 704 1280")
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", choices=("bfloat16", "float16", "float32"), default=None, help="default: bf16 on GPU")
    p.add_argument("--out", default=None, help="JSON file (default: print)")
    set_defaults(p, cmd_bench)
