"""Inverse and forward pipelines on the tiny random models: ranges, sizes, determinism, windows, batching."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from diffusion_renderer.conventions import CHANNELS, VALUE_RANGE, from_model, from_unit, to_model, to_unit
from diffusion_renderer.models.specs import load_model
from diffusion_renderer.pipelines.image_processor import DiffusionRendererImageProcessor, processing_size
from diffusion_renderer.pipelines.pipeline_forward_rendering import ForwardRenderingPipeline
from diffusion_renderer.pipelines.pipeline_inverse_rendering import InverseRenderingPipeline, soft_normalize
from diffusion_renderer.pipelines.sampling import ConditionInputs, sample_edm_euler, sample_edm_euler_windows
from diffusion_renderer.pipelines.windows import blend_frames, frame_weights, latent_weights, plan_windows

SMALL = (32, 48)
FAST = {"num_inference_steps": 2, "processing_resolution": SMALL, "progress": False}
FAST_RELIGHT = {"num_inference_steps": 2, "processing_resolution": SMALL}


@pytest.fixture(scope="module")
def inverse() -> InverseRenderingPipeline:
    return InverseRenderingPipeline.from_model(load_model("random:tiny", "inverse"))


@pytest.fixture(scope="module")
def forward() -> ForwardRenderingPipeline:
    return ForwardRenderingPipeline.from_model(load_model("random:tiny", "forward"))


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------------------ conventions


@pytest.mark.parametrize("key", ["basecolor", "normal", "depth", "roughness", "metallic", "env_ldr"])
def test_model_boundary_round_trip(key: str) -> None:
    lo, hi = VALUE_RANGE[key]
    x = torch.rand(1, CHANNELS[key], 2, 4, 4) * (hi - lo) + lo
    y = to_model(key, x)
    assert y.shape[1] == 3 and y.min() >= -1 and y.max() <= 1
    torch.testing.assert_close(from_model(key, y), x)
    torch.testing.assert_close(from_unit(key, to_unit(key, x)), x)


def test_soft_normalize_matches_official_rule() -> None:
    v = torch.tensor([[0.1, 0.0, 0.0], [0.3, 0.0, 0.0], [0.0, 0.6, 0.0]]).T.reshape(1, 3, 3)
    out = soft_normalize(v)
    torch.testing.assert_close(out[0, 0], torch.tensor([0.1, 0.65, 0.0]))  # untouched, half-blended, (y) unit
    assert out[0, 1, 2] == pytest.approx(1.0)


# ------------------------------------------------------------------------------------------- image processor


@pytest.mark.parametrize(("size", "expected"), [((400, 600), (704, 1280)), ((600, 400), (1280, 704))])
def test_processing_size_follows_orientation(size, expected) -> None:
    assert processing_size(*size) == expected


def test_processing_size_longest_side_and_limits() -> None:
    assert processing_size(400, 600, 96) == (64, 96)
    assert processing_size(33, 50, 0) == (48, 64)
    with pytest.raises(ValueError, match="multiples of 16"):
        processing_size(400, 600, (100, 200))


@pytest.mark.parametrize(("height", "width"), [(50, 70), (70, 50), (1, 1), (32, 48)])
def test_fit_pads_without_stretching_and_restores(height: int, width: int) -> None:
    proc = DiffusionRendererImageProcessor()
    plan = proc.plan(height, width, SMALL)
    frames = torch.rand(2, 3, height, width)
    fitted = proc.preprocess(frames, plan)
    assert tuple(fitted.shape[-2:]) == plan.processing_size
    content_h, content_w = plan.resized_size
    assert abs(content_h / content_w - height / width) <= 1.0 / min(content_h, content_w) + 1e-6  # aspect kept
    mask = proc.padding_mask(plan)
    if mask is not None:
        assert mask.sum() == plan.processing_size[0] * plan.processing_size[1] - content_h * content_w
    assert tuple(proc.postprocess(fitted, plan).shape[-2:]) == (height, width)


def test_stretch_is_the_official_resize() -> None:
    plan = DiffusionRendererImageProcessor().plan(50, 70, SMALL, "stretch")
    assert plan.resized_size == plan.processing_size and not any(plan.padding)


def test_to_frames_accepts_the_usual_inputs() -> None:
    from PIL import Image

    proc = DiffusionRendererImageProcessor
    u8 = (np.random.rand(5, 7, 3) * 255).astype(np.uint8)
    assert proc.to_frames(Image.fromarray(u8)).shape == (1, 3, 5, 7)
    torch.testing.assert_close(proc.to_frames(u8), proc.to_frames(Image.fromarray(u8)))
    assert proc.to_frames([u8, u8]).shape == (2, 3, 5, 7)
    assert proc.to_frames(torch.rand(3, 5, 7)).shape == (1, 3, 5, 7)
    rgba = np.zeros((2, 2, 4), np.float32)  # fully transparent -> white, as official
    assert proc.to_frames(rgba).min() == 1.0
    with pytest.raises(ValueError, match="share"):
        proc.to_frames([u8, u8[:4]])


# ---------------------------------------------------------------------------------------------------- windows


def test_window_plans() -> None:
    assert plan_windows(1).starts == (0,) and plan_windows(1).window_frames == 1
    short = plan_windows(20, 57)
    assert short.window_frames == 25 and short.num_windows == 1  # shortest 1 + 8k holding the clip
    blend = plan_windows(130, 57, "blend", 2)
    assert blend.starts == (0, 40, 80) and blend.padded_frames == 137 and blend.output_frames == 130
    assert plan_windows(130, 57, "all").starts == (0, 57, 114)
    assert plan_windows(130, 57, "first").output_frames == 57
    assert plan_windows(5, 1).mode == "all" and plan_windows(5, 1).num_windows == 5
    with pytest.raises(ValueError, match="1 \\+ 8k"):
        plan_windows(30, 20)
    with pytest.raises(ValueError, match="overlap"):
        plan_windows(60, 17, "blend", 2)


def test_overlap_weights_sum_to_one() -> None:
    plan = plan_windows(60, 25, "blend", 1)
    latent_total = torch.zeros(plan.global_latents, dtype=torch.float64)
    frame_total = torch.zeros(plan.padded_frames, dtype=torch.float64)
    for w in range(plan.num_windows):
        start = plan.latent_start(w)
        latent_total[start : start + plan.window_latents] += latent_weights(plan, w)
        frame_total[plan.starts[w] : plan.starts[w] + plan.window_frames] += frame_weights(plan, w)
        assert w == 0 or latent_weights(plan, w)[0] == 0  # the one-frame latent 0 is not shared
    torch.testing.assert_close(latent_total, torch.ones_like(latent_total))
    torch.testing.assert_close(frame_total, torch.ones_like(frame_total))


def test_blend_frames_is_exact_on_a_consistent_clip() -> None:
    plan = plan_windows(40, 17, "blend", 1)
    clip = torch.rand(1, 3, plan.padded_frames, 2, 2)
    windows = [clip[:, :, s : s + plan.window_frames] for s in plan.starts]
    torch.testing.assert_close(blend_frames(plan, windows), clip[:, :, :40])


def test_windowed_sampler_agrees_on_shared_latents(inverse) -> None:
    net = inverse.transformer
    plan = plan_windows(25, 17, "blend", 1)  # 2 windows of 3 latents, 2 shared
    shape = (1, 16, plan.window_latents, 4, 6)
    conditions = [
        ConditionInputs(torch.randn(shape, generator=seeded(w)), context_index=torch.tensor([[0]]))
        for w in range(plan.num_windows)
    ]
    first, second = sample_edm_euler_windows(net, conditions, plan, shape, num_inference_steps=3, generator=seeded())
    s = plan.stride_latents
    torch.testing.assert_close(first[:, :, s + 1 :], second[:, :, 1 : plan.window_latents - s])


def test_independent_windows_are_the_official_sampler(inverse) -> None:
    net = inverse.transformer
    plan = plan_windows(3, 1)  # three 1-frame windows, each sampled on its own
    shape = (1, 16, 1, 4, 6)
    condition = ConditionInputs(torch.randn(shape, generator=seeded(1)), context_index=torch.tensor([[3]]))
    noise = torch.randn(1, 16, 3, 4, 6, generator=seeded(2))
    samples = sample_edm_euler_windows(net, [condition] * 3, plan, shape, num_inference_steps=3, noise=noise)
    reference = sample_edm_euler(net, condition, shape, num_inference_steps=3, noise=noise[:, :, 1:2])
    torch.testing.assert_close(samples[1], reference)


# -------------------------------------------------------------------------------------------------- inverse


def test_inverse_ranges_channels_and_input_size(inverse) -> None:
    image = np.random.default_rng(0).random((50, 70, 3), dtype=np.float32)
    out = inverse(image, generator=seeded(), **FAST)
    assert set(out.gbuffers) == {"basecolor", "normal", "depth", "roughness", "metallic"}
    for name, value in out.gbuffers.items():
        assert value.shape == (1, 50, 70, CHANNELS[name]), name
        lo, hi = VALUE_RANGE[name]
        assert value.min() >= lo and value.max() <= hi, name
        assert np.isfinite(value).all()


def test_inverse_same_seed_same_output_and_batching_invariance(inverse) -> None:
    image = np.random.default_rng(1).random((32, 48, 3), dtype=np.float32)
    passes = ["basecolor", "normal", "depth"]
    a = inverse(image, passes=passes, generator=seeded(3), pass_batch_size=3, **FAST).gbuffers
    b = inverse(image, passes=passes, generator=seeded(3), pass_batch_size=1, **FAST).gbuffers
    c = inverse(image, passes=passes, generator=seeded(4), pass_batch_size=3, **FAST).gbuffers
    for name in passes:
        np.testing.assert_allclose(a[name], b[name], atol=1e-5)  # batching the passes changes nothing
        assert not np.allclose(a[name], c[name], atol=1e-3)  # another seed, another sample


def pan(frames: int, size=(32, 48)) -> np.ndarray:
    base = np.random.default_rng(2).random((*size, 3), dtype=np.float32)
    return np.stack([np.roll(base, t, axis=1) for t in range(frames)])  # (T, h, w, 3): a slow pan


def steps_of(frames: np.ndarray) -> np.ndarray:
    return np.abs(np.diff(frames, axis=0)).mean(axis=(1, 2, 3))  # (T - 1,) mean change frame t -> t + 1


def test_inverse_video_two_windows_have_no_seam(inverse) -> None:
    """Blended windows: the change across the seam stays within the change between frames of one window."""
    out = inverse(pan(25), passes=["basecolor"], num_frames=17, overlap_latents=1, generator=seeded(), **FAST)
    frames = out.gbuffers["basecolor"]
    assert frames.shape == (25, 32, 48, 3)
    step = steps_of(frames)
    plan = plan_windows(25, 17, "blend", 1)
    seam = range(plan.starts[1] - 1, plan.window_frames)  # transitions around and inside the overlap
    inside = [step[t] for t in range(len(step)) if t not in seam]
    assert max(step[t] for t in seam) <= max(inside) * 1.05


# -------------------------------------------------------------------------------------------------- forward


def gbuffers_of(size=(40, 60), frames: int | None = None) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    shape = (frames,) if frames else (1,)
    normal = rng.normal(size=(*shape, *size, 3)).astype(np.float32)
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
    return {
        "basecolor": rng.random((*shape, *size, 3), dtype=np.float32),
        "normal": normal,
        "depth": rng.random((*shape, *size, 1), dtype=np.float32) * 2 - 1,
        "roughness": rng.random((*shape, *size, 1), dtype=np.float32),
    }


def test_forward_lightings_sizes_and_determinism(forward) -> None:
    hdr = np.random.default_rng(4).random((16, 32, 3), dtype=np.float32) * 10
    kwargs = {**FAST, "envmap_method": "direct"}
    out = forward(gbuffers_of(), [hdr, None], generator=seeded(), **kwargs)
    assert len(out.images) == 2
    for image in out.images:
        assert image.shape == (1, 40, 60, 3) and image.min() >= 0 and image.max() <= 1
    again = forward(gbuffers_of(), [hdr, None], generator=seeded(), **kwargs)
    np.testing.assert_array_equal(out.images[0], again.images[0])
    assert not np.allclose(out.images[0], out.images[1])  # the env map conditions the result


def test_forward_missing_keys_get_zero_latent_and_mask(forward, monkeypatch) -> None:
    seen = {}

    def spy(latents, keys, latent_shape, **kw):
        seen.update({k: latents.get(k) is not None for k in keys})
        from diffusion_renderer.pipelines.conditions import assemble_latent_condition

        return assemble_latent_condition(latents, keys, latent_shape, **kw)

    monkeypatch.setattr("diffusion_renderer.pipelines.pipeline_forward_rendering.assemble_latent_condition", spy)
    forward({"basecolor": gbuffers_of()["basecolor"]}, None, generator=seeded(), **FAST)
    assert seen == {k: k == "basecolor" for k in seen} and len(seen) == 8


def test_forward_rejects_mismatched_gbuffers(forward) -> None:
    bad = gbuffers_of()
    bad["normal"] = bad["normal"][:, :20]
    with pytest.raises(ValueError, match="differ"):
        forward(bad, None, **FAST)
    with pytest.raises(ValueError, match="unknown G-buffer"):
        forward({"albedo": bad["basecolor"]}, None, **FAST)


def test_forward_rotating_light_over_a_fixed_frame(forward) -> None:
    hdr = np.zeros((16, 32, 3), np.float32)
    hdr[4:6, 2:4] = 500.0  # one bright light
    out = forward(
        gbuffers_of(frames=9),
        hdr,
        rotate_light=True,
        fixed_frame=0,
        num_frames=9,
        envmap_method="direct",
        generator=seeded(),
        **FAST,
    )
    assert out.images[0].shape == (9, 40, 60, 3)


@pytest.mark.parametrize("role", ["inverse", "forward"])
def test_offloaded_weights_give_the_same_result(role: str) -> None:
    """accelerate's cpu_offload (what diffusers' sequential offload installs): weights on "meta" until used."""
    from accelerate import cpu_offload

    pipe_cls = InverseRenderingPipeline if role == "inverse" else ForwardRenderingPipeline
    pipe = pipe_cls.from_model(load_model("random:tiny", role))
    image = np.random.default_rng(6).random((32, 48, 3), dtype=np.float32)
    inputs = image if role == "inverse" else {"basecolor": image}

    def render() -> np.ndarray:
        out = pipe(inputs, generator=seeded(), **FAST)
        return out.gbuffers["normal"] if role == "inverse" else out.images[0]

    reference = render()
    for module in (pipe.transformer, pipe.vae):
        cpu_offload(module, execution_device=torch.device("cpu"))
    assert pipe.transformer.device.type == "meta"
    np.testing.assert_array_equal(render(), reference)


def test_components_are_what_diffusers_offloading_manages(inverse) -> None:
    assert set(inverse.components) == {"transformer", "vae", "scheduler"}
    assert inverse.tokenizer.vae is inverse.vae  # the tokenizer wraps the registered network, not a copy
    with pytest.raises(ValueError, match="cannot run inverse"):
        InverseRenderingPipeline.from_model(load_model("random:tiny", "forward"))


def test_relight_app_composes_the_pipelines(inverse, forward) -> None:
    from diffusion_renderer.apps.relight import relight

    image = np.random.default_rng(7).random((40, 30, 3), dtype=np.float32)  # portrait
    hdr = np.random.default_rng(8).random((16, 32, 3), dtype=np.float32)
    out = relight(inverse, forward, image, [hdr, None], seed=3, num_inference_steps=2, processing_resolution=SMALL)
    assert set(out.gbuffers) == {"basecolor", "normal", "metallic", "roughness", "depth"}
    assert [im.shape for im in out.images] == [(1, 40, 30, 3)] * 2
    again = relight(inverse, forward, image, [hdr, None], seed=3, num_inference_steps=2, processing_resolution=SMALL)
    np.testing.assert_array_equal(out.images[1], again.images[1])
    assert out.light_strengths == [1.0, 1.0]

    def render(*envmaps):  # the forward pipeline alone, on the same G-buffers and seed
        generator = torch.Generator().manual_seed(3)
        options = {"num_inference_steps": 2, "processing_resolution": SMALL}
        return forward(out.gbuffers, list(envmaps), generator=generator, **options).images

    np.testing.assert_array_equal(out.images[0], render(hdr)[0])  # the map as given
    stronger = relight(inverse, forward, image, [hdr], seed=3, light_strength=2, **FAST_RELIGHT)
    assert stronger.light_strengths == [2.0]
    np.testing.assert_array_equal(stronger.images[0], render(hdr * 2)[0])
    with pytest.raises(ValueError, match="random lighting"):
        relight(inverse, forward, image, [hdr, None], light_strength="auto", **FAST_RELIGHT)
    with pytest.raises(ValueError, match="light strength must be"):
        relight(inverse, forward, image, [hdr], light_strength=-1, **FAST_RELIGHT)
    with pytest.raises(TypeError, match="unexpected"):
        relight(inverse, forward, image, None, passes=["normal"])


def test_ensemble_combines_members_per_pixel() -> None:
    members = torch.tensor([0.1, 0.9, 0.4]).view(3, 1, 1, 1, 1).expand(3, 2, 1, 2, 2)  # (E, N, C, h, w)
    combined, spread = InverseRenderingPipeline.ensemble("roughness", members)
    assert torch.allclose(combined, torch.full((2, 1, 2, 2), 0.4))  # the median, not the mean (0.467)
    assert torch.allclose(spread, members.std(0, correction=0))
    tilt = torch.tensor([[0.0, 0.6, 0.8], [0.0, -0.6, 0.8], [0.0, 0.0, 1.0]]).view(3, 1, 3, 1, 1)
    normal, angle = InverseRenderingPipeline.ensemble("normal", tilt)
    assert torch.allclose(normal.flatten(), torch.tensor([0.0, 0.0, 1.0]))  # the normalised mean (unit members)
    short = torch.cat([tilt * 0.1, tilt[:1]])  # three short (background) members and one unit one
    background, _ = InverseRenderingPipeline.ensemble("normal", short)
    assert abs(float(background.norm()) - (3 * 0.1 + 1) / 4) < 1e-6  # the members' mean length: still short
    expected = math.sqrt(2 * math.acos(0.8) ** 2 / 3)  # RMS angle to it
    assert abs(angle.item() - expected) < 1e-5
    pair, _ = InverseRenderingPipeline.ensemble("roughness", members[:2])
    assert torch.allclose(pair, torch.full((2, 1, 2, 2), 0.5))  # an even count: the middle two's mean, not 0.1
    same, none = InverseRenderingPipeline.ensemble("basecolor", torch.ones(4, 1, 3, 2, 2) * 0.3)
    assert torch.allclose(same, torch.full((1, 3, 2, 2), 0.3)) and none.abs().max() == 0


def test_ensemble_of_one_is_the_plain_run_and_more_members_change_it(inverse) -> None:
    image = np.random.default_rng(9).random((32, 48, 3), dtype=np.float32)
    plain = inverse(image, generator=seeded(5), **FAST)
    one = inverse(image, generator=seeded(5), ensemble_size=1, **FAST)
    assert one.uncertainty is None
    for name in plain.gbuffers:
        np.testing.assert_array_equal(one.gbuffers[name], plain.gbuffers[name])
    three = inverse(image, generator=seeded(5), ensemble_size=3, **FAST)
    for name, value in three.gbuffers.items():
        assert value.shape == plain.gbuffers[name].shape
        low, high = VALUE_RANGE[name]
        assert value.min() >= low and value.max() <= high
        assert three.uncertainty[name].shape == (*value.shape[:-1], 1) and three.uncertainty[name].max() > 0
        assert not np.array_equal(value, plain.gbuffers[name])
    lengths = np.linalg.norm(np.stack([m.gbuffers["normal"] for m in (plain, three)]), axis=-1)
    assert lengths[1].max() <= 1 + 1e-4 and not np.allclose(lengths[1], 1.0, atol=1e-2)  # the members' mean length
    with pytest.raises(ValueError, match="ensemble_size"):
        inverse(image, ensemble_size=0, **FAST)


def test_mirrored_members_see_the_mirrored_input_and_are_mirrored_back(inverse, monkeypatch) -> None:
    """With ``ensemble_mirror``, member 1 is member 1 of a run on the mirrored image, mirrored back (same noise);
    member 0 is the plain run's. Non-square, so the fit pads: padding stays where the plain view has it."""
    from diffusion_renderer.conventions import mirror_pass

    members: dict[str, list[torch.Tensor]] = {}

    def record(name: str, stacked: torch.Tensor):
        members.setdefault(name, []).append(stacked)
        return InverseRenderingPipeline.ensemble(name, stacked)

    monkeypatch.setattr(inverse, "ensemble", record)
    image = np.random.default_rng(11).random((32, 48, 3), dtype=np.float32)
    kwargs = {"generator": seeded(5), "ensemble_size": 2, "output_type": "pt", **FAST}
    inverse(image, ensemble_mirror=True, **kwargs)
    inverse(image, **{**kwargs, "generator": seeded(5)})
    inverse(np.ascontiguousarray(image[:, ::-1]), **{**kwargs, "generator": seeded(5)})
    for name, (mirrored, plain, of_mirror) in members.items():
        torch.testing.assert_close(mirrored[0], plain[0], atol=1e-5, rtol=0)
        torch.testing.assert_close(mirrored[1], mirror_pass(name, of_mirror[1]), atol=1e-5, rtol=0)
        assert not torch.allclose(mirrored[1], plain[1], atol=1e-3)
    normal = torch.tensor([0.6, 0.0, 0.8]).view(3, 1, 1).expand(3, 2, 2).clone()
    normal[..., 0] = 0  # column 0 differs: it becomes column 1
    mirrored_normal = mirror_pass("normal", normal)
    assert torch.equal(mirrored_normal[..., 0], torch.tensor([[-0.6, -0.6], [0.0, 0.0], [0.8, 0.8]]))
    assert mirrored_normal[..., 1].abs().max() == 0
    assert torch.equal(mirror_pass("normal", mirror_pass("normal", normal)), normal)
    assert torch.equal(mirror_pass("depth", normal), normal.flip(-1))


