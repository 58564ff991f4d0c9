"""LoRA adapters on the DiT: the paper's real-footage branch (a low-rank update of the forward renderer).

DiffusionRenderer (Sec. 4.3) adapts the synthetic-trained renderer to real footage with a LoRA, so the base
weights stay those of the synthetic model and the adaptation can be scaled or switched off at inference.
The adapters are peft ``lora.Linear`` layers injected through diffusers' ``PeftAdapterMixin`` (which the DiT
inherits from ``CosmosTransformer3DModel``).

An adapter file is one safetensors file (no pickles):

* tensors ``{module}.lora_A.weight`` (rank, in) and ``{module}.lora_B.weight`` (out, rank), module names of
  the DiT (``transformer_blocks.0.attn1.to_q``, ...), as ``peft.utils.get_peft_model_state_dict`` names them;
* metadata ``diffusion_renderer_lora``: JSON header (format, role, rank, alpha, targets, caller's metadata);
* metadata ``lora_adapter_metadata``: the ``LoraConfig`` keyword arguments under diffusers' own key, so that
  ``transformer.load_lora_adapter(folder, weight_name=..., prefix=None)`` can read the file too.

diffusers/peft calls used or bypassed, and why:

* ``add_adapter`` (injects, freezes the base, activates), ``load_lora_adapter`` (with a validated state dict),
  ``fuse_lora`` / ``unfuse_lora``, ``unload_lora``: used as they are.
* ``save_lora_adapter``: bypassed; it takes a folder, cannot add our header (role, training record) and writes
  in place. :func:`save_lora` writes the same layout atomically with ``get_peft_model_state_dict``.
* ``set_adapters(names, weights)``: bypassed in :func:`set_lora_scale`; it also re-selects the active set and
  resets every adapter it names, whereas changing one adapter's scale must leave the others as they are.
  The per-layer ``set_scale`` it calls is used directly.
* ``load_lora_adapter`` alone is not enough: keys that match no module only log a warning. The file is checked
  against the model first, so a wrong file fails in one line.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final

import torch
from torch import nn

from diffusion_renderer.io.atomic import atomic_file

FORMAT: Final[str] = "diffusion_renderer.LoRA/1"
HEADER_KEY: Final[str] = "diffusion_renderer_lora"
DIFFUSERS_METADATA_KEY: Final[str] = "lora_adapter_metadata"  # diffusers.loaders.lora_base.LORA_ADAPTER_METADATA_KEY
DEFAULT_ADAPTER: Final[str] = "real"

# Module names inside CosmosTransformerBlock (diffusers/models/transformers/transformer_cosmos.py):
#   attn1 (self-attention) and attn2 (cross-attention): diffusers ``Attention`` with to_q, to_k, to_v and
#   to_out = [Linear, Dropout]; ff: ``FeedForward`` with net = [GELU (whose .proj is the Linear), Dropout, Linear].
# The AdaLN-LoRA modulations (norm*.linear_*), patch embedding and output projection stay frozen, as the
# paper adapts the attention and MLP weights. peft full-matches a string ``target_modules`` as a regex.
# The forward renderer runs without cross-attention context (its blocks skip attn2), so there the attn2
# adapters exist but stay inert (no gradient, no effect); the inverse renderer uses all of them.
LORA_TARGETS: Final[str] = r"transformer_blocks\.\d+\.(attn[12]\.(to_q|to_k|to_v|to_out\.0)|ff\.net\.(0\.proj|2))"

_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<which>[AB])\.weight$")


class LoraFileError(ValueError):
    """A LoRA file that cannot be used with this model; the message names the file and the problem."""


def model_role(transformer: nn.Module) -> str:
    """``inverse`` or ``forward``: only the inverse DiT has the context (G-buffer pass) embedding."""
    return "inverse" if getattr(transformer, "context_embedding", None) is not None else "forward"


def lora_layers(transformer: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """(name, peft LoRA layer) pairs of the model."""
    from peft.tuners.lora import LoraLayer

    for name, module in transformer.named_modules():
        if isinstance(module, LoraLayer):
            yield name, module


def adapter_names(transformer: nn.Module) -> list[str]:
    """Names of the adapters injected into the model (empty if none)."""
    return list(getattr(transformer, "peft_config", None) or {})


def _require_adapter(transformer: nn.Module, name: str) -> None:
    if name not in adapter_names(transformer):
        raise ValueError(f"no LoRA adapter {name!r} in this model (has: {adapter_names(transformer) or 'none'})")


def _freeze_record(transformer: nn.Module) -> list[nn.Parameter]:
    """The parameters that are trainable now (before peft freezes the base weights)."""
    return [p for p in transformer.parameters() if p.requires_grad]


def _remember_frozen(transformer: nn.Module, trainable_before: list[nn.Parameter]) -> None:
    """Keep the base parameters peft just froze, so :func:`unload_lora` can give them their flag back."""
    frozen = [p for p in trainable_before if not p.requires_grad]
    known = getattr(transformer, "_lora_frozen_params", [])
    transformer._lora_frozen_params = known + [p for p in frozen if all(p is not q for q in known)]


def add_lora(
    transformer: nn.Module,
    rank: int = 16,
    alpha: float | None = None,
    targets: str | Sequence[str] = LORA_TARGETS,
    adapter_name: str = DEFAULT_ADAPTER,
    dropout: float = 0.0,
) -> str:
    """Inject a trainable LoRA adapter; freeze everything else. Returns the adapter's name.

    B starts at zero (``init_lora_weights=True``), so a fresh adapter leaves the outputs unchanged and training
    starts from the base model. ``alpha`` defaults to ``rank`` (update scale alpha / rank = 1).
    """
    from peft import LoraConfig

    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    alpha = float(rank if alpha is None else alpha)
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        target_modules=targets if isinstance(targets, str) else list(targets),
        lora_dropout=dropout,
        init_lora_weights=True,
        bias="none",
    )
    active = transformer.active_adapters() if adapter_names(transformer) else []
    before = _freeze_record(transformer)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Already found a `peft_config`")  # a second adapter: intended
            transformer.add_adapter(config, adapter_name=adapter_name)  # injects, freezes the base, activates
    except ValueError as exc:  # e.g. peft's "Target modules ... not found in the base model"
        raise ValueError(f"cannot add LoRA {adapter_name!r}: {str(exc).splitlines()[0]}") from None
    _remember_frozen(transformer, before)
    if active:
        # add_adapter leaves only the new adapter active; adapters active before stay active but frozen, so
        # the new one learns on top of them.
        transformer.set_adapter([*active, adapter_name])  # peft marks every active adapter trainable
        for _, layer in lora_layers(transformer):
            for name in active:
                for weights in (layer.lora_A, layer.lora_B):
                    if name in weights:
                        weights[name].requires_grad_(False)
    return adapter_name


def lora_state_dict(
    transformer: nn.Module, adapter_name: str = DEFAULT_ADAPTER, full_state: dict[str, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """``{module}.lora_{A,B}.weight`` tensors of one adapter (detached, on the CPU, contiguous).

    ``full_state``: the model's state dict to read them from instead of its parameters (a sharded model's gathered
    state: its own parameters hold only this rank's shards)."""
    from peft.utils import get_peft_model_state_dict

    _require_adapter(transformer, adapter_name)
    state = get_peft_model_state_dict(transformer, state_dict=full_state, adapter_name=adapter_name)
    return {key: value.detach().cpu().contiguous() for key, value in state.items()}


