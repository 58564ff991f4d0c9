"""Rebuild the bundled environment-map presets (``src/diffusion_renderer/lighting/hdri/``) from the CC0 maps in
``shared/data/hdri``: 512 x 256 Radiance files, downsampled by pixel-area averaging (energy preserving, never
clipped), plus ``MANIFEST.csv`` with provenance and checksums.

    python tools/make_hdri_presets.py [--source ../shared/data/hdri] [--out src/diffusion_renderer/lighting/hdri]

``--rest OUT`` writes the other maps (not presets, so never among the held-out validation maps of
``make-data``) the same way, for ``make-data --train-hdri-dir OUT``: more training lighting that the package
does not ship.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np

from diffusion_renderer.io.hdr import read_hdr, write_hdr

REPO = Path(__file__).resolve().parents[1]
SIZE = (512, 256)  # (width, height) of every bundled map

# (preset name, source file); the official demo maps first (indices 0-2 of the official forward script).
PRESETS: tuple[tuple[str, str], ...] = (
    ("sunny_vondelpark", "sunny_vondelpark_1k.hdr"),
    ("pink_sunrise", "pink_sunrise_1k.hdr"),
    ("street_lamp", "street_lamp_1k.hdr"),
    ("circus_arena", "circus_arena_1k.hdr"),
    ("park", "pmndrs_park.hdr"),  # stands in for official index 3 (rosendal_plains_1, not available offline)
    ("city", "pmndrs_city.hdr"),
    ("forest", "pmndrs_forest.hdr"),
    ("sunset", "pmndrs_sunset.hdr"),
    ("night", "pmndrs_night.hdr"),
    ("studio", "pmndrs_studio.hdr"),
    ("warehouse", "pmndrs_warehouse.hdr"),
    ("blender_courtyard", "blender_courtyard.exr"),
)
FIELDS = (
    "name",
    "file",
    "source",
    "source_file",
    "license",
    "original_size",
    "bundled_size",
    "processing",
    "kind",
    "polyhaven_asset",
    "bytes",
    "sha256",
    "notes",
)


def downsample(rgb: np.ndarray) -> np.ndarray:
    """Area-average to ``SIZE``: each output texel is the mean radiance of the input texels it covers."""
    out = cv2.resize(rgb, SIZE, interpolation=cv2.INTER_AREA)
    return np.maximum(out, 0.0)  # area weights are non-negative; this only guards float rounding


def build_one(name: str, src: Path, out_dir: Path) -> tuple[str, str]:
    """Write ``<name>.hdr``; returns (original size, processing note)."""
    rgb = read_hdr(src)  # validated, EXR compression negatives clamped to 0
    target = out_dir / f"{name}.hdr"
    original = f"{rgb.shape[1]}x{rgb.shape[0]}"
    if (rgb.shape[1], rgb.shape[0]) == SIZE and src.suffix.lower() == ".hdr":
        shutil.copyfile(src, target)
        return original, "byte-for-byte copy"
    write_hdr(target, downsample(rgb))
    steps = [f"read as float32 RGB; {original} -> {SIZE[0]}x{SIZE[1]} by area averaging (cv2.INTER_AREA)"]
    if src.suffix.lower() == ".exr":
        steps.insert(0, "OpenEXR DWAB negatives (>= -0.004) clamped to 0")
    steps.append("written as Radiance RGBE (RLE)")
    return original, "; ".join(steps)


def build_rest(source: Path, files: list[str], out_dir: Path) -> int:
    """The non-preset maps as ``SIZE`` Radiance files named after their source file."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for file in files:
        build_one(Path(file).stem, source / file, out_dir)
    total = sum(p.stat().st_size for p in out_dir.glob("*.hdr"))
    print(f"{len(files)} training-only maps, {total / 1e6:.2f} MB -> {out_dir}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=REPO.parent / "shared" / "data" / "hdri")
    parser.add_argument("--out", type=Path, default=REPO / "src" / "diffusion_renderer" / "lighting" / "hdri")
    parser.add_argument("--rest", type=Path, default=None, help="write the maps that are not presets here")
    args = parser.parse_args(argv)
    with open(args.source / "MANIFEST.csv", newline="") as f:
        source_rows = {row["file"]: row for row in csv.DictReader(f)}
    if args.rest is not None:
        return build_rest(args.source, sorted(set(source_rows) - {file for _, file in PRESETS}), args.rest)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, file in PRESETS:
        original, processing = build_one(name, args.source / file, args.out)
        bundled = args.out / f"{name}.hdr"
        src = source_rows[file]
        notes = src["notes"]
        if name == "park":
            notes += "; substitute for official envlight index 3 (rosendal_plains_1), which is not available"
        rows.append(
            {
                "name": name,
                "file": bundled.name,
                "source": src["source"],
                "source_file": f"{file} ({src['source_path']}; sha256 {src['sha256']})",
                "license": src["license"],
                "original_size": original,
                "bundled_size": f"{SIZE[0]}x{SIZE[1]}",
                "processing": processing,
                "kind": src["kind"],
                "polyhaven_asset": src["polyhaven_asset"],
                "bytes": bundled.stat().st_size,
                "sha256": hashlib.sha256(bundled.read_bytes()).hexdigest(),
                "notes": notes,
            }
        )
        print(f"{name:18s} {original:>9s} -> {bundled.stat().st_size / 1e6:.2f} MB")
    with open(args.out / "MANIFEST.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    total = sum(r["bytes"] for r in rows)
    print(f"{len(rows)} maps, {total / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
