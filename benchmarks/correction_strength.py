"""How much of the residual forward model's correction carries over to new light? The shipped forward model renders
its split-sum shading hint plus a correction (``hint_residual``). Per clip this renders the hint alone (the pipeline's
own hint stages) and the model's frame (its defaults), then scores ``hint + alpha * (frame - hint)`` against the path
traced truth for a few alphas: 0 is the hint, 1 the model. Where the correction is right, alpha = 1 scores best;
where the model has learned a light's power or shadows wrongly, a smaller alpha does. Run it on a set lit by the
held-out maps and on one lit by training maps (``make-data --only-split train --train-hdri-dir ...`` read as
``--split train``): the difference between the two is what lights the model has not seen cost its correction.

Usage: python benchmarks/correction_strength.py DATA[:SPLIT] [DATA[:SPLIT] ...] --out results/X.json
[--model tiny] [--max-clips N] [--alphas 0 0.25 ...] [--label DATA=NAME ...] [--light-stops -1 1]. First frame of
each clip; SPLIT defaults to val. It also draws ``X.png``: PSNR against alpha, one panel per set, one line per light.
``--plot-only`` redraws the chart from an existing ``X.json``.

Exposure: per clip it also fits one exposure gain (``eval.metrics.exposure_gain``: least squares in linear light
over the unclipped truth) to the hint and to the model's frame, and records it as log2 (stops; > 0: the frame is
too dark) with the PSNR after it (``psnr_exposure``). This splits the correction into the part that sets the
frame's overall brightness and the part that shapes it: where the model's mean |log2 gain| is above its hint's, the
correction has moved the exposure away from the truth.

Where the light is: each clip also records ``light_power_by_elevation``, the shares of its map's power below 0°,
0-10°, 10-20°, 20-40° and above 40° (world frame; the file, or the procedural map baked; None for the analytic sky).
Split-sum shading leaves out what blocks light from low sources, so its error follows them.

Following the light (``--light-stops -1 1``): per clip it also renders the hint and the model with the light's
intensity scaled by 2^s, and fits one gain from that frame to its frame at the clip's light times 2^s (linear
light, pixels clipped in neither left out; log2, > 0: the frame at the changed light is too dark for it). Light
transport is linear, so a renderer that follows the light scores 0; the hint does, up to its clipping. A model that
keeps its frame's brightness when the light changes scores s. This needs no truth at the other intensities.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from diffusion_renderer.conventions import GBUFFER_KEYS, srgb_to_linear
from diffusion_renderer.data.mitsuba_render import bake_procedural
from diffusion_renderer.data.scenes import LightingSpec, SceneSpec
from diffusion_renderer.data.storage import MASK_KEY, meta_path, read_clip
from diffusion_renderer.eval.evaluate import (
    EvalConfig,
    cut_clip,
    forward_envmap_method,
    lighting_conditions,
    list_eval_clips,
    render_forward,
    scene_of,
)
from diffusion_renderer.eval.metrics import CLIPPED, exposure_gain, exposure_psnr, psnr
from diffusion_renderer.io.atomic import atomic_file
from diffusion_renderer.io.errors import InputError
from diffusion_renderer.io.hdr import read_hdr
from diffusion_renderer.models.specs import ModelSpecError, load_model
from diffusion_renderer.pipelines.pipeline_forward_rendering import ForwardRenderingPipeline

SEED = 1000
ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25)
ELEVATION_EDGES = (-90.0, 0.0, 10.0, 20.0, 40.0, 90.0)  # degrees above the ground plane


def power_by_elevation(equirect: np.ndarray) -> list[float]:
    """Shares of an equirect map's power (mean channel radiance x solid angle; row 0 the zenith, world frame) in
    the bands of ``ELEVATION_EDGES``. Why: split-sum shading leaves out what blocks light near the horizon (other
    objects, the ground), so where a map's power sits tells where its hint errs."""
    height = equirect.shape[0]
    elevation = 90.0 - (np.arange(height) + 0.5) / height * 180.0
    power = equirect.astype(np.float64).mean(-1).sum(1) * np.cos(np.radians(elevation))  # (H,)
    shares = np.histogram(elevation, bins=ELEVATION_EDGES, weights=power)[0] / max(power.sum(), 1e-20)
    return [round(float(share), 3) for share in shares]


def light_power_by_elevation(light: LightingSpec) -> list[float] | None:
    """:func:`power_by_elevation` of a clip's map before rotation (which keeps elevations): the file, or the
    procedural map baked; None for the analytic sun and sky (its sun's elevation is in the clip's spec)."""
    if light.kind == "procedural":
        return power_by_elevation(bake_procedural(light))
    if light.kind == "hdri" and Path(light.path).is_file():
        return power_by_elevation(read_hdr(light.path))
    return None


