"""Throughput of the data engine: path-traced frames + ground-truth G-buffers per second, and convergence.

Samples scenes exactly as ``make-data`` does, renders them with Mitsuba 3 (``llvm_ad_rgb`` on the CPU,
``cuda_ad_rgb`` on a GPU), and reports frames/s after a warm-up scene (JIT compilation) plus the noise PSNR
between two renders of the same frame with different sampler seeds (how converged the ground truth is).

Usage: python benchmarks/data_engine.py --variant llvm_ad_rgb --out results/data_engine_cpu.json
       python benchmarks/data_engine.py --variant cuda_ad_rgb --out results/data_engine_h100.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--variant", default="llvm_ad_rgb")
    parser.add_argument("--scenes", type=int, default=8)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--frames", type=int, default=1)
    parser.add_argument("--spp", type=int, default=None, help="default: the engine's")
    parser.add_argument("--mitsuba-hdr-reader", action="store_true")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

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
        "variant": args.variant,
        "machine": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "mitsuba": __import__("mitsuba").__version__,
        "resolution": list(size),
        "spp": args.spp or spec.spp,
        "scenes": args.scenes,
        "frames_per_scene": args.frames,
        "seconds": round(seconds, 2),
        "frames_per_second": round(frames / seconds, 3),
        "noise_psnr_db": [round(p, 2) for p in psnr],
    }
    if args.variant.startswith("cuda"):
        import torch

        record["device"] = torch.cuda.get_device_name() if torch.cuda.is_available() else "cuda"
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
