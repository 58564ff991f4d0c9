"""Throughput of the data engine: path-traced frames + ground-truth G-buffers per second, and convergence.

Samples scenes exactly as ``make-data`` does, renders them with Mitsuba 3 (``llvm_ad_rgb`` on the CPU,
``cuda_ad_rgb`` on a GPU), and reports frames/s after a warm-up scene (JIT compilation) plus the noise PSNR
between two renders of the same frame with different sampler seeds (how converged the ground truth is).

Usage: python benchmarks/data_engine.py --variant llvm_ad_rgb --out results/data_engine_cpu.json
       python benchmarks/data_engine.py --variant cuda_ad_rgb --out results/data_engine_h100.json

``--processes N [N ...]`` measures instead how the whole engine (``make-data --layout shards``: path tracing,
G-buffers, lighting conditions, both shading hints, shard writing) scales with parallel processes, the way
``train_small_gpu.py`` runs it: for each N, N processes render clips of disjoint seeds into a scratch folder, and
the shards finished in ``--seconds`` after a ``--warmup`` (imports, JIT compilation) give the frames/s. One process
renders 3.3 frames/s on an H200 (8-frame clips, 32 spp), 8 processes 8.1 and 12 only 4.7 (2026-12-04): they
contended for CPU threads, each with pools as wide as the machine. With ``--threads 1`` (OMP and Dr.Jit threads per
process) 12 processes render 21.6-24.4 frames/s (measured in ``train_small_gpu.py --gen-threads 1``, runs 28-29).
``--no-hints`` leaves the shading hints out of the shards, as ``train_small_gpu.py --roles inverse`` renders them;
each trial records the tensors its shards hold.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def use_mitsuba_hdr_reader() -> None:
    """Read .hdr/.exr with Mitsuba's own Bitmap (for GPU hosts without OpenCV/OpenEXR wheels)."""
    import mitsuba as mi

    from diffusion_renderer.data import mitsuba_render
    from diffusion_renderer.io import hdr as hdr_io

    def read(path):
        return np.array(mi.Bitmap(str(path)).convert(mi.Bitmap.PixelFormat.RGB, mi.Struct.Type.Float32), copy=True)

    hdr_io.read_hdr = read
    if hasattr(mitsuba_render, "read_hdr"):
        mitsuba_render.read_hdr = read


def host_record(variant: str) -> dict[str, str]:
    """Where a record was measured: the variant, the machine, the versions and, on a GPU, its name."""
    record = {
        "variant": variant,
        "machine": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "mitsuba": __import__("mitsuba").__version__,
    }
    if variant.startswith("cuda"):
        import torch

        record["device"] = torch.cuda.get_device_name() if torch.cuda.is_available() else "cuda"
    return record


def engine_worker(args: argparse.Namespace) -> None:
    """One data-engine process of a scaling trial: clips of seeds ``args.seed``+ into ``args.out`` until killed."""
    from diffusion_renderer.data.make_data import make_dataset

    if args.threads:
        import drjit as dr

        dr.set_thread_count(args.threads)
    if args.mitsuba_hdr_reader:
        use_mitsuba_hdr_reader()
    variant = "gpu" if args.variant.startswith("cuda") else "cpu"
    make_dataset(
        Path(args.out),
        scenes=100_000,
        seed=args.seed,
        frames=args.frames,
        resolution=args.resolution,
        variant=variant,
        spp=args.spp,
        layout="shards",
        val_fraction=0.0,
        progress=False,
        hints=not args.no_hints,
    )


def count_shards(folder: Path) -> int:
    from diffusion_renderer.data.shards import list_shards

    return len(list_shards(folder, "train"))


def shard_keys(folder: Path) -> list[str]:
    """The tensors a trial's shards hold (its first finished one): what the engine's time was spent on."""
    from safetensors import safe_open

    from diffusion_renderer.data.shards import list_shards

    for path in list_shards(folder, "train")[:1]:
        with safe_open(str(path), "pt") as shard:
            return sorted(shard.keys())
    return []