def test_translation_moves_the_token_grid_and_back() -> None:
    from diffusion_renderer.pipelines.image_processor import translate, translate_back

    video = torch.arange(2 * 3 * 6 * 7, dtype=torch.float32).view(1, 2, 3, 6, 7)  # (B, C, T, H, W)
    moved = translate(video, 2)
    assert moved.shape == video.shape
    torch.testing.assert_close(moved[..., 2:, 2:], video[..., :-2, :-2])  # out[y, x] = in[y - 2, x - 2]
    torch.testing.assert_close(moved[..., 0, 2:], video[..., 2, :-2])  # the row moved in: mirrored from the edge
    back = translate_back(moved, 2)
    torch.testing.assert_close(back[..., :-2, :-2], video[..., :-2, :-2])  # exact where the view kept the pixel
    torch.testing.assert_close(back[..., -2:, :-2], video[..., -3:-2, :-2].expand_as(back[..., -2:, :-2]))
    assert translate(video, 0) is video and translate_back(video, 0) is video
    rows = translate(video, (2, 0))  # rows only: the columns stay
    torch.testing.assert_close(rows[..., 2:, :], video[..., :-2, :])
    torch.testing.assert_close(translate_back(rows, (2, 0))[..., :-2, :], video[..., :-2, :])
    torch.testing.assert_close(translate(video, (2, 2)), moved)


