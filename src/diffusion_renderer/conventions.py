"""G-buffer conventions: the one place that defines names, ranges, frames, condition order and indices.

Every other module (models, pipelines, data engine, training, evaluation) imports from here.

Frames and ranges (what the official DiffusionRenderer models were trained with):

* ``basecolor``: sRGB, [0, 1], 3 channels.
* ``normal``: camera space, OpenGL axes (+x right, +y up, +z toward the camera), unit vectors in [-1, 1];
  stored in images as (n + 1) / 2.
* ``depth``: relative depth normalised to [-1, 1] as the official model expects; stored as (d + 1) / 2. Ground truth
  (data engine) is planar camera z mapped by :func:`normalize_depth`: per clip, the 2nd / 98th percentiles of
  the foreground z go to -1 / +1 (near = -1), clipped; background (no surface) is +1.
* ``roughness``, ``metallic``: [0, 1], one channel; replicated to 3 channels only at the model boundary.
* ``env_ldr``, ``env_log``: environment-map encodings in [0, 1]; ``env_nrm``: unit directions in [-1, 1].

At the model boundary every image is a 3-channel video (B, 3, T, H, W) in [-1, 1] (``x * 2 - 1``), except
``env_nrm``, which the official code feeds as raw unit vectors.
"""

from __future__ import annotations

from typing import Final, TypeVar

import numpy as np
import torch

Array = TypeVar("Array", np.ndarray, torch.Tensor)

# Inverse renderer: the row of the context ("domain") embedding that selects the G-buffer pass.
# Official GBUFFER_INDEX_MAPPING (diffusion_renderer_utils/rendering_utils.py); the table has 16 rows.
CONTEXT_INDEX: Final[dict[str, int]] = {
    "basecolor": 0,
    "metallic": 1,
    "roughness": 2,
    "normal": 3,
    "depth": 4,
    "diffuse_albedo": 5,
    "specular_albedo": 6,
}
NUM_CONTEXT_EMBEDDINGS: Final[int] = 16

# Passes the official inverse script runs by default, in its order.
INVERSE_PASSES: Final[tuple[str, ...]] = ("basecolor", "normal", "depth", "roughness", "metallic")

# Forward renderer: order of the condition latents in the 8 x (16 + 1) = 136 condition channels.
FORWARD_CONDITION_KEYS: Final[tuple[str, ...]] = (
    "basecolor",
    "normal",
    "metallic",
    "roughness",
    "depth",
    "env_ldr",
    "env_log",
    "env_nrm",
)
GBUFFER_KEYS: Final[tuple[str, ...]] = FORWARD_CONDITION_KEYS[:5]
LIGHTING_KEYS: Final[tuple[str, ...]] = FORWARD_CONDITION_KEYS[5:]
# This project's forward models may take a ninth condition after the official eight (not official; a model
# says so with its DiT config's ``shading_hint``): the split-sum shading of the G-buffers under the lighting,
# display-encoded like ``rgb`` (render/hint.py). It depends on the lighting, so it goes wherever the lighting goes.
SHADING_HINT_KEY: Final[str] = "shading"


def forward_condition_keys(shading_hint: bool = False) -> tuple[str, ...]:
    """The forward model's condition keys in channel order: the official eight, then the hint if it takes one."""
    return (*FORWARD_CONDITION_KEYS, SHADING_HINT_KEY) if shading_hint else FORWARD_CONDITION_KEYS


# Value range of each quantity in the package's own arrays (before the model's x * 2 - 1).
VALUE_RANGE: Final[dict[str, tuple[float, float]]] = {
    "rgb": (0.0, 1.0),
    SHADING_HINT_KEY: (0.0, 1.0),  # a display frame, like rgb
    "basecolor": (0.0, 1.0),
    "normal": (-1.0, 1.0),
    "depth": (-1.0, 1.0),
    "roughness": (0.0, 1.0),
    "metallic": (0.0, 1.0),
    "env_ldr": (0.0, 1.0),
    "env_log": (0.0, 1.0),
    "env_nrm": (-1.0, 1.0),
}
SINGLE_CHANNEL_KEYS: Final[frozenset[str]] = frozenset({"roughness", "metallic", "depth"})
# Channels of each quantity in the package's arrays (models always see 3).
CHANNELS: Final[dict[str, int]] = {key: 1 if key in SINGLE_CHANNEL_KEYS else 3 for key in VALUE_RANGE}
# Bits per channel when stored as PNG: 16 where 8-bit steps are visible (normals shade, depth re-projects).
PNG_BIT_DEPTH: Final[dict[str, int]] = {key: 16 if key in ("normal", "depth") else 8 for key in VALUE_RANGE}
# The model sees these in [-1, 1] as-is rather than through x * 2 - 1 (signed quantities; env_nrm: official).
SIGNED_KEYS: Final[frozenset[str]] = frozenset({"normal", "depth", "env_nrm"})

