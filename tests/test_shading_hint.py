"""The split-sum shading hint (render/hint.py): its light is the condition's light, it is the split-sum baseline's
shading, its versions' background rules, it reaches the DiT as a ninth condition key, a forward-medium widened to
take it is unchanged, and a residual model denoises the difference from it (starting at the hint)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from diffusion_renderer.conventions import (
    FORWARD_CONDITION_KEYS,
    SHADING_HINT_KEY,
    display_rgb,
    forward_condition_keys,
)
from diffusion_renderer.lighting.envmap import EnvironmentConditions, process_environment_map, project_envmap
from diffusion_renderer.models.space_to_depth import SpaceToDepthTokenizer
from diffusion_renderer.render.hint import background_mask, equirect_from_condition, shading_hint
from diffusion_renderer.render.splitsum import SplitSumRenderer, env_radiance, equirect_directions

SIZE = 48


def smooth_panorama(seed: int = 0) -> torch.Tensor:
    """(64, 128, 3) positive HDR panorama with one bright region (a test light, not a real map)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, 6, 12, generator=g) * 2
    coarse[..., 1, 3] = 20.0  # a sun-like patch
    pano = torch.nn.functional.interpolate(coarse, size=(64, 128), mode="bicubic", align_corners=False)
    return pano[0].permute(1, 2, 0).clamp_min(0.0)


def random_gbuffers(seed: int, frames: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    normal = torch.randn(frames, SIZE, SIZE, 3, generator=g) + torch.tensor([0.0, 0.0, 1.5])
    depth = torch.rand(frames, SIZE, SIZE, 1, generator=g) * 2 - 1
    depth[:, :8] = 1.0  # the top rows are background: far, and no normal (as the data engine writes it)
    normal = torch.nn.functional.normalize(normal, dim=-1)
    normal[:, :8] = 0.0
    return {
        "basecolor": torch.rand(frames, SIZE, SIZE, 3, generator=g),
        "normal": normal,
        "roughness": torch.rand(frames, SIZE, SIZE, 1, generator=g),
        "metallic": torch.rand(frames, SIZE, SIZE, 1, generator=g),
        "depth": depth,
    }


@pytest.mark.parametrize("angle", [0.0, 1.3])
def test_condition_map_is_the_split_sum_equirect_of_the_same_light(angle: float) -> None:
    raw = smooth_panorama()
    condition = project_envmap(raw, 64, 64, torch.tensor([angle]), method="direct")[0]  # camera frame
    ours = equirect_from_condition(condition)
    truth = env_radiance(raw, equirect_directions(64, 64), angle)  # what split-sum reads at angle
    assert (ours - truth).abs().mean() < 0.01 * truth.mean()
    with pytest.raises(ValueError, match="even"):
        equirect_from_condition(condition[:, :63])


def test_hint_is_the_split_sum_baselines_shading() -> None:
    raw, angle = smooth_panorama(1), 0.8
    gbuffers = random_gbuffers(2)
    condition = project_envmap(raw, SIZE, SIZE, torch.tensor([angle]), method="direct")
    hint = shading_hint(gbuffers, condition)  # (1, H, W, 3) linear
    baseline = SplitSumRenderer()
    frames = baseline.prepare_gbuffers({k: v.numpy() for k, v in gbuffers.items()}, None)
    foreground = gbuffers["depth"] < 0.999
    truth = baseline.render_hdr(
        frames, baseline.prepare_lighting(raw.numpy()), torch.tensor([angle]), foreground=foreground
    )
    error = (hint - truth).square().mean()
    assert 10 * torch.log10(truth.max() ** 2 / error) > 35  # the same shading, prefiltered more coarsely
    assert torch.allclose(hint[~foreground[..., 0]], truth[~foreground[..., 0]], rtol=0.05, atol=0.02)  # background
    # frames that share a light are shaded with it; a light per frame is taken frame by frame
    two = {k: torch.cat([v, v]) for k, v in gbuffers.items()}
    assert torch.allclose(shading_hint(two, condition), torch.cat([hint, hint]))
    with pytest.raises(ValueError, match="3 environment frames for 2"):
        shading_hint(two, condition.expand(3, -1, -1, -1))


def test_pipeline_gives_the_hint_to_a_model_that_takes_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from diffusion_renderer.models.specs import load_model
    from diffusion_renderer.pipelines.pipeline_forward_rendering import ForwardRenderingPipeline

    pipe = ForwardRenderingPipeline.from_model(load_model("random:forward-medium-hint", "forward"))
    assert pipe.shading_hint and pipe.transformer.condition_channels == 9 * 193
    gbuffers = {k: v.numpy() for k, v in random_gbuffers(3).items()}
    raw = smooth_panorama(2).numpy()
    kwargs = {"num_inference_steps": 1, "generator": None, "progress": False, "processing_resolution": SIZE}
    first = pipe(gbuffers, raw, **kwargs).images[0]
    assert first.shape == (1, SIZE, SIZE, 3) and first.min() >= 0 and first.max() <= 1
    # a rotating light over a clip cut to its first window: one hint per output frame, the rest padded
    clip = {k: np.concatenate([v] * 3) for k, v in gbuffers.items()}
    cut = pipe(clip, raw, rotate_light=True, chunk_mode="first", num_frames=2, **kwargs).images[0]
    assert cut.shape == (2, SIZE, SIZE, 3)
    # the hint reaches the DiT: a different hint, a different frame
    import diffusion_renderer.render.hint as hint_module

    monkeypatch.setattr(hint_module, "shading_hint", lambda g, e, version, camera: torch.zeros(1, SIZE, SIZE, 3))
    assert not np.allclose(pipe(gbuffers, raw, **kwargs).images[0], first)
    # the hint's camera is read once per set of G-buffers, not once per lighting
    cameras = []
    fixed = hint_module.HintCamera()
    monkeypatch.setattr(
        hint_module, "hint_camera", lambda g, version, known=None, fitted=True: cameras.append(version) or fixed
    )
    assert len(pipe(gbuffers, [raw, raw[:, ::-1].copy()], **kwargs).images) == 2 and cameras == [1]
    # precomputed conditions carry their HDR map; bare encodings cannot make a hint
    env = process_environment_map(torch.from_numpy(raw), SIZE, SIZE)
    assert env.env_hdr is not None
    bare = EnvironmentConditions(env.env_ldr, env.env_log, env.env_nrm)
    with pytest.raises(ValueError, match="needs the HDR map"):
        pipe(gbuffers, bare, **kwargs)


def test_pipeline_projects_the_map_by_area_for_a_hint_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """A model with the hint projects a map power-preservingly unless told (its hint is as bright as the light);
    an official-style model without one keeps the official cube-map projection; a given method is used."""
    import diffusion_renderer.render.hint as hint_module
    from diffusion_renderer.models.specs import load_model
    from diffusion_renderer.pipelines.pipeline_forward_rendering import ForwardRenderingPipeline

    pipe = ForwardRenderingPipeline.from_model(load_model("random:forward-medium-hint", "forward"))
    plain = ForwardRenderingPipeline.from_model(load_model("random:tiny", "forward"))
    assert pipe.default_envmap_method == "area" and plain.default_envmap_method == "cubemap"
    seen = []
    real = hint_module.shading_hint
    monkeypatch.setattr(
        hint_module, "shading_hint", lambda g, e, v, camera: seen.append(e.cpu()) or real(g, e, v, camera)
    )
    gbuffers = {k: v.numpy() for k, v in random_gbuffers(1).items()}
    raw = smooth_panorama(2).numpy()
    raw[10:12, 30:32] = 5e3  # a lamp that point sampling may miss
    kwargs = {"num_inference_steps": 1, "generator": None, "progress": False, "processing_resolution": SIZE}
    pipe(gbuffers, raw, **kwargs)
    pipe(gbuffers, raw, envmap_method="cubemap", **kwargs)
    for method, env_hdr in zip(("area", "cubemap"), seen, strict=True):
        expected = process_environment_map(torch.from_numpy(raw), SIZE, SIZE, method=method).env_hdr
        torch.testing.assert_close(env_hdr, expected)
    assert not torch.allclose(seen[0], seen[1])


def test_examples_put_the_hint_last_and_drop_it_with_the_lighting() -> None:
    from diffusion_renderer.training.examples import forward_example

    g = torch.Generator().manual_seed(0)
    batch = {k: torch.rand(2, 3, 1, 16, 16, generator=g) * 2 - 1 for k in (*FORWARD_CONDITION_KEYS, "rgb")}
    batch[SHADING_HINT_KEY] = torch.rand(2, 3, 1, 16, 16, generator=g) * 2 - 1
    tok, keys = SpaceToDepthTokenizer(), forward_condition_keys(True)
    assert keys[-1] == SHADING_HINT_KEY and keys[:-1] == FORWARD_CONDITION_KEYS
    example = forward_example(batch, tok, g, key_drop=0.0, condition_drop=0.0, condition_keys=keys)
    per_key = example.condition.latent_condition.unflatten(1, (9, 193))
    assert torch.equal(per_key[:, -1, :192], tok.encode(batch[SHADING_HINT_KEY])) and per_key[:, -1, 192].eq(1).all()
    real = forward_example(batch, tok, g, key_drop=0.0, condition_drop=0.0, condition_keys=keys, drop_lighting=True)
    assert real.condition.latent_condition.unflatten(1, (9, 193))[:, 5:].abs().sum() == 0
    del batch[SHADING_HINT_KEY]
    with pytest.raises(ValueError, match="shading hint"):
        forward_example(batch, tok, g, condition_keys=keys)


def test_widened_model_computes_what_it_did() -> None:
    from diffusion_renderer.models.specs import random_transformer
    from diffusion_renderer.training.trainer import TrainConfig, adapt_to_config

    model = random_transformer("forward-medium", seed=4)
    wide = adapt_to_config(model, TrainConfig(role="forward", model_config="medium-hint"))
    assert wide.config.shading_hint and wide.condition_channels == 9 * 193
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 192, 1, 4, 4, generator=g)
    condition = torch.randn(1, 8 * 193, 1, 4, 4, generator=g)
    hint = torch.randn(1, 193, 1, 4, 4, generator=g)
    t = torch.tensor([0.3])
    with torch.no_grad():
        before = model(x, t, latent_condition=condition).sample
        after = wide.eval()(x, t, latent_condition=torch.cat([condition, hint], 1)).sample
    assert torch.allclose(before, after, atol=1e-5)
    same = adapt_to_config(model, TrainConfig(role="forward", model_config="small"))  # another size: --init wins
    assert same is model and adapt_to_config(wide, TrainConfig(role="forward", model_config="medium")) is wide


