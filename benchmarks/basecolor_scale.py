"""Is the inverse model's basecolor scale error a bias? Per held-out clip, the per-channel least-squares scale that
maps the predicted basecolor onto the truth (the eval's scale-invariant PSNR fits it), as log2: its mean per channel
(a bias a constant would fix), per lighting (light mistaken for albedo), and its correlation with the true albedo's
brightness (a pull towards the mean albedo). Positive: the prediction is too dark. And whether the predicted
brightness is calibrated: the least-squares slope of the true albedo's log2 mean on the prediction's (1: a prediction
one stop brighter means, on average, an albedo one stop brighter; below 1: the prediction's brightness varies more
than the truth it tracks). `--split train` on a set rendered with training maps (`make-data --only-split train`)
separates what held-out light costs from what any single image leaves ambiguous.

Usage: python benchmarks/basecolor_scale.py DATA --out results/basecolor_scale_cpu.json [--model tiny]
[--max-clips N] [--split val|train]. First frame of each clip, the model's default inverse settings.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from diffusion_renderer.data.storage import MASK_KEY, read_clip
from diffusion_renderer.eval.evaluate import cut_clip, list_eval_clips
from diffusion_renderer.eval.metrics import least_squares_scale
from diffusion_renderer.io.atomic import atomic_file
from diffusion_renderer.models.specs import load_model
from diffusion_renderer.pipelines.pipeline_inverse_rendering import InverseRenderingPipeline

SEED = 1000


def clip_scale(pipe: InverseRenderingPipeline, data: Path, split: str, name: str) -> dict:
    """One clip's log2 scale per channel, its lighting, the true and predicted albedo's foreground means."""
    clip = cut_clip(read_clip(data, split, name), 1)
    generator = torch.Generator().manual_seed(SEED)
    pred = pipe(clip.rgb, passes=["basecolor"], generator=generator, processing_resolution=0, progress=False)
    gt, mask = clip.gbuffers["basecolor"], clip.gbuffers[MASK_KEY]
    scale = least_squares_scale(pred.gbuffers["basecolor"], gt, mask)  # (3,)
    foreground = np.broadcast_to(mask.astype(bool), gt.shape)
    return {
        "clip": name,
        "light": str(clip.meta.get("hdri", "")),
        "log2_scale": np.log2(np.maximum(scale, 1e-6)).round(4).tolist(),
        "albedo_mean": round(float(gt[foreground].mean()), 4),
        "predicted_mean": round(float(pred.gbuffers["basecolor"][foreground].mean()), 4),
    }


def summary(rows: list[dict]) -> dict:
    log2 = np.array([r["log2_scale"] for r in rows])  # (clips, 3)
    albedo = np.log2(np.array([r["albedo_mean"] for r in rows]))
    predicted = np.log2(np.maximum(np.array([r["predicted_mean"] for r in rows]), 1e-6))
    lights = sorted({r["light"] for r in rows})
    return {
        "clips": len(rows),
        "mean_log2_scale_rgb": log2.mean(0).round(3).tolist(),
        "median_log2_scale_rgb": np.median(log2, 0).round(3).tolist(),
        "mean_abs_log2_scale": round(float(np.abs(log2).mean()), 3),
        "corr_with_log2_albedo_mean": round(float(np.corrcoef(log2.mean(1), albedo)[0, 1]), 3),
        "slope_log2_albedo_on_predicted": round(float(np.polyfit(predicted, albedo, 1)[0]), 3),
        "corr_log2_albedo_predicted": round(float(np.corrcoef(predicted, albedo)[0, 1]), 3),
        "by_light": {
            light: {
                "clips": sum(r["light"] == light for r in rows),
                "mean_log2_scale": round(float(log2[[r["light"] == light for r in rows]].mean()), 3),
            }
            for light in lights
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--max-clips", type=int, default=None)
    parser.add_argument("--split", choices=("val", "train"), default="val")
    args = parser.parse_args()
    pipe = InverseRenderingPipeline.from_model(load_model(args.model, "inverse"))
    pipe.set_progress_bar_config(disable=True)
    clips = list_eval_clips(args.data, args.split, args.max_clips)
    rows = [clip_scale(pipe, args.data, args.split, name) for name in tqdm(clips)]
    record = {
        "benchmark": "basecolor_scale",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "data": str(args.data),
        "split": args.split,
        "model": args.model,
        "ensemble": dataclasses.asdict(pipe.default_ensemble),
        "summary": summary(rows),
        "clips": rows,
    }
    with atomic_file(args.out) as tmp:  # a re-run never leaves half a results file
        tmp.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record["summary"], indent=1))


if __name__ == "__main__":
    main()
