"""Relighting: inverse rendering then forward rendering of the estimated G-buffers under new lighting.

Light strength: an HDR map's absolute scale is arbitrary (a capture's units, a preset's normalisation), and from one
image the albedo and the light's strength trade off, so the relit frame's brightness is whatever the map's scale
and the estimated basecolor make it (``benchmarks/basecolor_level.py``). ``light_strength`` scales every map's
radiance by a factor, or with ``"auto"`` by the factor that gives the relit clip the input's mean linear
luminance: the map keeps its direction and colour, the frame the input's exposure. Auto searches for it with the
model itself (:func:`match_level`: the map as given, then secant steps, at most three renders), because a frame
need not follow its light one to one: the official models read the map through a non-linear encoding, ``tiny``
brightens dim scenes by at most one stop before it renders them, and clipped highlights cannot grow.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from diffusion_renderer.conventions import GBUFFER_KEYS, srgb_to_linear
from diffusion_renderer.lighting.white_balance import LUMA
from diffusion_renderer.pipelines.image_processor import FramesInput
from diffusion_renderer.pipelines.pipeline_forward_rendering import ForwardRenderingPipeline, Lighting
from diffusion_renderer.pipelines.pipeline_inverse_rendering import InverseRenderingPipeline

# options both pipelines take, passed to each
SHARED_OPTIONS = (
    "num_inference_steps",
    "guidance_scale",
    "processing_resolution",
    "resize_mode",
    "num_frames",
    "chunk_mode",
    "overlap_latents",
    "fps",
    "progress",
)


AUTO = "auto"
STRENGTH_BOUNDS = (2.0**-10, 2.0**10)  # what "auto" may choose: a black or blown-out render gives no level
MATCH_RENDERS = 3  # renders "auto" may take per clip: as given, then up to two secant steps
MATCH_TOLERANCE = 0.05  # stops: a level this close to the input's is matched

LightStrength = float | str  # a factor on the maps' radiance, or "auto"


@dataclass
class RelightOutput:
    """``gbuffers``: pass -> (T, h, w, C) as :class:`InverseRenderingOutput`; ``images``: one (T, h, w, 3) per
    lighting, in [0, 1], at the input's size; ``light_strengths``: the factor each lighting's map was scaled by."""

    gbuffers: dict[str, np.ndarray]
    images: list[np.ndarray]
    light_strengths: list[float]


def check_light_strength(value: LightStrength) -> LightStrength:
    """``value`` as a factor > 0 or ``"auto"``; ValueError in one line otherwise."""
    if value == AUTO:
        return AUTO
    try:
        factor = float(value)
    except (TypeError, ValueError):
        factor = float("nan")
    if not np.isfinite(factor) or factor <= 0:
        raise ValueError(f"light strength must be a number > 0 or {AUTO!r}, got {value!r}")
    return factor


def mean_linear_luminance(frames: np.ndarray) -> float:
    """Mean linear luminance of (..., C) display frames in [0, 1] (the sRGB curve undone; C = 1: grey)."""
    linear = srgb_to_linear(np.clip(frames, 0.0, 1.0).astype(np.float64))
    return float((linear @ LUMA if linear.shape[-1] == 3 else linear).mean())


def log2_level(frames: np.ndarray) -> float:
    """Stops: log2 of :func:`mean_linear_luminance` (a black frame counts as 2^-20)."""
    return math.log2(max(mean_linear_luminance(frames), 2.0**-20))


def secant_step(log_factor: float, log_level: float, previous: tuple[float, float] | None, target: float) -> float:
    """The next log2 factor towards the ``target`` log2 level, from the last render's (log2 factor, log2 level) and
    the one before it (None: assume the level follows the factor one to one). The slope between the two is kept
    within 1/4-4: a frame that clips, or a model that normalises its light, changes less than its light."""
    slope = 1.0
    if previous is not None and previous[0] != log_factor:
        slope = float(np.clip((log_level - previous[1]) / (log_factor - previous[0]), 0.25, 4.0))
    return float(np.clip(log_factor + (target - log_level) / slope, *np.log2(STRENGTH_BOUNDS)))


def match_level(
    render: Callable[[list[float]], list[np.ndarray]],
    count: int,
    target: np.ndarray,
    renders: int = MATCH_RENDERS,
    tolerance: float = MATCH_TOLERANCE,
) -> tuple[list[float], list[np.ndarray]]:
    """Per lighting, the factor on its map that gives ``render``'s frames the mean linear luminance of the
    ``target`` frames (module doc), and those frames. ``render(factors)`` renders all ``count`` lightings; it runs
    at most ``renders`` times (as given, then secant steps in log2 until every level is within ``tolerance`` stops).
    """
    goal = log2_level(target)
    factors = [0.0] * count  # log2
    images = render([1.0] * count)
    levels = [log2_level(im) for im in images]
    previous: list[tuple[float, float] | None] = [None] * count
    for _ in range(renders - 1):
        if all(abs(goal - level) <= tolerance for level in levels):
            break
        steps = [secant_step(f, lv, pr, goal) for f, lv, pr in zip(factors, levels, previous, strict=True)]
        previous = list(zip(factors, levels, strict=True))
        factors = steps
        images = render([2.0**f for f in factors])
        levels = [log2_level(im) for im in images]
    return [2.0**f for f in factors], images


def scale_lighting(envmap: Lighting, factor: float) -> Lighting:
    """A map with its radiance times ``factor``; random lighting (None) stays None."""
    return envmap if envmap is None or factor == 1.0 else envmap * factor


def relight(
    inverse: InverseRenderingPipeline,
    forward: ForwardRenderingPipeline,
    image: FramesInput,
    envmap: Lighting | Sequence[Lighting] = None,
    *,
    seed: int = 0,
    rotate_light: bool = False,
    light_angle: float = 0.0,
    light_strength: LightStrength = 1.0,
    fitted_shadows: bool = False,
    **options,
) -> RelightOutput:
    """Estimate the G-buffers of ``image`` (an image, frames or a video), then render them under ``envmap``.

    ``envmap`` as :class:`ForwardRenderingPipeline` (HDR arrays, ``None`` for random lighting, or a list).
    ``light_strength``: a factor on every map's radiance, or ``"auto"``: per map, the input's mean level (module
    doc). ``fitted_shadows``: as :class:`ForwardRenderingPipeline`, off by default because the G-buffers are
    predicted (their depth casts false shadows where a camera fit passes). ``options`` go to both pipelines
    (``num_inference_steps``, ``processing_resolution``, ``num_frames``, ...).
    """
    unknown = set(options) - set(SHARED_OPTIONS)
    if unknown:
        raise TypeError(f"relight() got unexpected options {sorted(unknown)} (allowed: {', '.join(SHARED_OPTIONS)})")
    strength = check_light_strength(light_strength)
    envmaps = list(envmap) if isinstance(envmap, list | tuple) else [envmap]
    if strength != 1.0 and any(env is None for env in envmaps):
        raise ValueError("light_strength scales env maps: random lighting (None) has none")
    estimated = inverse(image, passes=GBUFFER_KEYS, generator=torch.Generator().manual_seed(seed), **options)

    def render(factors: Sequence[float]) -> list[np.ndarray]:
        return forward(
            estimated.gbuffers,
            [scale_lighting(env, f) for env, f in zip(envmaps, factors, strict=True)],
            generator=torch.Generator().manual_seed(seed),
            rotate_light=rotate_light,
            light_angle=light_angle,
            fitted_shadows=fitted_shadows,
            **options,
        ).images

    if strength != AUTO:
        factors = [strength] * len(envmaps)
        return RelightOutput(estimated.gbuffers, render(factors), factors)
    source = inverse.image_processor.to_frames(image).permute(0, 2, 3, 1).numpy()  # (T, h, w, C) in [0, 1]
    factors, images = match_level(render, len(envmaps), source)
    return RelightOutput(estimated.gbuffers, images, factors)
