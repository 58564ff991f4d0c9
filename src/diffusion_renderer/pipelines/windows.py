"""Any video length: 57-frame windows (1 + 8k frames) that overlap and agree in latent space.

The official scripts process one 57-frame chunk (``first``) or independent chunks (``all``), which jump at
every boundary. ``blend`` (the default here) slides windows with a stride of ``(T_lat - 1 - overlap)`` latent
frames. Window w's local latent j sits at global latent ``w * stride + j``; latent 0 of a later window
encodes one pixel frame rather than eight, so it is the one latent that is not shared. At every denoising
step the windows' denoised estimates of shared latents are averaged with ramp weights (a consensus, as in
MultiDiffusion), so the overlapping windows converge to the same latents; the decoded overlaps are then
cross-faded in pixel space.

Pixel frame bookkeeping (c = temporal compression 8, L = window frames, o = overlap latents):
window w covers padded frames ``[c w stride, c w stride + L)``; neighbours share ``c o + 1`` frames.
A clip is padded at its end by repeating its last frame (as official) and trimmed back on output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from diffusion_renderer.conventions import (
    CHUNK_MODES,
    TEMPORAL_COMPRESSION,
    WINDOW_FRAMES,
    WINDOW_OVERLAP_LATENTS,
)


@dataclass(frozen=True)
class TemporalPlan:
    """Windows of one clip. ``starts`` are the first padded pixel frame of each window."""

    num_frames: int  # frames of the input clip
    window_frames: int  # L = 1 + c k
    mode: str  # blend | first | all
    starts: tuple[int, ...]
    overlap_latents: int = 0
    compression: int = TEMPORAL_COMPRESSION

    @property
    def window_latents(self) -> int:
        return (self.window_frames - 1) // self.compression + 1

    @property
    def stride_latents(self) -> int:
        return self.window_latents - 1 - self.overlap_latents

    @property
    def num_windows(self) -> int:
        return len(self.starts)

    @property
    def padded_frames(self) -> int:
        return self.starts[-1] + self.window_frames

    @property
    def output_frames(self) -> int:
        """Frames of the result: all input frames, except ``first`` which stops after one window."""
        return min(self.num_frames, self.window_frames) if self.mode == "first" else self.num_frames

    @property
    def shared(self) -> bool:
        """Whether windows share latents (``blend`` with more than one window)."""
        return self.mode == "blend" and self.num_windows > 1

    @property
    def global_latents(self) -> int:
        return (
            self.num_windows * self.window_latents if not self.shared else self.latent_start(-1) + self.window_latents
        )

    def latent_start(self, window: int) -> int:
        """Global latent index of local latent 0 of ``window`` (shared timeline in blend mode)."""
        window = window % self.num_windows
        return window * (self.stride_latents if self.shared else self.window_latents)

    def frame_indices(self, window: int) -> list[int]:
        """Source frame of each frame of ``window``; past the end the last frame repeats (official padding)."""
        start = self.starts[window]
        return [min(start + i, self.num_frames - 1) for i in range(self.window_frames)]


def window_length(num_frames: int, window_frames: int = WINDOW_FRAMES, compression: int = TEMPORAL_COMPRESSION) -> int:
    """Frames per window: ``window_frames``, or the shortest 1 + c k that holds a shorter clip."""
    if (window_frames - 1) % compression:
        raise ValueError(f"window frames must be 1 + {compression}k, got {window_frames}")
    if num_frames <= 1 or window_frames == 1:
        return 1
    return min(window_frames, 1 + compression * math.ceil((num_frames - 1) / compression))


def plan_windows(
    num_frames: int,
    window_frames: int = WINDOW_FRAMES,
    mode: str = "blend",
    overlap_latents: int = WINDOW_OVERLAP_LATENTS,
    compression: int = TEMPORAL_COMPRESSION,
) -> TemporalPlan:
    """Cover ``num_frames`` frames with windows of (at most) ``window_frames`` frames."""
    if num_frames < 1:
        raise ValueError("a clip needs at least one frame")
    if mode not in CHUNK_MODES:
        raise ValueError(f"chunk mode must be one of {CHUNK_MODES}, got {mode!r}")
    length = window_length(num_frames, window_frames, compression)
    latents = (length - 1) // compression + 1
    if mode == "first" or length >= num_frames:
        return TemporalPlan(num_frames, length, mode, (0,), 0, compression)
    if mode == "all" or length == 1:  # one-frame windows cannot overlap: every frame on its own
        starts = tuple(range(0, num_frames, length))
        return TemporalPlan(num_frames, length, "all", starts, 0, compression)
    if not 0 <= overlap_latents <= latents - 2:
        raise ValueError(
            f"overlap must be 0..{latents - 2} latent frames for {length}-frame windows, got {overlap_latents}"
        )
    overlap = overlap_latents
    stride = compression * (latents - 1 - overlap)
    count = 1 + math.ceil((num_frames - length) / stride)
    return TemporalPlan(num_frames, length, mode, tuple(w * stride for w in range(count)), overlap, compression)


def _ramp(length: int, span: int, rise: bool, fall: bool, first: int) -> torch.Tensor:
    """Weights 1 in the middle, linear over ``span`` entries at a rising start and/or a falling end.

    Rising weights are ``(i + first) / (span + 1)``, falling ``(length - i) / (span + 1)``: on an overlap of
    ``span`` entries a falling and a rising ramp sum to 1 (``first=1``); with ``first=0`` the first entry
    gets weight 0 (the unshared latent 0 of a later window, followed by ``span`` shared latents).
    """
    position = torch.arange(length, dtype=torch.float64)
    weight = torch.ones(length, dtype=torch.float64)
    if rise:
        weight = torch.minimum(weight, (position + first) / (span + 1))
    if fall:
        weight = torch.minimum(weight, (length - position) / (span + 1))
    return weight


def latent_weights(plan: TemporalPlan, window: int) -> torch.Tensor:
    """(T_lat,) consensus weights of a window's latents; 0 for the unshared latent 0 of later windows."""
    if not plan.shared:
        return torch.ones(plan.window_latents, dtype=torch.float64)
    rise, fall = window > 0, window < plan.num_windows - 1
    return _ramp(plan.window_latents, plan.overlap_latents, rise, fall, first=0)


