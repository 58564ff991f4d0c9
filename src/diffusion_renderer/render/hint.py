"""Split-sum shading hint: an optional ninth condition of this project's forward models (not official).

What: the classical split-sum render (:mod:`render.splitsum`) of the G-buffers under the lighting, display-encoded
like ``rgb`` (exposure 1, clipped, sRGB), given to the forward DiT as one more condition latent (key ``shading``,
after the official eight; ``conventions.forward_condition_keys``). Models without it (every official checkpoint)
are unchanged.

Why: the small forward model learned the environment integral poorly. After 10k steps it scored 18.0 dB on
held-out maps against split-sum's 23.1 dB, and most of its error was one brightness factor per image (a
least-squares exposure gain alone lifted it to 20.9 dB). Split-sum computes that integral from the HDR map (no
shadows, no interreflection); given it as a condition, the network has only the correction to learn: shadows,
occlusion, interreflection, the real camera.

Inputs are what training and inference both have: the G-buffers in the conventions' ranges and the camera-frame
HDR environment the lighting conditions are encoded from (``EnvironmentConditions.env_hdr``, the shards'
``env_hdr``). The camera (``DEFAULT_FOV_DEG``) and the prefilter settings are fixed here, so a hint at inference is
computed exactly as the hints the model was trained on. Background shows the environment along the camera ray, as
the path tracer's frames do. Which pixels are background is the hint's version (``HINT_VERSIONS``; the DiT config's
``shading_hint`` names the version a model was trained with):

1. depth at its far end (the split-sum baseline's ``mask="depth"`` rule). It also catches the farthest ~2 % of the
   surfaces, which the depth normalisation clips to +1 like the background: measured on the held-out set, those
   cost the hint 1.6 dB (20.3 dB, against 21.9 with the true mask).
2. no normal, and depth in its far tenth: the data engine writes zero normals where no surface is seen and unit
   normals on every surface, clipped or not (on its G-buffers this is the true mask). The inverse model predicts
   near-zero normals on 94-100 % of the background but depth >= 0.999 on only half of it: on the held-out set's
   predictions, rule 1 misses 41 % of the background, this one 6 % (and calls 2 % of the surfaces background).
3. version 2's background, seen through the field of view that :func:`estimate_fov` reads from the G-buffers
   (``DEFAULT_FOV_DEG`` when it cannot) instead of a fixed 40 degrees (the data engine's cameras have 30-60). The
   hint alone on the held-out set: 21.3 dB (version 2) -> 22.3.
4. version 3 with screen-space shadows (:mod:`render.shadows`): where the camera is known or read off the
   G-buffers, the depth's offset is fitted too (:func:`plane_fit`), which turns the normalised depth back into
   planar depth up to scale, and each surface pixel's split-sum radiance is scaled by the share of the light it
   sees past the depth buffer (``SHADOW_SAMPLING`` directions drawn by power, marched at half resolution).
   Where the fit is refused (predicted G-buffers, most often) there are no shadows: the hint is version 3's.
   Relighting, editing and insertion leave out the shadows of a fitted camera altogether (the forward pipeline's
   ``fitted_shadows``): where predicted planes pass the fit, the march through predicted depth casts false shadows.
   Measured on the held-out sets (benchmarks/visibility.py): the hint alone 22.3 -> 23.7 dB, 22.2 -> 23.8 on a
   second set of 120 images.
5. version 4 with a finer shadow test: twice the light directions and twice the steps of the march
   (``SHADOW_SAMPLING``). Why: under the held-out studio and street-lamp maps, a few small lights hold most of the
   power, and 32 directions marched in 16 steps cast jagged, banded shadow edges that the residual model passes
   into its frames (its correction is low-passed). The version 4 model given these hints at inference, untrained on
   them: 26.06 -> 26.16 dB and SSIM 0.887 -> 0.890 on the held-out evaluation set (benchmarks/TINY_HISTORY.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from diffusion_renderer.render.shadows import light_directions, shadow_factor_fast
from diffusion_renderer.render.splitsum import (
    DEFAULT_FOV_DEG,
    DEFAULT_ROUGHNESS_LEVELS,
    PrefilteredEnvironment,
    auto_level_heights,
    brdf_lut,
    camera_rays,
    complete_gbuffers,
    prepare_environment,
    sample_equirect,
    shade_gbuffer_frame,
)

# Every setting here is part of the input of the models trained with the hint: a change needs a new entry in
# HINT_VERSIONS (the DiT config's ``shading_hint`` names it), or a shipped model sees hints unlike its training's.
BACKGROUND_DEPTH = 0.999  # relative depth at or beyond this is background (the baseline's mask="depth" rule)
BACKGROUND_NORMAL = 0.5  # version 2: a normal shorter than this (zero on the background, unit on surfaces) ...
BACKGROUND_DEPTH_V2 = 0.9  # ... and relative depth at or beyond this
HINT_VERSIONS = (1, 2, 3, 4, 5)
HINT_VERSION = HINT_VERSIONS[-1]  # what the data engine writes into new shards
PREFILTER_SAMPLES = 64  # GGX samples per texel of a prefiltered level (its most; narrow lobes take fewer)
PREFILTER_HEIGHTS = (16, 64)  # rows of a prefiltered level: the 256-row condition map needs no more
PLANE_COSINE = math.cos(math.radians(15.0))  # estimate_fov: normals within 15 deg of the dominant one are its plane
PLANE_MIN_PIXELS = 500  # estimate_fov: fewer plane pixels than this give no estimate
FOV_RANGE_DEG = (15.0, 100.0)  # estimate_fov: estimates outside this are refused
FIT_TOLERANCE = 0.01  # estimate_fov: a median residual above this share of the median right-hand side is refused
# version -> (light directions of the shadow test, steps of its march along each). Version 4's 32 directions were
# as good as 64 on the hint alone (benchmarks/visibility.py); the residual model's frames gain from 64 and 32 steps.
SHADOW_SAMPLING: dict[int, tuple[int, int]] = {4: (32, 16), 5: (64, 32)}
# Exposure normalisation (models with ``exposure_level`` > 0; :func:`hint_level`): part of such a model's input too.
LEVEL_QUANTILE = 0.98  # hint_level: brightness above this quantile of the clip's is clipped to it
MAX_EXPOSURE_GAIN = 2.0  # normalizing_gain: at most one stop brighter (see there)


@dataclass(frozen=True)
class HintCamera:
    """How a hint sees its G-buffers: the vertical field of view and, for version 4's shadows, the offset ``b`` of
    the normalised depth d = a z + b (z the planar depth), which turns it back into depth up to scale; None: no
    shadows (an earlier version, or a refused fit)."""

    fov_deg: float = DEFAULT_FOV_DEG
    depth_offset: float | None = None


def equirect_from_condition(env: torch.Tensor) -> torch.Tensor:
    """Camera-frame environment condition (..., H, W, 3) -> the same light as a split-sum equirect (..., H, W, 3).

    The condition's texel (i, j) holds the radiance from ``env_nrm[i, j]`` = latlong(θ_i, π - φ_j) (official
    ``envmap_vec``: ``-latlong_vec`` flipped in H and W; θ_i = π·linspace(1/H, 1 - 1/H, H), φ_j at pixel
    centres). Split-sum's equirect texel (a, b) holds the radiance from latlong((a + ½)π/H, φ_b) in the camera
    frame (its angle 0). Flipping the columns and rolling them half a turn gives φ exactly; the rows are
    re-sampled linearly from the official θ grid onto texel centres (they differ by up to half a texel at the
    poles). ``W`` must be even.
    """
    height, width = env.shape[-3], env.shape[-2]
    if width % 2:
        raise ValueError(f"the environment condition's width must be even, got {width}")
    out = env.flip(-2).roll(width // 2, dims=-2)
    if height < 2:
        return out
    centres = (torch.arange(height, dtype=torch.float64) + 0.5) / height  # θ / π of split-sum's rows
    position = ((centres - 1.0 / height) / ((1.0 - 2.0 / height) / (height - 1))).clamp(0, height - 1)
    lo = position.floor().long().clamp(max=height - 2)
    weight = (position - lo).to(env.dtype).to(env.device).view(-1, 1, 1)
    lo = lo.to(env.device)
    return torch.lerp(out[..., lo, :, :], out[..., lo + 1, :, :], weight)


def _environment(env_hdr: torch.Tensor) -> tuple[torch.Tensor, PrefilteredEnvironment]:
    """One (H, W, 3) camera-frame condition -> (its split-sum equirect, prefiltered with the hint's settings)."""
    equirect = equirect_from_condition(env_hdr.float())
    heights = auto_level_heights(DEFAULT_ROUGHNESS_LEVELS, equirect.shape[0], *PREFILTER_HEIGHTS)
    return equirect, prepare_environment(
        equirect, out_height=heights, samples=PREFILTER_SAMPLES, flip=False, rot_deg=0.0, device=env_hdr.device
    )


def background_mask(gbuffers: Mapping[str, torch.Tensor | None], version: int) -> torch.Tensor | None:
    """(T, H, W, 1) bool, True where the hint of ``version`` shows the environment; None without depth."""
    if version not in HINT_VERSIONS:
        raise ValueError(f"unknown shading hint version {version} (known: {HINT_VERSIONS})")
    depth = gbuffers.get("depth")
    if depth is None:
        return None
    normal = gbuffers.get("normal")
    if version == 1 or normal is None:
        return depth[..., :1] >= BACKGROUND_DEPTH
    empty = torch.linalg.vector_norm(normal.float(), dim=-1, keepdim=True) < BACKGROUND_NORMAL
    return empty & (depth[..., :1] >= BACKGROUND_DEPTH_V2)  # versions 2 and 3


def dominant_plane(normal: torch.Tensor, valid: torch.Tensor) -> torch.Tensor | None:
    """(H, W) bool: the pixels whose normal lies within 15 degrees of the most common one (the ground, a wall);
    None when there are too few. The mode is voted on fixed subsamples of the valid pixels, then refined."""
    unit = torch.nn.functional.normalize(normal[valid], dim=-1)  # (P, 3)
    if unit.shape[0] < PLANE_MIN_PIXELS:
        return None

    def strided(count: int) -> torch.Tensor:  # a fixed subsample: the vote stays small at any resolution
        return unit[torch.linspace(0, unit.shape[0] - 1, min(count, unit.shape[0]), device=unit.device).long()]

    candidates = strided(256)
    votes = (candidates.float() @ strided(16384).float().T > PLANE_COSINE).sum(1)
    centre = candidates[votes.argmax()]
    for _ in range(2):  # re-centre the cone on its members' mean: the winning candidate is itself a noisy normal
        inside = unit @ centre > PLANE_COSINE
        centre = torch.nn.functional.normalize(unit[inside].mean(0), dim=0)
    member = torch.zeros_like(valid)
    member[valid] = unit @ centre > PLANE_COSINE
    return member if int(member.sum()) >= PLANE_MIN_PIXELS else None


def plane_fit(
    normal: torch.Tensor, depth: torch.Tensor, iterations: int = 5, t: float | None = None
) -> tuple[float, float] | None:
    """(t, b t) of one frame's (H, W, 3) camera-space normals and (H, W, 1) normalised depth, read off its dominant
    plane: t = tan of half the vertical field of view, b the depth's offset (d = a z + b for the planar depth z);
    None when there is no plane or the fit is implausible.

    Why they can be read: a plane's points z r (r = (x t, y t, -1) the camera ray through the pixel at (x, y)) satisfy
    n . (z r) = c, so (d - b)(t (x n_x + y n_y) - n_z) = a c on every pixel of the plane: linear in (t, b t,
    b n_z - a c), solved by least squares with Cauchy reweighting. The plane's normal is its pixels' mean, which
    averages out normal maps (which broke a per-pixel version of this fit). A fit whose median residual exceeds
    ``FIT_TOLERANCE`` of the right-hand side's is refused. ``t``: the camera's, when known (then only b t and the
    constant are fitted).
    """
    n, d = normal.double(), depth[..., 0].double()
    height, width = d.shape
    valid = (torch.linalg.vector_norm(n, dim=-1) > BACKGROUND_NORMAL) & (d.abs() < 0.995)  # unclipped surfaces
    member = dominant_plane(n, valid)
    if member is None:
        return None
    plane = torch.nn.functional.normalize(n[member].mean(0), dim=0)
    xs = (2 * torch.arange(width, dtype=torch.float64, device=d.device) + 1 - width) / height  # camera_rays' grid
    ys = 1 - (2 * torch.arange(height, dtype=torch.float64, device=d.device) + 1) / height
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    p, dm = x[member] * plane[0] + y[member] * plane[1], d[member]
    # unknowns t, bt and b n_z - ac: with one plane normal, b and ac only appear in that combination, and a column
    # for each made the system rank-deficient (its solution then hung on rounding, so on the thread count)
    rows = torch.stack([dm * p, -p, torch.ones_like(p)], dim=1)
    rhs = dm * plane[2]
    known = t is not None
    solved_rhs = rhs - dm * p * t if known else rhs  # a known t moves its column to the right-hand side
    solved_rows = rows[:, 1:] if known else rows
    weight = torch.ones_like(rhs)
    for _ in range(iterations):
        solution = torch.linalg.lstsq(solved_rows * weight[:, None], (solved_rhs * weight)[:, None]).solution[:, 0]
        if known:
            solution = torch.cat([solution.new_tensor([t]), solution])
        residual = rows @ solution - rhs
        scale = 1.4826 * residual.abs().median() + 1e-12
        weight = 1 / (1 + (residual / (2 * scale)) ** 2)
    if float(residual.abs().median()) > FIT_TOLERANCE * float(rhs.abs().median()):
        return None  # not a clean plane: predicted G-buffers, or curved surfaces voted dominant
    return float(solution[0]), float(solution[1])


def estimate_fov(normal: torch.Tensor, depth: torch.Tensor, iterations: int = 5) -> float | None:
    """Vertical field of view (degrees) of one frame's (H, W, 3) camera-space normals and (H, W, 1) normalised depth,
    read off its dominant plane (:func:`plane_fit`); None when there is none or the fit is implausible.

    Measured on the 30 held-out clips: on the ground-truth G-buffers the relative residual is below 0.006 wherever
    the estimate is right (within 1 degree, median error 0.05) and above 0.1 on the two where it is not; on the
    inverse model's predicted G-buffers it is 0.013-0.05 and the estimates are no better than a fixed 40 degrees
    (mean error 8.7 against 9.3), so those keep the fixed camera.
    """
    fit = plane_fit(normal, depth, iterations)
    return None if fit is None else fov_from_tangent(fit[0])


def fov_from_tangent(t: float) -> float | None:
    """The vertical field of view (degrees) whose half has tangent ``t`` (:func:`plane_fit`'s), None outside
    ``FOV_RANGE_DEG`` (an implausible fit)."""
    fov = math.degrees(2 * math.atan(t)) if t > 0 else 0.0
    return fov if FOV_RANGE_DEG[0] <= fov <= FOV_RANGE_DEG[1] else None


def padded_fov(fov_deg: float, content_height: int, frame_height: int) -> float:
    """Vertical field of view of a frame ``frame_height`` pixels tall whose centred content, ``content_height``
    pixels tall, was seen through ``fov_deg`` in (0, 180) (the pipelines pad a clip to the model's size; pixels
    stay square)."""
    return math.degrees(2 * math.atan(math.tan(math.radians(fov_deg) / 2) * frame_height / content_height))


def hint_camera(
    gbuffers: Mapping[str, torch.Tensor | None],
    version: int,
    known_fov: float | None = None,
    fitted_shadows: bool = True,
) -> HintCamera:
    """The camera a hint of ``version`` sees the G-buffers through (one per clip).

    Field of view, version 3 on: ``known_fov`` (the frames' own, when the caller knows the camera), else the
    median estimate over up to 4 frames, else ``DEFAULT_FOV_DEG``. Versions 1-2 always take ``DEFAULT_FOV_DEG``:
    their models were trained on it. Depth offset, version 4 only: the median of :func:`plane_fit` with that field
    of view over the same frames, None when the field of view is the fallback or every fit is refused, or when it
    was estimated and ``fitted_shadows`` is False (predicted G-buffers: their depth casts false shadows)."""
    normal, depth = gbuffers.get("normal"), gbuffers.get("depth")
    if version < 3:
        return HintCamera()
    if normal is None or depth is None:
        return HintCamera(DEFAULT_FOV_DEG if known_fov is None else known_fov)
    picks = torch.linspace(0, normal.shape[0] - 1, min(4, normal.shape[0])).round().long().unique().tolist()
    fov = known_fov
    if fov is None:
        found = [f for t in picks if (f := estimate_fov(normal[t], depth[t])) is not None]
        if not found:
            return HintCamera()
        fov = float(torch.tensor(found).median())
    if version < 4 or (known_fov is None and not fitted_shadows):
        return HintCamera(fov)
    t = math.tan(math.radians(fov) / 2)
    offsets = [fit[1] / t for i in picks if (fit := plane_fit(normal[i], depth[i], t=t)) is not None]
    return HintCamera(fov, float(torch.tensor(offsets).median()) if offsets else None)


def shading_hint(
    gbuffers: Mapping[str, torch.Tensor],
    env_hdr: torch.Tensor,
    version: int = HINT_VERSION,
    camera: HintCamera | None = None,
) -> torch.Tensor:
    """G-buffers {key: (T, H, W, C)} (conventions' ranges; missing ones take split-sum's defaults) and the
    camera-frame HDR environment (T or 1, He, We, 3) -> (T, H, W, 3) linear split-sum radiance, its background
    chosen by the rule of ``version`` (module doc), shadowed where ``camera`` has a depth offset (version 4).
    ``camera``: default :func:`hint_camera` of the G-buffers (a caller shading one set of G-buffers under several
    lights computes it once)."""
    return shading_hints(gbuffers, env_hdr, version, [camera])[0]


def shading_hints(
    gbuffers: Mapping[str, torch.Tensor],
    env_hdr: torch.Tensor,
    version: int,
    cameras: Sequence[HintCamera | None],
) -> list[torch.Tensor]:
    """:func:`shading_hint` through each of several cameras (None: :func:`hint_camera`), one (T, H, W, 3) tensor
    each. The prefiltered environments, most of the cost, are made once for all of them (the data engine stores
    the hint through the clip's camera and through the fixed one).

    Frames that share an environment (a fixed light: one map) are shaded with one prefiltered map.
    """
    normal = gbuffers.get("normal")
    reference = normal if normal is not None else next(v for v in gbuffers.values() if v is not None)
    count, height, width = reference.shape[:3]
    device = env_hdr.device
    if env_hdr.shape[0] not in (1, count):
        raise ValueError(f"{env_hdr.shape[0]} environment frames for {count} G-buffer frames")
    background = background_mask(gbuffers, version)  # (T, H, W, 1), before the normals are made unit
    background = None if background is None else background.to(device)
    frames = complete_gbuffers({k: v for k, v in gbuffers.items() if v is not None}, (count, height, width), device)
    cameras = [hint_camera(gbuffers, version) if camera is None else camera for camera in cameras]
    rays = [camera_rays(height, width, camera.fov_deg, device=device) for camera in cameras]  # (H, W, 3) each
    lut = brdf_lut(device=device)
    out: list[list[torch.Tensor]] = [[] for _ in cameras]
    env, equirect, light = None, None, None
    for t in range(count):
        k = t if env_hdr.shape[0] == count else 0
        if env is None or (k > 0 and not torch.equal(env_hdr[k], env_hdr[k - 1])):
            equirect, env = _environment(env_hdr[k])
            light = None
        for frames_out, ray, camera in zip(out, rays, cameras, strict=True):
            color = shade_gbuffer_frame(frames, t, ray, env, lut=lut)
            if version >= 4 and camera.depth_offset is not None:
                directions, steps = SHADOW_SAMPLING[version]
                light = light_directions(equirect, directions) if light is None else light
                color = color * shadows(frames, background, t, camera, light, steps)[..., None]
            if background is not None:
                color = torch.where(background[t], sample_equirect(equirect, ray), color)
            frames_out.append(color)
    return [torch.stack(frames_out) for frames_out in out]


def shadows(
    frames: Mapping[str, torch.Tensor],
    background: torch.Tensor | None,
    t: int,
    camera: HintCamera,
    light: torch.Tensor,
    steps: int,
) -> torch.Tensor:
    """(H, W) the shadow factor (versions 4 on) of frame ``t`` of split-sum's completed G-buffers
    (``complete_gbuffers``: unit normals, depth in [-1, 1]) through ``camera``, toward ``light`` (K, 3), marched in
    ``steps``."""
    depth = frames["depth"][t, ..., 0]
    z = (depth - camera.depth_offset).clamp(min=1e-3)  # a z: planar depth up to the scale the shadow test ignores
    surface = torch.ones_like(depth, dtype=torch.bool) if background is None else ~background[t, ..., 0]
    normal = frames["normal"][t] * surface[..., None]  # no normal off the surfaces: half resolution averages them
    return shadow_factor_fast(z, normal, surface, camera.fov_deg, light, steps)


# -------------------------------------------------------------------------------------------------------------
# Exposure normalisation
#
# Why: a forward model trained at the data's light levels follows a change of the light's strength only in part
# (benchmarks/correction_strength.py --light-stops: 15-55 % of a stop missed), so it renders the brightest held-out
# maps too dark. Light transport is linear: the same scene under k times the light is k times the frame. A model
# with ``exposure_level`` L sees every light scaled so that its hint's level is L and its frame is scaled back
# after it, so its output follows the light's strength by construction (training and the pipeline alike).


def hint_level(linear: torch.Tensor, channel_dim: int) -> torch.Tensor:
    """(B, ...) linear shading hints (a clip each; channels at ``channel_dim``) -> (B,) their level: the mean
    channel-mean brightness over pixels and frames, each pixel clipped at the clip's ``LEVEL_QUANTILE`` quantile.
    Homogeneous (k x hint -> k x level), so a normalised input does not depend on the light's strength; the clip
    keeps a few hot pixels (the sun or a lamp seen in the background) from setting it."""
    brightness = linear.float().mean(channel_dim).flatten(1)  # (B, N)
    k = max(1, math.ceil(LEVEL_QUANTILE * brightness.shape[1]))
    ceiling = brightness.kthvalue(k, dim=1, keepdim=True).values  # (B, 1)
    return torch.minimum(brightness, ceiling).mean(1)


def normalizing_gain(level: torch.Tensor, target: float) -> torch.Tensor:
    """(B,) factors on the light that bring hints of ``level`` to ``target``: any dimming, but at most
    ``MAX_EXPOSURE_GAIN`` brightening. Why the bound: frames are clipped at 1, so a frame rendered g times too
    bright and scaled back cannot hold values above 1/g (its highlights); dimming loses nothing. Dark clips (a
    black hint: g = the bound) keep a level below ``target``."""
    return (target / level.clamp(min=1e-12)).clamp(max=MAX_EXPOSURE_GAIN)
