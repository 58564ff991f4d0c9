"""Object insertion: mesh loading and rasterization (Mitsuba's CPU backend), placement, depth-tested compositing."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image

from conftest import require_mitsuba
from diffusion_renderer.apps.object_insertion import (
    Placement,
    composite_object,
    depth_to_z,
    insert_object,
    object_to_camera,
    parse_material,
    z_to_depth,
)
from diffusion_renderer.conventions import GBUFFER_KEYS, VALUE_RANGE, srgb_to_linear
from diffusion_renderer.io.errors import InputError
from diffusion_renderer.render.mesh_gbuffers import load_mesh, override_material, rasterize_gbuffers

require_mitsuba()
VARIANT = "llvm_ad_rgb"


def cube_file(tmp_path: Path, name: str = "cube.obj") -> Path:
    path = tmp_path / name
    trimesh.creation.box(extents=(1.0, 1.0, 1.0)).export(path)
    return path


def ndc_centres(count: int) -> np.ndarray:
    return (np.arange(count) + 0.5) / count * 2 - 1


def test_unit_cube_footprint_normals_and_depth(tmp_path: Path) -> None:
    """A unit cube 5 units in front of the camera covers the pixels whose centres project inside its front face."""
    height, width, fov = 48, 64, 60.0
    parts = override_material(load_mesh(cube_file(tmp_path)), basecolor=(0.2, 0.6, 0.4), roughness=0.3, metallic=1)
    pose = np.eye(4)
    pose[:3, 3] = (0.0, 0.0, -5.0)
    g = rasterize_gbuffers(parts, pose, height, width, fov, variant=VARIANT)

    tan_y = math.tan(math.radians(fov) / 2)
    half = 0.5 / 4.5  # the front face at z = 4.5, half a unit wide
    inside_x = np.abs(ndc_centres(width) * tan_y * width / height) < half
    inside_y = np.abs(ndc_centres(height) * tan_y) < half
    expected = inside_y[:, None] & inside_x[None, :]
    assert expected.sum() > 20
    np.testing.assert_array_equal(g["mask"][..., 0] > 0.5, expected)
    hit = expected
    np.testing.assert_allclose(g["depth"][hit], 4.5, atol=1e-4)
    np.testing.assert_allclose(g["normal"][hit], np.broadcast_to([0.0, 0.0, 1.0], (hit.sum(), 3)), atol=1e-5)
    np.testing.assert_allclose(g["basecolor"][hit], np.broadcast_to([0.2, 0.6, 0.4], (hit.sum(), 3)), atol=1e-4)
    np.testing.assert_allclose(g["roughness"][hit], 0.3, atol=1e-6)
    np.testing.assert_allclose(g["metallic"][hit], 1.0, atol=1e-6)
    assert (g["depth"][~hit] == 0).all() and (g["basecolor"][~hit] == 0).all()

    pose[:3, 3] = (1.0, 0.0, -5.0)  # one unit to the right (+x) moves the footprint right
    moved = rasterize_gbuffers(parts, pose, height, width, fov, variant=VARIANT)["mask"][..., 0] > 0.5
    assert np.nonzero(moved)[1].mean() > np.nonzero(expected)[1].mean() + 5


def test_materials_from_files(tmp_path: Path) -> None:
    """glTF factors are linear, its textures sRGB with v up; vertex colours sRGB; OBJ/MTL through trimesh."""
    texture = np.zeros((8, 8, 3), np.uint8)
    texture[:4] = (255, 0, 0)  # top half red
    texture[4:] = (0, 0, 255)
    quad = trimesh.Trimesh([[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0]], [[0, 1, 2], [0, 2, 3]], process=False)
    material = trimesh.visual.material.PBRMaterial(
        baseColorTexture=Image.fromarray(texture), baseColorFactor=[255, 255, 255, 255], roughnessFactor=0.7
    )
    uv = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], float)  # v up: the image's top row at v = 1
    quad.visual = trimesh.visual.TextureVisuals(uv=uv, material=material)
    quad.export(tmp_path / "quad.glb")
    pose = np.eye(4)
    pose[:3, 3] = (0.0, 0.0, -3.0)
    g = rasterize_gbuffers(load_mesh(tmp_path / "quad.glb"), pose, 32, 32, 60.0, variant=VARIANT)
    np.testing.assert_allclose(g["basecolor"][10, 16], [1, 0, 0], atol=1e-4)
    np.testing.assert_allclose(g["basecolor"][22, 16], [0, 0, 1], atol=1e-4)
    np.testing.assert_allclose(g["roughness"][16, 16], 0.7, atol=1e-6)

    ball = trimesh.creation.icosphere(subdivisions=2)
    ball.visual = trimesh.visual.TextureVisuals(
        material=trimesh.visual.material.PBRMaterial(baseColorFactor=[128, 64, 32, 255], metallicFactor=1.0)
    )
    ball.export(tmp_path / "ball.glb")
    (part,) = load_mesh(tmp_path / "ball.glb")
    np.testing.assert_allclose(part.basecolor_factor, np.array([128, 64, 32]) / 255)
    assert part.metallic == 1.0
    g = rasterize_gbuffers([part], pose, 16, 16, 60.0, variant=VARIANT)
    expected_srgb = np.array([128, 64, 32]) / 255  # linear factor -> the G-buffer's sRGB
    np.testing.assert_allclose(srgb_to_linear(g["basecolor"][8, 8]), expected_srgb, atol=1e-3)

    painted = trimesh.creation.box()
    painted.visual.vertex_colors = np.tile([255, 128, 0, 255], (len(painted.vertices), 1))
    painted.export(tmp_path / "painted.ply")
    g = rasterize_gbuffers(load_mesh(tmp_path / "painted.ply"), pose, 16, 16, 60.0, variant=VARIANT)
    np.testing.assert_allclose(g["basecolor"][8, 8], [1.0, 128 / 255, 0.0], atol=2e-3)


def test_bad_mesh_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such mesh file"):
        load_mesh(tmp_path / "missing.obj")
    junk = tmp_path / "junk.glb"
    junk.write_bytes(b"this is not a GLB file")
    with pytest.raises(InputError, match=r"junk\.glb: cannot read the mesh"):
        load_mesh(junk)
    empty = tmp_path / "empty.obj"
    empty.write_text("# nothing here\n")
    with pytest.raises(InputError, match=r"empty\.obj: the file holds no triangles"):
        load_mesh(empty)


def wall_scene(frames: int = 1, height: int = 40, width: int = 48, depth: float = 0.0) -> dict[str, np.ndarray]:
    """A flat scene facing the camera at one normalised depth; up normals (a floor seen from above)."""
    shape = (frames, height, width)
    return {
        "basecolor": np.full((*shape, 3), 0.5, np.float32),
        "normal": np.broadcast_to(np.array([0.0, 1.0, 0.0], np.float32), (*shape, 3)).copy(),
        "depth": np.full((*shape, 1), depth, np.float32),
        "roughness": np.full((*shape, 1), 0.5, np.float32),
        "metallic": np.zeros((*shape, 1), np.float32),
    }


def test_placement_stands_the_object_on_the_surface(tmp_path: Path) -> None:
    parts = load_mesh(cube_file(tmp_path))
    scene = wall_scene()
    placement = Placement(anchor=(24, 30), scale=0.3, fov_deg=50.0, depth_ratio=4.0)
    pose = object_to_camera(parts, scene, placement)
    rotation = pose[:3, :3] / np.linalg.norm(pose[:3, 0])
    np.testing.assert_allclose(rotation.T @ rotation, np.eye(3), atol=1e-9)  # a similarity: no shear
    np.testing.assert_allclose(rotation[:, 1], [0, 1, 0], atol=1e-9)  # up along the surface normal
    assert np.linalg.det(rotation) > 0

    z = depth_to_z(np.float32(0.0), 4.0)  # planar depth of the anchor
    bottom = pose @ np.array([0.0, -0.5, 0.0, 1.0])  # the cube's bottom centre
    assert bottom[2] == pytest.approx(-z)
    tan_y = math.tan(math.radians(50.0) / 2)
    x_px = (bottom[0] / z / (tan_y * 48 / 40) + 1) / 2 * 48 - 0.5
    y_px = (1 - bottom[1] / z / tan_y) / 2 * 40 - 0.5
    assert (x_px, y_px) == pytest.approx((24, 30), abs=1e-6)
    visible_height = 2 * z * tan_y
    assert np.linalg.norm(pose[:3, 0]) == pytest.approx(0.3 * visible_height)  # largest side / visible height

    turned = object_to_camera(parts, scene, Placement(anchor=(24, 30), scale=0.3, fov_deg=50.0, rotate_deg=90))
    np.testing.assert_allclose(turned[:3, 1], pose[:3, 1], atol=1e-9)  # same up, turned about it
    assert abs(np.dot(turned[:3, 0], pose[:3, 0])) < 1e-9


def test_insertion_is_occluded_by_nearer_scene_and_keeps_ranges(tmp_path: Path) -> None:
    parts = override_material(load_mesh(cube_file(tmp_path)), basecolor=(0.9, 0.1, 0.1), metallic=1.0)
    scene = wall_scene(frames=2, depth=0.2)
    scene["depth"][1, :, :24] = -1.0  # frame 1: something near the camera covers the left half
    placement = Placement(anchor=(24, 30), scale=0.4)
    inserted = insert_object(scene, parts, placement, variant=VARIANT)
    mask = inserted.mask[..., 0]
    assert mask[0].sum() > 30
    assert mask[0, :, :24].any() and mask[0, :, 24:].any()
    assert not mask[1, :, :24].any()  # hidden behind the nearer left half
    np.testing.assert_array_equal(mask[1, :, 24:], mask[0, :, 24:])
    for key in GBUFFER_KEYS:
        lo, hi = VALUE_RANGE[key]
        values = inserted.gbuffers[key]
        assert values.dtype == scene[key].dtype and values.min() >= lo and values.max() <= hi, key
        np.testing.assert_array_equal(values[~mask], scene[key][~mask], err_msg=key)
    np.testing.assert_allclose(inserted.gbuffers["basecolor"][mask], np.broadcast_to([0.9, 0.1, 0.1], (mask.sum(), 3)))
    normals = inserted.gbuffers["normal"][mask]
    np.testing.assert_allclose(np.linalg.norm(normals, axis=-1), 1.0, atol=1e-5)
    assert (inserted.gbuffers["depth"][0][mask[0]] < 0.2).all()  # the cube stands in front of the surface


def test_composite_depth_mapping_round_trips() -> None:
    d = np.linspace(-1, 1, 9)
    np.testing.assert_allclose(z_to_depth(depth_to_z(d, 3.0), 3.0), d, atol=1e-12)
    assert z_to_depth(np.array(0.5), 3.0) == -1.0  # nearer than the assumed near: clipped to the range
    scene = wall_scene(depth=0.0)
    obj = {k: np.zeros_like(v[0]) for k, v in scene.items()} | {"mask": np.zeros((40, 48, 1), np.float32)}
    out, visible = composite_object(scene, obj, 4.0)
    assert not visible.any() and all(np.array_equal(out[k], scene[k]) for k in scene)


def test_placement_errors(tmp_path: Path) -> None:
    parts = load_mesh(cube_file(tmp_path))
    with pytest.raises(ValueError, match=r"point \(48, 3\) is outside the 48x40 image"):
        insert_object(wall_scene(), parts, Placement(anchor=(48, 3)), variant=VARIANT)
    with pytest.raises(ValueError, match="frame 2 is outside"):
        insert_object(wall_scene(), parts, Placement(anchor=(3, 3), frame=2), variant=VARIANT)
    with pytest.raises(ValueError, match="lack metallic"):
        insert_object({k: v for k, v in wall_scene().items() if k != "metallic"}, parts, Placement(anchor=(3, 3)))
    for bad in ({"scale": 0}, {"up": "x"}, {"depth_ratio": 1.0}, {"fov_deg": 0.5}):
        with pytest.raises(ValueError):
            Placement(anchor=(1, 1), **bad)


def test_material_presets_and_overrides() -> None:
    gold = parse_material(["gold"])
    assert gold["metallic"] == 1.0 and gold["basecolor"][0] > gold["basecolor"][2]
    mixed = parse_material(["gold", "roughness=0.6", "basecolor=#808080"])
    assert mixed["roughness"] == 0.6 and mixed["basecolor"] == (128 / 255,) * 3 and mixed["metallic"] == 1.0
    for bad, message in (("wood", "unknown material"), ("roughness=2", "in \\[0, 1\\]"), ("shine=1", "unknown key")):
        with pytest.raises(ValueError, match=message):
            parse_material([bad])
