"""Image processing around the networks: inputs to frames, any aspect ratio to the model size and back.

The official scripts stretch every input to 1280x704. Here the default is ``fit``: scale to fit inside the
model resolution (landscape or portrait to match the input), pad the rest by edge replication and flag it in
the DiT's padding-mask channel, then crop and resize back, so the output has the input's size and shape.
``stretch`` keeps the official behaviour. Resizing is torch's antialiased bilinear (what torchvision's
``Resize(antialias=True)`` computes), so the CPU path needs no torchvision.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from PIL import Image

from diffusion_renderer.conventions import CHANNELS, DEFAULT_RESOLUTION, MAX_RESOLUTION, RESOLUTION_MULTIPLE, from_unit

RESIZE_MODES = ("fit", "stretch")
FrameLike = Image.Image | np.ndarray | torch.Tensor | str | Path
FramesInput = FrameLike | Sequence[FrameLike]
Resolution = int | tuple[int, int] | Sequence[int] | None


@dataclass(frozen=True)
class FitPlan:
    """How one clip maps to the processing size and back."""

    original_size: tuple[int, int]  # (h, w) of the input
    processing_size: tuple[int, int]  # (H, W) the networks see
    resized_size: tuple[int, int]  # (h', w') of the content inside the processing frame
    padding: tuple[int, int, int, int]  # (top, bottom, left, right)
    mode: str

    @property
    def content_box(self) -> tuple[int, int, int, int]:
        """(top, bottom, left, right) slice bounds of the content in processing pixels."""
        top, _, left, _ = self.padding
        return top, top + self.resized_size[0], left, left + self.resized_size[1]


def round_up(value: float, multiple: int) -> int:
    return max(multiple, math.ceil(value / multiple) * multiple)


def processing_size(height: int, width: int, resolution: Resolution = None) -> tuple[int, int]:
    """(H, W) for an input of ``height`` x ``width``.

    ``None`` -> the model resolution 704x1280, turned portrait for portrait inputs; ``(H, W)`` -> that size,
    turned the same way; an int N -> longest side N with the aspect kept (rounded up to multiples of 16);
    0 -> the input size rounded up to multiples of 16.
    """
    if resolution is None:
        resolution = DEFAULT_RESOLUTION
    if isinstance(resolution, int):
        if resolution < 0:
            raise ValueError(f"resolution must be >= 0, got {resolution}")
        scale = 1.0 if resolution == 0 else resolution / max(height, width)
        size = (round_up(height * scale, RESOLUTION_MULTIPLE), round_up(width * scale, RESOLUTION_MULTIPLE))
    else:
        size_h, size_w = (int(v) for v in resolution)
        if (size_h < size_w) != (height < width) and height != width:
            size_h, size_w = size_w, size_h  # orientation follows the input
        size = (size_h, size_w)
    for side in size:
        if side % RESOLUTION_MULTIPLE or not 0 < side <= MAX_RESOLUTION:
            raise ValueError(
                f"processing size {size[0]}x{size[1]} is not allowed: sides must be multiples of "
                f"{RESOLUTION_MULTIPLE} up to {MAX_RESOLUTION}"
            )
    return size


def resize(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(T, C, h, w) -> (T, C, H, W), bilinear, antialiased when shrinking; a no-op at the same size."""
    if tuple(frames.shape[-2:]) == tuple(size):
        return frames
    dtype = frames.dtype
    out = F.interpolate(frames.float(), size=size, mode="bilinear", align_corners=False, antialias=True)
    return out.to(dtype)


def is_valid_blur(sigma: float) -> bool:
    """A Gaussian's sigma in pixels that :func:`gaussian_blur` and ``correction_blur`` take: finite and >= 0."""
    return bool(np.isfinite(sigma) and sigma >= 0)


