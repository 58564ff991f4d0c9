"""Training data in memory: every clip of a data folder as quantised tensors, sampled into model-range batches.

A :class:`FrameBank` holds the shard tensors of N clips stacked as (N, T, C, H, W), and draws batches of images
(T = 1: one random frame of a random clip) or short clips (T consecutive frames). Batches come out as the model sees
its inputs: ``{key: (B, 3, T, H, W)}`` in [-1, 1] (conventions.to_model), ``env_nrm`` included.

Memory: a 256² frame is ~3.7 MB with every tensor a shard has, so the bank keeps only what its trainer reads
(:func:`bank_keys`): 1.4 MB for an inverse trainer, 2.4 MB for a forward one with exposure augmentation (which
re-makes the display encodings from the HDR tensors, so those are not kept). It lives on the GPU when it fits
(:func:`bank_device`), else in host memory: batches are then gathered there and moved to the generator's device
(measured 2026-12-04: two trainers side by side, each holding every tensor of 1,958 8-frame clips, needed 62 + 78 GB
and ran out of an H200's 140 GB).

Augmentations (all exact but the hint's camera):

* a horizontal mirror of everything (images, G-buffers, lighting conditions) with the normal's x negated is the
  same scene in a mirrored world; env_nrm needs no change (its x already flips with the columns);
* the hint's camera (``fixed_camera_share`` > 0, not exact): that share of the examples gets the shading hint shaded
  through the fixed default camera (the shards' ``shading_fixed``) instead of the clip's own. A version-3 hint
  falls back to that camera when the field of view cannot be read off the G-buffers, as on the inverse model's
  predictions, so a forward model trained on both renders well from either;
* exposure (``exposure_stops`` > 0): light transport is linear, so the frame's linear radiance and the HDR
  environment scaled by one factor k (log-uniform in ±stops, per example) are the same scene under a light k
  times as strong. ``rgb``, ``env_ldr``, ``env_log`` (and the shading hint, linear in the light too) are then
  re-encoded from the shards' float16 ``rgb_linear`` / ``env_hdr`` / ``shading_linear`` (clip + sRGB; Reinhard and
  log encodings), so the models cannot learn a light's
  power from which map it is and must read it from the conditions. The data engine's light ``intensity``
  (x0.5-2 per clip) does the same at render time, once per clip; this draws a new k at every visit.

Exposure normalisation (``exposure_level`` > 0, a forward model's setting, not an augmentation): after any
exposure gain, each example's light is scaled once more, so that its shading hint's level is the model's
(``render.hint.normalizing_gain``; the hint the example is given, own or fixed-camera), and its frame with it. The
network then sees every light at one level, as the pipeline gives it (it scales the frame back).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from diffusion_renderer.conventions import INVERSE_PASSES, display_rgb, to_model
from diffusion_renderer.data.shards import (
    FIXED_CAMERA_HINT,
    HINT_KEYS,
    SHARD_KEYS,
    dequantize,
    hint_version_of,
    list_shards,
    read_shard,
)
from diffusion_renderer.io.errors import InputError
from diffusion_renderer.lighting.envmap import env_ldr, env_log, envmap_directions
from diffusion_renderer.render.hint import hint_level, normalizing_gain

MODEL_KEYS = (*(k for k in SHARD_KEYS if k != "mask"), "env_nrm", *HINT_KEYS)
# key -> its HDR source
EXPOSED_FROM = {
    "rgb": "rgb_linear",
    "env_ldr": "env_hdr",
    "env_log": "env_hdr",
    "shading": "shading_linear",
    FIXED_CAMERA_HINT: f"{FIXED_CAMERA_HINT}_linear",
}
HINT_STORED = (*HINT_KEYS, FIXED_CAMERA_HINT)  # every hint a shard may hold (one version per shard)
INVERSE_KEYS = ("rgb", *INVERSE_PASSES)  # what an inverse trainer reads: the frame and its passes
GPU_BANK_SHARE = 0.35  # of the free GPU memory a bank may take: two side by side, and room for activations


def bank_keys(
    role: str, exposure_stops: float = 0.0, fixed_camera_share: float = 0.0, exposure_level: float = 0.0
) -> frozenset[str]:
    """The shard tensors a trainer of ``role`` reads: its model's inputs (in their HDR form with exposure
    augmentation or normalisation, whose display encodings are re-made from it) and the fixed-camera hint when it
    mixes it in."""
    keys = set(INVERSE_KEYS) if role == "inverse" else {k for k in MODEL_KEYS if k != "env_nrm"}
    if fixed_camera_share > 0 and role != "inverse":
        keys.add(FIXED_CAMERA_HINT)
    if exposure_stops > 0 or (exposure_level > 0 and role != "inverse"):
        keys |= {EXPOSED_FROM[k] for k in keys if k in EXPOSED_FROM}
    return frozenset(keys)


def tensors_nbytes(tensors: dict[str, torch.Tensor]) -> int:
    return sum(v.numel() * v.element_size() for v in tensors.values())


def bank_device(nbytes: int, device: torch.device | str) -> torch.device:
    """Where a bank of ``nbytes`` lives for a trainer on ``device``: there when it is the CPU or the bank takes at
    most ``GPU_BANK_SHARE`` of the GPU's free memory, else in host memory (batches are gathered there)."""
    device = torch.device(device)
    if device.type != "cuda":
        return device
    free, _ = torch.cuda.mem_get_info(device)
    return device if nbytes <= GPU_BANK_SHARE * free else torch.device("cpu")


