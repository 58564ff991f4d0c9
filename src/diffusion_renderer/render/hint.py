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
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

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
HINT_VERSIONS = (1, 2, 3)
HINT_VERSION = HINT_VERSIONS[-1]  # what the data engine writes into new shards
PREFILTER_SAMPLES = 64  # GGX samples per texel of a prefiltered level (its most; narrow lobes take fewer)
PREFILTER_HEIGHTS = (16, 64)  # rows of a prefiltered level: the 256-row condition map needs no more
PLANE_COSINE = math.cos(math.radians(15.0))  # estimate_fov: normals within 15 deg of the dominant one are its plane
PLANE_MIN_PIXELS = 500  # estimate_fov: fewer plane pixels than this give no estimate
FOV_RANGE_DEG = (15.0, 100.0)  # estimate_fov: estimates outside this are refused
FIT_TOLERANCE = 0.01  # estimate_fov: a median residual above this share of the median right-hand side is refused


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


def plane_fit(normal: torch.Tensor, depth: torch.Tensor, iterations: int = 5) -> tuple[float, float] | None:
    """(t, b t) of one frame's (H, W, 3) camera-space normals and (H, W, 1) normalised depth, read off its dominant
    plane: t = tan of half the vertical field of view, b the depth's offset (d = a z + b for the planar depth z);
    None when there is no plane or the fit is implausible.

    Why they can be read: a plane's points z r (r = (x t, y t, -1) the camera ray through the pixel at (x, y)) satisfy
    n . (z r) = c, so (d - b)(t (x n_x + y n_y) - n_z) = a c on every pixel of the plane: linear in (t, b t,
    b n_z - a c), solved by least squares with Cauchy reweighting. The plane's normal is its pixels' mean, which
    averages out normal maps (which broke a per-pixel version of this fit). A fit whose median residual exceeds
    ``FIT_TOLERANCE`` of the right-hand side's is refused.
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
    weight = torch.ones_like(rhs)
    for _ in range(iterations):
        solution = torch.linalg.lstsq(rows * weight[:, None], (rhs * weight)[:, None]).solution[:, 0]
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


def hint_fov(gbuffers: Mapping[str, torch.Tensor | None], version: int, known_fov: float | None = None) -> float:
    """The field of view a hint of ``version`` is shaded with. Version 3: ``known_fov`` (the frames' own, when the
    caller knows the camera), else the median estimate over up to 4 frames (one camera per clip), else
    ``DEFAULT_FOV_DEG``. Versions 1-2 always take ``DEFAULT_FOV_DEG``: their models were trained on it."""
    normal, depth = gbuffers.get("normal"), gbuffers.get("depth")
    if version < 3:
        return DEFAULT_FOV_DEG
    if known_fov is not None:
        return known_fov
    if normal is None or depth is None:
        return DEFAULT_FOV_DEG
    picks = torch.linspace(0, normal.shape[0] - 1, min(4, normal.shape[0])).round().long().unique()
    found = [f for t in picks.tolist() if (f := estimate_fov(normal[t], depth[t])) is not None]
    return float(torch.tensor(found).median()) if found else DEFAULT_FOV_DEG


def shading_hint(
    gbuffers: Mapping[str, torch.Tensor],
    env_hdr: torch.Tensor,
    version: int = HINT_VERSION,
    fov_deg: float | None = None,
) -> torch.Tensor:
    """G-buffers {key: (T, H, W, C)} (conventions' ranges; missing ones take split-sum's defaults) and the
    camera-frame HDR environment (T or 1, He, We, 3) -> (T, H, W, 3) linear split-sum radiance, its background
    chosen by the rule of ``version`` (module doc). ``fov_deg``: the camera, default :func:`hint_fov` of the
    G-buffers (a caller shading one set of G-buffers under several lights computes it once)."""
    return shading_hints(gbuffers, env_hdr, version, [fov_deg])[0]


def shading_hints(
    gbuffers: Mapping[str, torch.Tensor],
    env_hdr: torch.Tensor,
    version: int,
    cameras: Sequence[float | None],
) -> list[torch.Tensor]:
    """:func:`shading_hint` through each of several cameras (field of view, None: :func:`hint_fov`), one
    (T, H, W, 3) tensor each. The prefiltered environments, most of the cost, are made once for all of them (the
    data engine stores the hint through the clip's camera and through the fixed one).

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
    fovs = [hint_fov(gbuffers, version) if fov is None else fov for fov in cameras]
    rays = [camera_rays(height, width, fov, device=device) for fov in fovs]  # (H, W, 3) each
    lut = brdf_lut(device=device)
    out: list[list[torch.Tensor]] = [[] for _ in fovs]
    env, equirect = None, None
    for t in range(count):
        k = t if env_hdr.shape[0] == count else 0
        if env is None or (k > 0 and not torch.equal(env_hdr[k], env_hdr[k - 1])):
            equirect, env = _environment(env_hdr[k])
        for frames_out, ray in zip(out, rays, strict=True):
            color = shade_gbuffer_frame(frames, t, ray, env, lut=lut)
            if background is not None:
                color = torch.where(background[t], sample_equirect(equirect, ray), color)
            frames_out.append(color)
    return [torch.stack(frames_out) for frames_out in out]
