"""How much of the forward model's error is visibility, and how much a screen-space shadow test would recover.

Per held-out clip (first frame), whole-frame PSNR against the path-traced truth of:
* ``direct``: Mitsuba's path tracer at max depth 2 (direct light with exact shadows, no interreflection) and
  ``one_bounce`` (max depth 3), both at ``--spp``: what a renderer that gets visibility right reaches without and
  with one bounce of indirect light, from the scene itself (a ceiling; not something G-buffers alone can give);
* ``hint``: the shading hint of version 3 (split-sum, no shadows; the shipped forward model's until run 35);
* ``hint_shadowed_oracle`` / ``hint_shadowed``: the hint times a screen-space shadow factor (:func:`shadow_factor`),
  with the true planar depth and camera, or with the camera and depth offset fitted to the G-buffers as the hint's
  field of view is (``render.hint.hint_camera``, as version 4 fits it; no shadows where the fit is refused);
* ``hint_v4``: the package's hint version 4, which is that at half resolution with 32 light directions and 16 steps
  (what a pipeline can afford), through the same camera.

The shadow factor is ``render.shadows``: K light directions drawn from the environment by power, for each surface
pixel a march along each direction through the depth buffer (a sample behind the stored surface by less than a
thickness is blocked), and S = sum(cos x visible) / sum(cos) over the directions, which scales the hint's surface
radiance. Why measure it: if the hint carried the shadows, the network would not have to learn them anew for every
kind of light.

Usage: python benchmarks/visibility.py DATA [DATA ...] --out results/visibility_cpu.json [--max-clips N]
[--spp 64] [--directions 64]. Needs Mitsuba (the llvm variant). Also times the hint and the shadow factor on one
frame (``seconds_per_frame``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from diffusion_renderer.conventions import GBUFFER_KEYS, display_rgb
from diffusion_renderer.data import mitsuba_render
from diffusion_renderer.data.scenes import SceneSpec
from diffusion_renderer.data.storage import StoredClip, meta_path, read_clip
from diffusion_renderer.eval.evaluate import cut_clip, lighting_conditions, list_eval_clips, metric_depth, scene_of
from diffusion_renderer.eval.metrics import psnr
from diffusion_renderer.io.atomic import atomic_file
from diffusion_renderer.io.errors import InputError
from diffusion_renderer.render import hint as hint_module
from diffusion_renderer.render.shadows import light_directions, shadow_factor

KEYS = ("direct", "one_bounce", "hint", "hint_shadowed_oracle", "hint_shadowed", "hint_v4")


def shadowed(
    hint: torch.Tensor,
    gbuffers: dict,
    surface: torch.Tensor,
    directions: torch.Tensor,
    camera: hint_module.HintCamera,
) -> torch.Tensor:
    """The hint times the full-resolution shadow factor through the fitted ``camera`` (``hint_camera``, as version 4
    fits it; the hint itself where it has no depth offset)."""
    if camera.depth_offset is None:
        return hint
    z = (gbuffers["depth"][0, ..., 0] - camera.depth_offset).clamp(min=1e-3)
    normal = F.normalize(gbuffers["normal"][0], dim=-1)
    return hint * shadow_factor(z, normal, surface, camera.fov_deg, directions)[..., None]


def path_traced(spec, spp: int) -> dict[str, np.ndarray]:
    """{direct, one_bounce}: (1, H, W, 3) display frames of the first frame at max depth 2 and 3."""
    mi = mitsuba_render.load_mitsuba(mitsuba_render.CPU_VARIANT)
    frames = {}
    for key, depth in (("direct", 2), ("one_bounce", 3)):
        scene = mitsuba_render.build_scene(mi, spec, 0, max_depth=depth, spp=spp)
        image = np.array(mi.render(scene, spp=spp, seed=12345), dtype=np.float32)[..., :3]
        frames[key] = display_rgb(image)[None]
    return frames


@dataclass
class ClipInputs:
    """What every row of one clip is made from (its first frame)."""

    clip: StoredClip
    spec: SceneSpec
    gbuffers: dict[str, torch.Tensor]  # (1, H, W, C), the conventions' ranges
    env_hdr: torch.Tensor  # (1, H, W, 3) camera-frame HDR condition
    surface: torch.Tensor  # (H, W) bool: the hint's surface pixels
    light: torch.Tensor  # (K, 3) directions toward the light
    camera: hint_module.HintCamera  # fitted as version 4 fits it; no depth offset where refused


def clip_inputs(data: Path, name: str, directions: int) -> ClipInputs:
    clip = cut_clip(read_clip(data, "val", name), 1)
    spec = scene_of(clip.meta, meta_path(data, "val", name))
    gbuffers = {key: torch.from_numpy(np.asarray(clip.gbuffers[key], dtype=np.float32)) for key in GBUFFER_KEYS}
    env_hdr = lighting_conditions(spec, *gbuffers["normal"].shape[1:3], 1).env_hdr.float()
    surface = ~hint_module.background_mask(gbuffers, 3)[0, ..., 0]
    light = light_directions(hint_module.equirect_from_condition(env_hdr[0]), directions)
    camera = hint_module.hint_camera(gbuffers, 4)
    return ClipInputs(clip, spec, gbuffers, env_hdr, surface, light, camera)


def render_hint(inputs: ClipInputs, version: int = 3) -> torch.Tensor:
    """(H, W, 3) linear: the hint of ``version`` (3: no shadows, 4: with the package's shadows, as the shipped
    forward model takes it since run 35)."""
    camera = inputs.camera if version >= 4 else None  # version 3's own camera (no depth offset) otherwise
    return hint_module.shading_hint(inputs.gbuffers, inputs.env_hdr, version, camera)[0]


def clip_row(data: Path, name: str, spp: int, directions: int) -> dict:
    inputs = clip_inputs(data, name, directions)
    clip, spec, surface, light = inputs.clip, inputs.spec, inputs.surface, inputs.light
    hint = render_hint(inputs)
    z_true = torch.from_numpy(metric_depth(clip.gbuffers["depth"][0, ..., 0], clip.meta["depth_range"])).float()
    normal = F.normalize(inputs.gbuffers["normal"][0], dim=-1)
    oracle = hint * shadow_factor(z_true, normal, surface, spec.camera.fov_deg, light)[..., None]
    fitted = shadowed(hint, inputs.gbuffers, surface, light, inputs.camera)
    frames = {
        **path_traced(spec, spp),
        "hint": display_rgb(hint.numpy())[None],
        "hint_shadowed_oracle": display_rgb(oracle.numpy())[None],
        "hint_shadowed": display_rgb(fitted.numpy())[None],
        "hint_v4": display_rgb(render_hint(inputs, 4).numpy())[None],
    }
    scores = {key: round(float(psnr(frames[key], clip.rgb)), 3) for key in KEYS}
    return {
        "clip": name,
        "light": spec.lighting.name,
        "camera_fitted": inputs.camera.depth_offset is not None,
        **scores,
    }


def timing(data: Path, name: str, directions: int) -> dict[str, float]:
    """Seconds for one frame of ``name`` (after a warm-up): the hint of versions 3 and 4 (their camera fits
    included), and the full-resolution shadow factor (given the fit)."""
    import time

    inputs = clip_inputs(data, name, directions)
    hint = render_hint(inputs)
    runs = {
        "hint": lambda: render_hint(inputs),
        "hint_v4": lambda: render_hint(inputs, 4),
        "shadow_factor": lambda: shadowed(hint, inputs.gbuffers, inputs.surface, inputs.light, inputs.camera),
    }
    seconds = {}
    for key, run in runs.items():
        run()
        start = time.perf_counter()
        run()
        seconds[key] = round(time.perf_counter() - start, 3)
    return seconds


def summary(rows: list[dict]) -> dict:
    def mean(selected: list[dict]) -> dict:
        return {"clips": len(selected), **{k: round(float(np.mean([r[k] for r in selected])), 3) for k in KEYS}}

    lights = sorted({r["light"] for r in rows})
    fitted = sum(r["camera_fitted"] for r in rows)
    return {
        **mean(rows),
        "camera_fitted": fitted,
        "by_light": {x: mean([r for r in rows if r["light"] == x]) for x in lights},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--max-clips", type=int, default=None)
    parser.add_argument("--spp", type=int, default=64)
    parser.add_argument("--directions", type=int, default=64)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    try:  # a bad set: one line, before any work
        clips = {data: list_eval_clips(data, "val", args.max_clips) for data in args.data}
    except InputError as exc:
        parser.error(str(exc))
    first = args.data[0]
    seconds = timing(first, clips[first][0], args.directions)
    sets = {}
    for data in args.data:
        rows = [clip_row(data, name, args.spp, args.directions) for name in tqdm(clips[data], desc=str(data))]
        sets[str(data)] = {"summary": summary(rows), "clips": rows}
    record = {
        "benchmark": "visibility",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "device": f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "settings": {"spp": args.spp, "directions": args.directions, "hint_versions": [3, 4]},
        "seconds_per_frame": seconds,  # 256² on this machine, one frame of the first set
        "sets": sets,
    }
    with atomic_file(args.out) as tmp:  # a re-run never leaves half a results file
        tmp.write_text(json.dumps(record, indent=1) + "\n")
    print(
        json.dumps(
            {k: {kk: vv for kk, vv in v["summary"].items() if kk != "by_light"} for k, v in sets.items()}, indent=1
        )
    )


if __name__ == "__main__":
    main()
