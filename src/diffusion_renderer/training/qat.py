"""Quantisation-aware training (``train --qat int4``): the DiT computes with the weights its int4 file will hold.

Every parameter gets a ``torch.nn.utils.parametrize`` parametrisation (``checkpoints/quantization.FakeQuantize``)
that rounds it as an int4 renderer file stores it (``quantization.stored_kind``): int4 groups for the blocks'
attention and MLP matrices, int8 rows for the other matrices (the patch embedding, the timestep path), float16 for
the rest. The gradient passes straight through to the float master weights, which AdamW and the EMA keep. The
trained file is written as int4 and computes exactly what training validated. Why: int4 is how a network twice the
size fits the shipped 16 MiB budget (``models/configs.py``: the deep sizes), and rounding a network trained in float
to 15 levels per group costs part of what training bought (``benchmarks/results/eval_tiny_cpu.json``:
``*_int4_post_training``).

Parametrised parameters appear in state dicts as ``<module>.parametrizations.<name>.original``; renderer files and
training states keep the plain names (:func:`plain_state`, :func:`parametrized_state`), so a float run's state
resumes under QAT and a QAT file loads like any other.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch.nn.utils import parametrize

from diffusion_renderer.checkpoints.quantization import FakeQuantize, stored_kind
from diffusion_renderer.checkpoints.renderer_file import never_read

QAT_SCHEMES = ("int4",)
_PARAMETRIZED = re.compile(r"\.parametrizations\.(\w+)\.original$")


def enable_qat(model: torch.nn.Module, scheme: str) -> dict[str, str]:
    """Parametrise ``model``'s parameters in place as a ``scheme`` file stores them; returns {name: kind}."""
    if scheme not in QAT_SCHEMES:
        raise ValueError(f"unknown QAT scheme {scheme!r} (known: {', '.join(QAT_SCHEMES)})")
    config = dict(getattr(model, "config", {}))
    kinds = {}
    for name, value in list(model.named_parameters()):
        if not value.is_floating_point() or never_read(name, config):
            continue
        owner, _, attribute = name.rpartition(".")
        kinds[name] = stored_kind(name, value, scheme)
        parametrize.register_parametrization(model.get_submodule(owner), attribute, FakeQuantize(kinds[name]))
    return kinds


def plain_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict with parametrised names turned back into the modules' plain names."""
    return {_PARAMETRIZED.sub(r".\1", name): value for name, value in state.items()}


def parametrized_state(state: Mapping[str, torch.Tensor], module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A plain state dict renamed to ``module``'s names (parametrised or not), for ``load_state_dict``."""
    names = {_PARAMETRIZED.sub(r".\1", name): name for name in module.state_dict()}
    return {names.get(name, name): value for name, value in state.items()}
