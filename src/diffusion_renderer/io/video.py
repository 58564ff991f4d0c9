"""Video reading and writing with PyAV: frames are float32 (T, H, W, 3) RGB in [0, 1].

Reading selects frames while decoding (``start``, target ``fps``, ``every_n``, ``max_frames``), so a long clip is
never decoded further than needed; every bad file is one ``InputError``. Writing is H.264 yuv420p MP4, atomic.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from diffusion_renderer.io.atomic import atomic_file
from diffusion_renderer.io.errors import InputError

try:
    import av
except ImportError:  # PyAV is a dependency, but GPU training hosts carry only torch: fail when a video is used
    av = None

VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")
FALLBACK_FPS: float = 24.0  # when a container states no frame rate at all (the official datasets' rate)
_FRAME_SLACK = 2  # frames a complete file may decode short of its header's count (see ``_check_complete``)

# Everything PyAV/FFmpeg may raise for a bad file: FFmpegError subclasses, plus plain OS/value errors.
_FFMPEG_ERRORS: tuple[type[BaseException], ...] = (av.error.FFmpegError,) if av is not None else ()
_DECODE_ERRORS = (*_FFMPEG_ERRORS, OSError, ValueError, EOFError, RuntimeError, IndexError)


def _require_av(path: str | Path) -> None:
    if av is None:
        raise InputError(path, "videos need the av (PyAV) package, which is not installed")


def is_video_file(path: str | Path) -> bool:
    """True when the file name ends with a supported video extension (case-insensitive)."""
    return Path(path).name.lower().endswith(VIDEO_EXTENSIONS)


@dataclass
class VideoInfo:
    """What a clip holds; ``width``/``height`` are as displayed (after the rotation metadata)."""

    num_frames: int
    fps: float
    width: int
    height: int


# ----------------------------------------------------------------------------------------------------- reading


def probe_video(path: str | Path) -> VideoInfo:
    """Frame count, rate and displayed size; frames are counted by decoding when the header has no count."""
    path = _check_file(path)
    try:
        with av.open(str(path)) as container:
            stream = _video_stream(path, container)
            src_fps = _stream_fps(stream)
            frames = container.decode(stream)
            first = next(frames, None)
            if first is None:
                raise InputError(path, "video has no frames")
            height, width = first.height, first.width
            if _rotation_turns(first) % 2:
                width, height = height, width
            num_frames = stream.frames or 1 + sum(1 for _ in frames)
    except InputError:
        raise
    except _DECODE_ERRORS as err:
        raise InputError(path, f"corrupt or unreadable video ({_describe(err)})") from None
    return VideoInfo(num_frames=int(num_frames), fps=src_fps, width=int(width), height=int(height))


def read_video(
    path: str | Path,
    *,
    fps: float | None = None,
    every_n: int = 1,
    max_frames: int | None = None,
    start: int = 0,
) -> tuple[np.ndarray, float]:
    """Decode the selected frames -> (float32 (T, H, W, 3) RGB in [0, 1], their effective fps).

    Selection, in order: skip ``start`` frames; if ``fps`` is below the source rate, resample by time (keep frame
    k when floor(k * fps / src_fps) increases; frame indices stand for time, as for constant-rate video); keep
    every ``every_n``-th; stop after ``max_frames``. Rotation metadata (phone videos) is applied.
    """
    path = _check_file(path)
    frames: list[np.ndarray] = []  # uint8 (H, W, 3) each; converted once at the end to keep the peak low
    info: dict[str, float] = {}
    for frame in _iter_uint8(path, fps=fps, every_n=every_n, max_frames=max_frames, start=start, info=info):
        frames.append(frame)
    if not frames:
        raise InputError(
            path, f"no frames to read (start={start} is past the end)" if start else "video has no frames"
        )
    video = np.stack(frames).astype(np.float32)  # (T, H, W, 3)
    video *= np.float32(1.0 / 255.0)
    return video, info["fps"]


def iter_video_frames(
    path: str | Path,
    *,
    fps: float | None = None,
    every_n: int = 1,
    max_frames: int | None = None,
    start: int = 0,
) -> Iterator[np.ndarray]:
    """Like ``read_video`` one frame at a time: float32 (H, W, 3) in [0, 1]; see ``effective_fps`` for the rate."""
    path = _check_file(path)
    for frame in _iter_uint8(path, fps=fps, every_n=every_n, max_frames=max_frames, start=start, info={}):
        yield frame.astype(np.float32) * np.float32(1.0 / 255.0)


def effective_fps(src_fps: float, fps: float | None = None, every_n: int = 1) -> float:
    """Rate of the frames ``read_video`` returns: resampling only ever lowers the rate, then ``every_n`` divides."""
    base = fps if fps is not None and fps < src_fps else src_fps
    return base / every_n


def _check_args(fps: float | None, every_n: int, max_frames: int | None, start: int) -> None:
    if fps is not None and not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number, not {fps!r}")
    if every_n < 1:
        raise ValueError(f"every_n must be >= 1, not {every_n!r}")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, not {max_frames!r}")
    if start < 0:
        raise ValueError(f"start must be >= 0, not {start!r}")


def _iter_uint8(
    path: Path, *, fps: float | None, every_n: int, max_frames: int | None, start: int, info: dict[str, float]
) -> Iterator[np.ndarray]:
    """The selected frames as uint8 (H, W, 3); ``info["fps"]`` receives the effective rate once it is known."""
    _check_args(fps, every_n, max_frames, start)
    try:
        with av.open(str(path)) as container:
            stream = _video_stream(path, container)
            stream.thread_type = "AUTO"  # frame + slice threads: several times faster on long clips
            src_fps = _stream_fps(stream)
            info["fps"] = effective_fps(src_fps, fps, every_n)
            keep = _selector(src_fps, fps, every_n, start)
            emitted = decoded = 0
            for index, frame in enumerate(container.decode(stream)):
                decoded = index + 1
                if not keep(index):
                    continue
                yield _frame_rgb(frame)
                emitted += 1
                if max_frames is not None and emitted >= max_frames:
                    return  # leaving the ``with`` closes the container: nothing further is decoded
            _check_complete(path, decoded, stream.frames)
    except InputError:
        raise
    except _DECODE_ERRORS as err:
        raise InputError(path, f"corrupt or unreadable video ({_describe(err)})") from None


def _check_complete(path: Path, decoded: int, expected: int) -> None:
    """A cut-off file decodes silently short; the header's count (when there is one) tells.

    A shortfall of up to ``_FRAME_SLACK`` frames is tolerated: MP4 edit lists may drop a few priming frames
    that the header still counts.
    """
    if expected and decoded < expected - _FRAME_SLACK:
        raise InputError(path, f"truncated or corrupt video: {decoded} of the {expected} frames in its header decode")


def _selector(src_fps: float, fps: float | None, every_n: int, start: int) -> Callable[[int], bool]:
    """A stateful ``keep(index)`` for frames decoded in order (index counts every decoded frame)."""
    ratio = fps / src_fps if fps is not None and fps < src_fps else None
    state = {"slot": -1, "candidates": 0}

    def keep(index: int) -> bool:
        k = index - start
        if k < 0:
            return False
        if ratio is not None:
            slot = math.floor(k * ratio + 1e-9)  # epsilon: k * ratio that is exactly an integer must not round down
            if slot <= state["slot"]:
                return False
            state["slot"] = slot
        state["candidates"] += 1
        return (state["candidates"] - 1) % every_n == 0

    return keep


def _frame_rgb(frame: av.VideoFrame) -> np.ndarray:
    """uint8 (H, W, 3) RGB as displayed: the stream's rotation (display matrix) applied."""
    rgb = frame.to_ndarray(format="rgb24")
    turns = _rotation_turns(frame)
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