def test_ensemble_views_cycle_plain_shifted_mirrored() -> None:
    from diffusion_renderer.pipelines.pipeline_inverse_rendering import View, ensemble_views

    assert ensemble_views(4, False, 0) == [View()]
    assert ensemble_views(2, True, 0) == [View(), View(mirror=True)]
    assert ensemble_views(2, False, 8) == [View(), View(shift=8)]
    both = [View(), View(shift=8), View(mirror=True), View(mirror=True, shift=8)]
    assert ensemble_views(5, True, 8) == both and ensemble_views(2, True, 8) == both[:2]
    assert ensemble_views(1, True, 8) == [View()]


def test_shifted_members_see_the_input_moved_half_a_token(inverse, monkeypatch) -> None:
    """With ``ensemble_shift``, member 1 is member 1 of a run on the image moved half a DiT token down and right,
    moved back; member 0 is the plain run's. The image has the processing size, so nothing is resized."""
    from diffusion_renderer.pipelines.image_processor import translate, translate_back

    members: dict[str, list[torch.Tensor]] = {}

    def record(name: str, stacked: torch.Tensor):
        members.setdefault(name, []).append(stacked)
        return InverseRenderingPipeline.ensemble(name, stacked)

    monkeypatch.setattr(inverse, "ensemble", record)
    shift = inverse.token_size // 2
    assert shift == 8  # random:tiny: 8x8 tokenizer, 2x2 patches
    image = torch.rand(1, 3, *SMALL, generator=seeded(12))  # (N, C, H, W) in [0, 1]
    kwargs = {"ensemble_size": 2, "output_type": "pt", **FAST}
    inverse(image, generator=seeded(5), ensemble_shift=True, **kwargs)
    inverse(image, generator=seeded(5), **kwargs)
    inverse(translate(image, shift), generator=seeded(5), **kwargs)
    for shifted, plain, of_moved in members.values():
        torch.testing.assert_close(shifted[0], plain[0], atol=1e-5, rtol=0)
        torch.testing.assert_close(shifted[1], translate_back(of_moved[1], shift), atol=1e-5, rtol=0)
        assert not torch.allclose(shifted[1], plain[1], atol=1e-3)
    members.clear()
    wide = torch.rand(1, 3, 20, 48, generator=seeded(14))  # fit pads it: the padding mask moves with the view
    inverse(wide, generator=seeded(5), ensemble_shift=True, **kwargs)
    inverse(wide, generator=seeded(5), **kwargs)
    for shifted, plain in members.values():
        assert shifted.shape[-2:] == (20, 48)
        torch.testing.assert_close(shifted[0], plain[0], atol=1e-5, rtol=0)


