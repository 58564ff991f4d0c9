"""Input discovery (files and folders -> clips) and the official output layout.

Names follow the official scripts, so their outputs and ours can be read by either:
``gbuffer_frames/{clip}/{chunk:04d}.{frame:04d}.{pass}.{ext}`` and ``{clip}/{chunk:04d}.{frame:04d}.{envmap}.{ext}``.
Discovery never raises for a bad input: it returns the problem as an ``InputError`` so a batch goes on.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from diffusion_renderer.io.errors import InputError
from diffusion_renderer.io.images import IMAGE_EXTENSIONS, is_image_file
from diffusion_renderer.io.video import VIDEO_EXTENSIONS, is_video_file

GROUP_MODES: tuple[str, ...] = ("folder", "webdataset")
# Official webdataset grouping: key = folder + base name up to the first dot.
_WEBDATASET_KEY = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")
_GBUFFER_NAME = re.compile(r"^(\d{4,})\.(\d{4,})\.([^./]+)\.([^./]+)$")
GBUFFER_DIR = "gbuffer_frames"


# ----------------------------------------------------------------------------------------------------- grouping


def _walk_files(root: Path, extensions: Iterable[str], skip_hidden: bool) -> list[str]:
    """Posix relative paths of files under ``root`` whose lower-cased name ends with one of ``extensions``."""
    suffixes = tuple(e.lower() for e in extensions)
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        if skip_hidden:
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if skip_hidden and name.startswith("."):
                continue
            if name.lower().endswith(suffixes):
                found.append(Path(os.path.relpath(os.path.join(dirpath, name), root)).as_posix())
    return found


def group_images(
    root: str | Path,
    mode: str = "folder",
    extensions: Iterable[str] = IMAGE_EXTENSIONS,
    *,
    skip_hidden: bool = False,
) -> dict[str, list[Path]]:
    """Group the images under ``root`` into clips, as the official loader does.

    ``folder``: key = the file's folder relative to ``root`` ("" for files directly in it). ``webdataset``: key =
    folder + base name up to the first dot (``a/x.0001.png`` -> ``a/x``). Keys and each group's paths are sorted.
    ``skip_hidden`` (not official) ignores dot-files and dot-folders, e.g. leftovers of interrupted writes.
    """
    if mode not in GROUP_MODES:
        raise ValueError(f"unknown image group mode {mode!r} (choose from {', '.join(GROUP_MODES)})")
    root = Path(root)
    groups: dict[str, list[str]] = defaultdict(list)
    for rel in _walk_files(root, extensions, skip_hidden):
        if mode == "folder":
            groups[os.path.dirname(rel)].append(rel)
        else:
            match = _WEBDATASET_KEY.match(rel)
            if match is not None:
                groups[match.group(1)].append(rel)
    return {key: [root / rel for rel in sorted(groups[key])] for key in sorted(groups)}


# ----------------------------------------------------------------------------------------------------- discovery


@dataclass
class InputClip:
    """One unit of work: a sequence of image ``frames`` or one ``video``."""

    name: str
    frames: list[Path] | None = None
    video: Path | None = None


def discover_inputs(
    inputs: Sequence[str | Path], group_mode: str = "folder"
) -> tuple[list[InputClip], list[InputError]]:
    """Turn command-line inputs into clips with unique names; unusable inputs come back as errors.

    An image file is a 1-frame clip and a video file one clip, both named by their stem. A folder yields its image
    groups (``group_images``; the group "" takes the folder's own name) and one clip per video file in it (named by
    its relative path without extension). A repeated name gets ``_2``, ``_3``, ...
    """
    if group_mode not in GROUP_MODES:
        raise ValueError(f"unknown image group mode {group_mode!r} (choose from {', '.join(GROUP_MODES)})")
    clips: list[InputClip] = []
    errors: list[InputError] = []
    for item in inputs:
        path = Path(item)
        try:
            clips.extend(_clips_of(path, group_mode))
        except InputError as err:
            errors.append(err)
    _make_names_unique(clips)
    return clips, errors


def _clips_of(path: Path, group_mode: str) -> list[InputClip]:
    if not path.exists():
        raise InputError(path, "no such file or folder")
    if path.is_dir():
        return _clips_of_folder(path, group_mode)
    if is_image_file(path):
        return [InputClip(name=path.stem, frames=[path])]
    if is_video_file(path):
        return [InputClip(name=path.stem, video=path)]
    supported = " ".join(IMAGE_EXTENSIONS + VIDEO_EXTENSIONS)
    raise InputError(path, f"not an image or video file (supported: {supported})")


def _clips_of_folder(folder: Path, group_mode: str) -> list[InputClip]:
    own_name = folder.name or folder.resolve().name or "input"  # "." and "dir/" still get a real name
    clips = [
        InputClip(name=key or own_name, frames=frames)
        for key, frames in group_images(folder, group_mode, skip_hidden=True).items()
    ]
    for rel in sorted(_walk_files(folder, VIDEO_EXTENSIONS, skip_hidden=True)):
        clips.append(InputClip(name=os.path.splitext(rel)[0], video=folder / rel))
    if not clips:
        raise InputError(folder, "no images or videos found in this folder")
    return sorted(clips, key=lambda clip: clip.name)


def _make_names_unique(clips: list[InputClip]) -> None:
    """First come keeps its name; later ones get the first free ``name_2``, ``name_3``, ..."""
    taken: set[str] = set()
    for clip in clips:
        name, n = clip.name, 1
        while name in taken:
            n += 1
            name = f"{clip.name}_{n}"
        clip.name = name
        taken.add(name)


# ----------------------------------------------------------------------------------------------------- output names


def _ext(ext: str) -> str:
    return ext.lstrip(".")


def flat_clip_name(clip: str) -> str:
    """A clip name usable as a single file name: ``a/b`` -> ``a__b``."""
    return clip.replace("/", "__")


def gbuffer_frame_path(out: str | Path, clip: str, chunk: int, frame: int, pass_name: str, ext: str) -> Path:
    """``out/gbuffer_frames/{clip}/{chunk:04d}.{frame:04d}.{pass_name}.{ext}`` (official inverse output)."""
    return Path(out) / GBUFFER_DIR / clip / f"{chunk:04d}.{frame:04d}.{pass_name}.{_ext(ext)}"


def relit_frame_path(out: str | Path, clip: str, chunk: int, frame: int, envmap_name: str, ext: str) -> Path:
    """``out/{clip}/{chunk:04d}.{frame:04d}.{envmap_name}.{ext}`` (official forward output)."""
    return Path(out) / clip / f"{chunk:04d}.{frame:04d}.{envmap_name}.{_ext(ext)}"


def video_path(out: str | Path, clip: str, tag: str) -> Path:
    """``out/{clip with '/' -> '__'}.{tag}.mp4``."""
    return Path(out) / f"{flat_clip_name(clip)}.{tag}.mp4"


def contact_sheet_path(out: str | Path, clip: str) -> Path:
    """``out/{clip with '/' -> '__'}.contact_sheet.png``."""
    return Path(out) / f"{flat_clip_name(clip)}.contact_sheet.png"


def light_strength_path(out: str | Path, clip: str) -> Path:
    """``out/{clip with '/' -> '__'}.light_strength.json``: the factors ``--light-strength auto`` chose."""
    return Path(out) / f"{flat_clip_name(clip)}.light_strength.json"


def parse_gbuffer_name(name: str | Path) -> tuple[int, int, str] | None:
    """``0001.0042.basecolor.png`` -> (1, 42, "basecolor"); None for any other name."""
    match = _GBUFFER_NAME.match(Path(name).name)
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2)), match.group(3)


# ----------------------------------------------------------------------------------------------------- G-buffer input


def find_gbuffer_clips(
    root: str | Path, passes: Iterable[str]
) -> tuple[dict[str, dict[str, list[Path]]], list[InputError]]:
    """Read G-buffer frames written in the layout above -> ({clip: {pass: paths by (chunk, frame)}}, errors).

    ``root`` may be a run's output folder (holding ``gbuffer_frames``), the ``gbuffer_frames`` folder itself, or
    one clip folder. Only image files named ``{chunk}.{frame}.{pass}.{ext}`` with a pass in ``passes`` count (our
    PNG/EXR and the official JPEG alike). A pass missing from a clip is simply absent; a clip whose passes have
    different frame counts, or that repeats a frame, is dropped with an error.
    """
    root = Path(root)
    wanted = set(passes)
    if not root.is_dir():
        return {}, [InputError(root, "no such folder" if not root.exists() else "not a folder")]
    clip_dirs = _gbuffer_clip_dirs(root)
    if not clip_dirs:
        return {}, [InputError(root, "no G-buffer frames found (expected names like 0000.0000.basecolor.png)")]
    clips: dict[str, dict[str, list[Path]]] = {}
    errors: list[InputError] = []
    for name, folder in clip_dirs.items():
        try:
            clips[name] = _gbuffer_clip(folder, wanted)
        except InputError as err:
            errors.append(err)
    return clips, errors


def _has_gbuffer_files(folder: Path) -> bool:
    return any(f.is_file() and parse_gbuffer_name(f.name) and is_image_file(f) for f in folder.iterdir())


def _gbuffer_clip_dirs(root: Path) -> dict[str, Path]:
    """Clip name -> folder: ``root`` itself when it holds frames, else every folder with frames below it."""
    if _has_gbuffer_files(root):
        return {root.resolve().name: root}
    base = root / GBUFFER_DIR if (root / GBUFFER_DIR).is_dir() else root
    found = {}
    for dirpath, dirnames, _ in os.walk(base):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        folder = Path(dirpath)
        if folder != base and _has_gbuffer_files(folder):
            found[folder.relative_to(base).as_posix()] = folder
    return dict(sorted(found.items()))


def _gbuffer_clip(folder: Path, wanted: set[str]) -> dict[str, list[Path]]:
    """{pass: paths sorted by (chunk, frame)} of one clip folder; raises InputError for an inconsistent clip."""
    by_pass: dict[str, dict[tuple[int, int], Path]] = defaultdict(dict)
    for file in sorted(folder.iterdir()):  # sorted: deterministic messages
        parsed = parse_gbuffer_name(file.name)
        if parsed is None or not is_image_file(file) or not file.is_file():
            continue
        chunk, frame, pass_name = parsed
        if pass_name not in wanted:
            continue
        other = by_pass[pass_name].get((chunk, frame))
        if other is not None:
            raise InputError(
                folder, f"frame {chunk:04d}.{frame:04d}.{pass_name} exists twice ({other.name}, {file.name})"
            )
        by_pass[pass_name][(chunk, frame)] = file
    if not by_pass:
        raise InputError(folder, f"no G-buffer frames of the passes {', '.join(sorted(wanted))}")
    counts = {name: len(frames) for name, frames in by_pass.items()}
    if len(set(counts.values())) > 1:
        detail = ", ".join(f"{name} {count}" for name, count in sorted(counts.items()))
        raise InputError(folder, f"passes have different frame counts ({detail})")
    return {name: [frames[key] for key in sorted(frames)] for name, frames in sorted(by_pass.items())}
