"""`benchmarks/train_throughput.py` at toy size on the CPU: a synthetic bank holds what the role's trainer reads,
and every variant and batch size gets a timed, profiled run in the results file."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from diffusion_renderer.training.frames import bank_keys

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import plot_results
import train_throughput


@pytest.mark.parametrize("role", ["inverse", "forward"])
def test_synthetic_bank_holds_what_the_trainer_reads(role: str) -> None:
    bank = train_throughput.synthetic_bank(role, clips=2, frames=3, size=16, exposure_stops=0.5, device="cpu")
    assert set(bank.tensors) == bank_keys(role, 0.5)
    assert bank.num_clips == 2 and bank.clip_frames == 3 and bank.size == (16, 16)


def test_every_batch_size_is_timed_and_profiled(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "throughput.json"
    argv = ["train_throughput.py", "--device", "cpu", "--size", "16", "--clips", "1", "--frames", "2"]
    argv += ["--batch-sizes", "2", "4", "--variants", "eager", "--steps", "1", "--warmup", "1", "--profile"]
    monkeypatch.setattr(sys, "argv", [*argv, "--out", str(out)])
    train_throughput.main()
    result = json.loads(out.read_text())
    assert result["device"] == "cpu" and result["settings"]["role"] == "inverse"
    assert [(r["variant"], r["batch_size"]) for r in result["runs"]] == [("eager", 2), ("eager", 4)]
    for run in result["runs"]:
        assert run["frames_per_s"] > 0 and run["step_ms"] > 0 and run["warmup_s"] > 0
        shares = [op["share"] for op in run["top_ops"]]
        assert shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 1.0001
    # plot_results charts it: one row per variant and batch size, step seconds and peak memory
    rows = plot_results.chart_rows(result)
    assert list(rows) == ["train step inverse eager batch 2", "train step inverse eager batch 4"]
    assert rows["train step inverse eager batch 4"]["seconds"] == result["runs"][1]["step_ms"] / 1000
    assert plot_results.draw_chart([result]).size[1] > 0
