"""Move a forward renderer file to another shading-hint version that differs only in its shadow test.

    python tools/retarget_hint.py forward.safetensors --hint-version 5 --out moved.safetensors

Versions 4 and 5 of ``render/hint.py`` take the same inputs and the same background rule and cast shadows through
the same camera fit; version 5 only marches its shadow test with more light directions and steps
(``SHADOW_SAMPLING``). So a version 4 model can be given version 5 hints with its weights as they are, and this
rewrites the file's ``dit_config`` to say so, copying its stored tensors as they are (no decode and re-encode) and
recording the move in its record (``hint_version_from``). Why a tool: run 42 (the fourteenth session's forward
model) given version 5 hints scored 25.73 -> 25.87 dB on the held-out 120-image set with no training, and the
forward model shipped in the sixteenth session is its mean with run 44, a fine-tune on version 5 hints
(benchmarks/TINY_HISTORY.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from diffusion_renderer.checkpoints.renderer_file import FORMAT
from diffusion_renderer.checkpoints.safe_load import CheckpointError
from diffusion_renderer.io.tagged_safetensors import read_tagged, write_tagged

SHADOW_ONLY_VERSIONS = (4, 5)  # hint versions that differ only in how finely the shadow test samples


def retarget(path: Path, version: int, out: Path) -> Path:
    """Write ``path`` with its DiT's ``shading_hint`` set to ``version`` into ``out``; ValueError / CheckpointError
    naming the file where the move would change what the model sees beyond the shadow test's sampling."""
    tensors, meta = read_tagged(path, FORMAT, "renderer file", CheckpointError)  # as stored: int8 stays int8
    config = dict(meta["dit_config"])
    current = int(config.get("shading_hint") or 0)
    if meta["role"] != "forward" or current not in SHADOW_ONLY_VERSIONS or version not in SHADOW_ONLY_VERSIONS:
        raise ValueError(
            f"{path}: a {meta['role']} model with hint version {current}; only forward models move between versions"
            f" {' and '.join(map(str, SHADOW_ONLY_VERSIONS))} (the same hint but for its shadow test's sampling)"
        )
    moved = {**meta, "dit_config": {**config, "shading_hint": version}}
    return write_tagged(out, tensors, FORMAT, {**moved, "record": {**meta["record"], "hint_version_from": current}})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", type=Path, help="a forward renderer file (.safetensors)")
    parser.add_argument("--hint-version", type=int, required=True, choices=SHADOW_ONLY_VERSIONS)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        written = retarget(args.file, args.hint_version, args.out)
    except (CheckpointError, ValueError) as error:
        print(f"retarget_hint: error: {error}", file=sys.stderr)
        return 1
    print(f"{written}: hint version {args.hint_version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
