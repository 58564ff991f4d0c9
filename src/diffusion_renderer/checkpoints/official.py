"""Official Cosmos DiffusionRenderer checkpoints: strict verification, loading and conversion.

Official layout (``download_diffusion_renderer_checkpoints.py``)::

    CHECKPOINT_DIR/
      Diffusion_Renderer_Inverse_Cosmos_7B/model.pt
      Diffusion_Renderer_Forward_Cosmos_7B/model.pt
      Cosmos-Tokenize1-CV8x8x8-720p/{encoder.jit, decoder.jit, mean_std.pt, image_mean_std.pt}

A single Hugging Face repo download (a folder with ``model.pt``, or with the tokenizer files) is accepted too.

The official loader is non-strict and silently drops missing, unexpected or mis-shaped keys. Here every
key and shape is checked and all problems are reported together, in the official key names.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import init_empty_weights

from diffusion_renderer.checkpoints.keys import dit_key_to_official, is_ignored_dit_key, mismatch_report, shape_of
from diffusion_renderer.checkpoints.safe_load import (
    CheckpointError,
    read_torchscript_tensors,
    torch_load_weights,
    unwrap_state_dict,
)
from diffusion_renderer.io.atomic import atomic_directory
from diffusion_renderer.models.configs import OFFICIAL_DIT_DIRS, OFFICIAL_NETS, OFFICIAL_TOKENIZER_DIR
from diffusion_renderer.models.tokenizer import CV8X8X8_720P_CONFIG, CosmosTokenizer
from diffusion_renderer.models.transformer_diffusion_renderer import (
    DiffusionRendererTransformer3DModel,
    official_net_to_config,
)

TOKENIZER_FILES = ("encoder.jit", "decoder.jit", "mean_std.pt", "image_mean_std.pt")


@dataclass(frozen=True)
class OfficialLayout:
    """Where the official files of each component are (``None`` when absent)."""

    inverse: Path | None
    forward: Path | None
    tokenizer: Path | None

    def dit(self, role: str) -> Path | None:
        return self.inverse if role == "inverse" else self.forward


def find_official_layout(path: str | Path) -> OfficialLayout:
    """Locate official files under ``path`` (the checkpoint root or one downloaded repo folder)."""
    root = Path(path)
    if not root.is_dir():
        raise CheckpointError(f"{root}: not a directory")

    def dit_file(role: str) -> Path | None:
        candidate = root / OFFICIAL_DIT_DIRS[role] / "model.pt"
        if candidate.is_file():
            return candidate
        if (root / "model.pt").is_file() and role_from_name(root.name) == role:
            return root / "model.pt"
        return None

    def tokenizer_dir() -> Path | None:
        for candidate in (root / OFFICIAL_TOKENIZER_DIR, root):
            if any((candidate / name).exists() for name in TOKENIZER_FILES):
                return candidate
        return None

    layout = OfficialLayout(dit_file("inverse"), dit_file("forward"), tokenizer_dir())
    if layout.inverse is None and layout.forward is None and layout.tokenizer is None:
        if (root / "model.pt").is_file():
            # A lone model.pt in a folder whose name does not tell the role: decide by its weights later.
            return OfficialLayout(root / "model.pt", None, None)
        raise CheckpointError(
            f"{root}: no official checkpoint found (expected {OFFICIAL_DIT_DIRS['inverse']}/model.pt, "
            f"{OFFICIAL_DIT_DIRS['forward']}/model.pt or {OFFICIAL_TOKENIZER_DIR}/)"
        )
    return layout


def role_from_name(name: str) -> str | None:
    lowered = name.lower()
    for role in ("inverse", "forward"):
        if role in lowered:
            return role
    return None


def is_official_checkpoint_dir(path: str | Path) -> bool:
    try:
        find_official_layout(path)
    except CheckpointError:
        return False
    return True


# ----------------------------------------------------------------------------------------------- DiT


def load_official_dit_state_dict(path: str | Path) -> dict[str, Any]:
    """Official ``model.pt`` as a flat dict of official keys (``net.*``, ``logvar.*``, ``*_extra_state``)."""
    return unwrap_state_dict(torch_load_weights(path), path)


def infer_official_net(state_dict: Mapping[str, Any], source: str | Path = "checkpoint") -> dict[str, Any]:
    """Official net constructor dict inferred from a DiT state dict's shapes (7B defaults for the rest)."""
    required = {
        "embed": "net.x_embedder.proj.1.weight",
        "qnorm": "net.blocks.block0.blocks.0.block.attn.to_q.1.weight",
        "ca_k": "net.blocks.block0.blocks.1.block.attn.to_k.0.weight",
        "lora": "net.blocks.block0.blocks.0.adaLN_modulation.1.weight",
        "mlp": "net.blocks.block0.blocks.2.block.layer1.weight",
    }
    shapes = {name: shape_of(state_dict.get(key)) for name, key in required.items()}
    missing = [required[name] for name, shape in shapes.items() if shape is None]
    if missing:
        raise CheckpointError(f"{source}: not a DiffusionRenderer DiT checkpoint (missing {', '.join(missing)})")
    base = OFFICIAL_NETS["inverse-7b"]
    model_channels, embed_in = shapes["embed"]
    patch = base["patch_temporal"] * base["patch_spatial"] ** 2
    blocks = {int(m.group(1)) for k in state_dict if (m := re.match(r"net\.blocks\.block(\d+)\.", k))}
    return {
        **base,
        "model_channels": model_channels,
        "num_blocks": len(blocks),
        "num_heads": model_channels // shapes["qnorm"][0],
        "mlp_ratio": shapes["mlp"][0] / model_channels,
        "crossattn_emb_channels": shapes["ca_k"][1],
        "adaln_lora_dim": shapes["lora"][0],
        # x_embedder input = (latent + condition + padding mask) * patch volume
        "additional_concat_ch": embed_in // patch - base["in_channels"] - int(base["concat_padding_mask"]),
        "use_context_embedding": "net.context_embedding.weight" in state_dict,
    }


