"""diffusion-renderer: neural inverse and forward rendering with video diffusion transformers."""

__version__ = "0.1.0"
