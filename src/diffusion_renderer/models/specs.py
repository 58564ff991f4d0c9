"""Model specs: the one place that turns what a user names into networks.

Every command takes ``--model SPEC``:

* ``tiny`` (the default) - the small renderers trained by this project, shipped inside the package
  (``weights/tiny/{inverse,forward}.safetensors``; model card ``weights/tiny/MODEL_CARD.md``);
* ``random:tiny`` - tiny DiT of the official layout and a tiny Cosmos tokenizer, randomly initialised
  (seeded): for tests and smoke runs; ``random:small`` / ``random:medium`` - the shipped inverse / forward
  model's size (``random:small`` for both roles is the size shipped before 2026-12-03), random;
* ``random:inverse-7b`` / ``random:forward-7b`` - the official sizes with random weights: for benchmarks;
* a renderer file (``*.safetensors`` written by ``diffusion-renderer train``) or a folder holding
  ``inverse.safetensors`` / ``forward.safetensors``;
* a folder written by ``diffusion-renderer convert-official`` (``diffusion_renderer.json`` inside);
* an official checkpoint folder (or one downloaded repo): converted on first use into the cache
  (``$DIFFUSION_RENDERER_CACHE``, default ``~/.cache/diffusion_renderer``), then loaded from there.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import init_empty_weights

from diffusion_renderer.checkpoints.official import (
    CONVERTED_MARKER,
    convert_official,
    is_official_checkpoint_dir,
)
from diffusion_renderer.checkpoints.renderer_file import load_renderer_state, read_renderer_file
from diffusion_renderer.checkpoints.safe_load import CheckpointError
from diffusion_renderer.models.configs import (
    OFFICIAL_NETS,
    ROLES,
    TOKENIZER_OF_SIZE,
    dit_config,
    role_of_config,
    size_of_config,
)
from diffusion_renderer.models.space_to_depth import SpaceToDepthTokenizer
from diffusion_renderer.models.tokenizer import CV8X8X8_720P_CONFIG, CosmosTokenizer, LatentTokenizer
from diffusion_renderer.models.transformer_diffusion_renderer import DiffusionRendererTransformer3DModel

TINY_TOKENIZER_CONFIG = {**CV8X8X8_720P_CONFIG, "channels": 8}
DEFAULT_SPEC = "tiny"
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "weights"
SPEC_HELP = (
    "tiny (shipped), random:tiny, random:small, random:medium, random:inverse-7b, random:forward-7b, a renderer "
    "file or folder from `train`, a folder from `convert-official`, or an official checkpoint folder"
)


class ModelSpecError(ValueError):
    """A model spec that names nothing usable; the message says what was expected."""


@dataclass
class RendererModel:
    """A DiT for one role and the tokenizer its latents live in."""

    transformer: DiffusionRendererTransformer3DModel
    tokenizer: LatentTokenizer
    role: str
    spec: str
    record: dict = field(default_factory=dict)  # provenance of a trained model (data, steps, metrics)


def cache_root() -> Path:
    return Path(os.environ.get("DIFFUSION_RENDERER_CACHE", Path.home() / ".cache" / "diffusion_renderer"))


def random_init_(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Seeded random weights with unit-scale activations: N(0, 1/fan_in) matrices, unit norm weights.

    Speed does not depend on values, so this serves benchmarks; the scale keeps bf16 runs finite.
    """
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim == 1:
                param.fill_(1.0)
            elif "context_embedding" in name:
                param.normal_(0.0, 0.3, generator=generator)
            else:
                fan_in = math.prod(param.shape[1:])
                param.normal_(0.0, fan_in**-0.5, generator=generator)
    return model


