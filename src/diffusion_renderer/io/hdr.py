"""HDR environment maps on disk: Radiance ``.hdr`` and OpenEXR ``.exr`` -> float32 linear RGB, validated.

A map that cannot light a scene (unreadable, NaN/Inf, clearly negative, not a 2:1 equirect panorama) is
rejected with an :class:`InputError` naming the file; tiny negatives from lossy EXR compression (DWAB leaves
values down to about -0.004 in Blender's studio-light worlds) are clamped to 0 silently.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from diffusion_renderer.io.atomic import atomic_file
from diffusion_renderer.io.errors import InputError

HDR_SUFFIXES = (".hdr", ".exr")
NEGATIVE_TOLERANCE = 0.01  # values in [-0.01, 0) are compression noise, clamped to 0


def read_hdr(path: str | Path) -> np.ndarray:
    """(H, W, 3) float32 linear RGB of an equirectangular ``.hdr`` / ``.exr`` map (W = 2 H), validated."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in HDR_SUFFIXES:
        raise InputError(path, f"unsupported environment-map format {path.suffix!r} (expected .hdr or .exr)")
    if not path.is_file():
        raise InputError(path, "file not found")
    if path.stat().st_size == 0:
        raise InputError(path, "empty file")
    rgb = _read_radiance(path) if suffix == ".hdr" else _read_openexr(path)
    return validate_hdr(rgb, path)


def validate_hdr(rgb: np.ndarray, path: str | Path | None = None) -> np.ndarray:
    """Check an (H, W, 3) map (finite, not clearly negative, 2:1) and return it float32 with noise negatives = 0."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise InputError(path, f"expected an RGB image, got shape {rgb.shape}")
    rgb = np.asarray(rgb, dtype=np.float32)
    if not np.isfinite(rgb).all():
        raise InputError(path, f"contains {np.count_nonzero(~np.isfinite(rgb))} NaN or Inf values")
    low = float(rgb.min(initial=0.0))
    if low < -NEGATIVE_TOLERANCE:
        raise InputError(path, f"contains negative radiance (min {low:.4g} < -{NEGATIVE_TOLERANCE})")
    height, width = rgb.shape[:2]
    if width != 2 * height:
        raise InputError(path, f"not a 2:1 equirectangular map (width {width}, height {height})")
    if low < 0:
        rgb = np.maximum(rgb, 0.0)
    return np.ascontiguousarray(rgb)


def _read_radiance(path: Path) -> np.ndarray:
    import cv2  # here, not at the top: the env-map math works without OpenCV (GPU hosts)

    bgr = cv2.imread(str(path), cv2.IMREAD_ANYDEPTH | cv2.IMREAD_COLOR)
    if bgr is None or bgr.dtype != np.float32:
        raise InputError(path, "not a readable Radiance HDR file")
    return bgr[..., ::-1]


def _read_openexr(path: Path) -> np.ndarray:
    import OpenEXR  # lazily: the package stays importable where only .hdr maps are used

    try:
        with OpenEXR.File(str(path)) as exr:
            channels = {name: ch.pixels for name, ch in exr.channels().items()}
    except Exception as err:  # the binding raises plain exceptions for every kind of bad file
        raise InputError(path, f"not a readable OpenEXR file ({err})") from err
    return _exr_rgb(channels, path).astype(np.float32)


def _exr_rgb(channels: dict[str, np.ndarray], path: Path) -> np.ndarray:
    """RGB from the binding's channel dict: grouped "RGB"/"RGBA", separate "R", "G", "B", or luminance "Y"."""
    for key in ("RGB", "RGBA"):
        if key in channels:
            return channels[key][..., :3]
    if all(c in channels for c in "RGB"):
        return np.stack([channels[c] for c in "RGB"], axis=-1)
    if "Y" in channels:
        return np.repeat(channels["Y"][..., None], 3, axis=-1)
    raise InputError(path, f"no RGB channels (has {', '.join(sorted(channels))})")


def write_hdr(path: str | Path, rgb: np.ndarray) -> Path:
    """Write an (H, W, 3) linear RGB map as Radiance ``.hdr`` (RGBE, RLE), atomically."""
    path = Path(path)
    if path.suffix.lower() != ".hdr":
        raise InputError(path, "write_hdr writes Radiance files; use a .hdr name")
    rgb = np.asarray(rgb, dtype=np.float32)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise InputError(path, f"expected an (H, W, 3) RGB array, got shape {rgb.shape}")
    if not np.isfinite(rgb).all() or (rgb < 0).any():
        raise InputError(path, "radiance must be finite and non-negative")
    with atomic_file(path) as tmp:
        import cv2

        if not cv2.imwrite(str(tmp), np.ascontiguousarray(rgb[..., ::-1])):
            raise OSError(f"{path}: OpenCV could not write the file")
    return path