def frame_weights(plan: TemporalPlan, window: int) -> torch.Tensor:
    """(L,) cross-fade weights of a window's decoded frames; neighbours' weights sum to 1 on the overlap."""
    if not plan.shared:
        return torch.ones(plan.window_frames, dtype=torch.float64)
    rise, fall = window > 0, window < plan.num_windows - 1
    return _ramp(plan.window_frames, plan.compression * plan.overlap_latents + 1, rise, fall, first=1)


def blend_latents(plan: TemporalPlan, per_window: list[torch.Tensor]) -> list[torch.Tensor]:
    """Consensus of shared latents: each window's (B, C, T_lat, h, w) replaced by the weighted mean on its range.

    A later window's latent 0 keeps its own value (it encodes a single frame).
    """
    if not plan.shared:
        return per_window
    ref = per_window[0]
    total = ref.new_zeros(*ref.shape[:2], plan.global_latents, *ref.shape[3:], dtype=torch.float32)
    norm = torch.zeros(plan.global_latents, dtype=torch.float32, device=ref.device)
    for w, value in enumerate(per_window):
        weight = latent_weights(plan, w).to(device=ref.device, dtype=torch.float32)
        start = plan.latent_start(w)
        total[:, :, start : start + plan.window_latents] += value.float() * weight.view(1, 1, -1, 1, 1)
        norm[start : start + plan.window_latents] += weight
    mean = total / norm.clamp_min(1e-12).view(1, 1, -1, 1, 1)
    out = []
    for w, value in enumerate(per_window):
        start = plan.latent_start(w)
        blended = mean[:, :, start : start + plan.window_latents].to(value.dtype)
        if w > 0:  # latent 0 of a later window encodes one frame: not shared
            blended = torch.cat([value[:, :, :1], blended[:, :, 1:]], dim=2)
        out.append(blended)
    return out


def blend_frames(plan: TemporalPlan, per_window: list[torch.Tensor]) -> torch.Tensor:
    """Decoded windows, each (B, C, L, H, W) -> the clip (B, C, output_frames, H, W), cross-faded, unpadded."""
    ref = per_window[0]
    frames = plan.padded_frames
    total = ref.new_zeros(*ref.shape[:2], frames, *ref.shape[3:], dtype=torch.float32)
    norm = torch.zeros(frames, dtype=torch.float32, device=ref.device)
    for w, value in enumerate(per_window):
        weight = frame_weights(plan, w).to(device=ref.device, dtype=torch.float32)
        start = plan.starts[w]
        total[:, :, start : start + plan.window_frames] += value.float() * weight.view(1, 1, -1, 1, 1)
        norm[start : start + plan.window_frames] += weight
    clip = total / norm.clamp_min(1e-12).view(1, 1, -1, 1, 1)
    return clip[:, :, : plan.output_frames].to(ref.dtype)
