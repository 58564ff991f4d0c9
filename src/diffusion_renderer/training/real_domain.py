"""The real-footage domain of the paper's joint training: real frames with pseudo-label G-buffers.

Real videos have no ground-truth G-buffers or lighting. As in DiffusionRenderer (Liang et al. 2025, Sec. 4.3),
the inverse renderer labels them, and a LoRA on the forward renderer learns to map those (imperfect) G-buffers
back to the real frames with the lighting conditions masked out, which adapts the forward model to real
appearance without touching the synthetic-trained base weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from diffusion_renderer.conventions import INVERSE_PASSES
from diffusion_renderer.data.shards import quantize
from diffusion_renderer.io.errors import InputError
from diffusion_renderer.training.frames import FrameBank


def square_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """(T, H, W, 3) -> (T, size, size, 3): centre square crop, then area/bilinear resize."""
    _, height, width, _ = frames.shape
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    x = torch.from_numpy(np.ascontiguousarray(frames[:, top : top + side, left : left + side])).permute(0, 3, 1, 2)
    x = F.interpolate(x.float(), size=(size, size), mode="area" if side > size else "bilinear", antialias=False)
    return x.permute(0, 2, 3, 1).clamp(0, 1).numpy()


def real_clips(paths: Sequence[Path], size: int, frames: int, max_clips_per_video: int = 8) -> list[np.ndarray]:
    """Clips (frames, size, size, 3) in [0, 1]: every image as a 1-frame clip repeated, videos cut into clips."""
    from diffusion_renderer.io.images import is_image_file, read_image
    from diffusion_renderer.io.video import read_video

    clips = []
    for path in paths:
        if is_image_file(path):
            image = square_frames(read_image(path)[None, ..., :3], size)
            clips.append(np.repeat(image, frames, axis=0))
            continue
        video, _ = read_video(path, max_frames=max_clips_per_video * frames * 4)  # (N, H, W, 3)
        starts = np.linspace(0, max(0, len(video) - frames), num=min(max_clips_per_video, len(video))).astype(int)
        for start in sorted(set(starts.tolist())):
            clip = video[start : start + frames]
            if len(clip) == frames:
                clips.append(square_frames(clip, size))
    if not clips:
        raise InputError(Path(paths[0]) if paths else Path("."), f"no clips of {frames} frames in the real inputs")
    return clips


def pseudo_label_bank(
    paths: Sequence[Path],
    inverse_spec: str | None,
    size: int = 256,
    frames: int = 4,
    device: torch.device | str = "cpu",
    steps: int | None = None,
    seed: int = 0,
) -> FrameBank:
    """A bank of real clips with G-buffers estimated by ``inverse_spec`` (no lighting keys)."""
    from diffusion_renderer.models.specs import DEFAULT_SPEC, load_model
    from diffusion_renderer.pipelines.pipeline_inverse_rendering import InverseRenderingPipeline

    model = load_model(inverse_spec or DEFAULT_SPEC, "inverse", device=device)
    pipe = InverseRenderingPipeline.from_model(model)
    parts: dict[str, list[torch.Tensor]] = {}
    for i, clip in enumerate(tqdm(real_clips(paths, size, frames), desc="pseudo-labels")):
        generator = torch.Generator(device=device).manual_seed(seed + i)
        out = pipe(clip, num_inference_steps=steps, generator=generator, processing_resolution=size, progress=False)
        values = {"rgb": clip, **{key: out.gbuffers[key] for key in INVERSE_PASSES}}
        for key, value in values.items():
            parts.setdefault(key, []).append(quantize(key, value))
    tensors = {key: torch.stack(value).to(device) for key, value in parts.items()}
    return FrameBank(tensors, [f"real_{i:04d}" for i in range(len(parts["rgb"]))])
