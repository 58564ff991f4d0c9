"""EDM training in the official parameterisation (Karras et al. 2022; Cosmos' ``EDMSDE`` and loss).

Small pure functions named after the math; the preconditioning (c_skip, c_out, c_in, c_noise) is the one the
sampler uses (models/edm.py), so training and inference cannot drift apart.

    sigma ~ exp(N(P_mean, P_std²)), clipped to [sigma_min, sigma_max]     (official: 0, 1, 2e-4, 80)
    x_sigma = x0 + sigma n
    D = c_skip x_sigma + c_out F(c_in x_sigma, c_noise)
    loss = lambda(sigma) ||D - x0||², lambda = 1 / c_out²   ==   ||F - (x0 - c_skip x_sigma) / c_out||²

Not official, optional (``pure_noise_fraction``): a share of the samples is drawn exactly as the sampler's first
step sees its input, sigma = sigma_max and x = n sqrt(sigma_max² + 1) with no x0 in it. At sigma = 80 an x0-noised
input still carries x0 / 80 in every value, which a network can read from ~200k values per frame; the sampler's
pure noise never does. A model used with few steps (the shipped ``tiny`` returns D(x_T; 80) by default) learned
to rely on that leak: its sigma-80 error from x0 + 80 n was two thirds (forward) and a fifth (inverse) of its
error from pure noise.

Not official, optional (``off_plane_weight``, inverse only): the loss weighted per pixel, ``w`` on the pixels whose
true normal leaves the frame's dominant surface normal by more than ``OFF_PLANE_DEG`` (objects, and a normal-mapped
ground's bumps) and 1 elsewhere, normalised to mean 1 per example. Most of a data-engine frame is ground, which the
shipped inverse model reads well (7.6° of normal error over the evaluation set) while its objects stay at 31.7°
(``eval``'s regions, ``benchmarks/TINY_HISTORY.md``, the twenty-second session): the uniform loss spends most of
its gradient where the model is already right.
"""

from __future__ import annotations

import math

import torch

from diffusion_renderer.conventions import SIGMA_DATA, SIGMA_MAX
from diffusion_renderer.models.edm import c_out, c_skip, init_noise_sigma

P_MEAN = 0.0
P_STD = 1.0
TRAIN_SIGMA_MIN = 2e-4
OFF_PLANE_DEG = 10.0  # a pixel this far from its frame's dominant normal is "off the plane" (off_plane_weights)


def sample_sigma_lognormal(
    batch_size: int,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    p_mean: float = P_MEAN,
    p_std: float = P_STD,
    sigma_min: float = TRAIN_SIGMA_MIN,
    sigma_max: float = SIGMA_MAX,
) -> torch.Tensor:
    """(B,) noise levels, log-normal and clipped to the official range."""
    log_sigma = torch.randn(batch_size, generator=generator, device=device) * p_std + p_mean
    return log_sigma.exp().clamp(sigma_min, sigma_max)


def add_noise(x0: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """x_sigma = x0 + sigma n, sigma (B,) broadcast over (B, C, T, H, W)."""
    return x0 + sigma.view(-1, *([1] * (x0.ndim - 1))) * noise


def edm_output_target(x0: torch.Tensor, noisy: torch.Tensor, sigma: torch.Tensor, sigma_data: float = SIGMA_DATA):
    """F* = (x0 - c_skip x_sigma) / c_out: the raw network output that makes D(x_sigma) = x0."""
    s = sigma.view(-1, *([1] * (x0.ndim - 1)))
    return (x0 - c_skip(s, sigma_data) * noisy) / c_out(s, sigma_data)


def edm_loss(
    output: torch.Tensor,
    x0: torch.Tensor,
    noisy: torch.Tensor,
    sigma: torch.Tensor,
    sigma_data: float = SIGMA_DATA,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B,) EDM-weighted denoising loss lambda(sigma) ||D - x0||², computed as ||F - F*||² (mean per sample);
    ``weight``: optional per-element weights (broadcast to the latent's shape)."""
    err = output.float() - edm_output_target(x0.float(), noisy.float(), sigma.float(), sigma_data)
    sq = err.square() if weight is None else err.square() * weight.float()
    return sq.flatten(1).mean(dim=1)


def off_plane_weights(normal: torch.Tensor, weight: float, threshold_deg: float = OFF_PLANE_DEG) -> torch.Tensor:
    """(B, 3, T, H, W) true unit normals (0 on background) -> (B, 1, T, H, W) per-pixel loss weights: ``weight``
    where the normal leaves its frame's dominant normal (the per-channel median over the frame's surface pixels)
    by more than ``threshold_deg``, 1 elsewhere (background included), normalised to mean 1 per example."""
    n = normal.float()
    surface = n.square().sum(dim=1, keepdim=True) > 0.25  # (B, 1, T, H, W); the background's normals are 0
    flat = n.permute(0, 2, 1, 3, 4).flatten(3)  # (B, T, 3, HW)
    on = surface.permute(0, 2, 1, 3, 4).flatten(3)  # (B, T, 1, HW)
    masked = torch.where(on, flat, torch.full_like(flat, float("nan")))
    dominant = torch.nan_to_num(masked.nanmedian(dim=3).values)  # (B, T, 3); a frame without surface: 0
    dominant = dominant / dominant.norm(dim=2, keepdim=True).clamp_min(1e-6)
    cos = (n * dominant.permute(0, 2, 1)[..., None, None]).sum(dim=1, keepdim=True)  # (B, 1, T, H, W)
    off = surface & (cos < math.cos(math.radians(threshold_deg)))
    w = torch.where(off, torch.full_like(cos, float(weight)), torch.ones_like(cos))
    return w / w.flatten(1).mean(dim=1).view(-1, 1, 1, 1, 1)


def pure_noise_inputs(
    noisy: torch.Tensor,
    sigma: torch.Tensor,
    noise: torch.Tensor,
    pure: torch.Tensor,
    sigma_max: float = SIGMA_MAX,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(noisy, sigma) with the samples flagged by ``pure`` (B,) replaced by the sampler's first input:
    sigma_max and ``noise`` sqrt(sigma_max² + 1), x0-free (see the module doc)."""
    flags = pure.view(-1, *([1] * (noisy.ndim - 1)))
    noisy = torch.where(flags, noise * init_noise_sigma(sigma_max), noisy)
    return noisy, torch.where(pure, torch.full_like(sigma, sigma_max), sigma)
