"""Speed settings of the DiT that leave its numbers alone: the attention kernel and block-wise compilation.

Attention: the DiT's processors call ``F.scaled_dot_product_attention`` (through diffusers' dispatcher, native
backend). Which kernel runs is PyTorch's choice unless told: on Hopper its default (flash) reaches 360 TFLOP/s at
the video's 28,160 tokens where cuDNN's reaches 623 (``../shared/ceilings_h100.json``), and attention is half the
FLOPs of a video step. :func:`attention_backend` sets a priority order with ``torch.nn.attention.sdpa_kernel``
(``set_priority``): the first kernel that supports the inputs runs, so float32 or CPU inputs fall back to a
kernel that can take them instead of failing.

Compilation is diffusers' ``compile_repeated_blocks`` (the DiT names its block class in ``_repeated_blocks``):
each block is compiled with ``torch.compile`` and all 28 share one graph, fusing RoPE, the q/k RMSNorms, the
AdaLN modulation and the gates into the surrounding kernels.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Final

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

# name -> kernels in priority order; "auto": cuDNN first on Hopper and newer, PyTorch's own order elsewhere
ATTENTION_BACKENDS: Final[dict[str, tuple[SDPBackend, ...]]] = {
    "cudnn": (
        SDPBackend.CUDNN_ATTENTION,
        SDPBackend.FLASH_ATTENTION,
        SDPBackend.EFFICIENT_ATTENTION,
        SDPBackend.MATH,
    ),
    "flash": (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH),
    "efficient": (SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH),
    "math": (SDPBackend.MATH,),
}
ATTENTION_CHOICES: Final[tuple[str, ...]] = ("auto", "default", *ATTENTION_BACKENDS)
# Where the weights live while a pipeline runs on a GPU (RendererPipelineMixin.enable_offload): none: all on the
# GPU; group: the DiT's blocks streamed from CPU memory on a side stream (diffusers group offloading); model: one
# component on the GPU at a time; sequential: layer by layer (least memory, slowest).
OFFLOAD_MODES: Final[tuple[str, ...]] = ("none", "group", "model", "sequential")


def resolve_attention(name: str, device: torch.device | str) -> str:
    """``auto`` -> ``cudnn`` on CUDA devices of compute capability >= 9.0 (Hopper), else ``default``."""
    if name not in ATTENTION_CHOICES:
        raise ValueError(f"unknown attention backend {name!r} (choose from {', '.join(ATTENTION_CHOICES)})")
    if name != "auto":
        return name
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        major, _ = torch.cuda.get_device_capability(device)
        return "cudnn" if major >= 9 else "default"
    return "default"


@contextlib.contextmanager
def attention_backend(name: str, device: torch.device | str) -> Iterator[None]:
    """Run the attention inside with the kernels of ``name`` in priority order (``default``: PyTorch's choice)."""
    resolved = resolve_attention(name, device)
    if resolved == "default":
        yield
        return
    with sdpa_kernel(list(ATTENTION_BACKENDS[resolved]), set_priority=True):
        yield
