"""How much of the basecolor's level can one image tell, and what does the rest cost relighting?

The eval's relighting PSNR compares against the scene path-traced under a new light at that light's own intensity,
so a relit frame carries any error in the basecolor's overall level. From one image, albedo and light trade off:
the frame fixes their product, and the data engine draws each clip's light at x0.5-2 (log-uniform) of a map whose
own brightness varies too. Per clip (frame 0), in stops (log2 of the mean linear luminance over the ground-truth
mask):

* ``x``: the true albedo's level; ``o``: the frame's level (the display frame linearised: light and albedo
  together; clipped pixels make it a lower bound); ``p``: the inverse model's basecolor level.

On a prior set rendered with training maps (``make-data --only-split train --train-hdri-dir ...``, read as
``DATA:train``) it fits two least-squares estimates of ``x``: from ``o`` alone (``image_level``: what a renderer
that reads nothing but the frame's brightness can do, the Bayes estimate were ``x`` and ``o`` jointly Gaussian), and
from ``p`` and ``o`` (``model_calibrated``: a post-hoc calibration of the model's level). Per set it reports each
one's level error ``e`` (estimate - truth, stops: mean |e| and RMS), the model's own, and the model's calibration
slope (``x`` on ``p``; 1: calibrated, below 1: its level varies more than the truth it tracks).

With ``--references`` (per set, the ``references`` folder of an ``eval relight`` run on it with ``--max-frames 1``;
rendered there when missing, which needs Mitsuba) it scores, per clip, the relit frame of a renderer that is exact
but for the level: the reference with its foreground scaled by 2^e, against the reference, for e from the
image-level estimate and the model's own. Such a renderer can score no more on the eval's relighting PSNR.

Usage: python benchmarks/basecolor_level.py DATA[:SPLIT] [...] --prior DATA:train --out results/X.json
[--references DIR [...]] [--model tiny] [--max-clips N]. SPLIT defaults to val; ``--references``: one folder per
DATA, in order. The inverse model runs as ``eval`` runs it (its default steps, ensemble and basecolor detail).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from diffusion_renderer.apps.relight import log2_level as frame_log2_level
from diffusion_renderer.conventions import display_rgb
from diffusion_renderer.data.storage import MASK_KEY, read_clip
from diffusion_renderer.eval.evaluate import (
    REFERENCE_DIR,
    EvalConfig,
    cut_clip,
    list_eval_clips,
    reference_linear,
    reference_path,
    relight_plan,
    run_inverse,
)
from diffusion_renderer.eval.metrics import psnr
from diffusion_renderer.io.atomic import atomic_file
from diffusion_renderer.io.errors import InputError

PSNR_CAP = 60.0  # an exact level scores +inf; capped so that a set's mean stays finite


def log2_level(srgb: np.ndarray, mask: np.ndarray) -> float:
    """Stops: :func:`apps.relight.log2_level` of (..., H, W, 3) sRGB-encoded values over the (..., H, W, 1) mask."""
    selected = np.broadcast_to(mask > 0.5, srgb.shape)[..., 0]
    return frame_log2_level(srgb[selected])


def least_squares_fit(features: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(F + 1,) weights of ``target`` ~ ``features`` (N, F) plus a constant, by least squares."""
    design = np.concatenate([features, np.ones((len(features), 1))], axis=1)
    return np.linalg.lstsq(design, target, rcond=None)[0]


def predict(weights: np.ndarray, features: np.ndarray) -> np.ndarray:
    return features @ weights[:-1] + weights[-1]


def level_row(inverse, config: EvalConfig, name: str) -> dict:
    """One clip's levels (module doc), stops."""
    clip = cut_clip(read_clip(config.data, config.split, name), 1)
    mask = clip.gbuffers[MASK_KEY]
    basecolor = run_inverse(inverse, clip.rgb, config)["basecolor"]
    return {
        "clip": name,
        "light": str(clip.meta.get("hdri", "")),
        "x": round(log2_level(clip.gbuffers["basecolor"], mask), 4),
        "o": round(log2_level(clip.rgb, mask), 4),
        "p": round(log2_level(basecolor, mask), 4),
    }


def relight_psnr(linear: np.ndarray, mask: np.ndarray, error: float) -> float:
    """PSNR of the (T, H, W, 3) reference with its foreground scaled by 2^``error`` against the reference itself."""
    scaled = np.where(mask > 0.5, linear * 2.0**error, linear)
    return min(PSNR_CAP, psnr(display_rgb(scaled), display_rgb(linear)))


def error_summary(errors: np.ndarray) -> dict[str, float]:
    return {"mean_abs": round(float(np.abs(errors).mean()), 3), "rms": round(float(np.sqrt((errors**2).mean())), 3)}


