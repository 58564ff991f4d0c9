"""The application commands: ``edit`` (material editing) and ``insert`` (object insertion).

Both take one INPUT: an image, a video or a frame folder (its G-buffers are estimated with the inverse model and
kept in ``OUT/gbuffer_frames/{clip}``, so a re-run reuses them), or a G-buffer clip folder written by
``inverse``. They write the edited G-buffers to ``OUT/gbuffer_frames/{clip}_{edited|inserted}`` (with the
edit's ``mask`` pass), render the original and the edited scene under each lighting with the same seed
(``OUT/{clip}/...`` and ``OUT/{clip}_{edited|inserted}/...``) and a before/after contact sheet. Renders are
skipped when they exist, unless the edit changed since they were made (its settings are kept in
``OUT/{tag}.edit.json``) or ``--overwrite`` is given.
"""

from __future__ import annotations

import argparse
import copy
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from diffusion_renderer.apps.material_edit import EDIT_FIELDS
from diffusion_renderer.cli.render import (
    AUTO,
    add_forward_options,
    add_input_options,
    add_model_options,
    build_pipeline,
    camera_fov,
    clip_fps,
    frame_id,
    gbuffer_folder,
    inverse_done,
    load_clip,
    load_gbuffer_clip,
    read_gbuffers_back,
    recorded_strengths,
    render_lightings,
    resolve_lightings,
    run_inverse_clip,
    save_sheet,
    start_batch,
    write_gbuffers,
)
from diffusion_renderer.conventions import GBUFFER_KEYS
from diffusion_renderer.io.atomic import atomic_file
from diffusion_renderer.io.errors import InputError
from diffusion_renderer.io.layout import discover_inputs, find_gbuffer_clips, relit_frame_path


@dataclass
class SourceClip:
    """The scene to edit: its name, input frames (None for a G-buffer input), G-buffers, frame rate and camera
    (``camera_fov``: None where unknown)."""

    name: str
    frames: np.ndarray | None
    gbuffers: dict[str, np.ndarray]
    fps: float
    fov_deg: float | None = None


@dataclass
class Edit:
    """An edit's result: the new G-buffers, the pixels it touched (T, h, w, 1) and its settings (for resume)."""

    gbuffers: dict[str, np.ndarray]
    mask: np.ndarray
    settings: dict
    passes: tuple[str, ...]  # the passes to show before/after in the contact sheet


def is_gbuffer_input(path: Path) -> bool:
    found, _ = find_gbuffer_clips(path, GBUFFER_KEYS) if path.is_dir() else ({}, [])
    return bool(found)


def source_clip(args: argparse.Namespace, out: Path) -> SourceClip:
    """The G-buffers of INPUT: read from a G-buffer folder, from an earlier run, or estimated now."""
    path = Path(args.input)
    if is_gbuffer_input(path):
        found, errors = find_gbuffer_clips(path, GBUFFER_KEYS)
        if errors:
            raise errors[0]
        if len(found) != 1:
            raise InputError(path, f"holds {len(found)} G-buffer clips; give one clip folder")
        name, paths = next(iter(found.items()))
        missing = [k for k in GBUFFER_KEYS if k not in paths]
        if missing:
            raise InputError(path, f"lacks the {', '.join(missing)} pass(es)")
        return SourceClip(name or path.name, None, load_gbuffer_clip(paths), clip_fps(args, None), args.fov)
    clips, errors = discover_inputs([path], group_mode=args.group_mode)
    if errors:
        raise errors[0]
    if len(clips) != 1:
        raise InputError(path, f"holds {len(clips)} clips; give one image, video or frame folder")
    clip = clips[0]
    if not args.overwrite and inverse_done(out, clip.name, GBUFFER_KEYS, args):
        frames, source_fps = load_clip(clip, args)
        gbuffers = read_gbuffers_back(out, clip.name, GBUFFER_KEYS)
        return SourceClip(clip.name, frames, gbuffers, clip_fps(args, source_fps), camera_fov(clip, args))
    frames, gbuffers, fps = run_inverse_clip(build_pipeline("inverse", args), clip, out, args)
    return SourceClip(clip.name, frames, gbuffers, fps, camera_fov(clip, args))


def settings_text(settings: dict) -> str:
    return json.dumps(settings, sort_keys=True, indent=1)


def edit_changed(path: Path, settings: dict) -> bool:
    """Whether ``settings`` differ from those an earlier, finished run stored at ``path``."""
    return not path.is_file() or path.read_text() != settings_text(settings)


