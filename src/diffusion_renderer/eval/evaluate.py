"""``diffusion-renderer eval``: a model spec on a ``make-data`` split, in ``inverse``, ``forward`` or ``relight`` mode.

* ``inverse``: G-buffers estimated from the stored RGB frames against the stored ground truth, over the
  foreground mask. Basecolor: scale-invariant PSNR (and plain PSNR); normal: angular error; depth: AbsRel and
  δ1 after a least-squares scale and shift of the predicted [-1, 1] depth to the metric planar depth (the stored
  depth inverted through ``meta["depth_range"]``, so the 2 % / 98 % clipping of the data engine remains);
  roughness, metallic: RMSE.
* ``forward``: the ground-truth G-buffers rendered under the clip's own lighting (exactly the conditions of
  ``data.mitsuba_render.environment_hdr``, camera pose and light rotation included) against the stored sRGB
  frames: PSNR (full frame and foreground only), SSIM and ꟻLIP.
* ``relight``: inverse rendering of the stored frames, then forward rendering under the lighting of another clip
  of the split (the next one in name order; a lone clip gets its own map turned by 180°), against the path-traced
  scene re-rendered under that lighting (Mitsuba; cached in ``OUT/references`` so re-runs do not re-render).
  The source clip keeps its own light motion; only the map, its intensity and base rotation are swapped.

Image metrics pool all frames of a clip (one PSNR per clip; SSIM and ꟻLIP are frame means); a clip is one sample
and the summary is the mean over samples (samples where a metric is undefined, e.g. no foreground, are skipped).
``classical:splitsum`` is shaded with the clip's camera field of view and a camera-relative panorama per frame
(the environment resampled as the forward renderer's conditions see it), so it sees the same lighting.
"""

from __future__ import annotations

import dataclasses
import html
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from diffusion_renderer.conventions import (
    DEFAULT_SEED,
    GBUFFER_KEYS,
    INVERSE_PASSES,
    to_unit,
)
from diffusion_renderer.data.scenes import SceneSpec
from diffusion_renderer.data.storage import MASK_KEY, StoredClip, finished_clips, meta_path, read_clip
from diffusion_renderer.eval.metrics import (
    depth_metrics,
    exposure_psnr,
    fit_scale_shift,
    flip,
    least_squares_scale,
    normal_angle_deg,
    normal_metrics,
    psnr,
    rmse,
    si_psnr,
    ssim,
)
from diffusion_renderer.io.atomic import atomic_file
from diffusion_renderer.io.contact_sheet import depth_to_color, save_contact_sheet
from diffusion_renderer.io.errors import InputError

MODES = ("inverse", "forward", "relight")
VARIANTS = {"cpu": "llvm_ad_rgb", "gpu": "cuda_ad_rgb", "auto": "auto"}  # as make-data's --variant
PANORAMA_HEIGHTS = (64, 256)  # split-sum panoramas: 4 rows per frame row, within these bounds (presets: 256)
THUMBNAIL_SIZE = (64, 128)
GRID_DIR = "grids"
REFERENCE_DIR = "references"
# Error-map scales (error value shown at the top of the heat ramp).
ERROR_SCALE = {"basecolor": 0.5, "normal": 90.0, "depth": 0.5, "roughness": 1.0, "metallic": 1.0}
REGIONS = ("ground", "objects")  # the foreground split by the scene's ground plane (ground_region)
GROUND_DEPTH_TOLERANCE = 0.01  # relative depth gap to the plane still counted as ground (float16 depth: ~1e-3)
MIN_REGION_PIXELS = 64  # a region with fewer pixels in a clip is left out of that clip's region metrics

PipelineLoader = Callable[[str], object]  # role ("inverse" | "forward") -> pipeline (or SplitSumRenderer)


@dataclass
class EvalConfig:
    """What to evaluate and how; ``resolution`` is the processing resolution (0: the data's own size)."""

    data: Path
    out: Path
    mode: str
    model: str
    inverse_model: str | None = None  # relight: the inverse model when --model is forward-only (classical)
    split: str = "val"
    max_clips: int | None = None
    max_frames: int | None = None
    steps: int | None = None  # None: the model's default (15 official, 1 for the shipped tiny)
    # inverse: samples per pass, combined per pixel, and their views (InverseRenderingPipeline); None: the model's
    ensemble: int | None = None
    ensemble_mirror: bool | None = None
    ensemble_shift: bool | None = None
    basecolor_detail: float | None = None  # inverse: the input's detail finer than this sigma; None: the model's
    seed: int = DEFAULT_SEED
    fp8: bool = False  # the DiTs' block GEMMs in FP8 (models/fp8.py); recorded, applied by the loader
    resolution: int | tuple[int, int] = 0
    passes: tuple[str, ...] = INVERSE_PASSES
    variant: str = "auto"
    spp: int | None = None  # relight reference samples per pixel (default: the scene spec's)
    envmap_method: str | None = None  # neural forward: None: the model's default_envmap_method
    grid_frames: int = 3  # frames per sample grid (first, middle, last)
    known_fov: bool = False  # neural forward: the clip's true field of view (else the model's own choice)
    correction_blur: float | None = None  # neural forward: the pipeline's low-pass on a residual's correction
    fitted_shadows: bool | None = None  # neural forward: the hint's shadows through a camera read off the
    # G-buffers; None: the commands' default (on for forward's true G-buffers, off for relight's predicted ones)
    progress: bool = True


