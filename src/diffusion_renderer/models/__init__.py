"""Networks (DiT, tokenizers), EDM preconditioning, named configurations and model specs."""

from diffusion_renderer.models.transformer_diffusion_renderer import (
    DiffusionRendererTransformer3DModel,
    DiffusionRendererTransformerBlock,
)

__all__ = ["DiffusionRendererTransformer3DModel", "DiffusionRendererTransformerBlock"]