def _jsonable(value: Any) -> Any:
    if isinstance(value, (set, tuple)):
        return sorted(value) if isinstance(value, set) else list(value)
    return value


def save_lora(
    transformer: nn.Module,
    path: str | Path,
    adapter_name: str = DEFAULT_ADAPTER,
    metadata: dict[str, Any] | None = None,
    full_state: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write one adapter to a safetensors file (atomically); the header records rank, alpha, targets and role.

    ``metadata`` (JSON-serialisable) is stored under ``metadata`` in the header; a ``role`` key in it overrides
    the role read off the model (``inverse``: it has a context embedding; else ``forward``). ``full_state``: as
    in :func:`lora_state_dict`.
    """
    from safetensors.torch import save_file

    path = Path(path)
    state = lora_state_dict(transformer, adapter_name, full_state)
    config = transformer.peft_config[adapter_name]
    extra = dict(metadata or {})
    role = extra.pop("role", None) or model_role(transformer)
    modules = sorted({_KEY.match(key)["module"] for key in state})  # type: ignore[index]
    header = {
        "format": FORMAT,
        "role": role,
        "adapter_name": adapter_name,
        "rank": int(config.r),
        "alpha": float(config.lora_alpha),
        "targets": _jsonable(config.target_modules),
        "dropout": float(config.lora_dropout),
        "num_modules": len(modules),
        "metadata": extra,
    }
    diffusers_config = {"r": int(config.r), "lora_alpha": float(config.lora_alpha), "target_modules": modules}
    file_metadata = {
        "format": "pt",
        HEADER_KEY: json.dumps(header, sort_keys=True),
        DIFFUSERS_METADATA_KEY: json.dumps(diffusers_config, sort_keys=True),
    }
    with atomic_file(path) as tmp:
        save_file(state, str(tmp), metadata=file_metadata)
    return path


def _read(path: Path, tensors: bool) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(header, state dict) of a LoRA file; every failure is a one-line :class:`LoraFileError`."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise LoraFileError(f"{path}: no such LoRA file")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            raw = (handle.metadata() or {}).get(HEADER_KEY)
            keys = handle.keys() if tensors else []  # a safe_open handle is not iterable
            state = {key: handle.get_tensor(key) for key in keys}
    except (SafetensorError, OSError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LoraFileError(f"{path}: not a safetensors LoRA file ({reason})") from None
    if raw is None:
        raise LoraFileError(f"{path}: not a diffusion-renderer LoRA file (no '{HEADER_KEY}' metadata)")
    try:
        header = json.loads(raw)
    except json.JSONDecodeError:
        raise LoraFileError(f"{path}: unreadable LoRA header (bad JSON in '{HEADER_KEY}')") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        found = header.get("format") if isinstance(header, dict) else None
        raise LoraFileError(f"{path}: unsupported LoRA format {found!r} (expected {FORMAT})")
    for key, kind in (("rank", int), ("alpha", (int, float)), ("role", str)):
        if not isinstance(header.get(key), kind):
            raise LoraFileError(f"{path}: LoRA header lacks a valid {key!r}")
    return header, state


def read_lora_header(path: str | Path) -> dict[str, Any]:
    """The JSON header of a LoRA file (role, rank, alpha, targets, metadata), without reading the tensors."""
    return _read(Path(path), tensors=False)[0]


def _base_linear(transformer: nn.Module, name: str) -> nn.Linear | None:
    """The plain ``nn.Linear`` at ``name`` (under an existing LoRA wrapper too), or None."""
    try:
        module = transformer.get_submodule(name)
    except AttributeError:
        return None
    if hasattr(module, "get_base_layer"):
        module = module.get_base_layer()
    return module if isinstance(module, nn.Linear) else None


def check_lora_state(transformer: nn.Module, state: dict[str, torch.Tensor], rank: int) -> str | None:
    """None if ``state`` is a rank-``rank`` LoRA of this model's linear layers, else the first problem."""
    if not state:
        return "it holds no LoRA weights"
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        match = _KEY.match(key)
        if match is None:
            return f"{key!r} is not a LoRA weight name"
        pairs.setdefault(match["module"], {})[match["which"]] = value
    for module_name, pair in sorted(pairs.items()):
        linear = _base_linear(transformer, module_name)
        if linear is None:
            return f"{module_name!r} is not a linear layer of this model"
        if set(pair) != {"A", "B"}:
            return f"{module_name!r} lacks lora_{'B' if 'A' in pair else 'A'}"
        expected = {"A": (rank, linear.in_features), "B": (linear.out_features, rank)}
        for which, shape in expected.items():
            if tuple(pair[which].shape) != shape or not pair[which].is_floating_point():
                got = tuple(pair[which].shape)
                return f"{module_name}.lora_{which} has shape {got}, this model needs {shape}"
    return None


def load_lora(
    transformer: nn.Module,
    path: str | Path,
    adapter_name: str | None = None,
    scale: float = 1.0,
    role: str | None = None,
) -> str:
    """Load a LoRA file written by :func:`save_lora` as an active adapter at ``scale``; returns its name.

    The file is checked first (exists, is safetensors, has our header, was trained for ``role`` - default: the
    model's role -, and its keys and shapes match this model), each failure a one-line ``ValueError`` naming
    the file. ``adapter_name`` defaults to the name stored in the file.
    """
    path = Path(path)
    header, state = _read(path, tensors=True)
    want = role or model_role(transformer)
    if header["role"] != want:
        raise LoraFileError(f"{path}: a LoRA for the {header['role']} model, not the {want} model")
    problem = check_lora_state(transformer, state, header["rank"])
    if problem is not None:
        raise LoraFileError(f"{path}: LoRA weights do not match this model ({problem})")
    name = adapter_name or str(header.get("adapter_name") or DEFAULT_ADAPTER)
    if name in adapter_names(transformer):
        raise LoraFileError(f"{path}: adapter {name!r} is already loaded (pass another adapter name)")
    modules = sorted({_KEY.match(key)["module"] for key in state})  # type: ignore[index]
    config = {"r": header["rank"], "lora_alpha": float(header["alpha"]), "target_modules": modules}
    active = transformer.active_adapters() if adapter_names(transformer) else []
    before = _freeze_record(transformer)
    with warnings.catch_warnings():
        # peft warns on every adapter after the first ("Already found a `peft_config` attribute"): intended here.
        warnings.filterwarnings("ignore", message="Already found a `peft_config`")
        # Keys already validated; diffusers builds the LoraConfig from `metadata`, injects and copies the
        # weights (to the base layers' device and dtype).
        transformer.load_lora_adapter(state, prefix=None, adapter_name=name, metadata=config)
    _remember_frozen(transformer, before)
    # Injection leaves only the new adapter active: keep the ones that were active too.
    transformer.set_adapter([*active, name])
    set_lora_scale(transformer, scale, name)
    return name


def set_lora_scale(transformer: nn.Module, scale: float, adapter_name: str | None = None) -> None:
    """Scale one adapter's update (all adapters if ``adapter_name`` is None): W x + scale * (alpha / r) B A x.

    Scale 0 gives the base model's output exactly (the update is multiplied by 0 and added). Not allowed on a
    merged model, whose weights already hold the update: :func:`unmerge_lora` first.
    """
    if not math.isfinite(scale):
        raise ValueError(f"LoRA scale must be finite, got {scale}")
    names = adapter_names(transformer) if adapter_name is None else [adapter_name]
    if adapter_name is not None:
        _require_adapter(transformer, adapter_name)
    layers = list(lora_layers(transformer))
    if any(layer.merged for _, layer in layers):
        raise ValueError("the LoRA is merged into the weights: unmerge it before changing its scale")
    for _, layer in layers:
        for name in names:
            layer.set_scale(name, float(scale))  # scaling = scale * alpha / r


def merge_lora(transformer: nn.Module) -> None:
    """Fuse the active adapters (at their current scales) into the base weights: no LoRA cost per step.

    Reversible with :func:`unmerge_lora` up to float rounding (W + dW - dW), so the base weights are then
    only approximately the originals; bf16 weights also round the fused update.
    """
    if not adapter_names(transformer):
        raise ValueError("no LoRA adapter to merge")
    transformer.fuse_lora(lora_scale=1.0)  # 1.0: keep the scales set by set_lora_scale


def unmerge_lora(transformer: nn.Module) -> None:
    """Subtract merged adapters from the base weights again (see :func:`merge_lora`)."""
    if any(layer.merged for _, layer in lora_layers(transformer)):
        transformer.unfuse_lora()


def unload_lora(transformer: nn.Module) -> None:
    """Remove every adapter, putting the original linear layers back; the base parameters get their
    ``requires_grad`` flags back. Exact unless the adapters were merged (then up to rounding)."""
    if not adapter_names(transformer) and not any(True for _ in lora_layers(transformer)):
        return
    unmerge_lora(transformer)
    transformer.unload_lora()  # diffusers: swaps every peft layer for its base layer, drops peft_config
    for param in getattr(transformer, "_lora_frozen_params", []):
        param.requires_grad_(True)
    transformer._lora_frozen_params = []
    # diffusers leaves the flag at None, which its own add_adapter reads as "not loaded": fine, but restore the
    # class default so later checks (`_hf_peft_config_loaded is False`) behave as on a fresh model.
    transformer._hf_peft_config_loaded = False
