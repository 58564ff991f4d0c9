"""The ``eval`` command: a model spec against the ground truth of a ``make-data`` split (metrics + HTML report)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from diffusion_renderer.cli.render import (
    ENVMAP_METHODS,
    add_correction_blur_argument,
    add_ensemble_options,
    build_pipeline,
    check_blur_options,
    check_output_dir,
    classical_renderer,
    log_error,
    processing_resolution,
    runtime,
)
from diffusion_renderer.conventions import DEFAULT_SEED, INVERSE_PASSES

EPILOG = """examples:
  diffusion-renderer eval inverse data --out eval/inverse --model CHECKPOINTS
  diffusion-renderer eval forward data --out eval/splitsum --model classical:splitsum
  diffusion-renderer eval relight data --out eval/relight --model classical:splitsum --inverse-model CKPT --spp 64

outputs: OUT/metrics.json (per-clip and mean metrics), OUT/report.html, OUT/grids/{clip}.png
(input, ground truth, prediction, error map), OUT/references/{clip}.npz (relight: cached path-traced targets)"""


COMPARE_EPILOG = """example:
  diffusion-renderer compare eval/relight_shipped eval/relight_new

per metric: clips paired, means of A and B, the mean per-clip difference B - A, its standard error, z, and a
verdict: "B better" / "A better" when |z| >= 2, else "within noise" (see diffusion_renderer/eval/compare.py)"""


def cmd_eval(args: argparse.Namespace) -> int:
    from diffusion_renderer.eval.evaluate import EvalConfig, list_eval_clips, run_evaluation

    if args.max_frames is not None and args.max_frames < 1:
        raise ValueError(f"--max-frames must be >= 1, got {args.max_frames}")
    check_blur_options(args)
    resolution = processing_resolution(args)
    config = EvalConfig(
        data=Path(args.data),
        out=Path(args.out),
        mode=args.mode,
        model=args.model,
        inverse_model=args.inverse_model,
        split=args.split,
        max_clips=args.max_clips,
        max_frames=args.max_frames,
        steps=args.steps,
        seed=args.seed,
        fp8=args.fp8,
        resolution=0 if resolution is None else resolution,  # 0: the data's own size
        passes=tuple(args.passes),
        ensemble=args.ensemble,
        ensemble_mirror=args.ensemble_mirror,
        ensemble_shift=args.ensemble_shift,
        basecolor_detail=args.basecolor_detail,
        variant=args.variant,
        spp=args.spp,
        envmap_method=args.envmap_method,
        grid_frames=args.grid_frames,
        known_fov=args.known_fov,
        correction_blur=args.correction_blur,
        fitted_shadows=args.fitted_shadows,
        progress=not args.quiet,
    )
    list_eval_clips(config.data, config.split, config.max_clips)  # bad data: one line, before any model loads
    check_output_dir(config.out)

    def load(role: str):
        model = args.inverse_model if role == "inverse" and args.inverse_model else args.model
        if model.startswith("classical:"):  # directly: build_pipeline would import the neural stack first
            return classical_renderer(model, role, runtime(args)[0])
        return build_pipeline(role, argparse.Namespace(**{**vars(args), "model": model, "offload": "none"}))

    result = run_evaluation(config, load, on_error=lambda clip, reason: log_error(f"{clip}: {reason}"))
    mean = ", ".join(f"{k} {v:.4g}" for k, v in result.mean.items())
    print(f"{len(result.samples)} clips evaluated, {len(result.failed)} failed: {mean}", file=sys.stderr)
    print(f"-> {result.report_path}", file=sys.stderr)
    return 1 if result.failed else 0


def cmd_compare(args: argparse.Namespace) -> int:
    import json

    from diffusion_renderer.eval.compare import compare_evaluations, describe, format_table, load_evaluation
    from diffusion_renderer.io.atomic import atomic_file

    a, b = load_evaluation(args.a), load_evaluation(args.b)
    comparisons = compare_evaluations(a, b, args.metrics, names=(args.a, args.b))
    print(f"A: {describe(a)}\nB: {describe(b)}\n{format_table(comparisons)}")
    if args.out:
        record = {"a": str(args.a), "b": str(args.b), "mode": a["mode"], "metrics": [c.to_dict() for c in comparisons]}
        with atomic_file(args.out) as tmp:
            Path(tmp).write_text(json.dumps(record, indent=1) + "\n")
    return 0


def add_eval_parser(sub, set_defaults: Callable[[argparse.ArgumentParser, Callable], None]) -> None:
    p = sub.add_parser(
        "eval",
        help="metrics of a model on a make-data split: inverse, forward or relight (report.html)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG,
    )
    p.add_argument("mode", choices=("inverse", "forward", "relight"), help="what to evaluate")
    p.add_argument("data", help="a make-data folder (DATA/{train,val}/rgb, gbuffer_frames, meta)")
    p.add_argument("--out", required=True, help="output folder: metrics.json, report.html, grids/")
    p.add_argument("--model", required=True, help="model spec, as for the render commands; classical:splitsum")
    p.add_argument("--inverse-model", default=None, help="relight: inverse model when --model is forward-only")
    p.add_argument("--split", choices=("val", "train"), default="val", help="which split (default val)")
    p.add_argument("--max-clips", type=int, default=None, help="the first N clips (name order)")
    p.add_argument("--max-frames", type=int, default=None, help="the first N frames of each clip")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's; 15, official)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="noise seed, the same for every clip")
    add_ensemble_options(p.add_argument_group("inverse step (inverse, relight)"))
    p.add_argument("--fp8", action="store_true", help="FP8 matrix products in the DiTs' blocks (models/fp8.py)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default=None, help="default: bf16 on GPU")
    p.add_argument(
        "--resolution", type=int, nargs="+", metavar="N", help="processing H W or longest side (default: the data's)"
    )
    p.add_argument(
        "--passes",
        nargs="+",
        choices=INVERSE_PASSES,
        default=list(INVERSE_PASSES),
        metavar="PASS",
        help="inverse: passes to evaluate (default all five)",
    )
    p.add_argument("--variant", choices=("cpu", "gpu", "auto"), default="auto", help="relight: Mitsuba llvm or cuda")
    p.add_argument(
        "--spp", type=int, default=None, help="relight: reference samples per pixel (default: the scene spec's)"
    )
    p.add_argument("--grid-frames", type=int, default=3, help="frames per sample grid (default 3)")
    p.add_argument(
        "--known-fov",
        action="store_true",
        help="forward, relight: give the model each clip's true camera (what `--fov` gives a user who knows it)",
    )
    add_correction_blur_argument(p)
    p.add_argument(
        "--fitted-shadows",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="forward, relight: shadow `tiny`'s hint through a camera read off the G-buffers (default: on for "
        "forward's true G-buffers, off for relight's predicted ones, as the commands do)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--envmap-method", choices=ENVMAP_METHODS, default=None, help=argparse.SUPPRESS)
    set_defaults(p, cmd_eval)

    p = sub.add_parser(
        "compare",
        help="two eval runs of one split, clip by clip: each metric's difference and whether it beats the noise",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=COMPARE_EPILOG,
    )
    p.add_argument("a", help="eval --out folder (or its metrics.json) of model A, the baseline")
    p.add_argument("b", help="the same for model B, on the same clips")
    p.add_argument("--metrics", nargs="+", default=None, metavar="NAME", help="default: every metric both report")
    p.add_argument("--out", default=None, help="also write the comparison as JSON here")
    set_defaults(p, cmd_compare)