@dataclass
class SampleResult:
    clip: str
    frames: int
    metrics: dict[str, float]
    grid: str  # path relative to the output folder
    lighting: str | None = None  # relight: where the target lighting came from
    light: str = ""  # the environment the metrics were taken under (map name, sunsky, procedural)
    ground: str = ""  # the clip's ground plane: ground_kind
    regions: dict[str, dict[str, float]] = field(default_factory=dict)  # {region: metrics over its pixels}


@dataclass
class EvalResult:
    samples: list[SampleResult] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (clip, one-line reason)
    metrics_path: Path | None = None
    report_path: Path | None = None

    @property
    def mean(self) -> dict[str, float]:
        return mean_metrics([s.metrics for s in self.samples])

    def grouped(self, attribute: str) -> dict[str, tuple[int, dict[str, float]]]:
        """{value of the samples' ``attribute``: (clips, mean metrics)}, sorted by value."""
        groups: dict[str, list[Mapping[str, float]]] = {}
        for s in self.samples:
            groups.setdefault(getattr(s, attribute), []).append(s.metrics)
        return {value: (len(group), mean_metrics(group)) for value, group in sorted(groups.items())}

    def by_light(self) -> dict[str, tuple[int, dict[str, float]]]:
        """{environment: (clips, mean metrics)}: where a model fails is usually one kind of light."""
        return self.grouped("light")

    def by_ground(self) -> dict[str, tuple[int, dict[str, float]]]:
        """{ground kind: (clips, mean metrics)}; empty when no sample has a scene spec (not data-engine clips)."""
        return self.grouped("ground") if any(s.ground for s in self.samples) else {}

    def by_region(self) -> dict[str, tuple[int, dict[str, float]]]:
        """{region: (clips, mean of their metrics over that region)}: data-engine clips only."""
        groups = {r: [s.regions[r] for s in self.samples if r in s.regions] for r in REGIONS}
        return {r: (len(group), mean_metrics(group)) for r, group in groups.items() if group}


# ---------------------------------------------------------------------------------------------------- data


def list_eval_clips(data: Path, split: str, max_clips: int | None = None) -> list[str]:
    """Finished clips of ``split`` (sorted), at most ``max_clips``; InputError when there are none."""
    data = Path(data)
    if not data.is_dir():
        raise InputError(data, "no such data folder (make one with `diffusion-renderer make-data`)")
    if split not in ("train", "val"):
        raise InputError(None, f"split must be train or val, got {split!r}")
    clips = [clip for s, clip in finished_clips(data) if s == split]
    if not clips:
        raise InputError(data, f"no finished {split} clips (expected {split}/meta/*.json from make-data)")
    if max_clips is not None and max_clips < 1:
        raise InputError(None, f"--max-clips must be >= 1, got {max_clips}")
    return clips[:max_clips] if max_clips else clips


def scene_of(meta: Mapping, where: Path) -> SceneSpec:
    """The scene spec of a meta record (InputError naming ``where``, its file, when absent or malformed)."""
    try:
        return SceneSpec.from_dict(meta["scene"])
    except (KeyError, TypeError) as exc:
        raise InputError(where, f"no usable scene spec ({exc})") from None


def ground_kind(meta: Mapping) -> str:
    """The clip's ground plane as the eval groups it: "normal-mapped" (a procedural normal map), "flat", "none" (no
    ground plane), or "" for a clip without a scene spec.

    Why: the ground covers most of a data-engine frame, and its normal map's tilts (up to 39°, lit from a direction
    the model must infer) are the inverse model's largest single error (``benchmarks/TINY_HISTORY.md``, the
    twenty-first session): a mean over all clips hides it.
    """
    scene = meta.get("scene")
    if not isinstance(scene, Mapping) or "ground" not in scene:
        return ""
    ground = scene["ground"]
    if ground is None:
        return "none"
    if not isinstance(ground, Mapping):  # malformed: in no group rather than a wrong one
        return ""
    return "normal-mapped" if ground.get("normal_map") else "flat"


def ground_plane_depth(c2w: np.ndarray, fov_deg: float, height: int, width: int) -> np.ndarray:
    """(H, W) planar camera depth at which each pixel's ray meets the data engine's ground plane y = 0 (inf where
    it does not: rays at or above the horizon). ``c2w``: (4, 4) OpenGL camera-to-world."""
    from diffusion_renderer.data.mitsuba_render import camera_directions

    d = camera_directions(height, width, fov_deg)  # (H, W, 3) unit, camera frame, looking along -z
    up = d @ np.asarray(c2w, dtype=np.float64)[:3, :3].T[:, 1]  # (H, W) world y of each ray direction
    height_above = float(c2w[1][3])
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(up * height_above < 0, -height_above / up, np.inf)  # distance along the unit ray
    return t * -d[..., 2]


