"""Ship a trained renderer file as the package's ``tiny`` model of its role, with its provenance.

    python tools/ship_model.py CANDIDATE.safetensors --run 32 --minutes 10.6 --note "what, why it was chosen" \
        [--storage int8|int4] [--shipped-dir src/diffusion_renderer/weights/tiny]

The shipped file's record keeps the model's whole history: ``runs`` (one entry per training run that led to it),
``total_steps`` and the training minutes (sums over the runs; ``training_minutes_h100`` or ``training_minutes_h200``,
whichever the shipped record keeps), ``train_config`` (the last run's), and what a user
of the file needs (``default_steps``). This appends the candidate's run (its steps, clips and training settings from
the candidate's own record, the minutes and note given here), updates the sums and writes the candidate's weights in
the shipped file's place, atomically. Storage: the candidate's if it is int4 (a ``--qat int4`` run computes exactly
with it), else int8 (the shipped storage). The model card and the evaluation records are still updated by hand.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from diffusion_renderer.checkpoints.renderer_file import read_renderer_file, save_renderer_file
from diffusion_renderer.checkpoints.safe_load import CheckpointError

SHIPPED_DIR = Path(__file__).resolve().parents[1] / "src" / "diffusion_renderer" / "weights" / "tiny"
RUN_SETTINGS = ("model_config", "batch_size", "lr", "p_mean", "p_std", "pure_noise_fraction", "exposure_stops",
                "pass_weights", "hint_fixed_camera", "qat", "compile", "compile_blocks",
                "off_plane_weight")  # fmt: skip
# the shipped files' running sum of GPU minutes: the forward file has kept the H200 name since its first runs there
# (H100 runs added to it since), the inverse file the H100 name; a record is summed under the key it already has
MINUTES_KEYS = ("training_minutes_h200", "training_minutes_h100")


def run_entry(candidate: dict[str, Any], run: int, minutes: float, note: str) -> dict[str, Any]:
    """One ``runs`` entry from a candidate file's record (written by ``train``)."""
    config = candidate.get("train_config", {})
    entry = {"run": run, "steps": int(candidate.get("steps", 0)), "minutes": minutes, "note": note}
    entry.update({key: config[key] for key in RUN_SETTINGS if key in config})
    for key in ("clips", "init"):
        if key in candidate:
            entry[key] = candidate[key]
    return entry


def shipped_record(shipped: dict[str, Any], candidate: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    """The shipped record with ``entry`` appended, the sums updated and the candidate's training settings."""
    record = {**shipped, "runs": [*shipped.get("runs", []), entry]}
    record["total_steps"] = int(shipped.get("total_steps", 0)) + entry["steps"]
    key = next((k for k in MINUTES_KEYS if k in shipped), MINUTES_KEYS[0])
    record[key] = round(float(shipped.get(key, 0.0)) + entry["minutes"], 1)
    if "train_config" in candidate:
        record["train_config"] = candidate["train_config"]
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("candidate", type=Path, help="a renderer file written by `train`")
    parser.add_argument("--run", type=int, required=True, help="the run's number (train_small_h100.json)")
    parser.add_argument("--minutes", type=float, required=True, help="its training minutes on the GPU")
    parser.add_argument("--note", required=True, help="what it is and why it was chosen")
    parser.add_argument("--storage", choices=("int8", "int4"), default=None, help="default: int4 if the candidate is")
    parser.add_argument("--shipped-dir", type=Path, default=SHIPPED_DIR)
    args = parser.parse_args(argv)
    try:
        state, meta = read_renderer_file(args.candidate)
        target = args.shipped_dir / f"{meta['role']}.safetensors"
        _, shipped = read_renderer_file(target)
    except (CheckpointError, KeyError) as error:
        print(f"ship_model: error: {error}", file=sys.stderr)
        return 1
    if any(run.get("run") == args.run for run in shipped["record"].get("runs", [])):
        print(f"ship_model: error: {target}: run {args.run} is already in its record", file=sys.stderr)
        return 1
    entry = run_entry(meta["record"], args.run, args.minutes, args.note)
    storage = args.storage or ("int4" if meta["storage"] == "int4" else "int8")
    save_renderer_file(
        target,
        state,
        role=meta["role"],
        dit_config=meta["dit_config"],
        tokenizer_config=meta["tokenizer"],
        storage=storage,
        record=shipped_record(shipped["record"], meta["record"], entry),
    )
    size = target.stat().st_size
    print(f"{target}: run {args.run} shipped ({entry['steps']} steps, {storage}, {size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
