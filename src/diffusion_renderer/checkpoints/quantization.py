"""Weight quantisers of renderer files, and the fake quantiser that trains a network for them.

* int8 rows: symmetric absmax per output row, ``w ≈ q * scale``, q in [-127, 127], one float16 scale per row.
* int4 groups: symmetric absmax per group of :data:`INT4_GROUP` consecutive input weights of a row, q in [-7, 7]
  (15 levels: symmetric, so that 0 is exact and re-storage is exact), one float16 scale per group, two values per
  byte. 0.53 bytes per weight against int8's 1.0: at the same file size a network twice as large. An int4 file
  holds the blocks' attention and MLP matrices so (:func:`stored_kind`), the rest as int8 rows.
* :func:`fake_quantize`: a file's round trip (int4 groups, int8 rows or float16, :func:`stored_kind`) with a
  straight-through gradient, for quantisation-aware training (``train --qat int4``): the network trains through
  exactly the weights its int4 file will hold.

Why by hand: torchao's and bitsandbytes' int4 schemes quantise for int4 *compute* on given kernels and devices;
here the goal is a small file that loads into plain float modules anywhere, and a training-time rounding that is
bit-for-bit the file's.
"""

from __future__ import annotations

import re
from typing import Final

import torch

INT4_GROUP: Final[int] = 64  # input weights per scale: 0.25 extra bits per weight in float16 scales
INT4_MAX: Final[int] = 7
QUANTIZE_MIN_NUMEL: Final[int] = 4096  # smaller matrices are not worth their scales


def _stored_scale(absmax: torch.Tensor, qmax: int) -> torch.Tensor:
    """absmax / qmax as float16 keeps it (as float32), so that q is computed with the scale the file holds."""
    scale = (absmax / qmax).clamp_min(1e-12)
    return scale.half().float().clamp_min(6e-8)


def quantize_rows_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(O, ...) float -> (O, ...) int8 and (O,) float16 scales, symmetric per output row."""
    rows = weight.detach().float().reshape(weight.shape[0], -1)  # (O, I)
    scale = _stored_scale(rows.abs().amax(dim=1), 127)
    q = torch.round(rows / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q.reshape(weight.shape), scale.half()


def dequantize_rows_int8(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`quantize_rows_int8`: (O, ...) float32."""
    shape = (-1,) + (1,) * (q.ndim - 1)
    return q.float() * scale.float().reshape(shape)


def int4_eligible(weight: torch.Tensor, group: int = INT4_GROUP) -> bool:
    """A matrix (O, I) with I a multiple of ``group`` and enough weights to be worth its scales."""
    return weight.ndim == 2 and weight.numel() >= QUANTIZE_MIN_NUMEL and weight.shape[1] % group == 0


def _int4_levels(weight: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(O, I) -> integer levels (O, I / group, group) in [-7, 7] as float32, and scales (O, I / group)."""
    rows = weight.float().reshape(weight.shape[0], -1, group)
    scale = _stored_scale(rows.abs().amax(dim=2), INT4_MAX)
    return torch.round(rows / scale[..., None]).clamp(-INT4_MAX, INT4_MAX), scale


def quantize_groups_int4(weight: torch.Tensor, group: int = INT4_GROUP) -> tuple[torch.Tensor, torch.Tensor]:
    """(O, I) float -> (O, I / 2) uint8, two levels per byte (low nibble first, stored as level + 8), and
    (O, I / group) float16 scales."""
    if not int4_eligible(weight, group):
        raise ValueError(f"int4 groups need a matrix with a multiple of {group} columns, got {tuple(weight.shape)}")
    levels, scale = _int4_levels(weight.detach(), group)
    nibbles = (levels.flatten(1) + 8).to(torch.uint8)  # (O, I) in [1, 15]
    return nibbles[:, 0::2] | (nibbles[:, 1::2] << 4), scale.half()


def dequantize_groups_int4(packed: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`quantize_groups_int4`: (O, I) float32; the group size is I / scale.shape[1]."""
    nibbles = torch.stack([packed & 15, packed >> 4], dim=2).flatten(1)  # (O, I)
    levels = nibbles.float() - 8
    groups = levels.reshape(levels.shape[0], scale.shape[1], -1)  # (O, I / group, group)
    return (groups * scale.float()[..., None]).flatten(1)


INT4_LAYERS = re.compile(r"transformer_blocks\.\d+\.(attn1|attn2|ff)\.")  # the blocks' attention and MLP matrices


def stored_kind(name: str, value: torch.Tensor, storage: str) -> str:
    """How a renderer file of ``storage`` (float32, float16, int8, int4) stores the float tensor ``name``:
    ``int4`` groups, ``int8`` rows, ``float16`` or ``float32``. Quantised storage keeps 1-D tensors and matrices
    under :data:`QUANTIZE_MIN_NUMEL` weights as float16. int4 storage takes only the blocks' attention and MLP
    matrices (:data:`INT4_LAYERS`, 9/10 of the weights) to int4; the rest are int8 rows. Why: the timestep path
    (the time embedding, the AdaLN-LoRA modulation, the output layer) scales every activation, and at int4 it alone
    cost the shipped inverse model 1.1 degrees of normal error, while its attention and MLP at int4 cost 0.13
    (``benchmarks/results/eval_tiny_cpu.json``: ``inverse_tiny_int4_layer_study``)."""
    if storage == "float32":
        return "float32"
    if storage in ("int8", "int4") and value.ndim >= 2 and value.numel() >= QUANTIZE_MIN_NUMEL:
        return "int4" if storage == "int4" and INT4_LAYERS.match(name) and int4_eligible(value) else "int8"
    return "float16"


def stored_value(value: torch.Tensor, kind: str) -> torch.Tensor:
    """What a file holding ``value`` as ``kind`` gives back at load, as float32 (no gradient)."""
    value = value.detach()
    if kind == "int4":
        levels, scale = _int4_levels(value, INT4_GROUP)
        return (levels * scale[..., None]).reshape(value.shape)
    if kind == "int8":
        return dequantize_rows_int8(*quantize_rows_int8(value))
    return value.half().float() if kind == "float16" else value.float()


def fake_quantize(value: torch.Tensor, kind: str) -> torch.Tensor:
    """:func:`stored_value` in ``value``'s dtype, with the gradient passed straight through (STE)."""
    return value + (stored_value(value, kind).to(value.dtype) - value).detach()