def test_version_2_background_keeps_clipped_surfaces() -> None:
    gbuffers = random_gbuffers(5)
    gbuffers["depth"][:, 8:12] = 1.0  # far surfaces, clipped to +1 like the background, with unit normals
    gbuffers["depth"][:, 12:].clamp_(max=0.99)  # nearer surfaces
    gbuffers["depth"][:, :4] = 0.95  # background as an inverse model predicts it: no normal, depth short of +1
    v1, v2 = background_mask(gbuffers, 1), background_mask(gbuffers, 2)
    assert v1[:, 4:12].all() and not v1[:, :4].any() and not v1[:, 12:].any()
    assert v2[:, :8].all() and not v2[:, 8:].any()
    condition = project_envmap(smooth_panorama(3), SIZE, SIZE, torch.tensor([0.4]), method="direct")
    one, two = shading_hint(gbuffers, condition, version=1), shading_hint(gbuffers, condition, version=2)
    assert torch.equal(one[:, 4:8], two[:, 4:8]) and torch.equal(one[:, 12:], two[:, 12:])
    assert not torch.allclose(one[:, 8:12], two[:, 8:12])  # version 2 shades the clipped surfaces
    with pytest.raises(ValueError, match="unknown shading hint version 6"):
        shading_hint(gbuffers, condition, version=6)


