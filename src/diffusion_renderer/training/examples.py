"""Training examples in the inference condition layout (so a trained model runs in the pipelines unchanged).

* inverse: target = one G-buffer pass per example, chosen uniformly (official; ``pass_weights`` for another
  mix), named to the DiT by the context index; condition = the RGB latent. Whole-condition dropout 0.1
  (official conditioner rate) zeroes it, which is the sampler's unconditional branch, so guidance works.
* forward: target = the RGB latent; condition = 8 keys x (latent + presence mask) in the official order. Each
  key is dropped independently with p = 0.05 (latent and mask zeroed: a missing key at inference), and the
  whole condition with p = 0.05 (official rates). ``drop_lighting`` removes the three lighting keys of every
  example: the paper's real-footage domain, where no lighting is known. A model with the shading hint takes a
  ninth key (``conventions.forward_condition_keys``), dropped like the others and with the lighting.

Inverse, not official (``off_plane_weight``): per-pixel loss weights on the pixels off their frame's dominant
surface (losses.off_plane_weights), carried to the latent through the tokenizer, which must be pixel-aligned
(space-to-depth: each latent value is one pixel's).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from diffusion_renderer.conventions import (
    CONTEXT_INDEX,
    DEFAULT_FPS,
    FORWARD_CONDITION_KEYS,
    INVERSE_PASSES,
    LIGHTING_KEYS,
    SHADING_HINT_KEY,
)
from diffusion_renderer.models.space_to_depth import SpaceToDepthTokenizer
from diffusion_renderer.models.tokenizer import LatentTokenizer
from diffusion_renderer.pipelines.conditions import assemble_latent_condition
from diffusion_renderer.pipelines.sampling import ConditionInputs
from diffusion_renderer.training.losses import off_plane_weights

INVERSE_CONDITION_DROP = 0.1
FORWARD_KEY_DROP = 0.05
FORWARD_CONDITION_DROP = 0.05


@dataclass
class TrainingExample:
    """A clean target latent and everything the DiT takes besides the noisy latent and timestep."""

    x0: torch.Tensor  # (B, C, T, h, w)
    condition: ConditionInputs
    weight: torch.Tensor | None = None  # (B, C, T, h, w) per-element loss weights; None: uniform (official)


def bernoulli(batch_size: int, p: float, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """(B,) bool, True with probability ``p``."""
    return torch.rand(batch_size, generator=generator, device=device) < p


def _keep(drop: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) drop flags -> (B, 1, 1, 1, 1) multipliers in the dtype of ``like``."""
    return (~drop).to(like.dtype).view(-1, 1, 1, 1, 1)


def choose_passes(
    count: int, size: int, generator: torch.Generator, device: torch.device, weights: Sequence[float] | None = None
) -> torch.Tensor:
    """(B,) indices into ``count`` passes: uniform, or in proportion to ``weights`` (one per pass)."""
    if weights is None:  # no other draw than before: earlier runs replay exactly
        return torch.randint(count, (size,), generator=generator, device=device)
    if len(weights) != count or min(weights) < 0 or sum(weights) <= 0:
        raise ValueError(f"pass weights must be {count} non-negative numbers, not all 0; got {list(weights)}")
    probs = torch.tensor([float(w) for w in weights], device=device)
    return torch.multinomial(probs, size, replacement=True, generator=generator)