def gaussian_blur(video: torch.Tensor, sigma: float) -> torch.Tensor:
    """(B, C, T, H, W) blurred over H and W by a Gaussian of ``sigma`` pixels (3 sigma wide, edges replicated).
    By hand: one separable convolution, and torchvision's (the library one) is not on the CPU path."""
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32, device=video.device)
    taps = torch.exp(-0.5 * (x / sigma) ** 2)
    taps = (taps / taps.sum()).to(video.dtype)
    b, c, t, h, w = video.shape
    planes = video.transpose(1, 2).reshape(b * t * c, 1, h, w)
    planes = F.conv2d(F.pad(planes, (radius, radius, 0, 0), mode="replicate"), taps.view(1, 1, 1, -1))
    planes = F.conv2d(F.pad(planes, (0, 0, radius, radius), mode="replicate"), taps.view(1, 1, -1, 1))
    return planes.reshape(b, t, c, h, w).transpose(1, 2)


def transfer_detail(target: torch.Tensor, guide: torch.Tensor, sigma: float) -> torch.Tensor:
    """(N, C, H, W) ``target`` given the detail of ``guide`` finer than a Gaussian of ``sigma`` pixels: ``target +
    highpass(guide - target)``, i.e. the target's coarse structure under the guide's fine one. Why: a model that makes
    each 8 x 8 token in one linear step leaves out the texture inside it, which the input image still has
    (``basecolor_detail`` of the inverse pipeline). 0 returns ``target``."""
    if sigma <= 0:
        return target
    difference = (guide.to(target) - target).unsqueeze(2)  # (N, C, 1, H, W): gaussian_blur's layout
    return target + (difference - gaussian_blur(difference, sigma)).squeeze(2)


Shift = int | tuple[int, int]  # pixels down and right: both, or (rows, columns)


def translate(video: torch.Tensor, shift: Shift) -> torch.Tensor:
    """(..., H, W) moved ``shift`` pixels down and right: ``out[y, x] = video[y - dy, x - dx]``, the rows and
    columns moved in mirrored from the edge. With half a token's block as ``shift``, the view's token grid falls
    between the plain view's: a network that makes its output token by token errs elsewhere (ensembles)."""
    dy, dx = (shift, shift) if isinstance(shift, int) else shift
    if dy == dx == 0:
        return video
    planes = video.reshape(-1, 1, *video.shape[-2:])
    planes = F.pad(planes, (dx, 0, dy, 0), mode="reflect")[..., : video.shape[-2], : video.shape[-1]]
    return planes.reshape(video.shape)


def translate_back(video: torch.Tensor, shift: Shift) -> torch.Tensor:
    """Undo :func:`translate`: ``out[y, x] = video[y + dy, x + dx]``; the last ``dy`` rows and ``dx`` columns,
    which the translated view pushed out of its frame, repeat its edge."""
    dy, dx = (shift, shift) if isinstance(shift, int) else shift
    if dy == dx == 0:
        return video
    planes = F.pad(video.reshape(-1, 1, *video.shape[-2:]), (0, dx, 0, dy), mode="replicate")
    return planes[..., dy:, dx:].reshape(video.shape)


def smooth_correction(clip: torch.Tensor, hint: torch.Tensor, sigma: float) -> torch.Tensor:
    """A hint-residual model's frame with its correction to the hint (``clip - hint``) low-passed.

    The network makes the correction token by token, each token one 8x8 block, and neighbouring blocks disagree
    at their borders (the blocks the model card shows); the hint's own full-resolution detail is kept. ``clip``
    and ``hint``: (B, 3, T, H, W) in model space; ``hint`` may hold more frames (the windows' padding)."""
    hint = hint[:, :, : clip.shape[2]].to(clip)
    return hint + gaussian_blur(clip - hint, sigma)