def exposed(key: str, radiance: torch.Tensor) -> torch.Tensor:
    """Re-encode ``key`` (rgb, a hint, env_ldr or env_log) from scaled linear radiance (..., 3, H, W), in [0, 1]."""
    if key in ("rgb", *HINT_STORED):
        return display_rgb(radiance)  # as the shards store them
    return env_ldr(radiance) if key == "env_ldr" else env_log(radiance)


def exposure_gains(batch_size: int, stops: float, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """(B,) factors 2^u, u ~ U(-stops, stops): log-uniform exposure."""
    u = torch.rand(batch_size, generator=generator, device=device) * 2 - 1
    return torch.exp2(u * stops)


def indexable(value: torch.Tensor) -> torch.Tensor:
    """uint16 viewed as int16 (same bits): CUDA cannot gather uint16; ``dequantize`` reads both."""
    return value.view(torch.int16) if value.dtype == torch.uint16 else value


@dataclass
class FrameBank:
    """Quantised clips (N, T, C, H, W) per key, all the same size; ``names`` of the clips; ``hint_version``: the
    ``render/hint.py`` version of their shading hints (None without)."""

    tensors: dict[str, torch.Tensor]
    names: list[str] = field(default_factory=list)
    hint_version: int | None = None

    def __post_init__(self) -> None:
        self.tensors = {key: indexable(value) for key, value in self.tensors.items()}

    @property
    def num_clips(self) -> int:
        return next(iter(self.tensors.values())).shape[0]

    @property
    def clip_frames(self) -> int:
        return next(iter(self.tensors.values())).shape[1]

    @property
    def size(self) -> tuple[int, int]:
        return tuple(next(iter(self.tensors.values())).shape[-2:])

    @property
    def device(self) -> torch.device:
        return next(iter(self.tensors.values())).device

    @property
    def nbytes(self) -> int:
        return tensors_nbytes(self.tensors)

    def has(self, key: str) -> bool:
        """Whether the bank can give ``key``: stored, or re-made from its stored HDR form."""
        return key in self.tensors or EXPOSED_FROM.get(key, key) in self.tensors

    def missing_hdr(self) -> list[str]:
        """The HDR tensors that exposure augmentation needs and this bank lacks (shards made before they were
        stored)."""
        return sorted({src for key, src in EXPOSED_FROM.items() if key in self.tensors and src not in self.tensors})

    def add(self, clips: dict[str, torch.Tensor], names: list[str], hint_version: int | None = None) -> None:
        """Append clips (n, T, C, H, W) per key (a growing folder adds shards as they land). Keys the bank lacks
        are left out (every key must cover every clip); new clips lacking one of the bank's keys, or with hints of
        another version, are refused."""
        if missing := sorted(set(self.tensors) - set(clips)):
            raise ValueError(f"{', '.join(names)}: no {', '.join(missing)}, which the clips already loaded have")
        if self.hint_version is not None and hint_version != self.hint_version:
            raise ValueError(f"{', '.join(names)}: shading hints of version {hint_version}, not {self.hint_version}")
        for key in list(self.tensors):
            self.tensors[key] = torch.cat([self.tensors[key], indexable(clips[key]).to(self.device)])
        self.names.extend(names)

    def normalized_gain(
        self,
        take: Callable[[str], torch.Tensor],
        gain: torch.Tensor | None,
        fixed: torch.Tensor | None,
        level: float,
    ) -> torch.Tensor:
        """(B, 1, 1, 1, 1) factors on each example's light (``gain``, the exposure augmentation's, included) that
        bring the hint it is given to ``level``. ``take(key)``: its (B, T, C, H, W) stored values."""
        if missing := self.missing_hdr():
            raise ValueError(f"exposure normalisation needs {', '.join(missing)} in the shards")
        source = EXPOSED_FROM[HINT_KEYS[0]]
        if source not in self.tensors:
            raise ValueError("exposure normalisation needs the shading hint in the shards")
        hint = take(source).float()
        if fixed is not None:
            hint = torch.where(fixed[:, None, None, None, None], take(EXPOSED_FROM[FIXED_CAMERA_HINT]).float(), hint)
        gain = torch.ones(()) if gain is None else gain
        gain = gain.to(hint.device)
        return gain * normalizing_gain(hint_level(hint * gain, channel_dim=2), level).view(-1, 1, 1, 1, 1)

    def sample(
        self,
        batch_size: int,
        frames: int,
        generator: torch.Generator,
        keys: Iterable[str] | None = None,
        flip: bool = True,
        exposure_stops: float = 0.0,
        clips: torch.Tensor | None = None,
        fixed_camera_share: float = 0.0,
        exposure_level: float = 0.0,
    ) -> dict[str, torch.Tensor]:
        """A batch {key: (B, 3, T, H, W)} in [-1, 1]: random clips, random start, random mirror, with
        ``exposure_stops`` > 0 a random exposure, with ``fixed_camera_share`` > 0 that share of the hints
        through the fixed default camera, and with ``exposure_level`` > 0 every light brought to that hint level
        (module docstring).

        ``keys``: default every stored quantity (env_nrm with the lighting; a real-domain bank has none).
        ``clips``: (B,) clip indices to take instead of random ones (``batch_size`` must match).
        The draws and the batch are on ``generator``'s device; the clips are gathered where the bank lives."""
        if keys is None:
            keys = [k for k in MODEL_KEYS if self.has(k) or (k == "env_nrm" and self.has("env_ldr"))]
        keys = list(keys)  # read twice below
        frames = min(frames, self.clip_frames)
        device = generator.device
        if clips is None:
            clip = torch.randint(self.num_clips, (batch_size,), generator=generator, device=device)
        elif clips.shape != (batch_size,):
            raise ValueError(f"clips of shape {tuple(clips.shape)} for a batch of {batch_size}")
        else:
            clip = clips.to(device)
        start = torch.randint(self.clip_frames - frames + 1, (batch_size,), generator=generator, device=device)
        index = start[:, None] + torch.arange(frames, device=device)  # (B, T)
        mirror = torch.rand(batch_size, generator=generator, device=device) < (0.5 if flip else 0.0)
        gain = None
        if exposure_stops > 0:  # drawn only then: runs without it replay exactly
            if missing := self.missing_hdr():
                raise ValueError(f"exposure augmentation needs {', '.join(missing)} in the shards")
            gain = exposure_gains(batch_size, exposure_stops, generator, device).view(-1, 1, 1, 1, 1)
        fixed = None
        if fixed_camera_share > 0 and HINT_KEYS[0] in keys:  # drawn only then: runs without it replay exactly
            if not self.has(FIXED_CAMERA_HINT):
                raise ValueError(f"a fixed-camera hint share needs {FIXED_CAMERA_HINT} in the shards")
            fixed = torch.rand(batch_size, generator=generator, device=device) < fixed_camera_share
        height, width = self.size
        scaled = {}  # HDR source -> (B, T, 3, H, W) radiance x gain, gathered once per batch

        rows, cols = clip[:, None].to(self.device), index.to(self.device)

        taken: dict[str, torch.Tensor] = {}  # the normalisation reads the hint before it is gathered

        def take(key: str) -> torch.Tensor:  # (B, T, C, H, W) stored values, on the draws' device
            if key not in taken:
                taken[key] = self.tensors[key][rows, cols].to(device)
            return taken[key]

        if exposure_level > 0:
            gain = self.normalized_gain(take, gain, fixed, exposure_level)

        def gather(key: str) -> torch.Tensor:  # (B, T, C, H, W) in the key's range
            if key in self.tensors and (gain is None or key not in EXPOSED_FROM):
                return dequantize(key, take(key))
            source = EXPOSED_FROM[key]  # a bank of bank_keys(exposure) keeps only this form: gain 1 re-makes it
            if source not in scaled:
                scaled[source] = take(source).float() * (1.0 if gain is None else gain)
            return exposed(key, scaled[source])

        batch = {}
        for key in keys:
            if key == "env_nrm":
                nrm = envmap_directions(height, width, device=device).permute(2, 0, 1)  # (3, H, W)
                batch[key] = nrm[None, :, None].expand(batch_size, 3, frames, height, width)
                continue
            value = gather(key)
            if key == HINT_KEYS[0] and fixed is not None:
                value = torch.where(fixed[:, None, None, None, None], gather(FIXED_CAMERA_HINT), value)
            value = torch.where(mirror[:, None, None, None, None], value.flip(-1), value)
            if key == "normal":
                sign = torch.where(mirror, -1.0, 1.0).to(value)
                value = torch.cat([value[:, :, :1] * sign[:, None, None, None, None], value[:, :, 1:]], dim=2)
            batch[key] = to_model(key, value.transpose(1, 2))  # (B, 3, T, H, W)
        return batch


def stack_shards(
    paths: list[Path],
    progress: bool = False,
    first_frames: int | None = None,
    keys: Collection[str] | None = None,
) -> tuple[dict[str, torch.Tensor], list[str], int | None]:
    """Read shards and stack them: ({key: (n, T, C, H, W)}, clip names, shading hint version); shards of another
    size are refused by name. Only the keys every shard has are kept (a folder mixing shards made before and after
    ``env_hdr`` / ``rgb_linear`` existed stacks without them), and the hint only when every shard's has one version.

    ``first_frames``: keep only the first frames of every clip (validation uses frame 0 of mixed-length clips).
    ``keys``: keep only these (:func:`bank_keys`); a display encoding is left out when its HDR form is kept.
    Each key is written into one tensor as the shards are read, so the peak is the bank, not twice it.
    """
    stacked: dict[str, torch.Tensor] = {}
    reencoded: set[str] = set()  # HDR forms kept in place of their display encodings
    names, shape, versions = [], None, set()
    for i, path in enumerate(tqdm(paths, desc="shards", disable=not progress)):
        tensors, meta = read_shard(path)
        if first_frames is not None:
            tensors = {k: v[:first_frames] for k, v in tensors.items()}
        versions.add(hint_version_of(tensors, meta))  # of the shard as written, kept keys or not
        this = tuple(tensors["rgb"].shape)
        if shape is None:
            shape = this
            if keys is not None:
                kept = {k for k in tensors if k in keys}
                reencoded = {source for k, source in EXPOSED_FROM.items() if k in kept and source in kept}
                kept -= {k for k, source in EXPOSED_FROM.items() if source in reencoded}  # re-made from it
                tensors = {k: v for k, v in tensors.items() if k in kept}
            stacked = {k: v.new_empty((len(paths), *v.shape)) for k, v in tensors.items()}
        elif this != shape:
            raise InputError(path, f"clip of shape {this}, but the others are {shape} (one size per data folder)")
        for key in list(stacked):
            if key not in tensors and key in reencoded:  # its display form was left out for it
                raise InputError(path, f"no {key}, which the other shards have (re-make the shards)")
            if key not in tensors:  # a key some shard lacks is left out
                del stacked[key]
            elif tensors[key].shape != stacked[key].shape[1:]:
                expected = tuple(stacked[key].shape[1:])
                raise InputError(path, f"{key} of shape {tuple(tensors[key].shape)}, but the others' is {expected}")
            else:
                stacked[key][i] = tensors[key]
        names.append(meta.get("clip", path.stem))
    version = versions.pop() if len(versions) == 1 else None
    if version is None:
        hints = {*HINT_STORED, *(EXPOSED_FROM[k] for k in HINT_STORED)}
        stacked = {k: v for k, v in stacked.items() if k not in hints}
    return stacked, names, version


def load_frame_bank(
    root: Path,
    split: str = "train",
    device: torch.device | str = "cpu",
    progress: bool = False,
    first_frames: int | None = None,
    keys: Collection[str] | None = None,
    auto_device: bool = False,
) -> FrameBank:
    """All training clips of a data folder, packing folder-layout clips into shards first (see ``pack_folder``).
    ``keys``: the tensors to keep (default all); ``auto_device``: ``device`` only when the bank fits there
    (:func:`bank_device`), else host memory."""
    from diffusion_renderer.data.shards import pack_folder

    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "no such data folder")
    pack_folder(root, split, progress=progress)
    paths = list_shards(root, split)
    if not paths:
        raise InputError(root, f"no {split} clips (expected make-data output: {split}/meta or {split}/shards)")
    tensors, names, hint_version = stack_shards(paths, progress, first_frames, keys)
    if auto_device:
        device = bank_device(tensors_nbytes(tensors), device)
    return FrameBank({k: v.to(device) for k, v in tensors.items()}, names, hint_version)


def refresh_frame_bank(bank: FrameBank, root: Path, split: str = "train") -> int:
    """Add shards that appeared since the bank was built (a generator still writing); returns how many."""
    known = set(bank.names)
    new = [p for p in list_shards(root, split) if p.stem not in known]
    if new:
        bank.add(*stack_shards(new))
    return len(new)