def inverse_example(
    batch: Mapping[str, torch.Tensor],
    tokenizer: LatentTokenizer,
    generator: torch.Generator,
    passes: Sequence[str] = INVERSE_PASSES,
    condition_drop: float = INVERSE_CONDITION_DROP,
    pass_weights: Sequence[float] | None = None,
    off_plane_weight: float = 1.0,
) -> TrainingExample:
    """``batch``: {rgb, passes...: (B, 3, T, H, W)} in [-1, 1] -> one random pass per example (``pass_weights``:
    their relative frequencies, one per pass; None: uniform); ``off_plane_weight`` != 1 weighs the loss on the
    pixels off the frame's dominant surface (module doc), whatever the target pass."""
    rgb = batch["rgb"]
    size, device = rgb.shape[0], rgb.device
    choice = choose_passes(len(passes), size, generator, device, pass_weights)
    stacked = torch.stack([batch[p] for p in passes])  # (P, B, 3, T, H, W)
    target = stacked[choice, torch.arange(size, device=device)]  # (B, 3, T, H, W)
    index = torch.tensor([CONTEXT_INDEX[p] for p in passes], device=device)[choice].view(-1, 1)  # (B, 1)
    x0 = tokenizer.encode(target)
    condition = tokenizer.encode(rgb)
    condition = condition * _keep(bernoulli(size, condition_drop, generator, device), condition)
    weight = (
        None
        if off_plane_weight == 1.0
        else latent_weights(off_plane_weights(batch["normal"], off_plane_weight), tokenizer)
    )
    return TrainingExample(x0, ConditionInputs(condition, context_index=index, fps=DEFAULT_FPS), weight)


def latent_weights(pixel_weights: torch.Tensor, tokenizer: LatentTokenizer) -> torch.Tensor:
    """(B, 1, T, H, W) per-pixel weights -> (B, C, T, h, w) per latent value, through a space-to-depth tokenizer
    (each latent value is one pixel's); other tokenizers mix pixels and are refused."""
    if not isinstance(tokenizer, SpaceToDepthTokenizer):
        raise ValueError(f"per-pixel loss weights need a space-to-depth tokenizer, not {type(tokenizer).__name__}")
    rgb_like = pixel_weights.expand(-1, tokenizer.in_channels, *pixel_weights.shape[2:])
    return tokenizer.encode(rgb_like.to(tokenizer.dtype)) / tokenizer.scale


def forward_example(
    batch: Mapping[str, torch.Tensor],
    tokenizer: LatentTokenizer,
    generator: torch.Generator,
    key_drop: float = FORWARD_KEY_DROP,
    condition_drop: float = FORWARD_CONDITION_DROP,
    drop_lighting: bool = False,
    condition_keys: Sequence[str] = FORWARD_CONDITION_KEYS,
) -> TrainingExample:
    """``batch``: {rgb, G-buffers, env_ldr, env_log, env_nrm[, shading]: (B, 3, T, H, W)} in [-1, 1];
    ``condition_keys``: the model's (``forward_condition_keys``)."""
    rgb = batch["rgb"]
    size, device = rgb.shape[0], rgb.device
    if SHADING_HINT_KEY in condition_keys and SHADING_HINT_KEY not in batch and not drop_lighting:
        raise ValueError("this model takes the shading hint; the training shards have none (make them anew)")
    lit = (*LIGHTING_KEYS, SHADING_HINT_KEY)
    x0 = tokenizer.encode(rgb)
    keys = [k for k in condition_keys if not (drop_lighting and k in lit) and k in batch]
    latents = {}
    if keys:  # one tokenizer call for all keys
        encoded = tokenizer.encode(torch.cat([batch[k] for k in keys]))
        latents = dict(zip(keys, encoded.chunk(len(keys)), strict=True))
    parts = []
    for key in condition_keys:
        one = assemble_latent_condition({key: latents.get(key)}, (key,), x0.shape, device=device, dtype=x0.dtype)
        parts.append(one * _keep(bernoulli(size, key_drop, generator, device), one))
    condition = torch.cat(parts, dim=1)  # (B, K (C + 1), T, h, w), K = 8 or 9
    condition = condition * _keep(bernoulli(size, condition_drop, generator, device), condition)
    return TrainingExample(x0, ConditionInputs(condition, fps=DEFAULT_FPS))


def make_example(
    role: str, batch: Mapping[str, torch.Tensor], tokenizer: LatentTokenizer, generator: torch.Generator, **kwargs
) -> TrainingExample:
    if role == "inverse":
        return inverse_example(batch, tokenizer, generator, **kwargs)
    if role == "forward":
        return forward_example(batch, tokenizer, generator, **kwargs)
    raise ValueError(f"role must be inverse or forward, got {role!r}")