def ground_region(meta: Mapping, depth: np.ndarray, mask: np.ndarray) -> np.ndarray | None:
    """(T, H, W, 1) float32 {0, 1}: the foreground pixels that lie on the clip's ground plane; None when the clip
    has no usable scene spec, camera or depth range (not a data-engine clip, or a malformed one: no regions then,
    and the clip's other metrics still count).

    Each pixel's ray is traced to the plane y = 0 (the scene's camera and field of view) and its depth compared with
    the stored one, so a normal-mapped ground (bumps in shading only, not in geometry) is found as well as a flat
    one. The stored depth is clipped at the clip's 2 % / 98 % quantiles: a pixel clipped at either end counts as
    ground when the plane lies beyond that end too. Objects touching the ground count as ground within
    ``GROUND_DEPTH_TOLERANCE`` of its depth. A scene without a ground plane has an empty region.
    """
    scene, depth_range = meta.get("scene"), meta.get("depth_range")
    if not isinstance(scene, Mapping) or "ground" not in scene or depth_range is None:
        return None
    inside = np.asarray(mask, dtype=np.float32)
    if scene["ground"] is None:
        return np.zeros_like(inside)
    try:
        camera = scene["camera"]
        fov, c2ws = float(camera["fov_deg"]), np.asarray(camera["c2w"], dtype=np.float64)
        near, far = (float(v) for v in depth_range)
    except (KeyError, TypeError, ValueError):
        return None
    frames, height, width = depth.shape[:3]
    if c2ws.shape[1:] != (4, 4) or len(c2ws) < frames:
        return None
    z = metric_depth(depth[..., 0], (near, far))  # (T, H, W)
    plane = np.stack([ground_plane_depth(c2ws[t], fov, height, width) for t in range(frames)])
    tol = GROUND_DEPTH_TOLERANCE
    hits = np.isfinite(plane)
    plane = np.where(hits, plane, 0.0)
    on = np.abs(z - plane) <= tol * plane
    on |= (depth[..., 0] >= 1 - 1e-3) & (plane >= far * (1 - tol))  # clipped at the far quantile
    on |= (depth[..., 0] <= -1 + 1e-3) & (plane <= near * (1 + tol))  # clipped at the near quantile
    return ((on & hits)[..., None] & (inside > 0.5)).astype(np.float32)


