"""Official checkpoint folders: safe loading, strict verification, conversion, direct loading, download."""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path

import pytest
import torch

from conftest import assert_close, fixture_files, read_fixture
from diffusion_renderer.checkpoints.download import OFFICIAL_REPOS, download_official, select_repos
from diffusion_renderer.checkpoints.official import (
    CheckpointError,
    convert_official,
    dit_from_official_state_dict,
    find_official_layout,
    load_official_dit,
)
from diffusion_renderer.checkpoints.safe_load import read_torchscript_tensors, torch_load_weights
from diffusion_renderer.cli.main import main
from diffusion_renderer.models.configs import OFFICIAL_DIT_DIRS, OFFICIAL_TOKENIZER_DIR

DIT_FILES = {p.name.split(".")[0].split("_")[1]: p for p in fixture_files("dit_*_tiny.weights.safetensors")}
TOKENIZER_IO = fixture_files("tokenizer_*.io.safetensors")
needs_fixtures = pytest.mark.skipif(
    not DIT_FILES or not TOKENIZER_IO, reason="official fixtures not available (DR_OFFICIAL_FIXTURES)"
)


class _Node(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def save_torchscript(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """A real TorchScript archive whose state_dict() is ``tensors`` (like the official encoder.jit)."""
    root = _Node()
    for key, tensor in tensors.items():
        *parents, leaf = key.split(".")
        node = root
        for name in parents:
            if name not in node._modules:
                node.add_module(name, _Node())
            node = node._modules[name]
        node.register_buffer(leaf, tensor.clone())
    torch.jit.script(root).save(str(path))


def official_state_dict(role: str) -> dict:
    state_dict, _ = read_fixture(DIT_FILES[role])
    return state_dict


def make_official_dir(root: Path, roles=("inverse", "forward"), tokenizer: bool = True) -> Path:
    """The official layout, filled with the tiny fixture weights (as the official code would save them)."""
    for role in roles:
        folder = root / OFFICIAL_DIT_DIRS[role]
        folder.mkdir(parents=True)
        state_dict = dict(official_state_dict(role))
        # TransformerEngine's FP8 metadata entries, as io.BytesIO, like in a TE-saved checkpoint.
        state_dict["net.blocks.block0.blocks.0.block.attn.attn_op._extra_state"] = io.BytesIO(b"")
        torch.save({"model": state_dict}, folder / "model.pt")
    if tokenizer:
        folder = root / OFFICIAL_TOKENIZER_DIR
        folder.mkdir(parents=True)
        stem = TOKENIZER_IO[0].name.split(".")[0]
        for part in ("encoder", "decoder"):
            tensors, _ = read_fixture(TOKENIZER_IO[0].with_name(f"{stem}.{part}.safetensors"))
            save_torchscript(tensors, folder / f"{part}.jit")
        io_tensors, _ = read_fixture(TOKENIZER_IO[0])
        torch.save(
            (io_tensors["fake_mean_std.video_mean"], io_tensors["fake_mean_std.video_std"]),
            folder / "mean_std.pt",
        )
        torch.save(
            (io_tensors["fake_mean_std.image_mean"], io_tensors["fake_mean_std.image_std"]),
            folder / "image_mean_std.pt",
        )
    return root


def test_torchscript_reader_returns_the_state_dict(tmp_path: Path) -> None:
    tensors = {
        "a.0.weight": torch.randn(3, 2),
        "a.0.bias": torch.randn(3),
        "b.idx": torch.arange(4, dtype=torch.int32),
    }
    save_torchscript(tensors, tmp_path / "m.jit")
    read = read_torchscript_tensors(tmp_path / "m.jit")
    assert set(read) == set(tensors)
    for key, value in tensors.items():
        assert read[key].dtype == value.dtype and torch.equal(read[key], value)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_pickles_that_run_code_are_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    os.chdir(tmp_path)
    torch.save({"net.x": _Exploit()}, tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match=r"model\.pt"):
        torch_load_weights(tmp_path / "model.pt")
    # A TorchScript archive whose data.pkl calls os.system.
    with zipfile.ZipFile(tmp_path / "evil.jit", "w") as archive:
        archive.writestr("evil/data.pkl", pickle.dumps(_Exploit(), protocol=2))
    with pytest.raises(CheckpointError, match="not allowed"):
        read_torchscript_tensors(tmp_path / "evil.jit")
    assert not marker.exists()


@needs_fixtures
def test_strict_check_reports_missing_unexpected_and_wrong_shapes_together(tmp_path: Path) -> None:
    state_dict = dict(official_state_dict("inverse"))
    del state_dict["net.final_layer.linear.weight"]
    state_dict["net.blocks.block0.blocks.0.block.attn.to_q.0.weight"] = torch.zeros(3, 3)
    state_dict["net.surprise.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as info:
        dit_from_official_state_dict(state_dict, source="model.pt")
    message = str(info.value)
    assert "\n" not in message
    assert "1 missing (net.final_layer.linear.weight)" in message
    assert "1 unexpected (net.surprise.weight)" in message
    assert "to_q.0.weight: file [3, 3] vs model [128, 128]" in message


@needs_fixtures
def test_convert_official_and_load_converted_reproduce_the_fixtures(tmp_path: Path, monkeypatch) -> None:
    from diffusion_renderer.models.specs import load_model

    official = make_official_dir(tmp_path / "ckpt")
    out = convert_official(official, tmp_path / "converted")
    assert {p.name for p in out.iterdir()} >= {"inverse", "forward", "tokenizer", "diffusion_renderer.json"}
    monkeypatch.setenv("DIFFUSION_RENDERER_CACHE", str(tmp_path / "cache"))
    for spec in (str(out), str(official)):  # converted folder, and official folder converted on first use
        for role in ("inverse", "forward"):
            model = load_model(spec, role)
            io_tensors, _ = read_fixture(DIT_FILES[role].with_name(DIT_FILES[role].name.replace(".weights.", ".io.")))
            # a case that uses the file's base inputs (no context or mask of its own)
            prefix = next(
                p
                for p in sorted(k[: -len(".output")] for k in io_tensors if k.endswith(".output"))
                if f"{p}.crossattn_emb" not in io_tensors and f"{p}.padding_mask" not in io_tensors
            )
            context = io_tensors.get(f"{prefix}.context_index", io_tensors.get("context_index"))
            with torch.no_grad():
                out_tensor = model.transformer(
                    io_tensors["x"],
                    io_tensors["timesteps"],
                    latent_condition=io_tensors["latent_condition"],
                    context_index=context if role == "inverse" else None,
                    fps=io_tensors["fps"],
                ).sample
            assert_close(out_tensor, io_tensors[f"{prefix}.output"], f"{spec}:{role}:{prefix}")
            tok_io, _ = read_fixture(TOKENIZER_IO[0])
            assert_close(model.tokenizer.encode(tok_io["video"]), tok_io["video.model_latent"], "tokenizer")
    assert any((tmp_path / "cache" / "converted").iterdir())


@needs_fixtures
def test_single_repo_download_folder_is_recognised(tmp_path: Path) -> None:
    repo = tmp_path / "hf" / OFFICIAL_DIT_DIRS["forward"]
    make_official_dir(tmp_path / "tmp", roles=("forward",), tokenizer=False)
    repo.parent.mkdir()
    os.replace(tmp_path / "tmp" / OFFICIAL_DIT_DIRS["forward"], repo)
    layout = find_official_layout(repo)
    assert layout.forward == repo / "model.pt" and layout.inverse is None
    assert load_official_dit(layout.forward).context_embedding is None


@needs_fixtures
def test_cli_convert_official_errors_are_one_line(tmp_path: Path, capsys) -> None:
    official = make_official_dir(tmp_path / "ckpt", roles=("inverse",))
    (official / OFFICIAL_TOKENIZER_DIR / "decoder.jit").unlink()
    assert main(["convert-official", str(official), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "decoder.jit" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists(), "nothing half-written"

    bad = make_official_dir(tmp_path / "bad", roles=("inverse",), tokenizer=False)
    state = torch.load(bad / OFFICIAL_DIT_DIRS["inverse"] / "model.pt", weights_only=False)
    state["model"]["net.x_embedder.proj.1.weight"] = torch.zeros(128, 100)
    torch.save(state, bad / OFFICIAL_DIT_DIRS["inverse"] / "model.pt")
    assert main(["convert-official", str(bad), "--out", str(tmp_path / "out2")]) == 2
    err = capsys.readouterr().err.strip()
    assert "net.x_embedder.proj.1.weight: file [128, 100]" in err and err.count("\n") == 0

    assert main(["convert-official", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out3")]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_download_selects_only_needed_files(tmp_path: Path) -> None:
    calls = []

    def fake_fetch(repo_id: str, local_dir: str, allow_patterns: list[str], token=None) -> str:
        calls.append((repo_id, tuple(allow_patterns)))
        for name in allow_patterns:
            Path(local_dir).mkdir(parents=True, exist_ok=True)
            (Path(local_dir) / name).write_bytes(b"x")
        return local_dir

    download_official(tmp_path, fetch=fake_fetch)
    assert [c[0] for c in calls] == [r.repo_id for r in OFFICIAL_REPOS]
    assert ("model.pt",) in [c[1] for c in calls]
    assert (tmp_path / OFFICIAL_TOKENIZER_DIR / "mean_std.pt").is_file()
    assert find_official_layout(tmp_path).inverse == tmp_path / OFFICIAL_DIT_DIRS["inverse"] / "model.pt"
    download_official(tmp_path, fetch=fake_fetch)  # everything present: nothing fetched again
    assert len(calls) == len(OFFICIAL_REPOS)
    with pytest.raises(ValueError, match="unknown component"):
        select_repos(["vae"])

    def broken_fetch(repo_id: str, local_dir: str, allow_patterns: list[str], token=None) -> str:
        return local_dir

    with pytest.raises(FileNotFoundError, match=r"did not provide model\.pt"):
        download_official(tmp_path / "other", components=["inverse"], fetch=broken_fetch)