def _rotation_turns(frame: av.VideoFrame) -> int:
    """Counter-clockwise quarter turns that display the frame (FFmpeg's display-matrix angle)."""
    try:
        angle = frame.rotation
    except Exception:  # no side data / older PyAV
        return 0
    return round((angle or 0) / 90) % 4


def _check_file(path: str | Path) -> Path:
    path = Path(path)
    _require_av(path)
    if not path.exists():
        raise InputError(path, "no such file")
    if not path.is_file():
        raise InputError(path, "not a file")
    if path.stat().st_size == 0:
        raise InputError(path, "empty file (0 bytes)")
    return path


def _video_stream(path: Path, container: av.container.InputContainer) -> av.VideoStream:
    if not container.streams.video:
        raise InputError(path, "no video stream (not a video?)")
    return container.streams.video[0]


def _stream_fps(stream: av.VideoStream) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate and float(rate) > 0:
            return float(rate)
    return FALLBACK_FPS


def _describe(err: BaseException) -> str:
    if av is not None and isinstance(err, av.error.FFmpegError) and err.strerror:
        return str(err.strerror)  # without PyAV's errno and C function name
    text = " ".join(str(err).split())
    return text or type(err).__name__


# ----------------------------------------------------------------------------------------------------- writing


def write_video(path: str | Path, frames: np.ndarray | Iterable[np.ndarray], fps: float, *, crf: int = 18) -> None:
    """Write H.264 (libx264, yuv420p, ``crf``) MP4 atomically.

    ``frames``: float (T, H, W, C) in [0, 1] (clipped, rounded to nearest) or uint8, C in {1, 3}, or any iterable
    of (H, W[, C]) frames. yuv420p needs even sizes, so an odd width/height is padded by repeating the last
    column/row (the output is then 1 pixel larger than the input). An unwritable destination raises InputError.
    """
    path = Path(path)
    _require_av(path)
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number, not {fps!r}")
    frames_iter = iter(frames)
    first = next(frames_iter, None)
    if first is None:
        raise ValueError(f"{path}: no frames to write")
    try:
        with atomic_file(path) as tmp:
            _encode(tmp, first, frames_iter, fps, crf)
    except OSError as err:
        raise InputError(path, f"cannot write: {err.strerror or _describe(err)}") from None
    except _FFMPEG_ERRORS as err:
        raise InputError(path, f"cannot write: {_describe(err)}") from None