def _is_arange(value: Any) -> bool:
    """The RoPE position buffer the official model always saves: arange(max_len)."""
    if not isinstance(value, torch.Tensor) or value.ndim != 1:
        return False
    return torch.equal(value.float().cpu(), torch.arange(value.numel(), dtype=torch.float32))


def check_dit_state_dict(
    state_dict: Mapping[str, Any], model: torch.nn.Module, source: str | Path = "checkpoint"
) -> dict[str, torch.Tensor]:
    """Strictly match official keys/shapes against ``model``; returns the state dict in our key names.

    Raises one :class:`CheckpointError` listing every missing key, unexpected key and wrong shape.
    """
    expected = {dit_key_to_official(k): (k, tuple(v.shape)) for k, v in model.state_dict().items()}
    missing = [k for k in expected if k not in state_dict]
    unexpected, wrong, mapped = [], [], {}
    for key, value in state_dict.items():
        if is_ignored_dit_key(key):
            if key == "net.pos_embedder.seq" and not _is_arange(value):
                wrong.append(f"{key}: values are not arange(N)")
            continue
        if key not in expected:
            unexpected.append(key)
            continue
        ours, shape = expected[key]
        if shape_of(value) != shape:
            got = list(shape_of(value)) if shape_of(value) is not None else type(value).__name__
            wrong.append(f"{key}: file {got} vs model {list(shape)}")
            continue
        mapped[ours] = value
    report = mismatch_report(missing, unexpected, wrong)
    if report:
        raise CheckpointError(f"{source}: checkpoint does not match the model: {report}")
    return mapped


def dit_from_official_state_dict(
    state_dict: Mapping[str, Any],
    net: Mapping[str, Any] | None = None,
    source: str | Path = "checkpoint",
    dtype: torch.dtype | None = None,
    device: torch.device | str = "cpu",
) -> DiffusionRendererTransformer3DModel:
    """Build the DiT for an official state dict (strictly checked) without allocating random weights."""
    net = dict(net) if net is not None else infer_official_net(state_dict, source)
    with init_empty_weights():
        model = DiffusionRendererTransformer3DModel(**official_net_to_config(net))
    mapped = check_dit_state_dict(state_dict, model, source)
    mapped = {k: v.to(device=device, dtype=dtype or v.dtype) for k, v in mapped.items()}
    model.load_state_dict(mapped, strict=True, assign=True)
    model.reset_fixed_embeddings(device)
    return model.eval()


