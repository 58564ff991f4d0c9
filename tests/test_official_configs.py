"""Full-size structure against the official manifests and configs; RoPE tables against the official module."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from conftest import assert_close, fixture_dir, fixture_files, params, read_fixture
from diffusion_renderer.checkpoints.keys import dit_key_to_official, is_ignored_dit_key
from diffusion_renderer.conventions import CONTEXT_INDEX, DEFAULT_FPS, FORWARD_CONDITION_KEYS, INVERSE_PASSES
from diffusion_renderer.models.configs import OFFICIAL_DIT_DIRS, OFFICIAL_NETS
from diffusion_renderer.models.transformer_diffusion_renderer import (
    DiffusionRendererTransformer3DModel,
    RotaryPosEmbed3D,
    official_net_to_config,
)

pytestmark = pytest.mark.official


def official_configs() -> dict:
    path = fixture_dir() / "official_configs.json"
    if not path.is_file():
        pytest.skip(f"no {path}")
    return json.loads(path.read_text())


@pytest.mark.parametrize("path", params(fixture_files("manifest_dit_*.json")))
def test_official_manifest_keys_and_shapes(path: Path) -> None:
    """Our module tree, built at full size on the meta device, has exactly the official keys and shapes."""
    manifest = json.loads(path.read_text())
    net = official_configs()[manifest["model"]]["net"]
    with torch.device("meta"):
        model = DiffusionRendererTransformer3DModel(**official_net_to_config(net))
    ours = {dit_key_to_official(k): list(v.shape) for k, v in model.state_dict().items()}
    theirs = {e["key"]: e["shape"] for e in manifest["entries"] if not is_ignored_dit_key(e["key"])}
    assert sorted(set(theirs) - set(ours)) == [], "official keys we lack"
    assert sorted(set(ours) - set(theirs)) == [], "keys the official model lacks"
    wrong = {k: (ours[k], theirs[k]) for k in ours if ours[k] != theirs[k]}
    assert wrong == {}
    # Parameter count of the official net.* entries (buffers included: pos_embedder.seq).
    net_entries = [e for e in manifest["entries"] if e["key"].startswith("net.") and e["shape"] is not None]
    assert sum(math.prod(e["shape"]) for e in net_entries) == manifest["net_param_count"]
    ignored = [e["key"] for e in manifest["entries"] if is_ignored_dit_key(e["key"])]
    assert all(k.startswith("logvar.") or "_extra_state" in k or k == "net.pos_embedder.seq" for k in ignored)


def test_official_named_configs_match_official_configs() -> None:
    configs = official_configs()
    for role, folder in OFFICIAL_DIT_DIRS.items():
        official = {k: v for k, v in configs[folder]["net"].items() if k != "_target_"}
        assert OFFICIAL_NETS[f"{role}-7b"] == official
    assert configs["gbuffer_index_mapping"] == CONTEXT_INDEX
    assert tuple(configs["inverse_default_inference_passes"]) == INVERSE_PASSES
    forward_model = configs[OFFICIAL_DIT_DIRS["forward"]]["model"]
    assert tuple(forward_model["condition_keys"]) == FORWARD_CONDITION_KEYS


@pytest.mark.parametrize("path", params(fixture_files("rope_tables_*.safetensors")))
def test_official_rope_tables(path: Path) -> None:
    """Per-axis angle tables in float32 and as the official module computes them after ``.to(bfloat16)``."""
    io, meta = read_fixture(path)
    dtypes = sorted({k.split(".")[0] for k in io})
    assert dtypes
    reference = io[f"{dtypes[0]}.t_angles"]
    len_t, half_t = reference.shape
    len_h, half_h = io[f"{dtypes[0]}.h_angles"].shape
    head_dim = 2 * half_t + 4 * half_h
    patch = (1, 2, 2)
    max_size = (len_t * patch[0], len_h * patch[1], len_h * patch[2])
    fps = torch.tensor([float(meta.get("fps", DEFAULT_FPS))])
    tables = {}
    for dtype_name in dtypes:
        # A fresh float32 module cast to the dtype, as the official inference casts the whole model.
        module = RotaryPosEmbed3D(head_dim, max_size, patch).to(getattr(torch, dtype_name))
        t, h, w = module.angle_tables(len_t, len_h, io[f"{dtype_name}.w_angles"].shape[0], fps)
        tables[dtype_name] = t
        # The path the model's forward takes: float32 buffers, angles computed in the weights' dtype.
        computed = RotaryPosEmbed3D(head_dim, max_size, patch).angle_tables(
            len_t, len_h, io[f"{dtype_name}.w_angles"].shape[0], fps, dtype=getattr(torch, dtype_name)
        )
        for axis, ours, via_dtype in zip("thw", (t, h, w), computed, strict=True):
            assert_close(ours.float(), io[f"{dtype_name}.{axis}_angles"], f"{dtype_name}.{axis}_angles")
            assert torch.equal(ours, via_dtype)
    if len(tables) > 1:
        # The bf16 tables really differ from float32 ones: the test above would catch fp32-only RoPE.
        values = list(tables.values())
        assert (values[0].float() - values[1].float()).abs().max() > 1e-2
