"""Average renderer files into one ("model soup"; ``checkpoints/renderer_file.average_renderer_files``).

    python tools/average_weights.py A.safetensors B.safetensors [--weights 1 1] --out C.safetensors [--storage int8]

The output keeps the first file's record, with ``averaged_from`` (the files' names, weights and records) added.
How each of the shipped ``tiny`` models was made from two fine-tunes: see its MODEL_CARD.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from diffusion_renderer.checkpoints.renderer_file import (
    STORAGE,
    average_renderer_files,
    save_renderer_file,
)
from diffusion_renderer.checkpoints.safe_load import CheckpointError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path, help="renderer files of one role and config")
    parser.add_argument("--weights", nargs="+", type=float, default=None, help="one per file (default equal)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--storage", choices=STORAGE, default="float16")
    args = parser.parse_args(argv)
    try:
        state, metas = average_renderer_files(args.files, args.weights)
    except (CheckpointError, ValueError) as error:
        print(f"average_weights: error: {error}", file=sys.stderr)
        return 1
    meta, weights = metas[0], args.weights or [1.0] * len(args.files)
    sources = [
        {"file": path.name, "weight": weight, "record": other["record"]}
        for path, weight, other in zip(args.files, weights, metas, strict=True)
    ]
    record = {**meta["record"], "averaged_from": sources}
    save_renderer_file(
        args.out,
        state,
        role=meta["role"],
        dit_config=meta["dit_config"],
        tokenizer_config=meta["tokenizer"],
        storage=args.storage,
        record=record,
    )
    print(f"{args.out}: mean of {len(args.files)} {meta['role']} models")
    return 0


if __name__ == "__main__":
    sys.exit(main())