def random_transformer(
    config_name: str, seed: int = 0, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> DiffusionRendererTransformer3DModel:
    """A named DiT size with seeded random weights, built directly on ``device`` (no 7B CPU copy)."""
    with init_empty_weights():
        model = DiffusionRendererTransformer3DModel(**dit_config(config_name))
    # nn.Module.to: diffusers' ModelMixin.to logs a spurious "kept in float32: []" warning on dtype casts.
    model = torch.nn.Module.to(model.to_empty(device=device), dtype=dtype)
    model.reset_fixed_embeddings(device)
    return random_init_(model, seed).eval()


def _random_spec(name: str, role: str, device, dtype, seed: int) -> RendererModel:
    config_name = f"{role}-{name}" if name in ("tiny", "small", "medium") else name
    if config_name not in OFFICIAL_NETS:
        raise ModelSpecError(f"unknown model spec 'random:{name}' (expected {SPEC_HELP})")
    if role_of_config(config_name) != role:
        raise ModelSpecError(f"'random:{name}' is a {role_of_config(config_name)} model, not {role}")
    transformer = random_transformer(config_name, seed, device, dtype)
    kind = TOKENIZER_OF_SIZE[size_of_config(config_name)]
    if kind == "space-to-depth":
        tokenizer: LatentTokenizer = SpaceToDepthTokenizer().to(device=device, dtype=dtype)
    else:
        tokenizer_config = TINY_TOKENIZER_CONFIG if kind == "cosmos-tiny" else CV8X8X8_720P_CONFIG
        tokenizer = CosmosTokenizer.random(tokenizer_config, seed=seed, dtype=dtype, stats_dtype=dtype)
        tokenizer = tokenizer.to(device=device)
    return RendererModel(transformer, tokenizer, role, f"random:{name}")


def renderer_file_of(spec_path: Path, role: str) -> Path:
    """The file of ``role`` in a renderer folder, or the file itself."""
    return spec_path / f"{role}.safetensors" if spec_path.is_dir() else spec_path


def load_renderer_file(path: Path, role: str, device, dtype, spec: str) -> RendererModel:
    """A DiT + tokenizer from a renderer file (see checkpoints/renderer_file.py)."""
    try:
        state, meta = read_renderer_file(path)
    except CheckpointError as exc:
        raise ModelSpecError(str(exc)) from None
    if meta.get("role") != role:
        raise ModelSpecError(f"{path}: holds the {meta.get('role')} model, not the {role} one")
    try:
        tokenizer = SpaceToDepthTokenizer.from_config(meta["tokenizer"])
        transformer = DiffusionRendererTransformer3DModel(**meta["dit_config"])
        load_renderer_state(transformer, state)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ModelSpecError(f"{path}: cannot build the model it describes ({str(exc).splitlines()[0]})") from None
    transformer = torch.nn.Module.to(transformer, device=device, dtype=dtype).eval()
    return RendererModel(transformer, tokenizer.to(device=device, dtype=dtype), role, spec, meta.get("record", {}))


def _shipped(role: str, device, dtype) -> RendererModel:
    path = SHIPPED_DIR / DEFAULT_SPEC / f"{role}.safetensors"
    if not path.is_file():
        raise ModelSpecError(f"{path}: the shipped model is missing from this installation (reinstall the package)")
    return load_renderer_file(path, role, device, dtype, DEFAULT_SPEC)


def converted_cache_dir(checkpoint_dir: str | Path) -> Path:
    """Cache folder of a converted official checkpoint, keyed by its path, file sizes and mtimes."""
    root = Path(checkpoint_dir).resolve()
    digest = hashlib.sha1(str(root).encode())
    for path in sorted(p for p in root.rglob("*") if p.is_file() and ".diffusion_renderer" not in p.parts):
        stat = path.stat()
        digest.update(f"{path.relative_to(root)}:{stat.st_size}:{int(stat.st_mtime)}".encode())
    return cache_root() / "converted" / digest.hexdigest()[:16]


def _load_converted(folder: Path, role: str, device, dtype, spec: str) -> RendererModel:
    manifest = json.loads((folder / CONVERTED_MARKER).read_text())
    components = manifest.get("components", {})
    for needed in (role, "tokenizer"):
        if needed not in components:
            raise ModelSpecError(f"{folder}: has no {needed} component (has: {', '.join(components) or 'none'})")
    transformer = DiffusionRendererTransformer3DModel.from_pretrained(folder / role, torch_dtype=dtype)
    tokenizer = CosmosTokenizer.from_pretrained(folder / "tokenizer", dtype=dtype, stats_dtype=dtype)
    return RendererModel(transformer.to(device).eval(), tokenizer.to(device=device), role, spec)


def load_model(
    spec: str,
    role: str,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> RendererModel:
    """Resolve ``spec`` to the DiT of ``role`` (``inverse`` or ``forward``) and its tokenizer.

    ``dtype`` applies to both networks and to the tokenizer's latent statistics: bfloat16 is the official
    inference precision (``precision="bfloat16"`` for the DiT, ``is_bf16=True`` for the tokenizer).
    """
    if role not in ROLES:
        raise ModelSpecError(f"role must be one of {ROLES}, got {role!r}")
    if spec.startswith("random:"):
        return _random_spec(spec.split(":", 1)[1], role, device, dtype, seed)
    if spec == DEFAULT_SPEC:
        return _shipped(role, device, dtype)
    folder = Path(spec).expanduser()
    if folder.suffix == ".safetensors" or (folder / f"{role}.safetensors").is_file():
        return load_renderer_file(renderer_file_of(folder, role), role, device, dtype, spec)
    if not folder.is_dir():
        raise ModelSpecError(f"unknown model spec {spec!r} (expected {SPEC_HELP})")
    if (folder / CONVERTED_MARKER).is_file():
        return _load_converted(folder, role, device, dtype, spec)
    if is_official_checkpoint_dir(folder):
        cached = converted_cache_dir(folder)
        if not (cached / CONVERTED_MARKER).is_file():
            try:
                convert_official(folder, cached)
            except CheckpointError as exc:
                raise ModelSpecError(str(exc)) from None
        return _load_converted(cached, role, device, dtype, spec)
    raise ModelSpecError(f"{folder}: neither a converted model folder nor an official checkpoint folder")
