"""probe_video / read_video / write_video: frame selection, odd sizes, rotation and corrupt files."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from diffusion_renderer.io import video as video_io
from diffusion_renderer.io.errors import InputError
from diffusion_renderer.io.video import (
    VIDEO_EXTENSIONS,
    VideoInfo,
    effective_fps,
    is_video_file,
    iter_video_frames,
    probe_video,
    read_video,
    write_video,
)

EXAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "examples"
LEVELS = np.arange(12) * 20 + 10  # a distinct flat gray level per frame survives H.264 and identifies the frame


def example(name: str) -> Path:
    path = EXAMPLES / "videos" / name
    if not path.is_file():
        pytest.skip(f"example media absent: {path}")
    return path


def numbered_video(path: Path, fps: float = 24.0, size: tuple[int, int] = (32, 48)) -> Path:
    """12 flat gray frames; frame i has level LEVELS[i]."""
    frames = np.broadcast_to(LEVELS[:, None, None, None], (len(LEVELS), *size, 3)).astype(np.uint8)  # (T, H, W, 3)
    write_video(path, frames, fps)
    return path


def frame_ids(frames: np.ndarray) -> list[int]:
    """Which numbered frame each decoded frame is (nearest gray level)."""
    means = frames.mean(axis=(1, 2, 3)) * 255
    return [int(np.abs(LEVELS - m).argmin()) for m in means]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# ----------------------------------------------------------------------------------------------------- real clips


def test_extensions() -> None:
    assert VIDEO_EXTENSIONS == (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")
    assert is_video_file("a/B.MP4") and is_video_file("x.webm") and not is_video_file("x.png")


def test_probe_real_clips() -> None:
    assert probe_video(example("video2.mp4")) == VideoInfo(num_frames=57, fps=24.0, width=1280, height=704)
    assert probe_video(example("demo1.mp4")) == VideoInfo(num_frames=24, fps=7.0, width=512, height=512)


def test_read_real_clip_first_frames() -> None:
    frames, fps = read_video(example("bikes.mp4"), max_frames=3)
    assert frames.shape == (3, 272, 640, 3) and frames.dtype == np.float32 and fps == 25.0
    assert frames.min() >= 0 and frames.max() <= 1 and frames.std() > 0.05
    later, _ = read_video(example("bikes.mp4"), start=1, max_frames=2)
    np.testing.assert_array_equal(later, frames[1:3])


# ----------------------------------------------------------------------------------------------------- selection


def test_selection(tmp_path: Path) -> None:
    path = numbered_video(tmp_path / "n.mp4")
    frames, fps = read_video(path)
    assert frames.shape == (12, 32, 48, 3) and fps == 24.0
    assert frame_ids(frames) == list(range(12))

    frames, fps = read_video(path, fps=8)  # every third frame, by time
    assert frame_ids(frames) == [0, 3, 6, 9] and fps == 8
    frames, fps = read_video(path, fps=10)  # floor(k * 10 / 24) increases at k = 0, 3, 5, 8, 10
    assert frame_ids(frames) == [0, 3, 5, 8, 10] and fps == 10
    frames, fps = read_video(path, fps=60)  # never upsampled
    assert len(frames) == 12 and fps == 24.0

    frames, fps = read_video(path, every_n=5)
    assert frame_ids(frames) == [0, 5, 10] and fps == pytest.approx(24 / 5)
    frames, fps = read_video(path, start=2, fps=12, every_n=2, max_frames=2)
    assert frame_ids(frames) == [2, 6] and fps == 6
    frames, _ = read_video(path, start=11)
    assert frame_ids(frames) == [11]

    streamed = list(iter_video_frames(path, start=1, every_n=4))
    assert frame_ids(np.stack(streamed)) == [1, 5, 9]
    assert effective_fps(24.0, 8, 1) == 8 and effective_fps(24.0, None, 2) == 12 and effective_fps(24, 30) == 24


def test_selection_arguments(tmp_path: Path) -> None:
    path = numbered_video(tmp_path / "n.mp4")
    for kwargs in ({"fps": 0}, {"fps": float("nan")}, {"every_n": 0}, {"max_frames": 0}, {"start": -1}):
        with pytest.raises(ValueError):
            read_video(path, **kwargs)
    with pytest.raises(InputError, match="start=12 is past the end"):
        read_video(path, start=12)


def test_max_frames_stops_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = numbered_video(tmp_path / "n.mp4")
    converted = []
    original = video_io._frame_rgb
    monkeypatch.setattr(video_io, "_frame_rgb", lambda frame: converted.append(1) or original(frame))
    frames, _ = read_video(path, max_frames=2)
    assert len(frames) == 2 and len(converted) == 2


# ----------------------------------------------------------------------------------------------------- writing


def test_write_roundtrip_float(tmp_path: Path) -> None:
    y, x = np.mgrid[0:64, 0:80] / 80.0
    frames = np.stack([np.stack([x, y, 0.5 + 0 * x], axis=-1) * (0.5 + t / 8) for t in range(4)])  # (4, 64, 80, 3)
    path = tmp_path / "sub" / "f.mp4"
    write_video(path, frames, 30.0)
    assert leftovers(path.parent) == []
    assert probe_video(path) == VideoInfo(num_frames=4, fps=30.0, width=80, height=64)
    back, fps = read_video(path)
    assert fps == 30.0
    assert np.abs(back - frames).mean() < 0.02


def test_write_odd_size_pads_by_replication(tmp_path: Path) -> None:
    frames = np.zeros((2, 33, 47, 3), dtype=np.float32)
    frames[:, -1, :] = 1.0  # white last row -> the padding row is white too
    frames[:, :, -1] = 1.0
    write_video(tmp_path / "odd.mp4", frames, 24)
    back, _ = read_video(tmp_path / "odd.mp4")
    assert back.shape == (2, 34, 48, 3)
    assert back[:, -1, :20].mean() > 0.9 and back[:, :20, -1].mean() > 0.9 and back[:, :16, :20].mean() < 0.05


def test_write_gray_uint8_and_iterable(tmp_path: Path) -> None:
    gray = np.full((3, 16, 16, 1), 0.5, dtype=np.float32)
    write_video(tmp_path / "g.mp4", gray, 12)
    back, fps = read_video(tmp_path / "g.mp4")
    assert back.shape == (3, 16, 16, 3) and fps == 12 and abs(back.mean() - 0.5) < 0.02
    frames = (np.full((16, 16, 3), v, dtype=np.uint8) for v in (0, 128, 255))
    write_video(tmp_path / "u.mp4", frames, 23.976)
    info = probe_video(tmp_path / "u.mp4")
    assert info.num_frames == 3 and info.fps == pytest.approx(23.976, abs=1e-3)


def test_write_failures_are_atomic(tmp_path: Path) -> None:
    frames = [np.zeros((16, 16, 3)), np.zeros((8, 8, 3))]  # second frame has another size
    with pytest.raises(ValueError, match="differs"):
        write_video(tmp_path / "bad.mp4", frames, 24)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="NaN"):
        write_video(tmp_path / "nan.mp4", np.full((1, 8, 8, 3), np.nan), 24)
    with pytest.raises(ValueError, match="no frames"):
        write_video(tmp_path / "none.mp4", np.zeros((0, 8, 8, 3)), 24)
    with pytest.raises(ValueError, match="fps"):
        write_video(tmp_path / "fps.mp4", np.zeros((1, 8, 8, 3)), 0)
    assert list(tmp_path.iterdir()) == []


def test_write_unwritable(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="cannot write"):
        write_video(tmp_path / "file" / "v.mp4", np.zeros((1, 8, 8, 3)), 24)


def test_write_read_only_folder(read_only_dir: Path) -> None:
    with pytest.raises(InputError, match="cannot write"):
        write_video(read_only_dir / "v.mp4", np.zeros((1, 8, 8, 3)), 24)


# ----------------------------------------------------------------------------------------------------- containers


def raw_video(path: Path, frames: int, rotation: float | None = None) -> Path:
    """A clip written with PyAV directly: other containers, rotation metadata."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        if rotation is not None:
            stream.set_display_rotation(rotation)
        image = np.zeros((48, 64, 3), dtype=np.uint8)
        image[:8, :8] = 255  # white top-left corner
        for _ in range(frames):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def test_mkv_without_frame_count(tmp_path: Path) -> None:
    path = raw_video(tmp_path / "c.mkv", 7)
    assert probe_video(path).num_frames == 7
    assert read_video(path)[0].shape == (7, 48, 64, 3)


