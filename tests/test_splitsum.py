"""Split-sum IBL baseline: BRDF terms, LUT, prefiltering, env-map convention, renderer call (CPU, fast)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from diffusion_renderer.lighting.envmap import latlong_directions, project_envmap, rotation_angles
from diffusion_renderer.pipelines.pipeline_output import ForwardRenderingOutput
from diffusion_renderer.render.splitsum import (
    SplitSumRenderer,
    brdf_lut,
    camera_rays,
    env_radiance,
    equirect_solid_angles,
    fresnel_schlick,
    ggx_ndf,
    importance_sample_ggx,
    irradiance_map,
    prefilter_environment,
    prepare_environment,
    shade_splitsum,
    smith_visibility_ggx,
    tonemap_to_display,
    uniform_environment,
)

# ---------------------------------------------------------------------------------------------------------------
# Helpers


def sphere_gbuffers(size: int = 49, radius: float = 0.8, frames: int = 1, **material: float) -> dict[str, np.ndarray]:
    """G-buffers (T, size, size, C) of a sphere seen head-on: n = (x, y, sqrt(r² - x² - y²)) / r, plus its mask."""
    c = (np.arange(size) + 0.5) / size * 2 - 1
    y, x = -c[:, None] * np.ones((1, size)), c[None, :] * np.ones((size, 1))  # row 0 = top = +y
    inside = x * x + y * y < radius * radius
    z = np.sqrt(np.clip(radius * radius - x * x - y * y, 0, None))
    normal = np.where(inside[..., None], np.stack([x, y, z], -1) / radius, 0.0)
    out = {"normal": normal, "mask": inside[..., None].astype(np.float64)}
    for key in ("basecolor", "roughness", "metallic"):
        if key in material:
            channels = 3 if key == "basecolor" else 1
            out[key] = np.full((size, size, channels), material[key])
    return {k: np.repeat(v[None], frames, 0).astype(np.float32) for k, v in out.items()}


def raw_texel_directions(height: int, width: int) -> torch.Tensor:
    """(H, W, 3) camera-frame direction of each raw panorama texel centre (module docstring's convention)."""
    theta = (torch.arange(height, dtype=torch.float64) + 0.5) / height * math.pi
    psi = (torch.arange(width, dtype=torch.float64) + 0.5) / width * 2 * math.pi
    t, p = torch.meshgrid(theta, psi, indexing="ij")
    return torch.stack([-torch.sin(t) * torch.sin(p), torch.cos(t), -torch.sin(t) * torch.cos(p)], -1).float()


def smooth_hdr(height: int = 32, width: int = 64, seed: int = 0) -> torch.Tensor:
    """A positive (H, W, 3) test panorama: low-frequency colour variation plus a bright 2x2 spot."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(3, 4, 8, generator=g) * 2 + 0.2
    hdr = torch.nn.functional.interpolate(coarse[None], size=(height, width), mode="bilinear")[0].permute(1, 2, 0)
    hdr[height // 3 : height // 3 + 2, width // 5 : width // 5 + 2] = 40.0
    return hdr.contiguous()


def brute_force_lut(n_dot_v: float, roughness: float, n: int = 400) -> tuple[float, float]:
    """(A, B) by a midpoint rule over the hemisphere of l (independent of the module's sampling code)."""
    a2 = roughness**4
    theta = (np.arange(n) + 0.5) / n * math.pi / 2
    phi = (np.arange(2 * n) + 0.5) / (2 * n) * 2 * math.pi
    t, p = np.meshgrid(theta, phi, indexing="ij")
    l = np.stack([np.sin(t) * np.cos(p), np.sin(t) * np.sin(p), np.cos(t)], -1)  # noqa: E741
    d_omega = np.sin(t) * (math.pi / 2 / n) * (2 * math.pi / (2 * n))
    v = np.array([math.sqrt(1 - n_dot_v**2), 0.0, n_dot_v])
    h = l + v
    h /= np.linalg.norm(h, axis=-1, keepdims=True)
    nh, vh, nl = h[..., 2], h @ v, l[..., 2]
    ndf = a2 / (math.pi * (nh * nh * a2 + 1 - nh * nh) ** 2)
    g2 = 2 * nl * n_dot_v / (nl * np.sqrt(n_dot_v**2 * (1 - a2) + a2) + n_dot_v * np.sqrt(nl * nl * (1 - a2) + a2))
    brdf_cos = ndf * g2 / (4 * n_dot_v) * d_omega  # f / F · n·l dω
    fc = (1 - vh) ** 5
    return float((brdf_cos * (1 - fc)).sum()), float((brdf_cos * fc).sum())


# ---------------------------------------------------------------------------------------------------------------
# (a) white furnace and irradiance


def test_white_furnace_lambert() -> None:
    """Pure Lambert (specular off), albedo 1, uniform radiance 1: every foreground pixel reads 1 (linear HDR)."""
    g = sphere_gbuffers(basecolor=1.0, roughness=1.0, metallic=0.0)
    fg = torch.from_numpy(g["mask"][0, ..., 0] > 0)
    renderer = SplitSumRenderer()
    frames = renderer.prepare_gbuffers(g, None)
    env = prepare_environment(np.ones((32, 64, 3), np.float32), out_height=16, samples=16)  # through the SH path
    linear = renderer.render_hdr(frames, env, torch.zeros(1), specular=False)[0]
    err = (linear[fg] - 1).abs().max().item()
    assert err < 0.02, f"furnace error {err}"
    # the neutral light of envmap=None is the same furnace; display sRGB(1) = 1
    display = renderer(g, None, specular=False, output_type="pt").images[0].permute(0, 2, 3, 1)[0]
    assert (display[fg] - 1).abs().max() < 1e-5


def test_furnace_with_specular_adds_the_specular_albedo() -> None:
    """With the specular lobe on, a white dielectric reads 1 + (0.04 A + B) > 1 (no energy compensation)."""
    env = uniform_environment(1.0)
    n = torch.tensor([[0.0, 0.0, 1.0]])
    ones = torch.ones(1, 3)
    rough = torch.ones(1, 1)
    lin = shade_splitsum(ones, n, rough, torch.zeros(1, 1), n, env)
    lut = brdf_lut(device="cpu")
    expected = 1 + 0.04 * lut[-1, -1, 0] + lut[-1, -1, 1]
    assert lin.min() > 1.0
    assert torch.allclose(lin, expected.expand(1, 3), atol=5e-3)


def test_irradiance_of_a_linear_environment() -> None:
    """L(d) = 1 + 0.5 d_y + 0.3 d_x is band-limited: E(n)/π = 1 + 2/3 (0.5 n_y + 0.3 n_x) exactly (SH order 2)."""
    d = raw_texel_directions(64, 128)
    hdr = 1 + 0.5 * d[..., 1:2] + 0.3 * d[..., 0:1]
    env = prepare_environment(hdr.expand(-1, -1, 3), roughness_levels=(0.0, 1.0), out_height=16, samples=16)
    normals = torch.nn.functional.normalize(torch.randn(200, 3, generator=torch.Generator().manual_seed(1)), dim=-1)
    expected = 1 + 2 / 3 * (0.5 * normals[:, 1] + 0.3 * normals[:, 0])
    got = env.irradiance(normals)[:, 0]
    assert (got - expected).abs().max() < 0.01
    assert torch.allclose(irradiance_map(torch.full((64, 128, 3), 2.0), out_height=8), torch.tensor(2.0), atol=1e-3)


# ---------------------------------------------------------------------------------------------------------------
# (b) BRDF terms and the integration table


def test_brdf_terms() -> None:
    theta = (torch.arange(4000, dtype=torch.float64) + 0.5) / 4000 * math.pi / 2
    for alpha in (0.05, 0.3, 1.0):  # ∫ D cosθ dω = 1
        integral = (ggx_ndf(torch.cos(theta), alpha) * torch.cos(theta) * torch.sin(theta)).sum() * 2 * math.pi
        assert abs(integral.item() * (math.pi / 2 / 4000) - 1) < 2e-3
    c = torch.tensor([0.2, 0.7, 1.0], dtype=torch.float64)
    g2 = 4 * smith_visibility_ggx(c, c.flip(0), 1e-4) * c * c.flip(0)
    assert torch.allclose(g2, torch.ones(3, dtype=torch.float64), atol=1e-3)  # a smooth surface does not shadow
    assert fresnel_schlick(0.04, torch.tensor(1.0)) == pytest.approx(0.04)
    assert fresnel_schlick(0.04, torch.tensor(0.0)) == pytest.approx(1.0)
    h = importance_sample_ggx(torch.rand(256, 2, generator=torch.Generator().manual_seed(0)), 0.5)
    assert torch.allclose(h.norm(dim=-1), torch.ones(256)) and (h[:, 2] >= 0).all()
    assert (importance_sample_ggx(torch.rand(8, 2), 0.0)[:, 2] == 1).all()  # α = 0: the normal itself


def test_brdf_lut_range_and_limits() -> None:
    lut = brdf_lut(64, 256)
    assert lut.shape == (64, 64, 2) and lut.dtype == torch.float32
    assert lut.min() >= 0 and lut.max() <= 1
    assert (lut.sum(-1) <= 1 + 1e-6).all()
    assert abs(lut[-1, 0].sum().item() - 1) < 1e-3  # n·v -> 1, roughness -> 0: a perfect mirror, F = F0
    assert lut[-1, 0, 1] < 1e-3  # ... with no Fresnel boost at normal incidence
    assert brdf_lut(64, 256) is lut  # cached per (size, samples, device)


@pytest.mark.parametrize(("i", "j"), [(31, 31), (50, 19), (16, 47), (5, 60)])
def test_brdf_lut_matches_brute_force(i: int, j: int) -> None:
    lut = brdf_lut(64, 256)
    n_dot_v, roughness = (i + 0.5) / 64, (j + 0.5) / 64
    a, b = brute_force_lut(n_dot_v, roughness)
    assert abs(lut[i, j, 0].item() - a) < 5e-3 and abs(lut[i, j, 1].item() - b) < 5e-3, (lut[i, j], a, b)


# ---------------------------------------------------------------------------------------------------------------
# (c) prefiltered environment


def test_prefilter_roughness_zero_is_the_source_and_energy_is_kept() -> None:
    hdr = smooth_hdr(32, 64)
    levels = prefilter_environment(hdr, [0.0, 0.3, 0.6, 1.0], out_height=32, samples=64)
    assert torch.allclose(levels[0], hdr, rtol=1e-5, atol=1e-5)
    omega = equirect_solid_angles(32, 64)
    source = (hdr * omega[..., None]).sum((0, 1))
    for level in levels[1:]:
        energy = (level * omega[..., None]).sum((0, 1))
        assert ((energy / source - 1).abs() < 0.03).all(), energy / source
    # blurrier with roughness: the bright spot spreads out
    peaks = [level.max().item() for level in levels]
    assert peaks == sorted(peaks, reverse=True)


def test_prefilter_roughness_zero_downsamples_by_area() -> None:
    hdr = smooth_hdr(32, 64)
    (half,) = prefilter_environment(hdr, [0.0], out_height=16)
    box = torch.nn.functional.avg_pool2d(hdr.permute(2, 0, 1)[None], 2)[0].permute(1, 2, 0)
    assert torch.allclose(half, box, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# (d) environment convention


@pytest.mark.parametrize("angle", [0.0, 0.7, -2.0])
def test_env_lookup_matches_the_neural_conditions(angle: float) -> None:
    """The radiance looked up for direction d is the pixel of project_envmap(direct) whose env_nrm is d."""
    hdr = smooth_hdr(16, 32)
    height, width = 12, 20
    env_nrm = -latlong_directions(height, width).flip(0).flip(1)  # = envmap_directions
    projected = project_envmap(hdr, height, width, torch.tensor([angle]), method="direct")[0]
    assert torch.allclose(env_radiance(hdr, env_nrm, angle), projected, rtol=1e-4, atol=1e-4)


def test_env_lookup_of_raw_texel_directions() -> None:
    """Documented convention: raw texel (u, v) -> (-sinθ sinψ, cosθ, -sinθ cosψ); centre of the panorama = +z."""
    hdr = smooth_hdr(16, 32)
    assert torch.allclose(env_radiance(hdr, raw_texel_directions(16, 32)), hdr, rtol=1e-4, atol=1e-4)
    d = raw_texel_directions(16, 32)
    assert d[8, 16, 2] > 0.99 and d[0, 0, 1] > 0.99 and d[8, 24, 0] > 0.99  # +z centre, +y top, +x at u = 3/4


# ---------------------------------------------------------------------------------------------------------------
# (e) rotating light


def test_rotating_light_uses_rotation_angles() -> None:
    hdr = smooth_hdr(16, 32).numpy()
    g = sphere_gbuffers(size=25, frames=4, basecolor=0.7, roughness=0.3, metallic=0.5)
    renderer = SplitSumRenderer()
    turning = renderer(g, hdr, rotate_light=True, light_angle=30.0, fov_deg=30.0).images[0]
    angles = rotation_angles(4, True, 30.0)
    for k in range(4):
        one = {key: v[k : k + 1] for key, v in g.items()}
        fixed = renderer(one, hdr, light_angle=math.degrees(angles[k]), fov_deg=30.0)
        np.testing.assert_allclose(turning[k], fixed.images[0][0], atol=1e-5)
    np.testing.assert_allclose(turning[0], turning[-1], atol=1e-5)  # 0 ≡ 2π, as official
    assert np.abs(turning[1] - turning[0]).max() > 0.05
    # background pixels show the environment through the camera at that frame's angle
    bg = renderer(g, hdr, rotate_light=True, light_angle=30.0, mask=np.zeros((25, 25)), fov_deg=30.0).images[0]
    rays = camera_rays(25, 25, 30.0)
    for k in range(4):
        expected = tonemap_to_display(env_radiance(hdr, rays, float(angles[k])))
        np.testing.assert_allclose(bg[k], expected.numpy(), atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# (f) mirror sphere


@pytest.mark.parametrize(("texel", "quadrant"), [((16, 32), None), ((10, 40), "upper right")])
def test_mirror_sphere_reflects_a_bright_texel_where_expected(texel: tuple[int, int], quadrant: str | None) -> None:
    """A single bright texel at direction d shows up where the reflection of the view ray is d."""
    height, width, size, fov = 32, 64, 65, 30.0
    hdr = np.zeros((height, width, 3), np.float32)
    hdr[texel] = 1000.0
    d = raw_texel_directions(height, width)[texel].numpy()
    g = sphere_gbuffers(size=size, basecolor=1.0, roughness=0.02, metallic=1.0)
    image = SplitSumRenderer()(g, hdr, fov_deg=fov, exposure=1e-3).images[0][0]  # no clipping at the peak
    # expected pixel from the view rays of a pinhole (written out here, independent of camera_rays)
    tan = math.tan(math.radians(fov) / 2)
    c = ((np.arange(size) + 0.5) / size * 2 - 1) * tan
    ray = np.stack(np.broadcast_arrays(c[None, :], -c[:, None], -np.ones((size, size))), -1)
    v = -ray / np.linalg.norm(ray, axis=-1, keepdims=True)
    n = g["normal"][0]
    r = 2 * (n * v).sum(-1, keepdims=True) * n - v
    fg = g["mask"][0, ..., 0] > 0
    cosine = np.where(fg, (r * d).sum(-1), -2)
    expected = np.unravel_index(np.argmax(cosine), cosine.shape)
    found = np.unravel_index(np.argmax(np.where(fg, image.sum(-1), -1)), fg.shape)
    assert np.hypot(*np.subtract(found, expected)) <= 1.5, (found, expected)
    centre = size // 2
    if quadrant is None:
        assert max(abs(found[0] - centre), abs(found[1] - centre)) <= 2  # light behind the camera: the centre
    else:
        assert found[0] < centre - 5 and found[1] > centre + 5  # +y up, +x right


# ---------------------------------------------------------------------------------------------------------------
# (g) the pipeline stand-in


def test_output_type_shapes_and_ignored_options() -> None:
    g = sphere_gbuffers(size=17, frames=3, basecolor=0.6, roughness=0.4, metallic=0.2)
    g["depth"] = np.zeros((3, 17, 17, 1), np.float32)
    hdr = smooth_hdr(16, 32).numpy()
    renderer = SplitSumRenderer().to("cpu")
    assert renderer.role == "forward" and renderer.to("cpu") is renderer
    renderer.set_progress_bar_config(disable=True)
    renderer.maybe_free_model_hooks()
    out = renderer(
        g,
        [hdr, None],
        num_inference_steps=15,
        generator=torch.Generator().manual_seed(0),
        processing_resolution=256,
        num_frames=57,
        chunk_mode="blend",
        overlap_latents=2,
        envmap_method="cubemap",
        progress=False,
        guidance_scale=0.0,
        resize_mode="fit",
        fps=24.0,
    )
    assert isinstance(out, ForwardRenderingOutput) and out.latents is None and len(out.images) == 2
    for image in out.images:
        assert isinstance(image, np.ndarray) and image.shape == (3, 17, 17, 3) and image.dtype == np.float32
        assert image.min() >= 0 and image.max() <= 1
    pt = renderer(g, hdr, output_type="pt").images[0]
    assert isinstance(pt, torch.Tensor) and pt.shape == (3, 3, 17, 17)
    np.testing.assert_allclose(pt.permute(0, 2, 3, 1).numpy(), out.images[0], atol=1e-6)
    images, latents = renderer(g, hdr, return_dict=False)
    assert latents is None and images[0].shape == (3, 17, 17, 3)


def test_defaults_masks_tonemaps_and_encoded_inputs() -> None:
    renderer = SplitSumRenderer()
    g = sphere_gbuffers(size=17, basecolor=0.5, roughness=0.5, metallic=0.0)
    only_normal = renderer({"normal": g["normal"]}, None).images[0]
    np.testing.assert_allclose(only_normal, renderer({k: g[k] for k in GBUFFER_SUBSET}, None).images[0], atol=1e-6)
    # 8-bit encoded normals (n + 1) / 2 read like the float ones on the sphere, up to quantisation
    fg = g["mask"][..., 0] > 0
    encoded = np.round((g["normal"] + 1) / 2 * 255).astype(np.uint8)
    np.testing.assert_allclose(renderer({"normal": encoded}, None).images[0][fg], only_normal[fg], atol=0.02)
    # background: black or the (uniform white) environment where the mask is 0; "mask" G-buffer works alike
    black = renderer(g, None, background="black").images[0]  # g carries its "mask"
    assert (black[~fg] == 0).all() and (black[fg] > 0).all()
    white = renderer({"normal": g["normal"]}, None, mask=g["mask"][0, ..., 0]).images[0]
    np.testing.assert_allclose(white[~fg], 1.0, atol=1e-6)
    depth = np.where(fg[..., None], 0.0, 1.0).astype(np.float32)
    by_depth = renderer({"normal": g["normal"], "depth": depth}, None, mask="depth", background="black").images[0]
    np.testing.assert_allclose(by_depth, black, atol=1e-6)
    bright = smooth_hdr(16, 32).numpy() * 4
    clamp = renderer(g, bright).images[0]
    reinhard = renderer(g, bright, tonemap="reinhard").images[0]
    assert clamp.max() > 1 - 1e-6 and reinhard.max() < 0.999  # srgb(1) = 1 - 6e-8 in float32
    with pytest.raises(ValueError, match="unknown G-buffer"):
        renderer({"albedo": g["normal"]}, None)
    with pytest.raises(TypeError, match="HDR"):
        from diffusion_renderer.lighting.envmap import process_environment_map

        renderer(g, process_environment_map(bright, 8, 16, method="direct"))


GBUFFER_SUBSET = ("normal", "basecolor", "roughness", "metallic")


# ---------------------------------------------------------------------------------------------------------------
# (h) CUDA


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
def test_cuda_matches_cpu() -> None:
    g = sphere_gbuffers(size=33, frames=2, basecolor=0.8, roughness=0.35, metallic=0.5)
    hdr = smooth_hdr(32, 64).numpy()
    cpu = SplitSumRenderer("cpu")(g, hdr, rotate_light=True, mask=g["mask"]).images[0]
    cuda = SplitSumRenderer("cuda")(g, hdr, rotate_light=True, mask=g["mask"], output_type="pt").images[0]
    assert cuda.device.type == "cuda"
    np.testing.assert_allclose(cuda.permute(0, 2, 3, 1).cpu().numpy(), cpu, atol=2e-3)
