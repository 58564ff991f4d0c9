"""The official DiffusionRenderer sampler: deterministic EDM Euler through diffusers' ``EDMEulerScheduler``.

Official behaviour kept: sigma_max 80, sigma_min 0.02, rho 7, Karras schedule, a final step to sigma 0,
initial noise std sqrt(sigma_max^2 + 1), guidance ``cond + g (cond - uncond)`` on the raw network output with
the unconditional branch zeroing the latent condition (mask channels included), the network timestep cast to
the model dtype, and the latent re-quantised to the model dtype after every step (bf16 in the official release).

Changed on purpose: the seed is honoured. The official ``generate_samples_from_batch`` ignores its ``seed`` and
draws the noise from the global RNG, so its outputs depend on call order; here the noise comes from the
``generator`` argument only (same seed, same device -> same output).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import EDMEulerScheduler
from diffusers.utils.torch_utils import randn_tensor
from tqdm.auto import tqdm

from diffusion_renderer.conventions import (
    DEFAULT_FPS,
    GUIDANCE_SCALE,
    NUM_INFERENCE_STEPS,
    RHO,
    SIGMA_DATA,
    SIGMA_MAX,
    SIGMA_MIN,
)
from diffusion_renderer.models.edm import c_in, denoised_from_output, euler_step
from diffusion_renderer.pipelines.windows import TemporalPlan, blend_latents

StepCallback = Callable[[int, dict[str, torch.Tensor]], None]


@dataclass(frozen=True)
class ConditionInputs:
    """Everything the DiT takes besides the noisy latent and the timestep (one branch of guidance)."""

    latent_condition: torch.Tensor | None  # (B, Cc, T, H, W)
    context_index: torch.Tensor | None = None  # (B, 1) long, inverse model only
    encoder_hidden_states: torch.Tensor | None = None  # (B, M, Dc); None = no cross-attention context
    fps: torch.Tensor | float | None = DEFAULT_FPS
    padding_mask: torch.Tensor | None = None  # (B|1, 1, H_px, W_px); None = zeros

    def unconditional(self) -> ConditionInputs:
        """The official conditioner's uncondition: latent condition and text context zeroed, the rest kept."""
        zero = None if self.latent_condition is None else torch.zeros_like(self.latent_condition)
        text = None if self.encoder_hidden_states is None else torch.zeros_like(self.encoder_hidden_states)
        return ConditionInputs(zero, self.context_index, text, self.fps, self.padding_mask)

    def model_kwargs(self) -> dict[str, Any]:
        return {
            "latent_condition": self.latent_condition,
            "context_index": self.context_index,
            "encoder_hidden_states": self.encoder_hidden_states,
            "fps": self.fps,
            "padding_mask": self.padding_mask,
        }


def make_scheduler(
    sigma_min: float = SIGMA_MIN,
    sigma_max: float = SIGMA_MAX,
    sigma_data: float = SIGMA_DATA,
    rho: float = RHO,
) -> EDMEulerScheduler:
    """The scheduler of the official ``DiffusionRendererModel`` (Karras schedule, epsilon prediction)."""
    return EDMEulerScheduler(
        sigma_min=sigma_min,
        sigma_max=sigma_max,
        sigma_data=sigma_data,
        rho=rho,
        sigma_schedule="karras",
        prediction_type="epsilon",
        final_sigmas_type="zero",
    )


