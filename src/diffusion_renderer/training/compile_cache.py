"""``torch.compile``'s caches carried from one machine to the next as one file (``train --compile-cache FILE``).

Why: a ``train --compile`` call on a fresh GPU host spends its first steps compiling, 85-100 s of a 6-minute call
(runs 45-47, ``schedule_clock_start_s`` in ``benchmarks/results/train_small_h100.json``), where a host that kept its
inductor cache from an earlier call took 49 s (run 36's second call). PyTorch serialises what it compiled
(``torch.compiler.save_cache_artifacts``: the inductor and AOTAutograd cache entries) and hot-loads such a file into
a new process (``load_cache_artifacts``), so the next fresh host starts as a warm one. What stays is tracing.

The file holds compiled code, like the cache directories it stands for: load only files your own runs wrote. It is
keyed inside by the graphs, the PyTorch build and the device, so a file from another model or machine loads and is
simply not hit. Stored xz-compressed (``lzma``).
"""

from __future__ import annotations

import logging
import lzma
import sys
from pathlib import Path

import torch

from diffusion_renderer.io.atomic import atomic_file


def artifact_count(info: object) -> int:
    """How many cache entries a ``torch.compiler`` ``CacheInfo`` lists (its ``artifacts``: kind -> keys)."""
    return sum(len(keys) for keys in getattr(info, "artifacts", {}).values())


def load_compile_cache(path: Path) -> int:
    """Hot-load the cache entries of ``path`` before anything compiles: how many. 0 when there is no such file yet
    (a first run writes it) or it cannot be used (said on stderr): compiling from scratch still works."""
    if not path.is_file():
        return 0
    torch_log = logging.getLogger("torch.compiler._cache")  # it logs a bad file's traceback, then returns None
    level = torch_log.level
    torch_log.setLevel(logging.CRITICAL)
    try:
        info = torch.compiler.load_cache_artifacts(lzma.decompress(path.read_bytes()))
        problem = None if info is not None else "not a cache file of this PyTorch"
    except Exception as exc:  # a cache is an optimisation: any failure to use it only costs the compile time
        info, problem = None, f"{type(exc).__name__}: {exc}"
    finally:
        torch_log.setLevel(level)
    if problem is not None:
        print(f"{path}: compile cache not used ({problem})", file=sys.stderr)
        return 0
    return artifact_count(info)


def save_compile_cache(path: Path) -> int:
    """Write what this process compiled or hot-loaded to ``path`` (atomically): how many cache entries; 0, and no
    file, when nothing was compiled."""
    saved = torch.compiler.save_cache_artifacts()
    if saved is None:
        return 0
    data, info = saved
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        tmp.write_bytes(lzma.compress(data))  # ~37x smaller (10 MB -> 0.27 MB): what a device call carries is capped
    return artifact_count(info)
