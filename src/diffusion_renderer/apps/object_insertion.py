"""Object insertion: place a mesh on a surface of the scene and write it into the scene's G-buffers.

Geometry from one image's G-buffers, which carry no metric camera:

* Camera: a pinhole at the origin, OpenGL axes (``conventions``), vertical field of view ``fov_deg`` (default
  50°, a phone's main camera in landscape), principal point at the centre.
* Depth: the G-buffer depth d in [-1, 1] is an affine normalisation of planar z (2 % / 98 % quantiles ->
  -1 / +1, ``conventions.normalize_depth``). Its scale and shift are unknown, so z = near + (d + 1) / 2 (far -
  near) with near = 1 and far = ``depth_ratio`` (default 4: a room or a street corner). Only the ratio matters:
  the object is sized relative to the scene (``scale``: its largest side as a fraction of the image height at
  the anchor's depth), and its own depth goes back through the same mapping, so it composites consistently.
* Pose: the object's up axis (+y, glTF; ``up="z"`` for Z-up files) is aligned with the scene normal under the
  anchor pixel (median of a small window), its front (+z) turned toward the camera, then rotated by
  ``rotate_deg`` about the normal; the bottom centre of its bounding box sits on the surface point.
* Videos: the object is placed with the G-buffers of frame ``frame`` and stays fixed in the camera frame, so it
  is fixed in the world only for a static camera (camera-motion estimation is out of scope). Each frame's own
  depth decides what occludes it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from diffusion_renderer.conventions import GBUFFER_KEYS, VALUE_RANGE
from diffusion_renderer.data.mitsuba_render import camera_directions
from diffusion_renderer.render.mesh_gbuffers import MeshPart, bounds, rasterize_gbuffers

if TYPE_CHECKING:
    from diffusion_renderer.apps.before_after import EditOutput, GBufferSource
    from diffusion_renderer.pipelines.pipeline_forward_rendering import ForwardRenderingPipeline, Lighting
    from diffusion_renderer.pipelines.pipeline_inverse_rendering import InverseRenderingPipeline

DEFAULT_FOV_DEG = 50.0
DEFAULT_DEPTH_RATIO = 4.0
OCCLUSION_MARGIN = 0.03  # relative depth: what a noisy estimate of the supporting surface is allowed
NORMAL_WINDOW = 0.02  # anchor normal: median over a window of ± 2 % of the image's short side (at least ± 2 px)


@dataclass
class Placement:
    """Where and how the object goes. ``anchor`` is (x, y) in pixels of the G-buffers (0, 0 = top left)."""

    anchor: tuple[float, float]
    scale: float = 0.25
    rotate_deg: float = 0.0
    up: str = "y"
    fov_deg: float = DEFAULT_FOV_DEG
    depth_ratio: float = DEFAULT_DEPTH_RATIO
    frame: int = 0

    def __post_init__(self) -> None:
        if self.up not in ("y", "z"):
            raise ValueError(f"up axis must be 'y' or 'z', got {self.up!r}")
        if not (np.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"scale must be > 0, got {self.scale}")
        if not 1.0 <= self.fov_deg <= 170.0:
            raise ValueError(f"field of view must be in [1, 170] degrees, got {self.fov_deg}")
        if not (np.isfinite(self.depth_ratio) and self.depth_ratio > 1.0):
            raise ValueError(f"depth ratio (far / near) must be > 1, got {self.depth_ratio}")


@dataclass
class InsertedScene:
    """G-buffers with the object written in, the object's visible pixels (T, h, w, 1) and its pose."""

    gbuffers: dict[str, np.ndarray]
    mask: np.ndarray
    object_to_camera: np.ndarray  # (4, 4)


# -------------------------------------------------------------------------------------------------- depth model


def depth_to_z(depth: np.ndarray, depth_ratio: float) -> np.ndarray:
    """Normalised depth in [-1, 1] -> planar z in [1, depth_ratio] (the assumed near and far)."""
    return 1.0 + (np.asarray(depth, np.float64) + 1.0) / 2.0 * (depth_ratio - 1.0)


def z_to_depth(z: np.ndarray, depth_ratio: float) -> np.ndarray:
    """Inverse of :func:`depth_to_z`, clipped to the conventions' [-1, 1]."""
    return np.clip((np.asarray(z, np.float64) - 1.0) / (depth_ratio - 1.0) * 2.0 - 1.0, *VALUE_RANGE["depth"])


# ------------------------------------------------------------------------------------------------------ placing


