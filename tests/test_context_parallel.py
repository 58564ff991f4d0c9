"""Context parallelism (models/context_parallel.py): 2 CPU ranks (gloo) split one clip's tokens and get what one
process gets, for the DiT alone (both roles, video and image grids) and for a whole inverse-rendering call."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from diffusion_renderer.models.context_parallel import (
    gather_tokens,
    heads_to_tokens,
    local_tokens,
    token_counts,
    tokens_to_heads,
)
from diffusion_renderer.models.specs import load_model
from diffusion_renderer.pipelines.pipeline_inverse_rendering import InverseRenderingPipeline

WORLD = 2


def dit_inputs(transformer: torch.nn.Module, grid: tuple[int, int, int], seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    cfg = transformer.config
    latent = (2, cfg.out_channels, *grid)  # (B, C, T, H, W)
    inputs = {
        "hidden_states": torch.randn(latent, generator=g),
        "timestep": torch.rand(2, generator=g),
        "latent_condition": torch.randn(2, transformer.condition_channels, *grid, generator=g),
        "fps": 24.0,
    }
    if transformer.context_embedding is not None:
        inputs["context_index"] = torch.tensor([[1], [3]])
    return inputs


def all_ranks(x: torch.Tensor, counts: list[int]) -> list[torch.Tensor]:
    """Every rank's (B, H, S_r, Dh) test tensor, rebuilt from its seed (as the worker makes them)."""
    return [torch.randn(2, 4, c, 8, generator=torch.Generator().manual_seed(r)) for r, c in enumerate(counts)]


def worker(rank: int, store: str, results: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    torch.manual_seed(0)
    group = dist.group.WORLD
    out: dict[str, object] = {}

    # the all-to-alls are inverses, and the token split tiles the sequence, with even and uneven shares
    for total in (12, 7):
        counts = token_counts(total, WORLD)
        x = torch.randn(2, 4, counts[rank], 8, generator=torch.Generator().manual_seed(rank))  # (B, H, S_r, Dh)
        full = heads_to_tokens(x, counts, group)  # (B, H/N, S, Dh)
        mine = torch.cat(all_ranks(x, counts), dim=2)[:, rank * 2 : rank * 2 + 2]  # what it should be
        out[f"exchange{total}"] = torch.equal(full, mine) and torch.equal(tokens_to_heads(full, counts, group), x)
        seq = torch.arange(float(total)).view(1, total, 1)
        out[f"split_gather{total}"] = torch.equal(gather_tokens(local_tokens(seq, group, 1), total, group, 1), seq)

    for role in ("inverse", "forward"):
        transformer = load_model("random:tiny", role).transformer.eval()
        for grid in ((4, 4, 6), (1, 6, 6)):  # a clip, and an image of 9 tokens (4 + 5 on 2 ranks)
            inputs = dit_inputs(transformer, grid, seed=len(grid) + grid[0])
            with torch.no_grad():
                transformer.enable_context_parallel(None)
                reference = transformer(**inputs).sample
                transformer.enable_context_parallel(group)
                split = transformer(**inputs).sample
            out[f"{role}{grid}"] = ((split - reference).abs().max() / reference.abs().max()).item()
        transformer.enable_context_parallel(group)
        with pytest.raises(ValueError, match="cannot be split"), torch.no_grad():
            transformer(**dit_inputs(transformer, (1, 2, 2), seed=0))  # 1 token on 2 ranks
        out[f"{role}_error"] = True

    with pytest.raises(ValueError, match="3 attention heads do not split over 2 ranks"):
        load_model("random:small", "inverse").transformer.enable_context_parallel(group)  # the shipped size
    out["heads_error"] = True

    # a whole pipeline call: every rank runs it with the same seed and gets the same G-buffers as one process
    pipe = InverseRenderingPipeline.from_model(load_model("random:tiny", "inverse"))
    image = np.random.default_rng(5).random((9, 32, 48, 3), dtype=np.float32)
    options = {"num_inference_steps": 2, "processing_resolution": (32, 48), "progress": False}
    reference = pipe(image, generator=torch.Generator().manual_seed(4), **options).gbuffers
    pipe.transformer.enable_context_parallel(group)
    split = pipe(image, generator=torch.Generator().manual_seed(4), **options).gbuffers
    out["pipeline"] = max(float(np.abs(split[k] - reference[k]).max()) for k in reference)
    torch.save(out, f"{results}.{rank}")
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    root = tmp_path_factory.mktemp("cp")
    mp.spawn(worker, args=(str(root / "store"), str(root / "out")), nprocs=WORLD, join=True)
    return [torch.load(Path(f"{root / 'out'}.{rank}"), weights_only=True) for rank in range(WORLD)]


def test_all_to_all_exchanges_heads_for_tokens(results: list[dict]) -> None:
    for out in results:
        assert out["exchange12"] and out["exchange7"]  # 6 + 6 and 4 + 3 tokens
        assert out["split_gather12"] and out["split_gather7"]


@pytest.mark.parametrize("role", ["inverse", "forward"])
def test_split_dit_equals_one_process(results: list[dict], role: str) -> None:
    for out in results:
        for grid in ((4, 4, 6), (1, 6, 6)):
            assert out[f"{role}{grid}"] < 1e-5, (role, grid)  # float32 summation order only
        assert out[f"{role}_error"]


def test_split_pipeline_equals_one_process(results: list[dict]) -> None:
    for out in results:
        assert out["pipeline"] < 1e-4 and out["heads_error"]
