"""Data engine: seeded scene specs, Mitsuba G-buffers (exactness, invariants) and the environment orientation.

CPU only (llvm_ad_rgb), tiny images and sample counts; skipped without Mitsuba or LLVM.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import require_mitsuba
from diffusion_renderer.data.scenes import (
    MOTIONS,
    CameraSpec,
    LightingSpec,
    MaterialSpec,
    ObjectSpec,
    SceneSpec,
    TextureSpec,
    look_at,
    make_texture,
    object_mesh,
    sample_scene,
)
from diffusion_renderer.io.hdr import read_hdr, write_hdr
from diffusion_renderer.lighting.envmap import (
    envmap_directions,
    latlong_uv,
    prepare_hdr,
    project_envmap,
    rotate_y,
    sample_latlong,
)
from diffusion_renderer.lighting.presets import list_presets, resolve_envmap
from diffusion_renderer.lighting.white_balance import REFERENCE_KELVIN, white_balance_gain

render = require_mitsuba()
mi = pytest.importorskip("mitsuba")
dr = pytest.importorskip("drjit")

HDRIS = [resolve_envmap(name)[1] for name in list_presets()]


# ---------------------------------------------------------------------------------------------------------------
# Helpers


def pixel_directions(height: int, width: int, fov_deg: float) -> np.ndarray:
    """(H, W, 3) camera-frame (OpenGL) unit directions through pixel centres; vertical fov. Written independently."""
    f = 1.0 / math.tan(math.radians(fov_deg) / 2)  # focal length in units of half the image height
    j, i = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    x = (j - width / 2) / (height / 2)
    y = (height / 2 - i) / (height / 2)
    d = np.stack([x, y, -np.full_like(x, f)], -1)
    return d / np.linalg.norm(d, axis=-1, keepdims=True)


def manual_spec(
    objects: list[ObjectSpec],
    c2w: np.ndarray | list[np.ndarray],
    *,
    ground: MaterialSpec | None = None,
    hdri: str | Path = HDRIS[0],
    fov: float = 45.0,
    size: tuple[int, int] = (32, 32),
    rotation: float = 0.0,
    intensity: float = 1.0,
) -> SceneSpec:
    poses = [np.asarray(c2w)] if np.ndim(c2w) == 2 else [np.asarray(m) for m in c2w]
    light = LightingSpec(Path(hdri).stem, str(hdri), intensity, rotation, [0.0] * len(poses))
    camera = CameraSpec(fov, [m.tolist() for m in poses])
    return SceneSpec(0, list(size), len(poses), "static", ground, objects, camera, light, spp=4)


def grey(value: float = 0.5, roughness: float = 0.5, metallic: float = 0.0) -> MaterialSpec:
    return MaterialSpec(roughness, metallic, basecolor_rgb=[value] * 3)


@pytest.fixture(scope="module")
def clip() -> tuple[SceneSpec, render.ClipBuffers]:
    spec = sample_scene(11, resolution=(40, 48), num_frames=2, hdri_paths=HDRIS, motion="object_motion")
    return spec, render.render_clip(spec, spp=2)


# ---------------------------------------------------------------------------------------------------------------
# Scene specs (no rendering)


def test_spec_is_a_pure_function_of_the_seed() -> None:
    a = sample_scene(5, resolution=(32, 32), num_frames=3, hdri_paths=HDRIS)
    b = sample_scene(5, resolution=(32, 32), num_frames=3, hdri_paths=HDRIS)
    assert a.to_dict() == b.to_dict()
    assert a.to_dict() != sample_scene(6, resolution=(32, 32), num_frames=3, hdri_paths=HDRIS).to_dict()
    text = json.dumps(a.to_dict())
    assert SceneSpec.from_dict(json.loads(text)) == a  # JSON round trip restores the dataclasses exactly
    assert SceneSpec.from_dict(json.loads(text)).to_dict() == a.to_dict()


@pytest.mark.parametrize("motion", MOTIONS)
def test_spec_placement_and_motion(motion: str) -> None:
    for seed in range(8):
        spec = sample_scene(seed, resolution=(32, 32), num_frames=4, hdri_paths=HDRIS, motion=motion)
        assert spec.motion == motion and 1 <= len(spec.objects) <= 3
        assert 30 <= spec.camera.fov_deg <= 60 and len(spec.camera.c2w) == 4
        for t in range(4):
            for k, obj in enumerate(spec.objects):
                m = obj.to_world(t)
                lowest = (object_mesh(obj).vertices @ m[:3, :3].T + m[:3, 3])[:, 1].min()
                assert abs(lowest) < 1e-5, "objects rest on the ground"
                for other in spec.objects[k + 1 :]:
                    gap = np.linalg.norm(m[[0, 2], 3] - other.to_world(t)[[0, 2], 3])
                    assert gap > obj.radius + other.radius, "bounding circles overlap"
        c2w = np.asarray(spec.camera.c2w)
        angles = spec.lighting.angles_deg()
        moved = [np.ptp([o.to_world(t)[:3, 3] for t in range(4)], axis=0).max() for o in spec.objects]
        assert (np.ptp(c2w, axis=0).max() > 1e-3) == (motion in ("orbit", "oscillation"))
        assert (np.ptp(angles) > 1.0) == (motion == "light_rotation")
        assert (max(moved) > 1e-3) == (motion == "object_motion")
        rot = c2w[:, :3, :3]
        np.testing.assert_allclose(rot @ rot.transpose(0, 2, 1), np.broadcast_to(np.eye(3), rot.shape), atol=1e-9)


# ---------------------------------------------------------------------------------------------------------------
# G-buffers


def test_gbuffers_are_deterministic(clip: tuple[SceneSpec, render.ClipBuffers]) -> None:
    spec, a = clip
    b = render.render_clip(SceneSpec.from_dict(spec.to_dict()), spp=2)
    for key in ("basecolor", "normal", "depth", "roughness", "metallic", "mask"):
        assert np.array_equal(getattr(a, key), getattr(b, key)), key  # bitwise
    np.testing.assert_allclose(a.rgb_linear, b.rgb_linear, rtol=1e-5, atol=1e-6)
    other = render.render_clip(sample_scene(12, resolution=(40, 48), num_frames=2, hdri_paths=HDRIS), spp=2)
    assert not np.array_equal(a.normal, other.normal) and not np.array_equal(a.basecolor, other.basecolor)


def test_gbuffer_invariants(clip: tuple[SceneSpec, render.ClipBuffers]) -> None:
    spec, buf = clip
    t_, h, w = buf.mask.shape[:3]
    assert buf.rgb_linear.shape == (t_, h, w, 3) and buf.depth.shape == (t_, h, w, 1)
    assert all(getattr(buf, k).dtype == np.float32 for k in ("rgb_linear", "basecolor", "normal", "depth", "mask"))
    mask = buf.mask[..., 0] > 0
    assert set(np.unique(buf.mask)) <= {0.0, 1.0} and mask.any()
    assert np.array_equal(mask, buf.depth[..., 0] > 0), "mask = 1 exactly where there is a surface (depth 0 = none)"
    assert np.isfinite(buf.rgb_linear).all() and buf.rgb_linear.min() >= 0
    for key in ("basecolor", "roughness", "metallic"):
        value = getattr(buf, key)
        assert value.min() >= 0 and value.max() <= 1, key
        assert not value[~mask].any(), key
    n = buf.normal[mask]
    np.testing.assert_allclose(np.linalg.norm(n, axis=-1), 1.0, atol=1e-5)
    view = -pixel_directions(h, w, spec.camera.fov_deg)  # toward the camera, camera frame
    facing = np.einsum("thwk,hwk->thw", buf.normal, view)
    assert (facing[mask] > 0).all(), "normals face the camera"
    np.testing.assert_array_equal(buf.c2w, np.asarray(spec.camera.c2w))


def test_ground_depth_grows_toward_the_horizon() -> None:
    c2w = look_at([0.0, 1.0, 4.0], [0.0, 0.6, 0.0])  # looking slightly down: ground below, sky above
    spec = manual_spec([], c2w, ground=grey(), size=(48, 32), fov=50)
    buf = render.render_clip(spec, spp=1)
    z, mask = buf.depth[0, ..., 0], buf.mask[0, ..., 0] > 0
    assert mask[-1].all() and not mask[0].any(), "ground at the bottom, environment at the top"
    for col in range(z.shape[1]):
        rows = np.flatnonzero(mask[:, col])
        assert np.all(np.diff(z[rows, col]) < 0), "planar z increases going up the image toward the horizon"
    # planar z of the plane y = 0 in closed form: the ray hits at t = -o_y / d_y
    d = pixel_directions(48, 32, 50) @ c2w[:3, :3].T
    t = -c2w[1, 3] / d[..., 1]
    z_ref = t * (d @ -c2w[:3, 2])
    np.testing.assert_allclose(z[mask], z_ref[mask], rtol=1e-4)
    up_cam = c2w[:3, :3].T @ [0.0, 1.0, 0.0]  # world +y in the camera frame
    np.testing.assert_allclose(buf.normal[0][mask], np.broadcast_to(up_cam, (mask.sum(), 3)), atol=1e-5)


def test_analytic_sphere_normals_and_depth() -> None:
    radius, distance, size = 0.8, 3.0, (48, 64)
    sphere = ObjectSpec("sphere", [radius] * 3, [0.0, 0.0, -distance], [0.0, 0.0, 0.0], grey())
    spec = manual_spec([sphere], np.eye(4), size=size, fov=40)
    buf = render.render_clip(spec, spp=1)
    d = pixel_directions(*size, 40)  # camera at the origin, c2w = I: world = camera frame
    c = np.array([0.0, 0.0, -distance])
    b = d @ c
    disc = b**2 - (c @ c - radius**2)
    hit = disc > 0
    t = b - np.sqrt(np.maximum(disc, 0))
    p = t[..., None] * d
    n_ref, z_ref = (p - c) / radius, -p[..., 2]
    mask = buf.mask[0, ..., 0] > 0
    clear = np.abs(disc) > 1e-3  # pixels whose centre ray is not tangent to the sphere
    assert np.array_equal(mask[clear], hit[clear]) and mask.sum() > 200
    inner = hit & (np.einsum("hwk,hwk->hw", n_ref, -d) > 0.1)  # away from the silhouette
    assert np.abs(buf.normal[0][inner] - n_ref[inner]).max() < 1e-3
    np.testing.assert_allclose(buf.depth[0, ..., 0][hit & clear], z_ref[hit & clear], rtol=1e-5)


def test_basecolor_roughness_metallic_equal_the_spec() -> None:
    flat = MaterialSpec(0.35, 0.2, basecolor_rgb=[0.8, 0.3, 0.05])
    bitmap = MaterialSpec(0.7, 0.9, texture=TextureSpec("constant", [[0.1, 0.55, 0.9]]))
    ball = ObjectSpec("sphere", [0.5] * 3, [0.0, 0.5, 0.0], [0.0, 0.0, 0.0], bitmap)
    spec = manual_spec([ball], look_at([0.0, 1.2, 2.5], [0.0, 0.4, 0.0]), ground=flat, size=(40, 40))
    buf = render.render_clip(spec, spp=1)
    mask = buf.mask[0, ..., 0] > 0
    on_ball = np.isclose(buf.roughness[0, ..., 0], 0.7)
    assert 50 < on_ball.sum() < mask.sum() - 50
    for sel, material, colour in ((on_ball, bitmap, [0.1, 0.55, 0.9]), (mask & ~on_ball, flat, [0.8, 0.3, 0.05])):
        np.testing.assert_allclose(buf.basecolor[0][sel], np.broadcast_to(colour, (sel.sum(), 3)), atol=2e-4)
        np.testing.assert_allclose(buf.roughness[0][sel], material.roughness, atol=1e-6)
        np.testing.assert_allclose(buf.metallic[0][sel], material.metallic, atol=1e-6)


def test_renderer_sees_linear_reflectance(tmp_path: Path) -> None:
    """White furnace (constant environment 1, one bounce): a diffuse ball reflects about its *linear* albedo."""
    hdri = write_hdr(tmp_path / "white.hdr", np.ones((16, 32, 3), np.float32))
    for srgb in (0.5, 0.8):
        ball = ObjectSpec("sphere", [1.0] * 3, [0.0, 0.0, -3.0], [0.0, 0.0, 0.0], grey(srgb, roughness=1.0))
        buf = render.render_clip(manual_spec([ball], np.eye(4), hdri=hdri, fov=20), spp=16, max_depth=2)
        radiance = buf.rgb_linear[0][buf.mask[0, ..., 0] > 0].mean()
        linear = ((srgb + 0.055) / 1.055) ** 2.4  # 0.214, 0.604; unconverted sRGB would give about 0.5, 0.8
        assert linear < radiance < linear + 0.05  # + the principled BSDF's dielectric specular lobe


def test_textures_are_seeded_and_in_the_basecolour() -> None:
    noise = TextureSpec("noise", [[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]], frequency=4, seed=3)
    again, other = make_texture(noise, 32), make_texture(TextureSpec(**{**noise.__dict__, "seed": 4}), 32)
    assert np.array_equal(make_texture(noise, 32), again) and not np.array_equal(again, other)
    assert again.min() == 0 and again.max() == 1  # the noise spans both colours
    tex = TextureSpec("checker", [[0.9, 0.1, 0.1], [0.1, 0.1, 0.9]], frequency=4)
    obj = ObjectSpec("cube", [0.5] * 3, [0.0, 0.5, 0.0], [0.0, 30.0, 0.0], MaterialSpec(0.5, 0.0, texture=tex))
    spec = manual_spec([obj], look_at([0.0, 1.5, 2.5], [0.0, 0.5, 0.0]), size=(48, 48))
    base = render.render_clip(spec, spp=1).basecolor[0]
    red = np.all(np.abs(base - [0.9, 0.1, 0.1]) < 2e-3, axis=-1)
    blue = np.all(np.abs(base - [0.1, 0.1, 0.9]) < 2e-3, axis=-1)
    assert red.sum() > 50 and blue.sum() > 50  # both checker colours appear, exactly (texel interiors)


# ---------------------------------------------------------------------------------------------------------------
# Environment orientation


def test_envmap_emitter_equals_the_package_convention_exactly() -> None:
    """Mitsuba's envmap radiance toward camera-frame direction d == the env condition pixel whose env_nrm is d."""
    hdri = resolve_envmap("sunny_vondelpark")[1]  # a real map with a sharp sun (clamped to 65504 by prepare_hdr)
    c2w = look_at([0.3, 0.5, 2.0], [0.0, 0.2, 0.0])  # yawed and tilted camera
    rotation, intensity, (h, w) = 37.0, 1.3, (128, 256)
    spec = manual_spec([], c2w, hdri=hdri, rotation=rotation, intensity=intensity, fov=90)
    scene = render.build_scene(mi, spec, 0, max_depth=1, spp=1)
    hdr = torch.from_numpy(read_hdr(hdri))
    angle, pose = torch.tensor([math.radians(rotation)]), torch.from_numpy(c2w[:3, :3]).float()[None]
    cond = project_envmap(hdr, h, w, angle, strength=intensity, c2w=pose, method="direct")[0].numpy()
    d_world = envmap_directions(h, w, dtype=torch.float64).numpy().reshape(-1, 3) @ c2w[:3, :3].T
    si = dr.zeros(mi.SurfaceInteraction3f, len(d_world))
    si.wi = mi.Vector3f(*(-d_world[:, k].astype(np.float32) for k in range(3)))  # a ray leaving along d
    value = np.array(scene.environment().eval(si)).T.reshape(h, w, 3)
    rel = np.abs(value - cond) / (cond + 1e-2)
    assert np.median(rel) < 1e-4 and rel.max() < 1e-2  # float32 rounding only (steep sun edges)
    assert cond.max() > 1e3  # the sun is in the comparison