class DiffusionRendererImageProcessor(ConfigMixin):
    """Frames in, frames out: conversion, fit/stretch to the processing size, padding mask, restoration."""

    config_name = "image_processor_config.json"

    @register_to_config
    def __init__(self, resolution: tuple[int, int] = DEFAULT_RESOLUTION, resize_mode: str = "fit") -> None:
        super().__init__()
        if resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {resize_mode!r}")

    # ----------------------------------------------------------------------------------- conversion

    @staticmethod
    def to_frames(inputs: FramesInput) -> torch.Tensor:
        """Anything image-like -> (T, C, h, w) float32 in [0, 1] (C = 3, or 1 for single-channel arrays).

        Accepts a PIL image, an (h, w[, C]) / (T, h, w, C) array (uint8, uint16 or float in [0, 1]), a (C, h, w) /
        (T, C, h, w) tensor in [0, 1], an image or video path, or a list of frames.
        """
        if isinstance(inputs, (str, Path)):
            return _path_to_frames(Path(inputs))
        if isinstance(inputs, Image.Image):
            return _array_to_frames(np.asarray(inputs.convert("RGB")))
        if isinstance(inputs, np.ndarray):
            return _array_to_frames(inputs)
        if isinstance(inputs, torch.Tensor):
            return _tensor_to_frames(inputs)
        if isinstance(inputs, Sequence) and len(inputs) > 0:
            frames = [DiffusionRendererImageProcessor.to_frames(item) for item in inputs]
            sizes = {tuple(f.shape[1:]) for f in frames}
            if len(sizes) != 1:
                raise ValueError(f"frames of one clip must share their size and channels, got {sorted(sizes)}")
            return torch.cat(frames, dim=0)
        raise TypeError(f"cannot make frames from {type(inputs).__name__}")

    # -------------------------------------------------------------------------------------- fitting

    def plan(self, height: int, width: int, resolution: Resolution = None, resize_mode: str | None = None) -> FitPlan:
        mode = resize_mode or self.config.resize_mode
        if mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {mode!r}")
        size_h, size_w = processing_size(height, width, self.config.resolution if resolution is None else resolution)
        if mode == "stretch":
            return FitPlan((height, width), (size_h, size_w), (size_h, size_w), (0, 0, 0, 0), mode)
        scale = min(size_h / height, size_w / width)
        new_h = min(size_h, max(1, round(height * scale)))
        new_w = min(size_w, max(1, round(width * scale)))
        top, left = (size_h - new_h) // 2, (size_w - new_w) // 2
        padding = (top, size_h - new_h - top, left, size_w - new_w - left)
        return FitPlan((height, width), (size_h, size_w), (new_h, new_w), padding, mode)

    @staticmethod
    def preprocess(frames: torch.Tensor, plan: FitPlan) -> torch.Tensor:
        """(T, C, h, w) -> (T, C, H, W): resize the content, pad by edge replication."""
        out = resize(frames, plan.resized_size)
        top, bottom, left, right = plan.padding
        if any(plan.padding):
            out = F.pad(out.float(), (left, right, top, bottom), mode="replicate").to(frames.dtype)
        return out

    @staticmethod
    def padding_mask(plan: FitPlan, device: torch.device | str | None = None) -> torch.Tensor | None:
        """(1, 1, H, W) with 1 on padded pixels (the DiT's padding-mask channel); None when nothing is padded."""
        if not any(plan.padding):
            return None
        mask = torch.ones(1, 1, *plan.processing_size, device=device)
        top, bottom, left, right = plan.content_box
        mask[..., top:bottom, left:right] = 0
        return mask

    @staticmethod
    def postprocess(frames: torch.Tensor, plan: FitPlan) -> torch.Tensor:
        """(T, C, H, W) -> (T, C, h, w): drop the padding, resize back to the input size."""
        top, bottom, left, right = plan.content_box
        return resize(frames[..., top:bottom, left:right], plan.original_size)