def test_residual_model_denoises_the_difference_from_the_hint() -> None:
    from diffusion_renderer.models.edm import c_in, c_noise, c_out, c_skip
    from diffusion_renderer.models.specs import random_transformer
    from diffusion_renderer.models.transformer_diffusion_renderer import DiffusionRendererTransformer3DModel

    residual = random_transformer("forward-medium-residual", seed=6).eval()
    assert residual.config.hint_residual and residual.hint_version == 3
    plain = DiffusionRendererTransformer3DModel(**{**residual.config, "hint_residual": False}).eval()
    plain.load_state_dict(residual.state_dict())
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 192, 1, 4, 4, generator=g)
    condition = torch.randn(2, 9 * 193, 1, 4, 4, generator=g)
    base = condition[:, -193:-1]  # the hint's latent, before its mask channel
    sigma = torch.tensor([0.7, 30.0]).view(-1, 1, 1, 1, 1)
    t = c_noise(sigma.flatten())
    with torch.no_grad():
        ours = residual(c_in(sigma) * x, t, latent_condition=condition).sample
        net = plain(c_in(sigma) * (x - base), t, latent_condition=condition).sample  # the network on x - base
    denoised = c_skip(sigma) * x + c_out(sigma) * ours
    expected = base + c_skip(sigma) * (x - base) + c_out(sigma) * net
    assert torch.allclose(denoised, expected, atol=1e-4)
    with torch.no_grad():  # guidance's unconditional branch (a zero condition) is the plain network
        assert torch.allclose(
            residual(x, t, latent_condition=condition * 0).sample,
            plain(x, t, latent_condition=condition * 0).sample,
            atol=1e-5,
        )
    with pytest.raises(ValueError, match="hint_residual needs a shading hint"):
        DiffusionRendererTransformer3DModel(**{**residual.config, "shading_hint": 0})


def test_adapted_residual_model_renders_the_hint() -> None:
    from diffusion_renderer.models.specs import load_model
    from diffusion_renderer.pipelines.pipeline_forward_rendering import ForwardRenderingPipeline
    from diffusion_renderer.training.trainer import TrainConfig, adapt_to_config

    model = load_model("random:forward-medium-hint", "forward")
    hint_model = model.transformer
    residual = adapt_to_config(hint_model, TrainConfig(role="forward", model_config="medium-residual"))
    assert residual.config.hint_residual and residual.hint_version == 3
    assert residual.proj_out.weight.abs().sum() == 0
    trunk = {k: v for k, v in hint_model.state_dict().items() if not k.startswith("proj_out.")}
    assert all(torch.equal(residual.state_dict()[k], v) for k, v in trunk.items())
    pipe = ForwardRenderingPipeline.from_model(model)
    pipe.transformer = residual.eval()
    gbuffers = random_gbuffers(7)
    raw = smooth_panorama(4)
    # one step from sigma_max: D = hint + c_skip(80) (x_T - hint), c_skip(80) = 4e-5. (More steps would sample
    # hint + N(0, sigma_data^2): a zero network is the prior that the residual is that Gaussian.)
    image = pipe(
        {k: v.numpy() for k, v in gbuffers.items()},
        raw.numpy(),
        num_inference_steps=1,
        processing_resolution=SIZE,
        progress=False,
    ).images[0]
    hint = display_rgb(
        shading_hint(gbuffers, process_environment_map(raw, SIZE, SIZE, method="area").env_hdr, version=3)
    )  # the lighting as the pipeline projects it for a model with the hint
    assert np.abs(image - hint.numpy()).max() < 0.02


