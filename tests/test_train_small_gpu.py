"""What `benchmarks/train_small_gpu.py` hands back from a device run (CPU, no Mitsuba): the weights in a storage
that fits the return limit, the kept float32 copy and training state, and one log archive."""

from __future__ import annotations

import argparse
import shlex
import sys
import tarfile
from pathlib import Path

import pytest
import torch

from diffusion_renderer.checkpoints.renderer_file import never_read, read_renderer_file, save_renderer_file
from diffusion_renderer.models.configs import ROLES
from diffusion_renderer.models.specs import load_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import train_small_gpu


def write_run(out: Path, role: str = "forward") -> dict[str, torch.Tensor]:
    """A trainer's outputs in ``out``: the EMA renderer file (float32), its training state and a log."""
    model = load_model("random:small", role, seed=3)
    state = {k: v.clone() for k, v in model.transformer.state_dict().items()}
    out.mkdir(parents=True)
    save_renderer_file(
        out / f"{role}.safetensors",
        state,
        role=role,
        dit_config=dict(model.transformer.config),
        tokenizer_config=model.tokenizer.config(),
        record={"steps": 7},
    )
    (out / f"{role}.train_state.safetensors").write_bytes(b"optimizer, EMA, step")
    (out / f"{role}.log.jsonl").write_text('{"step": 7}\n')
    (out / f"{role}.val").mkdir()
    (out / f"{role}.val" / "step_0000007.png").write_bytes(b"png")
    return state


def test_export_keeps_float32_and_state_and_returns_float16(tmp_path: Path) -> None:
    state = write_run(tmp_path / "out")
    keep, kept_state = tmp_path / "keep", tmp_path / "state"
    exported = train_small_gpu.export_role(tmp_path / "out", "forward", keep=keep, state_dir=kept_state)
    assert exported == tmp_path / "out" / "forward.fp16.safetensors"
    weights, meta = read_renderer_file(exported)
    assert meta["storage"] == "float16" and meta["record"]["steps"] == 7
    assert set(weights) == {k for k in state if not never_read(k, meta["dit_config"])}  # forward: no attn2
    for key, value in weights.items():
        torch.testing.assert_close(value.float(), state[key].half().float())
    assert read_renderer_file(keep / "forward.safetensors")[1]["storage"] == "float32"
    assert (kept_state / "forward.train_state.safetensors").read_bytes() == b"optimizer, EMA, step"
    assert not (tmp_path / "out" / "forward.safetensors").exists()
    assert not (tmp_path / "out" / "forward.train_state.safetensors").exists()


def test_export_falls_back_to_int8_over_the_return_limit(tmp_path: Path, monkeypatch) -> None:
    state = write_run(tmp_path / "out")
    monkeypatch.setattr(train_small_gpu, "RETURN_LIMIT_BYTES", 1024)  # float16 of any model exceeds it
    exported = train_small_gpu.export_role(tmp_path / "out", "forward")
    assert exported.name == "forward.int8.safetensors"
    weights, meta = read_renderer_file(exported)  # dequantized at load
    assert meta["storage"] == "int8"
    big = [k for k, v in weights.items() if v.ndim == 2 and v.abs().max() > 0]
    for key in big:
        error = (weights[key].float() - state[key]).abs().max() / state[key].abs().max()
        assert error < 0.01, key  # int8 rows: within half a step of each row's scale
    assert not (tmp_path / "out" / "forward.train_state.safetensors").exists()  # no --state: dropped


def test_export_keeps_a_qat_files_int4_exactly(tmp_path: Path) -> None:
    """A ``--qat int4`` run writes an int4 file: exported as it is, the same weights, the same size."""
    write_run(tmp_path / "out", "inverse")
    trained = tmp_path / "out" / "inverse.safetensors"
    state, meta = read_renderer_file(trained)
    save_renderer_file(trained, state, role="inverse", dit_config=meta["dit_config"],
                       tokenizer_config=meta["tokenizer"], storage="int4", record=meta["record"])  # fmt: skip
    written, size = read_renderer_file(trained)[0], trained.stat().st_size
    exported = train_small_gpu.export_role(tmp_path / "out", "inverse")
    assert exported.name == "inverse.int4.safetensors" and exported.stat().st_size == size
    weights, meta = read_renderer_file(exported)
    assert meta["storage"] == "int4" and all(torch.equal(weights[k], v) for k, v in written.items())


