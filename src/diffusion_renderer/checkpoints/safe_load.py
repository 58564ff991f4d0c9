"""Reading official checkpoint files without executing pickled code.

* ``model.pt`` (DiT) and ``mean_std.pt``: ``torch.load(weights_only=True)``, with ``io.BytesIO`` allowed because
  TransformerEngine stores its FP8 metadata (``*._extra_state``) as one; it only wraps bytes.
* ``encoder.jit`` / ``decoder.jit``: TorchScript archives, which ``torch.load(weights_only=True)`` refuses and
  ``torch.jit.load`` would run. We only need their tensors, so :func:`read_torchscript_tensors` parses the
  archive's ``data.pkl`` with a restricted unpickler: TorchScript module classes become inert attribute bags,
  tensors are rebuilt from the archive's storage records, and any other global is refused.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch


class CheckpointError(ValueError):
    """A checkpoint file or folder that cannot be used; the message names the file and the problem."""


def torch_load_weights(path: str | Path, mmap: bool = True) -> Any:
    """``torch.load`` restricted to tensors and plain containers (no arbitrary pickled code)."""
    path = Path(path)
    try:
        # bytes: an empty BytesIO pickles its buffer as bytes(); both only hold data.
        with torch.serialization.safe_globals([io.BytesIO, bytes]):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{path}: refused to unpickle (not a plain weights file): {_reason(exc)}") from None
    except (RuntimeError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{path}: cannot read checkpoint: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    """The informative line of a (often multi-line) torch.load error."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        if "WeightsUnpickler error:" in line:
            return line.split("WeightsUnpickler error:", 1)[1].split(". Please use")[0].strip()
    return lines[0] if lines else type(exc).__name__


def unwrap_state_dict(obj: Any, path: str | Path) -> dict[str, Any]:
    """The state dict inside a checkpoint object (the official loader unwraps a top-level ``"model"``)."""
    for key in ("model", "state_dict", "module"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(k, str) for k in obj):
        raise CheckpointError(f"{path}: expected a state dict (str -> tensor), got {type(obj).__name__}")
    return obj


_STORAGE_DTYPES = {
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}


class _ScriptObject:
    """Inert stand-in for a pickled TorchScript module: keeps its attributes, runs nothing."""

    # Unpickling creates it with __new__ (NEWOBJ) and fills it with __setstate__ (BUILD); no __init__ runs.
    def __setstate__(self, state: Any) -> None:
        self.__dict__["_attrs"] = dict(state) if isinstance(state, dict) else {}


class _StorageType:
    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype


class _Storage:
    def __init__(self, dtype: torch.dtype, data: bytes) -> None:
        self.dtype, self.data = dtype, data


def _rebuild_tensor(storage: _Storage, offset: int, size: tuple, stride: tuple, *args: Any) -> torch.Tensor:
    flat = (
        torch.frombuffer(bytearray(storage.data), dtype=storage.dtype)
        if storage.data
        else torch.empty(0, dtype=storage.dtype)
    )
    return flat.as_strided(tuple(size), tuple(stride), offset).clone()


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str, path: Path) -> None:
        super().__init__(io.BytesIO(data))
        self.archive, self.prefix, self.path = archive, prefix, path

    def find_class(self, module: str, name: str) -> Any:
        if module.startswith("__torch__"):
            return _ScriptObject
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return lambda data, requires_grad, backward_hooks: data
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if module == "collections" and name == "OrderedDict":
            return dict
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a weights file")

    def persistent_load(self, pid: Any) -> _Storage:
        # ('storage', storage_type, key, location, numel)
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        data = self.archive.read(f"{self.prefix}data/{pid[2]}")
        return _Storage(pid[1].dtype, data)


def _flatten(obj: Any, prefix: str, out: dict[str, torch.Tensor]) -> None:
    if isinstance(obj, _ScriptObject):
        for name, value in obj.__dict__.get("_attrs", {}).items():
            _flatten(value, f"{prefix}{name}.", out)
    elif isinstance(obj, torch.Tensor):
        out[prefix[:-1]] = obj


def read_torchscript_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors reachable as module attributes of a TorchScript archive, keyed like ``state_dict()``."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            pkl = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
            if not pkl:
                raise CheckpointError(f"{path}: not a TorchScript archive (no data.pkl)")
            prefix = pkl[0][: -len("data.pkl")]
            root = _RestrictedUnpickler(archive.read(pkl[0]), archive, prefix, path).load()
    except zipfile.BadZipFile:
        raise CheckpointError(f"{path}: not a TorchScript archive (not a zip file)") from None
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{path}: refused: {exc}") from None
    tensors: dict[str, torch.Tensor] = {}
    _flatten(root, "", tensors)
    return tensors
