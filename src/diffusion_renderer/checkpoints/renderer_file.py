"""One-file renderers: a DiT, its config, its tokenizer's config and a record of how it was made, in one
safetensors file (no pickles). The shipped ``tiny`` model and every training checkpoint use it.

Weights are stored as float32, float16, int8 rows or int4 groups (``checkpoints/quantization.py``), dequantised
to float32 at load. int8 halves the size of float16 for a relative error of at most 1/254 of each row's largest
weight; int4 halves it again (a network trained through it, ``train --qat int4``, computes what it trained). 1-D
tensors (norms, biases) and small matrices stay float16; under int4, only the blocks' attention and MLP matrices
are int4 groups, the rest int8 rows (``quantization.stored_kind`` says why).

A model without a context embedding (the forward renderers) runs its blocks without cross-attention
(``DiffusionRendererTransformerBlock``): its ``attn2`` and ``norm2`` are never read and never trained, so files
leave them out (:func:`never_read`) and loading sets them to zero, which is also what a zero context computes.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import torch

from diffusion_renderer.checkpoints.quantization import (
    dequantize_groups_int4,
    dequantize_rows_int8,
    quantize_groups_int4,
    quantize_rows_int8,
    stored_kind,
)
from diffusion_renderer.checkpoints.safe_load import CheckpointError
from diffusion_renderer.io.tagged_safetensors import read_tagged, write_tagged

FORMAT: Final[str] = "diffusion_renderer.RendererFile/1"
STORAGE: Final[tuple[str, ...]] = ("float32", "float16", "int8", "int4")
_SCALE_SUFFIX: Final[str] = ".__scale__"  # int8 rows
_SCALE4_SUFFIX: Final[str] = ".__scale4__"  # int4 groups
_CROSS_ATTENTION = re.compile(r"transformer_blocks\.\d+\.(attn2|norm2)\.")


def never_read(name: str, dit_config: Mapping[str, Any]) -> bool:
    """Whether parameter ``name`` of a DiT with ``dit_config`` is one the network never reads (module doc)."""
    # a config without the key builds the DiT's default, 16 context embeddings (official): its cross-attention reads
    return not dit_config.get("num_context_embeddings", 16) and bool(_CROSS_ATTENTION.match(name))


def encode_state_dict(state: dict[str, torch.Tensor], storage: str) -> dict[str, torch.Tensor]:
    """Float state dict -> the tensors of a renderer file in ``storage`` (float32, float16, int8 or int4)."""
    if storage not in STORAGE:
        raise ValueError(f"storage must be one of {STORAGE}, got {storage!r}")
    out: dict[str, torch.Tensor] = {}
    for name, value in state.items():
        value = value.detach().cpu()
        kind = stored_kind(name, value, storage) if value.is_floating_point() else "as is"
        if kind == "int4":
            out[name], out[name + _SCALE4_SUFFIX] = quantize_groups_int4(value)
        elif kind == "int8":
            out[name], out[name + _SCALE_SUFFIX] = quantize_rows_int8(value)
        elif kind == "float16":
            out[name] = value.half().contiguous()
        elif kind == "float32":
            out[name] = value.float().contiguous()
        else:
            out[name] = value.contiguous()
    return out


def decode_state_dict(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Tensors of a renderer file -> a float32 state dict."""
    state = {}
    for name, value in tensors.items():
        if name.endswith((_SCALE_SUFFIX, _SCALE4_SUFFIX)):
            continue
        if name + _SCALE4_SUFFIX in tensors:
            state[name] = dequantize_groups_int4(value, tensors[name + _SCALE4_SUFFIX])
        elif name + _SCALE_SUFFIX in tensors:
            state[name] = dequantize_rows_int8(value, tensors[name + _SCALE_SUFFIX])
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
    kept = {name: value for name, value in state.items() if not never_read(name, dit_config)}
    return write_tagged(path, encode_state_dict(kept, storage), FORMAT, meta)


def read_renderer_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(float32 state dict, metadata) of a renderer file; :class:`CheckpointError` naming the file otherwise."""
    tensors, meta = read_tagged(path, FORMAT, "renderer file", CheckpointError)
    config = meta.get("dit_config") or {}
    state = decode_state_dict(tensors)
    return {name: value for name, value in state.items() if not never_read(name, config)}, meta


def load_renderer_state(model: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Load a renderer file's state into its DiT, the parameters files leave out (:func:`never_read`) as zeros.
    Any other missing or unexpected tensor raises ``RuntimeError``, as ``load_state_dict(strict=True)`` does."""
    config = dict(getattr(model, "config", {}))
    full = dict(state)
    for name, value in model.state_dict().items():
        if name not in full and never_read(name, config):
            full[name] = torch.zeros_like(value)
    model.load_state_dict(full, strict=True)


def architecture(config: Any, defaults: Mapping[str, Any] | None = None) -> Any:
    """A config without diffusers' bookkeeping keys (``_class_name``, ``_use_default_values``...): those say how
    it was written, not what the network is (``_use_default_values`` is even a set written in hash order).
    ``defaults`` fill the keys a config lacks: a file written before a key existed loads with its default."""
    if isinstance(config, dict):
        return {key: value for key, value in {**(defaults or {}), **config}.items() if not str(key).startswith("_")}
    return config


def dit_defaults() -> dict[str, Any]:
    """The DiT's constructor defaults, as a file's JSON config writes them (tuples as lists). Imported here, not at
    module level: reading a file must not load diffusers."""
    from diffusion_renderer.models.transformer_diffusion_renderer import DiffusionRendererTransformer3DModel

    parameters = inspect.signature(DiffusionRendererTransformer3DModel.__init__).parameters.values()
    defaults = {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}
    return json.loads(json.dumps(defaults))


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
    defaults = {"dit_config": dit_defaults()}  # the keys a file written before them lacks
    for path, share in zip(paths[1:], shares[1:], strict=True):
        state, other = read_renderer_file(path)
        metas.append(other)
        for field in ("role", "dit_config", "tokenizer"):
            if architecture(other[field], defaults.get(field)) != architecture(meta[field], defaults.get(field)):
                raise CheckpointError(f"{path}: another {field} than {paths[0]}; only one model's fine-tunes average")
        if state.keys() != total.keys() or any(state[k].shape != total[k].shape for k in total):
            raise CheckpointError(f"{path}: other tensors than {paths[0]}")
        for key, value in state.items():
            total[key] += value * share
    return total, metas
