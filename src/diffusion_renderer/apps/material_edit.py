"""Material editing: change basecolor, roughness or metallic inside a (feathered) selection of the G-buffers.

All functions are pure numpy on the package's G-buffer arrays (``conventions``): frames first, (T, h, w, C), in
the conventions' ranges. Pixels outside the selection are never touched (the feather runs *inward* from the
selection's edge), so an edit changes exactly the selected pixels and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from diffusion_renderer.conventions import VALUE_RANGE

if TYPE_CHECKING:  # the pipelines import torch and diffusers: loaded only by the functions that render
    from diffusion_renderer.apps.before_after import EditOutput, GBufferSource
    from diffusion_renderer.pipelines.pipeline_forward_rendering import ForwardRenderingPipeline, Lighting
    from diffusion_renderer.pipelines.pipeline_inverse_rendering import InverseRenderingPipeline


def parse_color(text: str) -> tuple[float, float, float]:
    """``#rrggbb`` / ``rrggbb`` or ``R,G,B`` in [0, 1] -> sRGB (r, g, b) in [0, 1]. Raises ValueError."""
    value = text.strip()
    hex_digits = value.removeprefix("#")
    if len(hex_digits) == 6 and all(c in "0123456789abcdefABCDEF" for c in hex_digits):
        return tuple(int(hex_digits[i : i + 2], 16) / 255.0 for i in (0, 2, 4))  # type: ignore[return-value]
    parts = value.split(",")
    try:
        rgb = tuple(float(p) for p in parts)
    except ValueError:
        rgb = ()
    if len(rgb) != 3 or not all(0.0 <= c <= 1.0 for c in rgb):
        raise ValueError(f"colour {text!r}: expected #rrggbb or R,G,B with values in [0, 1]")
    return rgb  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------------- selection


