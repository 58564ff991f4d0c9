"""Path-trace a :class:`~diffusion_renderer.data.scenes.SceneSpec` with Mitsuba 3 and read back exact G-buffers.

Outputs (:class:`ClipBuffers`, all numpy float32, frames first):

* ``rgb_linear``: linear HDR radiance, Mitsuba ``path`` integrator (principled BSDF, ``max_depth`` bounces,
  MIS with the environment, shadows), box pixel filter (each pixel integrates exactly its own footprint),
  ``multijitter`` sampler (5 dB less noise than ``independent`` at equal spp; Mitsuba rounds a sample count up
  to a product a x b, so perfect squares such as 256 are kept exactly), sampler seed ``seed * 1000 + t``.
* G-buffers from **one primary ray through each pixel centre** (no jitter, no averaging: values stay exact,
  the mask stays binary and depth never mixes two surfaces at a silhouette):

  - ``basecolor``: the principled BSDF's ``base_color`` evaluated at the hit (linear reflectance) -> sRGB.
  - ``normal``: the shading normal rotated into the camera frame (OpenGL: +x right, +y up, +z toward the
    camera). It is flipped when the geometric normal faces away from the camera, and at the silhouettes of
    smooth meshes, where the interpolated normal can point slightly away, bent to be just front-facing.
    With a normal map it is the **perturbed** normal the material uses, computed as Mitsuba's ``normalmap``
    plugin does: rgb = the normal-map texture at the hit (same bitmap, uv transform and bilinear filter),
    ``n = normalize((2 rgb - 1) in the hit's sh_frame (s, t, n))`` (the plugin's s axis is rebuilt from
    ``dp_du`` but its normal does not depend on it); then flipped/bent as above (tilted normals near grazing
    angles get bent, so they are front-facing but no longer exactly the material's normal). ``basecolor``,
    ``roughness`` and ``metallic`` come from the wrapped principled BSDF (``normalmap`` does not forward
    ``eval_attribute``).
  - ``depth``: planar camera z = ``dot(p - camera_origin, camera_forward)`` in metres, > 0 on surfaces and
    **0 on the background** (``conventions.normalize_depth(z, mask)`` ignores it).
  - ``roughness``, ``metallic``: the BSDF attributes at the hit; ``mask``: 1 where the ray hits a surface.

Camera: ``c2w`` is OpenGL; Mitsuba's sensor looks along its local +z with local +x to the image's left, so the
sensor's ``to_world`` is ``c2w @ diag(-1, 1, -1, 1)`` (a rotation by 180° about y: a proper rotation).

Environment orientation (tested in ``tests/test_data_engine.py``)
-------------------------------------------------------------------
The package convention (``lighting/envmap.py``): in the forward renderer's environment condition, the pixel whose
``env_nrm`` is the camera-frame direction d holds ``P(latlong_uv(rotate_y(a) @ c2w @ d))``, P = ``prepare_hdr(hdr,
strength=intensity)`` (the width flip + 180° roll), bilinear with wrap in u and clamp in v. Mitsuba's ``envmap``
returns, for a ray leaving along world direction w, ``B(u_m, v_m)`` with ``(u_m, v_m) = (atan2(x, -z) / 2π,
acos(y) / π)`` of ``M⁻¹ w`` (M = ``to_world``), texel centres at ``((j + ½) / W, k / (H_B - 1))``. Writing
``latlong_uv(rotate_y(β) w).u = latlong_uv(w).u - β / 2π``, the two agree when

* ``to_world = M = rotate_y(-(a + π))`` (package ``rotate_y`` matrix; the extra half turn absorbs the 0.5 offset
  between the package's ``u`` and Mitsuba's), and
* the bitmap B is P resampled at Mitsuba's rows: ``2 H + 1`` rows at ``v = k / 2H``. That row grid contains
  every row centre of P, and P's bilinear interpolant is linear in v between them, so Mitsuba's own bilinear
  lookup reproduces P's **exactly** (u needs no resampling: the texel centres coincide).

With the camera-frame direction d entering as ``w = c2w[:3, :3] @ d``, Mitsuba's radiance toward d equals the
package's value for d to float32 rounding. So the environment conditions of a stored clip are recomputed with
``project_envmap(read_environment(spec), H, W, radians(env_rotation_deg), strength=intensity,
c2w=c2w[:, :3, :3])`` (:func:`environment_hdr`; :func:`read_environment` is the map file mirrored and tinted as
the spec's ``mirror`` and ``kelvin`` say, and the renderer's bitmap is made from it too), and ``c2w=None`` gives
the official camera-fixed conditions only for an identity camera rotation. Note: relative to Mitsuba's native
reading of the same .hdr file (the ``filename`` parameter, no transform) the package's (official) convention is
mirrored left-right and turned; this module follows the package.

Sun and sky
-----------
``LightingSpec.kind == "sunsky"``: :func:`bake_sunsky` evaluates Mitsuba's ``sunsky`` emitter (whose zenith is
its local +z; the package world is +y up) at the world direction of every texel centre of a 256 x 512 env-map
*file* (:func:`file_directions`: the texel whose ``prepare_hdr``-ed position has ``latlong_uv`` = its centre),
with the sun switched off; the sun's radiance is integrated over its disc and that power spread over a
Gaussian of sigma 1 texel around the sun direction (power preserved, peak far below 65504: about 1.4e3 at 30°
elevation). :func:`read_environment` returns this map, so rendering (``envmap`` emitter, bitmap of
:func:`envmap_bitmap_array`) and :func:`environment_hdr` treat it exactly like an HDRI file. Light rotation turns
the sky with the sun. The sky below the horizon is black (the ground plane hides it).

Sample count
------------
``scenes.DEFAULT_SPP`` = 256. :func:`noise_psnr` (two sampler seeds, PSNR on ``srgb(clamp(x, 0, 1))``; one render
against the converged image is about 3 dB better) measured at 256² on six sampled scenes: 48.3, 43.5, 44.4,
53.1, 43.1 dB, and 27.4 dB for a sunny_vondelpark scene whose near-mirror torus and glossy ground throw sun
caustics: with such fireflies the figure does not improve with more samples (27.4 dB at 64 spp as well), a
limit of unidirectional path tracing with a 65504-radiance sun. 128 spp would give about 3 dB less (two of the
six scenes just under 40 dB).
Speed at 256², 256 spp, max_depth 6, G-buffers included (``benchmarks/data_engine.py``): 0.16 frames/s on the
2-core CPU (llvm_ad_rgb); on an H100 (cuda_ad_rgb) 1.1 frames/s for 1-frame scenes and 8.2 / 11.5 frames/s for
8 / 24-frame clips, whose scene is built once (:class:`ClipScene`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffusion_renderer.conventions import linear_to_srgb, srgb_to_linear
from diffusion_renderer.data.scenes import (
    AREA_ROW,
    GROUND_HALF_SIZE,
    LOBE_ROW,
    SKY_ROW,
    STREET_ROW,
    LightingSpec,
    MaterialSpec,
    ObjectSpec,
    SceneSpec,
    gaussian_lobe_solid_angle,
    light_direction,
    make_normal_map,
    make_texture,
    object_mesh,
    superellipse_radius,
    superellipse_solid_angle,
)
from diffusion_renderer.data.shards import display_rgb
from diffusion_renderer.lighting.envmap import HDR_MAX, prepare_hdr, project_envmap, rotate_y, sample_latlong
from diffusion_renderer.render.splitsum import equirect_solid_angles

CPU_VARIANT = "llvm_ad_rgb"
GPU_VARIANT = "cuda_ad_rgb"
OPENGL_TO_MITSUBA = np.diag([-1.0, 1.0, -1.0, 1.0])  # camera-local axis change (180° about y)
_INSTALL_HINT = (
    "install Mitsuba 3 (`pip install mitsuba`) and, for llvm_ad_* on CPU, LLVM >= 19 (`apt-get install libllvm19`)"
)


@dataclass
class ClipBuffers:
    """Rendered clip, numpy float32 unless noted, T frames of H x W (see the module docstring)."""

    rgb_linear: np.ndarray  # (T, H, W, 3) linear HDR radiance
    basecolor: np.ndarray  # (T, H, W, 3) sRGB [0, 1]; 0 on background
    normal: np.ndarray  # (T, H, W, 3) camera-space OpenGL unit vectors; 0 on background
    depth: np.ndarray  # (T, H, W, 1) planar camera z > 0; 0 on background
    roughness: np.ndarray  # (T, H, W, 1) [0, 1]; 0 on background
    metallic: np.ndarray  # (T, H, W, 1) [0, 1]; 0 on background
    mask: np.ndarray  # (T, H, W, 1) {0, 1}
    env_rotation_deg: np.ndarray  # (T,) float64 light rotation about +y (``rotations`` of project_envmap, in deg)
    c2w: np.ndarray  # (T, 4, 4) float64 OpenGL camera-to-world


# ---------------------------------------------------------------------------------------------------------------
# Variant


def _import_mitsuba() -> Any:
    try:
        import mitsuba as mi
    except ImportError as err:
        raise RuntimeError(f"Mitsuba is not installed: {_INSTALL_HINT}") from err
    return mi


@functools.lru_cache(maxsize=1)
def _auto_variant() -> str:
    mi = _import_mitsuba()
    if GPU_VARIANT in mi.variants():
        try:
            mi.set_variant(GPU_VARIANT)
            return GPU_VARIANT
        except Exception:  # no CUDA driver / GPU: fall back to the CPU variant
            pass
    return CPU_VARIANT


def load_mitsuba(variant: str = CPU_VARIANT) -> Any:
    """The ``mitsuba`` module with ``variant`` active (``"auto"``: cuda_ad_rgb if usable, else llvm_ad_rgb).

    The variant is switched only when it differs from the active one, so repeated calls are free. Raises
    RuntimeError with an install hint when Mitsuba or the variant's backend cannot be loaded.
    """
    mi = _import_mitsuba()
    name = _auto_variant() if variant == "auto" else variant
    if mi.variant() != name:
        try:
            mi.set_variant(name)
        except Exception as err:  # ImportError / RuntimeError from drjit when the JIT backend is missing
            raise RuntimeError(f"cannot load Mitsuba variant {name!r} ({err}); {_INSTALL_HINT}") from None
    return mi


# ---------------------------------------------------------------------------------------------------------------
# Transforms and rays (numpy; no Mitsuba needed)


def envmap_to_world(rotation_deg: float) -> np.ndarray:
    """(4, 4) ``to_world`` of Mitsuba's envmap for light rotation ``a`` (deg): ``rotate_y(-(a + 180°))``."""
    m = np.eye(4)
    m[:3, :3] = rotate_y(-math.radians(rotation_deg + 180.0)).numpy()
    return m


