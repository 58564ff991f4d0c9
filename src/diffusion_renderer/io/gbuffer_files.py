"""G-buffer and frame files: one quantity per file, in the conventions' encodings.

PNG and JPEG hold the [0, 1] encoding of the value (``conventions.to_unit``: normal and depth as (x + 1) / 2),
PNG at the bit depth the conventions give (16 for normal and depth); EXR holds the values themselves.
Quantities outside the conventions (a foreground ``mask``) are stored as given, in [0, 1].
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from diffusion_renderer.conventions import CHANNELS, PNG_BIT_DEPTH, VALUE_RANGE, from_unit, to_unit
from diffusion_renderer.io.images import read_image, write_image

JPEG_QUALITY = 85  # what the official scripts write


def write_gbuffer_frame(path: str | Path, key: str, value: np.ndarray, *, quality: int = JPEG_QUALITY) -> None:
    """One (h, w, C) frame of ``key`` in its range -> ``path`` (format from the suffix), atomically."""
    path = Path(path)
    if path.suffix.lower() == ".exr":
        write_image(path, value)
        return
    unit = to_unit(key, value) if key in VALUE_RANGE else value
    bit_depth = PNG_BIT_DEPTH.get(key, 8) if path.suffix.lower() == ".png" else 8
    write_image(path, unit, bit_depth=bit_depth, quality=quality)


def read_gbuffer_frame(path: str | Path, key: str) -> np.ndarray:
    """Inverse of :func:`write_gbuffer_frame` (official JPEGs included): (h, w, C) in the range of ``key``."""
    path = Path(path)
    value = read_image(path, channels=CHANNELS.get(key, 1))
    if path.suffix.lower() == ".exr" or key not in VALUE_RANGE:
        return value
    return from_unit(key, value)
