"""`benchmarks/data_engine.py --processes`: the data engine's throughput with parallel processes (CPU variant at a
tiny size here; the GPU figures go to benchmarks/results), and a broken set-up said in one line, not read as slow."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, require_mitsuba

require_mitsuba()

SCRIPT = REPO / "benchmarks" / "data_engine.py"
TINY = ["--resolution", "32", "--frames", "1", "--spp", "4"]


def run(tmp_path: Path, *args: str) -> tuple[dict, str]:
    out = tmp_path / "scaling.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *TINY, *args, "--out", str(out)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return json.loads(out.read_text()), done.stderr


@pytest.mark.parametrize("hints", [True, False])
def test_processes_render_shards_and_are_counted(tmp_path: Path, hints: bool) -> None:
    flags = ["--variant", "llvm_ad_rgb", "--processes", "1", "--warmup", "12", "--seconds", "12"]
    record, _ = run(tmp_path, *flags, *([] if hints else ["--no-hints"]))
    (trial,) = record["trials"]
    assert record["benchmark"] == "data_engine_scaling" and trial["processes"] == 1 and record["hints"] is hints
    assert trial["clips"] >= 1 and trial["failed_workers"] == []
    assert abs(trial["frames_per_second"] - trial["clips"] / trial["seconds"]) < 0.01  # 1-frame clips
    assert {"rgb", "basecolor", "env_hdr"} <= set(trial["shard_keys"])  # what the trial's workers wrote
    assert ("shading" in trial["shard_keys"]) is hints


def test_a_trial_that_renders_nothing_says_why(tmp_path: Path) -> None:
    # no GPU here: the workers cannot load the cuda variant and exit
    record, err = run(tmp_path, "--variant", "cuda_ad_rgb", "--processes", "1", "--warmup", "8", "--seconds", "1")
    (trial,) = record["trials"]
    assert trial["clips"] == 0 and trial["failed_workers"] == [0]
    lines = [line for line in err.splitlines() if line.startswith("data_engine:")]
    assert len(lines) == 1 and "rendered no clip" in lines[0] and "cannot load Mitsuba variant" in lines[0]
