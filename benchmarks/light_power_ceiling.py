"""How much of the light's power the forward conditions carry: split-sum shading of an eval set's ground-truth
G-buffers under the true HDR panorama, and under the same panorama clamped at ``env_log``'s ceiling (log1p /
log1p(LOG_SCALE) saturates at radiance LOG_SCALE = 1e4). The gap bounds what the official encoding hides from any
forward model; per held-out light, PSNR and exposure-aligned PSNR (``eval.metrics.exposure_psnr``).

Usage: python benchmarks/light_power_ceiling.py DATA --out results/light_power_ceiling.json [--max-clips N]
(DATA: a ``make-data`` folder with a val split, as for ``diffusion-renderer eval``; frame 0 of each clip.)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from collections import defaultdict
from pathlib import Path

import torch
from tqdm.auto import tqdm

from diffusion_renderer.conventions import GBUFFER_KEYS
from diffusion_renderer.data.storage import meta_path, read_clip
from diffusion_renderer.eval.evaluate import camera_panoramas, cut_clip, list_eval_clips, mean_metrics, scene_of
from diffusion_renderer.eval.metrics import exposure_psnr, psnr
from diffusion_renderer.io.atomic import atomic_file
from diffusion_renderer.io.errors import InputError
from diffusion_renderer.lighting.envmap import LOG_SCALE
from diffusion_renderer.render.splitsum import SplitSumRenderer

PANORAMAS = {"true_hdr": lambda pano: pano, "clamped_at_log_scale": lambda pano: pano.clamp(max=LOG_SCALE)}


def clip_figures(renderer: SplitSumRenderer, data: Path, name: str) -> tuple[str, dict[str, dict[str, float]]]:
    """(light name, {panorama: {psnr, psnr_exposure}}) of one clip's first frame."""
    clip = cut_clip(read_clip(data, "val", name), 1)
    spec = scene_of(clip.meta, meta_path(data, "val", name))
    passes = {key: clip.gbuffers[key] for key in GBUFFER_KEYS}
    panorama = camera_panoramas(spec, 1, clip.rgb.shape[1])[0]  # (Hp, 2 Hp, 3) linear HDR
    out = {}
    for label, transform in PANORAMAS.items():
        with torch.no_grad():
            image = renderer(passes, transform(panorama), fov_deg=spec.camera.fov_deg, mask=clip.gbuffers["mask"])
        pred = image.images[0]
        out[label] = {"psnr": psnr(pred, clip.rgb), "psnr_exposure": exposure_psnr(pred, clip.rgb)}
    return spec.lighting.name, out


def mean_by(rows: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Per panorama, the eval suite's mean of each metric over ``rows`` (NaN skipped), to 0.01 dB."""
    means = {label: mean_metrics([r[label] for r in rows]) for label in rows[0]}
    return {label: {key: round(value, 2) for key, value in m.items()} for label, m in means.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--max-clips", type=int, default=None)
    args = parser.parse_args()
    try:
        clips = list_eval_clips(args.data, "val", args.max_clips)
    except InputError as error:  # one line, no traceback, no results file
        raise SystemExit(f"light_power_ceiling: error: {error}") from None
    renderer = SplitSumRenderer(device="cpu")
    by_light: dict[str, list] = defaultdict(list)
    for name in tqdm(clips, desc="clips"):
        light, figures = clip_figures(renderer, args.data, name)
        by_light[light].append(figures)
    record = {
        "benchmark": "light_power_ceiling",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "data": str(args.data),
        "log_scale": LOG_SCALE,
        "clips": sum(len(rows) for rows in by_light.values()),
        "mean": mean_by([r for rows in by_light.values() for r in rows]),
        "by_light": {light: {"clips": len(rows), **mean_by(rows)} for light, rows in sorted(by_light.items())},
    }
    with atomic_file(args.out) as tmp:  # a re-run never leaves half a results file
        tmp.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record["mean"]))


if __name__ == "__main__":
    main()