def anchor_pixel(placement: Placement, height: int, width: int) -> tuple[int, int]:
    """Integer (x, y) of the anchor; ValueError when it lies outside the image."""
    x, y = placement.anchor
    if not (0 <= x < width and 0 <= y < height):
        raise ValueError(f"point ({x:g}, {y:g}) is outside the {width}x{height} image")
    return int(x), int(y)


def surface_normal(normal: np.ndarray, x: int, y: int) -> np.ndarray:
    """(h, w, 3) camera-frame normals -> unit normal (3,) at (x, y): the median of a small window, so that a
    noisy estimate does not tilt the object (its base covers many pixels anyway)."""
    radius = max(2, round(NORMAL_WINDOW * min(normal.shape[:2])))
    window = normal[max(0, y - radius) : y + radius + 1, max(0, x - radius) : x + radius + 1].reshape(-1, 3)
    n = np.median(window.astype(np.float64), axis=0)
    length = np.linalg.norm(n)
    return n / length if length > 1e-6 else np.array([0.0, 1.0, 0.0])


def object_basis(up: np.ndarray, toward_camera: np.ndarray, rotate_deg: float) -> np.ndarray:
    """(3, 3) rotation whose columns are the object's x, y (= up), z (front, toward the camera) in camera space."""
    front = toward_camera - np.dot(toward_camera, up) * up
    if np.linalg.norm(front) < 1e-6:  # looking straight along the normal: any front will do
        helper = np.array([0.0, 0.0, 1.0]) if abs(up[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
        front = helper - np.dot(helper, up) * up
    front /= np.linalg.norm(front)
    a = math.radians(rotate_deg)  # Rodrigues about `up` (front is perpendicular to it)
    front = front * math.cos(a) + np.cross(up, front) * math.sin(a)
    right = np.cross(up, front)
    return np.stack([right, up, front], axis=1)


Z_UP_TO_Y_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])  # -90° about x: +z -> +y


def object_to_camera(parts: list[MeshPart], gbuffers: Mapping[str, np.ndarray], placement: Placement) -> np.ndarray:
    """(4, 4) pose that stands the object on the surface under the anchor (see the module docstring)."""
    t = placement.frame
    height, width = gbuffers["depth"].shape[1:3]
    x, y = anchor_pixel(placement, height, width)
    z = float(depth_to_z(gbuffers["depth"][t, y, x, 0], placement.depth_ratio))
    ray = camera_directions(height, width, placement.fov_deg)[y, x]  # unit, camera frame
    point = ray * (z / -ray[2])  # planar depth z
    up = surface_normal(gbuffers["normal"][t], x, y)

    to_y_up = Z_UP_TO_Y_UP if placement.up == "z" else np.eye(3)
    lo, hi = bounds(parts)
    corners = np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])])
    corners = corners @ to_y_up.T
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    extent = float((hi - lo).max())
    if extent <= 0:
        raise ValueError("the mesh has no extent")
    visible_height = 2 * z * math.tan(math.radians(placement.fov_deg) / 2)
    s = placement.scale * visible_height / extent
    bottom_centre = np.array([(lo[0] + hi[0]) / 2, lo[1], (lo[2] + hi[2]) / 2])

    rotation = object_basis(up, -point / np.linalg.norm(point), placement.rotate_deg)
    m = np.eye(4)
    m[:3, :3] = rotation @ (s * to_y_up)
    m[:3, 3] = point - rotation @ (s * bottom_centre)
    return m


# --------------------------------------------------------------------------------------------------- compositing


