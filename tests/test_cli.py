"""The rendering commands end to end on the tiny random models, with real images and videos and bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from conftest import cli_errors, run_cli
from diffusion_renderer.cli.official import translate
from diffusion_renderer.io.images import read_image, write_image
from diffusion_renderer.io.video import probe_video

EXAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "examples"
FAST = ["--resolution", "64", "--steps", "2", "--quiet", "--envmap-method", "direct"]
PASSES = ("basecolor", "normal", "depth", "roughness", "metallic")

needs_examples = pytest.mark.skipif(not EXAMPLES.is_dir(), reason=f"no example media in {EXAMPLES}")


def leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if ".tmp" in p.name]


@needs_examples
def test_relight_images_layout_formats_and_sizes(tmp_path, capsys) -> None:
    out = tmp_path / "out"
    image = EXAMPLES / "images" / "coffee.png"  # 600 x 400
    code, lines = run_cli(capsys, "relight", image, "--out", out, "--envmap", "0", "street_lamp", *FAST)
    assert code == 0, lines
    assert lines[-1].startswith("1 done, 0 skipped, 0 failed")
    folder = out / "gbuffer_frames" / "coffee"
    for name in PASSES:
        stored = cv2.imread(str(folder / f"0000.0000.{name}.png"), cv2.IMREAD_UNCHANGED)
        assert stored.shape[:2] == (400, 600)
        assert stored.dtype == (np.uint16 if name in ("normal", "depth") else np.uint8), name
        assert stored.ndim == (3 if name in ("basecolor", "normal") else 2), name
    for light in ("sunny_vondelpark", "street_lamp"):
        relit = read_image(out / "coffee" / f"0000.0000.{light}.png")
        assert relit.shape == (400, 600, 3)
    assert Image.open(out / "coffee.contact_sheet.png").size[0] > 600
    assert not leftovers(out)

    code, lines = run_cli(capsys, "relight", image, "--out", out, "--envmap", "0", "street_lamp", *FAST)
    assert code == 0 and lines[-1].startswith("0 done, 1 skipped")  # finished work is not redone
    code, lines = run_cli(capsys, "relight", image, "--out", out, "--envmap", "0", "pink_sunrise", *FAST)
    assert code == 0 and (out / "coffee" / "0000.0000.pink_sunrise.png").is_file()  # only the new light
    code, lines = run_cli(capsys, "relight", image, "--out", out, "--envmap", "0", *FAST, "--overwrite")
    assert code == 0 and lines[-1].startswith("1 done")
    # a known camera reaches the shipped model's shading hint (its guess on predicted G-buffers is 40 degrees)
    default = read_image(out / "coffee" / "0000.0000.sunny_vondelpark.png")
    code, lines = run_cli(capsys, "relight", image, "--out", out, "--envmap", "0", *FAST, "--overwrite", "--fov", 65)
    assert code == 0 and not np.array_equal(read_image(out / "coffee" / "0000.0000.sunny_vondelpark.png"), default)
    code, lines = run_cli(capsys, "relight", image, "--out", out, "--envmap", "0", *FAST, "--fov", 180)
    assert code != 0 and cli_errors(lines) == [
        "diffusion-renderer: error: --fov must be in (0, 180) degrees, got 180.0"
    ]
    # a photo's EXIF focal length is its camera: the same frames as --fov with that angle, unlike an untagged copy
    pixels = Image.open(image).convert("RGB")
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0xA405] = 24  # FocalLengthIn35mmFilm: a 600 x 400 frame sees 2 atan(12 / 24) = 53.1 degrees
    pixels.save(tmp_path / "tagged.jpg", quality=95, exif=exif)
    pixels.save(tmp_path / "plain.jpg", quality=95)
    relit = {}
    for name, extra in (("tagged", []), ("plain", []), ("plain", ["--fov", 53.130102354])):
        code, lines = run_cli(
            capsys, "relight", tmp_path / f"{name}.jpg", "--out", out, "--envmap", "0", *FAST, "--overwrite", *extra
        )
        assert code == 0, lines
        relit[name, bool(extra)] = read_image(out / name / "0000.0000.sunny_vondelpark.png")
    np.testing.assert_allclose(relit["tagged", False], relit["plain", True], atol=1e-6)
    assert not np.array_equal(relit["tagged", False], relit["plain", False])
    # the shipped forward model's correction to its hint, unsmoothed: another image
    code, lines = run_cli(capsys, "relight", image, "--out", out, "--envmap", "0", *FAST, "--overwrite")
    smoothed = read_image(out / "coffee" / "0000.0000.sunny_vondelpark.png")
    code, lines = run_cli(
        capsys, "relight", image, "--out", out, "--envmap", "0", *FAST, "--overwrite", "--correction-blur", 0
    )
    assert code == 0 and not np.array_equal(read_image(out / "coffee" / "0000.0000.sunny_vondelpark.png"), smoothed)
    code, lines = run_cli(capsys, "relight", image, "--out", out, "--envmap", "0", *FAST, "--correction-blur", -1)
    assert code != 0 and cli_errors(lines) == [
        "diffusion-renderer: error: --correction-blur must be a finite number of pixels >= 0, got -1.0"
    ]


def test_neural_forward_options_turn_fitted_shadows_off_for_predicted_g_buffers() -> None:
    import argparse

    from diffusion_renderer.cli.render import neural_forward_options

    class Neural:  # the neural forward pipeline's mark; split-sum has no correction_sigma
        def correction_sigma(self, blur: float | None) -> float:
            return 2.0

    args = argparse.Namespace(correction_blur=None, fitted_shadows=None)
    assert neural_forward_options(Neural(), args, predicted=True) == {"fitted_shadows": False}
    assert neural_forward_options(Neural(), args, predicted=False) == {"fitted_shadows": True}
    asked = argparse.Namespace(correction_blur=1.0, fitted_shadows=True)
    assert neural_forward_options(Neural(), asked, predicted=True) == {"correction_blur": 1.0, "fitted_shadows": True}
    assert neural_forward_options(object(), asked, predicted=True) == {}  # split-sum takes neither
    from diffusion_renderer.cli.main import build_parser

    required = {"insert": ["--object", "v.glb", "--at", "1", "2"]}
    for command in ("forward", "relight", "edit", "insert"):  # the flag reaches every forward-rendering command
        argv = [command, "x", "--out", "o", *required.get(command, [])]
        assert build_parser().parse_args(argv).fitted_shadows is None
        assert build_parser().parse_args([*argv, "--no-fitted-shadows"]).fitted_shadows is False


@needs_examples
def test_light_strength_scales_the_map_or_matches_the_input(tmp_path, capsys) -> None:
    from diffusion_renderer.apps.relight import MATCH_TOLERANCE, log2_level
    from diffusion_renderer.cli.render import strength_suffix

    out = tmp_path / "out"
    image = EXAMPLES / "images" / "coffee.png"
    args = ("relight", image, "--out", out, "--envmap", "street_lamp", *FAST)
    assert run_cli(capsys, *args)[0] == 0
    code, lines = run_cli(capsys, *args, "--light-strength", "2.5")
    assert code == 0 and lines[-1].startswith("1 done")  # another name: not taken for the first run's frames
    plain, stronger = (read_image(out / "coffee" / f"0000.0000.street_lamp{s}.png") for s in ("", "_x2p5"))
    assert stronger.mean() > plain.mean()
    quiet = [a for a in args if a != "--quiet"]
    code, lines = run_cli(capsys, *quiet, "--light-strength", "auto")
    assert code == 0 and any("coffee: street_lamp_auto: light strength" in line for line in lines)
    matched = read_image(out / "coffee" / "0000.0000.street_lamp_auto.png")
    gap = abs(log2_level(matched) - log2_level(read_image(image)))
    assert gap < abs(log2_level(plain) - log2_level(read_image(image))) and gap <= 4 * MATCH_TOLERANCE
    # the chosen factor is kept, and given back as a number it renders the same frame
    chosen = json.loads((out / "coffee.light_strength.json").read_text())["street_lamp_auto"]
    assert run_cli(capsys, *args, "--light-strength", repr(chosen))[0] == 0
    again = read_image(out / "coffee" / f"0000.0000.street_lamp{strength_suffix(chosen)}.png")
    np.testing.assert_array_equal(again, matched)

    for extra, error in (
        (("--light-strength", "0"), "--light-strength: light strength must be a number > 0 or 'auto', got '0'"),
        (
            ("--light-strength", "2", "--random-lighting"),
            "--light-strength scales env maps: --random-lighting has none",
        ),
    ):
        code, lines = run_cli(capsys, *args, *extra)
        assert code != 0 and cli_errors(lines) == [f"diffusion-renderer: error: {error}"]
    code, lines = run_cli(capsys, "forward", out, "--out", tmp_path / "fwd", "--light-strength", "auto", *FAST)
    message = (
        "--light-strength auto matches relit frames to their input image: relight, edit and insert only, not forward"
    )
    assert code != 0 and cli_errors(lines) == [f"diffusion-renderer: error: {message}"]


@needs_examples
def test_same_seed_same_files_other_seed_other_files(tmp_path, capsys) -> None:
    image = EXAMPLES / "images" / "astronaut.png"
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        code, _ = run_cli(
            capsys, "inverse", image, "--out", tmp_path / name, "--passes", "basecolor", "--seed", seed, *FAST
        )
        assert code == 0
    files = [tmp_path / n / "gbuffer_frames" / "astronaut" / "0000.0000.basecolor.png" for n in "abc"]
    assert files[0].read_bytes() == files[1].read_bytes()
    assert files[0].read_bytes() != files[2].read_bytes()
    # another basecolor detail, another basecolor; a bad one stops the command in one line
    argv = ["inverse", image, "--passes", "basecolor", "--seed", 7, *FAST]
    assert run_cli(capsys, *argv, "--out", tmp_path / "d", "--basecolor-detail", 4)[0] == 0
    assert (tmp_path / "d" / files[0].relative_to(tmp_path / "a")).read_bytes() != files[0].read_bytes()
    code, lines = run_cli(capsys, *argv, "--out", tmp_path / "e", "--basecolor-detail", -1)
    assert code != 0 and cli_errors(lines) == [
        "diffusion-renderer: error: --basecolor-detail must be a finite number of pixels >= 0, got -1.0"
    ]


@needs_examples
def test_video_inverse_then_forward_reads_back(tmp_path, capsys) -> None:
    video = EXAMPLES / "videos" / "bikes.mp4"  # 640 x 272
    out, relit = tmp_path / "inv", tmp_path / "fwd"
    clip = ["--frames", "9", "--max-frames", "12", "--overlap", "0"]  # two blended 9-frame windows
    code, lines = run_cli(capsys, "inverse", video, "--out", out, "--passes", "basecolor", "normal", *clip, *FAST)
    assert code == 0, lines
    frames = sorted((out / "gbuffer_frames" / "bikes").glob("*.normal.png"))
    assert len(frames) == 12 and frames[-1].name == "0000.0011.normal.png"
    info = probe_video(out / "bikes.normal.mp4")
    assert (info.num_frames, info.width, info.height) == (12, 640, 272)

    code, lines = run_cli(
        capsys, "forward", out, "--out", relit, "--envmap", "1", "--frames", "9", "--overlap", "0", *FAST
    )
    assert code == 0, lines
    assert len(list((relit / "bikes").glob("*.pink_sunrise.png"))) == 12
    assert probe_video(relit / "bikes.pink_sunrise.mp4").num_frames == 12


@needs_examples
@pytest.mark.parametrize("fmt", ["jpg", "exr"])
def test_other_formats_round_trip(tmp_path, capsys, fmt: str) -> None:
    out = tmp_path / "out"
    image = EXAMPLES / "images" / "image_1.jpg"
    # random:tiny: its normals surely span negative values (a trained model's may all face the camera)
    code, _ = run_cli(capsys, "inverse", image, "--out", out, "--passes", "normal", "depth", "--format", fmt, *FAST,
                  "--model", "random:tiny")  # fmt: skip
    assert code == 0
    normal = out / "gbuffer_frames" / "image_1" / f"0000.0000.normal.{fmt}"
    value = read_image(normal, channels=None)
    if fmt == "exr":
        assert value.min() < 0  # EXR holds the signed values themselves
    fwd = tmp_path / "fwd"
    code, lines = run_cli(capsys, "forward", out, "--out", fwd, "--random-lighting", "--format", fmt, *FAST)
    assert code == 0, lines
    assert (tmp_path / "fwd" / "image_1" / f"0000.0000.random_0000.{fmt}").is_file()


@needs_examples
def test_extract_frames(tmp_path, capsys) -> None:
    out = tmp_path / "frames"
    code, _ = run_cli(capsys, "extract-frames", EXAMPLES / "videos" / "video2.mp4", "--out", out, "--max-frames", "3",
                  "--resize", "64x32")  # fmt: skip
    assert code == 0
    files = sorted((out / "video2").iterdir())
    assert [f.name for f in files] == [f"frame_{i:05d}.png" for i in range(3)]
    assert read_image(files[0]).shape == (32, 64, 3)


# --------------------------------------------------------------------------------------------- official flags


def test_official_flags_translate() -> None:
    argv = translate(
        ["inference_forward_renderer", "--checkpoint_dir", "ckpt", "--diffusion_transformer_dir",
         "Diffusion_Renderer_Forward_Cosmos_7B", "--dataset_path=res/gbuffer_frames", "--num_video_frames", "57",
         "--envlight_ind", "0", "1", "--use_custom_envmap=False", "--rotate_light=True", "--use_fixed_frame_ind=True",
         "--video_save_folder=out", "--offload_diffusion_transformer", "--offload_tokenizer", "--height", "704"]
    )  # fmt: skip
    assert argv[:2] == ["forward", "res/gbuffer_frames"]
    joined = " ".join(argv)
    for expected in ("--model ckpt", "--frames 57", "--envmap 0 1", "--random-lighting", "--rotate-light",
                     "--out out", "--offload model", "--fixed-frame 0", "--resolution 704 1280"):  # fmt: skip
        assert expected in joined
    assert joined.count("--offload") == 1 and "Diffusion_Renderer" not in joined
    with pytest.raises(ValueError, match="boolean"):
        translate(["inverse", "--save_video=maybe"])


@needs_examples
def test_official_readme_commands_run(tmp_path, capsys) -> None:
    """The official README's image commands, with only the program name changed (plus a small resolution)."""
    images = tmp_path / "image_examples"
    images.mkdir()
    for name in ("image_1.jpg", "image_2.jpg"):
        shutil.copy(EXAMPLES / "images" / name, images / name)
    delit, relit = tmp_path / "image_delighting", tmp_path / "image_relighting"
    code, lines = run_cli(
        capsys, "inference_inverse_renderer", "--checkpoint_dir", "random:tiny", "--diffusion_transformer_dir",
        "Diffusion_Renderer_Inverse_Cosmos_7B", f"--dataset_path={images}", "--num_video_frames", "1",
        "--group_mode", "webdataset", f"--video_save_folder={delit}", "--save_video=False", *FAST,
    )  # fmt: skip
    assert code == 0, lines
    assert sorted(p.name for p in (delit / "gbuffer_frames").iterdir()) == ["image_1", "image_2"]
    code, lines = run_cli(
        capsys, "inference_forward_renderer", "--checkpoint_dir", "random:tiny", "--diffusion_transformer_dir",
        "Diffusion_Renderer_Forward_Cosmos_7B", f"--dataset_path={delit / 'gbuffer_frames'}",
        "--num_video_frames", "1", "--envlight_ind", "0", "3", "--use_custom_envmap=True",
        f"--video_save_folder={relit}", *FAST,
    )  # fmt: skip
    assert code == 0, lines
    assert (relit / "image_2" / "0000.0000.park.png").is_file()  # official index 3 -> the bundled substitute


