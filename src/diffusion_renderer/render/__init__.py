"""Classical rendering baselines: split-sum image-based lighting (the DiffusionRenderer paper's comparison)."""

from __future__ import annotations

from diffusion_renderer.render.splitsum import (
    PrefilteredEnvironment,
    SplitSumRenderer,
    brdf_lut,
    camera_rays,
    env_radiance,
    fresnel_schlick,
    ggx_ndf,
    importance_sample_ggx,
    irradiance_map,
    prefilter_environment,
    prepare_environment,
    shade_splitsum,
    smith_visibility_ggx,
    srgb_to_linear,
    tonemap_to_display,
    uniform_environment,
)

__all__ = [
    "PrefilteredEnvironment",
    "SplitSumRenderer",
    "brdf_lut",
    "camera_rays",
    "env_radiance",
    "fresnel_schlick",
    "ggx_ndf",
    "importance_sample_ggx",
    "irradiance_map",
    "prefilter_environment",
    "prepare_environment",
    "shade_splitsum",
    "smith_visibility_ggx",
    "srgb_to_linear",
    "tonemap_to_display",
    "uniform_environment",
]