# EDM / sampler constants of the official release.
SIGMA_DATA: Final[float] = 0.5
SIGMA_MIN: Final[float] = 0.02
SIGMA_MAX: Final[float] = 80.0
RHO: Final[float] = 7.0
NUM_INFERENCE_STEPS: Final[int] = 15
GUIDANCE_SCALE: Final[float] = 0.0

# RoPE time positions are seq / fps * BASE_FPS; the official datasets always pass fps = 24.
BASE_FPS: Final[int] = 24
DEFAULT_FPS: Final[float] = 24.0

# Tokenizer (Cosmos-Tokenize1-CV8x8x8-720p): 57-frame chunks -> 8 latent frames; images are 1 frame.
PIXEL_CHUNK_DURATION: Final[int] = 57
SPATIAL_COMPRESSION: Final[int] = 8
TEMPORAL_COMPRESSION: Final[int] = 8
LATENT_CHANNELS: Final[int] = 16

# Official model resolution (H, W) and the DiT limits: multiples of 16, at most 1920 px per side.
DEFAULT_RESOLUTION: Final[tuple[int, int]] = (704, 1280)
RESOLUTION_MULTIPLE: Final[int] = 16
MAX_RESOLUTION: Final[int] = 1920

# Video windows: 57 frames (8 latent frames) as trained; neighbouring windows share 2 latent frames (17 px frames).
WINDOW_FRAMES: Final[int] = PIXEL_CHUNK_DURATION
WINDOW_OVERLAP_LATENTS: Final[int] = 2
CHUNK_MODES: Final[tuple[str, ...]] = ("blend", "first", "all")

# Official seed default and the mp4 rate of its outputs.
DEFAULT_SEED: Final[int] = 1000


def is_valid_fov(fov_deg: float) -> bool:
    """Whether a camera's vertical field of view (degrees) is one a pinhole camera can have: (0, 180)."""
    return 0.0 < fov_deg < 180.0


def mirror_pass(name: str, value: torch.Tensor) -> torch.Tensor:
    """(..., C, H, W) pass -> the same pass of the left-right mirrored scene: columns reversed and, for normals (+x
    right in the camera frame), x negated. Every other pass (and env_nrm, whose x flips with its columns) only
    reverses its columns."""
    value = value.flip(-1)
    if name == "normal":
        value = torch.cat([-value[..., :1, :, :], value[..., 1:, :, :]], dim=-3)
    return value


def context_index(pass_name: str) -> int:
    """Context-embedding row of an inverse-rendering pass."""
    try:
        return CONTEXT_INDEX[pass_name]
    except KeyError:
        known = ", ".join(CONTEXT_INDEX)
        raise ValueError(f"unknown G-buffer pass {pass_name!r} (known: {known})") from None


def _where(condition: Array, a: Array, b: Array) -> Array:
    return torch.where(condition, a, b) if isinstance(condition, torch.Tensor) else np.where(condition, a, b)


def linear_to_srgb(x: Array) -> Array:
    """Linear values -> the sRGB curve (IEC 61966-2-1; basecolor and display frames), arrays and tensors alike."""
    return _where(x <= 0.0031308, 12.92 * x, 1.055 * x.clip(0.0031308, None) ** (1.0 / 2.4) - 0.055)


def srgb_to_linear(x: Array) -> Array:
    """sRGB-encoded values -> linear, the inverse of :func:`linear_to_srgb`."""
    return _where(x <= 0.04045, x / 12.92, ((x.clip(0.04045, None) + 0.055) / 1.055) ** 2.4)


def scale_display(frame: torch.Tensor, factor: float) -> torch.Tensor:
    """A display frame (:func:`display_rgb`) of radiance L -> the display frame of ``factor`` x L. Exact but
    where the frame is clipped: a value at 1 stays at (at least) ``factor`` before the new clip."""
    return display_rgb(srgb_to_linear(frame.clamp(0.0, 1.0)) * factor)


