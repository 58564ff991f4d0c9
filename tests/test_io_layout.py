"""Input grouping and discovery, the official output names, and reading G-buffer folders back."""

from __future__ import annotations

from pathlib import Path

import pytest

from diffusion_renderer.io.errors import InputError
from diffusion_renderer.io.layout import (
    InputClip,
    contact_sheet_path,
    discover_inputs,
    find_gbuffer_clips,
    gbuffer_frame_path,
    group_images,
    parse_gbuffer_name,
    relit_frame_path,
    video_path,
)

PASSES = ("basecolor", "normal", "depth", "roughness", "metallic")


def touch(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")


def rel(root: Path, groups: dict[str, list[Path]]) -> dict[str, list[str]]:
    return {key: [p.relative_to(root).as_posix() for p in paths] for key, paths in groups.items()}


# ----------------------------------------------------------------------------------------------------- grouping


def test_group_images_folder_mode(tmp_path: Path) -> None:
    touch(tmp_path, "b.png", "a.JPG", "notes.txt", "s/2.png", "s/10.png", "s/t/x.exr", "v.mp4", "s/.hidden.png")
    groups = group_images(tmp_path)
    assert list(groups) == ["", "s", "s/t"]
    assert rel(tmp_path, groups) == {
        "": ["a.JPG", "b.png"],
        "s": ["s/.hidden.png", "s/10.png", "s/2.png"],  # lexicographic, as the official code
        "s/t": ["s/t/x.exr"],
    }
    assert all(p.is_absolute() == tmp_path.is_absolute() for ps in groups.values() for p in ps)
    assert rel(tmp_path, group_images(tmp_path, skip_hidden=True))["s"] == ["s/10.png", "s/2.png"]
    assert rel(tmp_path, group_images(tmp_path, extensions=(".exr",))) == {"s/t": ["s/t/x.exr"]}


def test_group_images_webdataset_mode(tmp_path: Path) -> None:
    touch(tmp_path, "a/x.0001.png", "a/x.0000.png", "a/y.png", "z.b.c.jpg", "a/b.c/w.1.png", ".png")
    groups = group_images(tmp_path, "webdataset")
    assert rel(tmp_path, groups) == {
        "a/b.c/w": ["a/b.c/w.1.png"],
        "a/x": ["a/x.0000.png", "a/x.0001.png"],
        "a/y": ["a/y.png"],
        "z": ["z.b.c.jpg"],  # base name up to the FIRST dot
    }


def test_group_images_unknown_mode(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown image group mode"):
        group_images(tmp_path, "frames")


# ----------------------------------------------------------------------------------------------------- discovery


def test_discover_files_and_folders(tmp_path: Path) -> None:
    touch(tmp_path, "one.png", "clip.mp4", "scene/0.png", "scene/1.png", "scene/sub/0.png", "scene/cams/c1.MOV")
    touch(tmp_path, "scene/.tmp.png", "scene/readme.md")
    clips, errors = discover_inputs([tmp_path / "one.png", str(tmp_path / "clip.mp4"), tmp_path / "scene"])
    assert errors == []
    assert [c.name for c in clips] == ["one", "clip", "cams/c1", "scene", "sub"]
    assert clips[0] == InputClip("one", frames=[tmp_path / "one.png"])
    assert clips[1] == InputClip("clip", video=tmp_path / "clip.mp4")
    assert clips[2].video == tmp_path / "scene" / "cams" / "c1.MOV" and clips[2].frames is None
    assert clips[3].frames == [tmp_path / "scene" / "0.png", tmp_path / "scene" / "1.png"]  # hidden file skipped
    assert clips[4].frames == [tmp_path / "scene" / "sub" / "0.png"]


def test_discover_webdataset(tmp_path: Path) -> None:
    touch(tmp_path, "d/a.0.png", "d/a.1.png", "d/b.0.png")
    clips, errors = discover_inputs([tmp_path / "d"], group_mode="webdataset")
    assert errors == [] and [(c.name, len(c.frames or [])) for c in clips] == [("a", 2), ("b", 1)]
    with pytest.raises(ValueError):
        discover_inputs([tmp_path / "d"], group_mode="nope")


def test_discover_errors_do_not_stop_the_batch(tmp_path: Path) -> None:
    touch(tmp_path, "ok.png", "notes.txt", "empty/readme.md")
    inputs = [tmp_path / "missing.png", tmp_path / "notes.txt", tmp_path / "empty", tmp_path / "ok.png"]
    clips, errors = discover_inputs(inputs)
    assert [c.name for c in clips] == ["ok"]
    assert [type(e) for e in errors] == [InputError] * 3
    messages = [str(e) for e in errors]
    assert messages[0] == f"{tmp_path / 'missing.png'}: no such file or folder"
    assert messages[1].startswith(f"{tmp_path / 'notes.txt'}: not an image or video file")
    assert messages[2] == f"{tmp_path / 'empty'}: no images or videos found in this folder"


def test_discover_unique_names(tmp_path: Path) -> None:
    touch(tmp_path, "a/x.png", "b/x.jpg", "c/x.mp4", "x_2.png", "x/0.png")
    inputs = [tmp_path / "a" / "x.png", tmp_path / "b" / "x.jpg", tmp_path / "x_2.png", tmp_path / "c" / "x.mp4"]
    clips, _ = discover_inputs([*inputs, tmp_path / "x"])
    assert [c.name for c in clips] == ["x", "x_2", "x_2_2", "x_3", "x_4"]


def test_discover_current_folder_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "shots"
    touch(folder, "0.png")
    monkeypatch.chdir(folder)
    clips, errors = discover_inputs(["."])
    assert errors == [] and [c.name for c in clips] == ["shots"]


# ----------------------------------------------------------------------------------------------------- output names


def test_output_names(tmp_path: Path) -> None:
    out = tmp_path
    assert gbuffer_frame_path(out, "a/b", 1, 23, "basecolor", "png") == (
        out / "gbuffer_frames" / "a" / "b" / "0001.0023.basecolor.png"
    )
    assert gbuffer_frame_path(out, "c", 0, 12345, "depth", ".exr").name == "0000.12345.depth.exr"
    assert relit_frame_path(out, "c", 2, 5, "sunset_4k", "jpg") == out / "c" / "0002.0005.sunset_4k.jpg"
    assert video_path(out, "a/b", "basecolor") == out / "a__b.basecolor.mp4"
    assert contact_sheet_path(out, "a/b") == out / "a__b.contact_sheet.png"


def test_parse_gbuffer_name() -> None:
    assert parse_gbuffer_name("0001.0042.basecolor.png") == (1, 42, "basecolor")
    assert parse_gbuffer_name(Path("x/0000.12345.diffuse_albedo.jpg")) == (0, 12345, "diffuse_albedo")
    for bad in ("001.0042.basecolor.png", "0001.0042.png", "a.0001.basecolor.png", ".0000.0000.depth.png", ""):
        assert parse_gbuffer_name(bad) is None, bad


# ----------------------------------------------------------------------------------------------------- G-buffer input


def write_clip(out: Path, clip: str, passes: dict[str, int], ext: str = "png", chunk_size: int = 3) -> None:
    for pass_name, count in passes.items():
        for i in range(count):
            touch(out, gbuffer_frame_path(Path(), clip, i // chunk_size, i % chunk_size, pass_name, ext).as_posix())


def test_find_gbuffer_clips_all_roots(tmp_path: Path) -> None:
    write_clip(tmp_path, "walk", {"basecolor": 5, "normal": 5})
    write_clip(tmp_path, "set/cam1", {"basecolor": 2, "depth": 2}, ext="jpg")  # official JPEG output
    touch(tmp_path, "gbuffer_frames/walk/notes.txt", "gbuffer_frames/walk/.0000.0000.basecolor.tmp.png")
    for root in (tmp_path, tmp_path / "gbuffer_frames"):
        clips, errors = find_gbuffer_clips(root, PASSES)
        assert errors == [] and list(clips) == ["set/cam1", "walk"]
        assert list(clips["walk"]) == ["basecolor", "normal"]  # missing passes are simply absent
        names = [p.name for p in clips["walk"]["normal"]]
        assert names == [f"{c:04d}.{f:04d}.normal.png" for c, f in ((0, 0), (0, 1), (0, 2), (1, 0), (1, 1))]
        assert clips["set/cam1"]["depth"][1].name == "0000.0001.depth.jpg"
    clips, errors = find_gbuffer_clips(tmp_path / "gbuffer_frames" / "walk", ["normal"])
    assert errors == [] and list(clips) == ["walk"] and list(clips["walk"]) == ["normal"]


def test_find_gbuffer_clips_sorted_numerically(tmp_path: Path) -> None:
    write_clip(tmp_path, "long", {"depth": 12}, chunk_size=10)
    touch(tmp_path, "gbuffer_frames/long/0000.10000.depth.png")
    clips, _ = find_gbuffer_clips(tmp_path, ["depth"])
    assert [parse_gbuffer_name(p.name)[:2] for p in clips["long"]["depth"]][-3:] == [(0, 10000), (1, 0), (1, 1)]


def test_find_gbuffer_clips_errors(tmp_path: Path) -> None:
    write_clip(tmp_path, "good", {"basecolor": 2, "metallic": 2})
    write_clip(tmp_path, "uneven", {"basecolor": 3, "normal": 2})
    write_clip(tmp_path, "other", {"diffuse_albedo": 2})
    write_clip(tmp_path, "dup", {"depth": 1})
    touch(tmp_path, "gbuffer_frames/dup/0000.0000.depth.jpg")
    clips, errors = find_gbuffer_clips(tmp_path, PASSES)
    assert list(clips) == ["good"]
    messages = sorted(str(e) for e in errors)
    frames = tmp_path / "gbuffer_frames"
    assert messages == sorted(
        [
            f"{frames / 'uneven'}: passes have different frame counts (basecolor 3, normal 2)",
            f"{frames / 'other'}: no G-buffer frames of the passes {', '.join(sorted(PASSES))}",
            f"{frames / 'dup'}: frame 0000.0000.depth exists twice (0000.0000.depth.jpg, 0000.0000.depth.png)",
        ]
    )


def test_find_gbuffer_clips_nothing(tmp_path: Path) -> None:
    clips, errors = find_gbuffer_clips(tmp_path / "missing", PASSES)
    assert clips == {} and [str(e) for e in errors] == [f"{tmp_path / 'missing'}: no such folder"]
    touch(tmp_path, "empty/readme.md", "empty/sub/x.png")
    clips, errors = find_gbuffer_clips(tmp_path / "empty", PASSES)
    assert clips == {} and len(errors) == 1 and "no G-buffer frames found" in str(errors[0])