def same_strengths(lightings: list[tuple[str, np.ndarray]], factors: dict[str, float]) -> list[tuple[str, np.ndarray]]:
    """The lightings with their maps scaled by the factors ``--light-strength auto`` chose for the unedited clip;
    InputError when one was never chosen (its frames were rendered, but its record is gone)."""
    missing = [name for name, _ in lightings if name not in factors]
    if missing:
        raise InputError(None, f"no light strength recorded for {', '.join(missing)}: run again with --overwrite")
    return [(name, hdr * factors[name]) for name, hdr in lightings]


def run_before_after(args: argparse.Namespace, tag: str, make_edit: Callable[[SourceClip], Edit]) -> int:
    """The common flow of ``edit`` and ``insert``: G-buffers -> edit -> render before and after -> sheet."""
    out, summary = start_batch(args)
    lightings = resolve_lightings(args, summary)
    # one INPUT: under torchrun rank 0 does it, or every rank together with --context-parallel
    if not lightings or not (summary.ranks.is_main or summary.ranks.context_parallel):
        return summary.report(out)
    try:
        source = source_clip(args, out)
        if args.light_strength == AUTO and source.frames is None:
            raise InputError(Path(args.input), "--light-strength auto needs the input image, not a G-buffer folder")
        edit = make_edit(source)
        edited_name = f"{source.name}_{tag}"
        forward = build_pipeline("forward", args)  # also settles --frames, which numbers the files below
        settings_file = out / f"{edited_name}.edit.json"
        changed = edit_changed(settings_file, edit.settings)
        if changed or args.overwrite or not gbuffer_folder(out, edited_name).is_dir():
            write_gbuffers(out, edited_name, {**edit.gbuffers, "mask": edit.mask.astype(np.float32)}, source.fps, args)
        before, chosen = render_lightings(
            forward,
            source.gbuffers,
            lightings,
            out,
            source.name,
            source.fps,
            args,
            summary,
            source.frames,
            fov_deg=source.fov_deg,
        )
        after_args = copy.copy(args)
        after_args.overwrite = args.overwrite or changed
        after_lightings = lightings
        if args.light_strength == AUTO:  # the edit under the source's light, so that its change of level shows
            after_lightings = same_strengths(lightings, {**recorded_strengths(out, source.name), **chosen})
            after_args.light_strength = "1"  # the maps carry the factors
        after = render_lightings(
            forward,
            edit.gbuffers,
            after_lightings,
            out,
            edited_name,
            source.fps,
            after_args,
            summary,
            fov_deg=source.fov_deg,
        )[0]
        if (before or after) and not args.no_contact_sheet:
            save_sheet(out, edited_name, sheet_columns(args, out, source, edit, edited_name, lightings))
        if summary.ranks.writes:
            with atomic_file(settings_file) as tmp:  # stored last: a run that fails before this point is redone
                tmp.write_text(settings_text(edit.settings))
    except (InputError, ValueError, OSError) as exc:
        summary.fail(args.input, exc)
    return summary.report(out)


def sheet_columns(
    args: argparse.Namespace, out: Path, source: SourceClip, edit: Edit, edited_name: str, lightings: list
) -> dict[str, np.ndarray]:
    """Contact-sheet columns: input, mask, the changed passes before and after, each lighting before and after
    (read back from the files, so a resumed run shows the renders of earlier runs too)."""
    columns: dict[str, np.ndarray] = {} if source.frames is None else {"input": source.frames}
    columns["mask"] = np.repeat(edit.mask.astype(np.float32), 3, axis=-1)
    for key in edit.passes:
        columns[key] = source.gbuffers[key]
        columns[f"{key} (edited)"] = edit.gbuffers[key]
    count = len(edit.mask)
    for name, _ in lightings:
        columns[f"{name} before"] = read_relit(out, source.name, name, count, args)
        columns[f"{name} after"] = read_relit(out, edited_name, name, count, args)
    return columns


def read_relit(out: Path, clip: str, name: str, count: int, args: argparse.Namespace) -> np.ndarray:
    """(T, h, w, 3) rendered frames of ``clip`` under lighting ``name``, as written by :func:`render_lightings`."""
    from diffusion_renderer.io.gbuffer_files import read_gbuffer_frame

    paths = [
        relit_frame_path(
            out, clip, *frame_id(i, count, args.frames, args.chunk_mode, args.temporal_compression), name, args.format
        )
        for i in range(count)
    ]
    return np.stack([read_gbuffer_frame(p, "rgb") for p in paths])


# --------------------------------------------------------------------------------------------------------- edit


