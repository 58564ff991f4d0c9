"""Named DiT configurations: the official 7B sizes and tiny sizes for tests.

The 7B entries are the official ``DiffusionRendererGeneralDIT`` constructor dicts (merged configs of the
``Diffusion_Renderer_{Inverse,Forward}_Cosmos_7B`` experiments); tests check them against the fixture
``official_configs.json``. Our model config is derived from them by :func:`official_net_to_config`.
"""

from __future__ import annotations

from typing import Any

from diffusion_renderer.models.transformer_diffusion_renderer import official_net_to_config

_OFFICIAL_7B_COMMON: dict[str, Any] = {
    "concat_padding_mask": True,
    "block_config": "FA-CA-MLP",
    "model_channels": 4096,
    "num_blocks": 28,
    "num_heads": 32,
    "mlp_ratio": 4.0,
    "block_x_format": "THWBD",
    "crossattn_emb_channels": 1024,
    "use_cross_attn_mask": False,
    "pos_emb_cls": "rope3d",
    "pos_emb_learnable": False,
    "pos_emb_interpolation": "crop",
    "affline_emb_norm": True,
    "use_adaln_lora": True,
    "adaln_lora_dim": 256,
    "rope_h_extrapolation_ratio": 1,
    "rope_w_extrapolation_ratio": 1,
    "rope_t_extrapolation_ratio": 1,
    "extra_per_block_abs_pos_emb": True,
    "extra_per_block_abs_pos_emb_type": "sincos",
    "extra_h_extrapolation_ratio": 1.0,
    "extra_w_extrapolation_ratio": 1.0,
    "extra_t_extrapolation_ratio": 1.0,
    "max_img_h": 240,
    "max_img_w": 240,
    "max_frames": 128,
    "in_channels": 16,
    "out_channels": 16,
    "patch_spatial": 2,
    "patch_temporal": 1,
}

OFFICIAL_NETS: dict[str, dict[str, Any]] = {
    "inverse-7b": {**_OFFICIAL_7B_COMMON, "additional_concat_ch": 16, "use_context_embedding": True},
    "forward-7b": {**_OFFICIAL_7B_COMMON, "additional_concat_ch": 136, "use_context_embedding": False},
}

# Folder names of the official checkpoints for each role.
OFFICIAL_DIT_DIRS: dict[str, str] = {
    "inverse": "Diffusion_Renderer_Inverse_Cosmos_7B",
    "forward": "Diffusion_Renderer_Forward_Cosmos_7B",
}
OFFICIAL_TOKENIZER_DIR = "Cosmos-Tokenize1-CV8x8x8-720p"

# Tiny sizes: the official layout with small widths, for CPU tests and the `random:tiny` spec.
_TINY: dict[str, Any] = {
    **_OFFICIAL_7B_COMMON,
    "model_channels": 64,
    "num_blocks": 2,
    "num_heads": 2,
    "crossattn_emb_channels": 32,
    "adaln_lora_dim": 16,
}
OFFICIAL_NETS["inverse-tiny"] = {**_TINY, "additional_concat_ch": 16, "use_context_embedding": True}
OFFICIAL_NETS["forward-tiny"] = {**_TINY, "additional_concat_ch": 136, "use_context_embedding": False}

