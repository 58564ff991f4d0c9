"""The classical split-sum baseline against the path tracer, on the same G-buffers and environment map.

Two kinds of scene, both seen by a level camera (camera-to-world rotation = identity, the pose the
forward renderer assumes): a single sphere floating in the environment (convex, nothing to shadow or
reflect) and the same sphere standing on a ground plane next to a box (shadows, occlusion,
interreflection). The path tracer's image is the reference; the split-sum renderer shades the path
tracer's own G-buffers, so every difference is the lighting model. PSNR is measured on the sRGB display
frames (exposure 1, clipped), over the pixels that show a surface.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from diffusion_renderer.data.scenes import (
    CameraSpec,
    LightingSpec,
    MaterialSpec,
    ObjectSpec,
    SceneSpec,
)

BASELINE_MATERIALS = {
    "rough plastic": (0.8, 0.0),
    "glossy plastic": (0.3, 0.0),
    "brushed metal": (0.4, 1.0),
}


@dataclass
class BaselineFigure:
    scene: str
    material: str
    envmap: str
    psnr_db: float


def psnr(reference: np.ndarray, test: np.ndarray, mask: np.ndarray) -> float:
    """PSNR (dB, peak 1) over the pixels where ``mask`` (..., 1) is set."""
    sel = np.broadcast_to(mask > 0, reference.shape)
    mse = float(np.mean((reference[sel] - test[sel]) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def baseline_scene(kind: str, roughness: float, metallic: float, envmap: str, size: int, spp: int) -> SceneSpec:
    """``convex``: a sphere alone; ``occluded``: the sphere on a ground plane beside a box."""
    from diffusion_renderer.lighting.presets import resolve_envmap

    name, path = resolve_envmap(envmap)
    ball = MaterialSpec(roughness, metallic, basecolor_rgb=[0.75, 0.35, 0.2])
    c2w = np.eye(4)
    c2w[1, 3] = 1.0  # eye 1 m above the ground, looking along -z: level camera
    objects = [ObjectSpec("sphere", [0.6] * 3, [0.0, 0.6 if kind == "occluded" else 1.0, -3.0], [0, 0, 0], ball)]
    ground = None
    if kind == "occluded":
        grey = MaterialSpec(0.6, 0.0, basecolor_rgb=[0.6, 0.6, 0.6])
        objects.append(ObjectSpec("cube", [0.5] * 3, [0.9, 0.5, -3.6], [0, 25, 0], grey))
        ground = MaterialSpec(0.7, 0.0, basecolor_rgb=[0.5, 0.45, 0.4])
    return SceneSpec(
        seed=0,
        resolution=[size, size],
        num_frames=1,
        motion="static",
        ground=ground,
        objects=objects,
        camera=CameraSpec(fov_deg=40.0, c2w=[c2w.tolist()]),
        lighting=LightingSpec(name, str(path), 1.0, 30.0, [0.0]),
        spp=spp,
    )


def compare(scene: SceneSpec, variant: str = "llvm_ad_rgb") -> float:
    """Path-trace ``scene``, re-shade its G-buffers with split-sum, return the foreground PSNR (dB)."""
    from diffusion_renderer.data.mitsuba_render import read_environment, render_clip
    from diffusion_renderer.data.storage import display_rgb
    from diffusion_renderer.render.splitsum import SplitSumRenderer

    buffers = render_clip(scene, variant=variant)
    gbuffers = {k: getattr(buffers, k) for k in ("basecolor", "normal", "roughness", "metallic")}
    hdr = read_environment(scene) * scene.lighting.intensity
    shaded = SplitSumRenderer()(
        gbuffers,
        hdr,
        light_angle=float(scene.lighting.angles_deg()[0]),
        fov_deg=scene.camera.fov_deg,
        mask=buffers.mask,
    ).images[0]
    return psnr(display_rgb(buffers.rgb_linear), shaded, buffers.mask)


def baseline_figures(
    envmaps: tuple[str, ...] = ("park", "studio"), size: int = 128, spp: int = 256, variant: str = "llvm_ad_rgb"
) -> list[BaselineFigure]:
    figures = []
    for kind in ("convex", "occluded"):
        for material, (roughness, metallic) in BASELINE_MATERIALS.items():
            for envmap in envmaps:
                scene = baseline_scene(kind, roughness, metallic, envmap, size, spp)
                figures.append(BaselineFigure(kind, material, envmap, compare(scene, variant)))
    return figures
