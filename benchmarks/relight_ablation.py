"""Which predicted pass limits relighting: the eval suite's relight task (frame 0 of each held-out clip, a donor
clip's light, the path-traced reference) rendered by the forward model from mixes of predicted and ground-truth
G-buffers. Rows: all ground truth, all predicted, one predicted pass among ground truth ("cost" of that pass), one
ground-truth pass among predicted ("gain" of fixing it), and the predicted basecolor rescaled per channel by the
least-squares scale to the truth (the oracle of the eval's scale-invariant basecolor PSNR), among ground truth.

With ``--level-fit`` (a ``basecolor_level.py`` results file) one more row, ``ground_truth_image_level``: every pass
true but the basecolor's level, which is read off the frame's brightness (that file's ``image_level`` fit, made on a
set under training maps): the true basecolor scaled in linear by 2^(estimate - truth), clipped. One image does not
tell the albedo's level from the light's strength (the data engine draws each clip's light at x0.5-2 of its map), so
this row is about what a single-image inverse model could give this forward model were it exact but for a level read
from the frame.

With ``--basecolor-gain STOPS [...]`` one row per value, ``predicted_basecolor_gain_+S``: every pass predicted, the
basecolor scaled in linear by 2^S (clipped): what one constant calibration of the model's basecolor level would do
to relighting. Choose S on one held-out set (``basecolor_scale.py``'s median log2 scale) and read it on another.
``--rows`` renders only the named rows (default: all), which keeps such a sweep cheap. Every row also reports
``log2_exposure``: the mean log2 of the eval's least-squares exposure gain (``psnr_exposure``'s; positive: the relit
frame is too dark).

Usage: python benchmarks/relight_ablation.py DATA --references DIR --out results/relight_ablation_cpu.json
[--model tiny] [--max-clips N] [--level-fit results/basecolor_level_cpu.json] [--basecolor-gain STOPS ...]
[--rows ROW ...]. DATA: a ``make-data`` folder with a
val split; ``--references``: the ``references`` folder of an ``eval relight`` run on it with the same
``--max-frames 1`` (rendered there when missing, which needs Mitsuba). Figures are mean PSNR / PSNR after the
exposure gain / SSIM over the clips; the inverse model runs at its default ensemble (recorded as
``inverse_ensemble``).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import platform
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from basecolor_level import log2_level, predict  # the level and its fit, as basecolor_level.py reads them
from diffusion_renderer import __version__
from diffusion_renderer.conventions import GBUFFER_KEYS, display_rgb, srgb_to_linear
from diffusion_renderer.data.storage import MASK_KEY, read_clip
from diffusion_renderer.eval.evaluate import (
    REFERENCE_DIR,
    EvalConfig,
    cut_clip,
    image_metrics,
    list_eval_clips,
    mean_metrics,
    reference_frames,
    reference_path,
    relight_plan,
    render_forward,
    run_inverse,
)
from diffusion_renderer.eval.metrics import exposure_gain, least_squares_scale
from diffusion_renderer.io.atomic import atomic_file
from diffusion_renderer.io.errors import InputError

REPORTED = ("psnr", "psnr_exposure", "ssim", "log2_exposure")


def gain_row(stops: float) -> str:
    """The row name of the predicted basecolor scaled by 2^``stops``."""
    return f"predicted_basecolor_gain_{stops:+.2f}"


def row_names(level: bool = False, gains: Sequence[float] = ()) -> list[str]:
    """Every row's name, in :func:`clip_rows`' order: :func:`mixes`' rows, the level row, then the gain rows."""
    names = ["all_ground_truth", "all_predicted"]
    names += [f"{source}_{key}_only" for key in GBUFFER_KEYS for source in ("predicted", "ground_truth")]
    names += ["predicted_basecolor_rescaled_only", *(["ground_truth_image_level"] if level else [])]
    return names + [gain_row(stops) for stops in gains]


def mixes(pred: Mapping[str, np.ndarray], gt: Mapping[str, np.ndarray], scale: np.ndarray) -> dict[str, dict]:
    """{row name: G-buffers} of one clip (module doc); ``scale``: the predicted basecolor's (3,) least-squares
    scale to the truth."""
    rows = {"all_ground_truth": dict(gt), "all_predicted": dict(pred)}
    for key in GBUFFER_KEYS:
        rows[f"predicted_{key}_only"] = {**gt, key: pred[key]}
        rows[f"ground_truth_{key}_only"] = {**pred, key: gt[key]}
    rows["predicted_basecolor_rescaled_only"] = {**gt, "basecolor": np.clip(pred["basecolor"] * scale, 0.0, 1.0)}
    return rows


def relevelled(basecolor: np.ndarray, stops: float) -> np.ndarray:
    """(..., 3) sRGB-encoded basecolor scaled in linear by 2^``stops``, clipped to [0, 1] (as a display frame is)."""
    return display_rgb(srgb_to_linear(basecolor) * 2.0**stops)


def image_level_error(clip, level_fit: np.ndarray) -> float:
    """Stops: the image-level estimate of the clip's albedo level (``level_fit``: its (slope, intercept) on the
    frame's level) minus the true level."""
    mask = clip.gbuffers[MASK_KEY]
    estimate = predict(level_fit, np.array([[log2_level(clip.rgb, mask)]]))[0]
    return float(estimate - log2_level(clip.gbuffers["basecolor"], mask))


