"""Speed of the shipped `tiny` model on the CPU: relight one 256² image (inverse, 5 passes, + forward, 1 map).

Usage: python benchmarks/tiny_cpu_speed.py --out benchmarks/results/tiny_cpu_speed.json [--threads 2] [--model SPEC]
[--ensemble E [--ensemble-shift] [--ensemble-mirror]]
Median of --repeats runs after a warm-up, model loading excluded; at the model's default steps and at 15, with the
inverse ensemble the model records (and at the default steps without it, when it has one; and with ``--ensemble``'s,
when given: what a larger test-time ensemble costs).
``--model``: another pair of the same kind, e.g. a folder with the deep int4 pair (models/configs.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from diffusion_renderer.apps.relight import relight
from diffusion_renderer.io.atomic import atomic_file
from diffusion_renderer.lighting.presets import load_envmap
from diffusion_renderer.models.specs import load_model
from diffusion_renderer.pipelines.pipeline_forward_rendering import ForwardRenderingPipeline
from diffusion_renderer.pipelines.pipeline_inverse_rendering import EnsembleSettings, InverseRenderingPipeline

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "coffee.png"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="tiny", help="model spec of the pair (default: the shipped tiny)")
    parser.add_argument("--ensemble", type=int, default=None, help="also time this inverse ensemble size")
    parser.add_argument("--ensemble-shift", action="store_true", help="with --ensemble: shifted members")
    parser.add_argument("--ensemble-mirror", action="store_true", help="with --ensemble: mirrored members")
    args = parser.parse_args()
    if args.ensemble is not None and args.ensemble < 1:
        parser.error(f"--ensemble {args.ensemble}: at least 1 sample")
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    inverse = InverseRenderingPipeline.from_model(load_model(args.model, "inverse"))
    forward = ForwardRenderingPipeline.from_model(load_model(args.model, "forward"))
    load_s = time.perf_counter() - start
    _, hdr = load_envmap("park")
    figures = {}

    def timed(steps: int) -> float:
        times = []
        for i in range(args.repeats + 1):
            t0 = time.perf_counter()
            relight(inverse, forward, str(EXAMPLE), [hdr], seed=0, num_inference_steps=steps, progress=False)
            if i:  # the first run warms up
                times.append(time.perf_counter() - t0)
        return round(statistics.median(times), 3)

    for steps in (inverse.default_inference_steps, 15):
        figures[f"relight_256_steps{steps}_s"] = timed(steps)
    default = inverse.default_ensemble  # the model's recorded inverse ensemble, which relight() runs
    figures["ensemble"] = dataclasses.asdict(default)
    if default.size > 1:  # and the plain run beside it
        inverse.default_ensemble = EnsembleSettings()
        figures[f"relight_256_steps{inverse.default_inference_steps}_ensemble1_s"] = timed(
            inverse.default_inference_steps
        )
    if args.ensemble is not None:
        inverse.default_ensemble = EnsembleSettings(
            size=args.ensemble, mirror=args.ensemble_mirror, shift=args.ensemble_shift
        )
        views = "".join(f"_{v}" for v, on in (("shift", args.ensemble_shift), ("mirror", args.ensemble_mirror)) if on)
        key = f"relight_256_steps{inverse.default_inference_steps}_ensemble{args.ensemble}{views}_s"
        figures[key] = timed(inverse.default_inference_steps)
    result = {
        "date": dt.date.today().isoformat(),
        "cpu": platform.processor() or platform.machine(),
        "threads": args.threads,
        "model": args.model,
        "torch": torch.__version__,
        "load_s": round(load_s, 2),
        **figures,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(args.out) as tmp:  # a re-run never leaves half a results file
        tmp.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
