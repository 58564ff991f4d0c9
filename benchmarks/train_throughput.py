"""Training throughput of the small renderers: frames/s of `training.Trainer` steps, eager against torch.compile
(the whole model, or each block: `compile-blocks`), over batch sizes, on a synthetic frame bank (the pixels' content
does not change the speed), and what the warm-up steps took (`warmup_s`: compilation).

Usage (device):
    python benchmarks/train_throughput.py --role inverse --model-config small --batch-sizes 128 256 512 \
        --variants eager compile --profile --out $OUT/train_throughput_h200.json
CPU smoke run: --device cpu --size 32 --clips 2 --batch-sizes 4 --steps 2 --warmup 1
The deep int4 sizes: --model-config medium-deep-residual --role forward --qat int4 (what the fake quantisation costs).

Why: the inverse trainer ran 1,176 frames/s at batch 128 and 1,295 at 256 on an H200 (run 30, 2026-12-04). Doubling
the batch barely moved it, so its steps are bound by the GPU's work per frame, not by kernel launches: this says
how much of a step is which kernel (``--profile``) and whether torch.compile (``TrainConfig.compile``, never
measured in training before) fuses the small elementwise work of a 192-wide model away.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from diffusion_renderer.conventions import CHANNELS, GBUFFER_KEYS
from diffusion_renderer.data.shards import encode_clip
from diffusion_renderer.training.compile_cache import load_compile_cache, save_compile_cache
from diffusion_renderer.training.frames import FrameBank, bank_keys
from diffusion_renderer.training.trainer import TrainConfig, Trainer

VARIANTS = ("eager", "compile", "compile-blocks")
OP_NAME_CHARS = 100  # CUDA kernel names run to 900 characters of C++ templates


def synthetic_bank(
    role: str, clips: int, frames: int, size: int, exposure_stops: float, device: str, seed: int = 0
) -> FrameBank:
    """``clips`` random clips (T = ``frames``, size²) as the data engine would store them, only the tensors a
    ``role`` trainer reads (with the lighting and the shading hints for a forward trainer)."""
    rng = np.random.default_rng(seed)
    stored = []
    for _ in range(clips):
        gbuffers = {k: rng.random((frames, size, size, CHANNELS.get(k, 1))) for k in (*GBUFFER_KEYS, "mask")}
        gbuffers["normal"] = gbuffers["normal"] * 2 - 1
        env = torch.from_numpy(rng.random((frames, size, size, 3)) * 4).float() if role == "forward" else None
        stored.append(encode_clip(rng.random((frames, size, size, 3)), gbuffers, env))
    keys = bank_keys(role, exposure_stops)
    tensors = {k: torch.stack([c[k] for c in stored]).to(device) for k in stored[0] if k in keys}
    return FrameBank(tensors, [str(i) for i in range(clips)])


def time_steps(trainer: Trainer, warmup: int, steps: int) -> dict[str, float]:
    """Seconds of ``steps`` train steps after ``warmup`` ones (compilation, allocator, autotuning), synchronized;
    ``warmup_s``: what the warm-up steps took (a compiled run's compilation, which a time-limited call pays)."""
    sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
    start = time.perf_counter()
    for _ in range(warmup):
        trainer.train_step()
    sync()
    warmup_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    sync()
    seconds = time.perf_counter() - start
    frames = steps * trainer.config.batch_size
    return {
        "step_ms": round(1000 * seconds / steps, 2),
        "frames_per_s": round(frames / seconds, 1),
        "warmup_s": round(warmup_s, 3),
    }


def kernel_table(trainer: Trainer, steps: int, top: int = 15) -> list[dict[str, object]]:
    """The ``top`` operators by their own device time over ``steps`` steps (torch.profiler), with their share (on
    the CPU: their own CPU time, summed over threads)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if trainer.device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            trainer.train_step()
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
    events = prof.key_averages()
    attr = "self_device_time_total" if trainer.device.type == "cuda" else "self_cpu_time_total"
    total = sum(getattr(e, attr) for e in events) or 1.0
    ranked = sorted(events, key=lambda e: getattr(e, attr), reverse=True)[:top]
    return [
        {
            "op": e.key[:OP_NAME_CHARS],
            "self_ms_per_step": round(getattr(e, attr) / 1000 / steps, 3),
            "share": round(getattr(e, attr) / total, 4),
        }
        for e in ranked
    ]


def measure(args: argparse.Namespace, bank: FrameBank, variant: str, batch_size: int, out: Path) -> dict[str, object]:
    config = TrainConfig(
        role=args.role,
        model_config=args.model_config,
        batch_size=batch_size,
        clip_frames=args.clip_frames,
        clip_fraction=args.clip_fraction,
        steps=10**9,  # the schedule never ends here
        warmup_steps=1,
        val_every=0,
        checkpoint_every=0,
        pure_noise_fraction=args.pure_noise_fraction,
        exposure_stops=args.exposure_stops,
        compile=variant == "compile",
        compile_blocks=variant == "compile-blocks",
        qat=args.qat,
    )
    trainer = Trainer(config, out, bank, None, device=args.device, progress=False)
    if trainer.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(trainer.device)
    result: dict[str, object] = {
        "variant": variant,
        "batch_size": batch_size,
        **time_steps(trainer, args.warmup, args.steps),
    }
    if trainer.device.type == "cuda":
        result["peak_memory_gb"] = round(torch.cuda.max_memory_allocated(trainer.device) / 1e9, 2)
    if args.profile:
        result["top_ops"] = kernel_table(trainer, max(1, args.steps // 4))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=("inverse", "forward"), default="inverse")
    parser.add_argument("--model-config", default="small")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", type=int, default=256, help="frame size (a multiple of 8)")
    parser.add_argument("--clips", type=int, default=16, help="synthetic clips in the bank")
    parser.add_argument("--frames", type=int, default=8, help="frames per clip")
    parser.add_argument("--clip-frames", type=int, default=4)
    parser.add_argument("--clip-fraction", type=float, default=0.5)
    parser.add_argument("--pure-noise-fraction", type=float, default=0.5)
    parser.add_argument("--exposure-stops", type=float, default=0.5)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--profile", action="store_true", help="add the top operators by device time")
    parser.add_argument("--qat", choices=("int4",), default=None, help="quantisation-aware training (training/qat.py)")
    parser.add_argument(
        "--compile-cache",
        type=Path,
        default=None,
        metavar="FILE",
        help="as `train --compile-cache`: load FILE before the runs and write it after (warmup_s then tells what a "
        "fresh machine given the file pays; run once with a fresh TORCHINDUCTOR_CACHE_DIR to write it)",
    )
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    bank = synthetic_bank(args.role, args.clips, args.frames, args.size, args.exposure_stops, args.device)
    runs = []
    cache = {"loaded": load_compile_cache(args.compile_cache)} if args.compile_cache else None
    with tempfile.TemporaryDirectory() as scratch:
        for variant in args.variants:
            for batch_size in args.batch_sizes:
                runs.append(measure(args, bank, variant, batch_size, Path(scratch)))
                print(json.dumps({k: v for k, v in runs[-1].items() if k != "top_ops"}), flush=True)
    if cache is not None:
        cache["written"] = save_compile_cache(args.compile_cache)
    result = {
        "benchmark": "train_throughput",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "torch": torch.__version__,
        "commit": os.environ.get("DR_GIT_COMMIT", "unknown"),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "runs": runs,
        **({} if cache is None else {"compile_cache_entries": cache}),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