def foreground_regions(meta: Mapping, gbuffers: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """{"ground" | "objects": (T, H, W, 1) float32 mask} of a clip's foreground (ground_region); regions under
    ``MIN_REGION_PIXELS`` are left out, and every region of a clip that is not a data-engine clip."""
    mask = gbuffers[MASK_KEY]
    ground = ground_region(meta, gbuffers["depth"], mask)
    if ground is None:
        return {}
    objects = (np.asarray(mask) > 0.5).astype(np.float32) * (1 - ground)
    regions = dict(zip(REGIONS, (ground, objects), strict=True))
    return {name: region for name, region in regions.items() if region.sum() >= MIN_REGION_PIXELS}


def region_metrics(
    pred: Mapping[str, np.ndarray], gt: Mapping[str, np.ndarray], meta: Mapping
) -> dict[str, dict[str, float]]:
    """{region: inverse metrics over that part of the foreground} (foreground_regions)."""
    depth_range = meta.get("depth_range")
    regions = foreground_regions(meta, gt)
    return {name: inverse_metrics(pred, {**gt, MASK_KEY: region}, depth_range) for name, region in regions.items()}


def image_region_metrics(
    pred: np.ndarray, reference: np.ndarray, flip_maps: np.ndarray, meta: Mapping, gbuffers: Mapping[str, np.ndarray]
) -> dict[str, dict[str, float]]:
    """{region: PSNR and mean ꟻLIP of a rendered (T, H, W, 3) clip over that part of the foreground}: forward and
    relight modes (``gbuffers``: the clip's true G-buffers, whose geometry the regions come from)."""
    out = {}
    for name, region in foreground_regions(meta, gbuffers).items():
        inside = region[..., 0] > 0.5
        out[name] = {"psnr": psnr(pred, reference, region), "flip": float(flip_maps[inside].mean())}
    return out


def first_frames(spec: SceneSpec, count: int) -> SceneSpec:
    """``spec`` cut to its first ``count`` frames (every per-frame list shortened with it)."""
    if count >= spec.num_frames:
        return spec
    objects = [dataclasses.replace(o, offsets=o.offsets[:count]) for o in spec.objects]
    camera = dataclasses.replace(spec.camera, c2w=spec.camera.c2w[:count])
    lighting = dataclasses.replace(spec.lighting, frame_rotation_deg=spec.lighting.frame_rotation_deg[:count])
    return dataclasses.replace(spec, num_frames=count, objects=objects, camera=camera, lighting=lighting)


def cut_clip(clip: StoredClip, count: int | None) -> StoredClip:
    """The clip's first ``count`` frames (all when None)."""
    if count is None:
        return clip
    if count < 1:
        raise InputError(None, f"--max-frames must be >= 1, got {count}")
    gbuffers = {key: value[:count] for key, value in clip.gbuffers.items()}
    return dataclasses.replace(clip, rgb=clip.rgb[:count], gbuffers=gbuffers)


def metric_depth(depth: np.ndarray, depth_range: Sequence[float]) -> np.ndarray:
    """Stored depth in [-1, 1] -> planar camera z, inverting ``normalize_depth`` (-1 = near, +1 = far)."""
    near, far = (float(v) for v in depth_range)
    return near + (np.asarray(depth, dtype=np.float64) + 1.0) / 2.0 * (far - near)


# ------------------------------------------------------------------------------------------------ lighting


def lighting_conditions(spec: SceneSpec, height: int, width: int, frames: int, method: str = "cubemap"):
    """The forward renderer's (T, H, W, 3) ``EnvironmentConditions`` of ``spec``'s first ``frames`` frames."""
    from diffusion_renderer.data.mitsuba_render import environment_hdr
    from diffusion_renderer.lighting.envmap import EnvironmentConditions

    hdr = environment_hdr(first_frames(spec, frames), height, width, method=method)  # (T, H, W, 3)
    return EnvironmentConditions.from_hdr(hdr)


def camera_panoramas(spec: SceneSpec, frames: int, frame_height: int) -> torch.Tensor:
    """(T, Hp, 2 Hp, 3) HDR panoramas of the lighting in each frame's camera frame.

    With the default processing (identity pose, no rotation) a panorama projects onto itself, so a renderer that
    assumes a fixed, level camera (the split-sum baseline) sees the light each frame was rendered with. Hp follows
    the frame size (prefiltering a large map for a small frame costs seconds and shows nothing).
    """
    from diffusion_renderer.data.mitsuba_render import environment_hdr

    low, high = PANORAMA_HEIGHTS
    height = min(high, max(low, 4 * frame_height))
    return environment_hdr(first_frames(spec, frames), height, 2 * height, method="direct")


def light_thumbnails(spec: SceneSpec, frames: int) -> np.ndarray:
    """(T, 64, 128, 3) ``env_ldr`` panoramas of each frame, for the sample grids."""
    from diffusion_renderer.data.mitsuba_render import environment_hdr
    from diffusion_renderer.lighting.envmap import env_ldr

    return env_ldr(environment_hdr(first_frames(spec, frames), *THUMBNAIL_SIZE, method="direct")).numpy()


def is_classical(pipe: object) -> bool:
    from diffusion_renderer.render.splitsum import SplitSumRenderer

    return isinstance(pipe, SplitSumRenderer)


def fitted_shadows(config: EvalConfig) -> bool:
    """Whether the neural forward model's hint may shadow through a camera read off the G-buffers: the config's
    choice, else as the commands do (on for forward's true G-buffers, off for relight's predicted ones)."""
    return config.mode != "relight" if config.fitted_shadows is None else config.fitted_shadows


def forward_envmap_method(pipe, config: EvalConfig) -> str:
    """How the neural forward model's lighting is projected: the config's choice, else the model's default."""
    return config.envmap_method or pipe.default_envmap_method


def render_forward(
    pipe, gbuffers: Mapping[str, np.ndarray], spec: SceneSpec, config: EvalConfig, mask: np.ndarray | None = None
) -> np.ndarray:
    """(T, H, W, 3) sRGB [0, 1]: ``gbuffers`` rendered under ``spec``'s lighting (neural or split-sum).

    ``mask``: the foreground for the split-sum baseline (None: its depth-based background test).
    """
    passes = {key: gbuffers[key] for key in GBUFFER_KEYS if key in gbuffers}
    count, height, width = next(iter(passes.values())).shape[:3]
    if is_classical(pipe):
        panoramas = camera_panoramas(spec, count, height)
        frames, start = [], 0
        for t in range(1, count + 1):  # one call per run of frames that share a panorama (static light: one)
            if t < count and torch.equal(panoramas[t], panoramas[start]):
                continue
            chunk = {key: value[start:t] for key, value in passes.items()}
            foreground = "depth" if mask is None else mask[start:t]
            result = pipe(chunk, panoramas[start], fov_deg=spec.camera.fov_deg, mask=foreground)
            frames.append(result.images[0])
            start = t
        return np.concatenate(frames)
    size = pipe.image_processor.plan(height, width, config.resolution).processing_size
    env = lighting_conditions(spec, *size, count, forward_envmap_method(pipe, config))
    result = pipe(
        passes,
        env,
        num_inference_steps=config.steps,
        generator=torch.Generator().manual_seed(config.seed),
        processing_resolution=config.resolution,
        fov_deg=spec.camera.fov_deg if config.known_fov else None,
        correction_blur=config.correction_blur,
        fitted_shadows=fitted_shadows(config),
        progress=False,
    )
    return result.images[0]


def run_inverse(pipe, rgb: np.ndarray, config: EvalConfig) -> dict[str, np.ndarray]:
    """(T, H, W, 3) sRGB frames -> {pass: (T, H, W, C)} in the conventions' ranges."""
    result = pipe(
        rgb,
        passes=config.passes,
        num_inference_steps=config.steps,
        generator=torch.Generator().manual_seed(config.seed),
        processing_resolution=config.resolution,
        progress=False,
        ensemble_size=config.ensemble,
        ensemble_mirror=config.ensemble_mirror,
        ensemble_shift=config.ensemble_shift,
        basecolor_detail=config.basecolor_detail,
    )
    return result.gbuffers


# ---------------------------------------------------------------------------------------------------- metrics


def inverse_metrics(
    pred: Mapping[str, np.ndarray], gt: Mapping[str, np.ndarray], depth_range: Sequence[float] | None
) -> dict[str, float]:
    """Metrics of the predicted passes against the ground truth over ``gt["mask"]`` (see the module doc)."""
    mask = gt[MASK_KEY]
    out: dict[str, float] = {}
    if "basecolor" in pred:
        out["basecolor_si_psnr"] = si_psnr(pred["basecolor"], gt["basecolor"], mask)
        out["basecolor_psnr"] = psnr(pred["basecolor"], gt["basecolor"], mask)
    if "normal" in pred:
        out.update({f"normal_angle_{k}": v for k, v in normal_metrics(pred["normal"], gt["normal"], mask).items()})
    if "depth" in pred:
        if depth_range is None:
            out.update(depth_abs_rel=math.nan, depth_delta1=math.nan)
        else:
            z = metric_depth(gt["depth"], depth_range)
            out.update({f"depth_{k}": v for k, v in depth_metrics(pred["depth"], z, mask).items()})
    for key in ("roughness", "metallic"):
        if key in pred:
            out[f"{key}_rmse"] = rmse(pred[key], gt[key], mask)
    return out


def image_metrics(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> tuple[dict[str, float], np.ndarray]:
    """PSNR (full frame, foreground, after the exposure gain), SSIM and ꟻLIP of a (T, H, W, 3) clip; and the
    (T, H, W) ꟻLIP maps."""
    flips = [flip(p, g) for p, g in zip(pred, gt, strict=True)]
    values = {
        "psnr": psnr(pred, gt),
        "psnr_fg": psnr(pred, gt, mask),
        "psnr_exposure": exposure_psnr(pred, gt),  # whole frame, like psnr: the background is lit by the map too
        "ssim": float(np.mean([ssim(p, g) for p, g in zip(pred, gt, strict=True)])),
        "flip": float(np.mean([mean for mean, _ in flips])),
    }
    return values, np.stack([error for _, error in flips])


def mean_metrics(samples: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Per metric, the mean over the samples where it is defined (NaN skipped; +inf kept)."""
    keys = list(dict.fromkeys(k for s in samples for k in s))
    means = {}
    for key in keys:
        values = np.array([s[key] for s in samples if key in s and not math.isnan(s[key])], dtype=np.float64)
        means[key] = float(values.mean()) if values.size else math.nan
    return means


# -------------------------------------------------------------------------------------------------- relight


def relight_target(spec: SceneSpec, donor: SceneSpec | None, donor_clip: str = "") -> tuple[SceneSpec, str]:
    """``spec`` under ``donor``'s lighting (map, intensity, base rotation; ``spec``'s own light motion kept), and
    a description of that lighting. ``donor`` None or lit exactly like ``spec``: ``spec``'s own map turned by 180°,
    so the light always changes.
    """
    own = spec.lighting
    if donor is None or dataclasses.replace(donor.lighting, frame_rotation_deg=own.frame_rotation_deg) == own:
        lighting = dataclasses.replace(own, base_rotation_deg=(own.base_rotation_deg + 180.0) % 360.0)
        source = f"{own.name} turned 180°"
    else:
        lighting = dataclasses.replace(donor.lighting, frame_rotation_deg=list(own.frame_rotation_deg))
        source = f"{donor_clip} ({lighting.name})"
    return dataclasses.replace(spec, lighting=lighting), source


def _reference_key(target: SceneSpec, spp: int | None) -> str:
    return json.dumps({"scene": target.to_dict(), "spp": int(target.spp if spp is None else spp)}, sort_keys=True)


def _cached_reference(cache: Path, key: str) -> np.ndarray | None:
    """The cached (T, H, W, 3) linear frames when ``cache`` holds a render of ``key``; None otherwise."""
    if not cache.is_file():
        return None
    try:
        with np.load(cache) as stored:
            return stored["rgb_linear"] if str(stored["key"]) == key else None
    except (OSError, ValueError, KeyError):
        return None  # unreadable or from another version: render again


def reference_cached(target: SceneSpec, cache: Path, spp: int | None) -> bool:
    return _cached_reference(cache, _reference_key(target, spp)) is not None


def reference_frames(target: SceneSpec, cache: Path, variant: str, spp: int | None) -> np.ndarray:
    """(T, H, W, 3) sRGB path-traced frames of ``target`` (``spp``: default the spec's), cached in ``cache``
    (.npz of the linear frames, keyed by the spec and spp) so a re-run does not render again."""
    from diffusion_renderer.data.shards import display_rgb

    return display_rgb(reference_linear(target, cache, variant, spp))


def reference_linear(target: SceneSpec, cache: Path, variant: str, spp: int | None) -> np.ndarray:
    """(T, H, W, 3) linear radiance behind :func:`reference_frames` (rendered and cached the same way)."""
    key = _reference_key(target, spp)
    linear = _cached_reference(cache, key)
    if linear is None:
        from diffusion_renderer.data.mitsuba_render import render_clip

        linear = render_clip(target, variant=VARIANTS.get(variant, variant), spp=spp).rgb_linear.astype(np.float32)
        with atomic_file(cache) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, rgb_linear=linear, key=np.array(key))
    return linear


def donor_name(clips: Sequence[str], index: int) -> str | None:
    """The clip whose lighting relights clip ``index``: the next one in name order (cyclic); None for a lone clip."""
    return clips[(index + 1) % len(clips)] if len(clips) > 1 else None


# ------------------------------------------------------------------------------------------------------ grids


def _show(key: str, value: np.ndarray) -> np.ndarray:
    """A pass frame (H, W, C) in its range -> a displayable [0, 1] tile."""
    if key == "depth":
        return depth_to_color(to_unit("depth", value))
    if key == "normal":
        return to_unit("normal", value)
    return np.clip(value, 0.0, 1.0)


def _heat(error: np.ndarray, scale: float, mask: np.ndarray | None = None) -> np.ndarray:
    """(H, W) error -> (H, W, 3) heat tile (0 dark, ``scale`` and above bright); pixels outside ``mask`` dark."""
    e = np.clip(np.nan_to_num(np.asarray(error, dtype=np.float64)) / scale, 0.0, 1.0)
    if mask is not None:
        e = np.where(mask.reshape(e.shape) > 0.5, e, 0.0)
    return depth_to_color(e)


def shown_frames(count: int, limit: int) -> list[int]:
    """Up to ``limit`` frame indices spread over the clip (first, middle, last for 3)."""
    if count <= limit:
        return list(range(count))
    return sorted({round(i * (count - 1) / max(limit - 1, 1)) for i in range(limit)})


def pass_errors(pred: Mapping[str, np.ndarray], gt: Mapping[str, np.ndarray], depth_range) -> dict[str, np.ndarray]:
    """(T, H, W) error maps of the predicted passes, as the metrics measure them (after their alignment)."""
    mask = gt[MASK_KEY]
    errors = {}
    for key, value in pred.items():
        if key == "basecolor":
            scaled = value * least_squares_scale(value, gt[key], mask)
            errors[key] = np.abs(scaled - gt[key]).mean(-1)
        elif key == "normal":
            errors[key] = normal_angle_deg(value, gt[key])
        elif key == "depth" and depth_range is not None:
            z = metric_depth(gt[key], depth_range)
            sel = mask[..., 0] > 0.5
            a, b = fit_scale_shift(value, z, mask) if sel.any() else (1.0, 0.0)
            errors[key] = (np.abs(a * value + b - z) / np.maximum(z, 1e-6))[..., 0]
        elif key in gt:
            errors[key] = np.abs(value - gt[key]).mean(-1)
    return errors


def inverse_grid(path: Path, clip: StoredClip, pred: Mapping[str, np.ndarray], limit: int) -> None:
    errors = pass_errors(pred, clip.gbuffers, clip.meta.get("depth_range"))
    mask = clip.gbuffers[MASK_KEY]
    rows = []
    for t in shown_frames(len(clip.rgb), limit):
        for key, value in pred.items():
            tiles = [("input", clip.rgb[t]), ("ground truth", _show(key, clip.gbuffers[key][t]))]
            tiles.append(("prediction", _show(key, value[t])))
            if key in errors:
                scale = ERROR_SCALE.get(key, 1.0)
                tiles.append((f"error (0-{scale:g})", _heat(errors[key][t], scale, mask[t])))
            rows.append((f"{key} t={t}", tiles))
    save_contact_sheet(path, rows, tile_height=_tile_height(clip.rgb))


def image_grid(
    path: Path,
    inputs: Sequence[tuple[str, np.ndarray]],
    reference: np.ndarray,
    pred: np.ndarray,
    flip_maps: np.ndarray,
    limit: int,
) -> None:
    """Rows per shown frame: the inputs, the reference, the prediction and the ꟻLIP error map."""
    rows = []
    for t in shown_frames(len(pred), limit):
        tiles = [(caption, frames[t]) for caption, frames in inputs]
        tiles += [("ground truth", reference[t]), ("prediction", pred[t]), ("FLIP error", _heat(flip_maps[t], 1.0))]
        rows.append((f"t={t}", tiles))
    save_contact_sheet(path, rows, tile_height=_tile_height(pred))


def _tile_height(frames: np.ndarray) -> int:
    return int(min(256, max(96, frames.shape[1])))


def grid_name(clip: str) -> str:
    return f"{GRID_DIR}/{clip.replace('/', '__')}.png"


# ----------------------------------------------------------------------------------------------------- samples


def evaluate_inverse(pipe, clip: StoredClip, config: EvalConfig) -> SampleResult:
    pred = run_inverse(pipe, clip.rgb, config)
    values = inverse_metrics(pred, clip.gbuffers, clip.meta.get("depth_range"))
    grid = grid_name(clip.name)
    inverse_grid(config.out / grid, clip, pred, config.grid_frames)
    light = str(clip.meta.get("hdri", ""))
    regions = region_metrics(pred, clip.gbuffers, clip.meta)
    return SampleResult(
        clip.name, len(clip.rgb), values, grid, light=light, ground=ground_kind(clip.meta), regions=regions
    )


def evaluate_forward(pipe, clip: StoredClip, config: EvalConfig) -> SampleResult:
    spec = scene_of(clip.meta, meta_path(config.data, clip.split, clip.name))
    mask = clip.gbuffers[MASK_KEY]
    pred = render_forward(pipe, clip.gbuffers, spec, config, mask=mask)
    values, flip_maps = image_metrics(pred, clip.rgb, mask)
    grid = grid_name(clip.name)
    inputs = [("basecolor", clip.gbuffers["basecolor"]), ("lighting", light_thumbnails(spec, len(pred)))]
    image_grid(config.out / grid, inputs, clip.rgb, pred, flip_maps, config.grid_frames)
    regions = image_region_metrics(pred, clip.rgb, flip_maps, clip.meta, clip.gbuffers)
    light, ground = spec.lighting.name, ground_kind(clip.meta)
    return SampleResult(clip.name, len(pred), values, grid, light=light, ground=ground, regions=regions)


def evaluate_relight(
    inverse, forward, clip: StoredClip, target: SceneSpec, lighting: str, config: EvalConfig
) -> SampleResult:
    count = len(clip.rgb)
    target = first_frames(target, count)
    reference = reference_frames(target, reference_path(config, clip.name), config.variant, config.spp)
    gbuffers = run_inverse(inverse, clip.rgb, dataclasses.replace(config, passes=GBUFFER_KEYS))
    pred = render_forward(forward, gbuffers, target, config)
    values, flip_maps = image_metrics(pred, reference, clip.gbuffers[MASK_KEY])
    grid = grid_name(clip.name)
    inputs = [("input", clip.rgb), ("target lighting", light_thumbnails(target, count))]
    image_grid(config.out / grid, inputs, reference, pred, flip_maps, config.grid_frames)
    ground = ground_kind(clip.meta)  # the input clip's: the geometry the inverse model reads
    regions = image_region_metrics(pred, reference, flip_maps, clip.meta, clip.gbuffers)  # the same geometry
    light = target.lighting.name
    return SampleResult(clip.name, count, values, grid, lighting=lighting, light=light, ground=ground, regions=regions)


def reference_path(config: EvalConfig, clip: str) -> Path:
    return config.out / REFERENCE_DIR / f"{clip.replace('/', '__')}.npz"


def relight_plan(config: EvalConfig, clips: Sequence[str]) -> dict[str, tuple[SceneSpec, str]]:
    """{clip: (target scene spec cut to ``max_frames``, where its lighting comes from)}; donors: any clip of the
    split, so a clip's target does not depend on ``--max-clips``."""
    every = list_eval_clips(config.data, config.split)
    specs: dict[str, SceneSpec] = {}

    def spec(name: str) -> SceneSpec:
        if name not in specs:
            path = meta_path(config.data, config.split, name)
            specs[name] = scene_of(json.loads(path.read_text()), path)
        return specs[name]

    plan = {}
    for name in clips:
        donor = donor_name(every, every.index(name))
        target, source = relight_target(spec(name), spec(donor) if donor else None, donor or "")
        plan[name] = (first_frames(target, config.max_frames or target.num_frames), source)
    return plan


# --------------------------------------------------------------------------------------------------------- run


def run_evaluation(
    config: EvalConfig, load_pipeline: PipelineLoader, on_error: Callable[[str, str], None] | None = None
) -> EvalResult:
    """Evaluate every selected clip, write ``metrics.json``, the grids and ``report.html`` into ``config.out``.

    A clip that cannot be read or evaluated is reported through ``on_error(clip, reason)`` and left out; the
    others go on. Models are loaded once, after the clips were found.
    """
    from tqdm.auto import tqdm

    if config.mode not in MODES:
        raise InputError(None, f"mode must be one of {', '.join(MODES)}, got {config.mode!r}")
    clips = list_eval_clips(config.data, config.split, config.max_clips)
    plan = relight_plan(config, clips) if config.mode == "relight" else {}
    if plan and not all(reference_cached(t, reference_path(config, c), config.spp) for c, (t, _) in plan.items()):
        from diffusion_renderer.data.mitsuba_render import load_mitsuba

        load_mitsuba(VARIANTS.get(config.variant, config.variant))  # one-line RuntimeError without Mitsuba
    inverse = load_pipeline("inverse") if config.mode in ("inverse", "relight") else None
    forward = load_pipeline("forward") if config.mode in ("forward", "relight") else None
    if hasattr(forward, "default_envmap_method") and config.envmap_method is None:  # recorded as run
        config = dataclasses.replace(config, envmap_method=forward.default_envmap_method)
    if hasattr(inverse, "ensemble_settings"):  # recorded as run: the model's defaults filled in
        used = inverse.ensemble_settings(config.ensemble, config.ensemble_mirror, config.ensemble_shift)
        config = dataclasses.replace(
            config,
            ensemble=used.size,
            ensemble_mirror=used.mirror,
            ensemble_shift=used.shift,
            basecolor_detail=inverse.basecolor_detail_setting(config.basecolor_detail),
        )
    result = EvalResult()
    for name in tqdm(clips, desc=f"eval {config.mode}", disable=not config.progress):
        try:
            clip = cut_clip(read_clip(config.data, config.split, name), config.max_frames)
            if config.mode == "inverse":
                sample = evaluate_inverse(inverse, clip, config)
            elif config.mode == "forward":
                sample = evaluate_forward(forward, clip, config)
            else:
                sample = evaluate_relight(inverse, forward, clip, *plan[name], config)
            result.samples.append(sample)
        except (InputError, ValueError, OSError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            result.failed.append((name, reason))
            if on_error is not None:
                on_error(name, reason)
    result.metrics_path = write_metrics(config, result)
    result.report_path = write_report(config, result)
    return result


def json_number(value: float) -> float | None:
    """JSON has no inf / NaN: non-finite values (a perfect PSNR, an undefined metric) are written as null."""
    return float(value) if math.isfinite(value) else None


def _json_metrics(metrics: Mapping[str, float]) -> dict[str, float | None]:
    return {k: json_number(v) for k, v in metrics.items()}


def metrics_record(config: EvalConfig, result: EvalResult) -> dict:
    from diffusion_renderer import __version__

    settings = {
        "steps": config.steps,
        "seed": config.seed,
        "resolution": config.resolution,
        "max_clips": config.max_clips,
        "max_frames": config.max_frames,
        "envmap_method": config.envmap_method,
        "fp8": config.fp8,
    }
    if config.mode in ("forward", "relight"):
        settings["known_fov"] = config.known_fov
        settings["correction_blur"] = config.correction_blur
        settings["fitted_shadows"] = fitted_shadows(config)
    if config.mode == "inverse":
        settings["passes"] = list(config.passes)
    if config.mode in ("inverse", "relight"):  # relight runs the inverse model first
        settings.update(
            ensemble=config.ensemble,
            ensemble_mirror=config.ensemble_mirror,
            ensemble_shift=config.ensemble_shift,
            basecolor_detail=config.basecolor_detail,
        )
    if config.mode == "relight":
        settings.update(variant=config.variant, spp=config.spp)
    record = {
        "mode": config.mode,
        "model": config.model,
        "data": str(Path(config.data).resolve()),
        "split": config.split,
        "count": len(result.samples),
        "frames": sum(s.frames for s in result.samples),
        "failed": [{"clip": c, "error": e} for c, e in result.failed],
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "version": __version__,
        "settings": settings,
        "mean": _json_metrics(result.mean),
        "by_light": _groups_record(result.by_light()),
        "by_ground": _groups_record(result.by_ground()),
        "by_region": _groups_record(result.by_region()),
        "samples": [
            {
                "clip": s.clip,
                "frames": s.frames,
                "light": s.light,
                **({"ground": s.ground} if s.ground else {}),
                **({"lighting": s.lighting} if s.lighting else {}),
                "metrics": _json_metrics(s.metrics),
                **({"regions": {r: _json_metrics(m) for r, m in s.regions.items()}} if s.regions else {}),
                "grid": s.grid,
            }
            for s in result.samples
        ],
    }
    if config.mode == "relight":
        record["inverse_model"] = config.inverse_model or config.model
    return record


def _groups_record(groups: Mapping[str, tuple[int, dict[str, float]]]) -> dict[str, dict]:
    """{value: {count, mean}} for metrics.json from ``EvalResult.grouped``'s form."""
    return {value: {"count": count, "mean": _json_metrics(mean)} for value, (count, mean) in groups.items()}


def write_metrics(config: EvalConfig, result: EvalResult) -> Path:
    path = config.out / "metrics.json"
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(metrics_record(config, result), indent=1, allow_nan=False) + "\n")
    return path


def _cell(value: float) -> str:
    if math.isnan(value):
        return "–"
    return f"{value:.4g}" if math.isfinite(value) else ("∞" if value > 0 else "-∞")


def _cells(metrics: Mapping[str, float], keys: Sequence[str]) -> str:
    return "".join(f"<td>{_cell(metrics.get(k, math.nan))}</td>" for k in keys)


def write_report(config: EvalConfig, result: EvalResult) -> Path:
    """``report.html``: settings, mean metrics, and one row per sample with its metrics and its grid."""
    esc = html.escape
    mean = result.mean
    keys = list(mean)
    head = "".join(f"<th>{esc(k)}</th>" for k in keys)
    rows = []
    for s in result.samples:
        cells = _cells(s.metrics, keys)
        light = f"<br>light: {esc(s.lighting)}" if s.lighting else ""
        rows.append(
            f"<tr><td>{esc(s.clip)}{light}</td><td>{s.frames}</td>{cells}</tr>"
            f'<tr><td colspan="{len(keys) + 2}"><a href="{esc(s.grid)}"><img src="{esc(s.grid)}" '
            f'alt="{esc(s.clip)}" style="max-width:100%"></a></td></tr>'
        )
    failed = "".join(f"<li>{esc(c)}: {esc(e)}</li>" for c, e in result.failed)
    per_light, per_ground, per_region = (
        "".join(
            f"<tr><td>{esc(value or '?')}</td><td>{count}</td>{_cells(m, keys)}</tr>" for value, (count, m) in groups
        )
        for groups in (result.by_light().items(), result.by_ground().items(), result.by_region().items())
    )
    region_table = (
        "<h2>Per region</h2><p>The foreground split by the ground plane (its pixels, and the objects').</p>"
        f"<table><tr><th>region</th><th>clips</th>{head}</tr>{per_region}</table>"
        if per_region
        else ""
    )
    model = esc(config.model)
    if config.mode == "relight" and config.inverse_model:
        model = f"{esc(config.inverse_model)} (inverse) + {model} (forward)"
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>diffusion-renderer eval {esc(config.mode)}</title>
<style>body{{font-family:sans-serif;margin:1.5em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right}}td:first-child{{text-align:left}}</style></head>
<body><h1>eval {esc(config.mode)}: {model}</h1>
<p>data {esc(str(Path(config.data).resolve()))} ({esc(config.split)}), {len(result.samples)} clips,
{sum(s.frames for s in result.samples)} frames; steps {config.steps}, seed {config.seed}, resolution
{esc(str(config.resolution or "data"))}. Metrics: <a href="metrics.json">metrics.json</a>.</p>
<h2>Mean</h2><table><tr>{head}</tr><tr>{_cells(mean, keys)}</tr></table>
<h2>Per light</h2><table><tr><th>light</th><th>clips</th>{head}</tr>{per_light}</table>
{f"<h2>Per ground</h2><table><tr><th>ground</th><th>clips</th>{head}</tr>{per_ground}</table>" if per_ground else ""}
{region_table}
{f"<h2>Failed</h2><ul>{failed}</ul>" if failed else ""}
<h2>Samples</h2><table><tr><th>clip</th><th>frames</th>{head}</tr>
{"".join(rows)}</table></body></html>
"""
    path = config.out / "report.html"
    with atomic_file(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path