# Small sizes: the shipped `tiny` inverse model (and its forward model until 2026-12-03). Space-to-depth latents
# (3 x 8 x 8 = 192 channels, see models/space_to_depth.py), 1 x 1 patches, width 192 (3 heads of 64), 6 blocks:
# about 4M parameters, 4 MB as int8, 32 x 32 tokens at 256². Why 1 x 1 patches: with 2 x 2 patches a token carries 768
# latent values through a 192-wide network, and EDM's skip term c_skip x needs the network to cancel the
# noise in all of them; measured after 3,000 steps, the denoiser then got worse as sigma fell below 1 (x0
# MSE 0.063 at sigma 0.5 against 0.03 at sigma 2) and sampling collapsed toward grey.
SMALL_LATENT_CHANNELS = 192
_SMALL: dict[str, Any] = {
    **_OFFICIAL_7B_COMMON,
    "model_channels": 192,
    "num_blocks": 6,
    "num_heads": 3,
    "crossattn_emb_channels": 64,
    "adaln_lora_dim": 32,
    "patch_spatial": 1,
    "in_channels": SMALL_LATENT_CHANNELS,
    "out_channels": SMALL_LATENT_CHANNELS,
}
OFFICIAL_NETS["inverse-small"] = {
    **_SMALL,
    "additional_concat_ch": SMALL_LATENT_CHANNELS,
    "use_context_embedding": True,
}
OFFICIAL_NETS["forward-small"] = {
    **_SMALL,
    "additional_concat_ch": 8 * (SMALL_LATENT_CHANNELS + 1),  # 8 keys x (latent + mask), the official layout
    "use_context_embedding": False,
}
# Medium: the shipped `tiny` forward model's size (as forward-medium-shadow, below). The small layout widened to
# 256 (4 heads of 64) and deepened to 10 blocks, about 11M parameters (forward: 11.4 MB as int8, which with the 4 MB
# small inverse fits the 16 MiB weight budget). Why: the 6 x 192 forward model plateaued at 15.5-15.8 dB on held-out
# maps over 17k steps, below split-sum's 23 dB, even on new scenes under its own training maps (19 dB): it underfits
# the environment integral. The medium one reached 16.0 dB in 3.9k steps of 128 frames (benchmarks/TINY_HISTORY.md).
_MEDIUM: dict[str, Any] = {**_SMALL, "model_channels": 256, "num_blocks": 10, "num_heads": 4}
OFFICIAL_NETS["inverse-medium"] = {**OFFICIAL_NETS["inverse-small"], **_MEDIUM}
OFFICIAL_NETS["forward-medium"] = {**OFFICIAL_NETS["forward-small"], **_MEDIUM}
# Medium with the split-sum shading hint (render/hint.py; not official): a ninth condition key. Why: the forward
# models above learned the environment integral poorly (18.0 dB against split-sum's 23.1 dB on held-out maps, most
# of it one brightness factor per image); the hint gives them that integral, and they learn its correction. Built
# from a forward-medium by adding zero input weights for the new key (training.trainer.adapt_to_config).
OFFICIAL_NETS["forward-medium-hint"] = {
    **OFFICIAL_NETS["forward-medium"],
    "additional_concat_ch": 9 * (SMALL_LATENT_CHANNELS + 1),
    "shading_hint": 1,
}
# The same network denoising the frame's difference from the hint (DiT ``hint_residual``), with the hint's version 3
# (render/hint.py: a background rule that keeps clipped surfaces, and the field of view read from the G-buffers).
# Why: the hint alone scores 22.3 dB on held-out maps (version 1: 19.8), and forward-medium-hint, which had to learn
# to pass the hint through, reached 19.3 dB and still rendered 8 x 8 tiles. Built from a forward-medium-hint with its
# output projection zeroed (training.trainer.adapt_to_config), so that it starts at the hint. The shipped run 23
# trained on version 2 hints (the same with a fixed 40-degree camera) and scores 0.5 dB more with version 3.
OFFICIAL_NETS["forward-medium-residual"] = {
    **OFFICIAL_NETS["forward-medium-hint"],
    "shading_hint": 3,
    "hint_residual": True,
}
# The same with the hint's version 4 (render/hint.py: screen-space shadows where the camera is read off the
# G-buffers). Why: split-sum has no shadows, and the network had to learn them anew for each kind of light; with them
# the hint alone scores 23.7 dB on held-out maps, against 22.3 (benchmarks/visibility.py). Fine-tuned from a
# forward-medium-residual file with its weights as they are (training.trainer.adapt_to_config: only the hint's
# version differs). The shipped `tiny` forward model since run 35 (5,985 steps from run 31): 24.1 -> 25.0 dB.
OFFICIAL_NETS["forward-medium-shadow"] = {**OFFICIAL_NETS["forward-medium-residual"], "shading_hint": 4}
# The same seeing every light at one level (DiT ``exposure_level``; render/hint.py, exposure normalisation): the
# light is scaled so that the hint's level is EXPOSURE_LEVEL, the frame scaled back. Why: forward-medium-shadow
# follows a change of the light's strength only in part (benchmarks/correction_strength.py --light-stops: -0.34 /
# +0.57 stops missed for -1 / +1 under the held-out studio map), and renders bright held-out light too dark.
# Fine-tuned from a forward-medium-shadow file with its weights as they are (training.trainer.adapt_to_config).
EXPOSURE_LEVEL = 0.18  # the median hint level (0.185) of 45 clips under training maps (benchmarks/TINY_HISTORY.md)
OFFICIAL_NETS["forward-medium-normalized"] = {
    **OFFICIAL_NETS["forward-medium-shadow"],
    "exposure_level": EXPOSURE_LEVEL,
}
# The same with the hint's version 5 (render/hint.py: a shadow test of twice the light directions and steps). Why:
# under a few small lights version 4's shadows have jagged, banded edges that the residual model passes into its
# frames. Fine-tuned from a forward-medium-normalized file with its weights as they are (only the hint's version
# differs; training.trainer.adapt_to_config).
OFFICIAL_NETS["forward-medium-fine-shadow"] = {**OFFICIAL_NETS["forward-medium-normalized"], "shading_hint": 5}
# Deep: the shipped sizes with twice the blocks, for int4 files (checkpoints/quantization.py) trained with
# ``train --qat int4``. Why: both shipped models stopped improving with more data (inverse run 30, forward run 31),
# and at int4 twice the blocks fit the 16 MiB budget (forward 20 x 256 and inverse 12 x 192: about 10.6 + 4.7 MB, the
# forward's never-read cross-attention left out). Grown from the shipped files by ``train --init`` with each block
# followed by a copy whose output projections are zero (training.trainer.adapt_to_config), so they start as the
# shipped models exactly.
# The copies add no per-block position embedding: the originals' indices, 0, 2, 4...
OFFICIAL_NETS["inverse-small-deep"] = {
    **OFFICIAL_NETS["inverse-small"],
    "num_blocks": 12,
    "pos_embed_blocks": tuple(range(0, 12, 2)),
}
OFFICIAL_NETS["forward-medium-deep-residual"] = {
    **OFFICIAL_NETS["forward-medium-residual"],
    "num_blocks": 20,
    "pos_embed_blocks": tuple(range(0, 20, 2)),
}
# Which tokenizer each size's latents live in.
TOKENIZER_OF_SIZE: dict[str, str] = {
    "7b": "cosmos",
    "tiny": "cosmos-tiny",
    "small": "space-to-depth",
    "medium": "space-to-depth",
    "medium-hint": "space-to-depth",
    "medium-residual": "space-to-depth",
    "medium-shadow": "space-to-depth",
    "medium-normalized": "space-to-depth",
    "medium-fine-shadow": "space-to-depth",
    "small-deep": "space-to-depth",
    "medium-deep-residual": "space-to-depth",
}

ROLES = ("inverse", "forward")


def dit_config(name: str) -> dict[str, Any]:
    """Config dict of :class:`DiffusionRendererTransformer3DModel` for a named size (e.g. ``inverse-7b``)."""
    try:
        return official_net_to_config(OFFICIAL_NETS[name])
    except KeyError:
        raise ValueError(f"unknown DiT configuration {name!r} (known: {', '.join(OFFICIAL_NETS)})") from None


def role_of_config(name: str) -> str:
    """``inverse`` or ``forward`` for a named configuration."""
    return name.split("-", 1)[0]


def size_of_config(name: str) -> str:
    """``7b``, ``tiny`` or ``small`` for a named configuration."""
    return name.split("-", 1)[1]
