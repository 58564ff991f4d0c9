"""Stages both pipelines share: cut a clip into windows, encode them, decode and re-join them."""

from __future__ import annotations

import torch

from diffusion_renderer.models.tokenizer import LatentTokenizer
from diffusion_renderer.pipelines.windows import TemporalPlan, blend_frames


def window_frames(video: torch.Tensor, plan: TemporalPlan, window: int) -> torch.Tensor:
    """(B, C, N, H, W) clip -> (B, C, L, H, W) frames of ``window`` (the last frame repeats past the end)."""
    index = torch.tensor(plan.frame_indices(window), device=video.device)
    return video.index_select(2, index)


def encode_windows(
    tokenizer: LatentTokenizer, video: torch.Tensor, plan: TemporalPlan, device: torch.device
) -> list[torch.Tensor]:
    """(B, 3, N, H, W) in [-1, 1] -> one latent (B, C, T_lat, h, w) per window, on ``device``."""
    return [tokenizer.encode(window_frames(video, plan, w).to(device)) for w in range(plan.num_windows)]


def decode_windows(tokenizer: LatentTokenizer, latents: list[torch.Tensor], plan: TemporalPlan) -> torch.Tensor:
    """One latent per window -> the clip (B, 3, output_frames, H, W), overlaps cross-faded, float32."""
    return blend_frames(plan, [tokenizer.decode(latent).float() for latent in latents])
