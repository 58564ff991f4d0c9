"""``make-data``: sample scenes, path-trace them with Mitsuba 3, store RGB + ground-truth G-buffers.

Splits: validation is held out by lighting *and* by seed. The environment maps are split once (a seeded
choice of ``val_fraction`` of them, at least one) and every ``round(1 / val_fraction)``-th clip is a
validation clip lit only by held-out maps; training clips never see those maps. Clip i has seed
``seed + i``, so any clip can be regenerated from the manifest alone, and ``--hdri-dir`` swaps the maps
without code changes. Training clips also vary the lights (procedural maps, colour temperature, handedness:
``scenes.sample_scene``'s ``light_augment``), which turns a few maps into many lights; validation clips keep the
held-out maps as they are. ``--train-hdri-dir`` adds maps that light training clips only (never held out):
more lighting for training without changing the validation split.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm.auto import tqdm

from diffusion_renderer.conventions import depth_range, normalize_depth
from diffusion_renderer.io.errors import InputError
from diffusion_renderer.io.hdr import HDR_SUFFIXES
from diffusion_renderer.lighting.envmap import OWN_MODEL_METHOD

if TYPE_CHECKING:
    from diffusion_renderer.data.mitsuba_render import ClipBuffers
    from diffusion_renderer.data.scenes import SceneSpec

VARIANTS = {"cpu": "llvm_ad_rgb", "gpu": "cuda_ad_rgb", "auto": "auto"}
LAYOUTS = ("folder", "shards")


@dataclass
class MakeDataReport:
    written: int
    skipped: int
    seconds: float
    frames: int

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def environment_maps(hdri_dir: Path | None) -> list[Path]:
    """The maps to light scenes with: every .hdr/.exr in ``hdri_dir``, else the bundled CC0 presets."""
    if hdri_dir is None:
        from diffusion_renderer.lighting.presets import list_presets, resolve_envmap

        return [resolve_envmap(name)[1] for name in list_presets()]
    if not hdri_dir.is_dir():
        raise InputError(hdri_dir, "no such folder")
    maps = sorted(p for p in hdri_dir.iterdir() if p.suffix.lower() in HDR_SUFFIXES)
    if not maps:
        raise InputError(hdri_dir, f"no environment maps ({', '.join(HDR_SUFFIXES)}) in the folder")
    return maps


def split_maps(maps: Sequence[Path], val_fraction: float, seed: int) -> tuple[list[Path], list[Path]]:
    """(train maps, validation maps): a seeded choice of ``val_fraction`` of the maps is held out."""
    if len(maps) < 2 or val_fraction <= 0:
        return list(maps), list(maps)
    count = min(len(maps) - 1, max(1, round(len(maps) * val_fraction)))
    held = set(np.random.default_rng(seed).choice(len(maps), size=count, replace=False).tolist())
    return [m for i, m in enumerate(maps) if i not in held], [m for i, m in enumerate(maps) if i in held]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def training_only_maps(train_hdri_dir: Path | None, val_maps: Sequence[Path]) -> list[Path]:
    """The maps of ``train_hdri_dir`` (training clips only); a copy of a held-out map is refused, since it would
    leak validation lighting into training. Only byte-identical copies are caught: resampled ones are not."""
    if train_hdri_dir is None:
        return []
    extra = environment_maps(train_hdri_dir)
    held = {_digest(m): m for m in val_maps}
    for path in extra:
        if (twin := held.get(_digest(path))) is not None:
            raise InputError(path, f"is the held-out validation map {twin.name}: remove it from the training maps")
    return extra


def split_of(index: int, val_fraction: float) -> str:
    if val_fraction <= 0:
        return "train"
    period = max(2, round(1 / val_fraction))
    return "val" if index % period == period - 1 else "train"


def make_dataset(
    out: Path,
    *,
    scenes: int,
    frames: int = 1,
    resolution: int = 256,
    seed: int = 0,
    hdri_dir: Path | None = None,
    train_hdri_dir: Path | None = None,
    variant: str = "cpu",
    spp: int | None = None,
    val_fraction: float = 0.1,
    map_seed: int = 0,
    layout: str = "folder",
    only_split: str | None = None,
    light_family: str | None = None,
    progress: bool = True,
    hints: bool = True,
) -> MakeDataReport:
    """Generate ``scenes`` clips of ``frames`` frames at ``resolution``² into ``out`` (resumable).

    ``map_seed`` picks the held-out maps, independently of ``seed``: datasets made with other seeds share the
    split, so they can be combined (the small model's training data grows run by run). ``layout``: ``folder``
    (PNG/EXR files, see data/storage.py) or ``shards`` (training shards, see data/shards.py; no image codecs).
    ``only_split``: render only the clips of that split (the others are counted as skipped).
    ``train_hdri_dir``: more maps for the training clips only (added to the training share of ``hdri_dir``).
    ``light_family``: light every training clip with that procedural family (``scenes.LIGHT_FAMILIES``; validation
    clips keep the held-out maps).
    ``hints``: False writes shards without the forward model's shading hints (``encode_clip``): data for inverse
    training alone, rendered without the hints' GPU time.
    """
    from diffusion_renderer.data.mitsuba_render import environment_hdr, render_clip
    from diffusion_renderer.data.scenes import sample_scene
    from diffusion_renderer.data.shards import (
        clip_name,
        encode_clip,
        is_packed,
        shard_meta,
        shard_path,
        write_shard,
    )

    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if not hints and layout != "shards":  # folder clips store no hints: packing makes them (pack_folder)
        raise ValueError("--no-hints (hints=False) is for the shards layout: folder clips store no hints")
    is_finished = is_packed
    if layout == "folder":  # PNG/EXR codecs imported only here: GPU hosts may lack OpenCV/OpenEXR
        from diffusion_renderer.data.storage import is_finished, write_clip, write_manifest

    maps = environment_maps(hdri_dir)
    train_maps, val_maps = split_maps(maps, val_fraction, map_seed)
    train_maps = train_maps + training_only_maps(train_hdri_dir, val_maps)
    written = skipped = rendered_frames = 0
    start = time.perf_counter()
    for index in tqdm(range(scenes), desc="scenes", disable=not progress):
        split, clip_seed = split_of(index, val_fraction), seed + index
        clip = clip_name(clip_seed)
        if (only_split and split != only_split) or is_finished(out, split, clip):
            skipped += 1
            continue
        spec = sample_scene(
            clip_seed,
            resolution=(resolution, resolution),
            num_frames=frames,
            hdri_paths=val_maps if split == "val" else train_maps,
            light_augment=split == "train",  # validation: the held-out maps as they are
            light_family=light_family if split == "train" else None,
        )
        buffers = render_clip(spec, variant=VARIANTS[variant], spp=spp)
        gbuffers, meta = stored_record(spec, buffers, VARIANTS[variant])
        if layout == "folder":
            write_clip(out, split, clip, buffers.rgb_linear, gbuffers, meta)
        else:
            env = environment_hdr(spec, resolution, resolution, method=OWN_MODEL_METHOD)
            tensors = encode_clip(buffers.rgb_linear, gbuffers, env, hints=hints)
            write_shard(shard_path(out, split, clip), tensors, shard_meta(meta, clip, split))
        written += 1
        rendered_frames += frames
    if layout == "folder":
        write_manifest(out)
    return MakeDataReport(written, skipped, time.perf_counter() - start, rendered_frames)


def stored_record(spec: SceneSpec, buffers: ClipBuffers, variant: str) -> tuple[dict[str, np.ndarray], dict]:
    """The G-buffers (depth normalised to [-1, 1]) and the meta record that make-data stores for a rendered clip."""
    z, mask = torch.from_numpy(buffers.depth), torch.from_numpy(buffers.mask)
    gbuffers = {
        "basecolor": buffers.basecolor,
        "normal": buffers.normal,
        "depth": normalize_depth(z, mask).numpy(),
        "roughness": buffers.roughness,
        "metallic": buffers.metallic,
        "mask": buffers.mask,
    }
    meta = {
        "seed": spec.seed,
        "frames": spec.num_frames,
        "resolution": list(spec.resolution),
        "hdri": spec.lighting.name,
        "motion": spec.motion,
        "variant": variant,
        "depth_range": depth_range(z, mask),  # planar z of depth -1 and +1
        "env_rotation_deg": np.asarray(buffers.env_rotation_deg).tolist(),
        "c2w": np.asarray(buffers.c2w).tolist(),
        "scene": spec.to_dict(),
    }
    return gbuffers, meta


def show_dataset(root: Path, out: Path, count: int = 6, seed: int = 0) -> Path:
    """Contact sheet of ``count`` random clips (first, middle and last frame rows are not needed: frame 0)."""
    from diffusion_renderer.conventions import to_unit
    from diffusion_renderer.data.storage import finished_clips, read_clip
    from diffusion_renderer.io.contact_sheet import depth_to_color, save_contact_sheet

    clips = list(finished_clips(root))
    if not clips:
        raise InputError(root, "no finished clips (expected DATA/{train,val}/meta/*.json from make-data)")
    picks = np.random.default_rng(seed).choice(len(clips), size=min(count, len(clips)), replace=False)
    rows = []
    for index in sorted(picks.tolist()):
        split, name = clips[index]
        clip = read_clip(root, split, name)
        g = {key: value[0] for key, value in clip.gbuffers.items()}
        tiles = [
            ("rgb", clip.rgb[0]),
            ("basecolor", g["basecolor"]),
            ("normal", to_unit("normal", g["normal"])),
            ("depth", depth_to_color(to_unit("depth", g["depth"])[..., 0])),
            ("roughness", g["roughness"]),
            ("metallic", g["metallic"]),
            ("mask", g["mask"]),
        ]
        rows.append((f"{split}/{name} ({clip.meta.get('hdri', '')})", tiles))
    save_contact_sheet(out, rows)
    return out
