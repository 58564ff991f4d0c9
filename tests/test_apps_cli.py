"""``edit`` and ``insert`` end to end on the bundled example with the shipped and random tiny models."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image

from conftest import REPO, cli_errors, require_mitsuba, run_cli
from diffusion_renderer.cli.render import strength_suffix
from diffusion_renderer.io.gbuffer_files import read_gbuffer_frame
from diffusion_renderer.io.images import read_image

COFFEE = REPO / "examples" / "coffee.png"  # 600 x 400
FAST = ["--resolution", "64", "--steps", "1", "--quiet", "--envmap-method", "direct", "--envmap", "street_lamp"]
PASSES = ("basecolor", "normal", "depth", "roughness", "metallic")


def gbuffer(out: Path, clip: str, key: str) -> np.ndarray:
    return read_gbuffer_frame(out / "gbuffer_frames" / clip / f"0000.0000.{key}.png", key)


@pytest.fixture
def cup_mask(tmp_path: Path) -> Path:
    mask = np.zeros((400, 600), np.uint8)
    mask[120:330, 150:420] = 255
    path = tmp_path / "mask.png"
    Image.fromarray(mask).save(path)
    return path


def test_edit_changes_only_the_masked_pixels_and_resumes(tmp_path: Path, capsys, cup_mask: Path) -> None:
    out = tmp_path / "out"
    edit = ["--mask", cup_mask, "--roughness", "0.05", "--metallic", "1", "--basecolor", "#3060c0"]
    code, lines = run_cli(capsys, "edit", COFFEE, "--out", out, *edit, "--model", "random:tiny", *FAST)
    assert code == 0, lines
    selected = np.asarray(Image.open(cup_mask)) > 127
    for key in PASSES:
        before, after = gbuffer(out, "coffee", key), gbuffer(out, "coffee_edited", key)
        assert before.shape[:2] == (400, 600)
        np.testing.assert_array_equal(after[~selected], before[~selected], err_msg=key)
    inner = np.zeros_like(selected)
    inner[125:325, 155:415] = True  # away from the feathered edge: the new values exactly
    np.testing.assert_allclose(gbuffer(out, "coffee_edited", "roughness")[inner], 0.05, atol=1 / 255)
    np.testing.assert_allclose(gbuffer(out, "coffee_edited", "metallic")[inner], 1.0, atol=1 / 255)
    np.testing.assert_allclose(gbuffer(out, "coffee_edited", "basecolor")[inner][0], [48 / 255, 96 / 255, 192 / 255])
    np.testing.assert_array_equal(gbuffer(out, "coffee_edited", "mask")[..., 0] > 0.5, selected)
    for clip in ("coffee", "coffee_edited"):
        assert (out / clip / "0000.0000.street_lamp.png").is_file()
    assert (out / "coffee_edited.contact_sheet.png").is_file()

    code, lines = run_cli(capsys, "edit", COFFEE, "--out", out, *edit, "--model", "random:tiny", *FAST)
    assert code == 0 and "0 done, 2 skipped" in lines[-1]
    stamp = (out / "coffee" / "0000.0000.street_lamp.png").stat().st_mtime_ns
    edit[3] = "0.6"  # another roughness: the edited scene is rendered again, the original is not
    code, lines = run_cli(capsys, "edit", COFFEE, "--out", out, *edit, "--model", "random:tiny", *FAST)
    assert code == 0 and "1 done, 1 skipped" in lines[-1]
    assert (out / "coffee" / "0000.0000.street_lamp.png").stat().st_mtime_ns == stamp
    np.testing.assert_allclose(gbuffer(out, "coffee_edited", "roughness")[inner], 0.6, atol=1 / 255)


def test_edit_by_colour_selection_on_a_gbuffer_folder(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    code, lines = run_cli(capsys, "inverse", COFFEE, "--out", tmp_path / "inv", "--model", "tiny", *FAST[:5])
    assert code == 0, lines
    folder = tmp_path / "inv" / "gbuffer_frames" / "coffee"
    args = ["--select-at", 300, 200, "--tolerance", 0.15, "--hue-shift", 180, "--model", "tiny", *FAST]
    code, lines = run_cli(capsys, "edit", folder, "--out", out, *args)
    assert code == 0, lines
    mask = gbuffer(out, "coffee_edited", "mask")[..., 0] > 0.5
    assert mask[200, 300] and 0 < mask.mean() < 1
    before, after = gbuffer(tmp_path / "inv", "coffee", "basecolor"), gbuffer(out, "coffee_edited", "basecolor")
    np.testing.assert_array_equal(after[~mask], before[~mask])
    assert not (before[mask] == after[mask]).all(axis=-1).all()
    assert not (out / "gbuffer_frames" / "coffee").exists()  # the given G-buffers are used, not re-estimated


def test_auto_light_strength_renders_the_edit_under_the_source_light(tmp_path: Path, capsys, cup_mask: Path) -> None:
    """`--light-strength auto` matches the unedited clip to its input, and renders the edit at that same factor, so
    the edit's change of level shows: given back as a number, the factor renders both frames again exactly."""
    out = tmp_path / "out"
    edit = ["--mask", cup_mask, "--basecolor", "#3060c0", "--model", "random:tiny"]
    args = ["edit", COFFEE, "--out", out, *edit, *FAST]
    assert run_cli(capsys, *args)[0] == 0  # the G-buffers as the later runs read them back (8/16-bit files)
    assert run_cli(capsys, *args, "--light-strength", "auto")[0] == 0
    chosen = json.loads((out / "coffee.light_strength.json").read_text())
    assert list(chosen) == ["street_lamp_auto"] and not (out / "coffee_edited.light_strength.json").exists()
    factor = chosen["street_lamp_auto"]
    assert run_cli(capsys, *args, "--light-strength", repr(factor))[0] == 0
    for clip in ("coffee", "coffee_edited"):
        auto, given = (
            read_image(out / clip / f"0000.0000.street_lamp{s}.png") for s in ("_auto", strength_suffix(factor))
        )
        np.testing.assert_array_equal(auto, given)

    assert run_cli(capsys, "inverse", COFFEE, "--out", tmp_path / "inv", "--model", "random:tiny", *FAST[:5])[0] == 0
    folder = tmp_path / "inv" / "gbuffer_frames" / "coffee"
    code, lines = run_cli(capsys, "edit", folder, *args[2:], "--light-strength", "auto")
    assert code == 1 and len(cli_errors(lines)) == 1 and "needs the input image" in cli_errors(lines)[0]