def selection_mask(args: argparse.Namespace, gbuffers: dict[str, np.ndarray]) -> np.ndarray:
    """(T, h, w) bool: the --mask file intersected with the --select-* selections."""
    from diffusion_renderer.apps.material_edit import (
        check_selection,
        select_by_color,
        select_by_depth,
    )

    shape = gbuffers["basecolor"].shape[:3]
    mask = np.ones(shape, dtype=bool)
    if args.mask:
        mask &= read_mask(Path(args.mask), shape)
    if args.select_at is not None:
        x, y = args.select_at
        if not (0 <= x < shape[2] and 0 <= y < shape[1]):
            raise InputError(None, f"--select-at ({x}, {y}) is outside the {shape[2]}x{shape[1]} image")
        color = tuple(gbuffers["basecolor"][0, y, x].tolist())
        mask &= select_by_color(gbuffers["basecolor"], color, args.tolerance)
    if args.select_color is not None:
        mask &= select_by_color(gbuffers["basecolor"], args.select_color, args.tolerance)
    if args.depth_range is not None:
        mask &= select_by_depth(gbuffers["depth"], *args.depth_range)
    try:
        return check_selection(mask, shape)
    except ValueError as exc:
        raise InputError(args.mask, str(exc)) from None


def read_mask(path: Path, shape: tuple[int, int, int]) -> np.ndarray:
    """A mask image (one for all frames) or mask video -> bool (1 or T, h, w), size-checked."""
    from diffusion_renderer.apps.material_edit import check_selection, mask_from_image
    from diffusion_renderer.io.images import read_image
    from diffusion_renderer.io.video import is_video_file, read_video

    image = read_video(path)[0] if is_video_file(path) else read_image(path)[None]
    try:
        return check_selection(mask_from_image(image), shape)
    except ValueError as exc:
        raise InputError(path, str(exc)) from None


def cmd_edit(args: argparse.Namespace) -> int:
    from diffusion_renderer.apps.material_edit import MaterialEdit, apply_material_edit, feather

    if not (args.mask or args.select_at or args.select_color or args.depth_range):
        raise InputError(None, "say where to edit: --mask, --select-at, --select-color or --depth-range")
    try:
        material = MaterialEdit(**{key: getattr(args, key) for key in EDIT_FIELDS})
    except ValueError as exc:
        raise InputError(None, str(exc)) from None

    def make_edit(source: SourceClip) -> Edit:
        mask = selection_mask(args, source.gbuffers)
        edited = apply_material_edit(source.gbuffers, feather(mask, args.feather), material)
        settings = {k: getattr(args, k) for k in EDIT_SETTINGS}
        settings["mask_file"] = str(Path(args.mask).resolve()) if args.mask else None
        return Edit(edited, mask[..., None], settings, material.passes())

    return run_before_after(args, "edited", make_edit)


# what decides an edit's result (with the mask file's path): a change re-renders the edited scene
EDIT_SETTINGS = ("select_at", "select_color", "tolerance", "depth_range", "feather", *EDIT_FIELDS)


# ------------------------------------------------------------------------------------------------------- insert


def cmd_insert(args: argparse.Namespace) -> int:
    from diffusion_renderer.apps.object_insertion import DEFAULT_FOV_DEG as INSERT_FOV_DEG
    from diffusion_renderer.apps.object_insertion import Placement, insert_object, parse_material
    from diffusion_renderer.render.mesh_gbuffers import load_mesh, override_material

    try:
        placement = Placement(
            anchor=tuple(args.at),
            scale=args.scale,
            rotate_deg=args.rotate,
            up=args.up,
            fov_deg=INSERT_FOV_DEG if args.fov is None else args.fov,  # the forward model gets it only if given
            depth_ratio=args.depth_ratio,
            frame=args.frame,
        )
        material = parse_material(args.material or [])
    except ValueError as exc:
        raise InputError(None, str(exc)) from None
    parts = override_material(load_mesh(args.object), **material)  # a bad mesh stops before any model loads

    def make_edit(source: SourceClip) -> Edit:
        variant = "cuda_ad_rgb" if str(args.device or "").startswith("cuda") else "auto"
        camera = placement if source.fov_deg is None else replace(placement, fov_deg=source.fov_deg)  # a photo's
        inserted = insert_object(source.gbuffers, parts, camera, variant=variant)
        if not inserted.mask.any():
            raise InputError(args.object, "the object is not visible: hidden behind the scene or too small")
        settings = {k: getattr(args, k) for k in ("at", "scale", "rotate", "up", "depth_ratio", "frame")}
        settings["fov"] = camera.fov_deg  # the camera placed through: --fov, the photo's, or the default
        settings.update(object=str(Path(args.object).resolve()), material=args.material)
        return Edit(inserted.gbuffers, inserted.mask, settings, ("basecolor", "normal", "depth"))

    return run_before_after(args, "inserted", make_edit)