def test_pack_logs_leaves_the_weights_and_one_archive(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_run(out)
    train_small_gpu.export_role(out, "forward", keep=out / "f32")  # a --keep folder inside the returned one
    (out / "summary.json").write_text("{}")
    train_small_gpu.pack_logs(out)
    names = ["f32", "forward.fp16.safetensors", "logs.tar.gz", "summary.json"]
    assert sorted(p.name for p in out.iterdir()) == names
    assert read_renderer_file(out / "f32" / "forward.safetensors")[1]["storage"] == "float32"  # not archived
    with tarfile.open(out / "logs.tar.gz") as tar:
        assert sorted(tar.getnames()) == ["forward.log.jsonl", "forward.val/step_0000007.png"]


@pytest.mark.parametrize("role", ["inverse", "forward"])
def test_export_without_weights_returns_nothing(tmp_path: Path, role: str) -> None:
    (tmp_path / "out").mkdir()
    assert train_small_gpu.export_role(tmp_path / "out", role) is None  # a trainer that failed: nothing to send


def test_each_role_gets_its_own_flags_after_the_common_ones(tmp_path: Path) -> None:
    """``--role-extra ROLE "FLAGS"``: the role's flags come last, so they override the call's (argparse keeps the
    last value), and the other role never sees them; with a kept training state the trainer resumes it."""
    from diffusion_renderer.cli.main import build_parser

    call = {"data": tmp_path / "d", "out": tmp_path / "o", "pure_noise_fraction": 0.5, "steps": 10, "batch_size": 8}
    call |= {"minutes": 1.0, "val_every": 5, "seed": 3, "init": tmp_path / "w", "extra": ["--lr", "1e-4"]}
    call |= {"compile_cache": None}
    args = argparse.Namespace(**call)
    extra = {"forward": shlex.split("--pure-noise-fraction 0.75 --hint-fixed-camera 0.5")}
    commands = {role: train_small_gpu.train_command(args, role, False, extra.get(role, [])) for role in ROLES}
    parsed = {role: build_parser().parse_args(cmd[3:]) for role, cmd in commands.items()}  # after python -m package
    assert parsed["forward"].pure_noise_fraction == 0.75 and parsed["forward"].hint_fixed_camera == 0.5
    assert parsed["inverse"].pure_noise_fraction == 0.5 and parsed["inverse"].hint_fixed_camera == 0.0
    assert all(p.lr == 1e-4 and p.init == str(tmp_path / "w" / f"{p.role}.safetensors") for p in parsed.values())
    resumed = build_parser().parse_args(train_small_gpu.train_command(args, "inverse", True, [])[3:])
    assert resumed.resume and resumed.init is None


def test_a_carried_compile_cache_reaches_each_trainer_and_comes_back(tmp_path: Path) -> None:
    """``--compile-cache DIR``: each role's trainer reads and writes ``OUT/ROLE.compile_cache``, started from the
    carried folder's file (not over a newer one already there), and that file is returned as it is, not archived."""
    from diffusion_renderer.cli.main import build_parser

    carried, out = tmp_path / "carried", tmp_path / "out"
    carried.mkdir()
    (carried / "forward.compile_cache").write_bytes(b"carried forward")
    call = {"data": tmp_path / "d", "out": out, "pure_noise_fraction": 0.5, "steps": 10, "batch_size": 8}
    call |= {"minutes": 1.0, "val_every": 5, "seed": 3, "init": None, "extra": [], "compile_cache": carried}
    args = argparse.Namespace(**call)
    parsed = build_parser().parse_args(train_small_gpu.train_command(args, "forward", False, ["--compile"])[3:])
    assert parsed.compile and parsed.compile_cache == out / "forward.compile_cache"
    write_run(out)
    for role in ROLES:
        train_small_gpu.seed_compile_cache(carried, out, role)
    assert (out / "forward.compile_cache").read_bytes() == b"carried forward"
    assert not (out / "inverse.compile_cache").exists()  # nothing carried for it: its trainer starts cold
    (out / "forward.compile_cache").write_bytes(b"this call's")  # what the trainer wrote back
    train_small_gpu.seed_compile_cache(carried, out, "forward")
    assert (out / "forward.compile_cache").read_bytes() == b"this call's"
    train_small_gpu.export_role(out, "forward")
    train_small_gpu.pack_logs(out)
    assert sorted(p.name for p in out.iterdir()) == [
        "forward.compile_cache",
        "forward.fp16.safetensors",
        "logs.tar.gz",
    ]
    unchanged = argparse.Namespace(**{**call, "compile_cache": None})
    assert "--compile-cache" not in train_small_gpu.train_command(unchanged, "forward", False, [])


def test_a_call_without_its_training_maps_stops_before_rendering(tmp_path: Path, monkeypatch, capsys) -> None:
    """A device call that did not carry ``--train-hdri-dir`` once rendered nothing (every generator died on the
    missing folder) and trained on the last call's clips: it now stops at once, with the folder named."""
    argv = ["train_small_gpu.py", "--out", str(tmp_path / "o"), "--train-hdri-dir", str(tmp_path / "maps")]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as stop:
        train_small_gpu.main()
    assert stop.value.code == 2 and "maps: no such folder" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("roles", "hints"), [(["inverse"], False), (["inverse", "forward"], True), (["forward"], True)]
)
def test_generators_leave_the_hints_out_when_no_forward_model_trains(
    tmp_path: Path, monkeypatch, roles: list[str], hints: bool
) -> None:
    """The data-engine processes a call starts render shards with the shading hints only when a forward model
    trains on them: the inverse trainer reads none, and the hints' shadow marching takes GPU time from the path
    tracing. Run here through the script's own parser and ``generate`` (Mitsuba stubbed out)."""
    import data_engine
    from diffusion_renderer.data import make_data

    call = {"out": tmp_path / "o", "data": tmp_path / "d", "scenes": 4, "val_scenes": 4, "frames": 4, "spp": 8}
    call |= {"seed": 7, "gen_threads": 0, "train_hdri_dir": None, "roles": roles}
    cmd = train_small_gpu.generate_command(argparse.Namespace(**call))
    assert ("--no-hints" in cmd) is not hints
    calls: list[dict] = []
    monkeypatch.setattr(make_data, "make_dataset", lambda out, **kwargs: calls.append(kwargs))
    monkeypatch.setattr(data_engine, "use_mitsuba_hdr_reader", lambda: None)
    monkeypatch.setattr(sys, "argv", [*cmd[1:], "--worker", "0"])  # after the interpreter
    train_small_gpu.main()
    assert [c["only_split"] for c in calls] == ["val", "train"]  # worker 0 renders the validation clips too
    assert all(c["hints"] is hints and c["layout"] == "shards" and c["spp"] == 8 for c in calls)