def sensor_to_world(c2w: np.ndarray) -> np.ndarray:
    """(4, 4) ``to_world`` of Mitsuba's perspective sensor for an OpenGL camera-to-world matrix."""
    return np.asarray(c2w, dtype=np.float64) @ OPENGL_TO_MITSUBA


def camera_directions(height: int, width: int, fov_deg: float) -> np.ndarray:
    """(H, W, 3) float64 unit directions through the pixel centres, camera frame (OpenGL; vertical fov)."""
    tan_y = math.tan(math.radians(fov_deg) / 2)
    tan_x = tan_y * width / height
    x = ((np.arange(width) + 0.5) / width * 2 - 1) * tan_x
    y = (1 - (np.arange(height) + 0.5) / height * 2) * tan_y
    d = np.stack(np.broadcast_arrays(x[None, :], y[:, None], -np.ones((1, 1))), -1)
    return d / np.linalg.norm(d, axis=-1, keepdims=True)


def envmap_bitmap_array(hdr: np.ndarray, intensity: float = 1.0) -> np.ndarray:
    """(2 H + 1, W, 3) float32 bitmap for Mitsuba's envmap: ``prepare_hdr(hdr)`` resampled at rows ``v = k / 2H``.

    See the module docstring: with this bitmap and :func:`envmap_to_world`, Mitsuba's bilinear lookup equals the
    package's ``sample_latlong(prepare_hdr(hdr), ..., wrap_v=False)``.
    """
    prepared = prepare_hdr(torch.as_tensor(hdr, dtype=torch.float32), strength=intensity).double()  # (H, W, 3)
    h, w = prepared.shape[:2]
    u = (torch.arange(w, dtype=torch.float64) + 0.5) / w
    v = torch.arange(2 * h + 1, dtype=torch.float64) / (2 * h)
    uv = torch.stack(torch.meshgrid(u, v, indexing="xy"), dim=-1)  # (2H+1, W, 2)
    return sample_latlong(prepared, uv, wrap_v=False).float().numpy()