@pytest.mark.parametrize(("kelvin", "mirror"), [(REFERENCE_KELVIN, False), (4000.0, True)])
def test_rendered_background_matches_the_package_lookup(tmp_path: Path, kelvin: float, mirror: bool) -> None:
    """A render of the bare environment equals envmap.py's lookup at the camera rays (smooth map: no aliasing);
    a warm, mirrored light is the mirrored map times its white-balance gain in the render as in the lookup."""
    import cv2

    small = cv2.resize(read_hdr(resolve_envmap("city")[1]), (32, 16), interpolation=cv2.INTER_AREA)
    hdri = write_hdr(tmp_path / "smooth.hdr", cv2.resize(small, (256, 128), interpolation=cv2.INTER_LINEAR))
    hdr = read_hdr(hdri)  # what the renderer reads (RGBE-quantised)
    hdr = torch.from_numpy((hdr[:, ::-1] if mirror else hdr) * white_balance_gain(kelvin).astype(np.float32))
    c2w = look_at([0.0, 0.0, 0.0], [-1.0, 0.4, -0.3])  # yaw and pitch
    rotation, intensity, fov, (h, w) = 63.0, 0.8, 100.0, (24, 32)
    spec = manual_spec([], c2w, hdri=hdri, rotation=rotation, intensity=intensity, fov=fov, size=(h, w))
    spec.lighting = replace(spec.lighting, kelvin=kelvin, mirror=mirror)
    rgb = render.render_clip(spec, spp=64, max_depth=1).rgb_linear[0]
    dirs = torch.from_numpy(pixel_directions(h, w, fov))

    def lookup(flip: bool = True, sign: float = 1.0, extra_deg: float = 0.0, camera: bool = True) -> np.ndarray:
        prepared = prepare_hdr(hdr, strength=intensity, flip=flip).double()
        pose = torch.from_numpy(c2w[:3, :3]) if camera else torch.eye(3, dtype=torch.float64)
        rot = rotate_y(sign * math.radians(rotation + extra_deg)) @ pose
        return sample_latlong(prepared, latlong_uv(dirs @ rot.T), wrap_v=False).numpy()

    def error(ref: np.ndarray) -> float:
        return float(np.mean(np.abs(rgb - ref)) / np.mean(ref))

    right = error(lookup())
    assert right < 0.01  # measured 0.45 %: box-filtered pixel footprint vs pixel-centre value, and noise
    # plausible wrong conventions measured 98 % (no flip), 50 % (rotation sign), 60 % (camera rotation ignored),
    # 94 % (half a turn off) and 4 % (2° off): the comparison pins the orientation to well below 2°
    for wrong in (lookup(flip=False), lookup(sign=-1.0), lookup(camera=False), lookup(extra_deg=180.0)):
        assert error(wrong) > 20 * right
    assert error(lookup(extra_deg=2.0)) > 4 * right