def test_a_model_records_its_default_ensemble() -> None:
    """``record["default_ensemble"]`` is what a call that leaves the ensemble out runs; explicit arguments win."""
    from diffusion_renderer.pipelines.pipeline_inverse_rendering import EnsembleSettings

    model = load_model("random:tiny", "inverse")
    plain = InverseRenderingPipeline.from_model(model)
    assert plain.default_ensemble == EnsembleSettings(1, False, False)
    model.record = {"default_ensemble": {"size": 2, "shift": True, "note": "chosen on a held-out set"}}
    pipe = InverseRenderingPipeline.from_model(model)
    assert pipe.default_ensemble == EnsembleSettings(2, False, True)
    assert pipe.ensemble_settings(None, True, None) == EnsembleSettings(2, True, True)
    assert pipe.ensemble_settings(1, None, False) == EnsembleSettings(1, False, False)
    image = np.random.default_rng(13).random((32, 48, 3), dtype=np.float32)
    by_default = pipe(image, passes=["basecolor"], generator=seeded(2), **FAST)
    explicit = plain(image, passes=["basecolor"], generator=seeded(2), ensemble_size=2, ensemble_shift=True, **FAST)
    one = pipe(image, passes=["basecolor"], generator=seeded(2), ensemble_size=1, **FAST)
    np.testing.assert_array_equal(by_default.gbuffers["basecolor"], explicit.gbuffers["basecolor"])
    assert by_default.uncertainty is not None and one.uncertainty is None
    assert not np.array_equal(one.gbuffers["basecolor"], by_default.gbuffers["basecolor"])
    for bad in ({"size": "two"}, {"size": 0}, {"size": 2, "shift": "yes"}, [2]):
        model.record = {"default_ensemble": bad}
        with pytest.raises(ValueError, match="random:tiny: its record's default_ensemble is not"):
            InverseRenderingPipeline.from_model(model)


