"""On-disk layout of generated data: the folders the CLI already reads, plus what regenerates every clip.

::

    DATA/{split}/rgb/{clip}/frame_{t:04d}.png                      input frames (the model's sRGB view)
    DATA/{split}/hdr/{clip}/frame_{t:04d}.exr                      the same frames, linear HDR radiance
    DATA/{split}/gbuffer_frames/{clip}/0000.{t:04d}.{pass}.png     ground truth, as `inverse` writes it
    DATA/{split}/meta/{clip}.json                                  scene spec, seed, lighting, poses, depth scale
    DATA/manifest.jsonl                                            one line per finished clip

``split`` is ``train`` or ``val``. So ``diffusion-renderer inverse DATA/val/rgb`` estimates G-buffers of the
validation clips, ``diffusion-renderer forward DATA/val`` renders their ground-truth G-buffers, and the
evaluation compares either with the files here. A clip is finished when its meta file exists: it is written
last, after the clip's folders appeared (each by one atomic rename), so an interrupted run resumes by
regenerating only unfinished clips.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from diffusion_renderer.conventions import GBUFFER_KEYS
from diffusion_renderer.data.shards import display_rgb
from diffusion_renderer.io.atomic import atomic_directory, atomic_file
from diffusion_renderer.io.errors import InputError
from diffusion_renderer.io.gbuffer_files import read_gbuffer_frame, write_gbuffer_frame
from diffusion_renderer.io.images import read_image, write_image

SPLITS = ("train", "val")
MASK_KEY = "mask"
GBUFFER_FILE_KEYS = (*GBUFFER_KEYS, MASK_KEY)


def meta_path(root: Path, split: str, clip: str) -> Path:
    return root / split / "meta" / f"{clip}.json"


def is_finished(root: Path, split: str, clip: str) -> bool:
    return meta_path(root, split, clip).is_file()


@dataclass
class StoredClip:
    """A clip read back: frames (T, H, W, C) in the conventions' ranges, and its meta record."""

    name: str
    split: str
    rgb: np.ndarray  # (T, H, W, 3) sRGB [0, 1]
    gbuffers: dict[str, np.ndarray]  # pass -> (T, H, W, C); plus "mask" (T, H, W, 1)
    meta: dict


def write_clip(
    root: Path,
    split: str,
    clip: str,
    rgb_linear: np.ndarray,
    gbuffers: Mapping[str, np.ndarray],
    meta: Mapping,
) -> None:
    """Write one clip: RGB (sRGB PNG + linear EXR), G-buffers (conventions' PNG encodings), then its meta.

    ``gbuffers``: basecolor, normal, depth (already normalised to [-1, 1]), roughness, metallic, mask.
    """
    with atomic_directory(root / split / "rgb" / clip) as tmp:
        for t, frame in enumerate(display_rgb(rgb_linear)):
            write_image(tmp / f"frame_{t:04d}.png", frame)
    with atomic_directory(root / split / "hdr" / clip) as tmp:
        for t, frame in enumerate(rgb_linear):
            write_image(tmp / f"frame_{t:04d}.exr", frame.astype(np.float32))
    with atomic_directory(root / split / "gbuffer_frames" / clip) as tmp:
        for key in GBUFFER_FILE_KEYS:
            for t, frame in enumerate(gbuffers[key]):
                write_gbuffer_frame(tmp / f"0000.{t:04d}.{key}.png", key, frame)
    record = {"clip": clip, "split": split, **meta}
    with atomic_file(meta_path(root, split, clip)) as tmp:
        tmp.write_text(json.dumps(record, indent=1))


def write_manifest(root: Path) -> Path:
    """``manifest.jsonl`` from the meta files (one line per finished clip, the scene spec left out), atomically."""
    lines = []
    for split, clip in finished_clips(root):
        record = json.loads(meta_path(root, split, clip).read_text())
        lines.append(json.dumps({k: v for k, v in record.items() if k != "scene"}))
    path = root / "manifest.jsonl"
    with atomic_file(path) as tmp:
        tmp.write_text("".join(line + "\n" for line in lines))
    return path


def read_clip(root: Path, split: str, clip: str) -> StoredClip:
    meta = json.loads(meta_path(root, split, clip).read_text())
    rgb = np.stack([read_image(p) for p in sorted((root / split / "rgb" / clip).glob("frame_*.png"))])
    folder = root / split / "gbuffer_frames" / clip
    gbuffers = {
        key: np.stack([read_gbuffer_frame(p, key) for p in sorted(folder.glob(f"0000.*.{key}.png"))])
        for key in GBUFFER_FILE_KEYS
    }
    return StoredClip(clip, split, rgb, gbuffers, meta)


def read_linear_rgb(root: Path, split: str, clip: str) -> np.ndarray:
    """(T, H, W, 3) linear radiance of a clip (its EXR frames)."""
    paths = sorted((root / split / "hdr" / clip).glob("frame_*.exr"))
    if not paths:
        raise InputError(root / split / "hdr" / clip, "no linear EXR frames (frame_*.exr)")
    return np.stack([read_image(p) for p in paths]).astype(np.float32)


def finished_clips(root: Path) -> Iterator[tuple[str, str]]:
    """(split, clip) of every finished clip, sorted."""
    for split in SPLITS:
        folder = root / split / "meta"
        if folder.is_dir():
            for path in sorted(folder.glob("*.json")):
                yield split, path.stem
