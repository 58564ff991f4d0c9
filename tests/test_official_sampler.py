"""Parity of the EDM preconditioning and the Euler sampler with the official runs in the fixture folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import assert_close, fixture_dir, fixture_files, params, read_fixture
from diffusion_renderer.checkpoints.official import dit_from_official_state_dict
from diffusion_renderer.models import edm
from diffusion_renderer.pipelines.sampling import ConditionInputs, make_scheduler, sample_edm_euler

pytestmark = pytest.mark.official


def weights_for(path: Path, meta: dict) -> Path:
    """The DiT weights a run used: metadata ``weights``, else the longest ``dit_<x>`` matching the name."""
    if "weights" in meta:
        return fixture_dir() / meta["weights"]
    stem = path.name.split(".")[0].split("_", 1)[1]  # sampler_inverse_tiny_cfg -> inverse_tiny_cfg
    candidates = [f for f in fixture_files("dit_*.weights.safetensors") if stem.startswith(f.name[4:].split(".")[0])]
    assert candidates, f"{path.name}: no dit_*.weights.safetensors matches"
    return max(candidates, key=lambda f: len(f.name))


def load_model(path: Path, meta: dict):
    weights = weights_for(path, meta)
    state_dict, wmeta = read_fixture(weights)
    return dit_from_official_state_dict(state_dict, wmeta["net_config"], source=weights)


def scheduler_for(meta: dict):
    cfg = meta.get("scheduler_config", {})
    return make_scheduler(
        sigma_min=cfg.get("sigma_min", 0.02),
        sigma_max=cfg.get("sigma_max", 80.0),
        sigma_data=cfg.get("sigma_data", 0.5),
        rho=cfg.get("rho", 7.0),
    )


def condition_for(io: dict, meta: dict, model) -> ConditionInputs:
    context = io.get("context_index")
    if context is None and "context_index" in meta:
        context = torch.tensor([[meta["context_index"]]])
    return ConditionInputs(
        latent_condition=io["latent_condition"],
        context_index=context if model.context_embedding is not None else None,
        fps=io.get("fps", torch.tensor([meta.get("fps", 24.0)])),
        padding_mask=io.get("padding_mask"),
    )


@pytest.mark.parametrize("path", params(fixture_files("edm_precond*.safetensors")))
def test_official_edm_preconditioning(path: Path) -> None:
    io, meta = read_fixture(path)
    sigma_data = meta.get("sigma_data", 0.5)
    sigmas = io["sigmas"]
    ours = {
        "c_in": edm.c_in(sigmas, sigma_data),
        "c_noise": edm.c_noise(sigmas),
        "c_skip": edm.c_skip(sigmas, sigma_data),
        "c_out": edm.c_out(sigmas, sigma_data),
    }
    for name, value in ours.items():
        for ref in (f"diffusers.{name}", f"cosmos_EDMScaling.{name}_f64"):
            if ref in io:
                assert_close(value, io[ref], ref)
    model = load_model(path, meta)
    condition = condition_for(io, meta, model)
    cases = sorted(k[: -len(".x_t")] for k in io if k.endswith(".x_t"))
    assert cases
    for case in cases:
        sigma = torch.tensor(float(case[len("sigma") :]))
        x_t = io[f"{case}.x_t"]
        net_input = x_t * edm.c_in(sigma, sigma_data)
        assert_close(net_input, io[f"{case}.net_input"], f"{case}.net_input")
        assert_close(edm.c_noise(sigma).reshape(1), io[f"{case}.timestep"], f"{case}.timestep")
        with torch.no_grad():
            out = model(net_input, edm.c_noise(sigma).reshape(1), **condition.model_kwargs()).sample
        assert_close(out, io[f"{case}.net_output"], f"{case}.net_output")
        x0 = edm.denoised_from_output(x_t, out, sigma, sigma_data)
        assert_close(x0, io[f"{case}.x0_pred"], f"{case}.x0_pred")


@pytest.mark.parametrize("path", params(fixture_files("sampler_*.safetensors")))
def test_official_sampler_run(path: Path) -> None:
    io, meta = read_fixture(path)
    model = load_model(path, meta)
    scheduler = scheduler_for(meta)
    num_steps = int(meta["num_steps"])
    assert scheduler.init_noise_sigma == pytest.approx(meta.get("init_noise_sigma", scheduler.init_noise_sigma))
    scheduler.set_timesteps(num_steps)
    assert_close(scheduler.sigmas, io["sigmas"], "sigmas")
    assert_close(
        edm.karras_sigmas(num_steps, scheduler.config.sigma_min, scheduler.config.sigma_max),
        io["sigmas"],
        "karras",
    )
    assert_close(scheduler.timesteps, io["timesteps"], "timesteps")

    records: dict[int, dict[str, torch.Tensor]] = {}
    final = sample_edm_euler(
        model,
        condition_for(io, meta, model),
        tuple(io["noise"].shape),
        num_inference_steps=num_steps,
        guidance_scale=float(meta.get("guidance", 0.0)),
        noise=io["noise"],
        scheduler=scheduler,
        callback=lambda i, rec: records.__setitem__(i, rec),
    )
    assert_close(records[0]["x_t"], io["x_init"], "x_init")
    for i in range(num_steps):
        for name, value in records[i].items():
            key = f"step{i}.{name}"
            if key in io:
                assert_close(value, io[key], key)
        expected = {k.split(".", 1)[1] for k in io if k.startswith(f"step{i}.")}
        assert expected <= set(records[i]), f"step {i}: not produced: {expected - set(records[i])}"
    assert_close(final, io["final_latent"], "final_latent")


def test_sampler_honours_the_seed() -> None:
    from diffusion_renderer.models.specs import random_transformer

    model = random_transformer("inverse-tiny", seed=3)
    shape = (1, 16, 1, 4, 6)
    condition = ConditionInputs(torch.randn(shape), context_index=torch.tensor([[0]]))

    def sample(seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        return sample_edm_euler(model, condition, shape, num_inference_steps=3, generator=generator)

    first, again, other = sample(7), sample(7), sample(8)
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)


def test_guidance_zero_skips_the_unconditional_branch() -> None:
    from diffusion_renderer.models.specs import random_transformer

    model = random_transformer("forward-tiny", seed=1)
    shape = (1, 16, 1, 4, 4)
    condition = ConditionInputs(torch.randn(1, 136, 1, 4, 4))
    calls = []
    model.register_forward_hook(lambda *a: calls.append(1))
    sample_edm_euler(model, condition, shape, num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    assert len(calls) == 2
    sample_edm_euler(
        model,
        condition,
        shape,
        num_inference_steps=2,
        guidance_scale=1.5,
        generator=torch.Generator().manual_seed(0),
    )
    assert len(calls) == 2 + 4
