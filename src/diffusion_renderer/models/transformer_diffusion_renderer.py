"""The DiffusionRenderer DiT: the official ``DiffusionRendererGeneralDIT`` on diffusers' Cosmos-1 transformer.

diffusers' ``CosmosTransformer3DModel`` already implements the Cosmos-Predict1 GeneralDIT (patch embedding,
AdaLN-LoRA, FA-CA-MLP blocks, 3D RoPE, final layer) with the official numerics. What the renderer adds, and
what a subclass supplies here:

* extra latent-condition channels concatenated before the patch embedding (``in_channels`` counts them:
  16 + 16 inverse, 16 + 136 forward), then the padding-mask channel;
* the sin-cos per-block absolute position embedding (diffusers only has a learnable one);
* the context (domain) embedding ``Embedding(16, text_embed_dim)`` whose row replaces the cross-attention
  tokens of the inverse model;
* q/k RMSNorm eps 1e-6 (diffusers' ``Attention`` default is 1e-5);
* RoPE tables computed by a module whose buffers follow the model dtype, as the official bf16 inference does;
* a cross-attention skip when there is no context (the forward model's context is all zeros, and with
  bias-free K/V projections its cross-attention adds exactly 0).

The stock ``forward`` cannot be reused: it resizes the padding mask with torchvision (the CPU path must not
need it), knows no sin-cos embedding or context embedding, and computes RoPE in float32 only. ``forward``
below reuses every stock submodule (patch embedding, time embedding, blocks, output norm and projection).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from diffusers.configuration_utils import register_to_config
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.transformers.transformer_cosmos import (
    CosmosAttnProcessor2_0,
    CosmosTransformer3DModel,
    CosmosTransformerBlock,
)
from torch.distributed import ProcessGroup

from diffusion_renderer.models.context_parallel import UlyssesAttnProcessor, gather_tokens, local_tokens, token_counts
from diffusion_renderer.models.edm import c_in, c_out, c_skip
from diffusion_renderer.models.performance import attention_backend, resolve_attention

SUPPORTED_EXTRA_POS_EMBED = ("sincos", None)


def sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """[sin(p * w_k), cos(p * w_k)] with w_k = 10000^(-k / (dim / 2)), computed in float64 as the official code."""
    omega = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0)
    omega = 1.0 / 10000**omega  # (dim/2,)
    angles = torch.outer(positions.to(torch.float64), omega)  # (N, dim/2)
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)  # (N, dim)


def axis_split(dim: int) -> tuple[int, int, int]:
    """(t, h, w) share of a feature dimension: h = w = dim // 6 * 2, t takes the rest."""
    dim_hw = dim // 6 * 2
    return dim - 2 * dim_hw, dim_hw, dim_hw


def axis_grid(table_t: torch.Tensor, table_h: torch.Tensor, table_w: torch.Tensor) -> torch.Tensor:
    """Per-token concatenation [t | h | w] of per-axis rows over the (T, H, W) grid: (T*H*W, Dt + Dh + Dw)."""
    grid = (table_t.shape[0], table_h.shape[0], table_w.shape[0])
    emb = torch.cat(
        [
            table_t[:, None, None, :].expand(*grid, -1),
            table_h[None, :, None, :].expand(*grid, -1),
            table_w[None, None, :, :].expand(*grid, -1),
        ],
        dim=-1,
    )
    return emb.reshape(grid[0] * grid[1] * grid[2], -1)  # rows in (t h w) order