def test_transfer_detail_moves_only_the_guides_fine_structure() -> None:
    """The target keeps its coarse structure and takes the guide's detail: a guide that differs from the target by a
    constant gives the target back exactly; a fine checkerboard on a flat guide is added to a flat target."""
    from diffusion_renderer.pipelines.image_processor import transfer_detail

    target = torch.rand(2, 3, 24, 32, generator=seeded(3))  # (N, C, H, W)
    torch.testing.assert_close(transfer_detail(target, target + 0.2, 2.0), target, atol=1e-6, rtol=0)
    assert transfer_detail(target, target + 0.2, 0.0) is target
    yy, xx = torch.meshgrid(torch.arange(24), torch.arange(32), indexing="ij")
    checker = ((yy + xx) % 2).float() * 0.2 - 0.1  # zero mean, period 2 px: all of it finer than sigma 2
    flat = torch.full((1, 3, 24, 32), 0.4)
    detailed = transfer_detail(flat, 0.6 + checker.expand(1, 3, -1, -1), 2.0)
    torch.testing.assert_close(detailed[..., 4:-4, 4:-4], (flat + checker)[..., 4:-4, 4:-4], atol=2e-3, rtol=0)


def test_basecolor_detail_is_the_models_default_and_applies_at_the_input_size(inverse) -> None:
    """``basecolor_detail`` gives the combined basecolor the input's detail at the input's own size (sigma scaled from
    processing pixels); other passes are untouched; the model's record sets the default; a bad value is refused."""
    from diffusion_renderer.pipelines.image_processor import transfer_detail

    image = torch.rand(1, 3, 64, 96, generator=seeded(21))  # twice the processing size: sigma 2 -> 4 px
    kwargs = {"passes": ["basecolor", "roughness"], "output_type": "pt", **FAST}
    plain = inverse(image, generator=seeded(4), basecolor_detail=0, **kwargs).gbuffers
    detailed = inverse(image, generator=seeded(4), basecolor_detail=2, **kwargs).gbuffers
    expected = transfer_detail(plain["basecolor"], image, 4.0).clamp(*VALUE_RANGE["basecolor"])
    torch.testing.assert_close(detailed["basecolor"], expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(detailed["roughness"], plain["roughness"], atol=0, rtol=0)
    assert (detailed["basecolor"] - plain["basecolor"]).abs().max() > 0.05
    model = load_model("random:tiny", "inverse")
    assert InverseRenderingPipeline.from_model(model).default_basecolor_detail == 0.0  # official models: off
    model.record = {"default_basecolor_detail": 2}
    by_record = InverseRenderingPipeline.from_model(model)
    by_default = by_record(image, generator=seeded(4), **kwargs).gbuffers
    torch.testing.assert_close(by_default["basecolor"], detailed["basecolor"], atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="basecolor_detail must be a finite number of pixels >= 0"):
        inverse(image, basecolor_detail=-1, **kwargs)
    for bad in (-1, "2", True, float("nan")):
        model.record = {"default_basecolor_detail": bad}
        with pytest.raises(ValueError, match="random:tiny: its record's default_basecolor_detail is not"):
            InverseRenderingPipeline.from_model(model)


@pytest.mark.parametrize("spec", ["random:tiny", "tiny"], ids=["cosmos", "space-to-depth"])
def test_a_fixed_light_is_encoded_from_one_frame(spec: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The forward pipeline's fixed-light conditions (one frame expanded in time) take the one-frame encode, and
    give the latents of the whole repeated clip in every window."""
    from diffusion_renderer.pipelines.video_stages import encode_windows

    tokenizer = load_model(spec, "forward").tokenizer
    plan = plan_windows(20, 9, "blend", 0, tokenizer.temporal_compression)
    assert plan.num_windows > 1
    frame = torch.rand(1, 3, 1, 32, 48, generator=torch.Generator().manual_seed(5)) * 2 - 1
    still = frame.expand(-1, -1, 20, -1, -1)
    expected = encode_windows(tokenizer, still.contiguous(), plan, torch.device("cpu"))
    seen: list[int] = []
    original = tokenizer.encode_still
    monkeypatch.setattr(tokenizer, "encode_still", lambda f, n: seen.append(f.shape[2]) or original(f, n))
    actual = encode_windows(tokenizer, still, plan, torch.device("cpu"))
    assert seen == [1] * plan.num_windows
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, e, atol=1e-5, rtol=1e-5)
