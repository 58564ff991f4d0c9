"""Context parallelism for the DiT: one clip's tokens split across the ranks of a process group (Ulysses).

A 57-frame 720p clip is 28,160 tokens; at 7B one step takes 1.5 s on one GPU. With N ranks each holds S / N
consecutive tokens through everything that is per token (patch embedding, AdaLN, MLP, cross-attention to the
replicated context, output projection). Only the self-attention needs every token: an all-to-all turns
(B, H, S/N, Dh) per rank into (B, H/N, S, Dh) (all tokens, a slice of the heads), each rank attends for its heads
over the whole sequence, and a second all-to-all turns the result back (DeepSpeed-Ulysses, Jacobs et al. 2023).
Communication per layer: 4 tensors of B·S·D/N elements; the attention itself is split exactly, so the result equals
one process's up to the summation order of the kernels.

Why by hand: diffusers' context parallelism (``ModelMixin.enable_parallelism``) needs processors that call its
dispatcher with a parallel config, which the Cosmos processors do not, and it picks devices from
``torch.accelerator`` so it cannot run on CPU ranks (our gloo tests). The collectives are torch.distributed's
functional ones, in their autograd-aware form; only inference through a split model is tested.

Requirements: heads divisible by N (32 for the 7B: N in 1, 2, 4, 8, 16, 32) and at least N tokens; token counts
that N does not divide are split as evenly as possible (the all-to-alls take uneven sizes).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention
from diffusers.models.embeddings import apply_rotary_emb
from torch.distributed import _functional_collectives as funcol
from torch.distributed._functional_collectives import all_to_all_single_autograd, wait_tensor

# torch 2.13 renamed the autograd all-gather; the GPU hosts run 2.11
_all_gather = getattr(funcol, "all_gather_single_autograd", None) or funcol.all_gather_tensor_autograd

__all__ = [
    "UlyssesAttnProcessor",
    "gather_tokens",
    "heads_to_tokens",
    "local_tokens",
    "token_counts",
    "tokens_to_heads",
]


def token_counts(total: int, ranks: int) -> list[int]:
    """Tokens per rank: as even as possible, the first ``total % ranks`` ranks one more (torch.tensor_split)."""
    if total < ranks:
        raise ValueError(f"context parallel: {total} tokens cannot be split over {ranks} ranks")
    return [total // ranks + (r < total % ranks) for r in range(ranks)]


def _all_to_all(parts: list[torch.Tensor], received: list[int], group: dist.ProcessGroup) -> list[torch.Tensor]:
    """Part i goes to rank i; returns, flat, what each rank sent here (``received[i]`` values from rank i)."""
    flat = torch.cat([part.reshape(-1) for part in parts])
    out = wait_tensor(all_to_all_single_autograd(flat, received, [part.numel() for part in parts], group))
    return list(out.split(received))


def heads_to_tokens(x: torch.Tensor, counts: list[int], group: dist.ProcessGroup) -> torch.Tensor:
    """(B, H, S_r, Dh) this rank's tokens, all heads -> (B, H/N, S, Dh) all tokens, this rank's heads.

    ``counts``: tokens per rank (:func:`token_counts`)."""
    b, h, _, d = x.shape
    heads = h // len(counts)
    parts = _all_to_all(list(x.split(heads, dim=1)), [b * heads * c * d for c in counts], group)
    return torch.cat([part.view(b, heads, c, d) for part, c in zip(parts, counts, strict=True)], dim=2)


def tokens_to_heads(x: torch.Tensor, counts: list[int], group: dist.ProcessGroup) -> torch.Tensor:
    """Inverse of :func:`heads_to_tokens`: (B, H/N, S, Dh) -> (B, H, S_r, Dh)."""
    b, heads, _, d = x.shape
    mine = counts[dist.get_rank(group)]
    parts = _all_to_all(list(x.split(counts, dim=2)), [b * heads * mine * d] * len(counts), group)
    return torch.cat([part.view(b, heads, mine, d) for part in parts], dim=1)  # heads in rank order


def local_tokens(x: torch.Tensor, group: dist.ProcessGroup, dim: int) -> torch.Tensor:
    """This rank's consecutive share of ``x`` along the token axis ``dim`` (:func:`token_counts`)."""
    counts = token_counts(x.shape[dim], dist.get_world_size(group))
    rank = dist.get_rank(group)
    return x.narrow(dim, sum(counts[:rank]), counts[rank])


def gather_tokens(x: torch.Tensor, total: int, group: dist.ProcessGroup, dim: int) -> torch.Tensor:
    """Every rank's share concatenated along ``dim`` in rank order (the inverse of :func:`local_tokens` for a
    ``total``-token axis). Shares are padded to the largest for the all-gather, then trimmed."""
    counts = token_counts(total, dist.get_world_size(group))
    padded = F.pad(x.movedim(dim, 0), (0, 0) * (x.ndim - 1) + (0, counts[0] - x.shape[dim]))
    gathered = wait_tensor(_all_gather(padded.contiguous(), 0, group)).split(counts[0])
    return torch.cat([g[:c] for g, c in zip(gathered, counts, strict=True)]).movedim(0, dim)


class UlyssesAttnProcessor:
    """Self-attention of a Cosmos block over a token sequence split across ``group`` (module doc).

    The same arithmetic as diffusers' ``CosmosAttnProcessor2_0`` for self-attention: q/k/v projections, RMSNorm of
    q and k per head, RoPE (its tables cut to this rank's tokens), SDPA, output projection.
    """

    def __init__(self, group: dist.ProcessGroup) -> None:
        self.group = group
        self.counts: list[int] | None = None  # tokens per rank of the current call, set by the model

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
        counts = self.counts
        if counts is None or counts[dist.get_rank(self.group)] != q.shape[2]:
            raise ValueError("context parallel: the model did not set this call's tokens per rank")
        q, k, v = (heads_to_tokens(t, counts, self.group) for t in (q, k, v))  # (B, H/N, S, Dh)
        out = tokens_to_heads(F.scaled_dot_product_attention(q, k, v), counts, self.group)  # (B, H, S_r, Dh)
        out = out.transpose(1, 2).flatten(2, 3).type_as(q)
        return attn.to_out[1](attn.to_out[0](out))
