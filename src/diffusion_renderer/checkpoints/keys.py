"""Key names of the official checkpoints and their counterparts in this package's diffusers-style modules.

DiT: official ``DiffusionRendererGeneralDIT`` state-dict keys (with the ``net.`` prefix of the checkpoint's
``ModuleDict{net, conditioner, logvar}``) <-> :class:`DiffusionRendererTransformer3DModel` keys.
Tokenizer: keys of ``encoder.jit`` / ``decoder.jit`` (``CausalContinuousVideoTokenizer.encoder_jit()`` /
``decoder_jit()``) <-> diffusers ``AutoencoderKLCosmos`` keys.

Both maps are written as rule tables applied in both directions so that the strict verification can report
problems in the official names users see in their files.
"""

from __future__ import annotations

import re
from typing import Any

import torch

# Official DiT keys that carry no model weights: training-only log-variance head, TransformerEngine FP8
# metadata, and the RoPE position buffer (always arange(max_len)).
DIT_IGNORED_PATTERNS = (
    re.compile(r"^logvar\."),
    re.compile(r"\._extra_state$"),
    re.compile(r"^net\.pos_embedder\.seq$"),
)

# (official suffix inside a DiT block, ours); sub-block 0 is FA (attn1, norm1), 1 CA (attn2, norm2), 2 MLP.
_BLOCK_RULES: tuple[tuple[str, str], ...] = (
    (r"blocks\.(?P<sub>[012])\.adaLN_modulation\.(?P<lin>[12])\.weight", "norm{sub1}.linear_{lin}.weight"),
    (r"blocks\.(?P<sub>[01])\.block\.attn\.to_q\.0\.weight", "attn{sub1}.to_q.weight"),
    (r"blocks\.(?P<sub>[01])\.block\.attn\.to_q\.1\.weight", "attn{sub1}.norm_q.weight"),
    (r"blocks\.(?P<sub>[01])\.block\.attn\.to_k\.0\.weight", "attn{sub1}.to_k.weight"),
    (r"blocks\.(?P<sub>[01])\.block\.attn\.to_k\.1\.weight", "attn{sub1}.norm_k.weight"),
    (r"blocks\.(?P<sub>[01])\.block\.attn\.to_v\.0\.weight", "attn{sub1}.to_v.weight"),
    (r"blocks\.(?P<sub>[01])\.block\.attn\.to_out\.0\.weight", "attn{sub1}.to_out.0.weight"),
    (r"blocks\.2\.block\.layer1\.weight", "ff.net.0.proj.weight"),
    (r"blocks\.2\.block\.layer2\.weight", "ff.net.2.weight"),
)

_TOP_LEVEL: dict[str, str] = {
    "x_embedder.proj.1.weight": "patch_embed.proj.weight",
    "t_embedder.1.linear_1.weight": "time_embed.t_embedder.linear_1.weight",
    "t_embedder.1.linear_2.weight": "time_embed.t_embedder.linear_2.weight",
    "affline_norm.weight": "time_embed.norm.weight",
    "final_layer.adaLN_modulation.1.weight": "norm_out.linear_1.weight",
    "final_layer.adaLN_modulation.2.weight": "norm_out.linear_2.weight",
    "final_layer.linear.weight": "proj_out.weight",
    "context_embedding.weight": "context_embedding.weight",
}
_TOP_LEVEL_INV = {v: k for k, v in _TOP_LEVEL.items()}
_BLOCK_KEY = re.compile(r"^blocks\.block(\d+)\.(.+)$")
_OUR_BLOCK_KEY = re.compile(r"^transformer_blocks\.(\d+)\.(.+)$")


def is_ignored_dit_key(key: str) -> bool:
    return any(p.search(key) for p in DIT_IGNORED_PATTERNS)


def official_to_dit_key(key: str) -> str | None:
    """Our key for an official checkpoint key (``net.``-prefixed); ``None`` if it is not a DiT weight."""
    if not key.startswith("net.") or is_ignored_dit_key(key):
        return None
    key = key[len("net.") :]
    if key in _TOP_LEVEL:
        return _TOP_LEVEL[key]
    match = _BLOCK_KEY.match(key)
    if match is None:
        return None
    index, rest = match.groups()
    for pattern, target in _BLOCK_RULES:
        sub = re.fullmatch(pattern, rest)
        if sub:
            groups = sub.groupdict()
            sub1 = str(int(groups["sub"]) + 1) if "sub" in groups else ""
            return f"transformer_blocks.{index}." + target.format(sub1=sub1, lin=groups.get("lin", ""))
    return None


def dit_key_to_official(key: str) -> str:
    """Official checkpoint key (with ``net.``) of one of our DiT keys; inverse of :func:`official_to_dit_key`."""
    if key in _TOP_LEVEL_INV:
        return "net." + _TOP_LEVEL_INV[key]
    match = _OUR_BLOCK_KEY.match(key)
    if match is None:
        raise KeyError(f"no official name for {key!r}")
    index, rest = match.groups()
    norm = re.fullmatch(r"norm([123])\.linear_(1|2)\.weight", rest)
    if norm:
        return f"net.blocks.block{index}.blocks.{int(norm.group(1)) - 1}.adaLN_modulation.{norm.group(2)}.weight"
    attn = re.fullmatch(r"attn([12])\.(to_q|norm_q|to_k|norm_k|to_v|to_out\.0)\.weight", rest)
    if attn:
        proj = {"to_q": "to_q.0", "norm_q": "to_q.1", "to_k": "to_k.0", "norm_k": "to_k.1", "to_v": "to_v.0"}
        name = proj.get(attn.group(2), attn.group(2))
        return f"net.blocks.block{index}.blocks.{int(attn.group(1)) - 1}.block.attn.{name}.weight"
    ff = {"ff.net.0.proj.weight": "layer1", "ff.net.2.weight": "layer2"}.get(rest)
    if ff:
        return f"net.blocks.block{index}.blocks.2.block.{ff}.weight"
    raise KeyError(f"no official name for {key!r}")


