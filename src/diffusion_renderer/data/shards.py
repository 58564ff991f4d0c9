"""Training shards: one clip per safetensors file, every input the trainer needs already encoded, no image codecs.

::

    DATA/{split}/shards/scene_{seed:08d}.safetensors

Tensors, each (T, C, H, W) and quantised like the package's image files (so a clip costs ~1.5 MB a frame at
256², plus 1.2 MB of float16 HDR with the hint and 0.6 MB for the fixed-camera hint, and reading it is a memcpy):

* ``rgb`` uint8: the sRGB display frame the models see; ``basecolor``, ``roughness``, ``metallic`` uint8 [0, 1];
* ``normal``, ``depth`` uint16: ``to_unit`` of [-1, 1] (16 bits as their PNGs);
* ``env_ldr``, ``env_log`` uint8: the forward model's lighting conditions of each frame, projected into the
  frame's camera (``mitsuba_render.environment_hdr``), so training needs neither the HDRI nor the projection;
* ``mask`` uint8: 1 where a surface is seen;
* ``rgb_linear``, ``env_hdr`` float16: the frame's linear HDR radiance and its camera-frame HDR environment
  (clamped at float16's largest value, far above what either encoding resolves). Light transport is linear, so
  scaling both by one factor is the same scene under a brighter or dimmer light: the trainer's exact exposure
  augmentation (``training/frames.py``) re-encodes ``rgb``, ``env_ldr`` and ``env_log`` from them. Shards
  written before they existed lack them; everything else reads such shards as before.
* ``shading`` uint8 and ``shading_linear`` float16: the split-sum shading hint of the frame (``render/hint.py``,
  from the stored G-buffers and ``env_hdr``, exactly as a pipeline computes it at inference) for forward models
  that take it; display-encoded like ``rgb``, and linear for the exposure augmentation. Older shards lack them.
  The metadata's ``hint_version`` says which version of the hint they hold (absent: version 1).
* ``shading_fixed`` uint8 and ``shading_fixed_linear`` float16: the same hint shaded through the fixed
  ``DEFAULT_FOV_DEG`` camera instead of the clip's own field of view (and, version 4, without shadows). It is what
  a hint falls back to when the camera cannot be read off the G-buffers, as on the inverse model's predictions:
  the forward trainer mixes it in (``--hint-fixed-camera``) so the model learns to render from both. Older shards
  lack it.

Shards made with ``make-data --no-hints`` (``encode_clip(hints=False)``) hold neither hint: data for inverse
training alone, rendered without the hints' shadow marching; a forward trainer that takes the hint refuses them.

``env_nrm`` is the same for every clip (``lighting.envmap.envmap_directions``) and not stored. The metadata holds
the clip's meta record (seed, lighting, scene spec). Written atomically: a shard that exists is complete, which
is how ``make-data --layout shards`` resumes and how a trainer reading a growing folder sees only whole clips.
Why not the PNG/EXR layout: GPU hosts carry no OpenCV/OpenEXR, and the trainer would decode the same PNGs
every epoch.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch

from diffusion_renderer.conventions import CHANNELS, GBUFFER_KEYS, VALUE_RANGE, display_rgb, from_unit, to_unit
from diffusion_renderer.io.tagged_safetensors import read_tagged, write_tagged

FORMAT: Final[str] = "diffusion_renderer.TrainingShard/1"
SHARD_DIR: Final[str] = "shards"
ENV_KEYS: Final[tuple[str, ...]] = ("env_ldr", "env_log")
SHARD_KEYS: Final[tuple[str, ...]] = ("rgb", *GBUFFER_KEYS, *ENV_KEYS, "mask")
HINT_KEYS: Final[tuple[str, ...]] = ("shading",)  # optional (render/hint.py)
FIXED_CAMERA_HINT: Final[str] = "shading_fixed"  # optional: the hint through the fixed default camera
HINT_VERSION_META: Final[str] = "hint_version"  # metadata field: render/hint.py's version of the stored hint
ENVMAP_METHOD_META: Final[str] = "envmap_method"  # metadata field: lighting.envmap's projection of the lighting
# float16 (exposure augmentation)
HDR_KEYS: Final[tuple[str, ...]] = ("rgb_linear", "env_hdr", "shading_linear", f"{FIXED_CAMERA_HINT}_linear")
WIDE_KEYS: Final[frozenset[str]] = frozenset({"normal", "depth"})  # 16-bit, as their PNG files
FLOAT16_MAX: Final[float] = float(torch.finfo(torch.float16).max)
_RANGES: Final[dict[str, tuple[float, float]]] = {**VALUE_RANGE, "mask": (0.0, 1.0)}


def hint_device() -> torch.device:
    """Where the data engine computes shading hints: the GPU when there is one (a prefilter per frame costs
    ~0.1 s on 2 CPU cores, beside the path tracer's ~0.1 s per frame on a GPU)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def clip_name(seed: int) -> str:
    return f"scene_{seed:08d}"


def shard_path(root: Path, split: str, clip: str) -> Path:
    return Path(root) / split / SHARD_DIR / f"{clip}.safetensors"


def is_packed(root: Path, split: str, clip: str) -> bool:
    """Whether the clip's shard exists (written atomically, so it is complete)."""
    return shard_path(root, split, clip).is_file()


def list_shards(root: Path, split: str) -> list[Path]:
    folder = Path(root) / split / SHARD_DIR
    return sorted(folder.glob("scene_*.safetensors")) if folder.is_dir() else []


def quantize(key: str, value: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(T, H, W, C) float in the range of ``key`` -> (T, C, H, W) uint8 / uint16 (16 bits for normal, depth)."""
    value = torch.as_tensor(np.asarray(value, dtype=np.float32)).permute(0, 3, 1, 2)
    unit = to_unit(key, value) if key in VALUE_RANGE else value.clamp(0, 1)
    if key in WIDE_KEYS:  # uint16 via int32: torch has no uint16 rounding ops on every version
        return torch.round(unit * 65535).to(torch.int32).to(torch.uint16)
    return torch.round(unit * 255).to(torch.uint8)


def store_hdr(value: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(T, H, W, 3) linear radiance -> (T, 3, H, W) float16, clamped to [0, float16 max]."""
    value = torch.as_tensor(np.asarray(value, dtype=np.float32)).permute(0, 3, 1, 2)
    return value.clamp(0.0, FLOAT16_MAX).to(torch.float16)


def dequantize(key: str, value: torch.Tensor) -> torch.Tensor:
    """Stored (..., C, H, W) integers -> float in the range of ``key`` (same shape, float32); float16 HDR
    tensors come back as float32 radiance."""
    if value.is_floating_point():
        return value.float()
    if value.dtype in (torch.uint16, torch.int16):  # int16: uint16 bits viewed for CUDA indexing (see FrameBank)
        unit = (value.view(torch.int16).to(torch.int32) & 0xFFFF).float() / 65535.0
    else:
        unit = value.float() / 255.0
    return from_unit(key, unit) if key in _RANGES else unit


def encode_clip(
    rgb_linear: np.ndarray,
    gbuffers: Mapping[str, np.ndarray],
    env_hdr: torch.Tensor | None,
    hints: bool = True,
) -> dict[str, torch.Tensor]:
    """One clip -> shard tensors. ``rgb_linear`` (T, H, W, 3) the rendered linear radiance (the models see its
    ``display_rgb``); ``gbuffers`` the passes and ``mask`` as the data engine stores them (T, H, W, C);
    ``env_hdr`` (T, H, W, 3) the camera-frame HDR environment (with it, the lighting conditions are stored too,
    and the shading hints unless ``hints`` is False: shards for inverse training alone, which reads no hint and
    so need not wait for the hints' shadow marching)."""
    from diffusion_renderer.lighting.envmap import EnvironmentConditions
    from diffusion_renderer.render.hint import HINT_VERSION, HintCamera, hint_camera, shading_hints

    rgb_linear = np.asarray(rgb_linear, dtype=np.float32)
    tensors = {"rgb": quantize("rgb", display_rgb(rgb_linear)), "rgb_linear": store_hdr(rgb_linear)}
    for key in (*GBUFFER_KEYS, "mask"):
        tensors[key] = quantize(key, gbuffers[key])
    if env_hdr is not None:
        env_hdr = torch.as_tensor(env_hdr, dtype=torch.float32).cpu()
        env = EnvironmentConditions.from_hdr(env_hdr)
        tensors["env_ldr"] = quantize("env_ldr", env.env_ldr.numpy())
        tensors["env_log"] = quantize("env_log", env.env_log.numpy())
        tensors["env_hdr"] = store_hdr(env_hdr)
    if env_hdr is not None and hints:
        device = hint_device()
        frames = {key: torch.as_tensor(np.asarray(gbuffers[key], dtype=np.float32)) for key in GBUFFER_KEYS}
        # the fixed camera (no shadows) is what inference falls back to where the fit fails; then the two are one
        camera, fixed = hint_camera(frames, HINT_VERSION), HintCamera()
        cameras = [camera] if camera == fixed else [camera, fixed]
        shaded = shading_hints(frames, env_hdr.to(device), HINT_VERSION, cameras)  # (T, H, W, 3) linear each
        for key, value in (("shading", shaded[0]), (FIXED_CAMERA_HINT, shaded[-1])):
            value = value.cpu()
            tensors[key] = quantize(key, display_rgb(value))
            tensors[f"{key}_linear"] = store_hdr(value)
    for key, value in tensors.items():
        expected = CHANNELS.get(key, 1 if key == "mask" else 3)
        if value.shape[1] != expected:
            raise ValueError(f"{key}: {value.shape[1]} channels, expected {expected}")
    return tensors


def write_shard(path: Path, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> Path:
    return write_tagged(path, tensors, FORMAT, meta)


def read_shard(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, meta) of a shard; ``ValueError`` naming the file when it is not one."""
    return read_tagged(path, FORMAT, "training shard")


def shard_meta(meta: Mapping[str, Any], clip: str, split: str) -> dict[str, Any]:
    """A clip's meta record for its shard (the full scene spec kept: it regenerates the clip), the version of
    the shading hint :func:`encode_clip` writes and the map projection its lighting was made with (shards from
    before the field: ``cubemap``)."""
    from diffusion_renderer.lighting.envmap import OWN_MODEL_METHOD
    from diffusion_renderer.render.hint import HINT_VERSION

    return {
        **meta,
        "clip": clip,
        "split": split,
        HINT_VERSION_META: HINT_VERSION,
        ENVMAP_METHOD_META: OWN_MODEL_METHOD,
    }


def hint_version_of(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> int | None:
    """The shading hint version of a shard's tensors; None without a hint (shards from before the field: 1)."""
    return int(meta.get(HINT_VERSION_META, 1)) if "shading" in tensors else None


def pack_folder(root: Path, split: str, progress: bool = False) -> int:
    """Shards for the folder-layout clips of ``split`` that have none yet (PNG/EXR -> shard); returns how many.

    The lighting conditions are recomputed from each clip's scene spec (HDRI path, rotations, camera poses).
    """
    from tqdm.auto import tqdm

    from diffusion_renderer.data.mitsuba_render import environment_hdr
    from diffusion_renderer.data.scenes import SceneSpec
    from diffusion_renderer.data.storage import finished_clips, read_clip, read_linear_rgb
    from diffusion_renderer.lighting.envmap import OWN_MODEL_METHOD

    todo = [clip for s, clip in finished_clips(root) if s == split and not is_packed(root, split, clip)]
    for clip in tqdm(todo, desc=f"packing {split} clips", disable=not progress or not todo):
        stored = read_clip(root, split, clip)
        height, width = stored.rgb.shape[1:3]
        env = environment_hdr(SceneSpec.from_dict(stored.meta["scene"]), height, width, method=OWN_MODEL_METHOD)
        linear = read_linear_rgb(root, split, clip)
        tensors = encode_clip(linear, stored.gbuffers, env)
        write_shard(shard_path(root, split, clip), tensors, shard_meta(stored.meta, clip, split))
    return len(todo)
