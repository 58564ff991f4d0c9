"""Exact temporal streaming of the causal Cosmos tokenizer: bounded memory for long clips.

Why by hand: diffusers' ``AutoencoderKLCosmos`` always runs a clip in one piece (its tiling flags are stored but
unused) and peaks at about 15 GiB for 57 frames at 704×1280. Spatial tiles cannot be exact (every GroupNorm
spans a whole frame), but time can: the Cosmos tokenizer is causal, each GroupNorm (``num_groups=1``) and each
spatial attention acts on one frame, and what crosses frames is

* causal convolutions (kernel k_t, the first frame replicated k_t - 1 times in front),
* the temporal down- and upsamplers (pairs of frames, one frame of history),
* causal temporal attention (each frame attends to itself and every earlier frame),
* the Haar patcher and unpatcher (independent groups of ``patch_size`` frames, the first frame repeated).

:class:`CausalStream` patches those modules of one encoder or decoder so that a clip can be fed in consecutive
pieces, each carrying the state the next needs: the last k_t - 1 input frames of every causal convolution, the
last frame before every temporal downsampler, the inputs of every temporal attention so far. The concatenated
outputs equal one pass over the whole clip (tested at float32 tolerance; only the convolution algorithm's
summation order can differ). Pieces follow the latent grid: the first holds 1 + c·(m - 1) pixel frames (m latent
frames), each later one c·m.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from diffusers.models.autoencoders.autoencoder_kl_cosmos import (
    AutoencoderKLCosmos,
    CosmosCausalAttention,
    CosmosCausalConv3d,
    CosmosCausalGroupNorm,
    CosmosDownsample3d,
    CosmosPatchEmbed3d,
    CosmosTemporalAttentionProcessor2_0,
    CosmosUnpatcher3d,
    CosmosUpsample3d,
)
from torch import nn

__all__ = ["CausalStream", "decode_streaming", "encode_streaming", "latent_pieces", "pixel_pieces"]


class CausalStream:
    """Per-module state for feeding one encoder or decoder a clip piece by piece (see the module docstring).

    Use as a context manager around the calls, one call per piece in clip order; leaving it restores the
    modules' own ``forward``.
    """

    def __init__(self, network: nn.Module) -> None:
        self.network = network
        self.first = True  # the current piece starts the clip
        self._history: dict[nn.Module, torch.Tensor] = {}
        self._restore: list[Callable[[], None]] = []

    # ---------------------------------------------------------------------------------- installation

    def __enter__(self) -> CausalStream:
        strided = {id(m.conv2) for m in self.network.modules() if isinstance(m, CosmosDownsample3d)}
        for module in self.network.modules():
            if isinstance(module, CosmosCausalGroupNorm) and module.num_groups != 1:
                raise ValueError("streaming needs per-frame GroupNorms (num_groups=1): this one spans time")
            forward = self._forward_for(module, strided)
            if forward is not None:
                self._restore.append(_replace_own_forward(module, partial(forward, module)))
        return self

    def __exit__(self, *exc: object) -> None:
        for restore in reversed(self._restore):
            restore()
        self._restore.clear()
        self._history.clear()

    def _forward_for(self, module: nn.Module, strided: set[int]) -> Callable[..., torch.Tensor] | None:
        if isinstance(module, CosmosCausalConv3d) and id(module) in strided:
            return self._strided_conv
        if isinstance(module, CosmosCausalConv3d) and module.temporal_pad > 0:
            if module.stride[0] != 1:
                raise ValueError(f"streaming: causal convolution with temporal stride {module.stride[0]}")
            return self._conv
        if isinstance(module, CosmosDownsample3d) and module.temporal_downsample:
            return self._downsample
        if isinstance(module, CosmosUpsample3d) and module.temporal_upsample:
            return self._upsample
        if isinstance(module, CosmosCausalAttention) and isinstance(
            module.processor, CosmosTemporalAttentionProcessor2_0
        ):
            return self._temporal_attention
        if isinstance(module, CosmosPatchEmbed3d):
            return self._patch
        if isinstance(module, CosmosUnpatcher3d):
            return self._unpatch
        return None

    def advance(self) -> None:
        """Call after each piece: the next one continues the clip."""
        self.first = False

    # ------------------------------------------------------------------------- streaming forwards
    # Each takes the module it stands in for first (bound with functools.partial).

    def _remember(self, module: nn.Module, frames: torch.Tensor) -> None:
        # clone: a view would keep the whole piece alive
        self._history[module] = frames.clone()

    def _conv(self, module: CosmosCausalConv3d, x: torch.Tensor) -> torch.Tensor:
        # x: (B, C, T, H, W); history: the k_t - 1 frames before x (the first frame replicated at the start)
        pad = module.temporal_pad
        history = x[:, :, :1].expand(-1, -1, pad, -1, -1) if self.first else self._history[module]
        x = torch.cat([history, x], dim=2)
        self._remember(module, x[:, :, -pad:])
        x = F.pad(x, (*module.spatial_pad, 0, 0), mode=module.pad_mode, value=0.0)
        return nn.Conv3d.forward(module, x)

    def _strided_conv(self, module: CosmosCausalConv3d, x: torch.Tensor) -> torch.Tensor:
        # The temporal downsampler's stride-2 convolution (k_t = 3, one frame of padding): its frame of history is
        # the last input frame of the previous piece (the first frame replicated at the start).
        history = x[:, :, :1] if self.first else self._history[module]
        self._remember(module, x[:, :, -1:])
        return nn.Conv3d.forward(module, torch.cat([history, x], dim=2))

    def _downsample(self, module: CosmosDownsample3d, x: torch.Tensor) -> torch.Tensor:
        # Same arithmetic as diffusers' CosmosDownsample3d, except that only the clip's first piece repeats its
        # first frame: later pieces have an even length, frames (2j - 1, 2j) pooling into output j.
        if module.spatial_downsample:
            x = F.pad(x, (0, 1, 0, 1, 0, 0), mode="constant", value=0)
            x = module.conv1(x) + F.avg_pool3d(x, kernel_size=(1, 2, 2), stride=(1, 2, 2))
        if self.first:
            x = torch.cat([x[:, :, :1], x], dim=2)
        if x.shape[2] % 2:
            raise ValueError("streaming: a piece does not end on a temporal downsampling pair")
        x = module.conv2(x) + F.avg_pool3d(x, kernel_size=(2, 1, 1), stride=(2, 1, 1))
        return module.conv3(x)

    def _upsample(self, module: CosmosUpsample3d, x: torch.Tensor) -> torch.Tensor:
        # Same arithmetic as diffusers' CosmosUpsample3d, except that the time factor comes from the piece's place
        # in the clip (the clip's first frame is not doubled), not from the piece's length.
        x = x.repeat_interleave(2, dim=2)
        if self.first:
            x = x[:, :, 1:]
        x = module.conv1(x) + x
        if module.spatial_upsample:
            x = x.repeat_interleave(2, dim=3).repeat_interleave(2, dim=4)
            x = module.conv2(x) + x
        return module.conv3(x)

    def _temporal_attention(
        self,
        module: CosmosCausalAttention,
        x: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        # Causal attention over every frame so far; the earlier frames are recomputed (cheap at the bottleneck).
        clip = x if self.first else torch.cat([self._history[module], x], dim=2)
        self._history[module] = clip
        causal = torch.tril(clip.new_ones(clip.shape[2], clip.shape[2])).bool()
        return CosmosCausalAttention.forward(module, clip, causal)[:, :, -x.shape[2] :]

    def _patch(self, module: CosmosPatchEmbed3d, x: torch.Tensor) -> torch.Tensor:
        # The patcher repeats a clip's first frame into a group of its own; later pieces give it a throwaway one.
        if self.first:
            return CosmosPatchEmbed3d.forward(module, x)
        return CosmosPatchEmbed3d.forward(module, torch.cat([x[:, :, :1], x], dim=2))[:, :, 1:]

    def _unpatch(self, module: CosmosUnpatcher3d, x: torch.Tensor) -> torch.Tensor:
        # The unpatcher drops patch_size - 1 leading frames of a clip; later pieces give it a throwaway group.
        if self.first:
            return CosmosUnpatcher3d.forward(module, x)
        return CosmosUnpatcher3d.forward(module, torch.cat([x[:, :, :1], x], dim=2))[:, :, 1:]


def _replace_own_forward(module: nn.Module, forward: Callable[..., torch.Tensor]) -> Callable[[], None]:
    """Make ``forward`` the module's own computation, inside any offloading hooks; returns the undo.

    accelerate's hooks (sequential and model CPU offload) call ``module._old_forward`` between loading and
    unloading the weights, diffusers' hooks (group offloading) the first hook's ``forward`` reference: replacing
    that, rather than ``module.forward``, keeps the weights arriving where the streaming forward reads them.
    """
    registry = getattr(module, "_diffusers_hook", None)
    refs = getattr(registry, "_fn_refs", None)
    if refs:
        if refs[0].original_forward is not None:
            raise ValueError(f"streaming: {type(module).__name__} has a diffusers hook that replaces its forward")
        holder, name = refs[0], "forward"
    elif getattr(module, "_hf_hook", None) is not None and "_old_forward" in vars(module):
        holder, name = module, "_old_forward"
    else:
        holder, name = module, "forward"
    own = vars(holder)
    had, previous = name in own, own.get(name)
    setattr(holder, name, forward)

    def restore() -> None:
        if had:
            setattr(holder, name, previous)
        else:
            delattr(holder, name)  # back to the class's forward

    return restore


def pixel_pieces(num_frames: int, compression: int, latent_frames: int) -> list[slice]:
    """Slices of a (1 + c·n)-frame clip into pieces of ``latent_frames`` latent frames (the last may be shorter)."""
    if (num_frames - 1) % compression:
        raise ValueError(f"streaming needs {compression}·n + 1 frames, got {num_frames}")
    bounds = [0, 1 + compression * (latent_frames - 1)]
    while bounds[-1] < num_frames:
        bounds.append(bounds[-1] + compression * latent_frames)
    bounds[-1] = min(bounds[-1], num_frames)
    return [slice(a, b) for a, b in itertools.pairwise(bounds) if b > a]


def latent_pieces(num_latent_frames: int, latent_frames: int) -> list[slice]:
    """Slices of ``num_latent_frames`` into pieces of ``latent_frames``."""
    return [slice(a, min(a + latent_frames, num_latent_frames)) for a in range(0, num_latent_frames, latent_frames)]


def encode_streaming(vae: AutoencoderKLCosmos, pixels: torch.Tensor, latent_frames: int) -> torch.Tensor:
    """``vae.encode(pixels).latent_dist.mode()`` computed ``latent_frames`` latent frames at a time, one sample at a
    time: pixels (B, 3, 1 + c·n, H, W) -> latents (B, C, 1 + n, H/s, W/s)."""
    c = int(vae.config.temporal_compression_ratio)
    out = []
    for sample in pixels.split(1):  # (1, 3, T, H, W)
        parts = []
        with CausalStream(vae.encoder) as stream:
            for piece in pixel_pieces(sample.shape[2], c, latent_frames):
                parts.append(vae.encode(sample[:, :, piece]).latent_dist.mode())  # quant_conv is 1x1x1
                stream.advance()
        out.append(torch.cat(parts, dim=2))
    return torch.cat(out)


def decode_streaming(vae: AutoencoderKLCosmos, latents: torch.Tensor, latent_frames: int) -> torch.Tensor:
    """``vae.decode(latents).sample`` computed ``latent_frames`` latent frames at a time, one sample at a time:
    latents (B, C, 1 + n, h, w) -> pixels (B, 3, 1 + c·n, H, W)."""
    out = []
    for sample in latents.split(1):  # (1, C, L, h, w)
        parts = []
        with CausalStream(vae.decoder) as stream:
            for piece in latent_pieces(sample.shape[2], latent_frames):
                parts.append(vae.decode(sample[:, :, piece]).sample)  # post_quant_conv is 1x1x1
                stream.advance()
        out.append(torch.cat(parts, dim=2))
    return torch.cat(out)
