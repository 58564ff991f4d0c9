"""Classical baseline: split-sum image-based lighting (G-buffers + HDR environment map -> image), in torch.

The renderer the DiffusionRenderer paper compares against: GGX specular from a prefiltered environment and a
BRDF integration table (the split-sum approximation), Lambert diffuse from the cosine-convolved environment.
No shadows, no interreflection, no multiple scattering inside the specular lobe.

Shading model (per pixel, linear RGB):

* ``basecolor`` is sRGB -> linear; diffuse albedo ``c_lin (1 - metallic)``, ``F0 = lerp(0.04, c_lin, metallic)``.
* GGX with ``alpha = roughness²`` (perceptual roughness, as Disney / glTF); height-correlated Smith visibility
  ``V = G2 / (4 n·l n·v)`` (Heitz 2014), Schlick Fresnel.
* ``L = albedo_d · E(n)/π + prefiltered(r, roughness) · (F0 · A(n·v, roughness) + B(n·v, roughness))``, with
  ``r = reflect(-v, n)``. ``E/π`` comes from an order-2 spherical-harmonics projection (9 coefficients,
  Ramamoorthi & Hanrahan 2001): exact for a uniform environment, a low-pass approximation otherwise, clamped at 0.
  The prefiltered radiance uses the usual n = v = r assumption; levels are spaced in roughness and linearly
  interpolated; roughness 0 is the source map itself.

Environment convention: the one of :mod:`diffusion_renderer.lighting.envmap` with its defaults (identity pose,
width flip, 180° roll). A camera-frame direction ``d`` (+x right, +y up, +z toward the camera, pointing from the
scene out to the environment) has radiance ``prepared(latlong_uv(rotate_y(a) d))``: exactly the pixel whose
``env_nrm`` is ``d`` in the neural renderer's ``env_ldr`` / ``env_log`` (``method="direct"``). For the raw
panorama texel at ``(u, v)`` (u = column, v = row, both in [0, 1], a = 0) that direction is
``(-sinθ sinψ, cosθ, -sinθ cosψ)`` with ``θ = πv``, ``ψ = 2πu``: the top row is +y, the centre of the
panorama is +z (behind the camera), its left / right edges are -z (in front of the camera), u = 3/4 is +x.

Camera: the neural renderer takes no intrinsics, the baseline needs one: a pinhole at the origin with identity
pose looking down -z, vertical field of view ``fov_deg`` (default 40°; 0 = orthographic, v = +z everywhere).

Precomputation (all deterministic): the BRDF table integrates with Hammersley points and visible-normal sampling
(Heitz 2018), so each sample's weight ``G2 / G1`` is <= 1 and ``A + B <= 1`` holds exactly; the prefiltered
levels use GGX importance sampling with filtered (mip-mapped) lookups, 16 to 128 samples per texel depending
on the lobe width, and a map height per level that resolves the lobe (32 to 128 rows, at most the source's).

Output: exposure, then ``clamp`` (clip at 1) or ``reinhard`` (extended, white 16, as ``env_ldr``), then sRGB.
Where a foreground mask is 0, ``background="env"`` shows the environment seen through the camera (the same
lookup as the lighting), ``"black"`` shows black.

Limitations: no shadows or interreflection (every point sees the whole environment, also through the object);
no specular multiple scattering, and diffuse and specular are simply added (a white dielectric under a uniform
light reads 1 + its specular albedo); the SH irradiance rings slightly around very bright suns; roughness 0 reads
the full-resolution map without screen-space mip selection (mirror surfaces can alias on detailed maps).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from diffusion_renderer.conventions import GBUFFER_KEYS, srgb_to_linear
from diffusion_renderer.lighting.envmap import (
    EnvironmentConditions,
    latlong_uv,
    prepare_hdr,
    reinhard_extended,
    rgb2srgb,
    rotate_y,
    rotation_angles,
    sample_latlong,
)
from diffusion_renderer.pipelines.image_processor import collect_gbuffers
from diffusion_renderer.pipelines.pipeline_output import ForwardRenderingOutput

DIELECTRIC_F0 = 0.04
DEFAULT_FOV_DEG = 40.0
# Denser at low roughness, where the lobe changes fastest (alpha = r²).
DEFAULT_ROUGHNESS_LEVELS: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.45, 0.6, 0.8, 1.0)
TONEMAPS = ("clamp", "reinhard")
BACKGROUNDS = ("env", "black")
# Defaults of G-buffers left out, in the conventions' ranges.
GBUFFER_DEFAULTS: dict[str, tuple[float, ...]] = {
    "basecolor": (0.5, 0.5, 0.5),
    "normal": (0.0, 0.0, 1.0),
    "roughness": (0.5,),
    "metallic": (0.0,),
}
MASK_KEY = "mask"
_EPS = 1e-7


# ---------------------------------------------------------------------------------------------------------------
# Colour


def tonemap_to_display(linear: torch.Tensor, tonemap: str = "clamp", exposure: float = 1.0) -> torch.Tensor:
    """Linear HDR -> display sRGB [0, 1]: ``clamp`` (clip at 1) or ``reinhard`` (extended, white 16, as env_ldr)."""
    if tonemap not in TONEMAPS:
        raise ValueError(f"tonemap must be one of {TONEMAPS}, got {tonemap!r}")
    x = (linear * exposure).clamp_min(0.0)
    if tonemap == "reinhard":
        x = reinhard_extended(x)
    return rgb2srgb(x.clamp(0.0, 1.0))


# ---------------------------------------------------------------------------------------------------------------
# Microfacet BRDF terms (n·x arguments are cosines in [0, 1])


def ggx_ndf(n_dot_h: torch.Tensor, alpha: torch.Tensor | float) -> torch.Tensor:
    """GGX / Trowbridge-Reitz normal distribution ``D = α² / (π (cos²θ α² + sin²θ)²)``, normalised so that
    ``∫ D cosθ_h dω_h = 1``. Written with sin²θ = 1 - cos²θ so that it stays finite for tiny α at cosθ = 1."""
    a2 = torch.as_tensor(alpha, dtype=n_dot_h.dtype, device=n_dot_h.device) ** 2
    c2 = n_dot_h.clamp(0.0, 1.0) ** 2
    denom = c2 * a2 + (1.0 - c2)
    return a2 / (math.pi * (denom * denom).clamp_min(1e-30))


def smith_visibility_ggx(n_dot_v: torch.Tensor, n_dot_l: torch.Tensor, alpha: torch.Tensor | float) -> torch.Tensor:
    """Height-correlated Smith visibility for GGX, ``V = G2 / (4 n·l n·v)``
    ``= 0.5 / (n·l sqrt(n·v² (1 - α²) + α²) + n·v sqrt(n·l² (1 - α²) + α²))``."""
    a2 = torch.as_tensor(alpha, dtype=n_dot_v.dtype, device=n_dot_v.device) ** 2
    nv, nl = n_dot_v.clamp_min(0.0), n_dot_l.clamp_min(0.0)
    lam_v = nl * torch.sqrt(nv * nv * (1.0 - a2) + a2)
    lam_l = nv * torch.sqrt(nl * nl * (1.0 - a2) + a2)
    return 0.5 / (lam_v + lam_l).clamp_min(1e-12)


def fresnel_schlick(f0: torch.Tensor | float, v_dot_h: torch.Tensor) -> torch.Tensor:
    """Schlick's Fresnel ``F0 + (1 - F0) (1 - v·h)⁵``."""
    return f0 + (1.0 - f0) * (1.0 - v_dot_h.clamp(0.0, 1.0)) ** 5


