"""Sharded rendering under torchrun (2 CPU processes, gloo): the same files as one process, resume, failures."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from conftest import REPO

COMMON = ["--model", "random:tiny", "--resolution", "48", "--steps", "2", "--quiet", "--envmap", "street_lamp"]
COMMON += ["--envmap-method", "direct", "--no-video"]


def inputs(tmp_path: Path) -> list[Path]:
    """Four images (dealt 2 + 2 over 2 ranks), plus a corrupt one that every rank sees."""
    folder = tmp_path / "inputs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    paths = []
    for i in range(4):
        path = folder / f"img_{i}.png"
        Image.fromarray(rng.integers(0, 255, (40 + 8 * i, 56, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    (folder / "broken.png").write_text("not an image")
    return [*paths, folder / "broken.png"]


def run(args: list[str], ranks: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}  # one thread: same float sums
    if ranks == 1:
        cmd = [sys.executable, "-m", "diffusion_renderer", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks)]
        cmd += ["-m", "diffusion_renderer", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_two_ranks_write_what_one_process_writes(tmp_path: Path) -> None:
    images = [str(p) for p in inputs(tmp_path)]
    single = run(["relight", *images, "--out", str(tmp_path / "one"), *COMMON], ranks=1)
    assert single.returncode == 1, single.stderr  # the corrupt input
    sharded = run(["relight", *images, "--out", str(tmp_path / "two"), *COMMON], ranks=2)
    assert sharded.returncode == 1, sharded.stderr
    one, two = files(tmp_path / "one"), files(tmp_path / "two")
    assert len(one) > 20 and set(one) == set(two)
    assert all(one[name] == two[name] for name in one), [n for n in one if one[n] != two[n]]
    errors = [line for line in sharded.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "broken.png" in errors[0]  # reported once, by rank 0
    assert "4 done, 0 skipped, 1 failed" in sharded.stderr and "on 2 ranks" in sharded.stderr

    again = run(["relight", *images, "--out", str(tmp_path / "two"), *COMMON], ranks=2)
    assert again.returncode == 1 and "0 done, 4 skipped, 1 failed" in again.stderr
    assert files(tmp_path / "two") == two


def train_args(data: Path, out: Path, steps: int) -> list[str]:
    args = ["train", "forward", "--data", str(data), "--out", str(out), "--batch-size", "4", "--clip-frames", "2"]
    return [*args, "--log-every", "1", "--val-every", "0", "--warmup", "1", "--quiet", "--steps", str(steps)]


def model_weights(out: Path) -> dict:
    from diffusion_renderer.training.checkpoint import prefixed, read_train_state

    tensors, meta = read_train_state(out / "forward.train_state.safetensors")
    return {"step": int(meta["step"]), **prefixed(tensors, "model.")}


def assert_same_training(a: dict, b: dict) -> None:
    assert a["step"] == b["step"]
    worst = max((a[k].double() - b[k].double()).abs().max().item() for k in a if k != "step")
    assert worst < 1e-5, worst  # float sums in another order; any sampling difference would be O(lr) = 3e-4


def test_data_parallel_training_matches_one_process_and_resumes_across_world_sizes(tmp_path: Path) -> None:
    from test_training import write_synthetic_data

    data = tmp_path / "data"
    write_synthetic_data(data, seed=5)
    one = run(train_args(data, tmp_path / "one", 3), ranks=1)
    assert one.returncode == 0, one.stderr
    two = run(train_args(data, tmp_path / "two", 3), ranks=2)
    assert two.returncode == 0, two.stderr
    assert "on 2 ranks" in two.stderr
    assert_same_training(model_weights(tmp_path / "one"), model_weights(tmp_path / "two"))
    first = model_weights(tmp_path / "one")
    assert any((first[k] != 0).any() for k in first if k.startswith("proj_out"))  # it did train

    started = run(train_args(data, tmp_path / "mixed", 2), ranks=2)  # 2 steps on 2 ranks, then 1 on 1 rank
    assert started.returncode == 0, started.stderr
    resumed = run([*train_args(data, tmp_path / "mixed", 3), "--resume"], ranks=1)
    assert resumed.returncode == 0 and "resumed forward at step 2" in resumed.stderr
    assert_same_training(model_weights(tmp_path / "one"), model_weights(tmp_path / "mixed"))
    lines = (tmp_path / "two" / "forward.log.jsonl").read_text().splitlines()
    assert len(lines) == 3  # one writer: rank 0

    sharded = run([*train_args(data, tmp_path / "fsdp", 2), "--fsdp", "--val-every", "2"], ranks=2)  # FSDP2
    assert sharded.returncode == 0, sharded.stderr
    resumed = run([*train_args(data, tmp_path / "fsdp", 3), "--resume"], ranks=1)  # gathered state, 1 rank
    assert resumed.returncode == 0, resumed.stderr
    assert_same_training(model_weights(tmp_path / "one"), model_weights(tmp_path / "fsdp"))
    assert (tmp_path / "fsdp" / "forward.val" / "step_0000002.png").is_file()  # sampled by the sharded EMA


def test_context_parallel_ranks_write_what_one_process_writes(tmp_path: Path) -> None:
    """--context-parallel: both ranks render every clip, the DiT's tokens split between them; rank 0 writes the
    same files as one process (values equal up to float summation order: at most one step of the 8/16-bit files)."""
    images = [str(p) for p in inputs(tmp_path)[:2]] + [str(tmp_path / "inputs" / "broken.png")]  # 40/48 x 56 px
    single = run(["relight", *images, "--out", str(tmp_path / "one"), *COMMON], ranks=1)
    assert single.returncode == 1, single.stderr
    split = run(["relight", *images, "--out", str(tmp_path / "cp"), *COMMON, "--context-parallel"], ranks=2)
    assert split.returncode == 1, split.stderr
    one, cp = files(tmp_path / "one"), files(tmp_path / "cp")
    assert len(one) > 10 and set(one) == set(cp)
    for name in one:
        if name.endswith(".png"):
            a, b = (
                np.asarray(Image.open(root / name)).astype(np.int64) for root in (tmp_path / "one", tmp_path / "cp")
            )
            assert np.abs(a - b).max() <= 1, name
        else:
            assert one[name] == cp[name], name
    errors = [line for line in split.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "broken.png" in errors[0]  # reported once, by rank 0
    assert "2 done, 0 skipped, 1 failed" in split.stderr and "(context parallel)" in split.stderr


def test_fsdp_lora_training_matches_one_process_and_resumes_on_one(tmp_path: Path) -> None:
    """A LoRA on FSDP2 (frozen, sharded base weights): 2 ranks train what 1 process trains, and the adapter file
    (gathered from the sharded EMA) is the same."""
    from safetensors.torch import load_file

    from test_training import write_synthetic_data

    data = tmp_path / "data"
    write_synthetic_data(data, seed=6)
    base = run(train_args(data, tmp_path / "base", 1), ranks=1)  # a model to adapt
    assert base.returncode == 0, base.stderr
    lora = ["--init", str(tmp_path / "base"), "--lora", "2"]
    one = run([*train_args(data, tmp_path / "one", 3), *lora], ranks=1)
    assert one.returncode == 0, one.stderr
    sharded = run([*train_args(data, tmp_path / "fsdp", 2), *lora, "--fsdp"], ranks=2)
    assert sharded.returncode == 0, sharded.stderr
    resumed = run([*train_args(data, tmp_path / "fsdp", 3), *lora, "--resume"], ranks=1)
    assert resumed.returncode == 0 and "resumed forward at step 2" in resumed.stderr
    a, b = model_weights(tmp_path / "one"), model_weights(tmp_path / "fsdp")
    assert_same_training(a, b)
    assert any((a[k] != 0).any() for k in a if "lora_B" in k)  # the adapter trained (B starts at zero)
    adapters = [load_file(root / "forward.lora.safetensors") for root in (tmp_path / "one", tmp_path / "fsdp")]
    assert set(adapters[0]) == set(adapters[1]) and adapters[0]
    assert max((adapters[0][k] - adapters[1][k]).abs().max().item() for k in adapters[0]) < 1e-5
    two_steps = load_file(tmp_path / "fsdp" / "forward.lora.safetensors")  # written again by the resumed run
    assert all(v.shape == adapters[0][k].shape for k, v in two_steps.items())


def test_context_parallel_bench_runs_on_two_ranks(tmp_path: Path) -> None:
    """``bench --cases cp`` (the multi-GPU measurement) at tiny size on 2 CPU ranks: rank 0 writes one report."""
    import json

    out = tmp_path / "cp.json"
    args = ["bench", "--size", "tiny", "--cases", "cp", "--device", "cpu", "--repeats", "1", "--warmup", "0"]
    result = run([*args, "--frames", "9", "--resolution", "32", "48", "--out", str(out)], ranks=2)
    assert result.returncode == 0, result.stderr
    section = json.loads(out.read_text())["context_parallel"]
    assert section["world"] == 2 and len(section) == 4  # world + video, image, 5 passes
    for name, row in section.items():
        if name != "world":
            assert row["relative_l2_split_to_whole"] < 1e-5 and row["speedup"] > 0, name
    alone = run([*args, "--out", str(tmp_path / "one.json")], ranks=1)
    assert alone.returncode != 0 and "torchrun" in alone.stderr  # one line, no traceback
    assert "Traceback" not in alone.stderr