def test_edit_bad_inputs_give_one_line(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    small = tmp_path / "small.png"
    Image.fromarray(np.full((10, 20), 255, np.uint8)).save(small)
    empty = tmp_path / "empty.png"
    Image.fromarray(np.zeros((400, 600), np.uint8)).save(empty)
    cases = [
        (["--mask", small, "--metallic", "1"], 1, "small.png: the mask is 20x10, the G-buffers are 600x400"),
        (["--mask", empty, "--metallic", "1"], 1, "empty.png: the selection is empty"),
        (["--metallic", "1"], 2, "say where to edit"),
        (["--mask", small], 2, "nothing to edit"),
        (["--mask", small, "--roughness", "3"], 2, "roughness must be in [0, 1]"),
    ]
    for extra, status, message in cases:
        code, lines = run_cli(capsys, "edit", COFFEE, "--out", out, *extra, "--model", "random:tiny", *FAST)
        assert code == status and len(cli_errors(lines)) == 1 and message in cli_errors(lines)[0], (extra, lines)


def test_insert_with_the_shipped_model(tmp_path: Path, capsys) -> None:
    require_mitsuba()
    ball = trimesh.creation.icosphere(subdivisions=2, radius=0.5)
    ball.export(tmp_path / "ball.ply")
    out = tmp_path / "out"
    args = ["--object", tmp_path / "ball.ply", "--at", 200, 300, "--scale", 0.3, "--material", "gold"]
    at_256 = [*FAST[2:], "--resolution", "256"]  # the shipped model's own size: its surface estimate holds there
    code, lines = run_cli(capsys, "insert", COFFEE, "--out", out, *args, "--model", "tiny", *at_256)
    assert code == 0, lines
    mask = gbuffer(out, "coffee_inserted", "mask")[..., 0] > 0.5
    ys, xs = np.nonzero(mask)
    width = xs.max() - xs.min()
    assert 0.2 * 400 < width < 0.4 * 400  # a ball 0.3 of the image height across
    # it covers the anchor pixel (the contact point is under the ball). Where exactly it sits depends on the
    # estimated normal and depth; the geometry is tested on known G-buffers in test_apps_insert.py.
    assert mask[300, 200] and xs.min() < 200 < xs.max() and ys.min() < 300 < ys.max()
    np.testing.assert_allclose(gbuffer(out, "coffee_inserted", "metallic")[mask], 1.0)
    for key in PASSES:
        before, after = gbuffer(out, "coffee", key), gbuffer(out, "coffee_inserted", key)
        np.testing.assert_array_equal(after[~mask], before[~mask], err_msg=key)
    before = np.asarray(Image.open(out / "coffee" / "0000.0000.street_lamp.png"), np.float32)
    after = np.asarray(Image.open(out / "coffee_inserted" / "0000.0000.street_lamp.png"), np.float32)
    assert np.abs(after - before)[mask].mean() > 5  # the object shows in the render
    assert (out / "coffee_inserted.contact_sheet.png").is_file()


def test_insert_into_a_clip_keeps_the_object_in_every_frame(tmp_path: Path, capsys) -> None:
    require_mitsuba()
    frames = tmp_path / "clip"
    frames.mkdir()
    for i in range(3):
        shutil.copy(COFFEE, frames / f"frame_{i:03d}.png")
    trimesh.creation.box().export(tmp_path / "cube.obj")
    out = tmp_path / "out"
    args = ["--object", tmp_path / "cube.obj", "--at", 300, 300]
    code, lines = run_cli(capsys, "insert", frames, "--out", out, *args, "--model", "random:tiny", *FAST)
    assert code == 0, lines
    masks = [
        read_gbuffer_frame(out / "gbuffer_frames" / "clip_inserted" / f"0000.{i:04d}.mask.png", "mask")
        for i in range(3)
    ]
    assert all(m.any() for m in masks)
    for name in ("clip_inserted.mask", "clip_inserted.basecolor", "clip.street_lamp", "clip_inserted.street_lamp"):
        assert (out / f"{name}.mp4").is_file(), name


def test_insert_into_a_photo_places_through_its_exif_camera(tmp_path: Path, capsys) -> None:
    require_mitsuba()
    trimesh.creation.box().export(tmp_path / "cube.obj")
    pixels = Image.open(COFFEE).convert("RGB")
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0xA405] = 14  # FocalLengthIn35mmFilm: 600 x 400 sees 2 atan(12 / 14) = 81.2 degrees
    pixels.save(tmp_path / "wide.jpg", quality=95, exif=exif)
    pixels.save(tmp_path / "plain.jpg", quality=95)
    args = ["--object", tmp_path / "cube.obj", "--at", 300, 300, "--model", "random:tiny", *FAST]
    masks, fovs = {}, {}
    for name, given in (("wide", False), ("plain", True), ("plain", False)):
        # the EXIF's field of view to the last bit: a rounded one moves an edge pixel on some CPUs
        extra = ["--fov", repr(fovs["wide", False])] if given else []
        out = tmp_path / f"out_{name}_{len(extra)}"
        code, lines = run_cli(capsys, "insert", tmp_path / f"{name}.jpg", "--out", out, *args, *extra)
        assert code == 0, lines
        settings = json.loads((out / f"{name}_inserted.edit.json").read_text())
        fovs[name, given] = settings["fov"]
        assert settings["fov"] == pytest.approx(81.2026 if name == "wide" or given else 50, abs=1e-3)  # 50: default
        masks[name, given] = gbuffer(out, f"{name}_inserted", "mask")
    assert fovs["plain", True] == fovs["wide", False]
    np.testing.assert_array_equal(masks["wide", False], masks["plain", True])
    assert not np.array_equal(masks["wide", False], masks["plain", False])  # the camera moves the object