def importance_sample_ggx(xi: torch.Tensor, alpha: torch.Tensor | float) -> torch.Tensor:
    """(..., 2) uniform points in [0, 1)² -> (..., 3) half vectors, tangent frame (normal = +z), pdf ``D cosθ_h``.

    ``cos²θ = (1 - ξ₁) / (1 + (α² - 1) ξ₁)``, ``φ = 2π ξ₂`` (inverse CDF of ``D cosθ``); ``alpha`` broadcasts.
    """
    a2 = torch.as_tensor(alpha, dtype=xi.dtype, device=xi.device) ** 2
    x1, x2 = xi[..., 0], xi[..., 1]
    cos2 = ((1.0 - x1) / (1.0 + (a2 - 1.0) * x1)).clamp(0.0, 1.0)
    cos_t, sin_t = torch.sqrt(cos2), torch.sqrt(1.0 - cos2)
    phi = 2.0 * math.pi * x2
    return torch.stack([sin_t * torch.cos(phi), sin_t * torch.sin(phi), cos_t], dim=-1)


def hammersley(
    n: int, *, device: torch.device | str | None = None, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """(n, 2) Hammersley points ``((i + 0.5) / n, radical_inverse_2(i))``: deterministic, low discrepancy."""
    i = torch.arange(n, dtype=torch.int64)
    bits = torch.zeros_like(i)
    for b in range(32):  # reverse the 32 low bits
        bits |= ((i >> b) & 1) << (31 - b)
    pts = torch.stack([(i.double() + 0.5) / n, bits.double() / 2.0**32], dim=-1)
    return pts.to(device=device, dtype=dtype)


# ---------------------------------------------------------------------------------------------------------------
# BRDF integration table


def sample_ggx_visible_normals(xi: torch.Tensor, v: torch.Tensor, alpha: torch.Tensor | float) -> torch.Tensor:
    """(..., 2) uniform points, (..., 3) view directions (tangent frame, normal = +z) -> (..., 3) half vectors
    distributed as the GGX visible normals ``G1(v) max(0, v·h) D(h) / n·v`` (Heitz 2018: sample the projected
    hemisphere of the stretched, isotropic configuration, then unstretch)."""
    a = torch.as_tensor(alpha, dtype=v.dtype, device=v.device)
    vh = F.normalize(torch.stack([a * v[..., 0], a * v[..., 1], v[..., 2]], dim=-1), dim=-1)
    len2 = vh[..., 0] ** 2 + vh[..., 1] ** 2
    inv_len = torch.rsqrt(len2.clamp_min(1e-20))
    zero = torch.zeros_like(len2)
    t1 = torch.where(
        (len2 > 0)[..., None],
        torch.stack([-vh[..., 1] * inv_len, vh[..., 0] * inv_len, zero], dim=-1),
        torch.stack([torch.ones_like(len2), zero, zero], dim=-1),
    )
    t2 = torch.linalg.cross(vh, t1, dim=-1)
    radius, phi = torch.sqrt(xi[..., 0]), 2.0 * math.pi * xi[..., 1]
    p1, p2 = radius * torch.cos(phi), radius * torch.sin(phi)
    s = 0.5 * (1.0 + vh[..., 2])
    p2 = (1.0 - s) * torch.sqrt((1.0 - p1 * p1).clamp_min(0.0)) + s * p2  # squash onto the visible half disk
    p3 = torch.sqrt((1.0 - p1 * p1 - p2 * p2).clamp_min(0.0))
    nh = p1[..., None] * t1 + p2[..., None] * t2 + p3[..., None] * vh
    return F.normalize(torch.stack([a * nh[..., 0], a * nh[..., 1], nh[..., 2].clamp_min(0.0)], dim=-1), dim=-1)


def smith_g1_ggx(n_dot_v: torch.Tensor, alpha: torch.Tensor | float) -> torch.Tensor:
    """Smith masking of GGX for one direction, ``2 n·v / (n·v + sqrt(α² + (1 - α²) n·v²))``."""
    a2 = torch.as_tensor(alpha, dtype=n_dot_v.dtype, device=n_dot_v.device) ** 2
    nv = n_dot_v.clamp_min(0.0)
    return 2.0 * nv / (nv + torch.sqrt(a2 + (1.0 - a2) * nv * nv)).clamp_min(1e-12)


def _lut_integrand(n_dot_v: torch.Tensor, alpha: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
    """Quasi-Monte-Carlo (A, B) for broadcast (...,) n·v and α with (S, 2) points -> (..., 2).

    Half vectors follow the visible-normal distribution, so the weight of ``f n·l / pdf`` (F factored out) is
    ``G2 / G1(v) = 4 V n·l n·v / G1(v)``, in [0, 1]: every sample has A + B <= 1, and grazing angles converge fast.
    ``A`` takes ``1 - Fc``, ``B`` takes ``Fc = (1 - v·h)⁵`` of it.
    """
    nv = n_dot_v[..., None]
    a = alpha[..., None]
    v = torch.stack([torch.sqrt(1.0 - nv * nv), torch.zeros_like(nv), nv], dim=-1)  # (..., 1, 3)
    h = sample_ggx_visible_normals(xi, v, a)  # (..., S, 3)
    v_dot_h = (v * h).sum(-1).clamp(0.0, 1.0)
    n_dot_l = 2.0 * v_dot_h * h[..., 2] - nv  # z of l = 2 (v·h) h - v
    g2 = 4.0 * smith_visibility_ggx(nv.expand_as(n_dot_l), n_dot_l, a) * n_dot_l * nv
    weight = torch.where(n_dot_l > 0, (g2 / smith_g1_ggx(nv, a).clamp_min(1e-12)).clamp(0.0, 1.0), 0.0)
    fc = (1.0 - v_dot_h) ** 5
    return torch.stack([((1.0 - fc) * weight).mean(-1), (fc * weight).mean(-1)], dim=-1)


@functools.lru_cache(maxsize=8)
def _brdf_lut_cached(size: int, samples: int, device: str) -> torch.Tensor:
    centres = (torch.arange(size, dtype=torch.float64) + 0.5) / size
    n_dot_v, rough = torch.meshgrid(centres, centres, indexing="ij")
    lut = _lut_integrand(n_dot_v, rough**2, hammersley(samples))
    return lut.clamp(0.0, 1.0).float().to(device)


def brdf_lut(size: int = 64, samples: int = 256, device: torch.device | str = "cpu") -> torch.Tensor:
    """(size, size, 2) split-sum table: ``[i, j] = (A, B)`` at ``n·v = (i + 0.5) / size`` and roughness
    ``(j + 0.5) / size`` (α = roughness²), so that the specular albedo is ``F0 A + B``. Deterministic (Hammersley,
    computed in float64), cached per (size, samples, device); do not modify the returned tensor."""
    return _brdf_lut_cached(int(size), int(samples), str(torch.device(device)))


def lookup_brdf_lut(lut: torch.Tensor, n_dot_v: torch.Tensor, roughness: torch.Tensor) -> torch.Tensor:
    """Bilinear lookup (clamped at the texel centres of the borders) of (..., ) n·v and roughness -> (..., 2)."""
    shape = n_dot_v.shape
    grid = torch.stack([roughness.reshape(-1) * 2 - 1, n_dot_v.reshape(-1) * 2 - 1], dim=-1)  # x: W = roughness
    table = lut.permute(2, 0, 1).unsqueeze(0)  # (1, 2, n·v, roughness)
    out = F.grid_sample(table, grid.view(1, 1, -1, 2), mode="bilinear", padding_mode="border", align_corners=False)
    return out[0, :, 0].T.reshape(*shape, 2)


# ---------------------------------------------------------------------------------------------------------------
# Equirect maps in their own frame: texel (i, j) <-> direction q with latlong_uv(q) = ((j + .5)/W, (i + .5)/H)


def equirect_directions(
    height: int, width: int, *, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """(H, W, 3) unit directions of the texel centres, the exact inverse of ``latlong_uv``."""
    theta = (torch.arange(height, dtype=torch.float64) + 0.5) / height * math.pi
    phi = ((torch.arange(width, dtype=torch.float64) + 0.5) / width - 0.5) * 2.0 * math.pi
    t, p = torch.meshgrid(theta, phi, indexing="ij")
    dirs = torch.stack([torch.sin(t) * torch.sin(p), torch.cos(t), -torch.sin(t) * torch.cos(p)], dim=-1)
    return dirs.to(device=device, dtype=dtype)


def equirect_solid_angles(
    height: int, width: int, *, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """(H, 1) exact solid angle of one texel of each row (rows are bands of the sphere); sums to 4π over a map."""
    edges = torch.cos(torch.arange(height + 1, dtype=torch.float64) / height * math.pi)
    return ((edges[:-1] - edges[1:]) * 2.0 * math.pi / width).unsqueeze(-1).to(device=device, dtype=dtype)


def sample_equirect(image: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
    """Bilinear lookup of an (H, W, C) map (in its own frame) at (..., 3) directions; wrap in u, clamp in v."""
    return sample_latlong(image, latlong_uv(dirs), wrap_v=False)


def _sample_bilinear(image: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """``sample_latlong(image, uv, wrap_v=False)`` through ``grid_sample`` (about 6x faster; equal to ~1e-5):
    one wrapped column on each side gives the u wrap, border padding the v clamp."""
    w, c = image.shape[1:]
    padded = torch.cat([image[:, -1:], image, image[:, :1]], dim=1).permute(2, 0, 1).unsqueeze(0)
    u = uv[..., 0] - torch.floor(uv[..., 0])
    grid = torch.stack([(u * w + 1.0) / (w + 2) * 2.0 - 1.0, uv[..., 1] * 2.0 - 1.0], dim=-1)
    out = F.grid_sample(padded, grid.reshape(1, 1, -1, 2), mode="bilinear", padding_mode="border", align_corners=False)
    return out[0, :, 0].T.reshape(*uv.shape[:-1], c)


def _mip_chain(image: torch.Tensor) -> list[torch.Tensor]:
    """(H, W, C) -> [level 0, level 1, ...] by 2x2 box averaging down to one row."""
    mips = [image]
    while mips[-1].shape[0] > 1:
        h, w = mips[-1].shape[:2]
        x = mips[-1].permute(2, 0, 1).unsqueeze(0)
        mips.append(F.adaptive_avg_pool2d(x, (max(1, h // 2), max(1, w // 2)))[0].permute(1, 2, 0))
    return mips


def _sample_mip_level(mips: list[torch.Tensor], uv: torch.Tensor, level: float | torch.Tensor) -> torch.Tensor:
    """(..., S, 2) uv read at mip ``level`` (float, or (S,) one per sample, all with the same integer part)
    -> (..., S, C): trilinear, i.e. a lerp of the two neighbouring levels."""
    level_t = torch.as_tensor(level, dtype=uv.dtype, device=uv.device).clamp(0.0, len(mips) - 1)
    lo = int(level_t.min().floor())
    frac = (level_t - lo).unsqueeze(-1)
    out = _sample_bilinear(mips[lo], uv)
    if lo + 1 < len(mips) and bool((frac > 0).any()):
        out = torch.lerp(out, _sample_bilinear(mips[lo + 1], uv), frac)
    return out


def _tangent_frame(n: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two unit tangents (t, b) orthogonal to the (..., 3) unit normals n."""
    up = torch.zeros_like(n)
    polar = n[..., 1].abs() > 0.999
    up[..., 1] = torch.where(polar, 0.0, 1.0)
    up[..., 0] = torch.where(polar, 1.0, 0.0)
    t = F.normalize(torch.linalg.cross(up, n, dim=-1), dim=-1)
    return t, torch.linalg.cross(n, t, dim=-1)


# ---------------------------------------------------------------------------------------------------------------
# Prefiltering and irradiance


def lobe_samples(alpha: float, out_height: int, samples: int, minimum: int = 16) -> int:
    """Samples for one prefilter level: ``samples`` once the lobe (radius ~1.3 α) spans 4 output texels, fewer
    (at least ``minimum``) for narrower lobes, which read coarser mips instead (the same integral, less work)."""
    texels = 1.3 * alpha / (math.pi / out_height)
    return int(min(samples, max(minimum, math.ceil(samples * (texels / 4.0) ** 2))))


def _prefilter_level(
    mips: list[torch.Tensor], alpha: float, out_height: int, samples: int, chunk: int = 1 << 21
) -> torch.Tensor:
    """One GGX-prefiltered (out_height, 2 out_height, C) map of the level-0 map ``mips[0]``.

    n = v = r: half vectors around each output direction n, l = 2 (n·h) h - n, weight n·l (the usual split-sum
    choice). Filtered importance sampling (Křivánek & Colbert 2008): each sample reads the mip level whose texel
    matches its share of solid angle ``1 / (S pdf)``, ``pdf = D / 4``, so a few hundred samples do not alias;
    never finer than the output texel.
    """
    src_h = mips[0].shape[0]
    device, dtype = mips[0].device, mips[0].dtype
    dirs = equirect_directions(out_height, 2 * out_height, device=device, dtype=dtype).reshape(-1, 3)
    min_level = max(0.0, math.log2(src_h / out_height))
    if alpha <= 0.0:  # a mirror: the source, area-resampled to the output size
        return _sample_mip_level(mips, latlong_uv(dirs), min_level).reshape(out_height, 2 * out_height, -1)
    samples = lobe_samples(alpha, out_height, samples)
    h_local = importance_sample_ggx(hammersley(samples, device=device, dtype=dtype), alpha)  # (S, 3)
    texel_omega = (math.pi / src_h) ** 2  # angular height of a level-0 texel, squared (latitude-independent)
    pdf_l = ggx_ndf(h_local[:, 2], alpha) / 4.0  # pdf of l when n = v
    level = 0.5 * torch.log2(1.0 / (samples * pdf_l.clamp_min(1e-20) * texel_omega)) + 1.0
    level = level.clamp(min_level, len(mips) - 1)
    n_dot_l = 2.0 * h_local[:, 2] ** 2 - 1.0
    keep = n_dot_l > 0
    h_local, level, weight = h_local[keep], level[keep], n_dot_l[keep] / n_dot_l[keep].sum()
    t, b = _tangent_frame(dirs)  # (P, 3)
    out = torch.zeros(dirs.shape[0], mips[0].shape[-1], device=device, dtype=dtype)
    # samples that share a pair of mip levels are read together: two bilinear lookups each, no masking
    groups = level.floor()
    for g in groups.unique().tolist():
        sel = (groups == g).nonzero().squeeze(-1)
        for part in sel.split(max(1, chunk // dirs.shape[0])):
            hs = h_local[part]  # (S', 3) -> world half vectors (P, S', 3)
            h = t[:, None] * hs[:, 0, None] + b[:, None] * hs[:, 1, None] + dirs[:, None] * hs[:, 2, None]
            light = 2.0 * hs[:, 2, None] * h - dirs[:, None]  # l = 2 (n·h) h - n, n·h = hs_z
            radiance = _sample_mip_level(mips, latlong_uv(light), level[part])  # (P, S', C)
            out += (radiance * weight[part, None]).sum(1)
    return out.reshape(out_height, 2 * out_height, -1)


def prefilter_environment(
    hdr: torch.Tensor,
    roughness_levels: Sequence[float],
    out_height: int | Sequence[int] = 32,
    samples: int = 128,
) -> list[torch.Tensor]:
    """(H0, W0, C) equirect (in its own frame) -> one GGX-prefiltered (h, 2h, C) map per roughness (α = r²).

    ``out_height``: one height for every level or one per level. Roughness 0 is the map area-resampled to that
    size (identical when the sizes match).
    """
    heights = [out_height] * len(roughness_levels) if isinstance(out_height, int) else list(out_height)
    if len(heights) != len(roughness_levels):
        raise ValueError(f"{len(heights)} heights for {len(roughness_levels)} roughness levels")
    mips = _mip_chain(hdr.float())
    return [
        _prefilter_level(mips, float(r) ** 2, int(h), samples) for r, h in zip(roughness_levels, heights, strict=True)
    ]


# Real SH basis up to l = 2 and the cosine lobe's band factors Â_l = π, 2π/3, π/4 (Ramamoorthi & Hanrahan).
_SH_BAND = (0, 1, 1, 1, 2, 2, 2, 2, 2)
_COSINE_BAND = (math.pi, 2.0 * math.pi / 3.0, math.pi / 4.0)


_Y0 = 0.5 * math.sqrt(1.0 / math.pi)
_Y1 = math.sqrt(3.0 / (4.0 * math.pi))
_Y2 = 0.5 * math.sqrt(15.0 / math.pi)
_Y20 = 0.25 * math.sqrt(5.0 / math.pi)
_Y22 = 0.25 * math.sqrt(15.0 / math.pi)


def sh9_basis(dirs: torch.Tensor) -> torch.Tensor:
    """(..., 3) unit directions -> (..., 9) real spherical harmonics Y_00, Y_1{-1,0,1}, Y_2{-2..2}."""
    x, y, z = dirs.unbind(-1)
    return torch.stack(
        [
            torch.full_like(x, _Y0),
            _Y1 * y,
            _Y1 * z,
            _Y1 * x,
            _Y2 * x * y,
            _Y2 * y * z,
            _Y20 * (3.0 * z * z - 1.0),
            _Y2 * x * z,
            _Y22 * (x * x - y * y),
        ],
        dim=-1,
    )


def sh9_project(hdr: torch.Tensor) -> torch.Tensor:
    """(H0, W0, C) equirect (own frame) -> (9, C) SH coefficients ``∫ L Y dω`` (exact texel solid angles)."""
    h0, w0, _ = hdr.shape
    dirs = equirect_directions(h0, w0, device=hdr.device)
    weights = equirect_solid_angles(h0, w0, device=hdr.device)  # (H0, 1)
    basis = sh9_basis(dirs) * weights[..., None]  # (H0, W0, 9)
    return torch.einsum("hwk,hwc->kc", basis.double(), hdr.double()).float()


def sh9_irradiance(coeffs: torch.Tensor, normals: torch.Tensor) -> torch.Tensor:
    """(9, C) radiance SH, (..., 3) unit normals -> (..., C) ``E(n) / π`` (radiance of a white Lambertian), >= 0."""
    band = torch.tensor([_COSINE_BAND[b] / math.pi for b in _SH_BAND], device=coeffs.device, dtype=coeffs.dtype)
    return (sh9_basis(normals) @ (coeffs * band[:, None])).clamp_min(0.0)


def irradiance_map(hdr: torch.Tensor, out_height: int = 16) -> torch.Tensor:
    """(H0, W0, C) equirect -> (h, 2h, C) map of ``E(n) / π`` (cosine convolution by SH order 2), same frame."""
    dirs = equirect_directions(out_height, 2 * out_height, device=hdr.device)
    return sh9_irradiance(sh9_project(hdr.float()), dirs)


# ---------------------------------------------------------------------------------------------------------------
# Environment lookups in the camera frame


def _rotation(angle: float, device: torch.device | str | None) -> torch.Tensor:
    return rotate_y(float(angle)).to(device=device, dtype=torch.float32)


def env_radiance(
    hdr: torch.Tensor | np.ndarray,
    dirs: torch.Tensor,
    angle: float = 0.0,
    *,
    flip: bool = True,
    rot_deg: float = 180.0,
    strength: float = 1.0,
) -> torch.Tensor:
    """Radiance of the raw (H0, W0, 3) HDR panorama arriving from camera-frame (..., 3) directions ``d`` under a
    light rotation ``angle`` (radians about +y), in the official convention: ``prepared(latlong_uv(R_y(a) d))``.

    Equals ``project_envmap(hdr, ..., method="direct")`` at the pixels whose ``env_nrm`` is ``d``.
    """
    img = prepare_hdr(torch.as_tensor(hdr, device=dirs.device), strength=strength, flip=flip, rot_deg=rot_deg)
    return sample_equirect(img, dirs @ _rotation(angle, dirs.device).T)


@dataclass
class PrefilteredEnvironment:
    """An environment ready for split-sum shading, all maps in the frame of the prepared panorama.

    ``radiance``: (H0, W0, 3) prepared map (flip + roll applied); ``levels``: prefiltered maps, level k for
    roughness ``roughness_levels[k]`` (level 0 = ``radiance`` when roughness 0); ``sh``: (9, 3) radiance SH.
    Camera-frame directions are turned into this frame by ``R_y(angle)``.
    """

    radiance: torch.Tensor
    levels: list[torch.Tensor]
    roughness_levels: tuple[float, ...]
    sh: torch.Tensor

    def to_env_frame(self, dirs: torch.Tensor, angle: float) -> torch.Tensor:
        return dirs @ _rotation(angle, dirs.device).T

    def background(self, dirs: torch.Tensor, angle: float = 0.0) -> torch.Tensor:
        """(..., 3) camera-frame directions -> (..., 3) radiance (what a camera ray sees)."""
        return sample_equirect(self.radiance, self.to_env_frame(dirs, angle))

    def irradiance(self, normals: torch.Tensor, angle: float = 0.0) -> torch.Tensor:
        """(..., 3) camera-frame normals -> (..., 3) ``E(n) / π``."""
        return sh9_irradiance(self.sh, self.to_env_frame(normals, angle))

    def specular(self, dirs: torch.Tensor, roughness: torch.Tensor, angle: float = 0.0) -> torch.Tensor:
        """(..., 3) reflection directions, (...,) roughness -> (..., 3) prefiltered radiance (lerp in roughness)."""
        shape = dirs.shape[:-1]
        q = self.to_env_frame(dirs, angle).reshape(-1, 3)
        knots = torch.tensor(self.roughness_levels, device=dirs.device, dtype=dirs.dtype)
        r = roughness.reshape(-1).clamp(knots[0], knots[-1])
        # hat-function weight of every level (piecewise-linear interpolation in roughness)
        upper = torch.searchsorted(knots, r).clamp(1, len(knots) - 1) if len(knots) > 1 else None
        out = torch.zeros(q.shape[0], 3, device=dirs.device, dtype=dirs.dtype)
        for k, level in enumerate(self.levels):
            if upper is None:
                w = torch.ones_like(r)
            else:
                lo, hi = knots[upper - 1], knots[upper]
                t = ((r - lo) / (hi - lo).clamp_min(_EPS)).clamp(0.0, 1.0)
                w = torch.where(upper - 1 == k, 1.0 - t, torch.where(upper == k, t, torch.zeros_like(t)))
            sel = (w > 0).nonzero().squeeze(-1)
            if sel.numel():
                out.index_add_(0, sel, w[sel, None] * _sample_bilinear(level, latlong_uv(q[sel])))
        return out.reshape(*shape, 3)


def auto_level_heights(roughness_levels: Sequence[float], src_height: int, lo: int = 32, hi: int = 128) -> list[int]:
    """Per-level map height: about four texels across the lobe (width ~ α rad), a power of two in [lo, hi]."""
    heights = []
    for r in roughness_levels:
        alpha = max(float(r) ** 2, 1e-6)
        want = 2 ** round(math.log2(2.0 * math.pi / alpha))
        heights.append(int(min(src_height, hi, max(lo, want))))
    return heights


def prepare_environment(
    hdr: torch.Tensor | np.ndarray,
    *,
    roughness_levels: Sequence[float] = DEFAULT_ROUGHNESS_LEVELS,
    out_height: int | Sequence[int] | None = None,
    samples: int = 128,
    strength: float = 1.0,
    flip: bool = True,
    rot_deg: float = 180.0,
    device: torch.device | str | None = None,
) -> PrefilteredEnvironment:
    """Raw (H0, W0, 3) HDR panorama -> :class:`PrefilteredEnvironment` (official flip + roll, prefilter, SH).

    ``out_height=None`` sizes each level by :func:`auto_level_heights`. A roughness-0 level uses the full map.
    """
    levels_r = tuple(float(r) for r in roughness_levels)
    if not levels_r or list(levels_r) != sorted(levels_r):
        raise ValueError(f"roughness_levels must be non-empty and ascending, got {levels_r}")
    img = torch.as_tensor(hdr, device=device).float()
    if img.ndim != 3 or img.shape[-1] != 3:
        raise ValueError(f"expected an (H, W, 3) HDR environment map, got {tuple(img.shape)}")
    img = prepare_hdr(img, strength=strength, flip=flip, rot_deg=rot_deg)
    heights = auto_level_heights(levels_r, img.shape[0]) if out_height is None else out_height
    heights = [heights] * len(levels_r) if isinstance(heights, int) else list(heights)
    todo = [k for k, r in enumerate(levels_r) if r > 0]
    filtered = prefilter_environment(img, [levels_r[k] for k in todo], [heights[k] for k in todo], samples)
    levels = [img] * len(levels_r)
    for k, level in zip(todo, filtered, strict=True):
        levels[k] = level
    return PrefilteredEnvironment(img, levels, levels_r, sh9_project(img))


def uniform_environment(radiance: float = 1.0, device: torch.device | str | None = None) -> PrefilteredEnvironment:
    """A constant environment (every level and the irradiance equal ``radiance``): the furnace / neutral light."""
    img = torch.full((8, 16, 3), float(radiance), device=device)
    sh = torch.zeros(9, 3, device=device)
    sh[0] = float(radiance) * 4.0 * math.pi * _Y0  # exact: a coarse grid would leak a little into Y_20
    return PrefilteredEnvironment(img, [img], (0.0,), sh)


# ---------------------------------------------------------------------------------------------------------------
# Camera and shading


def camera_rays(
    height: int, width: int, fov_deg: float = DEFAULT_FOV_DEG, *, device: torch.device | str | None = None
) -> torch.Tensor:
    """(H, W, 3) unit rays from the camera through the pixel centres (identity pose, looking down -z, +y up).

    ``fov_deg``: vertical field of view; 0 gives an orthographic camera (every ray -z).
    """
    if not 0.0 <= fov_deg < 180.0:
        raise ValueError(f"fov_deg must be in [0, 180), got {fov_deg}")
    if fov_deg == 0:
        return torch.tensor([0.0, 0.0, -1.0], device=device).expand(height, width, 3).clone()
    tan = math.tan(math.radians(fov_deg) / 2.0)
    ys = (1.0 - 2.0 * (torch.arange(height, device=device) + 0.5) / height) * tan  # row 0 = top = +y
    xs = (2.0 * (torch.arange(width, device=device) + 0.5) / width - 1.0) * tan * width / height
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    return F.normalize(torch.stack([x, y, -torch.ones_like(x)], dim=-1), dim=-1)


def shade_splitsum(
    basecolor_linear: torch.Tensor,
    normal_cam: torch.Tensor,
    roughness: torch.Tensor,
    metallic: torch.Tensor,
    view_dirs: torch.Tensor,
    env: PrefilteredEnvironment,
    *,
    angle: float = 0.0,
    lut: torch.Tensor | None = None,
    diffuse: bool = True,
    specular: bool = True,
) -> torch.Tensor:
    """Split-sum IBL -> (..., 3) linear HDR radiance toward the camera.

    Args: basecolor_linear (..., 3) linear; normal_cam (..., 3) unit, camera frame; roughness, metallic (..., 1)
    in [0, 1]; view_dirs (..., 3) unit, surface -> camera; ``angle``: light rotation about +y (radians);
    ``diffuse`` / ``specular``: switch a lobe off (e.g. a pure-Lambert furnace test).
    """
    metallic = metallic.clamp(0.0, 1.0)
    roughness = roughness.clamp(0.0, 1.0)
    out = torch.zeros_like(basecolor_linear)
    if diffuse:
        out = out + basecolor_linear * (1.0 - metallic) * env.irradiance(normal_cam, angle)
    if specular:
        lut = brdf_lut(device=normal_cam.device) if lut is None else lut
        n_dot_v_raw = (normal_cam * view_dirs).sum(-1, keepdim=True)
        reflected = 2.0 * n_dot_v_raw * normal_cam - view_dirs
        n_dot_v = n_dot_v_raw.clamp(1e-4, 1.0)  # back-facing normals (estimation noise) shade as grazing
        scale_bias = lookup_brdf_lut(lut, n_dot_v[..., 0], roughness[..., 0])  # (..., 2)
        f0 = torch.lerp(torch.full_like(basecolor_linear, DIELECTRIC_F0), basecolor_linear, metallic)
        spec_albedo = f0 * scale_bias[..., :1] + scale_bias[..., 1:]
        out = out + spec_albedo * env.specular(reflected, roughness[..., 0], angle)
    return out


def complete_gbuffers(
    frames: Mapping[str, torch.Tensor], shape: tuple[int, int, int], device: torch.device | str
) -> dict[str, torch.Tensor]:
    """G-buffers {key: (T, h, w, C)} -> float32 on ``device``, the missing shading inputs set to
    ``GBUFFER_DEFAULTS`` (broadcast to ``shape`` = (T, h, w)) and the normals made unit."""
    out = {k: f.to(device, torch.float32) for k, f in frames.items()}
    for key, default in GBUFFER_DEFAULTS.items():
        if key not in out:
            out[key] = torch.tensor(default, device=device).expand(*shape, len(default))
    out["normal"] = _unit_normals(out["normal"])
    return out


def shade_gbuffer_frame(
    frames: Mapping[str, torch.Tensor],
    t: int,
    rays: torch.Tensor,
    env: PrefilteredEnvironment,
    *,
    lut: torch.Tensor,
    angle: float = 0.0,
    specular: bool = True,
) -> torch.Tensor:
    """Frame ``t`` of prepared G-buffers {key: (T, h, w, C)} (basecolor sRGB) seen along the camera's (h, w, 3)
    ``rays`` -> (h, w, 3) linear radiance."""
    return shade_splitsum(
        srgb_to_linear(frames["basecolor"][t]),
        frames["normal"][t],
        frames["roughness"][t],
        frames["metallic"][t],
        -rays,
        env,
        angle=angle,
        lut=lut,
        specular=specular,
    )


# ---------------------------------------------------------------------------------------------------------------
# Renderer with the forward pipeline's call


class SplitSumRenderer:
    """Split-sum IBL baseline that stands in for :class:`ForwardRenderingPipeline` (same call, same output).

    ``envmap=None`` (the neural model's random lighting) renders under a uniform white environment of
    radiance 1. Options that only matter for the neural model are accepted and ignored; frames are rendered at the
    G-buffers' own size.
    """

    role = "forward"

    def __init__(
        self,
        device: torch.device | str = "cpu",
        *,
        roughness_levels: Sequence[float] = DEFAULT_ROUGHNESS_LEVELS,
        prefilter_height: int | None = None,
        prefilter_samples: int = 128,
        lut_size: int = 64,
        lut_samples: int = 512,
        tonemap: str = "clamp",
        exposure: float = 1.0,
        background: str = "env",
    ) -> None:
        if tonemap not in TONEMAPS:
            raise ValueError(f"tonemap must be one of {TONEMAPS}, got {tonemap!r}")
        if background not in BACKGROUNDS:
            raise ValueError(f"background must be one of {BACKGROUNDS}, got {background!r}")
        self.device = torch.device(device)
        self.roughness_levels = tuple(roughness_levels)
        self.prefilter_height = prefilter_height
        self.prefilter_samples = prefilter_samples
        self.lut_size, self.lut_samples = lut_size, lut_samples
        self.tonemap, self.exposure, self.background = tonemap, exposure, background

    # ------------------------------------------------------------------ pipeline stand-in

    def to(self, device: torch.device | str) -> SplitSumRenderer:
        self.device = torch.device(device)
        return self

    @property
    def _execution_device(self) -> torch.device:
        return self.device

    def set_progress_bar_config(self, **kwargs) -> None:
        """No-op (nothing iterates long enough for a progress bar)."""

    def maybe_free_model_hooks(self) -> None:
        """No-op (no model)."""

    # ----------------------------------------------------------------------------- inputs

    def prepare_gbuffers(self, gbuffers: Mapping[str, object], fixed_frame: int | None) -> dict[str, torch.Tensor]:
        """-> {basecolor, normal, roughness, metallic[, depth][, mask]: (T, h, w, C) float32 on the device}."""
        unknown = sorted(set(gbuffers) - {*GBUFFER_KEYS, MASK_KEY})
        if unknown:
            raise ValueError(f"unknown G-buffer keys {unknown} (known: {', '.join(GBUFFER_KEYS)}, {MASK_KEY})")
        channels_first, (count, height, width) = collect_gbuffers(gbuffers, fixed_frame)
        frames = {k: f.permute(0, 2, 3, 1) for k, f in channels_first.items()}  # (T, h, w, C)
        return complete_gbuffers(frames, (count, height, width), self.device)

    def foreground_mask(
        self, mask: object, frames: Mapping[str, torch.Tensor], depth_threshold: float
    ) -> torch.Tensor | None:
        """(T, h, w, 1) bool foreground, or None (everything is foreground).

        ``mask``: None (use ``gbuffers["mask"]`` if given), an array / tensor (> 0.5 = foreground; (h, w),
        (T, h, w) or (T, h, w, 1)), or ``"depth"``: background where depth >= ``depth_threshold`` (relative depth
        in [-1, 1] with +1 the far end, where a Marigold-style normalisation clips the sky).
        """
        count, height, width = frames["normal"].shape[:3]
        if mask is None:
            return frames[MASK_KEY] > 0.5 if MASK_KEY in frames else None
        if isinstance(mask, str):
            if mask != "depth":
                raise ValueError(f"mask must be an array, None or 'depth', got {mask!r}")
            if "depth" not in frames:
                raise ValueError("mask='depth' needs a depth G-buffer")
            return frames["depth"] < depth_threshold
        m = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask, device=self.device)
        m = m.float()
        if m.ndim == 4 and m.shape[-1] != 1:
            m = m.mean(-1, keepdim=True)
        m = m.reshape(-1, height, width, 1) if m.ndim >= 2 else m
        if m.ndim != 4 or m.shape[0] not in (1, count):
            raise ValueError(f"mask of shape {tuple(np.shape(mask))} does not match {count}x{height}x{width}")
        return (m > 0.5).expand(count, -1, -1, -1)

    def prepare_lighting(self, envmap: object) -> PrefilteredEnvironment:
        if envmap is None:
            return uniform_environment(1.0, device=self.device)  # neutral stand-in for "random lighting"
        if isinstance(envmap, PrefilteredEnvironment):
            return envmap
        if isinstance(envmap, EnvironmentConditions):
            raise TypeError("the split-sum baseline needs the HDR environment map, not its LDR/log encodings")
        return prepare_environment(
            envmap,
            roughness_levels=self.roughness_levels,
            out_height=self.prefilter_height,
            samples=self.prefilter_samples,
            device=self.device,
        )

    # ---------------------------------------------------------------------------- render

    @torch.no_grad()
    def render_hdr(
        self,
        frames: Mapping[str, torch.Tensor],
        env: PrefilteredEnvironment,
        angles: torch.Tensor,
        *,
        fov_deg: float = DEFAULT_FOV_DEG,
        foreground: torch.Tensor | None = None,
        background: str = "env",
        specular: bool = True,
    ) -> torch.Tensor:
        """Prepared G-buffers (T, h, w, C) under one environment -> (T, h, w, 3) linear HDR radiance."""
        count, height, width = frames["normal"].shape[:3]
        rays = camera_rays(height, width, fov_deg, device=self.device)  # (h, w, 3)
        lut = brdf_lut(self.lut_size, self.lut_samples, device=self.device)
        out = []
        for t in range(count):
            angle = float(angles[t])
            color = shade_gbuffer_frame(frames, t, rays, env, lut=lut, angle=angle, specular=specular)
            if foreground is not None:
                behind = env.background(rays, angle) if background == "env" else torch.zeros_like(color)
                color = torch.where(foreground[t], color, behind)
            out.append(color)
        return torch.stack(out)

    @torch.no_grad()
    def __call__(
        self,
        gbuffers: Mapping[str, object],
        envmap: object = None,
        *,
        rotate_light: bool = False,
        light_angle: float = 0.0,
        fixed_frame: int | None = None,
        fov_deg: float = DEFAULT_FOV_DEG,
        mask: object = None,
        depth_threshold: float = 0.999,
        background: str | None = None,
        tonemap: str | None = None,
        exposure: float | None = None,
        specular: bool = True,
        output_type: str = "np",
        return_dict: bool = True,
        **ignored,
    ) -> ForwardRenderingOutput | tuple:
        """Render G-buffers under each lighting, as ``ForwardRenderingPipeline.__call__``.

        Args:
            gbuffers: {basecolor, normal, depth, roughness, metallic[, mask]} -> (T, h, w, C) frames in the
                conventions' ranges (or anything the neural pipeline accepts); missing ones default to grey 0.5
                basecolor, normals facing the camera, roughness 0.5, metallic 0.
            envmap: a raw (H0, W0, 3) linear HDR equirect, ``None`` (uniform white, radiance 1), or a list.
            rotate_light / light_angle: per-frame rotation ``rotation_angles(T, rotate_light, light_angle)``.
            fov_deg: vertical field of view of the assumed pinhole camera (0 = orthographic).
            mask / depth_threshold / background: see :meth:`foreground_mask`; background pixels show the
                environment through the camera (``"env"``) or black.
            tonemap / exposure: display transform (defaults from the constructor), then sRGB.
            output_type: ``"np"`` (T, h, w, 3) arrays or ``"pt"`` (T, 3, h, w) tensors, in [0, 1].
            ignored: the neural model's options (num_inference_steps, generator, ...), without effect.
        """
        background = background or self.background
        tonemap = tonemap or self.tonemap
        exposure = self.exposure if exposure is None else exposure
        if background not in BACKGROUNDS:
            raise ValueError(f"background must be one of {BACKGROUNDS}, got {background!r}")
        if output_type not in ("np", "pt"):
            raise ValueError(f"output_type must be 'np' or 'pt', got {output_type!r}")
        frames = self.prepare_gbuffers(gbuffers, fixed_frame)
        foreground = self.foreground_mask(mask, frames, depth_threshold)
        angles = rotation_angles(frames["normal"].shape[0], rotate_light, light_angle)
        lightings = list(envmap) if isinstance(envmap, (list, tuple)) else [envmap]
        images = []
        for lighting in lightings:
            env = self.prepare_lighting(lighting)
            linear = self.render_hdr(
                frames,
                env,
                angles,
                fov_deg=fov_deg,
                foreground=foreground,
                background=background,
                specular=specular,
            )
            display = tonemap_to_display(linear, tonemap, exposure)  # (T, h, w, 3)
            images.append(display.permute(0, 3, 1, 2) if output_type == "pt" else display.cpu().numpy())
        if not return_dict:
            return images, None
        return ForwardRenderingOutput(images=images, latents=None)


def _unit_normals(normal: torch.Tensor) -> torch.Tensor:
    """Normalise (..., 3) normals; zero vectors (background in many G-buffers) face the camera."""
    length = normal.norm(dim=-1, keepdim=True)
    facing = torch.tensor([0.0, 0.0, 1.0], device=normal.device).expand_as(normal)
    return torch.where(length > 1e-6, normal / length.clamp_min(1e-6), facing)
