"""Context parallelism for the DiT: one clip's tokens split across the ranks of a process group (Ulysses).

A 57-frame 720p clip is 28,160 tokens; at 7B one step takes 1.5 s on one GPU. With N ranks each holds S / N
consecutive tokens through everything that is per token (patch embedding, AdaLN, MLP, cross-attention to the
replicated context, output projection). Only the self-attention needs every token: an all-to-all turns
(B, H, S/N, Dh) per rank into (B, H/N, S, Dh) (all tokens, a slice of the heads), each rank attends for its heads
over the whole sequence, and a second all-to-all turns the result back (DeepSpeed-Ulysses, Jacobs et al. 2023).
Communication per layer: 4 tensors of B·S·D/N elements; the attention itself is split exactly, so the result equals
one rank's up to the summation order of the kernels.

Why by hand: diffusers' context parallelism (``ModelMixin.enable_parallelism``) needs processors that call its
dispatcher with a parallel config, which the Cosmos processors do not, and it picks devices from
``torch.accelerator`` so it cannot run on CPU ranks (our gloo tests). The collectives are torch.distributed's
functional ones, in their autograd-aware form; only inference through a split model is tested.

Requirements: heads divisible by N (32 for the 7B: N in 1, 2, 4, 8, 16, 32) and the token count divisible by N
(57 frames at 704×1280: 8·44·80 tokens).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention
from diffusers.models.embeddings import apply_rotary_emb
from torch.distributed._functional_collectives import (
    all_gather_tensor_autograd,
    all_to_all_single_autograd,
    wait_tensor,
)

__all__ = ["UlyssesAttnProcessor", "gather_tokens", "local_tokens"]


def _exchange(x: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
    """(N, ...) chunks: chunk i goes to rank i, the result's chunk i comes from rank i."""
    return wait_tensor(all_to_all_single_autograd(x.contiguous(), None, None, group))


def heads_to_tokens(x: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
    """(B, H, S/N, Dh) this rank's tokens, all heads -> (B, H/N, S, Dh) all tokens, this rank's heads."""
    n = dist.get_world_size(group)
    b, h, s, d = x.shape
    x = _exchange(x.view(b, n, h // n, s, d).transpose(0, 1), group)  # (N ranks' tokens, B, H/N, S/N, Dh)
    return x.permute(1, 2, 0, 3, 4).reshape(b, h // n, n * s, d)


def tokens_to_heads(x: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
    """Inverse of :func:`heads_to_tokens`: (B, H/N, S, Dh) -> (B, H, S/N, Dh)."""
    n = dist.get_world_size(group)
    b, h, s, d = x.shape
    x = _exchange(x.view(b, h, n, s // n, d).permute(2, 0, 1, 3, 4), group)  # (N ranks' heads, B, H/N, S/N, Dh)
    return x.transpose(0, 1).reshape(b, n * h, s // n, d)


def local_tokens(x: torch.Tensor, group: dist.ProcessGroup, dim: int) -> torch.Tensor:
    """This rank's consecutive share of ``x`` along the token axis ``dim``."""
    n, size = dist.get_world_size(group), x.shape[dim]
    if size % n:
        raise ValueError(f"context parallel: {size} tokens do not split over {n} ranks")
    return x.narrow(dim, dist.get_rank(group) * (size // n), size // n)


def gather_tokens(x: torch.Tensor, group: dist.ProcessGroup, dim: int) -> torch.Tensor:
    """Every rank's share concatenated along ``dim`` in rank order (the inverse of :func:`local_tokens`)."""
    return wait_tensor(all_gather_tensor_autograd(x.contiguous(), dim, group))


class UlyssesAttnProcessor:
    """Self-attention of a Cosmos block over a token sequence split across ``group`` (module doc).

    The same arithmetic as diffusers' ``CosmosAttnProcessor2_0`` for self-attention: q/k/v projections, RMSNorm of
    q and k per head, RoPE (its tables cut to this rank's tokens), SDPA, output projection.
    """

    def __init__(self, group: dist.ProcessGroup) -> None:
        self.group = group

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        if encoder_hidden_states is not None or attention_mask is not None:
            raise ValueError("UlyssesAttnProcessor is for the unmasked self-attention")
        if attn.heads % dist.get_world_size(self.group):
            raise ValueError(f"context parallel: {attn.heads} heads do not split over the ranks")
        projections = (attn.to_q, attn.to_k, attn.to_v)
        q, k, v = (proj(hidden_states).unflatten(2, (attn.heads, -1)).transpose(1, 2) for proj in projections)
        # (B, H, S/N, Dh)
        q, k = attn.norm_q(q), attn.norm_k(k)
        if image_rotary_emb is not None:
            q = apply_rotary_emb(q, image_rotary_emb, use_real=True, use_real_unbind_dim=-2)
            k = apply_rotary_emb(k, image_rotary_emb, use_real=True, use_real_unbind_dim=-2)
        q, k, v = (heads_to_tokens(t, self.group) for t in (q, k, v))  # (B, H/N, S, Dh)
        out = tokens_to_heads(F.scaled_dot_product_attention(q, k, v), self.group)  # (B, H, S/N, Dh)
        out = out.transpose(1, 2).flatten(2, 3).type_as(q)
        return attn.to_out[1](attn.to_out[0](out))