def _array_to_frames(array: np.ndarray) -> torch.Tensor:
    if array.dtype == np.uint8:
        array = array.astype(np.float32) / 255.0
    elif array.dtype == np.uint16:
        array = array.astype(np.float32) / 65535.0
    else:
        array = array.astype(np.float32, copy=False)  # float32 input: no copy (0.6 GB for a 57-frame 720p clip)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[-1] not in (1, 3, 4):
        raise ValueError(f"expected an (h, w[, C]) or (T, h, w, C) array with C in 1, 3, 4; got {array.shape}")
    if array.shape[-1] == 4:  # composite over white, as the official loader does
        array = array[..., :3] * array[..., 3:] + (1 - array[..., 3:])
    return torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2)  # (T, C, h, w)


def _tensor_to_frames(tensor: torch.Tensor) -> torch.Tensor:
    if tensor.ndim == 3:
        tensor = tensor[None]
    if tensor.ndim != 4 or tensor.shape[1] not in (1, 3):
        raise ValueError(f"expected a (C, h, w) or (T, C, h, w) tensor with C in 1, 3; got {tuple(tensor.shape)}")
    return tensor.detach().float().cpu()


def _path_to_frames(path: Path) -> torch.Tensor:
    from diffusion_renderer.io.images import read_image
    from diffusion_renderer.io.video import is_video_file, read_video

    if is_video_file(path):
        frames, _ = read_video(path)
        return _array_to_frames(frames)
    return _array_to_frames(read_image(path))


# ------------------------------------------------------------------------------------------------ G-buffer inputs


def _is_file_encoding(value: object) -> bool:
    """Paths, PIL images and integer arrays hold the [0, 1] file encoding; float arrays/tensors the values."""
    first = value[0] if isinstance(value, Sequence) and not isinstance(value, str) and value else value
    return isinstance(first, (str, Path, Image.Image)) or (
        isinstance(first, np.ndarray) and not np.issubdtype(first.dtype, np.floating)
    )


def _channels_first(value: torch.Tensor) -> torch.Tensor:
    """Tensors (T, h, w, C) / (h, w, C) -> channel-first (T, C, h, w), as :meth:`to_frames` expects."""
    if value.ndim in (3, 4) and value.shape[-1] in (1, 3) and value.shape[-3] not in (1, 3):
        return value.movedim(-1, -3)
    return value


def gbuffer_to_frames(key: str, value: object) -> torch.Tensor:
    """One G-buffer input -> (T, C, h, w) float32 in the conventions' range of ``key`` (C = its channels).

    Keys outside the conventions (e.g. a foreground ``mask``) are taken as [0, 1] values, single channel.
    """
    encoded = _is_file_encoding(value)
    if isinstance(value, torch.Tensor):
        value = _channels_first(value)
    frames = DiffusionRendererImageProcessor.to_frames(value)
    if encoded and key in CHANNELS:
        frames = from_unit(key, frames)
    if CHANNELS.get(key, 1) == 1 and frames.shape[1] == 3:
        frames = frames.mean(dim=1, keepdim=True)
    return frames


def collect_gbuffers(
    gbuffers: Mapping[str, object], fixed_frame: int | None = None
) -> tuple[dict[str, torch.Tensor], tuple[int, int, int]]:
    """G-buffer inputs -> ({key: (T, C, h, w)}, (T, h, w)), checked to agree; ``fixed_frame`` repeats one frame."""
    frames = {key: gbuffer_to_frames(key, value) for key, value in gbuffers.items() if value is not None}
    if not frames:
        raise ValueError("no G-buffers given")
    shapes = {key: (f.shape[0], *f.shape[-2:]) for key, f in frames.items()}
    if len(set(shapes.values())) != 1:
        detail = ", ".join(f"{key} {n}x{h}x{w}" for key, (n, h, w) in shapes.items())
        raise ValueError(f"G-buffers differ in frame count or size (frames x height x width): {detail}")
    count, height, width = next(iter(shapes.values()))
    if fixed_frame is not None:
        if not 0 <= fixed_frame < count:
            raise ValueError(f"fixed frame {fixed_frame} is outside the clip's {count} frames")
        frames = {key: f[fixed_frame : fixed_frame + 1].expand(count, -1, -1, -1) for key, f in frames.items()}
    return frames, (count, height, width)