class SinCosPosEmbed3D(nn.Module):
    """Official ``SinCosPosEmbAxis``: fixed [t | h | w] sin-cos tables, cropped to the token grid.

    The tables are non-persistent buffers (absent from checkpoints); ``forward`` returns them in the model's
    dtype, as the official inference casts them with the model.
    """

    def __init__(
        self,
        hidden_size: int,
        max_size: tuple[int, int, int],
        patch_size: tuple[int, int, int],
        scale: tuple[float, float, float] = (1.0, 1.0, 1.0),
    ) -> None:
        super().__init__()
        lengths = [size // patch for size, patch in zip(max_size, patch_size, strict=True)]
        for name, dim, length, ratio in zip("thw", axis_split(hidden_size), lengths, scale, strict=True):
            table = sincos_1d(dim, torch.arange(length, dtype=torch.float64) / ratio).float()
            self.register_buffer(f"pos_emb_{name}", table, persistent=False)  # (len, dim)

    def forward(self, num_frames: int, height: int, width: int, dtype: torch.dtype | None = None) -> torch.Tensor:
        tables = (self.pos_emb_t[:num_frames], self.pos_emb_h[:height], self.pos_emb_w[:width])
        return axis_grid(*(table.to(dtype) for table in tables))[None]  # (1, THW, D)


class RotaryPosEmbed3D(nn.Module):
    """Official ``VideoRopePosition3DEmb`` (rope3d): angles [t | h | w] * 2 per token, rotate-half pairing.

    The angles are computed in the model's dtype (``dtype``, default: the buffers'): the official bf16
    inference casts the whole module, buffers included, so its angles come from bfloat16 arithmetic (fixture
    ``rope_tables_7b``); in float32 they are the float32 angles. Time positions are ``seq / fps * base_fps``.
    """

    def __init__(
        self,
        head_dim: int,
        max_size: tuple[int, int, int],
        patch_size: tuple[int, int, int],
        rope_scale: tuple[float, float, float] = (1.0, 1.0, 1.0),
        base_fps: int = 24,
    ) -> None:
        super().__init__()
        self.max_size = [size // patch for size, patch in zip(max_size, patch_size, strict=True)]
        self.base_fps = base_fps
        dim_t, dim_h, _ = axis_split(head_dim)
        # NTK-aware theta per axis: 10000 * ratio^(d / (d - 2)); python floats, as in the official module.
        self.theta_t = 10000.0 * rope_scale[0] ** (dim_t / (dim_t - 2))
        self.theta_h = 10000.0 * rope_scale[1] ** (dim_h / (dim_h - 2))
        self.theta_w = 10000.0 * rope_scale[2] ** (dim_h / (dim_h - 2))
        self.register_buffer("seq", torch.arange(max(self.max_size), dtype=torch.float32), persistent=False)
        spatial = torch.arange(0, dim_h, 2)[: dim_h // 2].float() / dim_h
        temporal = torch.arange(0, dim_t, 2)[: dim_t // 2].float() / dim_t
        self.register_buffer("dim_spatial_range", spatial, persistent=False)
        self.register_buffer("dim_temporal_range", temporal, persistent=False)

    def angle_tables(
        self,
        num_frames: int,
        height: int,
        width: int,
        fps: torch.Tensor | float | None = None,
        dtype: torch.dtype | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-axis half-angle tables (T, dim_t/2), (H, dim_h/2), (W, dim_w/2), computed in ``dtype``."""
        if height > self.max_size[1] or width > self.max_size[2] or num_frames > self.max_size[0]:
            raise ValueError(f"token grid {num_frames}x{height}x{width} exceeds the RoPE table {tuple(self.max_size)}")
        seq = self.seq.to(dtype)
        spatial, temporal = self.dim_spatial_range.to(dtype), self.dim_temporal_range.to(dtype)
        freqs_h = 1.0 / (self.theta_h**spatial)
        freqs_w = 1.0 / (self.theta_w**spatial)
        freqs_t = 1.0 / (self.theta_t**temporal)
        positions_t = seq[:num_frames]
        if fps is not None:
            # The official code uses the first sample's fps for the whole batch.
            fps_t = torch.as_tensor(fps, device=seq.device).flatten()[:1].to(seq.dtype)
            positions_t = positions_t / fps_t * self.base_fps
        return (
            torch.outer(positions_t, freqs_t),
            torch.outer(seq[:height], freqs_h),
            torch.outer(seq[:width], freqs_w),
        )

    def forward(
        self,
        num_frames: int,
        height: int,
        width: int,
        fps: torch.Tensor | float | None = None,
        dtype: torch.dtype | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        half = axis_grid(*self.angle_tables(num_frames, height, width, fps, dtype))  # (THW, head_dim / 2)
        angles = torch.cat([half, half], dim=-1).float()  # (THW, head_dim), rows (t h w)
        return torch.cos(angles), torch.sin(angles)


class DiffusionRendererTransformerBlock(CosmosTransformerBlock):
    """The stock FA-CA-MLP block, plus a skip of the cross-attention when there is no context.

    A zero context through bias-free K/V projections and RMSNorm gives k = v = 0, so the cross-attention adds
    exactly zero: the forward renderer's cross-attention (its context is the dummy all-zero T5 embedding) can be
    skipped without changing a bit. ``encoder_hidden_states=None`` means "no context".
    """

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None,
        embedded_timestep: torch.Tensor,
        temb: torch.Tensor | None = None,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
        extra_pos_emb: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        controlnet_residual: torch.Tensor | None = None,
        latents: torch.Tensor | None = None,
        block_idx: int | None = None,
    ) -> torch.Tensor:
        if encoder_hidden_states is not None:
            return super().forward(
                hidden_states,
                encoder_hidden_states,
                embedded_timestep,
                temb,
                image_rotary_emb,
                extra_pos_emb,
                attention_mask,
                controlnet_residual,
            )
        if extra_pos_emb is not None:
            hidden_states = hidden_states + extra_pos_emb
        norm_hidden_states, gate = self.norm1(hidden_states, embedded_timestep, temb)
        hidden_states = hidden_states + gate * self.attn1(norm_hidden_states, image_rotary_emb=image_rotary_emb)
        norm_hidden_states, gate = self.norm3(hidden_states, embedded_timestep, temb)
        return hidden_states + gate * self.ff(norm_hidden_states)


class DiffusionRendererTransformer3DModel(CosmosTransformer3DModel):
    """DiffusionRenderer DiT (inverse or forward), numerically the official ``DiffusionRendererGeneralDIT``.

    Config differences from the parent: ``in_channels`` counts the denoised latent plus the latent condition
    (32 inverse, 152 forward); ``out_channels`` is the denoised latent (16). ``extra_pos_embed_type="sincos"``
    builds the official sin-cos per-block embedding; ``num_context_embeddings > 0`` builds the inverse model's
    context embedding; ``qk_norm_eps`` is the official 1e-6.

    This project's forward models (never official ones): ``shading_hint`` > 0 says that the condition's last key is
    the split-sum shading hint (``conventions.forward_condition_keys``) computed with that version of
    ``render/hint.py`` (files written when it was a bool hold ``true``: version 1); only the pipelines read it.
    ``hint_residual`` makes the network denoise the frame's difference from the hint: see :meth:`forward`.
    ``exposure_level`` > 0: the pipelines scale each light so that the hint's level is this, and the frame back
    (``render.hint.hint_level``); the network never sees the light's strength.
    ``pos_embed_blocks`` (this project's grown models): the blocks that add the per-block position embedding,
    ``None`` for all (official). A model grown by a copy after each block (``training.trainer.grown_blocks``)
    keeps it at the original blocks only, so that it computes what the smaller model did.
    """

    # Class attributes that diffusers reads: block-wise torch.compile and device-map splitting use them.
    _repeated_blocks = ["DiffusionRendererTransformerBlock"]  # noqa: RUF012
    _no_split_modules = ["DiffusionRendererTransformerBlock"]  # noqa: RUF012
    _keep_in_fp32_modules = None  # the parent's learnable embedding is not built; nothing stays float32
    _skip_layerwise_casting_patterns = ["patch_embed", "norm", "rope", "extra_pos_embed", "context_embedding"]  # noqa: RUF012

    @register_to_config
    def __init__(
        self,
        in_channels: int = 32,
        out_channels: int = 16,
        num_attention_heads: int = 32,
        attention_head_dim: int = 128,
        num_layers: int = 28,
        mlp_ratio: float = 4.0,
        text_embed_dim: int = 1024,
        adaln_lora_dim: int = 256,
        max_size: tuple[int, int, int] = (128, 240, 240),
        patch_size: tuple[int, int, int] = (1, 2, 2),
        rope_scale: tuple[float, float, float] = (1.0, 1.0, 1.0),
        concat_padding_mask: bool = True,
        extra_pos_embed_type: str | None = "sincos",
        use_crossattn_projection: bool = False,
        crossattn_proj_in_channels: int = 1024,
        encoder_hidden_states_channels: int = 1024,
        controlnet_block_every_n: int | None = None,
        img_context_dim_in: int | None = None,
        img_context_num_tokens: int = 256,
        img_context_dim_out: int = 2048,
        extra_pos_embed_scale: tuple[float, float, float] = (1.0, 1.0, 1.0),
        num_context_embeddings: int = 16,
        qk_norm_eps: float = 1e-6,
        base_fps: int = 24,
        shading_hint: int = 0,
        hint_residual: bool = False,
        pos_embed_blocks: tuple[int, ...] | None = None,
        exposure_level: float = 0.0,
    ) -> None:
        if pos_embed_blocks is not None and not all(0 <= i < num_layers for i in pos_embed_blocks):
            raise ValueError(f"pos_embed_blocks must index the {num_layers} blocks, got {list(pos_embed_blocks)}")
        if hint_residual and not shading_hint:
            raise ValueError("hint_residual needs a shading hint (shading_hint > 0)")
        if exposure_level and (not shading_hint or not exposure_level > 0):
            raise ValueError(f"exposure_level is a hint level > 0 of a model with the hint, got {exposure_level}")
        if extra_pos_embed_type not in SUPPORTED_EXTRA_POS_EMBED:
            raise ValueError(f"extra_pos_embed_type must be one of {SUPPORTED_EXTRA_POS_EMBED}")
        if in_channels < out_channels:
            raise ValueError("in_channels counts the denoised latent plus the condition: in >= out")
        max_size, patch_size = tuple(max_size), tuple(patch_size)
        super().__init__(
            in_channels=in_channels,
            out_channels=out_channels,
            num_attention_heads=num_attention_heads,
            attention_head_dim=attention_head_dim,
            num_layers=num_layers,
            mlp_ratio=mlp_ratio,
            text_embed_dim=text_embed_dim,
            adaln_lora_dim=adaln_lora_dim,
            max_size=max_size,
            patch_size=patch_size,
            rope_scale=tuple(rope_scale),
            concat_padding_mask=concat_padding_mask,
            extra_pos_embed_type=extra_pos_embed_type,
            use_crossattn_projection=use_crossattn_projection,
            crossattn_proj_in_channels=crossattn_proj_in_channels,
            encoder_hidden_states_channels=encoder_hidden_states_channels,
            controlnet_block_every_n=controlnet_block_every_n,
            img_context_dim_in=img_context_dim_in,
            img_context_num_tokens=img_context_num_tokens,
            img_context_dim_out=img_context_dim_out,
        )
        self.reset_fixed_embeddings()
        self.context_embedding = (
            nn.Embedding(num_context_embeddings, text_embed_dim) if num_context_embeddings > 0 else None
        )
        self.attention = "auto"  # attention kernel order (models/performance.py); not part of the config
        self.context_parallel_group: ProcessGroup | None = None  # enable_context_parallel
        for block in self.transformer_blocks:
            # Re-class the stock blocks (no new state) rather than building 28 blocks twice at 7B.
            block.__class__ = DiffusionRendererTransformerBlock
            for attn in (block.attn1, block.attn2):
                attn.norm_q.eps = qk_norm_eps
                attn.norm_k.eps = qk_norm_eps

    def set_attention(self, name: str) -> None:
        """Attention kernels in priority order: ``auto`` (cuDNN on Hopper), ``cudnn``, ``flash``, ``efficient``,
        ``math`` or ``default`` (PyTorch's choice). Same math; see ``models/performance.py``."""
        resolve_attention(name, "cpu")  # validates the name
        self.attention = name

    def enable_context_parallel(self, group: ProcessGroup | None) -> None:
        """Split every clip's tokens across the ranks of ``group`` (all ranks call the model with the same inputs and
        all get the whole output); ``None`` turns it off. See ``models/context_parallel.py``."""
        heads = self.config.num_attention_heads
        if group is not None and heads % dist.get_world_size(group):
            raise ValueError(
                f"context parallel: {heads} attention heads do not split over {dist.get_world_size(group)} ranks"
            )
        self.context_parallel_group = group
        processor = UlyssesAttnProcessor(group) if group is not None else CosmosAttnProcessor2_0()
        for block in self.transformer_blocks:
            block.attn1.set_processor(processor)  # one instance: the tokens per rank are set once per call

    def reset_fixed_embeddings(self, device: torch.device | str | None = None) -> None:
        """(Re)build the RoPE and sin-cos modules, whose buffers are computed, not loaded.

        Needed after constructing on the meta device or ``to_empty``, which leave these buffers unset.
        """
        cfg = self.config
        max_size, patch_size = tuple(cfg.max_size), tuple(cfg.patch_size)
        dtype = None if device is None else self.dtype
        self.rope = RotaryPosEmbed3D(
            cfg.attention_head_dim, max_size, patch_size, tuple(cfg.rope_scale), cfg.base_fps
        ).to(device=device, dtype=dtype)
        self.extra_pos_embed = None
        if cfg.extra_pos_embed_type == "sincos":
            hidden_size = cfg.num_attention_heads * cfg.attention_head_dim
            self.extra_pos_embed = SinCosPosEmbed3D(
                hidden_size, max_size, patch_size, tuple(cfg.extra_pos_embed_scale)
            ).to(device=device, dtype=dtype)

    @property
    def hint_version(self) -> int:
        """The ``render/hint.py`` version of the model's shading hint; 0 for none (``true`` in older files: 1)."""
        return int(self.config.shading_hint)

    def residual_base(self, latent_condition: torch.Tensor | None) -> torch.Tensor | None:
        """(B, C, T, H, W) hint latent of a ``hint_residual`` model: the condition's last key (zeros when it was
        dropped, or in guidance's unconditional branch); None for other models."""
        if not self.config.hint_residual or latent_condition is None:
            return None
        channels = self.config.out_channels
        return latent_condition[:, -(channels + 1) : -1]  # the last key's latent, before its mask channel

    @property
    def condition_channels(self) -> int:
        """Channels of the latent condition concatenated after the denoised latent."""
        return self.config.in_channels - self.config.out_channels

    def prepare_context(
        self,
        batch_size: int,
        encoder_hidden_states: torch.Tensor | None,
        context_index: torch.Tensor | None,
        dtype: torch.dtype,
        device: torch.device | None = None,
    ) -> torch.Tensor | None:
        """Cross-attention tokens: the context-embedding row for the inverse model, else the given context.

        The official inverse DiT repeats the row to the length of the (dummy) T5 context; with identical keys the
        softmax is uniform, so a single token is the same attention (used when no context is given).
        """
        if self.context_embedding is None:
            return encoder_hidden_states
        if context_index is None:
            raise ValueError("this model has a context embedding: pass context_index (the G-buffer pass)")
        # the index goes where the activations are (with offloading, weights may sit on "meta" until used)
        device = device if device is not None else self.context_embedding.weight.device
        index = torch.as_tensor(context_index).to(device=device, dtype=torch.long)
        index = index.reshape(-1, 1)[:, :1]  # (B or 1, 1)
        emb = self.context_embedding(index)  # (B, 1, Dc)
        num_tokens = 1 if encoder_hidden_states is None else encoder_hidden_states.shape[1]
        emb = emb.expand(max(batch_size, emb.shape[0]), num_tokens, -1)
        return emb.to(encoder_hidden_states.dtype if encoder_hidden_states is not None else dtype)

    def concat_inputs(
        self,
        hidden_states: torch.Tensor,
        latent_condition: torch.Tensor | None,
        padding_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """[x, latent_condition, padding mask] along channels: (B, in_channels (+1), T, H, W)."""
        batch_size, _, num_frames, height, width = hidden_states.shape
        if self.condition_channels:
            if latent_condition is None:
                raise ValueError(f"this model expects a latent_condition with {self.condition_channels} channels")
            if latent_condition.shape[1] != self.condition_channels:
                raise ValueError(
                    f"latent_condition has {latent_condition.shape[1]} channels, expected {self.condition_channels}"
                )
            hidden_states = torch.cat([hidden_states, latent_condition.to(hidden_states.dtype)], dim=1)
        if not self.config.concat_padding_mask:
            return hidden_states
        if padding_mask is None:
            mask = hidden_states.new_zeros(batch_size, 1, num_frames, height, width)
        else:
            mask = resize_nearest(padding_mask.to(hidden_states.dtype), (height, width))  # (B|1, 1, H, W)
            mask = mask.unsqueeze(2).expand(batch_size, 1, num_frames, height, width)
        return torch.cat([hidden_states, mask], dim=1)

    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        latent_condition: torch.Tensor | None = None,
        context_index: torch.Tensor | None = None,
        fps: torch.Tensor | float | None = None,
        padding_mask: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> tuple[torch.Tensor] | Transformer2DModelOutput:
        """Raw network output F (B, out_channels, T, H, W) for input x = c_in * x_sigma and timestep c_noise.

        With ``hint_residual`` the denoiser D = c_skip x + c_out F becomes base + c_skip (x - base) + c_out F_net,
        base being the hint's latent (:meth:`residual_base`): the network sees the noisy difference from the hint,
        and the hint is added back to its output with the weight that makes D come out so. Samplers, guidance and
        the EDM loss are unchanged, and a zero output projection renders exactly the hint. Why: the small forward
        model did not learn to pass the hint's full-resolution detail through (8 x 8 tiles after 768 steps).

        Args:
            hidden_states: (B, out_channels, T, H, W) preconditioned noisy latent.
            timestep: c_noise, a 0-d, (1,) or (B,) tensor (flattened as in the official net).
            encoder_hidden_states: (B, M, text_embed_dim) context; ``None`` skips the cross-attention of a model
                without context embedding (exactly what a zero context gives).
            latent_condition: (B, in_channels - out_channels, T, H, W).
            context_index: (B, 1) or (B,) pass index for a model with a context embedding.
            fps: frames per second for the RoPE time positions (official: always 24); ``None`` for images.
            padding_mask: (B|1, 1, H_pixels, W_pixels), resized with nearest to the latent size; ``None``
                means zeros (what the official datasets pass).
            attention_mask: not used by the official net (``use_cross_attn_mask=False``); rejected.
        """
        if attention_mask is not None:
            raise ValueError("DiffusionRenderer ignores cross-attention masks; pass attention_mask=None")
        batch_size, _, num_frames, height, width = hidden_states.shape
        p_t, p_h, p_w = self.config.patch_size
        if num_frames % p_t or height % p_h or width % p_w:
            raise ValueError(f"latent size {(num_frames, height, width)} is not a multiple of {(p_t, p_h, p_w)}")
        grid = (num_frames // p_t, height // p_h, width // p_w)

        # 1. Inputs and positional embeddings
        base = self.residual_base(latent_condition)
        if base is not None:
            sigma = torch.exp(4.0 * timestep.float().flatten()).view(-1, 1, 1, 1, 1)  # timestep = c_noise(sigma)
            hidden_states = (hidden_states.float() - c_in(sigma) * base.float()).to(hidden_states.dtype)
        x = self.concat_inputs(hidden_states, latent_condition, padding_mask)
        # Position tables in the weights' dtype: what the official inference gets by casting the whole model
        # (buffers included) to bf16, whatever path loaded this one.
        dtype = self.patch_embed.proj.weight.dtype
        image_rotary_emb = self.rope(*grid, fps=fps, dtype=dtype)
        extra_pos_emb = self.extra_pos_embed(*grid, dtype=dtype) if self.extra_pos_embed is not None else None

        # 2. Patchify: (B, C, T, H, W) -> (B, THW, D); with context parallelism this rank's THW / N tokens
        # A copy, not a view: every block then gets a base tensor. With a view into the first block only, the
        # compiled blocks' dynamic-shape guards read ``x._base`` and fail on the others (None), so a batch-size
        # change recompiled on every call until torch.compile's recompile limit (28 blocks, limit 8).
        x = self.patch_embed(x).flatten(1, 3).clone()
        group = self.context_parallel_group
        if group is not None:
            tokens = x.shape[1]
            self.transformer_blocks[0].attn1.processor.counts = token_counts(tokens, dist.get_world_size(group))
            x = local_tokens(x, group, dim=1)
            image_rotary_emb = tuple(local_tokens(table, group, dim=0) for table in image_rotary_emb)
            if extra_pos_emb is not None:
                extra_pos_emb = local_tokens(extra_pos_emb, group, dim=1)

        # 3. Timestep embedding (AdaLN-LoRA term temb and the RMS-normalised sinusoid)
        temb, embedded_timestep = self.time_embed(x, timestep.flatten())

        # 4. Context
        context = self.prepare_context(batch_size, encoder_hidden_states, context_index, x.dtype, x.device)

        # 5. Blocks
        with attention_backend(self.attention, x.device):
            adds_pos_emb = self.config.pos_embed_blocks
            for i, block in enumerate(self.transformer_blocks):
                pos_emb = extra_pos_emb if adds_pos_emb is None or i in adds_pos_emb else None
                args = (x, context, embedded_timestep, temb, image_rotary_emb, pos_emb)
                if torch.is_grad_enabled() and self.gradient_checkpointing:
                    x = self._gradient_checkpointing_func(block, *args)
                else:
                    x = block(*args)

        # 6. Output norm, projection and unpatchify: feature order (p_h, p_w, p_t, C)
        x = self.norm_out(x, embedded_timestep, temb)
        x = self.proj_out(x)  # (B, THW, p_h * p_w * p_t * C)
        if group is not None:
            x = gather_tokens(x, tokens, group, dim=1)
        x = x.unflatten(2, (p_h, p_w, p_t, -1)).unflatten(1, grid)  # (B, T, H, W, p_h, p_w, p_t, C)
        x = x.permute(0, 7, 1, 6, 2, 4, 3, 5)  # (B, C, T, p_t, H, p_h, W, p_w)
        x = x.flatten(6, 7).flatten(4, 5).flatten(2, 3)
        if base is not None:
            x = (x.float() + (1 - c_skip(sigma)) / c_out(sigma) * base.float()).to(x.dtype)
        if not return_dict:
            return (x,)
        return Transformer2DModelOutput(sample=x)


def resize_nearest(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """torchvision ``resize(..., NEAREST)`` on a (B, C, H, W) tensor: source index floor(dst * in / out).

    Written here so the CPU path needs no torchvision (whose PyPI builds do not import beside CPU torch).
    """
    if tuple(mask.shape[-2:]) == tuple(size):
        return mask
    return F.interpolate(mask, size=size, mode="nearest")


def count_parameters(module: nn.Module) -> int:
    return sum(math.prod(p.shape) for p in module.parameters())


def official_net_to_config(net: dict[str, Any]) -> dict[str, Any]:
    """Config of :class:`DiffusionRendererTransformer3DModel` from an official ``DiffusionRendererGeneralDIT`` dict.

    Raises ``ValueError`` on official options this implementation does not reproduce, rather than guessing.
    """
    expected = {
        "block_config": "FA-CA-MLP",
        "pos_emb_cls": "rope3d",
        "use_adaln_lora": True,
        "affline_emb_norm": True,
        "use_cross_attn_mask": False,
        "pos_emb_learnable": False,
    }
    for key, value in expected.items():
        if key in net and net[key] != value:
            raise ValueError(f"official net option {key}={net[key]!r} is not supported (expected {value!r})")
    extra = net.get("extra_per_block_abs_pos_emb", False)
    extra_type = net.get("extra_per_block_abs_pos_emb_type", "sincos") if extra else None
    if extra_type not in SUPPORTED_EXTRA_POS_EMBED:
        raise ValueError(f"extra_per_block_abs_pos_emb_type={extra_type!r} is not supported")
    model_channels, num_heads = int(net["model_channels"]), int(net["num_heads"])
    if model_channels % num_heads:
        raise ValueError("model_channels must be divisible by num_heads")
    in_channels = int(net.get("in_channels", 16))
    return {
        "in_channels": in_channels + int(net.get("additional_concat_ch", 0)),
        "out_channels": int(net.get("out_channels", in_channels)),
        "num_attention_heads": num_heads,
        "attention_head_dim": model_channels // num_heads,
        "num_layers": int(net["num_blocks"]),
        "mlp_ratio": float(net.get("mlp_ratio", 4.0)),
        "text_embed_dim": int(net.get("crossattn_emb_channels", 1024)),
        "adaln_lora_dim": int(net.get("adaln_lora_dim", 256)),
        "max_size": (int(net["max_frames"]), int(net["max_img_h"]), int(net["max_img_w"])),
        "patch_size": (int(net["patch_temporal"]), int(net["patch_spatial"]), int(net["patch_spatial"])),
        "rope_scale": (
            float(net.get("rope_t_extrapolation_ratio", 1.0)),
            float(net.get("rope_h_extrapolation_ratio", 1.0)),
            float(net.get("rope_w_extrapolation_ratio", 1.0)),
        ),
        "concat_padding_mask": bool(net.get("concat_padding_mask", True)),
        "extra_pos_embed_type": extra_type,
        "extra_pos_embed_scale": (
            float(net.get("extra_t_extrapolation_ratio", 1.0)),
            float(net.get("extra_h_extrapolation_ratio", 1.0)),
            float(net.get("extra_w_extrapolation_ratio", 1.0)),
        ),
        # The official DiT hard-codes Embedding(16, crossattn_emb_channels).
        "num_context_embeddings": 16 if net.get("use_context_embedding", False) else 0,
        "qk_norm_eps": 1e-6,
        "shading_hint": int(net.get("shading_hint", 0)),  # never in official configs
        "hint_residual": bool(net.get("hint_residual", False)),
        "exposure_level": float(net.get("exposure_level", 0.0)),  # never in official configs
        # never in official configs: which blocks add the per-block position embedding (default: all, official)
        **({"pos_embed_blocks": tuple(net["pos_embed_blocks"])} if "pos_embed_blocks" in net else {}),
    }