def load_official_dit(
    path: str | Path, role: str | None = None, dtype: torch.dtype | None = None, device: str = "cpu"
) -> DiffusionRendererTransformer3DModel:
    """Official ``model.pt`` -> checked DiT. A known role fixes the condition layout (and, at the 7B width,
    the whole official 7B configuration); the rest is inferred from the weights' shapes."""
    state_dict = load_official_dit_state_dict(path)
    role = role or role_from_name(Path(path).parent.name)
    net = infer_official_net(state_dict, path)
    if role is not None:
        # The role fixes the condition layout; the official 7B width means the official 7B configuration.
        # Everything else is inferred from shapes (other sizes of the same layout) and then checked strictly.
        named = OFFICIAL_NETS[f"{role}-7b"]
        if net["model_channels"] == named["model_channels"]:
            net = dict(named)
        else:
            net.update({k: named[k] for k in ("additional_concat_ch", "use_context_embedding")})
    return dit_from_official_state_dict(state_dict, net, path, dtype, device)


# ----------------------------------------------------------------------------------------- tokenizer


def load_official_tokenizer(directory: str | Path, dtype: torch.dtype | None = None) -> CosmosTokenizer:
    """``Cosmos-Tokenize1-CV8x8x8-720p`` folder -> :class:`CosmosTokenizer` (tensors only, strict keys)."""
    directory = Path(directory)
    missing = [name for name in TOKENIZER_FILES if not (directory / name).is_file()]
    if missing:
        raise CheckpointError(f"{directory}: tokenizer files missing: {', '.join(missing)}")
    encoder = read_torchscript_tensors(directory / "encoder.jit")
    decoder = read_torchscript_tensors(directory / "decoder.jit")
    video_stats = _mean_std(directory / "mean_std.pt")
    image_stats = _mean_std(directory / "image_mean_std.pt")
    # The released tokenizer is the 720p configuration; other widths of the same layout (the test fixtures)
    # are recognised by the first convolution. Every other key and shape is still checked strictly.
    config = dict(CV8X8X8_720P_CONFIG)
    width = shape_of(encoder.get("encoder.conv_in.0.conv3d.weight"))
    if width is not None:
        config["channels"] = width[0]
    try:
        tokenizer = CosmosTokenizer.from_official_state_dicts(encoder, decoder, video_stats, image_stats, config)
    except ValueError as exc:
        raise CheckpointError(f"{directory}: {exc}") from None
    return tokenizer if dtype is None else tokenizer.to(dtype=dtype)


def _mean_std(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    obj = torch_load_weights(path, mmap=False)
    if not (isinstance(obj, (tuple, list)) and len(obj) == 2 and all(isinstance(t, torch.Tensor) for t in obj)):
        raise CheckpointError(f"{path}: expected a (mean, std) pair of tensors")
    return obj[0].float(), obj[1].float()


# ---------------------------------------------------------------------------------------- conversion

CONVERTED_MARKER = "diffusion_renderer.json"


def convert_official(
    checkpoint_dir: str | Path,
    out_dir: str | Path,
    dtype: torch.dtype | None = None,
    max_shard_size: str = "5GB",
) -> Path:
    """Convert an official checkpoint folder to diffusers-style folders (written atomically).

    ``OUT/{inverse,forward}/`` hold ``config.json`` + safetensors of the DiT (``from_pretrained``-loadable),
    ``OUT/tokenizer/`` the tokenizer, ``OUT/diffusion_renderer.json`` which components exist and their source.
    """
    layout = find_official_layout(checkpoint_dir)
    out_dir = Path(out_dir)
    with atomic_directory(out_dir) as tmp:
        components: dict[str, str] = {}
        for role in ("inverse", "forward"):
            path = layout.dit(role)
            if path is None:
                continue
            # A lone model.pt in an unnamed folder is classified by its weights (context embedding = inverse).
            known = role if role_from_name(path.parent.name) else None
            model = load_official_dit(path, role=known, dtype=dtype)
            actual = "inverse" if model.context_embedding is not None else "forward"
            model.save_pretrained(tmp / actual, safe_serialization=True, max_shard_size=max_shard_size)
            components[actual] = str(path)
            del model
        if layout.tokenizer is not None:
            load_official_tokenizer(layout.tokenizer).save_pretrained(tmp / "tokenizer")
            components["tokenizer"] = str(layout.tokenizer)
        manifest = {"format": 1, "source": str(Path(checkpoint_dir).resolve()), "components": components}
        (tmp / CONVERTED_MARKER).write_text(json.dumps(manifest, indent=2) + "\n")
    return out_dir