def render_hint(pipe: ForwardRenderingPipeline, gbuffers: dict[str, np.ndarray], env) -> np.ndarray:
    """(T, H, W, 3) in [0, 1]: the split-sum hint the model is given, through the pipeline's own stages."""
    videos, fit, plan = pipe.prepare_gbuffers(gbuffers, None, 0, None, None, "blend", 0)
    _, env_hdr = pipe.prepare_lighting(env, fit, plan, False, 0.0, pipe.default_envmap_method)
    hint = pipe.prepare_shading_hint(pipe.prepare_hint_gbuffers(videos, fit), env_hdr)  # (1, 3, N, H, W)
    return pipe.postprocess(hint, fit, "np")


def follow_error(frame: np.ndarray, base: np.ndarray, stops: float) -> float:
    """How far a frame rendered under the light scaled by 2^stops misses ``base`` (the frame under the light itself)
    scaled by as much: log2 of the least-squares gain k with k * frame ~ base * 2^stops in linear light, over the
    pixels that neither sRGB frame clips. 0: the frame follows the light; > 0: it is too dark for it."""
    # Not eval.metrics.exposure_gain: it keeps pixels the truth clips in some channels (there they bound the
    # exposure from below), but a base clipped in any channel is a wrong target at -1 stop (tried: the hint then
    # scored -0.20 under the studio map instead of 0).
    keep = (frame < CLIPPED).all(axis=-1) & (base < CLIPPED).all(axis=-1)
    ours, target = srgb_to_linear(frame[keep].astype(np.float64)), srgb_to_linear(base[keep].astype(np.float64))
    target = target * 2.0**stops
    return float(np.log2(max((ours * target).sum(), 1e-20) / max((ours * ours).sum(), 1e-20)))


def render_pair(
    pipe: ForwardRenderingPipeline, gbuffers: dict[str, np.ndarray], spec: SceneSpec, config: EvalConfig
) -> tuple[np.ndarray, np.ndarray]:
    """(1, H, W, 3) each: the model's frame (its defaults) and its hint under the clip's light."""
    frame = render_forward(pipe, gbuffers, spec, config)
    method = forward_envmap_method(pipe, config)  # the projection the frame was rendered with
    return frame, render_hint(pipe, gbuffers, lighting_conditions(spec, *frame.shape[1:3], len(frame), method))


def clip_row(
    pipe: ForwardRenderingPipeline,
    data: Path,
    split: str,
    name: str,
    alphas: list[float],
    light_stops: Sequence[float] = (),
) -> dict:
    """One clip's PSNR at each alpha, its exposure gains (and how it follows the light), and its light."""
    clip = cut_clip(read_clip(data, split, name), 1)
    spec = scene_of(clip.meta, meta_path(data, split, name))
    gbuffers = {key: clip.gbuffers[key] for key in GBUFFER_KEYS}
    config = EvalConfig(data=data, out=Path("."), mode="forward", model="", seed=SEED, progress=False)
    frame, hint = render_pair(pipe, gbuffers, spec, config)
    mask = clip.gbuffers[MASK_KEY]
    blends = [np.clip(hint + a * (frame - hint), 0, 1) for a in alphas]
    scores = {  # the eval's two PSNRs: the whole frame (its headline) and the foreground
        "psnr": [psnr(blend, clip.rgb) for blend in blends],
        "psnr_fg": [psnr(blend, clip.rgb, mask) for blend in blends],
    }
    exposure = {  # the whole frame: one gain each, the truth's clipped pixels left out of the fit
        f"{key}_{stat}": round(value, 3)
        for key, image in (("hint", hint), ("model", frame))
        for stat, value in (
            ("log2_gain", float(np.log2(max(exposure_gain(image, clip.rgb), 2.0**-20)))),  # a black frame: finite
            ("psnr_exposure", exposure_psnr(image, clip.rgb)),
        )
    }
    for stops in light_stops:  # the same clip under a brighter or dimmer light: no truth needed
        light = replace(spec.lighting, intensity=spec.lighting.intensity * 2.0**stops)
        scaled = render_pair(pipe, gbuffers, replace(spec, lighting=light), config)
        for key, image, base in (("hint", scaled[1], hint), ("model", scaled[0], frame)):
            exposure[f"{key}_follow_{stops:+g}"] = round(follow_error(image, base, stops), 3)
    return {
        "clip": name,
        "light": spec.lighting.name,
        **{k: [round(float(s), 3) for s in v] for k, v in scores.items()},
        "exposure": exposure,
        "light_power_by_elevation": light_power_by_elevation(spec.lighting),
    }


EXPOSURE_KEYS = ("hint_log2_gain", "model_log2_gain", "hint_psnr_exposure", "model_psnr_exposure")


def exposure_summary(rows: list[dict]) -> dict[str, float]:
    """Mean gains (a bias), mean |gains| (an error) and mean PSNRs after the gain, of the hint and the model."""
    follow = [key for key in rows[0]["exposure"] if "_follow_" in key]  # --light-stops, when it was given
    means = {key: float(np.mean([r["exposure"][key] for r in rows])) for key in (*EXPOSURE_KEYS, *follow)}
    for key in ("hint", "model"):
        means[f"{key}_abs_log2_gain"] = float(np.mean([abs(r["exposure"][f"{key}_log2_gain"]) for r in rows]))
    return {key: round(value, 3) for key, value in means.items()}