def test_rotation_metadata_applied(tmp_path: Path) -> None:
    path = raw_video(tmp_path / "r.mp4", 2, rotation=90)  # 90° counter-clockwise for display
    info = probe_video(path)
    assert (info.width, info.height) == (48, 64)
    frames, _ = read_video(path)
    assert frames.shape == (2, 64, 48, 3)
    assert frames[0, -4, 4].mean() > 0.8 and frames[0, 4, 4].mean() < 0.2  # corner went to bottom-left


# ----------------------------------------------------------------------------------------------------- bad corpus


def test_bad_corpus(tmp_path: Path) -> None:
    # Ours are faststart (index at the front): a cut one opens, then decodes short or fails.
    good = numbered_video(tmp_path / "good.mp4").read_bytes()
    write_video(tmp_path / "noise.mp4", np.random.default_rng(1).random((16, 32, 32, 3)), 24)
    noise = (tmp_path / "noise.mp4").read_bytes()
    corpus = {
        "missing.mp4": (None, "no such file"),
        "empty.mp4": (b"", "empty file"),
        "random.mp4": (np.random.default_rng(0).bytes(4096), "corrupt or unreadable"),
        "text.mov": (b"not a video\n" * 50, "corrupt or unreadable"),
        "cut_faststart.mp4": (good[: len(good) // 2], "corrupt"),
        "cut_noise.mp4": (noise[: len(noise) * 3 // 4], "corrupt"),
    }
    cases = {}
    for name, (data, pattern) in corpus.items():
        if data is not None:
            (tmp_path / name).write_bytes(data)
        cases[tmp_path / name] = pattern
    for path, pattern in cases.items():
        for call in (read_video, probe_video):
            if call is probe_video and path.name.startswith("cut_"):
                continue  # probing reads the header only
            with pytest.raises(InputError, match=pattern) as info:
                call(path)
            assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)


def test_truncated_real_mp4(tmp_path: Path) -> None:
    data = example("video2.mp4").read_bytes()  # index (moov) at the end: half a file has none
    path = tmp_path / "half.mp4"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="corrupt or unreadable"):
        read_video(path, max_frames=1)
    with pytest.raises(InputError):
        probe_video(path)


def test_short_decode_is_reported() -> None:
    video_io._check_complete(Path("x.mp4"), 55, 57)  # edit lists may drop a couple of priming frames
    with pytest.raises(InputError, match="truncated or corrupt video: 30 of the 57 frames"):
        video_io._check_complete(Path("x.mp4"), 30, 57)
    video_io._check_complete(Path("x.mkv"), 30, 0)  # no count in the header: nothing to compare
