"""Data engine extras: sun-sky lighting baked to an equirect map, procedural normal maps, and the new shapes.

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
    SHAPES,
    CameraSpec,
    LightingSpec,
    MaterialSpec,
    NormalMapSpec,
    ObjectSpec,
    SceneSpec,
    euler_matrix,
    light_direction,
    look_at,
    make_normal_map,
    object_mesh,
    sample_scene,
    shape_mesh,
    trimesh_available,
)
from diffusion_renderer.lighting.envmap import latlong_uv, prepare_hdr, project_envmap, sample_latlong
from diffusion_renderer.lighting.presets import list_presets, resolve_envmap

render = require_mitsuba()
mi = pytest.importorskip("mitsuba")

HDRIS = [resolve_envmap(name)[1] for name in list_presets()]
NEW_SHAPES = ("rounded_box", "bumpy_sphere", "cone", "annulus", "blob")


def sky(elevation: float = 30.0, azimuth: float = 60.0, frames: int = 1) -> LightingSpec:
    return LightingSpec("sunsky", "", 1.0, 0.0, [0.0] * frames, "sunsky", elevation, azimuth, 3.0, 0.3)


def spec_of(objects: list[ObjectSpec], c2w: np.ndarray, light: LightingSpec, *, ground=None, size=(32, 32)):
    return SceneSpec(0, list(size), 1, "static", ground, objects, CameraSpec(45.0, [c2w.tolist()]), light, spp=4)


def grey(normal_map: NormalMapSpec | None = None) -> MaterialSpec:
    return MaterialSpec(0.5, 0.0, basecolor_rgb=[0.5, 0.5, 0.5], normal_map=normal_map)


# ---------------------------------------------------------------------------------------------------------------
# Sun and sky


@pytest.mark.parametrize(("elevation", "azimuth"), [(30.0, 60.0), (10.0, 250.0), (65.0, 180.0)])
def test_baked_sky_is_bright_at_the_sun(elevation: float, azimuth: float) -> None:
    light = sky(elevation, azimuth)
    hdr = render.read_environment(spec_of([], np.eye(4), light))
    h, w = hdr.shape[:2]
    assert (h, w) == (256, 512) and hdr.dtype == np.float32 and np.isfinite(hdr).all() and hdr.min() >= 0
    # the package convention: prepare_hdr(F) (width flip + half-turn roll) is looked up at latlong_uv(direction)
    e, a = math.radians(elevation), math.radians(azimuth)
    sun = torch.tensor([math.cos(e) * math.sin(a), math.sin(e), math.cos(e) * math.cos(a)], dtype=torch.float64)
    u, v = latlong_uv(sun).tolist()
    row, col_prepared = int(v * h), int(u * w) % w
    col = (w - 1 - (col_prepared - w // 2)) % w  # undo the roll, then the flip
    i, j = np.unravel_index(hdr.sum(-1).argmax(), (h, w))
    assert abs(i - row) <= 1 and min(abs(j - col), w - abs(j - col)) <= 1
    peak = hdr.sum(-1).max()
    assert 100 * np.median(hdr[: h // 2].sum(-1)) < peak <= 3 * 65504 / 2  # a bright, unclamped sun
    lookup = sample_latlong(prepare_hdr(torch.from_numpy(hdr)).double(), latlong_uv(sun), wrap_v=False)
    assert lookup.sum() > 0.3 * peak  # the package's own lookup sees the sun at the spec's direction
    assert np.array_equal(hdr, render.read_environment(spec_of([], np.eye(4), light)))  # deterministic


def test_sunsky_scene_renders_and_recomputes_its_conditions() -> None:
    ball = ObjectSpec("sphere", [0.4] * 3, [0.0, 0.4, 0.0], [0.0, 0.0, 0.0], grey())
    c2w = look_at([0.0, 1.0, 2.5], [0.0, 0.4, 0.0])
    spec = spec_of([ball], c2w, sky(40.0, 20.0), ground=grey())
    a = render.render_clip(spec, spp=4)
    b = render.render_clip(SceneSpec.from_dict(json.loads(json.dumps(spec.to_dict()))), spp=4)
    assert np.isfinite(a.rgb_linear).all() and a.rgb_linear.min() >= 0 and a.rgb_linear.mean() > 0
    for key in ("basecolor", "normal", "depth", "mask"):
        assert np.array_equal(getattr(a, key), getattr(b, key))
    env = render.environment_hdr(spec, 8, 16, method="direct")
    hdr = torch.from_numpy(render.bake_sunsky(spec.lighting))
    c2w_t = torch.tensor(spec.camera.c2w, dtype=torch.float64)[:, :3, :3]
    direct = project_envmap(hdr, 8, 16, torch.zeros(1, dtype=torch.float64), strength=1.0, c2w=c2w_t, method="direct")
    torch.testing.assert_close(env, direct)


@pytest.mark.parametrize(("elevation", "azimuth"), [(20.0, 60.0), (-5.0, 250.0)])
def test_procedural_map_is_bright_at_its_light(elevation: float, azimuth: float) -> None:
    sky = [0.2, 0.3, 0.5, 0.05, 0.04, 0.03]
    lights = [sky, [azimuth, elevation, 4.0, 50, 40, 30]]
    light = LightingSpec("procedural", "", 1.0, 0.0, [0.0], "procedural", procedural=lights)
    hdr = render.read_environment(spec_of([], np.eye(4), light))
    prepared = prepare_hdr(torch.from_numpy(hdr)).double()
    assert hdr.dtype == np.float32 and np.isfinite(hdr).all() and hdr.min() >= 0
    e, a = math.radians(elevation), math.radians(azimuth)
    direction = torch.tensor([math.cos(e) * math.sin(a), math.sin(e), math.cos(e) * math.cos(a)], dtype=torch.float64)
    lookup = sample_latlong(prepared, latlong_uv(direction), wrap_v=False)
    assert lookup.tolist() == pytest.approx([50.0 + sky[3], 40.0 + sky[4], 30.0 + sky[5]], rel=0.1)  # the lobe's peak
    away = sample_latlong(prepared, latlong_uv(-direction), wrap_v=False)
    assert away.max() < 1.0  # the gradient only, on the far side
    top = sample_latlong(prepared, latlong_uv(torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)), wrap_v=False)
    if elevation < 0:  # a light below the horizon leaves the zenith to the sky
        assert top.tolist() == pytest.approx(sky[:3], rel=0.02)
    tinted = render.read_environment(spec_of([], np.eye(4), replace(light, kelvin=3500.0, mirror=True)))
    from diffusion_renderer.lighting.white_balance import white_balance_gain

    np.testing.assert_allclose(tinted, hdr[:, ::-1] * white_balance_gain(3500.0).astype(np.float32), rtol=1e-6)


@pytest.mark.parametrize("family", ["night", "key", "area"])
def test_small_procedural_lights_keep_their_power_in_the_bake(family: str) -> None:
    from diffusion_renderer.data import scenes

    # the family's sampler, its least irradiance per light, how far its lights' peaks stand above its sky at least
    sample, least, contrast = {
        "night": (scenes.sample_night, 0.3, 100),
        "key": (scenes.sample_key, 2.0, 30),
        "area": (scenes.sample_area, 1.0, 1),
    }[family]
    for seed in range(4):
        rows = sample(np.random.default_rng(seed))
        for lamp in rows[1:]:  # each lamp alone on a black sky: its irradiance at normal incidence survives
            light = LightingSpec(
                f"procedural_{family}", "", 1.0, 0.0, [0.0], "procedural", procedural=[[0.0] * 6, lamp]
            )
            hdr = render.bake_procedural(light).astype(np.float64)  # (H, W, 3)
            height, width = hdr.shape[:2]
            theta = (np.arange(height) + 0.5) / height * np.pi
            solid_angle = np.sin(theta)[:, None] * (np.pi / height) * (2 * np.pi / width)  # (H, 1) per texel
            irradiance = (hdr * solid_angle[..., None]).sum((0, 1))  # cosine ~1 within a few sigma
            if family == "area":  # radiance over the superellipse
                stated = np.asarray(lamp[6:]) * scenes.superellipse_solid_angle(*lamp[2:5])
            else:  # peak radiance of a small Gaussian lobe
                stated = np.asarray(lamp[3:]) * 2 * math.pi * math.radians(lamp[2]) ** 2
            np.testing.assert_allclose(irradiance, stated, rtol=0.03)
            assert stated.mean() >= least * 0.9 and hdr.max() > contrast * max(rows[0])


def test_a_lit_street_holds_its_share_of_the_lamps_power_below_the_horizon_only() -> None:
    from diffusion_renderer.data import scenes
    from diffusion_renderer.render.splitsum import equirect_solid_angles

    for seed in range(3):
        rng = np.random.default_rng(seed)
        night = scenes.sample_night(rng)
        drawn = rng.uniform(*scenes.STREET_POWER)
        street = scenes.lit_street(night, drawn)
        bakes = [
            render.bake_procedural(
                LightingSpec("procedural_night", "", 1.0, 0.0, [0.0], "procedural", procedural=rows)
            )
            for rows in (night, [night[0] + street, *night[1:]])
        ]
        dark, lit = (b.astype(np.float64) for b in bakes)  # (H, W, 3)
        half = dark.shape[0] // 2
        assert np.array_equal(lit[:half], dark[:half])  # the sky and the lamps above the horizon are untouched
        texel_sr = equirect_solid_angles(*dark.shape[:2], dtype=torch.float64).numpy()[..., None]  # (H, 1, 1)
        added = ((lit - dark) * texel_sr).sum((0, 1))  # (3,) power of the street
        lamps = sum(np.asarray(r[3:]) * scenes.gaussian_lobe_solid_angle(math.radians(r[2])) for r in night[1:])
        share = added / lamps
        assert np.allclose(share, share[0], rtol=1e-3)  # the lamps' colour
        assert share[0] == pytest.approx(drawn, rel=1e-3)
        assert scenes.STREET_POWER[0] * 0.99 <= share[0] <= scenes.STREET_POWER[1] * 1.01


@pytest.mark.parametrize("values", [3, 7, 12])
def test_a_sky_row_of_another_length_is_refused(values: int) -> None:
    sky = LightingSpec("procedural", "", 1.0, 0.0, [0.0], "procedural", procedural=[[0.1] * values])
    with pytest.raises(ValueError, match=f"sky row of {values} values"):
        render.bake_procedural(sky)


def test_superellipse_solid_angles_match_their_closed_forms() -> None:
    from diffusion_renderer.data.scenes import superellipse_solid_angle

    a, b = 12.0, 5.0
    cap = 2 * math.pi * (1 - math.cos(math.radians(a)))  # a circle of angular radius a: a spherical cap
    assert superellipse_solid_angle(a, a, 2.0) == pytest.approx(cap, rel=1e-6)
    small = math.radians(a) * math.radians(b)  # small shapes: the plane areas of a diamond, ellipse and rectangle
    assert superellipse_solid_angle(a, b, 1.0) == pytest.approx(2 * small, rel=0.01)
    assert superellipse_solid_angle(a, b, 2.0) == pytest.approx(math.pi * small, rel=0.01)
    assert superellipse_solid_angle(a, b, 400.0) == pytest.approx(4 * small, rel=0.01)


@pytest.mark.parametrize("roll", [0.0, 90.0])
def test_an_area_light_is_sharp_edged_and_turned_by_its_roll(roll: float) -> None:
    """A 20° x 8° half-size rectangle 30° up: 13° to the side it covers (width along the horizon at roll 0), 13°
    higher it does not; at roll 90° the other way round. Its edge ramps over one texel."""
    elevation, texel = 30.0, math.radians(0.5)
    axis = light_direction(0.0, elevation)
    side = light_direction(13.0 / math.cos(math.radians(elevation)), elevation)  # ~13° along the horizon
    up = light_direction(0.0, elevation + 13.0)
    d = np.stack([axis, side, up, -axis])
    mask = render.area_light_mask(d, 0.0, elevation, 20.0, 8.0, roll, 16.0, texel)
    assert mask[0] == 1.0 and mask[3] == 0.0
    assert (mask[1], mask[2]) == ((1.0, 0.0) if roll == 0.0 else (0.0, 1.0))
    # along the width, across the edge at 20°: 0.25° inside 1, on it 1/2, 0.25° outside 0
    turned = [light_direction(0.0, elevation + t) for t in (19.75, 20.0, 20.25)]
    edge = render.area_light_mask(np.stack(turned), 0.0, elevation, 20.0, 8.0, 90.0, 16.0, texel)
    np.testing.assert_allclose(edge, [1.0, 0.5, 0.0], atol=1e-6)


def test_procedural_scene_renders_and_recomputes_its_conditions() -> None:
    kinds = (sample_scene(s, resolution=(16, 16), hdri_paths=HDRIS).lighting.kind for s in range(200))
    seed = next(s for s, kind in enumerate(kinds) if kind == "procedural")
    spec = sample_scene(seed, resolution=(24, 24), hdri_paths=HDRIS, spp=4)
    buffers = render.render_clip(spec, spp=4)
    assert np.isfinite(buffers.rgb_linear).all() and buffers.rgb_linear.mean() > 0
    env = render.environment_hdr(spec, 8, 16, method="direct")
    hdr = torch.from_numpy(render.read_environment(spec))
    c2w = torch.tensor(spec.camera.c2w, dtype=torch.float64)[:, :3, :3]
    angles = torch.deg2rad(torch.from_numpy(spec.lighting.angles_deg()))
    expected = project_envmap(hdr, 8, 16, angles, strength=spec.lighting.intensity, c2w=c2w, method="direct")
    torch.testing.assert_close(env, expected)


def test_sample_scene_chooses_sunsky_sometimes() -> None:
    kinds = [sample_scene(s, resolution=(16, 16), hdri_paths=HDRIS).lighting.kind for s in range(40)]
    assert 2 <= kinds.count("sunsky") <= 20 and "hdri" in kinds
    seed = kinds.index("sunsky")
    a = sample_scene(seed, resolution=(16, 16), hdri_paths=HDRIS)
    assert a.to_dict() == sample_scene(seed, resolution=(16, 16), hdri_paths=HDRIS).to_dict()
    assert 5 <= a.lighting.sun_elevation_deg <= 70 and a.lighting.path == ""
    old = a.to_dict()
    for key in ("kind", "sun_elevation_deg", "sun_azimuth_deg", "turbidity", "sky_albedo"):
        old["lighting"].pop(key)
    assert SceneSpec.from_dict(old).lighting.kind == "hdri"  # specs written before these fields still load


# ---------------------------------------------------------------------------------------------------------------
# Normal maps


def test_normal_map_is_seeded_unit_and_tileable() -> None:
    nm = NormalMapSpec("noise", 4, 0.6, seed=3)
    a, b = make_normal_map(nm, 32), make_normal_map(nm, 32)
    assert np.array_equal(a, b) and not np.array_equal(a, make_normal_map(NormalMapSpec("noise", 4, 0.6, seed=4), 32))
    n = 2.0 * a.astype(np.float64) - 1.0
    np.testing.assert_allclose(np.linalg.norm(n, axis=-1), 1.0, atol=1e-6)
    assert n[..., 2].min() >= math.cos(math.atan(0.6)) - 1e-6  # tilt at most atan(strength)
    bumps = 2.0 * make_normal_map(NormalMapSpec("bumps", 2, 0.5), 64).astype(np.float64) - 1.0
    assert math.isclose(math.degrees(math.acos(bumps[..., 2].min())), math.degrees(math.atan(0.5)), abs_tol=1e-3)


def test_constant_normal_map_tilts_the_ground_gbuffer_normal(monkeypatch: pytest.MonkeyPatch) -> None:
    tilt = math.radians(25.0)
    tangent = np.array([math.sin(tilt), 0.0, math.cos(tilt)])  # tilted toward +u (Mitsuba's dp_du)
    colour = (0.5 * tangent + 0.5).astype(np.float32)
    monkeypatch.setattr(render, "make_normal_map", lambda nm: np.broadcast_to(colour, (8, 8, 3)).copy())
    c2w = look_at([0.3, 1.0, 3.0], [0.0, 0.0, 0.0])
    flat = render.render_clip(spec_of([], c2w, sky(), ground=grey(), size=(24, 32)), spp=1)
    bumped = render.render_clip(spec_of([], c2w, sky(), ground=grey(NormalMapSpec("bumps")), size=(24, 32)), spp=1)
    mask = bumped.mask[0, ..., 0] > 0
    assert mask.sum() > 100 and np.array_equal(mask, flat.mask[0, ..., 0] > 0)
    # ground: local rectangle x -> world +x (dp_du), normal -> world +y; so the tilted normal is (sin, cos, 0)
    expected = c2w[:3, :3].T @ np.array([math.sin(tilt), math.cos(tilt), 0.0])
    view = -render.camera_directions(24, 32, 45.0)  # toward the camera, camera frame
    n = bumped.normal[0][mask]
    np.testing.assert_allclose(np.linalg.norm(n, axis=-1), 1.0, atol=1e-5)
    assert (np.einsum("nk,nk->n", n, view[mask]) > 0).all(), "normals face the camera"
    # near the horizon the tilted normal turns away from the camera and is bent to just front-facing (as documented)
    front = mask & (view @ expected > 0.01)
    assert front.sum() > 0.8 * mask.sum()
    n = bumped.normal[0][front]
    np.testing.assert_allclose(n, np.broadcast_to(expected, n.shape), atol=1e-4)
    angle = np.degrees(np.arccos(np.clip(np.einsum("nk,nk->n", n, flat.normal[0][front]), -1, 1)))
    np.testing.assert_allclose(angle, 25.0, atol=0.05)
    np.testing.assert_allclose(bumped.basecolor[0][mask], 0.5, atol=2e-4)  # attributes of the wrapped BSDF
    np.testing.assert_allclose(bumped.roughness[0][mask], 0.5, atol=1e-6)


def test_normal_mapped_objects_have_unit_front_facing_normals() -> None:
    nm = NormalMapSpec("noise", 3, 0.8, seed=7, uv_scale=2.0)
    ball = ObjectSpec("sphere", [0.5] * 3, [0.0, 0.5, 0.0], [0.0, 0.0, 0.0], grey(nm))
    c2w = look_at([0.0, 1.0, 2.0], [0.0, 0.5, 0.0])
    plain = render.render_clip(spec_of([ball], c2w, sky(), size=(32, 32)), spp=1)
    ball.material.normal_map = None
    ref = render.render_clip(spec_of([ball], c2w, sky(), size=(32, 32)), spp=1)
    mask = plain.mask[0, ..., 0] > 0
    n = plain.normal[0][mask]
    np.testing.assert_allclose(np.linalg.norm(n, axis=-1), 1.0, atol=1e-5)
    assert np.abs(n - ref.normal[0][mask]).max() > 0.1  # perturbed
    d = render.camera_directions(32, 32, 45.0)[mask]
    assert (np.einsum("nk,nk->n", n, -d) > 0).all()


# ---------------------------------------------------------------------------------------------------------------
# Shapes


@pytest.mark.parametrize("shape", NEW_SHAPES)
def test_new_shapes_rest_on_the_ground_with_outward_normals(shape: str) -> None:
    assert shape in SHAPES
    mesh = shape_mesh(shape, 5, "trimesh")
    v, n, f = mesh.vertices.astype(np.float64), mesh.normals.astype(np.float64), mesh.faces.astype(np.int64)
    assert np.abs(v).max() <= 1.0 + 1e-6 and mesh.uvs.shape == (len(v), 2)
    np.testing.assert_allclose(np.linalg.norm(n, axis=-1), 1.0, atol=1e-5)
    face_n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    volume = np.einsum("fk,fk->f", v[f[:, 0]], face_n).sum() / 6
    assert volume > 0.5, "faces wind counter-clockwise seen from outside"
    agree = np.einsum("fk,fjk->fj", face_n / np.linalg.norm(face_n, axis=-1, keepdims=True), n[f])
    assert (agree > 0).mean() > 0.999 and agree.min() > -0.2, "vertex normals point outward, like their faces"
    for seed in range(6):
        spec = sample_scene(seed, resolution=(16, 16), hdri_paths=HDRIS, motion="static")
        for obj in spec.objects:
            m = obj.to_world()
            lowest = (object_mesh(obj).vertices.astype(np.float64) @ m[:3, :3].T + m[:3, 3])[:, 1].min()
            assert abs(lowest) < 1e-6
    obj = ObjectSpec(shape, [0.4, 0.5, 0.4], [0, 0, 0], [20.0, 40.0, 0.0], grey(), shape_seed=5, mesh_source="trimesh")
    low = object_mesh(obj).vertices.astype(np.float64) @ (euler_matrix(obj.rotation_deg) @ np.diag(obj.size)).T
    obj.position = [0.0, float(-low[:, 1].min()), 0.0]
    m = obj.to_world()
    assert abs((object_mesh(obj).vertices @ m[:3, :3].T + m[:3, 3])[:, 1].min()) < 1e-6
    c2w = look_at([0.0, 0.8, 2.0], [0.0, 0.3, 0.0])
    buf = render.render_clip(spec_of([obj], c2w, sky(), ground=grey(), size=(24, 24)), spp=2)
    on_obj = buf.mask[0, ..., 0] > 0
    assert np.isfinite(buf.rgb_linear).all() and np.abs(buf.normal[0][on_obj]).sum() > 0
    assert (np.abs(buf.normal[0, 4:18, 6:18, 1] - buf.normal[0, -1, 0, 1]) > 1e-3).any(), "the object is visible"


def test_shape_choice_does_not_depend_on_trimesh(monkeypatch: pytest.MonkeyPatch) -> None:
    import diffusion_renderer.data.scenes as scenes

    with_tm = [sample_scene(s, resolution=(16, 16), hdri_paths=HDRIS) for s in range(12)]
    monkeypatch.setattr(scenes, "trimesh_available", lambda: False)
    without = [sample_scene(s, resolution=(16, 16), hdri_paths=HDRIS) for s in range(12)]
    for a, b in zip(with_tm, without, strict=True):
        assert [o.shape for o in a.objects] == [o.shape for o in b.objects]
        assert [o.shape_seed for o in a.objects] == [o.shape_seed for o in b.objects]
        assert all(o.mesh_source == "numpy" for o in b.objects)
    shapes = {o.shape for s in with_tm + without for o in s.objects}
    assert len(shapes) >= 5
    if trimesh_available():
        assert any(o.mesh_source == "trimesh" for s in with_tm for o in s.objects)


def test_device_carry_keeps_one_variant_and_the_named_plugins(tmp_path) -> None:
    """tools/make_device_carry.py: from the wheels it keeps the CUDA and scalar_rgb variant modules, the given
    plugins, the core libraries (with their exec bits) and drops the other variants, plugins and headers."""
    import stat
    import tarfile
    import zipfile

    from test_training import load_tool

    tool = load_tool("make_device_carry")
    so = ".cpython-312-x86_64-linux-gnu.so"
    members = {
        "mitsuba": [f"mitsuba/cuda_ad_rgb{so}", f"mitsuba/llvm_ad_rgb{so}", f"mitsuba/scalar_rgb{so}",
                    f"mitsuba/scalar_spectral{so}", "mitsuba/libmitsuba.so", "mitsuba/plugins/path.so",
                    "mitsuba/plugins/volpath.so", "mitsuba/include/mitsuba/core.h", "mitsuba/data/srgb.coeff",
                    "mitsuba/python/test/test_x.py", "mitsuba-3.9.1.dist-info/METADATA"],
        "drjit": [f"drjit/_drjit_ext{so}", "drjit/include/drjit/array.h", "drjit/__init__.py"],
    }  # fmt: skip
    wheels = []
    for name, files in members.items():
        wheels.append(tmp_path / f"{name}-1.0-cp312-cp312-manylinux_2_28_x86_64.whl")
        with zipfile.ZipFile(wheels[-1], "w") as wheel:
            for member in files:
                info = zipfile.ZipInfo(member)
                info.external_attr = (0o755 if member.endswith(".so") else 0o644) << 16
                wheel.writestr(info, member)
    out = tmp_path / "site.tar.xz"
    counts = tool.pack_site(wheels, out, "cuda_ad_rgb", {"path"})
    with tarfile.open(out) as tar:
        files = {m.name: m for m in tar.getmembers() if m.isfile()}
    assert set(files) == {
        f"mitsuba/cuda_ad_rgb{so}", f"mitsuba/scalar_rgb{so}", "mitsuba/libmitsuba.so", "mitsuba/plugins/path.so",
        "mitsuba/data/srgb.coeff", "mitsuba-3.9.1.dist-info/METADATA", f"drjit/_drjit_ext{so}", "drjit/__init__.py",
    }  # fmt: skip
    assert counts == {"kept": 8, "dropped": 6, "kept_bytes": sum(len(name) for name in files)}
    assert files["mitsuba/libmitsuba.so"].mode & stat.S_IXUSR and not files["drjit/__init__.py"].mode & stat.S_IXUSR
    assert not list(tmp_path.glob(".site*"))  # written atomically: no temporary left


def test_device_carry_finds_the_plugins_a_clip_loads() -> None:
    """The plugins are measured by rendering in a subprocess: the scene builder's integrator, camera, film and
    environment light are among them, a volumetric integrator that nothing asks for is not."""
    from test_training import load_tool

    plugins = set(load_tool("make_device_carry").discover_plugins(scenes=1, train_hdri_dir=None))
    assert {"path", "perspective", "hdrfilm", "envmap", "principled", "multijitter"} <= plugins
    assert "volpath" not in plugins
    assert plugins <= {p.stem for p in (Path(mi.__file__).parent / "plugins").glob("*.so")}
