"""What a normal-mapped ground costs the inverse model: every clip of an eval split whose ground carries a
procedural normal map is path-traced twice, as it is and with its ground's normal map removed (the same scene,
camera, light and seed otherwise), and ``eval inverse`` runs on both. The eval's regions (``ground_region``) split
each clip's error into the ground's pixels and the objects': if the bumps only cost the ground its own tilts, the
objects' error stays level; if they confuse the model's reading of the whole frame, it rises too.

Usage: python benchmarks/ground_normal_maps.py DATA [DATA ...] --work DIR --out results/ground_normal_maps_cpu.json
[--model tiny] [--split val] [--spp N] [--max-frames 1]. The renders are kept in ``--work`` (a re-run renders only
what is missing; Mitsuba's CPU variant, about 10 s a 256² frame at the data's spp on 2 cores).
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import platform
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from diffusion_renderer import __version__
from diffusion_renderer.data.storage import meta_path
from diffusion_renderer.eval.evaluate import EvalConfig, ground_kind, list_eval_clips, run_evaluation
from diffusion_renderer.io.atomic import atomic_file
from diffusion_renderer.io.errors import InputError

VERSIONS = ("as_is", "flat")  # the clip as the data engine made it; its ground without the normal map
REPORTED = ("normal_angle_mean", "basecolor_si_psnr", "roughness_rmse", "metallic_rmse", "depth_abs_rel")


def normal_mapped_clips(data: Path, split: str) -> list[tuple[str, dict]]:
    """[(clip, meta)] of the split's clips whose ground carries a normal map."""
    found = []
    for name in list_eval_clips(data, split):
        path = meta_path(data, split, name)
        try:
            meta = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:  # one line; the other clips go on
            print(f"ground_normal_maps: error: {path}: unreadable meta ({error})")
            continue
        if ground_kind(meta) == "normal-mapped":
            found.append((name, meta))
    return found


def without_ground_normal_map(scene: dict) -> dict:
    flat = copy.deepcopy(scene)
    flat["ground"]["normal_map"] = None
    return flat


def render_versions(clips: list[tuple[str, dict]], work: Path, split: str, spp: int | None) -> None:
    """Both versions of every clip into ``work/{as_is,flat}`` (make-data's folder layout; finished clips kept)."""
    from diffusion_renderer.data.make_data import VARIANTS, stored_record
    from diffusion_renderer.data.mitsuba_render import render_clip
    from diffusion_renderer.data.scenes import SceneSpec
    from diffusion_renderer.data.storage import is_finished, write_clip, write_manifest

    for name, meta in tqdm(clips, desc="render"):
        scenes = {"as_is": meta["scene"], "flat": without_ground_normal_map(meta["scene"])}
        for version, scene in scenes.items():
            if is_finished(work / version, split, name):
                continue
            spec = SceneSpec.from_dict(scene)
            buffers = render_clip(spec, variant=VARIANTS["cpu"], spp=spp)
            gbuffers, record = stored_record(spec, buffers, VARIANTS["cpu"])
            write_clip(work / version, split, name, buffers.rgb_linear, gbuffers, record)
    for version in VERSIONS:
        write_manifest(work / version)


def summary(metrics_path: Path) -> dict:
    """The eval's mean and per-region means, cut to the reported metrics."""
    record = json.loads(metrics_path.read_text())

    def cut(values: dict) -> dict:
        return {k: round(values[k], 3) for k in REPORTED if values.get(k) is not None}

    regions = {region: cut(group["mean"]) for region, group in record["by_region"].items()}
    return {"clips": record["count"], "mean": cut(record["mean"]), "by_region": regions}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data", type=Path, nargs="+", help="make-data folders")
    parser.add_argument("--work", type=Path, required=True, help="where the two versions are rendered")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--split", default="val", choices=("val", "train"))
    parser.add_argument("--spp", type=int, default=None, help="samples per pixel (default: each scene's own)")
    parser.add_argument("--max-frames", type=int, default=1)
    args = parser.parse_args()
    from diffusion_renderer.models.specs import load_model
    from diffusion_renderer.pipelines.pipeline_inverse_rendering import InverseRenderingPipeline

    inverse = InverseRenderingPipeline.from_model(load_model(args.model, "inverse"))
    sets = {}
    for data in args.data:
        try:
            clips = normal_mapped_clips(data, args.split)
        except InputError as error:  # one line, no traceback; the other sets still run
            print(f"ground_normal_maps: error: {error}")
            continue
        work = args.work / f"set{len(sets)}"  # two sets may share a folder name
        render_versions(clips, work, args.split, args.spp)
        versions = {}
        for version in VERSIONS:
            config = EvalConfig(
                work / version, work / f"eval_{version}", "inverse", args.model, split=args.split,
                max_frames=args.max_frames, progress=False,
            )  # fmt: skip
            result = run_evaluation(config, lambda role: inverse)
            versions[version] = summary(result.metrics_path)
        sets[str(data)] = versions
    record = {
        "benchmark": "ground_normal_maps",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "device": f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "versions": {"diffusion_renderer": __version__, "torch": torch.__version__, "numpy": np.__version__},
        "model": args.model,
        "split": args.split,
        "spp": args.spp,
        "sets": sets,
    }
    with atomic_file(args.out) as tmp:  # a re-run never leaves half a results file
        tmp.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(sets, indent=1))


if __name__ == "__main__":
    main()
