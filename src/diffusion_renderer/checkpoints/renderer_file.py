"""One-file renderers: a DiT, its config, its tokenizer's config and a record of how it was made, in one
safetensors file (no pickles). The shipped ``tiny`` model and every training checkpoint use it.

Weights are stored as float32, float16, or int8 with one float16 scale per output row (symmetric absmax,
``w ≈ q * scale``), dequantised to float32 at load. int8 halves the size of float16 for a relative error of
at most 1/254 of each row's largest weight; 1-D tensors (norms, biases) and small matrices stay float16.
Why by hand: torchao's int8 schemes quantise for int8 *compute*; here the only goal is a small file that
loads into plain float modules on any device.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import torch

from diffusion_renderer.checkpoints.safe_load import CheckpointError
from diffusion_renderer.io.tagged_safetensors import read_tagged, write_tagged

FORMAT: Final[str] = "diffusion_renderer.RendererFile/1"
STORAGE: Final[tuple[str, ...]] = ("float32", "float16", "int8")
_SCALE_SUFFIX: Final[str] = ".__scale__"
_INT8_MIN_NUMEL: Final[int] = 4096  # smaller matrices are not worth a scale row each


def quantize_rows_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(O, ...) float -> (O, ...) int8 and (O,) float16 scales, symmetric per output row."""
    rows = weight.detach().float().reshape(weight.shape[0], -1)  # (O, I)
    scale = (rows.abs().amax(dim=1) / 127).clamp_min(1e-12)
    scale = scale.half().float().clamp_min(6e-8)  # what float16 storage keeps, so q uses the stored scale
    q = torch.round(rows / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q.reshape(weight.shape), scale.half()


def dequantize_rows_int8(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`quantize_rows_int8`: (O, ...) float32."""
    shape = (-1,) + (1,) * (q.ndim - 1)
    return q.float() * scale.float().reshape(shape)


def encode_state_dict(state: dict[str, torch.Tensor], storage: str) -> dict[str, torch.Tensor]:
    """Float state dict -> the tensors of a renderer file in ``storage`` (float32, float16 or int8)."""
    if storage not in STORAGE:
        raise ValueError(f"storage must be one of {STORAGE}, got {storage!r}")
    out: dict[str, torch.Tensor] = {}
    for name, value in state.items():
        value = value.detach().cpu()
        if not value.is_floating_point():
            out[name] = value.contiguous()
        elif storage == "float32":
            out[name] = value.float().contiguous()
        elif storage == "int8" and value.ndim >= 2 and value.numel() >= _INT8_MIN_NUMEL:
            out[name], out[name + _SCALE_SUFFIX] = quantize_rows_int8(value)
        else:
            out[name] = value.half().contiguous()
    return out


def decode_state_dict(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Tensors of a renderer file -> a float32 state dict."""
    state = {}
    for name, value in tensors.items():
        if name.endswith(_SCALE_SUFFIX):
            continue
        scale = tensors.get(name + _SCALE_SUFFIX)
        if scale is not None:
            state[name] = dequantize_rows_int8(value, scale)
        else:
            state[name] = value.float() if value.is_floating_point() else value
    return state


def save_renderer_file(
    path: str | Path,
    state: dict[str, torch.Tensor],
    *,
    role: str,
    dit_config: dict[str, Any],
    tokenizer_config: dict[str, Any],
    storage: str = "float32",
    record: dict[str, Any] | None = None,
) -> Path:
    """Write a renderer file atomically. ``record``: free-form provenance (data, steps, time, metrics)."""
    meta = {
        "role": role,
        "storage": storage,
        "dit_config": dit_config,
        "tokenizer": tokenizer_config,
        "record": record or {},
    }
    return write_tagged(path, encode_state_dict(state, storage), FORMAT, meta)


def read_renderer_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(float32 state dict, metadata) of a renderer file; :class:`CheckpointError` naming the file otherwise."""
    tensors, meta = read_tagged(path, FORMAT, "renderer file", CheckpointError)
    return decode_state_dict(tensors), meta


def architecture(config: Any) -> Any:
    """A config without diffusers' bookkeeping keys (``_class_name``, ``_use_default_values``...): those say how
    it was written, not what the network is (``_use_default_values`` is even a set written in hash order)."""
    if isinstance(config, dict):
        return {key: value for key, value in config.items() if not str(key).startswith("_")}
    return config


def average_renderer_files(
    paths: list[str | Path], weights: list[float] | None = None
) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    """The weighted mean of renderers' weights (a "model soup", Wortsman et al. 2022) and each file's metadata.

    Why: fine-tunes of one model on different data sit in one basin of the loss, and their mean is often better
    than each (both of the shipped ``tiny`` models are such means). The files must be one role, DiT config and
    tokenizer; ``weights`` (default equal) are normalised to sum 1. :class:`CheckpointError` names the file that
    differs.
    """
    if len(paths) < 2:
        raise ValueError(f"averaging needs at least two renderer files, got {len(paths)}")
    weights = [1.0] * len(paths) if weights is None else list(weights)
    if len(weights) != len(paths) or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"{len(weights)} weights for {len(paths)} files (need one >= 0 each, not all 0)")
    shares = [weight / sum(weights) for weight in weights]
    first, meta = read_renderer_file(paths[0])
    total = {key: value * shares[0] for key, value in first.items()}
    metas = [meta]
    for path, share in zip(paths[1:], shares[1:], strict=True):
        state, other = read_renderer_file(path)
        metas.append(other)
        for field in ("role", "dit_config", "tokenizer"):
            if architecture(other[field]) != architecture(meta[field]):
                raise CheckpointError(f"{path}: another {field} than {paths[0]}; only one model's fine-tunes average")
        if state.keys() != total.keys() or any(state[k].shape != total[k].shape for k in total):
            raise CheckpointError(f"{path}: other tensors than {paths[0]}")
        for key, value in state.items():
            total[key] += value * share
    return total, metas