def mask_from_image(image: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """(..., h, w, C) image in [0, 1] -> (..., h, w) bool: selected where the mean of the channels > threshold."""
    return np.asarray(image, dtype=np.float32).mean(axis=-1) > threshold


def select_by_color(basecolor: np.ndarray, color: tuple[float, float, float], tolerance: float = 0.1) -> np.ndarray:
    """(T, h, w, 3) sRGB basecolor -> (T, h, w) bool: within ``tolerance`` (RGB Euclidean distance) of ``color``."""
    distance = np.linalg.norm(basecolor - np.asarray(color, dtype=basecolor.dtype), axis=-1)
    return distance <= tolerance


def select_by_depth(depth: np.ndarray, near: float, far: float) -> np.ndarray:
    """(T, h, w, 1) depth in [-1, 1] (near = -1) -> (T, h, w) bool: inside [near, far]."""
    d = depth[..., 0]
    return (d >= min(near, far)) & (d <= max(near, far))


def feather(mask: np.ndarray, radius: float) -> np.ndarray:
    """(..., h, w) bool -> (..., h, w) float32 weights: 1 deep inside, ramping to 0 over ``radius`` px at the edge.

    Inward only (Euclidean distance to the nearest unselected pixel / radius): weights are 0 exactly outside the
    selection and > 0 on every selected pixel. OpenCV's exact distance transform does the work.
    """
    import cv2

    mask = np.asarray(mask, dtype=bool)
    if radius <= 0:
        return mask.astype(np.float32)
    flat = mask.reshape(-1, *mask.shape[-2:])
    out = np.empty(flat.shape, dtype=np.float32)
    for i, m in enumerate(flat):
        padded = np.pad(m, 1, constant_values=True)  # the image border is not an edge of the selection
        distance = cv2.distanceTransform(padded.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
        out[i] = np.where(m, np.clip(distance / radius, 0.0, 1.0), 0.0)
    return out.reshape(mask.shape)


# -------------------------------------------------------------------------------------------------------- edits


EDIT_FIELDS = ("basecolor", "hue_shift", "roughness", "roughness_scale", "metallic")


@dataclass
class MaterialEdit:
    """What to change. Values are in the conventions' ranges; None leaves a quantity as it is."""

    basecolor: tuple[float, float, float] | None = None  # sRGB: replaces the basecolor
    hue_shift: float | None = None  # degrees: rotates the basecolor's hue, keeping its texture
    roughness: float | None = None  # replaces the roughness
    roughness_scale: float | None = None  # multiplies it (clipped to [0, 1])
    metallic: float | None = None  # replaces the metallic value

    def __post_init__(self) -> None:
        if self.basecolor is not None and self.hue_shift is not None:
            raise ValueError("give a new basecolor or a hue shift, not both")
        if self.roughness is not None and self.roughness_scale is not None:
            raise ValueError("give a roughness value or a roughness scale, not both")
        for name in ("roughness", "metallic"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if self.roughness_scale is not None and not (np.isfinite(self.roughness_scale) and self.roughness_scale >= 0):
            raise ValueError(f"roughness scale must be >= 0, got {self.roughness_scale}")
        if self.is_empty():
            raise ValueError("nothing to edit: give a basecolor, hue shift, roughness or metallic value")

    def is_empty(self) -> bool:
        return all(getattr(self, k) is None for k in EDIT_FIELDS)

    def passes(self) -> tuple[str, ...]:
        """The G-buffer passes this edit changes."""
        changed = []
        if self.basecolor is not None or self.hue_shift is not None:
            changed.append("basecolor")
        if self.roughness is not None or self.roughness_scale is not None:
            changed.append("roughness")
        if self.metallic is not None:
            changed.append("metallic")
        return tuple(changed)


def shift_hue(rgb: np.ndarray, degrees: float) -> np.ndarray:
    """(..., 3) sRGB in [0, 1] -> the colours with the HSV hue turned by ``degrees`` (value, saturation kept)."""
    import cv2

    flat = np.ascontiguousarray(rgb.reshape(-1, 1, 3), dtype=np.float32)
    hsv = cv2.cvtColor(flat, cv2.COLOR_RGB2HSV)  # float input: H in [0, 360)
    hsv[..., 0] = np.mod(hsv[..., 0] + degrees, 360.0)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB).reshape(rgb.shape).clip(0.0, 1.0)


def edited_values(gbuffers: Mapping[str, np.ndarray], edit: MaterialEdit) -> dict[str, np.ndarray]:
    """{pass: (T, h, w, C)} the edited passes' values everywhere (before blending with the selection)."""
    out: dict[str, np.ndarray] = {}
    if edit.basecolor is not None:
        out["basecolor"] = np.broadcast_to(np.asarray(edit.basecolor, np.float32), gbuffers["basecolor"].shape)
    elif edit.hue_shift is not None:
        out["basecolor"] = shift_hue(gbuffers["basecolor"], edit.hue_shift)
    if edit.roughness is not None:
        out["roughness"] = np.full_like(gbuffers["roughness"], edit.roughness)
    elif edit.roughness_scale is not None:
        out["roughness"] = np.clip(gbuffers["roughness"] * edit.roughness_scale, *VALUE_RANGE["roughness"])
    if edit.metallic is not None:
        out["metallic"] = np.full_like(gbuffers["metallic"], edit.metallic)
    return out


def apply_material_edit(
    gbuffers: Mapping[str, np.ndarray], weights: np.ndarray, edit: MaterialEdit
) -> dict[str, np.ndarray]:
    """G-buffers with ``edit`` blended in by ``weights`` ((T, h, w) or (h, w) in [0, 1]; 0 = untouched).

    Passes the edit does not name are returned as they are (same arrays).
    """
    missing = [k for k in edit.passes() if k not in gbuffers]
    if missing:
        raise ValueError(f"the G-buffers lack {', '.join(missing)}, which the edit changes")
    out = dict(gbuffers)
    for key, value in edited_values(gbuffers, edit).items():
        original = gbuffers[key]
        w = np.broadcast_to(np.asarray(weights, np.float32), original.shape[:-1])[..., None]
        out[key] = np.where(w > 0, original * (1 - w) + value * w, original).astype(original.dtype)
    return out


def edit_material(
    inverse: InverseRenderingPipeline | None,
    forward: ForwardRenderingPipeline,
    source: GBufferSource,
    selection: np.ndarray | Callable[[dict[str, np.ndarray]], np.ndarray],
    edit: MaterialEdit,
    envmap: Lighting | Sequence[Lighting] = None,
    *,
    feather_px: float = 2.0,
    seed: int = 0,
    **options,
) -> EditOutput:
    """Estimate (or take) the G-buffers of ``source``, apply ``edit`` inside ``selection`` and render before/after.

    ``source``: an image, frames or video (estimated with ``inverse``) or {pass: (T, h, w, C)} G-buffers.
    ``selection``: a bool mask (h, w) or (T, h, w), or a function of the G-buffers returning one (e.g.
    ``lambda g: select_by_color(g["basecolor"], (0.8, 0.1, 0.1))``). Returns an
    :class:`~diffusion_renderer.apps.before_after.EditOutput`. ValueError for a wrong-sized or empty selection.
    """
    from diffusion_renderer.apps.before_after import render_before_after, scene_gbuffers

    gbuffers = scene_gbuffers(inverse, source, seed=seed, **options)
    mask = selection(gbuffers) if callable(selection) else np.asarray(selection, dtype=bool)
    mask = check_selection(mask, gbuffers["basecolor"].shape[:3])
    edited = apply_material_edit(gbuffers, feather(mask, feather_px), edit)
    return render_before_after(forward, gbuffers, edited, mask[..., None], envmap, seed=seed, **options)


def check_selection(mask: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """A (h, w) or (T, h, w) selection broadcast to ``shape`` (T, h, w); ValueError if its size differs or if it
    is empty."""
    mask = np.asarray(mask, dtype=bool)
    count, height, width = shape
    if mask.shape[-2:] != (height, width):
        raise ValueError(f"the mask is {mask.shape[-1]}x{mask.shape[-2]}, the G-buffers are {width}x{height}")
    if mask.ndim == 3 and mask.shape[0] not in (1, count):
        raise ValueError(f"the mask has {mask.shape[0]} frames, the clip {count}")
    mask = np.broadcast_to(mask, shape)
    if not mask.any():
        raise ValueError("the selection is empty: no pixel to edit")
    return mask
