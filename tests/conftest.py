"""Shared test helpers: the official fixture folder and readers for its files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

REPO = Path(__file__).resolve().parents[1]


def fixture_dir() -> Path:
    """``DR_OFFICIAL_FIXTURES`` or ``../shared/fixtures/official`` beside the repository."""
    return Path(os.environ.get("DR_OFFICIAL_FIXTURES", REPO.parent / "shared" / "fixtures" / "official"))


def fixture_files(pattern: str) -> list[Path]:
    """Every fixture file matching ``pattern`` (sorted); an empty list when the folder is absent."""
    folder = fixture_dir()
    return sorted(folder.glob(pattern)) if folder.is_dir() else []


def read_fixture(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, metadata JSON) of a fixture safetensors file."""
    with safe_open(str(path), "pt") as f:
        meta = json.loads((f.metadata() or {}).get("json", "{}"))
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open is no dict
    return tensors, meta


def params(files: list[Path]) -> list:
    """pytest parameters named after the fixture files; one skipped entry when there are none."""
    if not files:
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"no fixtures in {fixture_dir()}"))]
    return [pytest.param(f, id=f.name) for f in files]


def assert_close(actual: torch.Tensor, expected: torch.Tensor, name: str, tol: float = 1e-4) -> None:
    """atol = rtol = ``tol`` (the issue's float32 parity tolerance), with the worst error in the message."""
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} vs {tuple(expected.shape)}"
    err = (actual.double() - expected.double()).abs().max().item()
    torch.testing.assert_close(actual.double(), expected.double(), atol=tol, rtol=tol, msg=f"{name}: max {err}")


def require_mitsuba():
    """The data engine's renderer module with Mitsuba's CPU variant loaded; skips the calling test module if
    Mitsuba or LLVM >= 19 is missing (``pip install -e .[data]``, ``apt-get install libllvm19``)."""
    pytest.importorskip("mitsuba")
    render = pytest.importorskip("diffusion_renderer.data.mitsuba_render")
    try:
        render.load_mitsuba("llvm_ad_rgb")
    except RuntimeError as err:
        pytest.skip(f"llvm_ad_rgb unavailable: {err}", allow_module_level=True)
    return render


@pytest.fixture
def read_only_dir(tmp_path: Path):
    """A folder without write permission (skips where privileges ignore it, e.g. as root); restored after."""
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("running with privileges that ignore folder permissions (root)")
        yield folder
    finally:
        folder.chmod(0o700)


def run_cli(capsys, *argv: object) -> tuple[int, list[str]]:
    """Run the ``diffusion-renderer`` command in-process: (exit status, non-empty stderr lines)."""
    from diffusion_renderer.cli.main import main

    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    return code, [line for line in err.splitlines() if line.strip()]


def cli_errors(lines: list[str]) -> list[str]:
    """The one-line error messages among stderr lines."""
    return [line for line in lines if line.startswith("diffusion-renderer: error:")]
