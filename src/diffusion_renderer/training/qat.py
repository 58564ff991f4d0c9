"""Quantisation-aware training (``train --qat int4``): the DiT computes with the weights its int4 file will hold.

Every parameter is rounded as an int4 renderer file stores it (``quantization.stored_kind``): int4 groups for the
blocks' attention and MLP matrices, int8 rows for the other matrices (the patch embedding, the timestep path),
float16 for the rest. The gradient passes straight through (``quantization.fake_quantize``) to the float master
weights, which AdamW and the EMA keep. The trained file is written as int4 and computes exactly what training
validated. Why: int4 is how a network twice the size fits the shipped 16 MiB budget (``models/configs.py``: the deep
sizes), and rounding a network trained in float to 15 levels per group costs part of what training bought
(``benchmarks/results/eval_tiny_cpu.json``: ``*_int4_post_training``).

Each module's master parameter is kept as ``<name>_qat_master``, and its class becomes a subclass whose property
``<name>`` returns the rounded value. Written by hand rather than with ``torch.nn.utils.parametrize``, which gives
every module a class of its own: ``torch.compile`` guards on a module's class, so compiling one block recompiled it
for every block (``benchmarks/README.md``, runs 32-34). Here the subclass is made once per (class, names) and
shared. Renderer files and training states keep the plain names (:func:`plain_state`, :func:`parametrized_state`),
so a float run's state resumes under QAT and a QAT file loads like any other.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from diffusion_renderer.checkpoints.quantization import fake_quantize, stored_kind
from diffusion_renderer.checkpoints.renderer_file import never_read

QAT_SCHEMES = ("int4",)
MASTER_SUFFIX = "_qat_master"  # the float master copy of a quantised parameter
_QAT_CLASSES: dict[tuple[type, tuple[str, ...]], type] = {}


def _rounded(name: str) -> Callable[[torch.nn.Module], torch.Tensor]:
    master = name + MASTER_SUFFIX  # once, not on every read of the weight

    def get(module: torch.nn.Module) -> torch.Tensor:
        return fake_quantize(getattr(module, master), module.qat_kinds[name])

    return get


def qat_class(base: type, names: tuple[str, ...]) -> type:
    """The subclass of ``base`` whose ``names`` read as their rounded master parameters; one per (base, names)."""
    key = (base, names)
    if key not in _QAT_CLASSES:
        _QAT_CLASSES[key] = type(f"QAT{base.__name__}", (base,), {n: property(_rounded(n)) for n in names})
    return _QAT_CLASSES[key]


def enable_qat(model: torch.nn.Module, scheme: str) -> dict[str, str]:
    """Make ``model``'s parameters compute as a ``scheme`` file stores them, in place; returns {name: kind}."""
    if scheme not in QAT_SCHEMES:
        raise ValueError(f"unknown QAT scheme {scheme!r} (known: {', '.join(QAT_SCHEMES)})")
    config = dict(getattr(model, "config", {}))
    kinds: dict[str, str] = {}
    by_owner: dict[str, dict[str, str]] = {}
    for name, value in model.named_parameters():
        if not value.is_floating_point() or never_read(name, config):
            continue
        owner, _, attribute = name.rpartition(".")
        kinds[name] = by_owner.setdefault(owner, {})[attribute] = stored_kind(name, value, scheme)
    for owner, attributes in by_owner.items():
        module = model.get_submodule(owner)
        # renamed in place, so the parameters keep their order (the optimizer's state is indexed by it)
        module._parameters = {k + MASTER_SUFFIX if k in attributes else k: v for k, v in module._parameters.items()}
        module.qat_kinds = attributes
        module.__class__ = qat_class(type(module), tuple(sorted(attributes)))
    return kinds


def plain_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict with the master parameters' names turned back into the modules' plain names."""
    return {name.removesuffix(MASTER_SUFFIX): value for name, value in state.items()}


def parametrized_state(state: Mapping[str, torch.Tensor], module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A plain state dict renamed to ``module``'s names (under QAT or not), for ``load_state_dict``."""
    names = {name.removesuffix(MASTER_SUFFIX): name for name in module.state_dict()}
    return {names.get(name, name): value for name, value in state.items()}
