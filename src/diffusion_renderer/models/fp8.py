"""FP8 (e4m3) GEMMs for the DiT's token-wise linear layers: the moonshot path of the performance work.

Half of a 7B video step's FLOPs are the blocks' linear layers (q/k/v/out projections and the MLP); Hopper runs
e4m3 GEMMs at 1,245-1,415 TFLOP/s against 672-755 for bf16 (``../shared/ceilings_h100.json``). Each selected
``nn.Linear`` becomes a :class:`Float8Linear`: its weight is stored once in e4m3 with one scale per output
channel, each call scales every token's activations to e4m3 on the fly (one scale per token), and
``torch._scaled_mm`` multiplies with float32 accumulation and applies both scales in its epilogue.

Why by hand: torchao's float8 inference does the same through the same ``torch._scaled_mm``, but refuses any
device below compute capability 8.9 (so the CPU tests could not run it) and its compiled extensions do not load
beside every PyTorch build; the whole path is the few lines below. Left in bf16: the AdaLN modulation (one row
per clip: nothing to gain, and it scales every activation), the embeddings, the final layer, and the
cross-attention keys/values (they see the 512 context tokens only).

Rounding: e4m3 keeps 3 mantissa bits, so each product carries ~2-3 % relative error; the output's error is
measured against bf16 by ``bench`` (relative L2) and on the small model's evaluation against its seed spread.
"""

from __future__ import annotations

from typing import Final

import torch
from torch import nn

E4M3: Final[torch.dtype] = torch.float8_e4m3fn
E4M3_MAX: Final[float] = float(torch.finfo(E4M3).max)  # 448
# torch._scaled_mm needs both GEMM dimensions it tiles over (K and N) in multiples of 16.
FP8_ALIGNMENT: Final[int] = 16
# Linear layers left in higher precision (names inside a block): AdaLN modulation, cross-attention k/v, LoRA.
SKIPPED_NAMES: Final[tuple[str, ...]] = ("norm", "attn2.to_k", "attn2.to_v", "lora_")


def quantize_rowwise(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, K) -> (e4m3 (M, K), float32 scale (M, 1)) with ``x ≈ q * scale``: each row's absolute maximum maps
    to e4m3's largest finite value (448)."""
    amax = x.detach().abs().amax(dim=-1, keepdim=True).float().clamp_min(1e-12)
    # Scaled in x's own dtype: a float32 copy of the MLP's (28,160 x 16,384) input would add 1.8 GB in eager mode,
    # and rounding to bf16's 8 mantissa bits first moves e4m3's 3 by one step at most, rarely.
    q = (x * (E4M3_MAX / amax).to(x.dtype)).clamp(-E4M3_MAX, E4M3_MAX).to(E4M3)
    return q, amax / E4M3_MAX


class Float8Linear(nn.Module):
    """``y = x W^T + b`` with W stored in e4m3 (per output channel scales) and x quantized per token per call."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight, scale = quantize_rowwise(linear.weight.detach())  # (N, K), (N, 1)
        self.register_buffer("weight_fp8", weight)
        self.register_buffer("weight_scale", scale.reshape(1, -1))  # (1, N): the layout scale_b takes
        bias = None if linear.bias is None else linear.bias.detach().clone()
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (..., K) -> (..., N)
        rows = x.reshape(-1, self.in_features)
        q, scale = quantize_rowwise(rows)
        # CUDA's row-wise scaled GEMM writes bf16 only; the CPU kernel writes any float dtype.
        out_dtype = torch.bfloat16 if x.is_cuda else x.dtype
        y = torch._scaled_mm(
            q, self.weight_fp8.t(), scale_a=scale, scale_b=self.weight_scale, out_dtype=out_dtype
        )  # weight_fp8.t(): column-major (K, N), as _scaled_mm requires
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y.to(x.dtype).reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, e4m3"


def is_fp8_candidate(name: str, module: nn.Module) -> bool:
    """A block's token-wise ``nn.Linear`` whose dimensions ``_scaled_mm`` can tile."""
    if type(module) is not nn.Linear or not name.startswith("transformer_blocks."):
        return False
    if any(part in name for part in SKIPPED_NAMES):
        return False
    return module.in_features % FP8_ALIGNMENT == 0 and module.out_features % FP8_ALIGNMENT == 0


def convert_to_fp8(model: nn.Module) -> list[str]:
    """Replace the DiT's token-wise linear layers by :class:`Float8Linear` in place; returns their names.

    Irreversible (the bf16 weights are dropped: the 7B DiT's blocks shrink from ~14 to ~7 GB). Call after loading
    LoRA adapters (the adapters stay in bf16, their base layers become FP8) and before compiling."""
    names = [name for name, module in model.named_modules() if is_fp8_candidate(name, module)]
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, Float8Linear(getattr(parent, child)))
    return names