def clip_rows(
    inverse,
    forward,
    config: EvalConfig,
    name: str,
    target,
    level_fit: np.ndarray | None = None,
    gains: Sequence[float] = (),
    only: Collection[str] | None = None,
) -> tuple[dict[str, dict], np.ndarray]:
    """({row: metrics}, basecolor scale) of one clip; ``only``: the rows to render (None: all)."""
    clip = cut_clip(read_clip(config.data, config.split, name), 1)
    reference = reference_frames(target, reference_path(config, name), config.variant, config.spp)
    gt = {key: clip.gbuffers[key] for key in GBUFFER_KEYS}
    pred = run_inverse(inverse, clip.rgb, dataclasses.replace(config, passes=GBUFFER_KEYS))
    mask = clip.gbuffers[MASK_KEY]
    scale = least_squares_scale(pred["basecolor"], gt["basecolor"], mask)  # (3,) per channel
    rows = {}
    mixed = mixes(pred, gt, scale)
    if level_fit is not None:
        error = image_level_error(clip, level_fit)
        mixed["ground_truth_image_level"] = {**gt, "basecolor": relevelled(gt["basecolor"], error)}
    for stops in gains:
        mixed[gain_row(stops)] = {**pred, "basecolor": relevelled(pred["basecolor"], stops)}
    for row, gbuffers in mixed.items():
        if only is not None and row not in only:
            continue
        image = render_forward(forward, gbuffers, target, config)
        metrics = image_metrics(image, reference, mask)[0]
        rows[row] = {**metrics, "log2_exposure": float(np.log2(max(exposure_gain(image, reference), 1e-6)))}
    return rows, scale


def read_level_fit(path: Path) -> np.ndarray:
    """(slope, intercept) of ``fits.image_level`` in a basecolor_level.py results file; SystemExit in one line when
    the file is unreadable or has none."""
    try:
        fit = np.asarray(json.loads(path.read_text())["fits"]["image_level"], dtype=np.float64)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SystemExit(f"relight_ablation: error: {path}: no basecolor_level fits.image_level ({exc})") from None
    if fit.shape != (2,) or not np.isfinite(fit).all():
        raise SystemExit(f"relight_ablation: error: {path}: fits.image_level is not (slope, intercept): {fit}")
    return fit


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data", type=Path)
    parser.add_argument("--references", type=Path, required=True, help="an `eval relight` run's references folder")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--max-clips", type=int, default=None)
    parser.add_argument("--level-fit", type=Path, default=None, help="a basecolor_level.py results file")
    parser.add_argument("--basecolor-gain", type=float, nargs="+", default=[], metavar="STOPS")
    parser.add_argument("--rows", nargs="+", default=None, metavar="ROW", help="render only these rows")
    args = parser.parse_args()
    if args.references.name != REFERENCE_DIR:
        raise SystemExit(f"relight_ablation: error: {args.references}: expected a folder named {REFERENCE_DIR}")
    level_fit = read_level_fit(args.level_fit) if args.level_fit else None
    unknown = sorted(set(args.rows or ()) - set(row_names(level_fit is not None, args.basecolor_gain)))
    if unknown:
        raise SystemExit(f"relight_ablation: error: --rows: no such row: {', '.join(unknown)}")
    # the eval's own configuration (default steps, seed, data resolution), its references read from their folder
    config = EvalConfig(args.data, args.references.parent, "relight", args.model, max_frames=1, progress=False)
    try:
        clips = list_eval_clips(config.data, config.split, args.max_clips)
    except InputError as error:  # one line, no traceback, no results file
        raise SystemExit(f"relight_ablation: error: {error}") from None

    from diffusion_renderer.models.specs import load_model
    from diffusion_renderer.pipelines.pipeline_forward_rendering import ForwardRenderingPipeline
    from diffusion_renderer.pipelines.pipeline_inverse_rendering import InverseRenderingPipeline

    inverse = InverseRenderingPipeline.from_model(load_model(args.model, "inverse"))
    forward = ForwardRenderingPipeline.from_model(load_model(args.model, "forward"))
    plan = relight_plan(config, clips)
    per_row: dict[str, list] = {}
    scales = []
    for name in tqdm(clips, desc="clips"):
        rows, scale = clip_rows(
            inverse, forward, config, name, plan[name][0], level_fit, args.basecolor_gain, args.rows
        )
        scales.append(scale)
        for row, metrics in rows.items():
            per_row.setdefault(row, []).append(metrics)
    means = {row: {k: round(v, 3) for k, v in mean_metrics(m).items() if k in REPORTED} for row, m in per_row.items()}
    record = {
        "benchmark": "relight_ablation",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "device": f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "versions": {"diffusion_renderer": __version__, "torch": torch.__version__, "numpy": np.__version__},
        "data": str(args.data),
        "model": args.model,
        "clips": len(clips),
        "inverse_ensemble": dataclasses.asdict(inverse.default_ensemble),  # the default run_inverse runs
        "rows": means,
        **({"level_fit": {"file": str(args.level_fit), "image_level": level_fit.tolist()}} if args.level_fit else {}),
        **({"basecolor_gain_stops": args.basecolor_gain} if args.basecolor_gain else {}),
        "basecolor_scale_median_abs_log2": round(float(np.median(np.abs(np.log2(np.stack(scales))))), 3),
    }
    with atomic_file(args.out) as tmp:  # a re-run never leaves half a results file
        tmp.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(means, indent=1))


if __name__ == "__main__":
    main()