# ------------------------------------------------------------------------------------------------ bad input


def make_corpus(root: Path) -> tuple[list[Path], list[Path]]:
    """(good, bad) input files: the odd-but-valid cases must work, the broken ones must fail alone."""
    root.mkdir()
    rng = np.random.default_rng(0)
    good = []
    for name, mode, shape in (("gray", "L", (20, 30)), ("rgba", "RGBA", (20, 30, 4)), ("tiny", "RGB", (1, 1, 3))):
        Image.fromarray((rng.random(shape) * 255).astype(np.uint8), mode).save(root / f"{name}.png")
        good.append(root / f"{name}.png")
    cv2.imwrite(str(root / "deep.png"), (rng.random((20, 30, 3)) * 65535).astype(np.uint16))
    Image.fromarray((rng.random((20, 30, 3)) * 255).astype(np.uint8)).convert("CMYK").save(root / "cmyk.jpg")
    good += [root / "deep.png", root / "cmyk.jpg"]

    (root / "zero.png").write_bytes(b"")
    (root / "text.png").write_text("not an image\n")
    jpeg = (EXAMPLES / "images" / "image_1.jpg").read_bytes()
    (root / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    Image.new("1", (9000, 9000)).save(root / "huge.png")  # 81 Mpx > the 67 Mpx limit
    (root / "noise.mp4").write_bytes(rng.bytes(4096))
    bad = [root / n for n in ("zero.png", "text.png", "cut.jpg", "huge.png", "noise.mp4")]
    return good, bad


@needs_examples
def test_bad_inputs_fail_alone_in_one_line(tmp_path, capsys) -> None:
    good, bad = make_corpus(tmp_path / "in")
    out = tmp_path / "out"
    code, lines = run_cli(capsys, "inverse", *good, *bad, "--out", out, "--passes", "basecolor", *FAST)
    assert code == 1
    failed = cli_errors(lines)
    assert len(failed) == len(bad), failed
    for path in bad:
        assert sum(str(path) in line for line in failed) == 1, path
    assert lines[-1].startswith(f"{len(good)} done, 0 skipped, {len(bad)} failed")
    for path in good:
        stored = read_image(out / "gbuffer_frames" / path.stem / "0000.0000.basecolor.png")
        assert stored.shape[:2] == read_image(path).shape[:2]  # 1x1 in, 1x1 out
    assert not leftovers(out)


def test_no_traceback_from_the_console_script(tmp_path) -> None:
    (tmp_path / "text.png").write_text("nope")
    proc = subprocess.run(
        [sys.executable, "-m", "diffusion_renderer", "inverse", str(tmp_path / "text.png"),
         "--out", str(tmp_path / "o"), "--quiet"], capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert f"diffusion-renderer: error: {tmp_path / 'text.png'}: " in proc.stderr


def write_exr(path: Path, rgb: np.ndarray) -> None:
    import OpenEXR

    OpenEXR.File({"compression": OpenEXR.ZIP_COMPRESSION}, {"RGB": rgb.astype(np.float32)}).write(str(path))


@needs_examples
def test_bad_env_maps_fail_alone(tmp_path, capsys) -> None:
    gb = tmp_path / "gb"
    assert run_cli(capsys, "inverse", EXAMPLES / "images" / "image_3.jpg", "--out", gb, *FAST)[0] == 0
    maps = tmp_path / "maps"
    maps.mkdir()
    base = np.ones((8, 16, 3), np.float32)
    for name, value in (("nan", np.nan), ("inf", np.inf), ("negative", -5.0)):
        bad = base.copy()
        bad[2, 3, 1] = value
        write_exr(maps / f"{name}.exr", bad)
    cv2.imwrite(str(maps / "square.hdr"), np.ones((8, 8, 3), np.float32))
    bad = sorted(maps.iterdir())
    code, lines = run_cli(capsys, "forward", gb, "--out", tmp_path / "fwd", "--envmap", "2", *bad, "nowhere", *FAST)
    assert code == 1
    failed = cli_errors(lines)
    assert len(failed) == len(bad) + 1
    for path in bad:
        assert any(str(path) in line for line in failed), path
    assert (tmp_path / "fwd" / "image_3" / "0000.0000.street_lamp.png").is_file()


def test_gbuffer_folders_missing_pass_and_mismatched_sizes(tmp_path, capsys) -> None:
    root = tmp_path / "gbuffer_frames"
    for clip, normal_size in (("partial", None), ("mismatch", (8, 8)), ("ok", (16, 24))):
        write_image(root / clip / "0000.0000.basecolor.png", np.full((16, 24, 3), 0.5))
        if normal_size:
            write_image(root / clip / "0000.0000.normal.png", np.full((*normal_size, 3), 0.5), bit_depth=16)
    code, lines = run_cli(capsys, "forward", root, "--out", tmp_path / "fwd", "--random-lighting", *FAST)
    assert code == 1
    failed = cli_errors(lines)
    assert len(failed) == 1 and str(root / "mismatch") in failed[0]
    assert (tmp_path / "fwd" / "partial" / "0000.0000.random_0000.png").is_file()  # missing normal: mask 0
    assert (tmp_path / "fwd" / "ok" / "0000.0000.random_0000.png").is_file()


def test_unwritable_output_is_one_line(tmp_path, capsys) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    Image.new("RGB", (8, 8)).save(tmp_path / "in.png")
    code, lines = run_cli(capsys, "inverse", tmp_path / "in.png", "--out", blocker / "out", *FAST)
    assert code == 2 and len(lines) == 1 and str(blocker / "out") in lines[0]


def test_interrupted_run_is_cleaned_and_resumed(tmp_path, capsys) -> None:
    Image.new("RGB", (24, 16), (200, 100, 50)).save(tmp_path / "in.png")
    out = tmp_path / "out"
    stale_dir = out / "gbuffer_frames" / ".in.k3j2.tmp"  # what a killed run leaves behind
    stale_dir.mkdir(parents=True)
    (stale_dir / "0000.0000.basecolor.png").write_bytes(b"half")
    (out / ".in.contact_sheet.x1.tmp.png").write_bytes(b"half")
    code, lines = run_cli(capsys, "inverse", tmp_path / "in.png", "--out", out, "--passes", "basecolor", *FAST)
    assert code == 0, lines
    assert not leftovers(out)
    assert read_image(out / "gbuffer_frames" / "in" / "0000.0000.basecolor.png").shape == (16, 24, 3)


def test_classical_baseline_renders_gbuffer_folders(tmp_path, capsys) -> None:
    root = tmp_path / "gbuffer_frames"
    write_image(root / "clip" / "0000.0000.basecolor.png", np.full((16, 24, 3), 0.7))
    write_image(root / "clip" / "0000.0000.normal.png", np.full((16, 24, 3), (0.5, 0.5, 1.0)), bit_depth=16)
    code, lines = run_cli(capsys, "forward", root, "--out", tmp_path / "fwd", "--model", "classical:splitsum",
                      "--envmap", "park", "--quiet")  # fmt: skip
    assert code == 0, lines
    relit = read_image(tmp_path / "fwd" / "clip" / "0000.0000.park.png")
    assert relit.shape == (16, 24, 3)
    assert relit.reshape(-1, 3).std(axis=0).max() < 0.05  # a flat wall facing the camera: nearly one colour
    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    image = tmp_path / "x.png"
    code, lines = run_cli(capsys, "relight", image, "--out", tmp_path / "r", "--model", "classical:splitsum")
    assert code == 2 and len(lines) == 1 and "only renders" in lines[0]


def test_light_thumbnails_follow_the_rotation() -> None:
    import argparse

    from diffusion_renderer.cli.render import light_thumbnails

    hdr = np.zeros((16, 32, 3), np.float32)
    hdr[6:8, 4:6] = 100.0  # one bright light
    fixed = light_thumbnails(hdr, 3, argparse.Namespace(rotate_light=False, light_angle=0.0))
    turning = light_thumbnails(hdr, 3, argparse.Namespace(rotate_light=True, light_angle=0.0))
    assert fixed.shape == turning.shape == (3, 64, 128, 3)
    assert np.array_equal(fixed[0], fixed[2]) and np.allclose(turning[0], fixed[0], atol=1e-5)
    brightest = [np.unravel_index(frame.sum(-1).argmax(), frame.shape[:2])[1] for frame in turning]
    assert brightest[0] != brightest[1]  # the light moves over the clip


def test_official_image_extensions_flag_is_accepted_by_both_scripts() -> None:
    for command in ("inference_inverse_renderer", "inference_forward_renderer"):
        argv = translate([command, "--dataset_path=d", "--image_extensions", ".png", ".jpg", "--video_save_folder=o"])
        assert "--extensions" not in argv and ".png" not in argv and argv[1] == "d"
