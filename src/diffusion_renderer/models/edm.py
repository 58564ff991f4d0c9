"""EDM preconditioning (Karras et al. 2022) in the official DiffusionRenderer parameterisation.

Small pure functions named after the math. The official inference takes them from diffusers'
``EDMEulerScheduler(sigma_max=80, sigma_min=0.02, sigma_data=0.5)`` ("epsilon" prediction); training uses the
same ones, so they live here once.

    D(x; sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x, c_noise(sigma))
"""

from __future__ import annotations

import math

import torch

from diffusion_renderer.conventions import RHO, SIGMA_DATA, SIGMA_MAX, SIGMA_MIN

Sigma = torch.Tensor | float


def c_skip(sigma: Sigma, sigma_data: float = SIGMA_DATA) -> Sigma:
    return sigma_data**2 / (sigma**2 + sigma_data**2)


def c_out(sigma: Sigma, sigma_data: float = SIGMA_DATA) -> Sigma:
    return sigma * sigma_data / (sigma**2 + sigma_data**2) ** 0.5


def c_in(sigma: Sigma, sigma_data: float = SIGMA_DATA) -> Sigma:
    return 1 / (sigma**2 + sigma_data**2) ** 0.5


def c_noise(sigma: Sigma) -> torch.Tensor:
    """Network timestep: 0.25 ln(sigma)."""
    return 0.25 * torch.log(torch.as_tensor(sigma))


def loss_weight(sigma: Sigma, sigma_data: float = SIGMA_DATA) -> Sigma:
    """EDM loss weighting lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 = 1 / c_out^2."""
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def denoised_from_output(x: torch.Tensor, output: torch.Tensor, sigma: Sigma, sigma_data: float = SIGMA_DATA):
    """x0 = c_skip x + c_out F (the "epsilon" branch of diffusers' ``precondition_outputs``)."""
    return c_skip(sigma, sigma_data) * x + c_out(sigma, sigma_data) * output


def karras_sigmas(
    num_steps: int, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX, rho: float = RHO
) -> torch.Tensor:
    """(sigma_max^(1/rho) + ramp (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho, then a final 0: (N + 1,)."""
    ramp = torch.linspace(0, 1, num_steps, dtype=torch.float64)
    max_inv, min_inv = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    sigmas = (max_inv + ramp * (min_inv - max_inv)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)]).float()


def init_noise_sigma(sigma_max: float = SIGMA_MAX) -> float:
    """Std of the initial latent: sqrt(sigma_max^2 + 1) (diffusers' quirk that the official code inherits)."""
    return math.sqrt(sigma_max**2 + 1)


def euler_step(x: torch.Tensor, denoised: torch.Tensor, sigma: Sigma, sigma_next: Sigma) -> torch.Tensor:
    """One Euler step of the probability-flow ODE dx/dsigma = (x - D) / sigma, from sigma to sigma_next."""
    return x + (x - denoised) / sigma * (sigma_next - sigma)
