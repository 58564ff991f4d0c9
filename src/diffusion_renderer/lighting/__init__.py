"""Lighting: HDR environment maps -> the forward renderer's ``env_ldr`` / ``env_log`` / ``env_nrm`` conditions,
and the bundled CC0 environment-map presets."""

from __future__ import annotations

from diffusion_renderer.lighting.envmap import (
    EnvironmentConditions,
    env_ldr,
    env_log,
    envmap_directions,
    latlong_directions,
    process_environment_map,
    project_envmap,
    reinhard_extended,
    rgb2srgb,
    rotate_y,
    rotation_angles,
)
from diffusion_renderer.lighting.presets import OFFICIAL_ENVLIGHT_INDEX, list_presets, load_envmap, resolve_envmap

__all__ = [
    "OFFICIAL_ENVLIGHT_INDEX",
    "EnvironmentConditions",
    "env_ldr",
    "env_log",
    "envmap_directions",
    "latlong_directions",
    "list_presets",
    "load_envmap",
    "process_environment_map",
    "project_envmap",
    "reinhard_extended",
    "resolve_envmap",
    "rgb2srgb",
    "rotate_y",
    "rotation_angles",
]
