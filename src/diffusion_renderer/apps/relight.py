"""Relighting: inverse rendering then forward rendering of the estimated G-buffers under new lighting."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from diffusion_renderer.conventions import GBUFFER_KEYS
from diffusion_renderer.pipelines.image_processor import FramesInput
from diffusion_renderer.pipelines.pipeline_forward_rendering import ForwardRenderingPipeline, Lighting
from diffusion_renderer.pipelines.pipeline_inverse_rendering import InverseRenderingPipeline

# options both pipelines take, passed to each
SHARED_OPTIONS = (
    "num_inference_steps",
    "guidance_scale",
    "processing_resolution",
    "resize_mode",
    "num_frames",
    "chunk_mode",
    "overlap_latents",
    "fps",
    "progress",
)


@dataclass
class RelightOutput:
    """``gbuffers``: pass -> (T, h, w, C) as :class:`InverseRenderingOutput`; ``images``: one (T, h, w, 3) per
    lighting, in [0, 1], at the input's size."""

    gbuffers: dict[str, np.ndarray]
    images: list[np.ndarray]


def relight(
    inverse: InverseRenderingPipeline,
    forward: ForwardRenderingPipeline,
    image: FramesInput,
    envmap: Lighting | Sequence[Lighting] = None,
    *,
    seed: int = 0,
    rotate_light: bool = False,
    light_angle: float = 0.0,
    **options,
) -> RelightOutput:
    """Estimate the G-buffers of ``image`` (an image, frames or a video), then render them under ``envmap``.

    ``envmap`` as :class:`ForwardRenderingPipeline` (HDR arrays, ``None`` for random lighting, or a list).
    ``options`` go to both pipelines (``num_inference_steps``, ``processing_resolution``, ``num_frames``, ...).
    """
    unknown = set(options) - set(SHARED_OPTIONS)
    if unknown:
        raise TypeError(f"relight() got unexpected options {sorted(unknown)} (allowed: {', '.join(SHARED_OPTIONS)})")
    estimated = inverse(image, passes=GBUFFER_KEYS, generator=torch.Generator().manual_seed(seed), **options)
    rendered = forward(
        estimated.gbuffers,
        envmap,
        generator=torch.Generator().manual_seed(seed),
        rotate_light=rotate_light,
        light_angle=light_angle,
        **options,
    )
    return RelightOutput(gbuffers=estimated.gbuffers, images=rendered.images)