def _encode(tmp: Path, first: np.ndarray, rest: Iterator[np.ndarray], fps: float, crf: int) -> None:
    shape = _to_rgb8(first).shape  # (H, W, 3) before padding
    height, width = shape[0] + shape[0] % 2, shape[1] + shape[1] % 2
    with av.open(str(tmp), mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf)}
        for frame in _chain(first, rest):
            rgb = _pad_even(_to_rgb8(frame))
            if rgb.shape[:2] != (height, width):
                raise ValueError(f"frame size {frame.shape} differs from the first frame's {shape}")
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode(None))  # flush the encoder's delayed frames


def _chain(first: np.ndarray, rest: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    yield first
    yield from rest


def _to_rgb8(frame: np.ndarray) -> np.ndarray:
    """(H, W) | (H, W, 1 or 3), float [0, 1] or uint8 -> uint8 (H, W, 3)."""
    frame = np.asarray(frame)
    if frame.ndim == 2:
        frame = frame[..., None]
    if frame.ndim != 3 or frame.shape[2] not in (1, 3) or 0 in frame.shape:
        raise ValueError(f"expected video frames (H, W), (H, W, 1) or (H, W, 3), got shape {frame.shape}")
    if frame.dtype != np.uint8:
        if not np.isfinite(frame).all():
            raise ValueError("refusing to write a video frame with NaN/Inf values")
        frame = np.floor(np.clip(frame.astype(np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if frame.shape[2] == 1:
        frame = np.repeat(frame, 3, axis=2)
    return frame


def _pad_even(rgb: np.ndarray) -> np.ndarray:
    """Repeat the last row/column so both sizes are even (yuv420p subsamples chroma 2x2)."""
    pad_h, pad_w = rgb.shape[0] % 2, rgb.shape[1] % 2
    if pad_h or pad_w:
        rgb = np.pad(rgb, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return np.ascontiguousarray(rgb)
