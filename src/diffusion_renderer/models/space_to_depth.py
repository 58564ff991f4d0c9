"""A lossless tokenizer for the small model: space-to-depth (pixel unshuffle), no weights.

Why not a learned autoencoder: at 256² the DiT of the small model sees 16 × 16 tokens either way (factor 8
here, then its 2 × 2 patches), and space-to-depth is exact (decode ∘ encode = identity to float rounding),
costs nothing on a CPU, needs no training and no shipped weights, and cannot blur G-buffers. What it costs is
a wider patch embedding (192 latent channels per condition instead of 16), paid once in the first layer.

    encode: z = pixel_unshuffle(x, f) * scale      (B, 3, T, H, W) -> (B, 3 f², T, H / f, W / f)
    decode: x = pixel_shuffle(z / scale, f)

Frames are encoded independently (temporal compression 1): any clip length works, and the DiT's attention
is what makes clips consistent; ``window_frames`` (default 16) is the window the pipelines use by default, as
the Cosmos tokenizer's 57-frame chunk is for the 7B, and ``resolution`` (256) their default processing size.
Pixels in [-1, 1] have a standard deviation near sigma_data = 0.5, so the default ``scale`` is 1.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

import torch
import torch.nn.functional as F

from diffusion_renderer.io.atomic import atomic_file
from diffusion_renderer.models.tokenizer import LatentTokenizer

CONFIG_FILE: Final[str] = "tokenizer.json"
FORMAT: Final[str] = "diffusion_renderer.SpaceToDepthTokenizer/1"


class SpaceToDepthTokenizer(LatentTokenizer):
    """Pixels (B, 3, T, H, W) <-> (B, 3 f², T, H / f, W / f), exact; ``vae`` is None (nothing to offload)."""

    vae = None
    temporal_compression = 1

    def __init__(
        self,
        factor: int = 8,
        scale: float = 1.0,
        in_channels: int = 3,
        window_frames: int = 16,
        resolution: int = 256,
    ) -> None:
        if factor < 1 or window_frames < 1 or resolution < 0:
            raise ValueError(
                f"bad space-to-depth settings: factor {factor}, window {window_frames}, size {resolution}"
            )
        self.factor = int(factor)
        self.window_frames = int(window_frames)
        self.resolution = int(resolution)  # default processing size (longest side): what the model trained at
        self.scale = float(scale)
        self.in_channels = int(in_channels)
        self.latent_channels = self.in_channels * self.factor**2
        self.spatial_compression = self.factor
        self._device = torch.device("cpu")
        self._dtype = torch.float32

    # ------------------------------------------------------------------------------------------ basics

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> SpaceToDepthTokenizer:
        if device is not None:
            self._device = torch.device(device)
        if dtype is not None:
            self._dtype = dtype
        return self

    def __repr__(self) -> str:
        return f"SpaceToDepthTokenizer(factor={self.factor}, scale={self.scale})"

    def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int]:
        if height % self.factor or width % self.factor:
            raise ValueError(f"frame size {height}x{width} must be a multiple of {self.factor}")
        return num_frames, height // self.factor, width // self.factor

    # ------------------------------------------------------------------------------------------ coding

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        batch, channels, frames, height, width = pixels.shape
        self.latent_shape(frames, height, width)
        x = pixels.transpose(1, 2).reshape(batch * frames, channels, height, width)
        z = F.pixel_unshuffle(x, self.factor) * self.scale  # (B T, C f², h, w)
        return z.reshape(batch, frames, *z.shape[1:]).transpose(1, 2)

    def encode_still(self, frame: torch.Tensor, num_frames: int) -> torch.Tensor:
        return self.encode(frame).expand(-1, -1, num_frames, -1, -1)  # frame by frame: exact

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        batch, channels, frames, height, width = latents.shape
        z = latents.transpose(1, 2).reshape(batch * frames, channels, height, width)
        x = F.pixel_shuffle(z / self.scale, self.factor)  # (B T, C, H, W)
        return x.reshape(batch, frames, *x.shape[1:]).transpose(1, 2)

    # ------------------------------------------------------------------------------------------ storage

    def config(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "factor": self.factor,
            "scale": self.scale,
            "in_channels": self.in_channels,
            "window_frames": self.window_frames,
            "resolution": self.resolution,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> SpaceToDepthTokenizer:
        if config.get("format") != FORMAT:
            raise ValueError(f"unknown tokenizer format {config.get('format')!r} (expected {FORMAT!r})")
        return cls(
            int(config["factor"]),
            float(config["scale"]),
            int(config.get("in_channels", 3)),
            int(config.get("window_frames", 16)),
            int(config.get("resolution", 256)),
        )

    def save_pretrained(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with atomic_file(directory / CONFIG_FILE) as tmp:
            tmp.write_text(json.dumps(self.config(), indent=1) + "\n")

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> SpaceToDepthTokenizer:
        path = Path(directory) / CONFIG_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{directory}: not a saved SpaceToDepthTokenizer (needs {CONFIG_FILE})")
        return cls.from_config(json.loads(path.read_text()))