SKY_BAKE_SIZE = (256, 512)  # (H, W) of the baked sun-sky equirect map
SUN_BLUR_TEXELS = 1.0  # Gaussian sigma of the baked sun, in texel heights (pi / H)
_WORLD_TO_SUNSKY = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])  # y-up world -> z-up sky frame


def file_directions(height: int, width: int) -> np.ndarray:
    """(H, W, 3) float64 world direction of every texel of an env-map *file* F at light rotation 0.

    ``prepare_hdr(F)`` = P (width flip + half-turn roll) has texel (i, j) centred at ``latlong_uv`` =
    ``((j + ½) / W, (i + ½) / H)``, i.e. at direction ``(sinθ sinφ, cosθ, -sinθ cosφ)`` with θ = π v,
    φ = 2π (u - ½); F's column j is P's column ``(W - 1 - j + W / 2) mod W`` (W even).
    """
    theta = np.pi * (np.arange(height) + 0.5) / height
    phi = 2 * np.pi * ((np.arange(width) + 0.5) / width - 0.5)
    st = np.sin(theta)[:, None]
    d = np.stack(np.broadcast_arrays(st * np.sin(phi), np.cos(theta)[:, None], -st * np.cos(phi)), -1)
    return np.roll(d, -(width // 2), axis=1)[:, ::-1]  # P -> F: F = flip(roll(P, -W / 2))


def _eval_emitter(mi: Any, emitter: Any, dirs: np.ndarray) -> np.ndarray:
    """(N, 3) radiance arriving from world-frame unit directions ``dirs`` (N, 3) (a ray leaving along d)."""
    import drjit as dr

    si = dr.zeros(mi.SurfaceInteraction3f, len(dirs))
    si.wi = mi.Vector3f(*(-dirs[:, k].astype(np.float32) for k in range(3)))
    return np.array(emitter.eval(si), dtype=np.float64).T.reshape(len(dirs), 3)


@functools.lru_cache(maxsize=8)
def _bake_sunsky_cached(
    elevation_deg: float, azimuth_deg: float, turbidity: float, albedo: float, height: int, width: int
) -> np.ndarray:
    mi = load_mitsuba(mi_variant_for_baking())
    sun = light_direction(azimuth_deg, elevation_deg)
    local = _WORLD_TO_SUNSKY  # world -> the emitter's frame (its zenith is local +z)
    params = {"type": "sunsky", "sun_direction": (local @ sun).tolist(), "turbidity": turbidity, "albedo": albedo}
    sky = mi.load_dict({**params, "sun_scale": 0.0})
    sun_only = mi.load_dict({**params, "sky_scale": 0.0})
    dirs = file_directions(height, width)  # (H, W, 3) world
    flat = dirs.reshape(-1, 3)
    out = _eval_emitter(mi, sky, flat @ local.T)  # sky (with its circumsolar glow) at the texel centres
    # The sun: integrate its disc on a fine tangent-plane grid (half-width 0.4°, the disc is 0.53° wide) ...
    tan = math.tan(math.radians(0.4))
    g = (np.arange(64) + 0.5) / 64 * 2 * tan - tan
    gx, gy = np.meshgrid(g, g, indexing="ij")
    t1 = np.cross(sun, [0.0, 1.0, 0.0] if abs(sun[1]) < 0.99 else [1.0, 0.0, 0.0])
    t1 /= np.linalg.norm(t1)
    t2 = np.cross(sun, t1)
    rays = sun[None] + gx.reshape(-1, 1) * t1 + gy.reshape(-1, 1) * t2
    norm = np.linalg.norm(rays, axis=-1, keepdims=True)
    d_omega = (2 * tan / 64) ** 2 / norm[:, 0] ** 3  # solid angle of a tangent-plane cell
    power = (_eval_emitter(mi, sun_only, (rays / norm) @ local.T) * d_omega[:, None]).sum(0)  # (3,) irradiance
    # ... and spread that power over a small Gaussian blob of texels around the sun direction.
    texel_omega = (2 * np.pi / width) * (np.pi / height) * np.sin(np.arccos(np.clip(dirs[..., 1], -1, 1)))
    angle = np.arccos(np.clip(flat @ sun, -1.0, 1.0))
    sigma = SUN_BLUR_TEXELS * np.pi / height
    while True:
        weight = np.where(angle < 4 * sigma, np.exp(-0.5 * (angle / sigma) ** 2), 0.0)
        blob = weight[:, None] * power[None] / (weight * texel_omega.reshape(-1)).sum()
        if (out + blob).max() <= HDR_MAX / 2.0:  # headroom for intensity <= 2 under prepare_hdr's clamp
            break
        sigma *= 1.25
    return (out + blob).reshape(height, width, 3).astype(np.float32)


def mi_variant_for_baking() -> str:
    """Variant used to bake the sky: the active one if Mitsuba already has one (scalar or JIT), else llvm_ad_rgb."""
    mi = _import_mitsuba()
    return mi.variant() or CPU_VARIANT


def bake_sunsky(lighting: LightingSpec, height: int = SKY_BAKE_SIZE[0], width: int = SKY_BAKE_SIZE[1]) -> np.ndarray:
    """(H, W, 3) float32 equirect HDR *file* of a sun-sky ``LightingSpec`` (package convention, rotation 0).

    Sky: Mitsuba's ``sunsky`` emitter (sun switched off) evaluated at the world direction of every texel centre
    (:func:`file_directions`), so ``prepare_hdr`` + ``latlong_uv`` lookups see the sky where Mitsuba puts it.
    Sun: its disc (0.53°) is far smaller than a texel (0.7° at 256 x 512), so its radiance is integrated over
    the disc and that power is spread over a Gaussian blob of sigma ``SUN_BLUR_TEXELS`` texels centred on the sun
    direction (widened only if its peak would exceed 65504 / 2): the total sun power is preserved, the sun is
    slightly softer than the real one (a blurred, not clamped, sun). Deterministic; cached per sky.
    """
    return _bake_sunsky_cached(
        float(lighting.sun_elevation_deg),
        float(lighting.sun_azimuth_deg),
        float(lighting.turbidity),
        float(lighting.sky_albedo),
        int(height),
        int(width),
    ).copy()


def bake_procedural(
    lighting: LightingSpec, height: int = SKY_BAKE_SIZE[0], width: int = SKY_BAKE_SIZE[1]
) -> np.ndarray:
    """(H, W, 3) float32 equirect HDR *file* of a procedural ``LightingSpec`` (package convention, rotation 0).

    Radiance toward world direction d (the texel's, :func:`file_directions`): the sky-to-ground gradient
    ``lerp(ground, zenith, (d_y + 1) / 2)``, a lit street's radiance below the horizon if the sky row has one
    (``scenes.lit_street``), plus each light's: a Gaussian lobe ``colour * exp(-angle(d, light)² / 2 sigma²)`` or
    an area light, ``colour`` inside its superellipse (:func:`area_light_mask`). Light i sits at ``(cos e sin a,
    sin e, cos e cos a)``, the sun-sky convention. Each light's texels are scaled so that they hold its exact power
    (``scenes.gaussian_lobe_solid_angle``, ``scenes.superellipse_solid_angle``): a lamp narrower than a texel would
    otherwise gain or lose power by where it falls between texel centres (wide ones move by < 1 %).
    """
    if not lighting.procedural:
        raise ValueError("a procedural light without its sky and lights")
    d = file_directions(height, width)  # (H, W, 3)
    texel_sr = equirect_solid_angles(height, width, dtype=torch.float64).numpy()  # (H, 1)
    sky = np.asarray(lighting.procedural[0], dtype=np.float64)
    if len(sky) not in (SKY_ROW, STREET_ROW):
        raise ValueError(
            f"a procedural sky row of {len(sky)} values (skies have {SKY_ROW}, with a street {STREET_ROW})"
        )
    t = (d[..., 1:2] + 1) / 2
    hdr = sky[3:6] * (1 - t) + sky[:3] * t
    if len(sky) == STREET_ROW:  # a lit street: its radiance on every texel below the horizon (``scenes.lit_street``)
        hdr = hdr + sky[6:] * (d[..., 1:2] < 0)
    for row in lighting.procedural[1:]:
        if len(row) == LOBE_ROW:
            azimuth, elevation, sigma, *colour = row
            angle = np.arccos(np.clip(d @ light_direction(azimuth, elevation), -1.0, 1.0))
            shape = np.exp(-0.5 * (angle / math.radians(sigma)) ** 2)  # (H, W)
            solid_angle = gaussian_lobe_solid_angle(math.radians(sigma))
        elif len(row) == AREA_ROW:
            *geometry, r, g, b = row
            colour = [r, g, b]
            shape = area_light_mask(d, *geometry, texel_rad=math.pi / height)
            solid_angle = superellipse_solid_angle(*geometry[2:5])
        else:
            raise ValueError(f"a procedural light row of {len(row)} values (lobes have {LOBE_ROW}, areas {AREA_ROW})")
        shape *= solid_angle / max(float((shape * texel_sr).sum()), 1e-30)
        hdr = hdr + shape[..., None] * np.asarray(colour)
    return np.minimum(hdr, HDR_MAX).astype(np.float32)


def area_light_mask(
    d: np.ndarray,
    azimuth_deg: float,
    elevation_deg: float,
    half_width_deg: float,
    half_height_deg: float,
    roll_deg: float,
    exponent: float,
    texel_rad: float,
) -> np.ndarray:
    """(...) coverage in [0, 1] of directions d (..., 3) by an area light: the superellipse of
    ``scenes.superellipse_solid_angle`` about the light's axis, its width along the horizontal tangent turned by
    ``roll_deg``. The edge ramps over one texel (``texel_rad``) so that a sharp edge does not alias."""
    axis = light_direction(azimuth_deg, elevation_deg)
    horizontal = np.cross(np.array([0.0, 1.0, 0.0]), axis)
    if np.linalg.norm(horizontal) < 1e-9:  # a light at the zenith or nadir: any tangent is horizontal
        horizontal = np.array([1.0, 0.0, 0.0])
    horizontal /= np.linalg.norm(horizontal)
    vertical = np.cross(axis, horizontal)
    roll = math.radians(roll_deg)
    u = math.cos(roll) * horizontal + math.sin(roll) * vertical
    v = np.cross(axis, u)
    theta = np.arccos(np.clip(d @ axis, -1.0, 1.0))  # angle from the axis
    phi = np.arctan2(d @ v, d @ u)
    edge = superellipse_radius(phi, math.radians(half_width_deg), math.radians(half_height_deg), exponent)
    return np.clip(0.5 + (edge - theta) / texel_rad, 0.0, 1.0)


def read_environment(spec: SceneSpec) -> np.ndarray:
    """(H0, W0, 3) float32 HDR of the clip: ``lighting.path``, else the bundled preset ``lighting.name``, mirrored
    and white-balanced as the spec says (``LightingSpec.mirror``, ``kelvin``).

    The fallback keeps stored specs usable after the package (and so the preset files) moved. Sun-sky lighting
    returns its baked equirect map (:func:`bake_sunsky`), which then stands for the HDRI everywhere. The render
    and the conditions both read the map here, so they see the same light.
    """
    lighting = spec.lighting
    if lighting.kind == "sunsky":
        hdr = bake_sunsky(lighting)
    elif lighting.kind == "procedural":
        hdr = bake_procedural(lighting)
    elif lighting.kind == "hdri":
        from diffusion_renderer.io.hdr import read_hdr
        from diffusion_renderer.lighting.presets import list_presets, preset_path

        path = Path(lighting.path)
        if not path.is_file() and lighting.name in list_presets():
            path = preset_path(lighting.name)
        hdr = read_hdr(path)
    else:
        raise ValueError(f"unknown lighting kind {lighting.kind!r}")
    if lighting.mirror:
        hdr = hdr[:, ::-1]
    return np.ascontiguousarray(hdr * lighting.gain().astype(np.float32), dtype=np.float32)


def environment_hdr(
    spec: SceneSpec, height: int, width: int, *, method: str = "cubemap", camera_relative: bool = True
) -> torch.Tensor:
    """(T, H, W, 3) HDR environment condition of every frame of ``spec`` as the forward renderer sees it.

    ``camera_relative``: pass the clip's camera rotations (exactly what was rendered); False uses the official
    identity pose (correct only when the camera rotation is the identity).
    """
    hdr = torch.from_numpy(read_environment(spec))
    angles = torch.deg2rad(torch.from_numpy(spec.lighting.angles_deg()))
    c2w = torch.tensor(spec.camera.c2w, dtype=torch.float64)[:, :3, :3] if camera_relative else None
    return project_envmap(hdr, height, width, angles, strength=spec.lighting.intensity, c2w=c2w, method=method)


# ---------------------------------------------------------------------------------------------------------------
# Scene construction


def _transform(mi: Any, m: np.ndarray) -> Any:
    return mi.ScalarTransform4f(np.asarray(m, dtype=np.float64).tolist())


def _normal_texture(mi: Any, material: MaterialSpec, textures: dict[int, Any]) -> dict[str, Any]:
    """Raw bilinear bitmap texture dict of a material's normal map (RGB = (n + 1) / 2, tangent space)."""
    nm = material.normal_map
    key = id(nm)
    if key not in textures:
        textures[key] = mi.Bitmap(make_normal_map(nm))
    s = nm.uv_scale
    return {
        "type": "bitmap",
        "bitmap": textures[key],
        "raw": True,
        "filter_type": "bilinear",
        "wrap_mode": "repeat",
        "to_uv": mi.ScalarTransform3f().scale([s, s]),
    }


def _bsdf(mi: Any, material: MaterialSpec, textures: dict[int, Any]) -> dict[str, Any]:
    """BSDF dict: the principled BSDF, wrapped in Mitsuba's ``normalmap`` when the material has a normal map."""
    principled = _principled(mi, material, textures)
    if material.normal_map is None:
        return principled
    return {"type": "normalmap", "normalmap": _normal_texture(mi, material, textures), "bsdf": principled}


def _principled(mi: Any, material: MaterialSpec, textures: dict[int, Any]) -> dict[str, Any]:
    """Principled BSDF dict; basecolours are converted sRGB -> linear reflectance here (the G-buffer converts back)."""
    if material.texture is None:
        base = {"type": "rgb", "value": srgb_to_linear(np.asarray(material.basecolor_rgb, dtype=np.float64)).tolist()}
    else:
        key = id(material.texture)
        if key not in textures:  # one bitmap per texture and clip
            textures[key] = mi.Bitmap(
                srgb_to_linear(make_texture(material.texture).astype(np.float64)).astype(np.float32)
            )
        s = material.texture.uv_scale
        base = {
            "type": "bitmap",
            "bitmap": textures[key],
            "raw": True,  # the data is already linear reflectance: no colour-space processing
            "filter_type": "bilinear",
            "wrap_mode": "repeat",
            "to_uv": mi.ScalarTransform3f().scale([s, s]),
        }
    return {"type": "principled", "base_color": base, "roughness": material.roughness, "metallic": material.metallic}


def _mesh_arrays(obj: ObjectSpec, frame: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat float32 world-space vertex positions and unit normals (normals by the inverse transpose) at ``frame``."""
    data = object_mesh(obj)
    m = obj.to_world(frame)
    verts = data.vertices.astype(np.float64) @ m[:3, :3].T + m[:3, 3]
    nrm = data.normals.astype(np.float64) @ np.linalg.inv(m[:3, :3])  # rows: n^T M^-1 = (M^-T n)^T
    nrm /= np.linalg.norm(nrm, axis=-1, keepdims=True)
    return verts.astype(np.float32).ravel(), nrm.astype(np.float32).ravel()


def _mesh(mi: Any, name: str, obj: ObjectSpec, frame: int, bsdf: Any) -> Any:
    """World-space Mitsuba mesh of a primitive (vertices moved here; normals by the inverse transpose)."""
    data = object_mesh(obj)
    verts, nrm = _mesh_arrays(obj, frame)
    props = mi.Properties()
    props["bsdf"] = bsdf
    mesh = mi.Mesh(name, len(verts) // 3, len(data.faces), props, has_vertex_normals=True, has_vertex_texcoords=True)
    params = mi.traverse(mesh)
    params["vertex_positions"] = verts
    params["vertex_normals"] = nrm
    params["vertex_texcoords"] = data.uvs.ravel()
    params["faces"] = data.faces.ravel()
    params.update()
    return mesh


def _ground_to_world() -> np.ndarray:
    """Mitsuba ``rectangle`` ([-1, 1]² in xy, normal +z) -> the plane y = 0 (normal +y), GROUND_HALF_SIZE wide."""
    m = np.zeros((4, 4))
    m[0, 0] = GROUND_HALF_SIZE  # x -> x
    m[2, 1] = -GROUND_HALF_SIZE  # y -> -z
    m[1, 2] = 1.0  # z (normal) -> y
    m[3, 3] = 1.0
    return m


@dataclass
class ClipResources:
    """Per-clip Mitsuba data shared by all frames."""

    env_bitmap: Any  # mi.Bitmap of envmap_bitmap_array
    textures: dict[int, Any]
    plugins: dict[tuple[str, int], Any] = field(default_factory=dict)  # G-buffer helper plugins per material


def build_scene(
    mi: Any,
    spec: SceneSpec,
    frame: int = 0,
    res: ClipResources | None = None,
    *,
    max_depth: int = 6,
    spp: int | None = None,
) -> Any:
    """Mitsuba scene of one frame of ``spec`` (``res``: the clip's environment bitmap and textures, else loaded)."""
    res = clip_resources(mi, spec) if res is None else res
    spp = int(spec.spp if spp is None else spp)
    h, w = spec.resolution
    c2w = np.asarray(spec.camera.c2w[frame], dtype=np.float64)
    scene: dict[str, Any] = {
        "type": "scene",
        "integrator": {"type": "path", "max_depth": max_depth},
        "sensor": {
            "type": "perspective",
            "fov": spec.camera.fov_deg,
            "fov_axis": "y",
            "near_clip": 1e-3,
            "far_clip": 1e4,
            "to_world": _transform(mi, sensor_to_world(c2w)),
            "sampler": {"type": "multijitter", "sample_count": spp},
            "film": {
                "type": "hdrfilm",
                "width": w,
                "height": h,
                "rfilter": {"type": "box"},
                "pixel_format": "rgb",
                "component_format": "float32",
            },
        },
        "environment": {
            "type": "envmap",
            "bitmap": res.env_bitmap,
            "to_world": _transform(mi, envmap_to_world(float(spec.lighting.angles_deg()[frame]))),
        },
    }
    if spec.ground is not None:
        scene["ground"] = {
            "type": "rectangle",
            "to_world": _transform(mi, _ground_to_world()),
            "bsdf": _bsdf(mi, spec.ground, res.textures),
        }
    for k, obj in enumerate(spec.objects):
        bsdf = _bsdf(mi, obj.material, res.textures)
        if obj.shape == "sphere":  # analytic: exact normals and silhouettes
            scene[f"object_{k}"] = {"type": "sphere", "to_world": _transform(mi, obj.to_world(frame)), "bsdf": bsdf}
        else:
            scene[f"object_{k}"] = _mesh(mi, f"object_{k}", obj, frame, mi.load_dict(bsdf))
    return mi.load_dict(scene)


# ---------------------------------------------------------------------------------------------------------------
# G-buffers and rendering


def _np(x: Any) -> np.ndarray:
    """Dr.Jit N-lane array (scalar or 3-vector) -> numpy (N,) / (N, 3)."""
    a = np.array(x)
    return a.T if a.ndim == 2 else a


def _lanes(x: Any, n: int) -> np.ndarray:
    """Dr.Jit array -> numpy (n,) / (n, 3), broadcasting a width-1 (literal) result to n lanes."""
    a = _np(x)
    return np.broadcast_to(a, (n, *a.shape[1:])).copy()


def _materials_by_shape_id(spec: SceneSpec) -> dict[str, MaterialSpec]:
    out = {f"object_{k}": obj.material for k, obj in enumerate(spec.objects)}
    if spec.ground is not None:
        out["ground"] = spec.ground
    return out


def gbuffers(
    mi: Any, scene: Any, spec: SceneSpec, frame: int, res: ClipResources | None = None
) -> dict[str, np.ndarray]:
    """(H, W, C) float32 G-buffers of one frame from primary rays through the pixel centres.

    Normal-mapped materials (Mitsuba's ``normalmap`` does not forward ``eval_attribute``): the attributes come
    from the wrapped principled BSDF, and the normal is the perturbed one of the plugin, ``normalize(sh_frame.
    to_world(2 rgb - 1))`` with rgb the normal-map texture evaluated at the hit (same texture, same uv).
    """
    h, w = spec.resolution
    c2w = np.asarray(spec.camera.c2w[frame], dtype=np.float64)
    hits = primary_hits(mi, scene, c2w, spec.camera.fov_deg, h, w)
    si, valid, mask = hits.si, hits.valid, hits.mask
    base, rough, metal, n = hits.base, hits.rough, hits.metal, hits.n
    textures = res.textures if res is not None else {}
    plugins = res.plugins if res is not None else {}
    materials = _materials_by_shape_id(spec)
    for shape in scene.shapes():
        material = materials.get(shape.id())
        if material is None or material.normal_map is None:
            continue
        sel = valid & (si.shape == mi.ShapePtr(shape))
        hit = _np(sel).astype(bool)
        if not hit.any():
            continue
        key = id(material)
        if ("principled", key) not in plugins:  # loaded once per clip (the material does not change over time)
            plugins["principled", key] = mi.load_dict(_principled(mi, material, textures))
            plugins["normalmap", key] = mi.load_dict(_normal_texture(mi, material, textures))
        inner, tex = plugins["principled", key], plugins["normalmap", key]
        base[hit] = _lanes(inner.eval_attribute("base_color", si, sel), mask.size)[hit]
        rough[hit] = _lanes(inner.eval_attribute_1("roughness", si, sel), mask.size)[hit]
        metal[hit] = _lanes(inner.eval_attribute_1("metallic", si, sel), mask.size)[hit]
        local = 2.0 * _lanes(tex.eval(si, sel), mask.size).astype(np.float64) - 1.0  # tangent space (s, t, n)
        frame_s, frame_t = _np(si.sh_frame.s).astype(np.float64), _np(si.sh_frame.t).astype(np.float64)
        pert = local[:, :1] * frame_s + local[:, 1:2] * frame_t + local[:, 2:] * n
        n[hit] = (pert / np.maximum(np.linalg.norm(pert, axis=-1, keepdims=True), 1e-12))[hit]

    return hits.camera_gbuffers()


@dataclass
class PrimaryHits:
    """Primary rays through the pixel centres of an H x W camera and what they hit (numpy, N = H W lanes).

    ``base`` (linear), ``rough``, ``metal`` are the hit BSDF's attributes and ``n`` its shading normal (world);
    callers may overwrite them (normal maps, per-object materials) before :meth:`camera_gbuffers`.
    """

    ray: Any  # mi.Ray3f, N lanes
    si: Any  # mi.SurfaceInteraction3f
    valid: Any  # mi.Bool
    mask: np.ndarray  # (N,) bool
    base: np.ndarray  # (N, 3) linear reflectance
    rough: np.ndarray  # (N,)
    metal: np.ndarray  # (N,)
    n: np.ndarray  # (N, 3) world shading normal
    ng: np.ndarray  # (N, 3) world geometric normal
    p: np.ndarray  # (N, 3) world hit position
    dirs: np.ndarray  # (N, 3) world ray directions
    c2w: np.ndarray  # (4, 4) OpenGL camera-to-world
    size: tuple[int, int]  # (H, W)

    def camera_gbuffers(self) -> dict[str, np.ndarray]:
        """(H, W, C) float32 G-buffers in the camera frame (see the module docstring), plus ``mask``."""
        rot, origin = self.c2w[:3, :3], self.c2w[:3, 3]
        view = -self.dirs  # toward the camera
        flip = np.where(np.einsum("nk,nk->n", self.ng, view) < 0, -1.0, 1.0)[:, None]  # two-sided: face the camera
        n = self.n * flip
        nv = np.einsum("nk,nk->n", n, view)[:, None]
        eps = 1e-3  # smooth-mesh silhouettes: bend a back-facing interpolated normal to just front-facing
        n = np.where(nv < eps, n + (eps - nv) * view, n)
        n /= np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12)
        n_cam = n @ rot  # world -> camera: R^T n, as rows
        z = (self.p - origin) @ (-rot[:, 2])  # planar depth along the viewing axis (-z of the camera)

        m = self.mask[:, None]
        base = linear_to_srgb(np.clip(np.asarray(self.base, dtype=np.float64), 0.0, 1.0))
        out = {
            "basecolor": np.where(m, base, 0.0),
            "normal": np.where(m, n_cam, 0.0),
            "depth": np.where(m, z[:, None], 0.0),
            "roughness": np.where(m, self.rough[:, None], 0.0),
            "metallic": np.where(m, self.metal[:, None], 0.0),
            "mask": m.astype(np.float64),
        }
        h, w = self.size
        return {k: v.reshape(h, w, -1).astype(np.float32) for k, v in out.items()}


def primary_hits(mi: Any, scene: Any, c2w: np.ndarray, fov_deg: float, height: int, width: int) -> PrimaryHits:
    """Cast one ray through each pixel centre of an OpenGL camera (vertical ``fov_deg``) into ``scene``."""
    c2w = np.asarray(c2w, dtype=np.float64)
    rot, origin = c2w[:3, :3], c2w[:3, 3]
    dirs = camera_directions(height, width, fov_deg).reshape(-1, 3) @ rot.T  # (N, 3) world
    o = np.broadcast_to(origin, dirs.shape).astype(np.float32)
    d = dirs.astype(np.float32)
    ray = mi.Ray3f(o=mi.Point3f(*(o[:, i] for i in range(3))), d=mi.Vector3f(*(d[:, i] for i in range(3))))
    si = scene.ray_intersect(ray)
    valid = si.is_valid()
    bsdf = si.bsdf(ray)
    n_lanes = dirs.shape[0]
    return PrimaryHits(
        ray=ray,
        si=si,
        valid=valid,
        mask=_lanes(valid, n_lanes).astype(bool),
        base=_lanes(bsdf.eval_attribute("base_color", si, valid), n_lanes),
        rough=_lanes(bsdf.eval_attribute_1("roughness", si, valid), n_lanes),
        metal=_lanes(bsdf.eval_attribute_1("metallic", si, valid), n_lanes),
        n=_lanes(si.sh_frame.n, n_lanes).astype(np.float64),
        ng=_lanes(si.n, n_lanes).astype(np.float64),
        p=_lanes(si.p, n_lanes).astype(np.float64),
        dirs=dirs,
        c2w=c2w,
        size=(height, width),
    )


def clip_resources(mi: Any, spec: SceneSpec) -> ClipResources:
    """What every frame of a clip shares: the environment bitmap, and a cache of texture bitmaps."""
    env = envmap_bitmap_array(read_environment(spec), spec.lighting.intensity)
    return ClipResources(mi.Bitmap(env), {})


class ClipScene:
    """One Mitsuba scene per clip, moved from frame to frame by parameter updates (``render_clip``'s default).

    Built once with :func:`build_scene` at frame 0, so the textures, meshes, BSDFs, the environment bitmap (with
    its sampling warp) and, for sun-sky lighting, the baked sky are created once per clip. :meth:`set_frame`
    then writes only what a frame changes, through ``mi.traverse(scene)``: the sensor's ``to_world`` (camera
    motion), the envmap's ``to_world`` (light rotation) and a mesh's ``vertex_positions`` + ``vertex_normals``
    (object motion; the normals are written with the positions, else Mitsuba would recompute them from the
    faces), and only the entries whose values differ from the current ones, so e.g. a camera move does not
    rebuild the acceleration structure. The values are computed exactly as :func:`build_scene` computes them
    (same float64 maths, same float32 rounding); sizes never change, so the JIT kernels compiled for the first
    frame are reused.

    Equivalence with a per-frame rebuild (``tests/test_data_engine_reuse.py``): G-buffers bitwise, RGB bitwise
    except under light rotation, where updating the envmap's ``to_world`` (Mitsuba recomputes its transform
    in the JIT rather than in scalar code) moves the radiance by float32 rounding (measured <= 1.3e-5 absolute,
    6e-5 relative). A moving **sphere** is not updated in place: the sphere plugin re-derives its centre and
    radius from an updated ``to_world`` with 1-ulp differences (basecolor G-buffer off by 2e-7), so a frame in
    which a sphere moves rebuilds the whole scene (the old path; clip resources are still shared).
    """

    def __init__(
        self, mi: Any, spec: SceneSpec, res: ClipResources | None = None, *, max_depth: int = 6, spp: int | None = None
    ) -> None:
        self.mi, self.spec, self.max_depth, self.spp = mi, spec, max_depth, spp
        self.res = clip_resources(mi, spec) if res is None else res
        self._build(0)

    def _build(self, frame: int) -> None:
        self.scene = build_scene(self.mi, self.spec, frame, self.res, max_depth=self.max_depth, spp=self.spp)
        self.params = self.mi.traverse(self.scene)
        self.current, self.frame = self._values(frame), frame

    def _values(self, frame: int) -> dict[str, np.ndarray]:
        """The frame-dependent parameters (numpy, as :func:`build_scene` computes them) by ``traverse`` key."""
        spec = self.spec
        out = {
            "sensor.to_world": sensor_to_world(np.asarray(spec.camera.c2w[frame], dtype=np.float64)),
            "environment.to_world": envmap_to_world(float(spec.lighting.angles_deg()[frame])),
        }
        for k, obj in enumerate(spec.objects):
            if obj.shape == "sphere":
                out[f"object_{k}.to_world"] = obj.to_world(frame)  # compared only: a change rebuilds the scene
            elif obj.offsets:  # only moving objects: static meshes are never touched
                out[f"object_{k}.vertex_positions"], out[f"object_{k}.vertex_normals"] = _mesh_arrays(obj, frame)
        return out

    def set_frame(self, frame: int) -> Any:
        """Move the scene to ``frame`` (update only the changed parameters) and return it."""
        if frame == self.frame:
            return self.scene
        values = self._values(frame)
        changed = {k for k, v in values.items() if not np.array_equal(v, self.current[k])}
        if any(key.startswith("object_") and key.endswith(".to_world") for key in changed):  # a sphere moved
            self._build(frame)
            return self.scene
        for key in sorted(changed):
            if key.endswith("vertex_normals"):
                continue
            if key.endswith("vertex_positions"):  # positions and normals go together (see the class docstring)
                normals = key.replace("vertex_positions", "vertex_normals")
                self.params[key] = self.mi.Float(values[key])
                self.params[normals] = self.mi.Float(values[normals])
            else:
                self.params[key] = type(self.params[key])(_transform(self.mi, values[key]))
        if changed:
            self.params.update()
        self.current, self.frame = values, frame
        return self.scene


def _sampler_seed(spec: SceneSpec, frame: int, offset: int = 0) -> int:
    return (spec.seed * 1000 + frame + offset * 7919) % (2**32)


def render_clip(
    spec: SceneSpec,
    *,
    variant: str = CPU_VARIANT,
    spp: int | None = None,
    max_depth: int = 6,
    progress: bool = False,
    reuse_scene: bool = True,
) -> ClipBuffers:
    """Path-trace every frame of ``spec`` (``spp``: default ``spec.spp``) and read back its G-buffers.

    ``reuse_scene`` (default): build the scene once and move it per frame (:class:`ClipScene`); False rebuilds
    it for every frame (the reference path, same results: see ``tests/test_data_engine_reuse.py``).
    """
    mi = load_mitsuba(variant)
    spp = int(spec.spp if spp is None else spp)
    res = clip_resources(mi, spec)
    clip = ClipScene(mi, spec, res, max_depth=max_depth, spp=spp) if reuse_scene else None
    frames: list[dict[str, np.ndarray]] = []
    iterator = range(spec.num_frames)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc="frames")
    for t in iterator:
        scene = build_scene(mi, spec, t, res, max_depth=max_depth, spp=spp) if clip is None else clip.set_frame(t)
        image = np.array(mi.render(scene, spp=spp, seed=_sampler_seed(spec, t)), dtype=np.float32)
        frames.append({"rgb_linear": image[..., :3], **gbuffers(mi, scene, spec, t, res)})
    stacked = {k: np.stack([f[k] for f in frames]) for k in frames[0]}
    return ClipBuffers(
        **stacked,
        env_rotation_deg=spec.lighting.angles_deg(),
        c2w=np.asarray(spec.camera.c2w, dtype=np.float64),
    )


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two images in [0, 1]."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)


def noise_psnr(
    spec: SceneSpec, spp: int | None = None, *, frame: int = 0, variant: str = CPU_VARIANT, max_depth: int = 6
) -> float:
    """PSNR (dB) between two renders of one frame with different sampler seeds, on ``srgb(clamp(x, 0, 1))``.

    Two independent estimates differ by sqrt(2) x the noise of each, so the PSNR of one render against the
    converged image is about 3 dB higher than this figure.
    """
    mi = load_mitsuba(variant)
    spp = int(spec.spp if spp is None else spp)
    scene = build_scene(mi, spec, frame, max_depth=max_depth, spp=spp)
    images = [display_rgb(np.array(mi.render(scene, spp=spp, seed=_sampler_seed(spec, frame, k)))) for k in (0, 1)]
    return psnr(*images)