def initial_latents(
    shape: tuple[int, ...],
    scheduler: EDMEulerScheduler,
    generator: torch.Generator | list[torch.Generator] | None,
    device: torch.device,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """x_T = eps * sqrt(sigma_max^2 + 1), eps ~ N(0, I) drawn in float32 from ``generator`` (or given)."""
    if noise is None:
        noise = randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
    elif tuple(noise.shape) != tuple(shape):
        raise ValueError(f"noise has shape {tuple(noise.shape)}, expected {tuple(shape)}")
    return noise.to(device=device, dtype=torch.float32) * scheduler.init_noise_sigma


def guided_output(cond: torch.Tensor, uncond: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    """Cosmos guidance convention: g = 0 is the plain conditional output."""
    return cond + guidance_scale * (cond - uncond)


@torch.no_grad()
def sample_edm_euler(
    model: torch.nn.Module,
    condition: ConditionInputs,
    latent_shape: tuple[int, ...],
    *,
    num_inference_steps: int = NUM_INFERENCE_STEPS,
    guidance_scale: float = GUIDANCE_SCALE,
    generator: torch.Generator | list[torch.Generator] | None = None,
    noise: torch.Tensor | None = None,
    scheduler: EDMEulerScheduler | None = None,
    callback: StepCallback | None = None,
    progress: bool = False,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Run the sampler; returns the final latent (B, C, T, H, W) in the model dtype.

    ``callback(i, tensors)`` sees, per step, ``x_t``, ``net_input``, ``net_timestep``, ``net_output_cond``,
    (``net_output_uncond``, ``guided_output`` with guidance) and ``x0_pred``.
    """
    if num_inference_steps < 1:
        raise ValueError("num_inference_steps must be >= 1")
    scheduler = scheduler or make_scheduler()
    device, dtype = device or model.device, model.dtype  # device: where offloaded models execute
    scheduler.set_timesteps(num_inference_steps, device=device)
    x = initial_latents(latent_shape, scheduler, generator, device, noise)
    uncondition = condition.unconditional() if guidance_scale != 0 else None

    for i, t in enumerate(tqdm(scheduler.timesteps, disable=not progress, desc="denoising")):
        x = x.to(dtype)  # the official loop keeps the latent in the model dtype between steps
        x_in = scheduler.scale_model_input(x, t)  # x * c_in
        t_in = t.reshape(1).to(device=device, dtype=dtype)
        out = model(x_in, t_in, **condition.model_kwargs(), return_dict=False)[0]
        record = {"x_t": x, "net_input": x_in, "net_timestep": t_in, "net_output_cond": out}
        if uncondition is not None:
            out_uncond = model(x_in, t_in, **uncondition.model_kwargs(), return_dict=False)[0]
            out = guided_output(out, out_uncond, guidance_scale)
            record.update(net_output_uncond=out_uncond, guided_output=out)
        step = scheduler.step(out, t, x, return_dict=True)
        if callback is not None:
            callback(i, {**record, "x0_pred": step.pred_original_sample})
        x = step.prev_sample
    return x


def _network_output(
    model: torch.nn.Module,
    x_in: torch.Tensor,
    t_in: torch.Tensor,
    condition: ConditionInputs,
    guidance_scale: float,
) -> torch.Tensor:
    out = model(x_in, t_in, **condition.model_kwargs(), return_dict=False)[0]
    if guidance_scale != 0:
        out_uncond = model(x_in, t_in, **condition.unconditional().model_kwargs(), return_dict=False)[0]
        out = guided_output(out, out_uncond, guidance_scale)
    return out


@torch.no_grad()
def sample_edm_euler_windows(
    model: torch.nn.Module,
    conditions: Sequence[ConditionInputs],
    plan: TemporalPlan,
    window_shape: tuple[int, ...],
    *,
    num_inference_steps: int = NUM_INFERENCE_STEPS,
    guidance_scale: float = GUIDANCE_SCALE,
    generator: torch.Generator | list[torch.Generator] | None = None,
    noise: torch.Tensor | None = None,
    scheduler: EDMEulerScheduler | None = None,
    progress: bool = False,
    device: torch.device | None = None,
) -> list[torch.Tensor]:
    """Sample every window of ``plan``; returns one (B, C, T_lat, h, w) latent per window, in the model dtype.

    Independent windows (``first``/``all``, or a single window) run :func:`sample_edm_euler` one after the
    other. Overlapping windows (``blend``) share one noise draw on the clip's latent timeline and, after every
    network evaluation, the ramp-weighted mean of their denoised estimates (:func:`blend_latents`), so their
    shared latents end up identical. ``noise``: (B, C, global_latents, h, w), else drawn from ``generator``.
    """
    if len(conditions) != plan.num_windows:
        raise ValueError(f"{len(conditions)} conditions for {plan.num_windows} windows")
    scheduler = scheduler or make_scheduler()
    device, dtype = device or model.device, model.dtype  # device: where offloaded models execute
    batch, channels, _, *grid = window_shape
    global_shape = (batch, channels, plan.global_latents, *grid)
    if noise is None:
        noise = randn_tensor(global_shape, generator=generator, device=device, dtype=torch.float32)
    elif tuple(noise.shape) != global_shape:
        raise ValueError(f"noise has shape {tuple(noise.shape)}, expected {global_shape}")
    span = plan.window_latents

    def window_noise(w: int) -> torch.Tensor:
        start = plan.latent_start(w)
        return noise[:, :, start : start + span]

    if not plan.shared:
        return [
            sample_edm_euler(
                model,
                condition,
                tuple(window_shape),
                num_inference_steps=num_inference_steps,
                guidance_scale=guidance_scale,
                noise=window_noise(w),
                scheduler=scheduler,
                progress=progress,
                device=device,
            )
            for w, condition in enumerate(conditions)
        ]

    if num_inference_steps < 1:
        raise ValueError("num_inference_steps must be >= 1")
    scheduler.set_timesteps(num_inference_steps, device=device)
    sigmas = scheduler.sigmas.to(device=device, dtype=torch.float32)
    xs = [window_noise(w).to(device) * scheduler.init_noise_sigma for w in range(plan.num_windows)]
    bar = tqdm(total=num_inference_steps * plan.num_windows, disable=not progress, desc="denoising windows")
    for i, t in enumerate(scheduler.timesteps):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        t_in = t.reshape(1).to(device=device, dtype=dtype)
        denoised = []
        for x, condition in zip(xs, conditions, strict=True):
            x = x.to(dtype)  # as the official loop: the latent lives in the model dtype between steps
            out = _network_output(model, x * c_in(sigma).to(dtype), t_in, condition, guidance_scale)
            denoised.append(denoised_from_output(x.float(), out.float(), sigma))
            bar.update(1)
        denoised = blend_latents(plan, denoised)
        xs = [euler_step(x.float(), d, sigma, sigma_next).to(dtype) for x, d in zip(xs, denoised, strict=True)]
    bar.close()
    return xs
