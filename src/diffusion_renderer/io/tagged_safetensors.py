"""safetensors files that say what they are: tensors plus one JSON record whose ``format`` names the kind.

Renderer files, training states and training shards are all this (no pickles anywhere). Writing is atomic;
reading checks the format and turns every failure into one error naming the file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from diffusion_renderer.io.atomic import atomic_file


def write_tagged(path: str | Path, tensors: Mapping[str, torch.Tensor], fmt: str, record: Mapping[str, Any]) -> Path:
    """Write ``tensors`` and ``{"format": fmt, **record}`` (the JSON metadata entry) atomically."""
    path = Path(path)
    meta = json.dumps({"format": fmt, **record})
    with atomic_file(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp), metadata={"json": meta})
    return path


def read_tagged(
    path: str | Path,
    fmt: str,
    what: str,
    error: type[Exception] = ValueError,
    with_tensors: bool = True,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, record) of a file of format ``fmt``; ``error("{path}: ...")`` when it is missing or another kind."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: no such file")
    try:
        with safe_open(str(path), "pt") as f:
            record = json.loads((f.metadata() or {}).get("json", "{}"))
            tensors = {k: f.get_tensor(k) for k in f.keys()} if with_tensors else {}  # noqa: SIM118
    except Exception as exc:  # safetensors raises its own error types, plus OSError and JSON errors
        raise error(f"{path}: not a readable {what} ({str(exc).splitlines()[0] if str(exc) else exc})") from None
    if record.get("format") != fmt:
        raise error(f"{path}: unknown format {record.get('format')!r} for a {what} (expected {fmt!r})")
    return tensors, record
