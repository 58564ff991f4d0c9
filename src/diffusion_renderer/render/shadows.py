"""Screen-space shadows from G-buffers: how much of an environment's light reaches each visible surface pixel.

Used by the shading hint's version 4 (:mod:`render.hint`), which multiplies split-sum's shading by this factor.
Why: split-sum has no visibility. On the held-out scenes the path tracer with exact direct shadows scores 31.7 dB,
the hint 22.3, the hint times this factor 23.8 (``benchmarks/visibility.py``): the factor is what the G-buffers alone
can tell (a depth buffer sees no occluder behind the visible surfaces or off screen). Written here rather than
taken from a library: screen-space shadowing lives inside game engines' shaders; no maintained Python package
marches a depth buffer under an environment's light.

The method: K light directions drawn from the environment by power at fixed quantiles of its CDF (deterministic,
so every machine makes the same hint), and for each surface pixel a march along each direction through the depth
buffer (geometric steps; a sample behind the stored surface by less than a thickness is blocked). The factor is
S = sum(cos x visible) / sum(cos) over the directions.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from diffusion_renderer.lighting.white_balance import LUMA
from diffusion_renderer.render.splitsum import camera_rays, equirect_directions, equirect_solid_angles

NEAR_STEP = 0.005  # the march's first step, in median depths of the frame's surfaces
REACH = 0.5  # its last: an occluder farther than half the scene's depth casts no shadow here
THICKNESS = 0.1  # a sample at most this far behind the stored depth (median depths) is blocked: surfaces have depth
NORMAL_OFFSET = 0.002  # rays start this far (x the pixel's depth) off the surface, along its normal
DEPTH_SLACK = 1.002  # and a sample must lie this much behind the stored depth to count: no self-shadowing acne
# pixels x directions marched at once: bounded memory, and few passes, since a GPU march is bound by kernel
# launches. 8 directions a pass made version 5 (64 directions x 32 steps) 256 passes of ~25 kernels a frame; the
# data engine rendered 9 frames/s on it against 16 on version 4 (runs 44 and 42), likely these launches. At half of
# 256² one pass now takes all 64 (benchmarks/hint_speed.py; on a CPU the same time).
CHUNK_ELEMENTS = 1 << 20


def light_directions(equirect: torch.Tensor, count: int) -> torch.Tensor:
    """(count, 3) directions toward the light of an (H, W, 3) equirect (split-sum's frame), drawn by power at
    evenly spaced quantiles of its CDF. Computed in float64 on the CPU, so every device draws the same ones."""
    height, width, _ = equirect.shape
    luma = equirect.detach().cpu().double() @ torch.from_numpy(LUMA).double()  # (H, W): a light's power
    cdf = (luma.clamp(min=0) * equirect_solid_angles(height, width, dtype=torch.float64)).flatten().cumsum(0)
    quantiles = (torch.arange(count, dtype=torch.float64) + 0.5) / count * cdf[-1]
    index = torch.searchsorted(cdf, quantiles).clamp(max=cdf.numel() - 1)
    directions = equirect_directions(height, width, dtype=torch.float64).reshape(-1, 3)[index]
    return directions.float().to(equirect.device)


def camera_points(z: torch.Tensor, fov_deg: float) -> torch.Tensor:
    """(H, W) planar depth (any scale) -> (H, W, 3) camera-space points on split-sum's camera rays."""
    rays = camera_rays(*z.shape, fov_deg, device=z.device)  # (H, W, 3) unit, looking down -z
    return rays / -rays[..., 2:] * z[..., None]


def shadow_factor(
    z: torch.Tensor,
    normal: torch.Tensor,
    surface: torch.Tensor,
    fov_deg: float,
    directions: torch.Tensor,
    steps: int = 24,
) -> torch.Tensor:
    """(H, W) share of the light from ``directions`` (K, 3) reaching each surface pixel, 1 elsewhere.

    ``z``: (H, W) planar depth (any scale; positive), ``normal``: (H, W, 3) unit camera-space normals, ``surface``:
    (H, W) bool. Each pixel marches ``steps`` geometric steps from ``NEAR_STEP`` to ``REACH`` median depths."""
    height, width = z.shape
    device = z.device
    if not bool(surface.any()):
        return torch.ones_like(z)
    tan = math.tan(math.radians(fov_deg) / 2)
    median = float(z[surface].median())
    distances = torch.logspace(math.log10(NEAR_STEP * median), math.log10(REACH * median), steps).tolist()
    points, n, depth = camera_points(z, fov_deg)[surface], normal[surface], z[surface]  # (N, 3), (N, 3), (N,)
    rows, cols = torch.nonzero(surface, as_tuple=True)  # each point's own pixel
    origin = points + n * (NORMAL_OFFSET * depth)[:, None]
    lit, total = torch.zeros_like(depth), torch.zeros_like(depth)
    per_chunk = max(1, CHUNK_ELEMENTS // depth.numel())
    for chunk in directions.to(device).split(per_chunk):  # (k, 3)
        cosine = (n @ chunk.T).clamp(min=0)  # (N, k)
        blocked = torch.zeros_like(cosine, dtype=torch.bool)
        for distance in distances:
            q = origin[:, None, :] + chunk[None] * distance  # (N, k, 3)
            q_depth = -q[..., 2].clamp(max=-1e-3)
            col = (q[..., 0] / q_depth / (tan * width / height) + 1) * width / 2 - 0.5  # sub-pixel position
            row = (1 - q[..., 1] / q_depth / tan) * height / 2 - 0.5
            inside = (-q[..., 2] > 1e-3) & (col >= 0) & (col <= width - 1) & (row >= 0) & (row <= height - 1)
            # the depth buffer read bilinearly: nearest reads made a surface seen at a grazing angle shadow itself
            # (within a pixel its depth runs past the pixel centre's)
            r0, c0 = row.floor().clamp(0, height - 2).long(), col.floor().clamp(0, width - 2).long()
            fr, fc = (row - r0).clamp(0, 1), (col - c0).clamp(0, 1)
            top = torch.lerp(z[r0, c0], z[r0, c0 + 1], fc)
            stored = torch.lerp(top, torch.lerp(z[r0 + 1, c0], z[r0 + 1, c0 + 1], fc), fr)
            on_surface = surface[r0, c0] & surface[r0, c0 + 1] & surface[r0 + 1, c0] & surface[r0 + 1, c0 + 1]
            moved = ((row - rows[:, None]).abs() >= 1) | ((col - cols[:, None]).abs() >= 1)  # off its own pixel
            behind = (q_depth > stored * DEPTH_SLACK) & (q_depth < stored + THICKNESS * median)
            blocked |= inside & on_surface & moved & behind
        lit += (cosine * ~blocked).sum(1)
        total += cosine.sum(1)
    factor = torch.ones_like(z)
    factor[surface] = torch.where(total > 0, lit / total.clamp(min=1e-8), torch.ones_like(total))
    return factor


def half_resolution(image: torch.Tensor) -> torch.Tensor:
    """(H, W, C) -> (H // 2, W // 2, C): means of 2 x 2 pixels."""
    return F.avg_pool2d(image.permute(2, 0, 1)[None], 2)[0].permute(1, 2, 0)


def shadow_factor_fast(
    z: torch.Tensor,
    normal: torch.Tensor,
    surface: torch.Tensor,
    fov_deg: float,
    directions: torch.Tensor,
    steps: int = 16,
) -> torch.Tensor:
    """:func:`shadow_factor` marched at half resolution and upsampled bilinearly: a quarter of the cost. Measured
    on the held-out scenes (``benchmarks/visibility.py``): as accurate as the full one (23.8 dB with either)."""
    if min(z.shape) < 4:
        return shadow_factor(z, normal, surface, fov_deg, directions, steps)
    small = shadow_factor(
        half_resolution(z[..., None])[..., 0],
        F.normalize(half_resolution(normal), dim=-1),
        half_resolution(surface[..., None].float())[..., 0] > 0.5,
        fov_deg,
        directions,
        steps,
    )
    factor = F.interpolate(small[None, None], size=z.shape, mode="bilinear", align_corners=False)[0, 0]
    return torch.where(surface, factor, torch.ones_like(factor))
