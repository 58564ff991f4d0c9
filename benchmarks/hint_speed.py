"""Time of the shading hint's shadow test (``render.shadows.shadow_factor_fast``) per frame, for each hint version's
sampling (``render.hint.SHADOW_SAMPLING``) and for light directions marched 8 at a time (before 2026-12-06)
against ``CHUNK_ELEMENTS`` (now). On a GPU the march is bound by kernel launches, so fewer, larger passes pay;
on a CPU by arithmetic, so they do not.

    python benchmarks/hint_speed.py --out benchmarks/results/hint_speed_h100.json [--size 256] [--repeats 20]

The scene: a ground plane seen from above the horizon with a box standing on it (every pixel a surface but a
sky band), directions from a synthetic sun-and-sky map through ``light_directions``. The data engine's hint
runs on frames of ``--size`` (its 256) at the shadow test's half resolution.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from diffusion_renderer.render import shadows
from diffusion_renderer.render.hint import SHADOW_SAMPLING
from diffusion_renderer.render.splitsum import equirect_directions


def scene(size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(H, W) planar depth, (H, W, 3) unit normals, (H, W) surface mask: ground and a box, sky in the top rows."""
    rows = torch.arange(size, device=device, dtype=torch.float32)[:, None].expand(size, size)
    cols = torch.arange(size, device=device, dtype=torch.float32)[None].expand(size, size)
    horizon = size * 0.3
    surface = rows > horizon
    z = torch.where(surface, 2.0 * size / (rows - horizon).clamp(min=1.0), torch.full_like(rows, 1e3))
    normal = torch.zeros(size, size, 3, device=device)
    normal[..., 1] = 1.0  # the ground faces up
    box = (rows > size * 0.45) & (rows < size * 0.75) & (cols > size * 0.4) & (cols < size * 0.6)
    z = torch.where(box, z[int(size * 0.75)].min().expand_as(z), z)
    normal[box] = torch.tensor([0.0, 0.0, 1.0], device=device)  # its face toward the camera
    return z, F.normalize(normal, dim=-1), surface


def sun_sky(device: torch.device) -> torch.Tensor:
    """(64, 128, 3) equirect: a dim sky and a bright sun 30 degrees up."""
    directions = equirect_directions(64, 128).to(device)
    sun = F.normalize(torch.tensor([0.5, 0.5, -0.7], device=device), dim=0)
    sky = 0.3 + 0.7 * directions[..., 1:2].clamp(min=0)
    return sky.expand(64, 128, 3) + 5e3 * ((directions @ sun) > 0.999).float()[..., None]


def per_frame_ms(
    size: int, directions: int, steps: int, chunk: int | None, repeats: int, device: torch.device
) -> float:
    z, normal, surface = scene(size, device)
    light = shadows.light_directions(sun_sky(device), directions)
    saved = shadows.CHUNK_ELEMENTS
    # the old rule, 8 directions a pass, as an element budget for this frame's half-resolution surface pixels
    pixels = int(shadows.half_resolution(surface[..., None].float())[..., 0].gt(0.5).sum())
    shadows.CHUNK_ELEMENTS = saved if chunk is None else chunk * pixels
    try:
        shadows.shadow_factor_fast(z, normal, surface, 50.0, light, steps)  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            shadows.shadow_factor_fast(z, normal, surface, 50.0, light, steps)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - start) / repeats * 1e3
    finally:
        shadows.CHUNK_ELEMENTS = saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = []
    for version, (directions, steps) in sorted(SHADOW_SAMPLING.items()):
        for label, chunk in (("8 directions a pass", 8), ("CHUNK_ELEMENTS", None)):
            ms = per_frame_ms(args.size, directions, steps, chunk, args.repeats, device)
            rows.append(
                {
                    "hint_version": version,
                    "directions": directions,
                    "steps": steps,
                    "chunking": label,
                    "ms_per_frame": round(ms, 2),
                }
            )
            print(f"version {version} ({directions} x {steps}), {label:20s} {ms:8.2f} ms/frame")
    record = {
        "benchmark": "hint_speed",
        "date": dt.date.today().isoformat(),
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "size": args.size,
        "chunk_elements": shadows.CHUNK_ELEMENTS,
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
