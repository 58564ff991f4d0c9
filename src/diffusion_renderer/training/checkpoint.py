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


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    """Flatten an optimizer's state dict: per-parameter tensors and JSON-able param groups."""
    state = optimizer.state_dict()
    tensors = {}
    for index, values in state["state"].items():
        for name, value in values.items():
            tensors[f"optim.{index}.{name}"] = torch.as_tensor(value).detach().cpu().contiguous()
    return tensors, state["param_groups"]


def load_optimizer_tensors(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list[dict[str, Any]]
) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def save_train_state(
    path: Path,
    *,
    step: int,
    model: torch.nn.Module,
    ema: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    rng: torch.Tensor,
    config: dict[str, Any],
) -> Path:
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors.update({f"ema.{k}": v.detach().cpu().contiguous() for k, v in ema.state_dict().items()})
    optim, groups = optimizer_tensors(optimizer)
    tensors.update(optim)
    tensors["rng"] = rng.cpu().contiguous()
    return write_tagged(path, tensors, FORMAT, {"step": step, "param_groups": groups, "config": config})


def read_train_state(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    return read_tagged(path, FORMAT, "training state", CheckpointError)


def prefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
