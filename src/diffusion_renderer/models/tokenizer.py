"""Video tokenizers: pixels (B, 3, T, H, W) in [-1, 1] <-> the latents (B, C, T', H', W') the DiT sees.

:class:`LatentTokenizer` is the interface the pipelines use. :class:`CosmosTokenizer` is the official
Cosmos-Tokenize1-CV8x8x8-720p: the network is diffusers' ``AutoencoderKLCosmos`` (same architecture as the
official ``CausalContinuousVideoTokenizer``), wrapped with the official latent normalisation of
``JointImageVideoSharedJITTokenizer`` and the diffusion model's ``sigma_data`` scaling:

    encode: z = (vae.encode(x) - mean) / std * sigma_data
    decode: x = vae.decode(z / sigma_data * std + mean)

Video statistics are per channel and per latent frame of a chunk, image statistics (T = 1) per channel.
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, TypeVar

import torch
from diffusers import AutoencoderKLCosmos
from safetensors import safe_open
from safetensors.torch import save_file

from diffusion_renderer.checkpoints.keys import (
    TOKENIZER_IGNORED,
    mismatch_report,
    official_to_tokenizer_key,
    shape_of,
    vae_key_to_official,
)
from diffusion_renderer.conventions import DEFAULT_RESOLUTION, PIXEL_CHUNK_DURATION, SIGMA_DATA
from diffusion_renderer.models.causal_streaming import decode_streaming, encode_streaming
from diffusion_renderer.models.vae_attention import use_contiguous_attention

# Official network config ``TokenizerConfigs["CV8x8x8_720p"]`` of Cosmos-Tokenize1-CV8x8x8-720p.
CV8X8X8_720P_CONFIG: Final[dict[str, Any]] = {
    "attn_resolutions": [32],
    "channels": 128,
    "channels_mult": [2, 4, 4],
    "dropout": 0.0,
    "in_channels": 3,
    "num_res_blocks": 2,
    "out_channels": 3,
    "resolution": 1024,
    "patch_size": 4,
    "patch_method": "haar",
    "latent_channels": 16,
    "z_channels": 16,
    "z_factor": 1,
    "num_groups": 1,
    "legacy_mode": False,
    "spatial_compression": 8,
    "temporal_compression": 8,
    "formulation": "AE",
    "encoder": "FACTORIZED",
    "decoder": "FACTORIZED",
    "name": "CV",
}

_REQUIRED_KEYS = (
    "channels",
    "channels_mult",
    "num_res_blocks",
    "attn_resolutions",
    "resolution",
    "patch_size",
    "patch_method",
    "latent_channels",
    "z_channels",
    "spatial_compression",
    "temporal_compression",
    "in_channels",
    "out_channels",
    "formulation",
    "encoder",
    "decoder",
)
# Optional keys and the only values AutoencoderKLCosmos reproduces (dropout only acts in training).
_FIXED_KEYS: dict[str, Any] = {"z_factor": 1, "num_groups": 1, "legacy_mode": False}
_IGNORED_KEYS = ("name", "dropout")

STATS_FILE: Final[str] = "latent_stats.safetensors"
# Latent frames per streaming step (8 pixel frames each; None: whole clips). Measured at 57 frames of 720p
# (benchmarks/PERFORMANCE_NOTES.md, section 4): the whole-clip encode is already lean (3.7 GiB) and 2.4x faster
# than streaming; decoding peaks at 5.0 GiB whole, 4.3 GiB in steps of 2 (1.1 s instead of 0.5 s).
ENCODE_STREAM_FRAMES: Final[int | None] = None
DECODE_STREAM_FRAMES: Final[int | None] = 2
VAE_FOLDER: Final[str] = "vae"
_FORMAT: Final[str] = "diffusion_renderer.CosmosTokenizer/1"


def _log2(value: int, what: str) -> int:
    if not isinstance(value, int) or value < 1 or value & (value - 1):
        raise ValueError(f"tokenizer config: {what} must be a power of two, got {value!r}")
    return int(math.log2(value))


def official_tokenizer_to_vae_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """``AutoencoderKLCosmos`` constructor kwargs for an official tokenizer network config.

    Raises ``ValueError`` for options that ``AutoencoderKLCosmos`` cannot reproduce or that were not verified
    against the official key layout (non-AE formulations, non-factorized networks, ``z_factor != 1``, attention
    inside the down/up levels, non-Haar patching, unknown keys).
    """
    missing = [k for k in _REQUIRED_KEYS if k not in cfg]
    unknown = sorted(set(cfg) - set(_REQUIRED_KEYS) - set(_FIXED_KEYS) - set(_IGNORED_KEYS))
    if missing or unknown:
        raise ValueError(f"tokenizer config: missing keys {missing}, unknown keys {unknown}")
    expected = {"formulation": "AE", "encoder": "FACTORIZED", "decoder": "FACTORIZED", "patch_method": "haar"}
    expected.update(_FIXED_KEYS)
    for key, value in expected.items():
        if key in cfg and cfg[key] != value:
            raise ValueError(f"tokenizer config: {key}={cfg[key]!r} is not supported (only {value!r})")
    if cfg["z_channels"] != cfg["latent_channels"]:
        raise ValueError("tokenizer config: z_channels must equal latent_channels (AE with z_factor 1)")

    ch, mult = int(cfg["channels"]), [int(m) for m in cfg["channels_mult"]]
    if not mult:
        raise ValueError("tokenizer config: channels_mult is empty")
    levels = len(mult)
    patch = _log2(cfg["patch_size"], "patch_size")
    spatial = _log2(cfg["spatial_compression"], "spatial_compression") - patch
    temporal = _log2(cfg["temporal_compression"], "temporal_compression") - patch
    # Every level but the last may halve H, W and T once; the Haar patcher does the rest.
    if not 0 <= spatial <= levels - 1 or not 0 <= temporal <= levels - 1:
        raise ValueError(
            f"tokenizer config: compression {cfg['temporal_compression']}x{cfg['spatial_compression']} "
            f"needs patch_size <= compression <= patch_size * 2**{levels - 1}"
        )
    # Level attention has no key rule (not present in any released Cosmos tokenizer config): refuse it.
    res = cfg["resolution"] // cfg["patch_size"]
    level_res = {res // 2**i for i in range(levels)}
    if level_res & {int(r) for r in cfg["attn_resolutions"]}:
        raise ValueError(
            f"tokenizer config: attention inside the down/up levels (resolutions {sorted(level_res)} vs "
            f"attn_resolutions {list(cfg['attn_resolutions'])}) is not supported"
        )
    return {
        "in_channels": int(cfg["in_channels"]),
        "out_channels": int(cfg["out_channels"]),
        "latent_channels": int(cfg["latent_channels"]),
        # encoder: conv_in -> ch, level i -> ch * mult[i]; decoder (listed low to high channels reversed):
        # conv_in/mid -> ch * mult[-1], level i (official up.i) -> ch * mult[i].
        "encoder_block_out_channels": (ch, *(ch * m for m in mult)),
        "decode_block_out_channels": (*(ch * m for m in mult), ch * mult[-1]),
        "attention_resolutions": tuple(int(r) for r in cfg["attn_resolutions"]),
        "resolution": int(cfg["resolution"]),
        "num_layers": int(cfg["num_res_blocks"]),
        "patch_size": int(cfg["patch_size"]),
        "patch_type": "haar",
        "spatial_compression_ratio": int(cfg["spatial_compression"]),
        "temporal_compression_ratio": int(cfg["temporal_compression"]),
        # The VAE's built-in stats are those of CV8x8x8-1.0 and unused here; ours live in CosmosTokenizer.
        "latents_mean": None,
        "latents_std": None,
    }


def _check_official_state_dicts(
    encoder_sd: Mapping[str, Any], decoder_sd: Mapping[str, Any], vae: AutoencoderKLCosmos, num_up_levels: int
) -> dict[str, torch.Tensor]:
    """Strictly match official keys/shapes against ``vae``; returns the state dict in our key names.

    Raises one ``ValueError`` listing every missing key, unexpected key and wrong shape (official names).
    """
    ours = vae.state_dict()
    # Haar constants of the official patchers are not weights, but must describe the same transform.
    constants = {
        "encoder.patcher3d.wavelets": vae.encoder.patch_embed.wavelets,
        "encoder.patcher3d._arange": vae.encoder.patch_embed._arange,
        "encoder.patcher3d.patch_size_buffer": torch.tensor([vae.config.patch_size]),
        "decoder.unpatcher3d.wavelets": vae.decoder.unpatch_embed.wavelets,
        "decoder.unpatcher3d._arange": vae.decoder.unpatch_embed._arange,
        "decoder.unpatcher3d.patch_size_buffer": torch.tensor([vae.config.patch_size]),
    }
    mapped: dict[str, torch.Tensor] = {}
    unexpected, wrong = [], []
    for prefixes, state_dict in (
        (("encoder.", "quant_conv."), encoder_sd),
        (("decoder.", "post_quant_conv."), decoder_sd),
    ):
        for key, value in state_dict.items():
            if not key.startswith(prefixes):  # e.g. a decoder key in encoder.jit
                unexpected.append(key)
            elif TOKENIZER_IGNORED.search(key):
                ref = constants.get(key)
                if (
                    ref is None
                    or shape_of(value) != tuple(ref.shape)
                    or not torch.allclose(value.double(), ref.double())
                ):
                    wrong.append(f"{key}: constant does not match the config's {vae.config.patch_type} patcher")
            elif (name := official_to_tokenizer_key(key, num_up_levels)) not in ours or name in mapped:
                unexpected.append(key)
            elif shape_of(value) != tuple(ours[name].shape):
                got = list(shape_of(value)) if shape_of(value) is not None else type(value).__name__
                wrong.append(f"{key}: file {got} vs model {list(ours[name].shape)}")
            else:
                mapped[name] = value
    missing = [vae_key_to_official(k, num_up_levels) for k in ours if k not in mapped]
    # A wrong shape is reported once, not as missing too.
    missing = [k for k in missing if not any(w.startswith(k + ":") for w in wrong)]
    report = mismatch_report(missing, unexpected, wrong)
    if report:
        raise ValueError(f"tokenizer state dicts do not match the config: {report}")
    return mapped


def _move(module: torch.nn.Module, device: torch.device | str | None, dtype: torch.dtype | None) -> None:
    # nn.Module.to, not ModelMixin.to: the latter warns about fp32-kept modules on every dtype cast, even
    # though AutoencoderKLCosmos keeps none.
    if device is not None or dtype is not None:
        torch.nn.Module.to(module, device=device, dtype=dtype)


_T = TypeVar("_T", bound="LatentTokenizer")


class LatentTokenizer(ABC):
    """Pixels (B, 3, T, H, W) in [-1, 1] <-> diffusion latents (B, C, T', H', W'), frozen, no gradients.

    ``encode`` returns the latents exactly as the diffusion model sees them (any normalisation and
    ``sigma_data`` scaling included); ``decode`` inverts that. Implementations: :class:`CosmosTokenizer`.
    """

    latent_channels: int
    spatial_compression: int
    temporal_compression: int
    window_frames: int  # frames per window the pipelines use by default (1 + temporal_compression k)
    resolution: int | tuple[int, int] = DEFAULT_RESOLUTION  # default processing size of the pipelines
    # latent frames a streaming tokenizer encodes / decodes at once (None: whole clips); a memory bound, the
    # numbers stay
    encode_stream_frames: int | None = None
    decode_stream_frames: int | None = None

    @abstractmethod
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) in [-1, 1] -> (B, C, T', H', W'), in the dtype of ``pixels``."""

    @abstractmethod
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, C, T', H', W') -> (B, 3, T, H, W), roughly in [-1, 1], in the dtype of ``latents``."""

    def encode_still(self, frame: torch.Tensor, num_frames: int) -> torch.Tensor:
        """Latents of a clip that shows ``frame`` (B, 3, 1, H, W) for ``num_frames`` frames (a fixed light's
        conditions): ``encode`` of the repeated frame. Tokenizers that can do it from the one frame override this."""
        return self.encode(frame.expand(-1, -1, num_frames, -1, -1))

    @abstractmethod
    def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int]:
        """(T', H', W') of a clip; ``ValueError`` (saying what is allowed) for sizes it cannot encode."""

    @property
    @abstractmethod
    def device(self) -> torch.device: ...

    @property
    @abstractmethod
    def dtype(self) -> torch.dtype:
        """Compute dtype of the network."""

    @abstractmethod
    def to(self: _T, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> _T:
        """Move to ``device`` and/or compute in ``dtype`` (in place); returns ``self``."""


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _dtype_from_name(name: str) -> torch.dtype:
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown dtype {name!r}")
    return dtype


class CosmosTokenizer(LatentTokenizer):
    """Cosmos-Tokenize1 (``AutoencoderKLCosmos``) with the official latent normalisation.

    Frame counts (official ``JointImageVideoSharedJITTokenizer``, with P = ``pixel_chunk_duration``,
    c = temporal compression, L = (P - 1) // c + 1 latent frames per chunk):

    * T = 1: one image, normalised with the image statistics (per channel);
    * T = k·P: k chunks of P frames encoded independently, each normalised with the first L columns of the
      video statistics (per channel and latent frame) and concatenated to k·L latent frames;
    * extension (not in the official code, which only accepts multiples of P): a clip shorter than one chunk
      with T = c·n + 1 frames is encoded as one chunk, normalised with the first (T - 1) // c + 1 columns.

    Decoding mirrors this: 1 latent frame is an image, k·L frames are k chunks, fewer than L one short chunk.
    Anything else raises ``ValueError``. H and W must be multiples of the spatial compression.

    ``dtype`` is the VAE compute dtype (inputs are cast to it, outputs back to the input dtype, as the official
    wrapper does); ``stats_dtype`` the precision the statistics are stored in (cast to the input dtype when
    applied). The official inference uses ``is_bf16=True``: ``dtype=stats_dtype=torch.bfloat16``.

    ``encode_stream_frames`` / ``decode_stream_frames`` bound memory: each chunk runs that many latent frames (and
    one sample) at a time through the causal network, with the same result as one pass (``causal_streaming.py``);
    None runs whole chunks and batches, as the official wrapper does.
    """

    def __init__(
        self,
        vae: AutoencoderKLCosmos,
        video_mean: torch.Tensor,
        video_std: torch.Tensor,
        image_mean: torch.Tensor,
        image_std: torch.Tensor,
        pixel_chunk_duration: int = PIXEL_CHUNK_DURATION,
        sigma_data: float = SIGMA_DATA,
        dtype: torch.dtype | None = None,
        stats_dtype: torch.dtype | None = None,
        encode_stream_frames: int | None = ENCODE_STREAM_FRAMES,
        decode_stream_frames: int | None = DECODE_STREAM_FRAMES,
    ) -> None:
        self.vae = vae.eval().requires_grad_(False)
        use_contiguous_attention(self.vae)  # O(tokens) attention memory, same outputs
        for name, value in (("encode", encode_stream_frames), ("decode", decode_stream_frames)):
            if value is not None and value < 1:
                raise ValueError(f"{name}_stream_frames must be >= 1 or None, got {value}")
        self.encode_stream_frames, self.decode_stream_frames = encode_stream_frames, decode_stream_frames
        if dtype is not None:
            _move(self.vae, None, dtype)
        cfg = vae.config
        self.latent_channels = int(cfg.latent_channels)
        self.spatial_compression = int(cfg.spatial_compression_ratio)
        self.temporal_compression = int(cfg.temporal_compression_ratio)
        self.in_channels = int(cfg.in_channels)
        self.sigma_data = float(sigma_data)
        self.pixel_chunk_duration = int(pixel_chunk_duration)
        if self.pixel_chunk_duration < 1 or (self.pixel_chunk_duration - 1) % self.temporal_compression:
            raise ValueError(
                f"pixel_chunk_duration must be {self.temporal_compression}·n + 1, got {pixel_chunk_duration}"
            )
        self.latent_chunk_duration = (self.pixel_chunk_duration - 1) // self.temporal_compression + 1
        self.window_frames = self.pixel_chunk_duration

        channels = self.latent_channels
        stats_dtype = stats_dtype or torch.float32
        device = self.vae.device
        # Official: mean_std.pt tensors .view(C, -1) -> (C, L_max); image_mean_std.pt -> (C,).
        if video_mean.numel() % channels or video_mean.numel() != video_std.numel():
            raise ValueError(f"video mean/std: {video_mean.numel()} values do not form ({channels}, L) tables")
        if image_mean.numel() != channels or image_std.numel() != channels:
            raise ValueError(f"image mean/std must hold {channels} values, got {image_mean.numel()}")
        self.video_mean = video_mean.detach().reshape(channels, -1).to(device, stats_dtype)  # (C, L_max)
        self.video_std = video_std.detach().reshape(channels, -1).to(device, stats_dtype)  # (C, L_max)
        self.image_mean = image_mean.detach().reshape(channels).to(device, stats_dtype)  # (C,)
        self.image_std = image_std.detach().reshape(channels).to(device, stats_dtype)  # (C,)
        if self.video_mean.shape[1] < self.latent_chunk_duration:
            raise ValueError(
                f"video mean/std cover {self.video_mean.shape[1]} latent frames, a {self.pixel_chunk_duration}-frame "
                f"chunk needs {self.latent_chunk_duration}"
            )

    # ------------------------------------------------------------------------------------------ basics

    @property
    def device(self) -> torch.device:
        return self.vae.device

    @property
    def dtype(self) -> torch.dtype:
        return self.vae.dtype

    @property
    def stats_dtype(self) -> torch.dtype:
        return self.video_mean.dtype

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> CosmosTokenizer:
        if isinstance(device, torch.dtype):  # to(torch.bfloat16)
            device, dtype = None, device
        _move(self.vae, device, dtype)
        if device is not None:
            for name in ("video_mean", "video_std", "image_mean", "image_std"):
                setattr(self, name, getattr(self, name).to(device))
        return self

    def __repr__(self) -> str:
        return (
            f"CosmosTokenizer(latent_channels={self.latent_channels}, compression={self.temporal_compression}x"
            f"{self.spatial_compression}x{self.spatial_compression}, "
            f"pixel_chunk_duration={self.pixel_chunk_duration}, dtype={self.dtype}, stats_dtype={self.stats_dtype}, "
            f"device={self.device})"
        )

    # ------------------------------------------------------------------------------------ frame plans

    def _allowed(self, unit: str) -> str:
        p, c, lat = self.pixel_chunk_duration, self.temporal_compression, self.latent_chunk_duration
        if unit == "frames":
            return f"allowed: 1, a multiple of {p}, or {c}·n+1 below {p}"
        return f"allowed: 1, a multiple of {lat}, or fewer than {lat}"

    def _pixel_chunk(self, num_frames: int) -> int:
        """Pixel frames per chunk for a clip of ``num_frames`` (1 = image)."""
        p, c = self.pixel_chunk_duration, self.temporal_compression
        if num_frames == 1 or (num_frames > 0 and num_frames % p == 0):
            return min(num_frames, p)
        if 1 < num_frames < p and (num_frames - 1) % c == 0:
            return num_frames
        raise ValueError(f"CosmosTokenizer cannot encode {num_frames} frames ({self._allowed('frames')})")

    def _latent_chunk(self, num_latent_frames: int) -> int:
        """Latent frames per chunk for ``num_latent_frames`` latent frames (1 = image)."""
        lat = self.latent_chunk_duration
        if num_latent_frames == 1 or (num_latent_frames > 0 and num_latent_frames % lat == 0):
            return min(num_latent_frames, lat)
        if 1 < num_latent_frames < lat:
            return num_latent_frames
        raise ValueError(
            f"CosmosTokenizer cannot decode {num_latent_frames} latent frames ({self._allowed('latent')})"
        )

    def _check_spatial(self, height: int, width: int) -> None:
        s = self.spatial_compression
        if height % s or width % s or height < 1 or width < 1:
            raise ValueError(f"CosmosTokenizer needs height and width multiples of {s}, got {height}x{width}")

    def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int]:
        chunk = self._pixel_chunk(num_frames)
        self._check_spatial(height, width)
        latent_frames = (num_frames // chunk) * ((chunk - 1) // self.temporal_compression + 1)
        return latent_frames, height // self.spatial_compression, width // self.spatial_compression

    def latent_stats(self, num_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std), each (1, C, L, 1, 1), applied to every chunk of a ``num_frames``-frame clip."""
        return self._stats((self._pixel_chunk(num_frames) - 1) // self.temporal_compression + 1, image=num_frames == 1)

    def _stats(self, latent_frames: int, image: bool) -> tuple[torch.Tensor, torch.Tensor]:
        channels = self.latent_channels
        if image:
            return self.image_mean.view(1, channels, 1, 1, 1), self.image_std.view(1, channels, 1, 1, 1)
        shape = (1, channels, latent_frames, 1, 1)
        return self.video_mean[:, :latent_frames].reshape(shape), self.video_std[:, :latent_frames].reshape(shape)

    # ------------------------------------------------------------------------------- encode / decode

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        if pixels.ndim != 5 or pixels.shape[1] != self.in_channels:
            raise ValueError(f"expected pixels (B, {self.in_channels}, T, H, W), got {tuple(pixels.shape)}")
        num_frames = pixels.shape[2]
        chunk = self._pixel_chunk(num_frames)
        self._check_spatial(*pixels.shape[-2:])
        mean, std = self.latent_stats(num_frames)  # (1, C, L, 1, 1)
        mean, std = mean.to(pixels), std.to(pixels)
        latents = []
        for part in pixels.split(chunk, dim=2):  # (B, 3, chunk, H, W)
            z = self._encode_chunk(part.to(self.dtype)).to(pixels.dtype)  # (B, C, L, H/s, W/s)
            latents.append((z - mean) / std * self.sigma_data)
        return torch.cat(latents, dim=2)

    @torch.no_grad()
    def encode_still(self, frame: torch.Tensor, num_frames: int) -> torch.Tensor:
        """One frame's encode instead of the clip's.

        Every module of the causal encoder maps a clip that is constant in time to one that is constant in time: its
        convolutions, Haar patcher and downsamplers pad with the first frame, its norms and spatial attention act per
        frame, its causal temporal attention averages equal values. So each raw latent frame of a still clip is the
        raw latent of its one frame; only the per-frame statistics differ. Tested against the clip's encode
        (``tests/test_official_tokenizer.py``, ``tests/test_causal_streaming.py``).
        """
        if frame.ndim != 5 or frame.shape[1] != self.in_channels or frame.shape[2] != 1:
            raise ValueError(f"expected one frame (B, {self.in_channels}, 1, H, W), got {tuple(frame.shape)}")
        if num_frames == 1:
            return self.encode(frame)
        chunk = self._pixel_chunk(num_frames)
        self._check_spatial(*frame.shape[-2:])
        mean, std = self.latent_stats(num_frames)  # (1, C, L, 1, 1)
        z = self._encode_chunk(frame.to(self.dtype)).to(frame.dtype)  # (B, C, 1, H/s, W/s)
        per_chunk = (z - mean.to(z)) / std.to(z) * self.sigma_data  # (B, C, L, H/s, W/s)
        return per_chunk.repeat(1, 1, num_frames // chunk, 1, 1)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        if latents.ndim != 5 or latents.shape[1] != self.latent_channels:
            raise ValueError(f"expected latents (B, {self.latent_channels}, T, H, W), got {tuple(latents.shape)}")
        num_latent = latents.shape[2]
        chunk = self._latent_chunk(num_latent)
        mean, std = self._stats(chunk, image=num_latent == 1)  # (1, C, L, 1, 1)
        mean, std = mean.to(latents), std.to(latents)
        frames = []
        for part in latents.split(chunk, dim=2):  # (B, C, L, h, w)
            z = part / self.sigma_data * std + mean
            frames.append(self._decode_chunk(z.to(self.dtype)).to(latents.dtype))  # (B, 3, (L-1)·c+1, H, W)
        return torch.cat(frames, dim=2)

    def _encode_chunk(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.encode_stream_frames is None:
            return self.vae.encode(pixels).latent_dist.mode()
        return encode_streaming(self.vae, pixels, self.encode_stream_frames)

    def _decode_chunk(self, latents: torch.Tensor) -> torch.Tensor:
        if self.decode_stream_frames is None:
            return self.vae.decode(latents).sample
        return decode_streaming(self.vae, latents, self.decode_stream_frames)

    # ----------------------------------------------------------------------------------- construction

    @classmethod
    def from_official_state_dicts(
        cls,
        encoder_sd: Mapping[str, Any],
        decoder_sd: Mapping[str, Any],
        video_mean_std: tuple[torch.Tensor, torch.Tensor],
        image_mean_std: tuple[torch.Tensor, torch.Tensor],
        config: Mapping[str, Any] = CV8X8X8_720P_CONFIG,
        *,
        pixel_chunk_duration: int = PIXEL_CHUNK_DURATION,
        sigma_data: float = SIGMA_DATA,
        dtype: torch.dtype | None = None,
        stats_dtype: torch.dtype | None = None,
    ) -> CosmosTokenizer:
        """From the tensors of ``encoder.jit`` / ``decoder.jit`` and the ``(mean, std)`` pairs of
        ``mean_std.pt`` / ``image_mean_std.pt``, strictly checked (one ``ValueError`` lists every missing key,
        unexpected key and wrong shape in the official names)."""
        vae = AutoencoderKLCosmos(**official_tokenizer_to_vae_config(config))
        state_dict = _check_official_state_dicts(encoder_sd, decoder_sd, vae, len(config["channels_mult"]))
        vae.load_state_dict(state_dict, strict=True)
        return cls(
            vae,
            *video_mean_std,
            *image_mean_std,
            pixel_chunk_duration=pixel_chunk_duration,
            sigma_data=sigma_data,
            dtype=dtype,
            stats_dtype=stats_dtype,
        )

    @classmethod
    def random(
        cls,
        config: Mapping[str, Any] = CV8X8X8_720P_CONFIG,
        seed: int = 0,
        *,
        pixel_chunk_duration: int = PIXEL_CHUNK_DURATION,
        sigma_data: float = SIGMA_DATA,
        dtype: torch.dtype | None = None,
        stats_dtype: torch.dtype | None = None,
        encode_stream_frames: int | None = ENCODE_STREAM_FRAMES,
        decode_stream_frames: int | None = DECODE_STREAM_FRAMES,
    ) -> CosmosTokenizer:
        """Default-initialised network (deterministic given ``seed``), statistics mean 0 and std 1."""
        vae_config = official_tokenizer_to_vae_config(config)
        with torch.random.fork_rng(devices=[]):  # leave the caller's RNG stream alone
            torch.manual_seed(seed)
            vae = AutoencoderKLCosmos(**vae_config)
        channels = vae_config["latent_channels"]
        latent_frames = (pixel_chunk_duration - 1) // vae_config["temporal_compression_ratio"] + 1
        return cls(
            vae,
            torch.zeros(channels, latent_frames),
            torch.ones(channels, latent_frames),
            torch.zeros(channels),
            torch.ones(channels),
            pixel_chunk_duration=pixel_chunk_duration,
            sigma_data=sigma_data,
            dtype=dtype,
            stats_dtype=stats_dtype,
            encode_stream_frames=encode_stream_frames,
            decode_stream_frames=decode_stream_frames,
        )

    def save_pretrained(self, directory: str | Path) -> None:
        """``directory/vae/`` (diffusers ``save_pretrained``) and ``directory/latent_stats.safetensors``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.vae.save_pretrained(directory / VAE_FOLDER, safe_serialization=True)
        settings = {
            "format": _FORMAT,
            "pixel_chunk_duration": self.pixel_chunk_duration,
            "sigma_data": self.sigma_data,
            "dtype": _dtype_name(self.dtype),
            "stats_dtype": _dtype_name(self.stats_dtype),
        }
        tensors = {
            name: getattr(self, name).detach().cpu().contiguous()
            for name in ("video_mean", "video_std", "image_mean", "image_std")
        }
        save_file(tensors, str(directory / STATS_FILE), metadata={"json": json.dumps(settings)})

    @classmethod
    def from_pretrained(
        cls,
        directory: str | Path,
        *,
        dtype: torch.dtype | None = None,
        stats_dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> CosmosTokenizer:
        """Load what :meth:`save_pretrained` wrote (safetensors only, no pickles); ``dtype`` and ``stats_dtype``
        override the saved compute and statistics dtypes."""
        directory = Path(directory)
        stats_path = directory / STATS_FILE
        if not stats_path.is_file() or not (directory / VAE_FOLDER / "config.json").is_file():
            raise FileNotFoundError(f"{directory}: not a saved CosmosTokenizer (needs {VAE_FOLDER}/ and {STATS_FILE})")
        with safe_open(str(stats_path), "pt") as f:
            settings = json.loads((f.metadata() or {}).get("json", "{}"))
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open is no dict
        if settings.get("format") != _FORMAT:
            raise ValueError(f"{stats_path}: unknown format {settings.get('format')!r} (expected {_FORMAT!r})")
        dtype = dtype or _dtype_from_name(settings["dtype"])
        vae = AutoencoderKLCosmos.from_pretrained(directory / VAE_FOLDER, use_safetensors=True, torch_dtype=dtype)
        tokenizer = cls(
            vae,
            tensors["video_mean"],
            tensors["video_std"],
            tensors["image_mean"],
            tensors["image_std"],
            pixel_chunk_duration=settings["pixel_chunk_duration"],
            sigma_data=settings["sigma_data"],
            dtype=dtype,
            stats_dtype=stats_dtype or _dtype_from_name(settings["stats_dtype"]),
        )
        return tokenizer if device is None else tokenizer.to(device=device)