# ------------------------------------------------------------------------------------------------------ parsers


def parse_color_arg(text: str) -> tuple[float, float, float]:
    from diffusion_renderer.apps.material_edit import parse_color

    try:
        return parse_color(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_app_parsers(sub, set_defaults: Callable[[argparse.ArgumentParser, Callable], None]) -> None:
    examples = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser(
        "edit",
        help="change basecolor / roughness / metallic inside a mask, render before and after",
        formatter_class=examples,
        epilog="examples:\n  diffusion-renderer edit photo.jpg --mask cup.png --metallic 1 --roughness 0.15 "
        "--basecolor '#d4af37' --out gold\n  diffusion-renderer edit photo.jpg --select-at 120 80 --hue-shift 120 "
        "--out recolor --envmap street_lamp",
    )
    add_input_options(p, single=True)
    g = p.add_argument_group("where (combined: a pixel must pass all that are given)")
    g.add_argument("--mask", default=None, help="mask image (white = edit; same size as the input) or mask video")
    g.add_argument("--select-at", type=int, nargs=2, metavar=("X", "Y"), help="select the basecolor at this pixel")
    g.add_argument("--select-color", type=parse_color_arg, metavar="COLOR", help="select this basecolor (#rrggbb)")
    g.add_argument("--tolerance", type=float, default=0.1, help="basecolor distance for --select-* (default 0.1)")
    g.add_argument("--depth-range", type=float, nargs=2, metavar=("NEAR", "FAR"), help="depth in [-1, 1], near -1")
    g.add_argument("--feather", type=float, default=2.0, help="soft edge inside the selection, pixels (default 2)")
    g = p.add_argument_group("what")
    g.add_argument("--basecolor", type=parse_color_arg, metavar="COLOR", help="new basecolor (#rrggbb or R,G,B)")
    g.add_argument("--hue-shift", type=float, metavar="DEG", help="turn the basecolor's hue (keeps its texture)")
    g.add_argument("--roughness", type=float, metavar="V", help="new roughness in [0, 1]")
    g.add_argument("--roughness-scale", type=float, metavar="S", help="multiply the roughness")
    g.add_argument("--metallic", type=float, metavar="V", help="new metallic value in [0, 1]")
    add_render_options(p, cmd_edit, set_defaults)

    p = sub.add_parser(
        "insert",
        help="put a mesh (OBJ/PLY/GLB) on a surface of the scene, render before and after",
        formatter_class=examples,
        epilog="examples:\n  diffusion-renderer insert photo.jpg --object bunny.glb --at 320 400 --scale 0.3 "
        "--out inserted\n  diffusion-renderer insert photo.jpg --object cube.obj --at 100 200 --material gold "
        "--out gold_cube --envmap sunny_vondelpark",
    )
    add_input_options(p, single=True)
    g = p.add_argument_group("object")
    g.add_argument("--object", required=True, metavar="MESH", help="mesh file: OBJ, PLY, GLB/glTF, STL, OFF")
    g.add_argument("--at", type=float, nargs=2, required=True, metavar=("X", "Y"), help="pixel to stand it on")
    g.add_argument("--scale", type=float, default=0.25, help="largest side / image height at that depth (0.25)")
    g.add_argument("--rotate", type=float, default=0.0, metavar="DEG", help="turn about the surface normal")
    g.add_argument("--up", choices=("y", "z"), default="y", help="the mesh's up axis (glTF: y)")
    g.add_argument(
        "--material",
        nargs="+",
        metavar="M",
        help="preset (clay, plastic, rubber, gold, silver, copper, chrome) and/or key=value overrides "
        "(basecolor=#rrggbb roughness=V metallic=V); default: the file's materials",
    )
    g = p.add_argument_group("camera (--fov below; default: the photo's EXIF focal length, else 50 here)")
    g.add_argument("--depth-ratio", type=float, default=4.0, help="assumed far / near of the scene (default 4)")
    g.add_argument("--frame", type=int, default=0, help="video frame whose surface places the object")
    add_render_options(p, cmd_insert, set_defaults)


def add_render_options(p: argparse.ArgumentParser, func: Callable, set_defaults: Callable) -> None:
    """Lighting and model options; the inverse step estimates all five passes, as the official defaults."""
    add_forward_options(p)
    add_model_options(p)
    set_defaults(p, func)
    p.set_defaults(
        passes=list(GBUFFER_KEYS),
        normalize_normal=False,
        pass_batch_size=None,
        ensemble=None,  # the model's default ensemble
        ensemble_mirror=None,
        ensemble_shift=None,
        basecolor_detail=None,
    )