def test_environment_hdr_recomputes_the_conditions(clip: tuple[SceneSpec, render.ClipBuffers]) -> None:
    spec, buf = clip
    env = render.environment_hdr(spec, 8, 16, method="direct")
    assert env.shape == (2, 8, 16, 3)
    angles = torch.deg2rad(torch.from_numpy(buf.env_rotation_deg))
    hdr = read_hdr(spec.lighting.path)
    hdr = (hdr[:, ::-1] if spec.lighting.mirror else hdr) * spec.lighting.gain().astype(np.float32)
    c2w = torch.from_numpy(buf.c2w[:, :3, :3])
    direct = project_envmap(
        torch.from_numpy(hdr.copy()), 8, 16, angles, strength=spec.lighting.intensity, c2w=c2w, method="direct"
    )
    torch.testing.assert_close(env, direct)


# ---------------------------------------------------------------------------------------------------------------
# Motions, variants, convergence


def test_clip_motions_change_per_frame() -> None:
    light = sample_scene(3, resolution=(16, 16), num_frames=3, hdri_paths=HDRIS, motion="light_rotation")
    buf = render.render_clip(light, spp=1)
    assert np.all(np.abs(np.diff(buf.env_rotation_deg)) > 1.0)
    assert np.array_equal(buf.c2w[0], buf.c2w[-1]) and not np.array_equal(buf.rgb_linear[0], buf.rgb_linear[-1])
    orbit = sample_scene(3, resolution=(16, 16), num_frames=3, hdri_paths=HDRIS, motion="orbit")
    buf = render.render_clip(orbit, spp=1)
    assert all(not np.allclose(buf.c2w[t], buf.c2w[t + 1]) for t in range(2))
    assert np.ptp(buf.env_rotation_deg) == 0 and not np.array_equal(buf.depth[0], buf.depth[-1])


def test_unknown_variant_raises_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match="libllvm19"):
        render.load_mitsuba("no_such_variant")
    render.load_mitsuba("llvm_ad_rgb")


def test_noise_psnr_grows_with_spp() -> None:
    spec = sample_scene(2, resolution=(24, 24), hdri_paths=HDRIS, motion="static")
    low, high = render.noise_psnr(spec, 2), render.noise_psnr(spec, 32)
    assert 5 < low < high < 80