def plane_depth(fov_deg: float, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The tilted ground plane of :func:`plane_gbuffers`: its unit normal (3,) and each pixel's planar depth (H, W)
    (negative above the horizon)."""
    from diffusion_renderer.render.splitsum import camera_rays

    rays = camera_rays(size, size, fov_deg).double()
    rays = rays / -rays[..., 2:]  # (x t, y t, -1): planar depth z gives the point z * ray
    normal = torch.nn.functional.normalize(torch.tensor([0.1, 1.0, 0.35], dtype=torch.float64), dim=0)
    offset = float(normal @ torch.tensor([0.0, -1.0, -3.0], dtype=torch.float64))  # the plane through (0, -1, -3)
    return normal, offset / (rays @ normal)


def plane_gbuffers(fov_deg: float, size: int = 64, bumps: float = 0.0) -> dict[str, torch.Tensor]:
    """A tilted ground plane seen by a camera of ``fov_deg`` (sky above the horizon): (1, H, W, C) normals and
    normalised depth, the normals perturbed by up to ``bumps`` (a normal map's detail, which the fit averages)."""
    from diffusion_renderer.conventions import normalize_depth

    normal, z = plane_depth(fov_deg, size)
    ground = (z > 0) & (z < 60)
    g = torch.Generator().manual_seed(0)
    normals = normal.expand(size, size, 3) + bumps * torch.randn(size, size, 3, generator=g, dtype=torch.float64)
    normals = torch.nn.functional.normalize(normals, dim=-1) * ground[..., None]
    depth = normalize_depth(torch.where(ground, z, torch.ones_like(z)), ground)
    return {"normal": normals[None].float(), "depth": depth[None, ..., None].float()}


@pytest.mark.parametrize("fov", [32.0, 55.0])
def test_field_of_view_is_read_off_the_dominant_plane(fov: float) -> None:
    from diffusion_renderer.render.hint import DEFAULT_FOV_DEG, estimate_fov, hint_camera

    flat = plane_gbuffers(fov)
    assert abs(estimate_fov(flat["normal"][0], flat["depth"][0]) - fov) < 0.5
    bumpy = plane_gbuffers(fov, bumps=0.1)  # a normal map: the per-pixel normals are off by ~10 degrees
    assert abs(hint_camera(bumpy, 3).fov_deg - fov) < 1.5
    assert hint_camera(bumpy, 2).fov_deg == DEFAULT_FOV_DEG  # versions 1-2 keep the fixed camera
    g = torch.Generator().manual_seed(1)
    noisy = flat["depth"] + 0.02 * torch.randn(flat["depth"].shape, generator=g)  # a predicted depth's noise
    assert estimate_fov(flat["normal"][0], noisy[0]) is None  # a poor fit keeps the fixed camera
    sky = {k: v * 0 for k, v in flat.items()}  # no surface: no estimate, the fixed camera
    assert estimate_fov(sky["normal"][0], sky["depth"][0]) is None and hint_camera(sky, 3).fov_deg == DEFAULT_FOV_DEG


@pytest.mark.parametrize("fov", [32.0, 55.0])
def test_the_plane_fit_recovers_the_depths_offset(fov: float) -> None:
    """``plane_fit`` gives t and b t of d = a z + b: d - b is then the planar depth up to one scale (what a
    screen-space shadow test needs), where the depth normalisation left it unclipped."""
    from diffusion_renderer.render.hint import plane_fit

    flat = plane_gbuffers(fov)
    t, offset_times_t = plane_fit(flat["normal"][0], flat["depth"][0])
    assert t == pytest.approx(math.tan(math.radians(fov) / 2), rel=0.01)
    _, z = plane_depth(fov, 64)
    d = flat["depth"][0, ..., 0].double()
    unclipped = (z > 0) & (z < 60) & (d.abs() < 0.99)
    ratio = (d - offset_times_t / t)[unclipped] / z[unclipped]
    assert float(ratio.std() / ratio.mean()) < 0.01 and float(ratio.mean()) > 0


@pytest.mark.parametrize("fov", [32.0, 55.0])
def test_a_known_camera_is_seen_through_the_padding(fov: float) -> None:
    from diffusion_renderer.render.hint import DEFAULT_FOV_DEG, estimate_fov, hint_camera, padded_fov

    frame = plane_gbuffers(fov, size=96)
    content = {k: v[:, 24:72] for k, v in frame.items()}  # the centre half: what a 96-row frame pads back to 96
    inner = estimate_fov(content["normal"][0], content["depth"][0])
    assert inner is not None and inner < fov - 10  # the content alone is seen through a narrower angle
    assert abs(padded_fov(inner, 48, 96) - fov) < 0.05 and padded_fov(fov, 96, 96) == pytest.approx(fov)
    assert hint_camera(content, 3, known_fov=inner).fov_deg == inner  # a known camera wins over the estimate
    # models trained on the fixed camera keep it
    assert hint_camera(content, 2, known_fov=inner).fov_deg == DEFAULT_FOV_DEG


def test_shards_store_the_hint_through_the_fixed_camera_too() -> None:
    """The data engine stores each clip's hint twice: through the camera read off its G-buffers, and through the
    fixed camera (no shadows) that inference falls back to (what the forward trainer mixes in)."""
    from diffusion_renderer.data.shards import FIXED_CAMERA_HINT, encode_clip
    from diffusion_renderer.render.hint import HINT_VERSION, HintCamera, hint_camera

    frames = plane_gbuffers(55.0)  # (1, 64, 64, C)
    ground = frames["normal"].norm(dim=-1, keepdim=True) > 0.5
    frames |= {"basecolor": torch.full((1, 64, 64, 3), 0.6), "roughness": torch.full((1, 64, 64, 1), 0.4)}
    frames["metallic"] = torch.zeros(1, 64, 64, 1)
    env_hdr = process_environment_map(smooth_panorama(1), 64, 64).env_hdr  # (1, 64, 64, 3)
    camera = hint_camera(frames, HINT_VERSION)
    assert abs(camera.fov_deg - 55.0) < 1.5 and camera.depth_offset is not None  # read off the G-buffers
    stored = encode_clip(np.ones((1, 64, 64, 3)), {**frames, "mask": ground.float()}, env_hdr)
    for key, seen in (("shading", camera), (FIXED_CAMERA_HINT, HintCamera())):
        hint = shading_hint(frames, env_hdr, HINT_VERSION, seen)[0].permute(2, 0, 1)  # (3, H, W)
        assert torch.allclose(stored[f"{key}_linear"][0].float(), hint, rtol=2e-3, atol=1e-4), key
    own, fixed = stored["shading_linear"].float(), stored[f"{FIXED_CAMERA_HINT}_linear"].float()
    assert (own - fixed).abs().mean() > 0.01 * own.mean()  # the cameras differ, so do the hints


def test_pipeline_shades_the_hint_with_a_known_camera(monkeypatch: pytest.MonkeyPatch) -> None:
    import math

    import diffusion_renderer.render.hint as hint_module
    from diffusion_renderer.models.specs import load_model
    from diffusion_renderer.pipelines.pipeline_forward_rendering import ForwardRenderingPipeline

    pipe = ForwardRenderingPipeline.from_model(load_model("random:forward-medium-residual", "forward"))
    wide = {k: torch.cat([v, v], dim=2).numpy() for k, v in random_gbuffers(4).items()}  # (1, 48, 96, C)
    raw = smooth_panorama(3).numpy()
    cameras: list[float] = []
    real = hint_module.shading_hint

    def recorded(gbuffers, env_hdr, version, camera):
        cameras.append(camera.fov_deg)
        return real(gbuffers, env_hdr, version, camera)

    monkeypatch.setattr(hint_module, "shading_hint", recorded)
    kwargs = {"num_inference_steps": 1, "generator": None, "progress": False, "processing_resolution": (96, 96)}
    known = pipe(wide, raw, fov_deg=30.0, **kwargs).images[0]
    assert known.shape == (1, 48, 96, 3)
    # the 48-row content is padded to 96 rows: the frame's vertical angle is wider than the camera's
    assert cameras[-1] == pytest.approx(math.degrees(2 * math.atan(math.tan(math.radians(15.0)) * 2)))
    assert not np.allclose(pipe(wide, raw, fov_deg=70.0, **kwargs).images[0], known)  # the camera changes the hint
    with pytest.raises(ValueError, match=r"field of view must be in \(0, 180\)"):
        pipe(wide, raw, fov_deg=180.0, **kwargs)


def test_gaussian_blur_keeps_constants_and_spreads_an_impulse_by_sigma() -> None:
    from diffusion_renderer.pipelines.image_processor import gaussian_blur

    flat = torch.full((1, 3, 2, 20, 24), 0.3)
    assert torch.allclose(gaussian_blur(flat, 2.0), flat)  # edges replicated: no darkening at the border
    impulse = torch.zeros(1, 1, 1, 41, 41)
    impulse[..., 20, 20] = 1.0
    spread = gaussian_blur(impulse, 2.0)[0, 0, 0]
    offsets = torch.arange(41.0) - 20
    assert spread.sum() == pytest.approx(1.0, abs=1e-5) and torch.allclose(spread, spread.T, atol=1e-7)
    variance = float((spread.sum(1) * offsets**2).sum())  # the row marginal's second moment
    assert variance == pytest.approx(4.0, rel=0.02)


def test_smoothing_keeps_the_hint_and_evens_out_a_blocky_correction() -> None:
    from diffusion_renderer.pipelines.image_processor import smooth_correction

    g = torch.Generator().manual_seed(0)
    hint = torch.rand(1, 3, 3, 32, 32, generator=g)  # full-resolution detail
    blocks = torch.rand(1, 3, 2, 4, 4, generator=g).repeat_interleave(8, -1).repeat_interleave(8, -2)  # 8x8 tiles
    out = smooth_correction(hint[:, :, :2] + 0.5, hint, 2.0)  # a constant correction; the hint has one frame more
    assert torch.allclose(out, hint[:, :, :2] + 0.5, atol=1e-6)  # the hint's detail passes untouched
    smoothed = smooth_correction(hint[:, :, :2] + blocks, hint, 2.0) - hint[:, :, :2]

    def border_jump(video: torch.Tensor) -> float:  # mean step across the 8x8 block borders
        return float((video[..., 8::8] - video[..., 7:-1:8]).abs().mean())

    assert border_jump(smoothed) < 0.5 * border_jump(blocks)
    assert smoothed.mean() == pytest.approx(float(blocks.mean()), abs=0.01)  # smoothed, not dimmed


def test_pipeline_smooths_a_residual_models_correction_and_nothing_else() -> None:
    from diffusion_renderer.models.specs import load_model
    from diffusion_renderer.pipelines.pipeline_forward_rendering import ForwardRenderingPipeline
    from diffusion_renderer.training.trainer import TrainConfig, adapt_to_config

    model = load_model("random:forward-medium-hint", "forward")
    gbuffers = {k: v.numpy() for k, v in random_gbuffers(3).items()}
    raw = smooth_panorama(2).numpy()

    def render(pipe: ForwardRenderingPipeline, blur: float | None) -> np.ndarray:
        kwargs = {"num_inference_steps": 1, "processing_resolution": SIZE, "progress": False}
        generator = torch.Generator().manual_seed(0)
        return pipe(gbuffers, raw, correction_blur=blur, generator=generator, **kwargs).images[0]

    plain = ForwardRenderingPipeline.from_model(model)  # hint model, not residual: its output is not hint + delta
    assert plain.correction_sigma(None) == 0.0 and np.array_equal(render(plain, None), render(plain, 3.0))
    residual = adapt_to_config(model.transformer, TrainConfig(role="forward", model_config="medium-residual"))
    torch.nn.init.normal_(residual.proj_out.weight, std=0.05)  # a trained model's correction is not zero
    pipe = ForwardRenderingPipeline.from_model(model)
    pipe.transformer = residual.eval()
    assert pipe.correction_sigma(None) == 2.0 and pipe.correction_sigma(0) == 0.0
    rough, smooth = render(pipe, 0), render(pipe, None)
    assert np.array_equal(smooth, render(pipe, 2.0)) and not np.allclose(rough, smooth, atol=1e-3)
    detail = [float(np.abs(np.diff(x, axis=1)).mean()) for x in (rough, smooth)]
    assert detail[1] < detail[0]  # the correction's pixel-to-pixel steps are smoothed away
    with pytest.raises(ValueError, match="correction_blur must be a finite number of pixels >= 0, got -1"):
        render(pipe, -1.0)


def test_correction_strength_benchmark_scores_the_hint_the_model_is_given() -> None:
    """`benchmarks/correction_strength.py`'s alpha = 0 must be the residual model's own hint: a residual model with a
    zero output projection renders exactly its hint at one step, and the benchmark's stages must agree with it."""
    import sys
    from pathlib import Path

    from diffusion_renderer.models.specs import load_model
    from diffusion_renderer.pipelines.pipeline_forward_rendering import ForwardRenderingPipeline
    from diffusion_renderer.training.trainer import TrainConfig, adapt_to_config

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import correction_strength

    model = load_model("random:forward-medium-hint", "forward")
    pipe = ForwardRenderingPipeline.from_model(model)
    pipe.transformer = adapt_to_config(model.transformer, TrainConfig(role="forward", model_config="medium-residual"))
    gbuffers = {k: v.numpy() for k, v in random_gbuffers(4).items()}
    raw = smooth_panorama(3).numpy()
    # seeded: c_skip at sigma 80 lets 4e-5 of the noise through, 1.0-1.7e-3 at most over 12 seeds, and an unseeded
    # draw once reached 2.02e-3
    generator = torch.Generator().manual_seed(0)
    options = {"num_inference_steps": 1, "processing_resolution": 0, "progress": False, "generator": generator}
    rendered = pipe(gbuffers, raw, **options).images[0]
    hint = correction_strength.render_hint(pipe, gbuffers, raw)
    assert hint.shape == rendered.shape == (1, SIZE, SIZE, 3) and hint.std() > 0.01
    np.testing.assert_allclose(hint, rendered, atol=2e-3)


def test_correction_strength_summary_picks_the_best_alpha_and_charts_it(tmp_path) -> None:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import correction_strength

    alphas = [0.0, 0.5, 1.0]
    rows = [  # two lights that want different alphas; the whole set follows the mean
        {"clip": f"c{i}", "light": light, "psnr": psnr, "psnr_fg": psnr}
        for i, (light, psnr) in enumerate([("a", [20.0, 22.0, 21.0]), ("a", [20.0, 23.0, 22.0]), ("b", [18, 19, 24])])
    ]
    for row, gain in zip(rows, (0.2, -0.2, 0.5), strict=True):  # light a: no bias, 0.2 stops off either way
        row["exposure"] = {"hint_log2_gain": 0.1, "model_log2_gain": gain, "hint_psnr_exposure": 20.0}
        row["exposure"]["model_psnr_exposure"] = 21.0
    summary = correction_strength.summary(rows, alphas)
    assert summary["by_light"]["a"]["best_alpha"] == 0.5 and summary["by_light"]["b"]["best_alpha"] == 1.0
    assert summary["psnr"] == pytest.approx([58 / 3, 64 / 3, 67 / 3], abs=1e-3) and summary["best_alpha"] == 1.0
    exposure = summary["by_light"]["a"]["exposure"]
    assert exposure["model_log2_gain"] == 0.0 and exposure["model_abs_log2_gain"] == 0.2
    assert summary["exposure"]["model_log2_gain"] == pytest.approx(0.5 / 3, abs=1e-3)
    assert summary["exposure"]["hint_abs_log2_gain"] == 0.1 and summary["exposure"]["model_psnr_exposure"] == 21.0
    record = {"alphas": alphas, "sets": {"set": {"label": "a set", "summary": summary, "clips": rows}}}
    correction_strength.draw_chart(record, tmp_path / "chart.png")
    assert (tmp_path / "chart.png").stat().st_size > 1000


def test_correction_strength_follow_error_is_zero_for_a_frame_that_follows_the_light() -> None:
    import sys
    from pathlib import Path

    from diffusion_renderer.conventions import linear_to_srgb, srgb_to_linear

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import correction_strength

    base = np.random.default_rng(0).uniform(0.05, 0.7, (1, 16, 16, 3))  # sRGB
    for stops in (-1.0, 1.0):
        follows = linear_to_srgb(np.clip(srgb_to_linear(base) * 2.0**stops, 0, 1))
        assert correction_strength.follow_error(follows, base, stops) == pytest.approx(0.0, abs=1e-9)
        assert correction_strength.follow_error(base, base, stops) == pytest.approx(stops)  # ignores the change
    clipped = base.copy()
    clipped[0, :4] = 1.0  # a clipped row says nothing about the exposure, in either frame
    follows = linear_to_srgb(srgb_to_linear(base) * 0.5)
    assert correction_strength.follow_error(follows, clipped, -1.0) == pytest.approx(0.0, abs=1e-9)
    assert correction_strength.follow_error(clipped, base, 0.0) == pytest.approx(0.0, abs=1e-9)


def pillar_scene(fov: float, size: int = 64) -> tuple[torch.Tensor, ...]:
    """:func:`plane_depth`'s ground with a pillar standing on it: planar depth (H, W) (1e3 on the sky), unit normals
    (H, W, 3), the ground and pillar masks (H, W)."""
    normal, z = plane_depth(fov, size)
    ground = (z > 0) & (z < 60)
    pillar = torch.zeros(size, size, dtype=torch.bool)
    pillar[20:44, 28:36] = True  # a box face toward the camera, in front of the ground it hides
    z = torch.where(ground, z, torch.full_like(z, 1e3)).float()
    z[pillar] = float(z[44, 32])  # the depth of the ground at its foot
    normals = normal.float().expand(size, size, 3).clone()
    normals[pillar] = torch.tensor([0.0, 0.0, 1.0])
    return z, normals, ground & ~pillar, pillar


HIGH_BEHIND = (0.0, 1.0, -1.5)  # a light high up, from beyond the ground: the pillar's shadow falls toward us


@pytest.mark.parametrize("fast", [False, True])
def test_shadow_factor_darkens_the_ground_behind_an_occluder_and_nothing_else(fast: bool) -> None:
    """An open ground plane is fully lit (seen at a grazing angle it must not shadow itself: a nearest-pixel depth
    read made it), and a pillar standing on it shades the ground on the side away from the light."""
    from diffusion_renderer.render.shadows import shadow_factor, shadow_factor_fast

    factor_of = shadow_factor_fast if fast else shadow_factor
    fov = 50.0
    z, normals, ground, pillar = pillar_scene(fov)
    light = torch.nn.functional.normalize(torch.tensor([HIGH_BEHIND]), dim=-1)
    open_ground = factor_of(torch.where(pillar, torch.full_like(z, 1e3), z), normals, ground, fov, light)
    assert float(open_ground.min()) > 0.99
    factor = factor_of(z, normals, ground | pillar, fov, light)
    foot = factor[46:56, 29:35]  # the ground in front of the pillar, toward the camera: its shadow
    beside = torch.cat([factor[46:56, 4:14], factor[46:56, 50:60]])
    assert float(foot.mean()) < 0.5 and float(beside.mean()) > 0.95
    assert torch.equal(factor[~(ground | pillar)], torch.ones_like(factor[~(ground | pillar)]))  # sky untouched


def test_light_directions_follow_the_power() -> None:
    """Directions are drawn by power (radiance x solid angle), the same on every call."""
    from diffusion_renderer.render.shadows import light_directions
    from diffusion_renderer.render.splitsum import equirect_directions, equirect_solid_angles

    directions = equirect_directions(32, 64)
    sun = torch.nn.functional.normalize(torch.tensor(HIGH_BEHIND), dim=0)
    radiance = 1 + 50 * torch.exp((directions @ sun - 1) / 0.01)  # (H, W): a sky and a sun
    drawn = light_directions(radiance[..., None].expand(-1, -1, 3), 64)
    assert drawn.shape == (64, 3) and torch.equal(drawn, light_directions(radiance[..., None].expand(-1, -1, 3), 64))
    power = radiance * equirect_solid_angles(32, 64)
    share = float((power * (directions @ sun > 0.9)).sum() / power.sum())  # of the power near the sun
    assert 0.2 < share < 0.8 and abs(float((drawn @ sun > 0.9).float().mean()) - share) < 0.05


def condition_with_light(toward: tuple[float, float, float], size: int = 32) -> torch.Tensor:
    """(1, size, 2 size, 3) camera-frame environment condition: a dim sky and a bright sun ``toward`` (camera
    frame), the inverse of ``equirect_from_condition`` up to its half-texel row shift."""
    from diffusion_renderer.render.splitsum import equirect_directions

    sun = torch.nn.functional.normalize(torch.tensor(toward), dim=0)
    cosine = equirect_directions(size, 2 * size) @ sun
    equirect = (0.3 + 300 * torch.exp((cosine - 1) / 0.005))[..., None].expand(-1, -1, 3)
    return equirect.roll(-size, dims=1).flip(1)[None].contiguous()


def test_version_4_hint_casts_the_shadows_its_camera_fit_allows() -> None:
    """Version 4 is version 3 times the shadow factor where the camera and depth offset are read off the G-buffers;
    where that fit is refused it is version 3 exactly."""
    from diffusion_renderer.conventions import normalize_depth
    from diffusion_renderer.render.hint import hint_camera

    fov = 50.0
    z, normals, ground, pillar = pillar_scene(fov)
    surface = ground | pillar
    frames = {
        "normal": (normals * surface[..., None])[None],
        "depth": normalize_depth(z, surface)[None, ..., None],
        "basecolor": torch.full((1, 64, 64, 3), 0.6),
        "roughness": torch.full((1, 64, 64, 1), 0.8),
        "metallic": torch.zeros(1, 64, 64, 1),
    }
    camera = hint_camera(frames, 4)
    assert abs(camera.fov_deg - fov) < 1.0 and camera.depth_offset is not None
    assert hint_camera(frames, 3).depth_offset is None  # version 3 never shadows
    unshadowed = hint_camera(frames, 4, fitted_shadows=False)  # predicted G-buffers: no offset from the fit
    assert unshadowed.fov_deg == camera.fov_deg and unshadowed.depth_offset is None
    assert hint_camera(frames, 4, known_fov=fov, fitted_shadows=False).depth_offset is not None  # a given camera
    env = condition_with_light(HIGH_BEHIND)
    v3, v4 = shading_hint(frames, env, 3)[0], shading_hint(frames, env, 4)[0]
    assert torch.equal(v4, shading_hint(frames, env, 4)[0])  # deterministic
    ratio = (v4 / v3.clamp(min=1e-6)).mean(-1)  # (H, W): the shadow factor
    assert float(ratio[46:56, 29:35].mean()) < 0.6 and float(ratio[46:56, 4:14].mean()) > 0.95
    assert float(ratio.max()) <= 1 + 1e-5 and torch.equal(v4[~surface], v3[~surface])  # the sky as it was
    g = torch.Generator().manual_seed(1)
    noisy = {**frames, "depth": frames["depth"] + 0.02 * torch.randn(frames["depth"].shape, generator=g)}
    refused = hint_camera(noisy, 4, known_fov=fov)  # a predicted depth's noise: no offset, no shadows
    assert refused.fov_deg == fov and refused.depth_offset is None
    assert torch.equal(shading_hint(noisy, env, 4, refused), shading_hint(noisy, env, 3, refused))


def test_version_5_hint_marches_a_finer_shadow_test(monkeypatch: pytest.MonkeyPatch) -> None:
    """Version 5 casts version 4's shadows with twice the light directions and twice the march's steps, and is
    version 3 exactly off the surfaces."""
    import diffusion_renderer.render.hint as hint_module
    from diffusion_renderer.conventions import normalize_depth

    z, normals, ground, pillar = pillar_scene(50.0)
    surface = ground | pillar
    frames = {"normal": (normals * surface[..., None])[None], "depth": normalize_depth(z, surface)[None, ..., None]}
    env = condition_with_light(HIGH_BEHIND)
    seen: list[tuple[int, int]] = []
    real_directions, real_factor = hint_module.light_directions, hint_module.shadow_factor_fast

    def directions(equirect: torch.Tensor, count: int) -> torch.Tensor:
        seen.append((count, 0))
        return real_directions(equirect, count)

    def factor(*args, **kwargs) -> torch.Tensor:
        seen[-1] = (seen[-1][0], args[-1])  # the march's steps, passed last
        return real_factor(*args, **kwargs)

    monkeypatch.setattr(hint_module, "light_directions", directions)
    monkeypatch.setattr(hint_module, "shadow_factor_fast", factor)
    v3, v4, v5 = (shading_hint(frames, env, version)[0] for version in (3, 4, 5))
    assert seen == [(32, 16), (64, 32)]
    ratio = (v5 / v3.clamp(min=1e-6)).mean(-1)  # (H, W): version 5's shadow factor
    assert float(ratio[46:56, 29:35].mean()) < 0.6 and float(ratio[46:56, 4:14].mean()) > 0.95
    assert torch.equal(v5[~surface], v3[~surface]) and not torch.equal(v5, v4)


def test_pipeline_casts_fitted_shadows_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    """``fitted_shadows=False`` drops the shadows of a camera read off the G-buffers (predicted ones, at
    relighting) and keeps those of a camera the caller gives."""
    import diffusion_renderer.render.hint as hint_module
    from diffusion_renderer.conventions import normalize_depth
    from diffusion_renderer.models.specs import load_model
    from diffusion_renderer.pipelines.pipeline_forward_rendering import ForwardRenderingPipeline

    pipe = ForwardRenderingPipeline.from_model(load_model("random:forward-medium-normalized", "forward"))
    assert pipe.shading_hint == 4
    fov = 50.0
    z, normals, ground, pillar = pillar_scene(fov)
    surface = ground | pillar
    gbuffers = {
        "normal": (normals * surface[..., None])[None].numpy(),
        "depth": normalize_depth(z, surface)[None, ..., None].numpy(),
        "basecolor": np.full((1, 64, 64, 3), 0.6, dtype=np.float32),
    }
    offsets: list[float | None] = []
    real = hint_module.shading_hint

    def recorded(frames, env_hdr, version, camera):
        offsets.append(camera.depth_offset)
        return real(frames, env_hdr, version, camera)

    monkeypatch.setattr(hint_module, "shading_hint", recorded)
    kwargs = {"num_inference_steps": 1, "progress": False, "processing_resolution": (64, 64)}
    raw = smooth_panorama(3).numpy()
    fitted = pipe(gbuffers, raw, **kwargs).images[0]
    assert offsets[-1] is not None  # the default: the fit's camera shadows the hint, as in training
    unshadowed = pipe(gbuffers, raw, fitted_shadows=False, **kwargs).images[0]
    assert offsets[-1] is None and not np.allclose(fitted, unshadowed)
    pipe(gbuffers, raw, fov_deg=fov, fitted_shadows=False, **kwargs)
    assert offsets[-1] is not None  # a known camera still shadows


@pytest.mark.parametrize("fov", [32.0, 55.0])
def test_the_plane_fit_with_a_known_camera_recovers_the_offset(fov: float) -> None:
    from diffusion_renderer.render.hint import plane_fit

    flat = plane_gbuffers(fov)
    t = math.tan(math.radians(fov) / 2)
    free, known = plane_fit(flat["normal"][0], flat["depth"][0]), plane_fit(flat["normal"][0], flat["depth"][0], t=t)
    assert known[0] == t and known[1] / t == pytest.approx(free[1] / free[0], abs=0.01)


# ------------------------------------------------------------------------------------------ exposure normalisation


def test_hint_level_scales_with_the_light_and_ignores_a_few_hot_pixels() -> None:
    from diffusion_renderer.render.hint import hint_level

    hints = torch.rand(3, 2, 32, 32, 3, generator=torch.Generator().manual_seed(0))  # (B, T, H, W, 3)
    level = hint_level(hints, channel_dim=-1)
    assert level.shape == (3,) and torch.allclose(hint_level(hints * 7.5, channel_dim=-1), level * 7.5)
    assert torch.allclose(hint_level(hints.movedim(-1, 2), channel_dim=2), level)  # the bank's (B, T, 3, H, W)
    hot = hints.clone()
    hot[0, 0, :2, :2] = 1e4  # a sun in the background: 4 of 2,048 pixels
    assert abs(float(hint_level(hot, channel_dim=-1)[0] / level[0]) - 1) < 0.02
    assert float(hot[0].mean() / hints[0].mean()) > 30  # which would set a plain mean


def test_normalizing_gain_dims_any_amount_and_brightens_at_most_one_stop() -> None:
    from diffusion_renderer.render.hint import MAX_EXPOSURE_GAIN, normalizing_gain

    gain = normalizing_gain(torch.tensor([2.0, 0.2, 0.15, 0.01, 0.0]), 0.2)
    assert torch.allclose(gain, torch.tensor([0.1, 1.0, 0.2 / 0.15, MAX_EXPOSURE_GAIN, MAX_EXPOSURE_GAIN]))


def test_scale_display_is_the_frame_of_scaled_radiance() -> None:
    from diffusion_renderer.conventions import scale_display

    radiance = torch.rand(4, 8, 8, 3, generator=torch.Generator().manual_seed(1)) * 0.9
    for factor in (0.25, 1.0, 3.0):
        assert torch.allclose(scale_display(display_rgb(radiance), factor), display_rgb(radiance * factor), atol=1e-5)


def test_a_normalising_model_follows_the_lights_strength_exactly() -> None:
    """The pipeline brings each light to the model's hint level and scales the frame back, so a light twice as
    strong renders a frame of twice the radiance (where neither is clipped), whatever the network does; the same
    network without the normalisation does not."""
    from diffusion_renderer.conventions import srgb_to_linear
    from diffusion_renderer.models.specs import load_model
    from diffusion_renderer.pipelines.pipeline_forward_rendering import ForwardRenderingPipeline

    model = load_model("random:forward-medium-normalized", "forward")
    torch.nn.init.normal_(model.transformer.proj_out.weight, std=0.05)  # a trained model's correction is not zero
    pipe = ForwardRenderingPipeline.from_model(model)
    gbuffers = {k: v.numpy() for k, v in random_gbuffers(3).items()}
    raw = smooth_panorama(2).numpy()
    gains: list[float] = []
    exposure_gain = pipe.exposure_gain
    pipe.exposure_gain = lambda hint, fit: gains.append(exposure_gain(hint, fit)) or gains[-1]

    def radiance(strength: float) -> np.ndarray:
        kwargs = {"num_inference_steps": 1, "processing_resolution": SIZE, "progress": False}
        frame = pipe(gbuffers, raw * strength, generator=torch.Generator().manual_seed(0), **kwargs).images[0]
        return srgb_to_linear(frame.astype(np.float64))

    def follow_error(low: np.ndarray, high: np.ndarray) -> float:
        seen = (high < 0.95) & (low > 1e-3)  # neither clipped nor black
        assert seen.mean() > 0.3
        return float(np.abs(np.log2(high[seen] / (2 * low[seen]))).max())

    low, high = radiance(1.0), radiance(2.0)
    assert pipe.exposure_level > 0 and max(gains) < 1 and gains[0] == pytest.approx(2 * gains[1], rel=1e-4)
    assert follow_error(low, high) < 0.01
    pipe.transformer.register_to_config(exposure_level=0.0)
    assert follow_error(radiance(1.0), radiance(2.0)) > 0.1 and gains[-1] == 1.0


def test_a_shadow_model_adapts_to_normalised_exposure_with_its_weights() -> None:
    from diffusion_renderer.models.configs import EXPOSURE_LEVEL
    from diffusion_renderer.models.specs import load_model
    from diffusion_renderer.training.trainer import TrainConfig, adapt_to_config

    shadow = load_model("random:forward-medium-shadow", "forward").transformer
    adapted = adapt_to_config(shadow, TrainConfig(role="forward", model_config="medium-normalized"))
    assert adapted.config.exposure_level == EXPOSURE_LEVEL and shadow.config.exposure_level == 0.0
    state = adapted.state_dict()
    assert all(torch.equal(value, state[key]) for key, value in shadow.state_dict().items())


def test_correction_strength_power_by_elevation_of_maps_and_procedural_lights() -> None:
    """The benchmark's elevation profile: a uniform map splits as the sphere's area does ((sin hi - sin lo) / 2),
    a procedural map's single lamp lands in its own band, and the analytic sky has none."""
    import sys
    from pathlib import Path

    from diffusion_renderer.data.scenes import LightingSpec

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import correction_strength

    edges = np.radians(correction_strength.ELEVATION_EDGES)
    area = (np.sin(edges[1:]) - np.sin(edges[:-1])) / 2
    np.testing.assert_allclose(correction_strength.power_by_elevation(np.ones((720, 1440, 3))), area, atol=0.002)

    def lamp(elevation: float) -> LightingSpec:
        rows = [[0.0] * 6, [30.0, elevation, 1.0, 50.0, 40.0, 30.0]]  # a black sky and one lamp
        return LightingSpec("procedural_night", "", 1.0, 0.0, [0.0], kind="procedural", procedural=rows)

    for elevation, band in ((-5.0, 0), (5.0, 1), (15.0, 2), (30.0, 3), (60.0, 4)):
        shares = correction_strength.light_power_by_elevation(lamp(elevation))
        assert shares[band] > 0.95 and sum(shares) == pytest.approx(1.0, abs=0.002)
    assert (
        correction_strength.light_power_by_elevation(LightingSpec("sunsky", "", 1.0, 0.0, [0.0], kind="sunsky"))
        is None
    )


def test_ground_light_versions_remove_or_flatten_the_ground_only() -> None:
    """`benchmarks/ground_light.py`'s map versions: the sky is untouched in all three, ``no_ground`` has no power
    below the horizon, and ``flat_ground`` keeps the ground's power (the elevation profile's first band) in one
    constant colour."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import correction_strength
    import ground_light

    rng = np.random.default_rng(0)
    equirect = rng.gamma(0.5, 2.0, size=(64, 128, 3)).astype(np.float32)  # a rough map with hot texels
    versions = ground_light.ground_versions(equirect)
    below = ground_light.below_horizon(64)
    assert below.sum() == 32 and not below[31] and below[32]
    for version in versions.values():
        np.testing.assert_array_equal(version[~below], equirect[~below])
    assert not versions["no_ground"][below].any()
    flat = versions["flat_ground"][below].reshape(-1, 3)
    np.testing.assert_allclose(flat, np.broadcast_to(flat[0], flat.shape))
    power = correction_strength.power_by_elevation
    assert power(versions["no_ground"])[0] == 0.0
    # ground power = share x total; the sky is the same, so equal shares mean equal ground power
    assert power(versions["flat_ground"])[0] == pytest.approx(power(equirect)[0], abs=0.002)
