"""G-buffer edits rendered before and after: the shared back end of material editing and object insertion.

Both renders use the same lighting and the same noise seed, so the only difference between them is the edit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from diffusion_renderer.apps.relight import SHARED_OPTIONS
from diffusion_renderer.conventions import GBUFFER_KEYS
from diffusion_renderer.pipelines.image_processor import FramesInput
from diffusion_renderer.pipelines.pipeline_forward_rendering import ForwardRenderingPipeline, Lighting
from diffusion_renderer.pipelines.pipeline_inverse_rendering import InverseRenderingPipeline

GBufferSource = FramesInput | Mapping[str, np.ndarray]


@dataclass
class EditOutput:
    """``gbuffers`` / ``edited``: pass -> (T, h, w, C); ``mask``: (T, h, w, 1) bool, the pixels the edit touched;
    ``before`` / ``after``: one (T, h, w, 3) image stack in [0, 1] per lighting."""

    gbuffers: dict[str, np.ndarray]
    edited: dict[str, np.ndarray]
    mask: np.ndarray
    before: list[np.ndarray]
    after: list[np.ndarray]


def check_options(options: Mapping[str, object]) -> None:
    unknown = set(options) - set(SHARED_OPTIONS)
    if unknown:
        raise TypeError(f"unexpected options {sorted(unknown)} (allowed: {', '.join(SHARED_OPTIONS)})")


def scene_gbuffers(
    inverse: InverseRenderingPipeline | None, source: GBufferSource, *, seed: int = 0, **options
) -> dict[str, np.ndarray]:
    """G-buffers of ``source``: given ({pass: (T, h, w, C)}, used as they are) or estimated by ``inverse``."""
    check_options(options)
    if isinstance(source, Mapping):
        missing = [k for k in GBUFFER_KEYS if k not in source]
        if missing:
            raise ValueError(f"the G-buffers lack {', '.join(missing)}")
        return {k: np.asarray(source[k]) for k in GBUFFER_KEYS}
    if inverse is None:
        raise ValueError("an inverse pipeline is needed to estimate G-buffers from an image or video")
    return inverse(source, passes=GBUFFER_KEYS, generator=torch.Generator().manual_seed(seed), **options).gbuffers


def render_before_after(
    forward: ForwardRenderingPipeline,
    gbuffers: Mapping[str, np.ndarray],
    edited: Mapping[str, np.ndarray],
    mask: np.ndarray,
    envmap: Lighting | Sequence[Lighting] = None,
    *,
    seed: int = 0,
    **options,
) -> EditOutput:
    """Forward-render the original and the edited G-buffers under ``envmap`` with the same seed."""
    check_options(options)

    def render(buffers: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        return forward(dict(buffers), envmap, generator=torch.Generator().manual_seed(seed), **options).images

    return EditOutput(dict(gbuffers), dict(edited), mask, before=render(gbuffers), after=render(edited))
