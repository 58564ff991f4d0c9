"""Training state in safetensors (no pickles): weights, EMA, AdamW moments, step and RNG, for exact resumes.

``OUT/{role}.train_state.safetensors`` holds tensors ``model.*``, ``ema.*``, ``optim.{i}.{exp_avg,exp_avg_sq,step}``
and ``rng``; its metadata the step, the optimizer's param groups and the training config. The usable model
(EMA weights) is written beside it as a renderer file, ``OUT/{role}.safetensors``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from diffusion_renderer.checkpoints.safe_load import CheckpointError
from diffusion_renderer.io.tagged_safetensors import read_tagged, write_tagged

FORMAT = "diffusion_renderer.TrainState/1"


def optimizer_tensors(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    """Flatten an optimizer state dict (``optimizer.state_dict()`` layout): per-parameter tensors and JSON-able
    param groups."""
    tensors = {}
    for index, values in state["state"].items():
        for name, value in values.items():
            tensors[f"optim.{index}.{name}"] = torch.as_tensor(value).detach().cpu().contiguous()
    return tensors, state["param_groups"]


def optimizer_state(tensors: dict[str, torch.Tensor], groups: list[dict[str, Any]]) -> dict[str, Any]:
    """Inverse of :func:`optimizer_tensors`: an ``optimizer.state_dict()``-layout dict."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": groups}


def load_optimizer_tensors(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list[dict[str, Any]]
) -> None:
    optimizer.load_state_dict(optimizer_state(tensors, groups))


def save_train_state(
    path: Path,
    *,
    step: int,
    model_state: dict[str, torch.Tensor],
    ema_state: dict[str, torch.Tensor],
    optimizer_state: dict[str, Any],
    rng: torch.Tensor,
    config: dict[str, Any],
    record: dict[str, Any] | None = None,
) -> Path:
    """State dicts (full, unsharded) of the model, the EMA (``AveragedModel.state_dict()``) and the optimizer;
    ``record``: the provenance the trainer writes into its renderer files (the ``--init`` file's defaults), which a
    resumed run keeps."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model_state.items()}
    tensors.update({f"ema.{k}": v.detach().cpu().contiguous() for k, v in ema_state.items()})
    optim, groups = optimizer_tensors(optimizer_state)
    tensors.update(optim)
    tensors["rng"] = rng.cpu().contiguous()
    meta = {"step": step, "param_groups": groups, "config": config, "record": record or {}}
    return write_tagged(path, tensors, FORMAT, meta)


def read_train_state(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    return read_tagged(path, FORMAT, "training state", CheckpointError)


def prefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