def summary(rows: list[dict], alphas: list[float]) -> dict:
    """Mean PSNRs per alpha over all clips and per light, with the best alpha (whole frame) of each."""

    def entry(selected: list[dict]) -> dict:
        means = {key: np.mean([r[key] for r in selected], axis=0).round(3).tolist() for key in ("psnr", "psnr_fg")}
        best = alphas[int(np.argmax(means["psnr"]))]
        return {"clips": len(selected), **means, "best_alpha": best, "exposure": exposure_summary(selected)}

    lights = sorted({r["light"] for r in rows})
    return {**entry(rows), "by_light": {light: entry([r for r in rows if r["light"] == light]) for light in lights}}


def draw_chart(record: dict, out_png: Path) -> None:
    """PSNR (whole frame) against alpha: one panel per set, a line per light and a thick one for all clips."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = record["sets"]
    fig, axes = plt.subplots(1, len(sets), figsize=(5.8 * len(sets), 3.6), squeeze=False)
    for ax, (name, entry) in zip(axes[0], sets.items(), strict=True):
        summary = entry["summary"]
        for light, values in summary["by_light"].items():
            if values["clips"] >= 4:  # fewer clips make a line that is mostly noise
                ax.plot(record["alphas"], values["psnr"], marker=".", label=f"{light} ({values['clips']})")
        ax.plot(record["alphas"], summary["psnr"], color="black", linewidth=2.5, label=f"all ({summary['clips']})")
        ax.axvline(1.0, color="grey", linestyle=":")
        ax.set(title=entry.get("label", name), xlabel="alpha (0: the hint alone, 1: the model)", ylabel="PSNR (dB)")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the panel: a set has ~20 lights
    fig.tight_layout()
    fig.savefig(out_png, dpi=100, bbox_inches="tight")
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data", nargs="*", help="DATA or DATA:SPLIT (default split: val)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--max-clips", type=int, default=None)
    parser.add_argument("--alphas", type=float, nargs="+", default=list(ALPHAS))
    parser.add_argument("--label", nargs="+", default=[], metavar="DATA=NAME", help="a set's name in the chart")
    parser.add_argument("--plot-only", action="store_true", help="redraw the chart of an existing --out")
    parser.add_argument(
        "--light-stops", type=float, nargs="+", default=[], help="also render each clip under its light x 2^s"
    )
    args = parser.parse_args()
    if args.plot_only:
        draw_chart(json.loads(args.out.read_text()), args.out.with_suffix(".png"))
        return
    if not args.data:
        parser.error("give at least one DATA (or --plot-only)")
    labels = dict(item.partition("=")[::2] for item in args.label)
    splits = {item: (Path(item.partition(":")[0]), item.partition(":")[2] or "val") for item in args.data}
    try:  # a bad set: one line, before the model loads
        clips = {item: list_eval_clips(data, split, args.max_clips) for item, (data, split) in splits.items()}
    except InputError as exc:
        parser.error(str(exc))
    pipe = residual_pipe(args.model, parser)
    record = measure(pipe, args.model, splits, clips, labels, args.alphas, args.light_stops)
    write_record(record, args.out)
    print(json.dumps({k: v["summary"] for k, v in record["sets"].items()}, indent=1))


def residual_pipe(model_spec: str, parser: argparse.ArgumentParser) -> ForwardRenderingPipeline:
    """The forward pipeline of a model that renders hint + correction (``hint_residual``); for any other model a
    one-line usage error through ``parser`` (the benchmark measures that correction)."""
    try:
        model = load_model(model_spec, "forward")
    except ModelSpecError as exc:
        parser.error(str(exc))
    if not getattr(model.transformer.config, "hint_residual", False):
        parser.error(f"{model_spec}: its forward model does not render hint + correction (hint_residual)")
    return ForwardRenderingPipeline.from_model(model)


def measure(
    pipe: ForwardRenderingPipeline,
    model_spec: str,
    splits: dict[str, tuple[Path, str]],
    clips: dict[str, list[str]],
    labels: dict[str, str],
    alphas: Sequence[float] = ALPHAS,
    light_stops: Sequence[float] = (),
) -> dict:
    """The results record of ``clips[item]`` (clip names of ``splits[item] = (data, split)``), rendered by ``pipe``
    (the forward model of ``model_spec``)."""
    alphas, light_stops = list(alphas), list(light_stops)
    sets = {}
    for item, (data, split) in splits.items():
        rows = [clip_row(pipe, data, split, c, alphas, light_stops) for c in tqdm(clips[item], desc=item)]
        sets[item] = {"label": labels.get(item, item), "summary": summary(rows, alphas), "clips": rows}
    return {
        "benchmark": "correction_strength",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "device": f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "model": model_spec,
        "alphas": alphas,
        "light_stops": light_stops,
        "elevation_edges_deg": list(ELEVATION_EDGES),
        "sets": sets,
    }


def write_record(record: dict, out: Path) -> None:
    with atomic_file(out) as tmp:  # a re-run never leaves half a results file
        tmp.write_text(json.dumps(record, indent=1) + "\n")
    draw_chart(record, out.with_suffix(".png"))


if __name__ == "__main__":
    main()
