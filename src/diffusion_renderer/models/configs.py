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
