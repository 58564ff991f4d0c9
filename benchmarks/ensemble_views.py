"""Which views an inverse ensemble should see: every held-out image rendered once per view (one sample each, the
view undone on the outputs), then sets of views combined as the pipeline combines ensemble members.

Views: ``plain``; ``noise`` (plain with another noise seed); ``mirror`` (left-right); ``shift`` (half a token down
and right: the pipeline's ``ensemble_shift``); ``shift_y`` / ``shift_x`` (half a token down / right only);
``mirror_shift``. Sets: the plain view with one other (E = 2), and two sets of four. Figures: the eval suite's
inverse metrics, mean over the clips, first frame of each, at the model's default steps.

Usage: python benchmarks/ensemble_views.py DATA [DATA...] --out results/ensemble_views_cpu.json [--model tiny]
[--max-clips N]. DATA: ``make-data`` folders with a val split.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from diffusion_renderer.conventions import INVERSE_PASSES, mirror_pass
from diffusion_renderer.data.storage import read_clip
from diffusion_renderer.eval.evaluate import cut_clip, inverse_metrics, list_eval_clips
from diffusion_renderer.io.atomic import atomic_file
from diffusion_renderer.models.specs import load_model
from diffusion_renderer.pipelines.image_processor import translate, translate_back
from diffusion_renderer.pipelines.pipeline_inverse_rendering import EnsembleSettings, InverseRenderingPipeline

SEED = 1000
VIEWS = ("plain", "noise", "mirror", "shift", "shift_y", "shift_x", "mirror_shift")
SETS = {
    "one_sample": ("plain",),
    "noise": ("plain", "noise"),
    "mirror": ("plain", "mirror"),
    "shift": ("plain", "shift"),
    "shift_x": ("plain", "shift_x"),
    "four_shifts": ("plain", "shift_y", "shift_x", "shift"),
    "shift_mirror": ("plain", "shift", "mirror", "mirror_shift"),
}
REPORTED = ("basecolor_si_psnr", "normal_angle_mean", "depth_abs_rel", "roughness_rmse", "metallic_rmse")


def view_output(pipe: InverseRenderingPipeline, frames: torch.Tensor, view: str) -> dict[str, torch.Tensor]:
    """(N, 3, H, W) frames in [0, 1] -> {pass: (N, C, H, W)} of one view, the view undone."""
    half = pipe.token_size // 2
    shift = {"shift": (half, half), "mirror_shift": (half, half), "shift_y": (half, 0), "shift_x": (0, half)}
    mirror = view.startswith("mirror")
    moved = shift.get(view, (0, 0))
    x = translate(frames.flip(-1) if mirror else frames, moved)
    generator = torch.Generator().manual_seed(SEED + 1 if view == "noise" else SEED)
    out = pipe(x, passes=INVERSE_PASSES, generator=generator, processing_resolution=0, progress=False,
               output_type="pt").gbuffers  # fmt: skip
    for name, value in out.items():
        value = translate_back(value, moved)
        out[name] = mirror_pass(name, value) if mirror else value
    return out


def clip_metrics(pipe: InverseRenderingPipeline, data: Path, name: str) -> dict[str, dict[str, float]]:
    """{set: inverse metrics} of one clip's first frame."""
    clip = cut_clip(read_clip(data, "val", name), 1)
    frames = torch.from_numpy(clip.rgb).float().permute(0, 3, 1, 2)  # (N, 3, H, W)
    if clip.rgb.dtype == np.uint8:
        frames = frames / 255
    views = {view: view_output(pipe, frames, view) for view in VIEWS}
    rows = {}
    for name_of_set, members in SETS.items():
        combined = {}
        for key in INVERSE_PASSES:
            stacked = torch.stack([views[view][key] for view in members])  # (E, N, C, H, W)
            value = stacked[0] if len(members) == 1 else pipe.ensemble(key, stacked)[0]
            combined[key] = value.permute(0, 2, 3, 1).numpy()  # (N, H, W, C)
        rows[name_of_set] = inverse_metrics(combined, clip.gbuffers, clip.meta.get("depth_range"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data", type=Path, nargs="+")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--max-clips", type=int, default=None)
    args = parser.parse_args()
    pipe = InverseRenderingPipeline.from_model(load_model(args.model, "inverse"))
    pipe.default_ensemble = EnsembleSettings()  # one sample per view: the sets are combined here
    pipe.set_progress_bar_config(disable=True)
    results = {}
    for data in args.data:
        per_set: dict[str, list[dict[str, float]]] = {name: [] for name in SETS}
        for clip in tqdm(list_eval_clips(data, "val", args.max_clips), desc=data.name):
            for name, metrics in clip_metrics(pipe, data, clip).items():
                per_set[name].append(metrics)
        results[str(data)] = {
            "clips": len(per_set["one_sample"]),
            "sets": {
                name: {key: round(float(np.nanmean([m[key] for m in rows])), 4) for key in REPORTED}
                for name, rows in per_set.items()
            },
        }
    record = {
        "benchmark": "ensemble_views",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "model": args.model,
        "torch": torch.__version__,
        "cpu": platform.machine(),
        "views": {name: list(members) for name, members in SETS.items()},
        "results": results,
    }
    with atomic_file(args.out) as tmp:
        tmp.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