def test_insert_bad_inputs_give_one_line(tmp_path: Path, capsys) -> None:
    require_mitsuba()
    trimesh.creation.box().export(tmp_path / "cube.obj")
    (tmp_path / "broken.glb").write_bytes(b"not a mesh")
    out = tmp_path / "out"
    cases = [
        (["--object", tmp_path / "broken.glb", "--at", 1, 1], 2, "broken.glb: cannot read the mesh"),
        (["--object", tmp_path / "missing.obj", "--at", 1, 1], 2, "missing.obj: no such mesh file"),
        (["--object", tmp_path / "cube.obj", "--at", 700, 10], 1, "point (700, 10) is outside the 600x400 image"),
        (["--object", tmp_path / "cube.obj", "--at", 1, 1, "--material", "wood"], 2, "unknown material 'wood'"),
    ]
    for extra, status, message in cases:
        code, lines = run_cli(capsys, "insert", COFFEE, "--out", out, *extra, "--model", "random:tiny", *FAST)
        assert code == status and len(cli_errors(lines)) == 1 and message in cli_errors(lines)[0], (extra, lines)


def test_python_api_before_and_after(tmp_path: Path) -> None:
    """edit_material / insert_and_render: same seed and lighting for both renders, so only the edit differs."""
    require_mitsuba()
    from diffusion_renderer.apps.material_edit import MaterialEdit, edit_material, select_by_depth
    from diffusion_renderer.apps.object_insertion import Placement, insert_and_render
    from diffusion_renderer.io.images import read_image
    from diffusion_renderer.models.specs import load_model
    from diffusion_renderer.pipelines.pipeline_forward_rendering import ForwardRenderingPipeline
    from diffusion_renderer.pipelines.pipeline_inverse_rendering import InverseRenderingPipeline
    from diffusion_renderer.render.mesh_gbuffers import load_mesh

    inverse = InverseRenderingPipeline.from_model(load_model("tiny", "inverse"))
    forward = ForwardRenderingPipeline.from_model(load_model("tiny", "forward"))
    image = read_image(COFFEE)[::4, ::4]  # (100, 150, 3)
    options = {"processing_resolution": 64, "progress": False}
    result = edit_material(
        inverse,
        forward,
        image,
        lambda g: select_by_depth(g["depth"], -1, np.median(g["depth"])),
        MaterialEdit(metallic=1.0),
        **options,
    )  # the nearer half of the estimated depth: never empty, whatever the model
    assert result.before[0].shape == result.after[0].shape == (1, 100, 150, 3)
    assert result.mask.shape == (1, 100, 150, 1) and result.mask.any()
    outside = ~result.mask[..., 0]
    np.testing.assert_array_equal(result.edited["metallic"][outside], result.gbuffers["metallic"][outside])
    selection = result.mask[0, ..., 0]
    again = edit_material(inverse, forward, result.gbuffers, selection, MaterialEdit(metallic=0.0), **options)
    np.testing.assert_array_equal(again.before[0], result.before[0])  # same G-buffers, same seed: same render

    trimesh.creation.box().export(tmp_path / "cube.obj")
    inserted = insert_and_render(
        None, forward, result.gbuffers, load_mesh(tmp_path / "cube.obj"), Placement((75, 70)), **options
    )
    np.testing.assert_array_equal(inserted.before[0], result.before[0])
    assert inserted.mask.any() and not np.array_equal(inserted.after[0], inserted.before[0])
    with pytest.raises(ValueError, match="an inverse pipeline is needed"):
        insert_and_render(None, forward, image, load_mesh(tmp_path / "cube.obj"), Placement((75, 70)), **options)


