"""Outputs of the rendering pipelines (dataclasses, as diffusers' Marigold outputs)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from diffusers.utils import BaseOutput


@dataclass
class InverseRenderingOutput(BaseOutput):
    """G-buffers of one clip.

    Attributes:
        gbuffers: pass name -> (T, h, w, C) numpy array (or (T, C, h, w) tensor with ``output_type="pt"``) at the
            input's size, in the conventions' ranges (basecolor, roughness, metallic [0, 1]; normal, depth
            [-1, 1]; C = 3 for basecolor and normal, 1 for the others).
        latents: pass name -> one (1, C, T_lat, h, w) latent per window, with ``output_latent=True`` (with an
            ensemble: the first member's).
        uncertainty: with an ensemble (``ensemble_size > 1``, the shipped ``tiny``'s default), pass name -> the
            members' per-pixel standard deviation, shaped like the pass with one channel (normal: the angular
            spread in radians).
    """

    gbuffers: dict[str, np.ndarray | torch.Tensor]
    latents: dict[str, list[torch.Tensor]] | None = None
    uncertainty: dict[str, np.ndarray | torch.Tensor] | None = None


@dataclass
class ForwardRenderingOutput(BaseOutput):
    """Relit frames of one clip, one entry per lighting (environment map, or one random-lighting run).

    Attributes:
        images: (T, h, w, 3) numpy arrays in [0, 1] (or (T, 3, h, w) tensors with ``output_type="pt"``).
        latents: per lighting, one (1, C, T_lat, h, w) latent per window, with ``output_latent=True``.
    """

    images: list[np.ndarray | torch.Tensor]
    latents: list[list[torch.Tensor]] | None = field(default=None)