def composite_object(
    gbuffers: Mapping[str, np.ndarray], object_gbuffers: Mapping[str, np.ndarray], depth_ratio: float
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Write the object's (h, w, C) G-buffers into every frame of the scene's (T, h, w, C) ones, depth-tested.

    The object shows where it is hit and not behind the scene's surface by more than ``OCCLUSION_MARGIN`` of the
    depth: the surface it stands on must not cut into its base where the estimated depth is noisy. Returns the
    new G-buffers (same dtypes, conventions' ranges) and the visible mask (T, h, w, 1) bool.
    """
    scene_z = depth_to_z(gbuffers["depth"], depth_ratio)  # (T, h, w, 1)
    obj_z = object_gbuffers["depth"].astype(np.float64)[None]  # (1, h, w, 1)
    hit = object_gbuffers["mask"][None] > 0.5
    visible = hit & (obj_z <= scene_z * (1 + OCCLUSION_MARGIN))
    values = {key: object_gbuffers[key][None] for key in GBUFFER_KEYS if key != "depth"}
    values["depth"] = z_to_depth(obj_z, depth_ratio)
    out = {}
    for key, scene in gbuffers.items():
        if key not in values:
            out[key] = scene
            continue
        lo, hi = VALUE_RANGE[key]
        out[key] = np.where(visible, np.clip(values[key], lo, hi), scene).astype(scene.dtype)
    return out, visible


def insert_object(
    gbuffers: Mapping[str, np.ndarray], parts: list[MeshPart], placement: Placement, variant: str = "auto"
) -> InsertedScene:
    """Place ``parts`` in the scene of ``gbuffers`` ({pass: (T, h, w, C)}, all five passes), rasterize them in
    the scene's camera and composite them in. ValueError for an anchor outside the image or missing passes."""
    missing = [k for k in GBUFFER_KEYS if k not in gbuffers]
    if missing:
        raise ValueError(f"the scene's G-buffers lack {', '.join(missing)}")
    count, height, width = gbuffers["depth"].shape[:3]
    if not 0 <= placement.frame < count:
        raise ValueError(f"frame {placement.frame} is outside the clip's {count} frames")
    pose = object_to_camera(parts, gbuffers, placement)
    rendered = rasterize_gbuffers(parts, pose, height, width, placement.fov_deg, variant=variant)
    out, visible = composite_object(gbuffers, rendered, placement.depth_ratio)
    return InsertedScene(gbuffers=out, mask=visible, object_to_camera=pose)


def insert_and_render(
    inverse: InverseRenderingPipeline | None,
    forward: ForwardRenderingPipeline,
    source: GBufferSource,
    parts: list[MeshPart],
    placement: Placement,
    envmap: Lighting | Sequence[Lighting] = None,
    *,
    seed: int = 0,
    variant: str = "auto",
    **options,
) -> EditOutput:
    """Estimate (or take) the G-buffers of ``source``, insert ``parts`` and render the scene before and after.

    ``source`` as :func:`~diffusion_renderer.apps.material_edit.edit_material`; shadows and reflections of the
    object come from the forward renderer. Returns an :class:`~diffusion_renderer.apps.before_after.EditOutput`.
    """
    from diffusion_renderer.apps.before_after import render_before_after, scene_gbuffers

    gbuffers = scene_gbuffers(inverse, source, seed=seed, **options)
    inserted = insert_object(gbuffers, parts, placement, variant=variant)
    return render_before_after(forward, gbuffers, inserted.gbuffers, inserted.mask, envmap, seed=seed, **options)


# sRGB basecolours; metals from their measured linear F0 (gold 1.00 0.77 0.34, silver 0.97 0.96 0.92, copper 0.96
# 0.64 0.54, chrome 0.55 0.56 0.55), encoded to sRGB as the conventions store basecolor
MATERIAL_PRESETS: dict[str, dict[str, object]] = {
    "clay": {"basecolor": (0.80, 0.78, 0.75), "roughness": 0.9, "metallic": 0.0},
    "plastic": {"basecolor": (0.85, 0.85, 0.85), "roughness": 0.3, "metallic": 0.0},
    "rubber": {"basecolor": (0.08, 0.08, 0.08), "roughness": 0.85, "metallic": 0.0},
    "gold": {"basecolor": (1.00, 0.89, 0.62), "roughness": 0.25, "metallic": 1.0},
    "silver": {"basecolor": (0.99, 0.98, 0.96), "roughness": 0.2, "metallic": 1.0},
    "copper": {"basecolor": (0.98, 0.82, 0.76), "roughness": 0.25, "metallic": 1.0},
    "chrome": {"basecolor": (0.77, 0.78, 0.78), "roughness": 0.05, "metallic": 1.0},
}


def parse_material(tokens: list[str]) -> dict[str, object]:
    """``["gold", "roughness=0.4"]`` -> {basecolor, roughness, metallic} overrides (only those given).

    Presets first, then ``key=value`` pairs (``basecolor=#rrggbb`` or ``R,G,B``; ``roughness`` / ``metallic`` in
    [0, 1]). ValueError names the bad token.
    """
    from diffusion_renderer.apps.material_edit import parse_color

    material: dict[str, object] = {}
    for token in tokens:
        if "=" not in token:
            if token not in MATERIAL_PRESETS:
                raise ValueError(f"unknown material {token!r} (presets: {', '.join(MATERIAL_PRESETS)})")
            material.update(MATERIAL_PRESETS[token])
            continue
        key, _, value = token.partition("=")
        if key == "basecolor":
            material[key] = parse_color(value)
        elif key in ("roughness", "metallic"):
            try:
                number = float(value)
            except ValueError:
                number = float("nan")
            if not 0.0 <= number <= 1.0:
                raise ValueError(f"material {token!r}: {key} must be a number in [0, 1]")
            material[key] = number
        else:
            raise ValueError(f"material {token!r}: unknown key {key!r} (basecolor, roughness, metallic)")
    return material
