"""GPU figures of the rendering pipelines (issue 3) with the 7B networks in bf16 (random weights, official shapes).

Measures wall time (CUDA-synchronised) and peak GPU memory of:

* inverse, one 1280x704 image, all five passes: batched through the DiT (one batch of 5) vs one pass at a time;
* inverse, one 57-frame clip, one pass; and a 97-frame clip in two blended windows (one pass);
* forward, one image, one env map; one 57-frame clip under a rotating env map (env projection timed apart);
* offloading through diffusers (model CPU offload, sequential offload) on the image inverse, fewer steps.

Usage: python benchmarks/pipelines_gpu.py --out results.json [--steps 15]
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from diffusion_renderer.lighting.envmap import process_environment_map
from diffusion_renderer.models.specs import load_model
from diffusion_renderer.pipelines.pipeline_forward_rendering import ForwardRenderingPipeline
from diffusion_renderer.pipelines.pipeline_inverse_rendering import InverseRenderingPipeline

try:
    from gpu_core_check import git_commit
except ImportError:  # run from elsewhere

    def git_commit() -> str:
        return "unknown"


# --smoke: the same code on the CPU with the tiny models, to check the script before spending GPU time
DEVICE, DTYPE, SPEC = "cuda", torch.bfloat16, {"inverse": "inverse-7b", "forward": "forward-7b"}


def sky(height: int = 256, width: int = 512) -> np.ndarray:
    """A synthetic HDR sky: blue gradient, warm ground, one small sun of 5e4."""
    v = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    hdr = np.where(v < 0.5, np.array([0.4, 0.6, 1.0]) * (1.5 - v), np.array([0.3, 0.25, 0.2]))
    hdr = np.broadcast_to(hdr, (height, width, 3)).astype(np.float32).copy()
    hdr[height // 5 : height // 5 + 3, width // 3 : width // 3 + 3] = 5e4
    return hdr


def measure(name: str, fn: Callable[[], object], results: dict) -> object:
    gc.collect()
    cuda = DEVICE == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    try:
        out = fn()
    except Exception as exc:  # record and go on: one failing configuration must not lose the others
        results[name] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
        print(f"{name}: FAILED {results[name]['error']}", flush=True)
        return None
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0
    results[name] = {"seconds": round(seconds, 2), "peak_gib": round(peak, 2)}
    print(f"{name}: {seconds:.2f} s, peak {peak:.2f} GiB", flush=True)
    return out


def random_model(role: str):
    return load_model(f"random:{SPEC[role]}", role, device=DEVICE, dtype=DTYPE)


def bench_inverse(image: np.ndarray, clip57: np.ndarray, common: dict, results: dict) -> None:
    """Inverse pipeline: passes batched or not, one and two windows, offloading (GPU only)."""
    clip97 = np.concatenate([clip57, clip57[:40]])  # two windows of 57 sharing 17 frames
    pipe = InverseRenderingPipeline.from_model(
        load_model(f"random:{SPEC['inverse']}", "inverse", device=DEVICE, dtype=DTYPE)
    )
    pipe(image, passes=["basecolor"], num_inference_steps=1, processing_resolution=image.shape[:2])  # warm-up
    measure("inverse_image_5_passes_batched", lambda: pipe(image, pass_batch_size=5, **common), results)
    measure("inverse_image_5_passes_one_by_one", lambda: pipe(image, pass_batch_size=1, **common), results)
    measure("inverse_video57_1_pass", lambda: pipe(clip57, passes=["normal"], **common), results)
    measure("inverse_video97_2_windows_1_pass", lambda: pipe(clip97, passes=["normal"], **common), results)

    few = {**common, "num_inference_steps": 2, "passes": ["normal"]}
    if DEVICE != "cuda":
        return
    pipe.to("cpu")
    pipe.enable_model_cpu_offload(device="cuda")
    measure("inverse_image_1_pass_2_steps_offload_model", lambda: pipe(image, **few), results)
    pipe.remove_all_hooks()
    pipe.enable_sequential_cpu_offload(device="cuda")
    measure("inverse_image_1_pass_2_steps_offload_sequential", lambda: pipe(image, **few), results)


def bench_forward(image: np.ndarray, common: dict, results: dict) -> None:
    """Forward pipeline: env projection, one image, one clip under a rotating light."""
    pipe = ForwardRenderingPipeline.from_model(
        load_model(f"random:{SPEC['forward']}", "forward", device=DEVICE, dtype=DTYPE)
    )
    hdr = sky()
    gbuffers = {"basecolor": image, "normal": image * 2 - 1, "depth": image[..., :1], "roughness": image[..., :1]}
    video = {k: np.repeat(v[None], 57, axis=0) for k, v in gbuffers.items()}
    pipe(gbuffers, hdr, num_inference_steps=1, processing_resolution=image.shape[:2])  # warm-up
    height, width = image.shape[:2]

    def project():
        return process_environment_map(hdr, height, width, 57, rotate=True, device=DEVICE)

    measure("envmap_projection_57_frames_cubemap", project, results)
    measure("forward_image_1_envmap", lambda: pipe(gbuffers, hdr, **common), results)
    measure("forward_video57_rotating_light", lambda: pipe(video, hdr, rotate_light=True, **common), results)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--smoke", action="store_true", help="tiny models on the CPU at 64x96")
    args = parser.parse_args()
    global DEVICE, DTYPE, SPEC
    height, width = (704, 1280)
    if args.smoke:
        DEVICE, DTYPE, SPEC, height, width = "cpu", torch.float32, {"inverse": "tiny", "forward": "tiny"}, 64, 96
    rng = np.random.default_rng(0)
    image = rng.random((height, width, 3), dtype=np.float32)
    clip57 = rng.random((57, height, width, 3), dtype=np.float32)
    common = {
        "num_inference_steps": args.steps,
        "processing_resolution": (height, width),
        "progress": False,
        "generator": torch.Generator().manual_seed(0),
    }
    results: dict = {}
    bench_inverse(image, clip57, common, results)
    gc.collect()
    if DEVICE == "cuda":
        torch.cuda.empty_cache()
    bench_forward(image, common, results)

    record = {
        "benchmark": "pipelines_gpu",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu (smoke)",
        "torch": torch.__version__,
        "diffusers": __import__("diffusers").__version__,
        "python": platform.python_version(),
        "commit": git_commit(),
        "dtype": "bfloat16",
        "weights": "random (official 7B layouts, CV8x8x8 tokenizer layout)",
        "resolution": [height, width],
        "steps": args.steps,
        "results": results,
    }
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