def display_rgb(linear: Array) -> Array:
    """Linear HDR radiance -> the sRGB [0, 1] frame the models see (exposure 1, clipped, sRGB curve); arrays come
    back float32, tensors in their dtype (the data engine's frames, the exposure augmentation, the shading hint)."""
    if isinstance(linear, torch.Tensor):
        return linear_to_srgb(linear.clamp(0.0, 1.0))
    return linear_to_srgb(np.clip(linear, 0.0, 1.0)).astype(np.float32)


def to_model(key: str, x: torch.Tensor) -> torch.Tensor:
    """Package video (B, C, T, H, W) in the range of ``key`` -> the model's 3-channel [-1, 1] video."""
    y = x if key in SIGNED_KEYS else x * 2 - 1
    if y.shape[1] == 1:
        y = y.expand(-1, 3, *y.shape[2:])  # roughness, metallic, depth: one value, three identical channels
    return y


def from_model(key: str, y: torch.Tensor) -> torch.Tensor:
    """Decoded (B, 3, T, H, W) roughly in [-1, 1] -> the package's range and channel count for ``key``.

    Mirrors the official post-processing ``(1 + y).clamp(0, 2) / 2``; single-channel quantities average the
    three decoded channels (the official code keeps them as near-grey RGB).
    """
    if CHANNELS.get(key, 3) == 1:
        y = y.mean(dim=1, keepdim=True)
    y = y.clamp(-1, 1)
    return y if key in SIGNED_KEYS else (y + 1) / 2


def to_unit(key: str, x: torch.Tensor) -> torch.Tensor:
    """Package range -> [0, 1] for 8/16-bit image files (normal, depth: (x + 1) / 2)."""
    lo, hi = VALUE_RANGE[key]
    return ((x - lo) / (hi - lo)).clip(0, 1)  # .clip: numpy arrays and tensors alike


def from_unit(key: str, u: torch.Tensor) -> torch.Tensor:
    """[0, 1] from an image file -> the package range of ``key``."""
    lo, hi = VALUE_RANGE[key]
    return u * (hi - lo) + lo


DEPTH_QUANTILES: Final[tuple[float, float]] = (0.02, 0.98)


def depth_range(
    z: torch.Tensor, mask: torch.Tensor | None = None, quantiles: tuple[float, float] = DEPTH_QUANTILES
) -> tuple[float, float] | None:
    """(near, far): the clip's ``quantiles`` of the planar depth of its surfaces; None without any surface."""
    valid = torch.ones_like(z, dtype=torch.bool) if mask is None else mask.bool()
    samples = z[valid & torch.isfinite(z)].float()
    if samples.numel() == 0:
        return None
    if samples.numel() > 1_000_000:  # torch.quantile's input limit; a strided subset gives the same percentiles
        samples = samples[:: samples.numel() // 1_000_000 + 1]
    near, far = torch.quantile(samples, torch.tensor(quantiles, device=z.device)).tolist()
    return near, max(far, near + 1e-6)


def normalize_depth(
    z: torch.Tensor, mask: torch.Tensor | None = None, quantiles: tuple[float, float] = DEPTH_QUANTILES
) -> torch.Tensor:
    """Planar camera depth z > 0 (any shape, one clip) -> relative depth in [-1, 1], near = -1.

    Scale and shift come from the whole clip (not per frame) so a video keeps one depth scale; ``mask`` (same
    shape, nonzero = surface) excludes the background, which is set to +1 (farthest). Marigold-style affine
    normalisation (the official code carries a ``ScaleShiftDepthNormalizer`` with 2 % / 98 % quantiles).
    """
    bounds = depth_range(z, mask, quantiles)
    if bounds is None:
        return torch.ones_like(z)
    near, far = bounds
    depth = ((z - near) / (far - near) * 2 - 1).clamp(-1, 1)
    valid = torch.ones_like(z, dtype=torch.bool) if mask is None else mask.bool()
    return torch.where(valid & torch.isfinite(z), depth, torch.ones_like(depth))


def num_condition_channels(num_keys: int, latent_channels: int = LATENT_CHANNELS, with_mask: bool = True) -> int:
    """Channels of an assembled latent condition: each key is a latent plus an optional mask channel."""
    return num_keys * (latent_channels + int(with_mask))