# Tokenizer: ordered (regex, replacement) rules from official jit keys to AutoencoderKLCosmos keys.
_TOKENIZER_RULES: tuple[tuple[str, str], ...] = (
    (r"^quant_conv\.conv3d\.", "quant_conv."),
    (r"^post_quant_conv\.conv3d\.", "post_quant_conv."),
    (r"^(encoder|decoder)\.down\.(\d+)\.", r"\1.down_blocks.\2."),
    (r"\.downsample\.", ".downsamplers.0."),
    (r"\.upsample\.", ".upsamplers.0."),
    (r"\.block\.(\d+)\.", r".resnets.\1."),
    (r"\.mid\.block_1\.", ".mid_block.resnets.0."),
    (r"\.mid\.block_2\.", ".mid_block.resnets.1."),
    (r"\.mid\.attn_1\.0\.", ".mid_block.attentions.0."),
    (r"\.mid\.attn_1\.1\.", ".mid_block.temp_attentions.0."),
    (r"\.(q|k|v)\.conv3d\.", r".to_\1."),
    (r"\.proj_out\.conv3d\.", ".to_out.0."),
    (r"\.nin_shortcut\.conv3d\.", ".conv_shortcut."),
    (r"\.(conv\d)\.conv3d\.", r".\1."),
    (r"\.0\.conv3d\.", ".conv_s."),
    (r"\.1\.conv3d\.", ".conv_t."),
)
# Haar wavelet buffers of the official patcher: constants, not weights (diffusers keeps them non-persistent).
TOKENIZER_IGNORED = re.compile(r"\.(un)?patcher3d\.(wavelets|_arange|patch_size_buffer)$")


def official_to_tokenizer_key(key: str, num_up_levels: int) -> str | None:
    """AutoencoderKLCosmos key for an official encoder.jit/decoder.jit key (``None`` for Haar constants).

    The official decoder numbers its up levels from the lowest resolution (``up.0`` is the last one run);
    diffusers numbers them in execution order, hence ``num_up_levels``.
    """
    if TOKENIZER_IGNORED.search(key):
        return None
    up = re.match(r"^decoder\.up\.(\d+)\.", key)
    if up:
        key = f"decoder.up_blocks.{num_up_levels - 1 - int(up.group(1))}." + key[up.end() :]
    for pattern, replacement in _TOKENIZER_RULES:
        key = re.sub(pattern, replacement, key)
    return key


# Inverse of keys.official_to_tokenizer_key (ours -> official), used to report problems in official names.
_INVERSE_RULES: tuple[tuple[str, str], ...] = (
    (r"^(post_)?quant_conv\.", r"\1quant_conv.conv3d."),
    (r"^encoder\.down_blocks\.(\d+)\.", r"encoder.down.\1."),
    (r"\.downsamplers\.0\.", ".downsample."),
    (r"\.upsamplers\.0\.", ".upsample."),
    (r"\.mid_block\.attentions\.0\.", ".mid.attn_1.0."),
    (r"\.mid_block\.temp_attentions\.0\.", ".mid.attn_1.1."),
    (r"\.resnets\.(\d+)\.", r".block.\1."),
    (r"\.to_(q|k|v)\.", r".\1.conv3d."),
    (r"\.to_out\.0\.", ".proj_out.conv3d."),
    (r"\.conv_shortcut\.", ".nin_shortcut.conv3d."),
    (r"\.conv_s\.", ".0.conv3d."),
    (r"\.conv_t\.", ".1.conv3d."),
    (r"\.(conv\d)\.(weight|bias)$", r".\1.conv3d.\2"),
)


def vae_key_to_official(key: str, num_up_levels: int) -> str:
    """Official encoder.jit/decoder.jit key of an ``AutoencoderKLCosmos`` state-dict key."""
    up = re.match(r"^decoder\.up_blocks\.(\d+)\.", key)
    if up:
        key = f"decoder.up.{num_up_levels - 1 - int(up.group(1))}." + key[up.end() :]
    mid = re.search(r"\.mid_block\.resnets\.(\d+)\.", key)
    if mid:
        key = key[: mid.start()] + f".mid.block_{int(mid.group(1)) + 1}." + key[mid.end() :]
    for pattern, replacement in _INVERSE_RULES:
        key = re.sub(pattern, replacement, key)
    return key


# ----------------------------------------------------------------------------------- strict reports

MAX_LISTED = 8


def shape_of(value: Any) -> tuple[int, ...] | None:
    return tuple(value.shape) if isinstance(value, torch.Tensor) else None


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:MAX_LISTED])
    return shown + (f", ... ({len(items) - MAX_LISTED} more)" if len(items) > MAX_LISTED else "")


def mismatch_report(missing: list[str], unexpected: list[str], wrong: list[str]) -> str | None:
    """One line naming every missing key, unexpected key and wrong entry; ``None`` when all match."""
    parts = [
        f"{len(items)} {label} ({_listing(items)})"
        for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong", wrong))
        if items
    ]
    return "; ".join(parts) or None
