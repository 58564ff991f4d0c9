"""Latent-condition layouts of the official models (``prepare_diffusion_renderer_latent_conditions``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch


def assemble_latent_condition(
    latents: Mapping[str, torch.Tensor | None],
    keys: Sequence[str],
    latent_shape: Sequence[int],
    append_mask: bool = True,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Concatenate per-key latents in ``keys`` order, each followed by a one-channel presence mask.

    A key that is absent (or ``None``) contributes a zero latent and a zero mask, as in the official forward
    model (and in training, where condition dropout removes keys). ``latent_shape`` is (B, C, T, H, W).
    Returns (B, len(keys) * (C + append_mask), T, H, W).
    """
    batch, channels, *grid = latent_shape
    present = [latents[k] for k in keys if latents.get(k) is not None]
    device = device if device is not None else (present[0].device if present else "cpu")
    dtype = dtype if dtype is not None else (present[0].dtype if present else torch.float32)
    parts = []
    for key in keys:
        latent = latents.get(key)
        if latent is None:
            latent = torch.zeros(batch, channels, *grid, device=device, dtype=dtype)
            mask = torch.zeros(batch, 1, *grid, device=device, dtype=dtype)
        else:
            if tuple(latent.shape) != (batch, channels, *grid):
                raise ValueError(f"condition {key!r} has shape {tuple(latent.shape)}, expected {tuple(latent_shape)}")
            latent = latent.to(device=device, dtype=dtype)
            mask = torch.ones(batch, 1, *grid, device=device, dtype=dtype)
        parts.append(latent)
        if append_mask:
            parts.append(mask)
    return torch.cat(parts, dim=1)