def scaling_trial(args: argparse.Namespace, processes: int, scratch: Path) -> dict:
    """Frames/s of ``processes`` concurrent data-engine processes, counted after the warm-up."""
    out = scratch / f"p{processes}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    common = [sys.executable, __file__, "--worker", "--variant", args.variant, "--out", str(out)]
    common += ["--frames", str(args.frames), "--resolution", str(args.resolution), "--threads", str(args.threads)]
    common += ["--spp", str(args.spp)] if args.spp else []
    common += ["--mitsuba-hdr-reader"] if args.mitsuba_hdr_reader else []
    common += ["--no-hints"] if args.no_hints else []
    logs = [scratch / f"p{processes}_{i}.log" for i in range(processes)]
    handles = [log.open("w") for log in logs]
    seeds = [1_000_000 * (i + 1) for i in range(processes)]  # disjoint clips
    workers = [
        subprocess.Popen([*common, "--seed", str(seed)], env=env, stdout=handle, stderr=subprocess.STDOUT)
        for seed, handle in zip(seeds, handles, strict=True)
    ]
    try:
        time.sleep(args.warmup)
        before, start = count_shards(out), time.perf_counter()
        time.sleep(args.seconds)
        clips, seconds = count_shards(out) - before, time.perf_counter() - start
    finally:
        for worker, handle in zip(workers, handles, strict=True):
            worker.kill()
            worker.wait()
            handle.close()
    failed = [i for i, w in enumerate(workers) if w.returncode not in (0, -9)]
    if clips == 0:  # say why: a trial that renders nothing is a broken set-up, not a slow one
        tail = logs[0].read_text().strip().splitlines()[-3:]
        print(
            f"data_engine: {processes} processes rendered no clip; worker 0 said: {' | '.join(tail)}", file=sys.stderr
        )
    return {
        "processes": processes,
        "threads": args.threads or None,
        "clips": clips,
        "seconds": round(seconds, 1),
        "frames_per_second": round(clips * args.frames / seconds, 3),
        "failed_workers": failed,
        "shard_keys": shard_keys(out),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--variant", default="llvm_ad_rgb")
    parser.add_argument("--scenes", type=int, default=8)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--frames", type=int, default=1)
    parser.add_argument("--spp", type=int, default=None, help="default: the engine's")
    parser.add_argument("--mitsuba-hdr-reader", action="store_true")
    parser.add_argument("--out", required=True)
    parser.add_argument("--processes", type=int, nargs="+", default=None, help="scaling trials: processes each")
    parser.add_argument("--threads", type=int, default=0, help="OMP / Dr.Jit threads per process (0: default)")
    parser.add_argument("--seconds", type=float, default=60.0, help="scaling trials: counted time each")
    parser.add_argument("--warmup", type=float, default=30.0, help="scaling trials: uncounted start")
    parser.add_argument("--no-hints", action="store_true", help="scaling trials: shards without shading hints")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        engine_worker(args)
        return
    if args.processes:
        with tempfile.TemporaryDirectory(prefix="data_engine_") as scratch:
            trials = [scaling_trial(args, n, Path(scratch)) for n in args.processes]
        record = {
            "benchmark": "data_engine_scaling",
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            **host_record(args.variant),
            "resolution": [args.resolution, args.resolution],
            "frames_per_clip": args.frames,
            "spp": args.spp,
            "hints": not args.no_hints,
            "cpus": os.cpu_count(),
            "trials": trials,
        }
        Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
        print(json.dumps(record, indent=2))
        return

    from diffusion_renderer.data.make_data import environment_maps
    from diffusion_renderer.data.mitsuba_render import noise_psnr, render_clip
    from diffusion_renderer.data.scenes import sample_scene

    if args.mitsuba_hdr_reader:
        use_mitsuba_hdr_reader()
    maps = environment_maps(None)
    size = (args.resolution, args.resolution)

    def scene(seed: int):
        return sample_scene(seed, resolution=size, num_frames=args.frames, hdri_paths=maps)

    render_clip(scene(10_000), variant=args.variant, spp=args.spp)  # warm-up: JIT / OptiX compilation
    start = time.perf_counter()
    for seed in range(args.scenes):
        render_clip(scene(seed), variant=args.variant, spp=args.spp)
    seconds = time.perf_counter() - start
    frames = args.scenes * args.frames
    psnr = [noise_psnr(scene(seed), args.spp, variant=args.variant) for seed in range(2)]
    spec = scene(0)
    record = {
        "benchmark": "data_engine",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        **host_record(args.variant),
        "resolution": list(size),
        "spp": args.spp or spec.spp,
        "scenes": args.scenes,
        "frames_per_scene": args.frames,
        "seconds": round(seconds, 2),
        "frames_per_second": round(frames / seconds, 3),
        "noise_psnr_db": [round(p, 2) for p in psnr],
    }
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
