"""Spatial attention of the Cosmos tokenizer in O(tokens) memory.

diffusers' ``CosmosSpatialAttentionProcessor2_0`` hands SDPA query/key/value whose channel axis is strided (a
permute of (B, C, T, H, W)); PyTorch's fused kernels need stride 1 there, so it falls back to the math kernel,
which materialises the (H·W)² score matrix in float32: 14,080 tokens per 720p frame at the bottleneck, about
0.8 GB per frame (twice that with the softmax). The same arithmetic on contiguous tensors lets SDPA pick its
memory-efficient kernel (head dim 512 rules out flash and cuDNN): measured on an H200, a 57-frame 720p encode
peaked at 3.7 GiB instead of 15.3 (benchmarks/PERFORMANCE_NOTES.md, section 5). Set per network by
:func:`use_contiguous_attention`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.autoencoders.autoencoder_kl_cosmos import (
    CosmosCausalAttention,
    CosmosSpatialAttentionProcessor2_0,
)
from torch import nn

__all__ = ["ContiguousSpatialAttnProcessor", "use_contiguous_attention"]


def _tokens(x: torch.Tensor, heads: int) -> torch.Tensor:
    # (B, C, T, H, W) -> (B·T, heads, H·W, C / heads), contiguous
    return x.permute(0, 2, 3, 4, 1).flatten(2, 3).flatten(0, 1).unflatten(2, (heads, -1)).transpose(1, 2).contiguous()


class ContiguousSpatialAttnProcessor:
    """Per-frame self-attention over H·W tokens (the Cosmos spatial attention) with contiguous SDPA inputs."""

    def __call__(
        self, attn: CosmosCausalAttention, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        batch, _, frames, height, width = hidden_states.shape  # (B, C, T, H, W)
        x = attn.norm(hidden_states)
        heads = attn.num_attention_heads
        q, k, v = (_tokens(proj(x), heads) for proj in (attn.to_q, attn.to_k, attn.to_v))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask)  # (B·T, heads, H·W, C / heads)
        out = out.transpose(1, 2).flatten(2, 3).unflatten(1, (height, width)).unflatten(0, (batch, frames))
        out = out.permute(0, 4, 1, 2, 3)  # (B, C, T, H, W)
        return attn.to_out[1](attn.to_out[0](out)) + hidden_states


def use_contiguous_attention(network: nn.Module) -> None:
    """Give every Cosmos spatial attention of ``network`` the contiguous processor (same outputs)."""
    for module in network.modules():
        if isinstance(module, CosmosCausalAttention) and isinstance(
            module.processor, CosmosSpatialAttentionProcessor2_0
        ):
            module.processor = ContiguousSpatialAttnProcessor()