def set_summary(rows: list[dict], fits: dict[str, np.ndarray]) -> dict:
    x, o, p = (np.array([r[k] for r in rows]) for k in ("x", "o", "p"))
    errors = {
        "model": p - x,
        "image_level": predict(fits["image_level"], o[:, None]) - x,
        "model_calibrated": predict(fits["model_calibrated"], np.stack([p, o], 1)) - x,
    }
    out = {
        "clips": len(rows),
        "level_error": {name: error_summary(e) for name, e in errors.items()},
        "model_bias": round(float(errors["model"].mean()), 3),
        "model_slope_x_on_p": round(float(np.polyfit(p, x, 1)[0]), 3),
        "corr_x_p": round(float(np.corrcoef(x, p)[0, 1]), 3),
    }
    for name in ("image_level", "model"):
        scores = [r[f"relight_psnr_{name}"] for r in rows if f"relight_psnr_{name}" in r]
        if scores:
            mean, middle = float(np.mean(scores)), float(np.median(scores))
            out[f"relight_ceiling_{name}"] = {"mean": round(mean, 2), "median": round(middle, 2)}
    return out


def parse_item(item: str) -> tuple[Path, str]:
    data, _, split = item.partition(":")
    return Path(data), split or "val"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data", nargs="+", help="held-out DATA or DATA:SPLIT (default split: val)")
    parser.add_argument("--prior", required=True, help="DATA:SPLIT rendered with training maps")
    parser.add_argument("--references", type=Path, nargs="*", default=[], help="one `references` folder per DATA")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--max-clips", type=int, default=None)
    args = parser.parse_args()
    if args.references and len(args.references) != len(args.data):
        raise SystemExit("basecolor_level: error: --references takes one folder per DATA")
    if any(folder.name != REFERENCE_DIR for folder in args.references):
        raise SystemExit(f"basecolor_level: error: --references: expected folders named {REFERENCE_DIR}")
    items = [args.prior, *args.data]
    configs = {}
    for i, item in enumerate(items):
        data, split = parse_item(item)
        out = args.references[i - 1].parent if i and args.references else data
        configs[item] = EvalConfig(data, out, "inverse", args.model, split=split, max_frames=1, passes=("basecolor",))
    try:
        clips = {item: list_eval_clips(c.data, c.split, args.max_clips) for item, c in configs.items()}
    except InputError as error:  # one line, no traceback, no results file
        raise SystemExit(f"basecolor_level: error: {error}") from None

    from diffusion_renderer.models.specs import load_model
    from diffusion_renderer.pipelines.pipeline_inverse_rendering import InverseRenderingPipeline

    inverse = InverseRenderingPipeline.from_model(load_model(args.model, "inverse"))
    rows = {item: [level_row(inverse, c, n) for n in tqdm(clips[item], desc=item)] for item, c in configs.items()}
    x, o, p = (np.array([r[k] for r in rows[args.prior]]) for k in ("x", "o", "p"))
    fits = {
        "image_level": least_squares_fit(o[:, None], x),
        "model_calibrated": least_squares_fit(np.stack([p, o], 1), x),
    }
    for item in args.data[: len(args.references)]:
        config = dataclasses.replace(configs[item], mode="relight")
        plan = relight_plan(config, clips[item])
        for row in tqdm(rows[item], desc=f"{item} relight"):
            cache = reference_path(config, row["clip"])
            linear = reference_linear(plan[row["clip"]][0], cache, config.variant, config.spp)
            mask = read_clip(config.data, config.split, row["clip"]).gbuffers[MASK_KEY][: len(linear)]
            estimate = float(predict(fits["image_level"], np.array([[row["o"]]]))[0])
            row["relight_psnr_image_level"] = round(relight_psnr(linear, mask, estimate - row["x"]), 3)
            row["relight_psnr_model"] = round(relight_psnr(linear, mask, row["p"] - row["x"]), 3)
    record = {
        "benchmark": "basecolor_level",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "model": args.model,
        "inverse_ensemble": dataclasses.asdict(inverse.default_ensemble),
        "basecolor_detail": inverse.default_basecolor_detail,
        "prior": args.prior,
        "prior_levels": {
            "x_mean": round(float(x.mean()), 3),
            "x_sd": round(float(x.std()), 3),
            "light_sd": round(float((o - x).std()), 3),  # o - x: the level the light gives the surfaces
            "corr_x_light": round(float(np.corrcoef(x, o - x)[0, 1]), 3),
        },
        "fits": {name: [round(float(w), 4) for w in weights] for name, weights in fits.items()},
        "sets": {item: set_summary(rows[item], fits) for item in items},
        "rows": rows,
    }
    with atomic_file(args.out) as tmp:  # a re-run never leaves half a results file
        tmp.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps({k: record[k] for k in ("prior_levels", "fits", "sets")}, indent=1))


if __name__ == "__main__":
    main()