def test_edit_a_clip_with_a_mask_video(tmp_path: Path, capsys, cup_mask: Path) -> None:
    from diffusion_renderer.io.video import write_video

    frames = tmp_path / "clip"
    frames.mkdir()
    for i in range(3):
        shutil.copy(COFFEE, frames / f"frame_{i:03d}.png")
    selected = np.asarray(Image.open(cup_mask), np.float32)[None, ..., None] / 255
    moving = np.stack([np.roll(selected[0], 40 * i, axis=1) for i in range(3)])  # the selection moves right
    write_video(tmp_path / "mask.mp4", np.repeat(moving, 3, axis=-1), 24.0)
    out = tmp_path / "out"
    edit = ["edit", frames, "--metallic", 1, "--out", out, *FAST]
    code, lines = run_cli(capsys, *edit, "--mask", tmp_path / "mask.mp4")
    assert code == 0, lines
    masks = [
        read_gbuffer_frame(out / "gbuffer_frames" / "clip_edited" / f"0000.{i:04d}.mask.png", "mask") for i in range(3)
    ]
    for i, mask in enumerate(masks):  # per-frame masks from the video (lossy codec: compare away from the edges)
        assert mask[230, 160 + 40 * i, 0] == 1 and mask[230, 140 + 40 * i, 0] == 0
    write_video(tmp_path / "short.mp4", np.repeat(moving[:2], 3, axis=-1), 24.0)
    code, lines = run_cli(capsys, *edit, "--mask", tmp_path / "short.mp4")
    assert code == 1 and "short.mp4: the mask has 2 frames, the clip 3" in cli_errors(lines)[0]
