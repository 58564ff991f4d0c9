"""Bundled CC0 environment-map presets and the one resolver for ``--envmap``-style arguments.

The presets live in ``lighting/hdri/`` (512 x 256 Radiance files, rebuilt by ``tools/make_hdri_presets.py``;
provenance and checksums in ``hdri/MANIFEST.csv``, licences in ``hdri/LICENSES.md``).

Official indices: the official forward script selects its lighting by index into ``ENV_LIGHT_PATH_LIST``
(0 sunny_vondelpark, 1 pink_sunrise, 2 street_lamp, 3 rosendal_plains_1, all Poly Haven 2k maps). We bundle
512 x 256 versions of 0-2. Index 3, rosendal_plains_1, is not available offline, so it maps to ``park``
(Poly Haven ``rooitou_park``): also an open outdoor scene under a clear sky with direct sun. Results for
index 3 therefore differ from the official ones by more than resolution.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import numpy as np

from diffusion_renderer.io.errors import InputError
from diffusion_renderer.io.hdr import HDR_SUFFIXES, read_hdr

PRESET_DIR: Final[Path] = Path(__file__).resolve().with_name("hdri")
OFFICIAL_ENVLIGHT_INDEX: Final[dict[int, str]] = {
    0: "sunny_vondelpark",
    1: "pink_sunrise",
    2: "street_lamp",
    3: "park",  # substitute for rosendal_plains_1 (see the module docstring)
}


def list_presets() -> list[str]:
    """Names of the bundled presets, sorted."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.hdr"))


def preset_path(name: str) -> Path:
    """File of a bundled preset (no existence check)."""
    return PRESET_DIR / f"{name}.hdr"


def resolve_envmap(spec: str | int) -> tuple[str, Path]:
    """(display name, file) of an official index ("0"-"3"), a preset name, or a path to a .hdr / .exr file."""
    text = str(spec).strip()
    if text.lstrip("+-").isdigit():
        index = int(text)
        if index not in OFFICIAL_ENVLIGHT_INDEX:
            raise InputError(text, f"official environment-map index must be one of {sorted(OFFICIAL_ENVLIGHT_INDEX)}")
        name = OFFICIAL_ENVLIGHT_INDEX[index]
        return name, preset_path(name)
    presets = list_presets()
    if text.lower() in presets:
        return text.lower(), preset_path(text.lower())
    path = Path(text).expanduser()
    if path.is_file():
        if path.suffix.lower() not in HDR_SUFFIXES:
            raise InputError(path, f"unsupported environment-map format {path.suffix!r} (expected .hdr or .exr)")
        return path.stem, path
    if path.suffix.lower() in HDR_SUFFIXES:
        raise InputError(path, "file not found")
    raise InputError(
        text,
        f"unknown environment map; use a preset ({', '.join(presets)}), an official index "
        f"({', '.join(map(str, OFFICIAL_ENVLIGHT_INDEX))}) or a path to a .hdr/.exr file",
    )


def load_envmap(spec: str | int) -> tuple[str, np.ndarray]:
    """(display name, (H, W, 3) float32 linear RGB) of anything :func:`resolve_envmap` accepts."""
    name, path = resolve_envmap(spec)
    return name, read_hdr(path)
