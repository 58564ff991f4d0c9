"""The rendering commands: ``inverse``, ``forward``, ``relight`` and ``extract-frames``.

A batch never stops at a bad input: each clip that fails prints one line naming its file and the problem,
the rest go on, and the exit status is 1 at the end. Outputs are written atomically (a clip's G-buffer
folder appears whole; every other file by rename), so a re-run skips what is finished (``--overwrite``
redoes it) and an interrupted run leaves nothing half-written behind.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from diffusion_renderer.conventions import (
    CHUNK_MODES,
    CONTEXT_INDEX,
    DEFAULT_SEED,
    GBUFFER_KEYS,
    INVERSE_PASSES,
    TEMPORAL_COMPRESSION,
    VALUE_RANGE,
    WINDOW_FRAMES,
    WINDOW_OVERLAP_LATENTS,
    is_valid_fov,
    to_unit,
)
from diffusion_renderer.distributed import Ranks, all_sum, barrier, setup
from diffusion_renderer.io.atomic import atomic_directory, atomic_file
from diffusion_renderer.io.errors import InputError
from diffusion_renderer.io.gbuffer_files import read_gbuffer_frame, write_gbuffer_frame
from diffusion_renderer.io.layout import (
    GBUFFER_DIR,
    GROUP_MODES,
    InputClip,
    contact_sheet_path,
    discover_inputs,
    find_gbuffer_clips,
    gbuffer_frame_path,
    light_strength_path,
    parse_gbuffer_name,
    relit_frame_path,
    video_path,
)
from diffusion_renderer.lighting.envmap import METHODS as ENVMAP_METHODS
from diffusion_renderer.models.performance import ATTENTION_CHOICES, OFFLOAD_MODES

PROG = "diffusion-renderer"
AUTO = "auto"  # --light-strength auto (apps/relight.py)
FORMATS = ("png", "jpg", "exr")
OFFICIAL_ENVLIGHTS = ("0", "1", "2", "3")


def log_error(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr)


@dataclass
class Summary:
    """Done / skipped / failed clips of a batch, reported at the end (summed over the ranks of a torchrun job)."""

    done: int = 0
    skipped: int = 0
    failed: int = 0
    start: float = field(default_factory=time.perf_counter)
    ranks: Ranks = field(default_factory=Ranks)

    def fail_once(self, where: str | Path | None, exc: BaseException) -> None:
        """A problem every rank sees alike (inputs, env maps): reported and counted by rank 0 only (counted by
        every rank with context parallelism, whose ranks all keep rank 0's counts)."""
        if self.ranks.is_main:
            self.fail(where, exc)
        elif self.ranks.context_parallel:
            self.failed += 1

    def fail(self, where: str | Path | None, exc: BaseException) -> None:
        self.failed += 1
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if self.ranks.writes:
            log_error(text if isinstance(exc, InputError) or where is None else f"{where}: {text}")

    def report(self, out: Path | None = None) -> int:
        counts = [self.done, self.skipped, self.failed]
        done, skipped, failed = counts if self.ranks.context_parallel else all_sum(self.ranks, counts)
        took = time.perf_counter() - self.start
        where = f" -> {out}" if out is not None and done else ""
        if self.ranks.is_main:
            ranks = f" on {self.ranks.world} ranks" if self.ranks.world > 1 else ""
            ranks += " (context parallel)" if self.ranks.context_parallel else ""
            print(f"{done} done, {skipped} skipped, {failed} failed in {took:.1f}s{ranks}{where}", file=sys.stderr)
        return 1 if failed else 0


# ------------------------------------------------------------------------------------------------ runtime set-up


def default_device(name: str | None, ranks: Ranks | None = None):
    """``--device``, else CUDA when available, else the CPU; under torchrun a bare ``cuda`` is this rank's GPU."""
    import torch

    device = torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))
    if ranks is not None and ranks.world > 1 and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", ranks.local_rank)
    return device


def runtime(args: argparse.Namespace) -> tuple[object, object]:
    """(device, dtype): CUDA with bfloat16 when available, else CPU with float32, unless given."""
    import torch

    device = default_device(args.device, getattr(args, "ranks", None))
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    return device, dtype


def build_pipeline(role: str, args: argparse.Namespace):
    """Load ``--model`` for ``role`` once and wrap it in its pipeline, with the requested offloading."""
    from diffusion_renderer.models.specs import ModelSpecError, load_model
    from diffusion_renderer.pipelines.pipeline_forward_rendering import ForwardRenderingPipeline
    from diffusion_renderer.pipelines.pipeline_inverse_rendering import InverseRenderingPipeline

    device, dtype = runtime(args)
    if args.model.startswith("classical:"):
        settle_window(args, WINDOW_FRAMES, TEMPORAL_COMPRESSION)
        return classical_renderer(args.model, role, device)
    offload = args.offload if device.type == "cuda" else "none"  # offloading to the CPU from the CPU: nothing
    try:
        model = load_model(
            args.model, role, device="cpu" if offload != "none" else device, dtype=dtype, seed=args.seed
        )
    except ModelSpecError as exc:
        raise InputError(None, str(exc)) from None
    if args.model.startswith("random:") and not args.quiet:
        print(f"note: {args.model} has random weights, so its {role} outputs are noise", file=sys.stderr)
    apply_lora(model.transformer, role, args)  # before offloading: its hooks then cover the adapter layers
    model.transformer.set_attention(getattr(args, "attention", "auto"))  # callers without the options: defaults
    if getattr(args, "fp8", False):  # after the adapters (they stay in bf16), before compiling
        from diffusion_renderer.models.fp8 import convert_to_fp8

        convert_to_fp8(model.transformer)
    if getattr(args, "compile", False):
        model.transformer.compile_repeated_blocks()  # diffusers: one torch.compile graph shared by all blocks
    ranks = getattr(args, "ranks", None)
    if ranks is not None and ranks.context_parallel:
        import torch.distributed as dist

        model.transformer.enable_context_parallel(dist.group.WORLD)
    cls = InverseRenderingPipeline if role == "inverse" else ForwardRenderingPipeline
    pipe = cls.from_model(model)
    pipe.enable_offload(offload, device)
    pipe.set_progress_bar_config(disable=args.quiet)
    settle_window(args, pipe.tokenizer.window_frames, pipe.tokenizer.temporal_compression)
    return pipe


def settle_window(args: argparse.Namespace, window: int, compression: int) -> None:
    """``--frames`` defaults to the model's window; output files are numbered in the model's frame grid."""
    if hasattr(args, "frames"):
        args.frames = args.frames or window
        args.temporal_compression = compression


def lora_files(args: argparse.Namespace, roles: tuple[str, ...]) -> dict[str, Path]:
    """{role: file} of ``--lora``: one adapter per role, each trained for a role this command runs.

    Reads only the files' headers, so a wrong file stops the command in one line before any model loads.
    """
    paths = getattr(args, "lora", None) or []
    if not paths:
        return {}
    from diffusion_renderer.models.lora import read_lora_header

    if args.model.startswith("classical:"):
        raise InputError(None, f"--lora adapts a neural model, not {args.model}")
    scale = getattr(args, "lora_scale", 1.0)
    if not np.isfinite(scale):
        raise InputError(None, f"--lora-scale must be a finite number, got {scale}")
    files: dict[str, Path] = {}
    for path in map(Path, paths):
        try:
            role = read_lora_header(path)["role"]
        except ValueError as exc:
            raise InputError(None, str(exc)) from None
        if role not in roles:
            raise InputError(path, f"a LoRA for the {role} model; this command runs the {' and '.join(roles)} model")
        if role in files:
            raise InputError(path, f"a second {role} LoRA (after {files[role]}): give one per role")
        files[role] = path
    return files


def apply_lora(transformer, role: str, args: argparse.Namespace) -> None:
    """Load the ``--lora`` file of ``role`` (if any) into the DiT at ``--lora-scale``."""
    from diffusion_renderer.models.lora import load_lora

    path = lora_files(args, ("inverse", "forward")).get(role)
    if path is None:
        return
    try:
        load_lora(transformer, path, scale=getattr(args, "lora_scale", 1.0), role=role)
    except ValueError as exc:
        raise InputError(None, str(exc)) from None


CLASSICAL = ("classical:splitsum",)


def classical_renderer(spec: str, role: str, device):
    """``classical:splitsum``: the split-sum image-based-lighting baseline, in place of a forward pipeline."""
    from diffusion_renderer.render.splitsum import SplitSumRenderer

    if spec not in CLASSICAL:
        raise InputError(None, f"unknown classical renderer {spec!r} (known: {', '.join(CLASSICAL)})")
    if role != "forward":
        raise InputError(None, f"{spec} only renders (forward); estimate G-buffers with a neural --model first")
    return SplitSumRenderer(device=device)


def generator(args: argparse.Namespace):
    import torch

    return torch.Generator().manual_seed(args.seed)


def check_output_dir(out: Path, ranks: Ranks | None = None) -> None:
    """Fail early, in one line, when the output folder cannot be written. Leftovers of a killed run are removed
    first, by rank 0 while the other ranks wait (they would be another rank's files in progress later)."""
    ranks = ranks or Ranks()
    try:
        out.mkdir(parents=True, exist_ok=True)
        if ranks.is_main:
            remove_stale_temporaries(out)
        barrier(ranks)
        test = out / f".write_test.{ranks.rank}"
        with atomic_file(test) as tmp:
            tmp.write_bytes(b"")
        test.unlink()
    except OSError as exc:
        raise InputError(out, f"cannot write to the output folder ({exc.strerror or exc})") from None


def start_batch(args: argparse.Namespace) -> tuple[Path, Summary]:
    """The output folder (checked writable, leftovers removed) and a fresh summary."""
    out = Path(args.out)
    if hasattr(args, "resolution"):
        processing_resolution(args)  # a bad --resolution stops the command before any work
    args.ranks = setup(getattr(args, "device", None))
    if getattr(args, "context_parallel", False) and args.ranks.world > 1:
        args.ranks = replace(args.ranks, context_parallel=True)
    if not args.ranks.is_main:
        args.quiet = True  # one set of progress bars: rank 0's
    if not args.ranks.writes:
        args.no_contact_sheet = True  # rank 0 draws it
    check_output_dir(out, args.ranks)
    return out, Summary(ranks=args.ranks)


def input_clips(args: argparse.Namespace, summary: Summary) -> list[InputClip]:
    """This rank's clips of the INPUT arguments; inputs that give none are reported (the batch goes on)."""
    clips, errors = discover_inputs(args.inputs, group_mode=args.group_mode)
    for err in errors:
        summary.fail_once(None, err)
    return summary.ranks.shard(clips)


def processing_resolution(args: argparse.Namespace):
    """``--resolution``: nothing (model default), N (longest side) or H W."""
    if not args.resolution:
        return None
    if len(args.resolution) > 2:
        raise InputError(None, f"--resolution takes N or H W, got {len(args.resolution)} numbers")
    return args.resolution[0] if len(args.resolution) == 1 else tuple(args.resolution)


def pipeline_options(args: argparse.Namespace) -> dict:
    return {
        "num_inference_steps": args.steps,
        "guidance_scale": args.guidance,
        "processing_resolution": processing_resolution(args),
        "resize_mode": args.resize_mode,
        "num_frames": args.frames,
        "chunk_mode": args.chunk_mode,
        "overlap_latents": args.overlap,
        "progress": not args.quiet,
    }


# ----------------------------------------------------------------------------------------------- file helpers


def frame_id(
    index: int, num_frames: int, window: int, chunk_mode: str, compression: int = TEMPORAL_COMPRESSION
) -> tuple[int, int]:
    """(chunk, frame) of a clip frame: official per-window numbering for independent windows, else chunk 0."""
    from diffusion_renderer.pipelines.windows import window_length

    length = window_length(num_frames, window, compression)
    if chunk_mode == "all" or (length == 1 and num_frames > 1):
        return divmod(index, length)
    return 0, index


def write_clip_video(path: Path, key: str, frames: np.ndarray, fps: float) -> None:
    from diffusion_renderer.io.video import write_video

    write_video(path, to_unit(key, frames) if key in VALUE_RANGE else frames, fps)  # e.g. a mask: [0, 1] already


def clip_fps(args: argparse.Namespace, source_fps: float | None) -> float:
    return float(args.fps or source_fps or 24.0)


def select(items: list, args: argparse.Namespace) -> list:
    items = items[:: max(1, args.every_n)]
    return items[: args.max_frames] if args.max_frames else items


def load_clip(clip: InputClip, args: argparse.Namespace) -> tuple[np.ndarray, float | None]:
    """Frames (T, h, w, 3) in [0, 1] of an input clip and its frame rate (None for image files)."""
    from diffusion_renderer.io.images import read_image
    from diffusion_renderer.io.video import read_video

    if clip.video is not None:
        return read_video(clip.video, fps=args.fps, every_n=args.every_n, max_frames=args.max_frames)
    paths = select(list(clip.frames or []), args)
    frames = [read_image(p) for p in paths]
    sizes = {f.shape for f in frames}
    if len(sizes) > 1:
        raise InputError(paths[0].parent, f"frames of one clip differ in size: {sorted(sizes)}")
    return np.stack(frames), None


def camera_fov(clip: InputClip | None, args: argparse.Namespace) -> float | None:
    """The input camera's vertical field of view in degrees: ``--fov``, else a photo's own (its EXIF 35 mm-equivalent
    focal length; an image, or a frame sequence's first image: videos carry none), else None (``tiny`` then reads it
    off the G-buffers where it can). Why: the camera puts the map's background where the input's was, and the hint's
    shadows on; the true camera gives relighting +0.19 dB (benchmarks/results/eval_tiny_cpu.json, --known-fov)."""
    from diffusion_renderer.io.images import exif_fov

    if args.fov is not None or clip is None or not clip.frames:
        return args.fov
    fov = exif_fov(clip.frames[0])
    if fov is not None and not args.quiet:
        print(f"{clip.name}: camera {fov:.1f} degrees vertical, from the photo's focal length", file=sys.stderr)
    return fov


def clip_source(clip: InputClip) -> Path | str:
    return clip.video or (clip.frames[0] if clip.frames and len(clip.frames) == 1 else clip.name)


def save_sheet(out: Path, clip: str, columns: Mapping[str, np.ndarray]) -> None:
    """Contact sheet: rows = first / middle / last frame, columns = input, G-buffers, relit results."""
    from diffusion_renderer.io.contact_sheet import depth_to_color, save_contact_sheet

    count = next(iter(columns.values())).shape[0]
    picks = sorted({0, count // 2, count - 1})
    rows = []
    for t in picks:
        tiles = []
        for name, frames in columns.items():
            image = frames[min(t, frames.shape[0] - 1)]
            key = name.split(" ", 1)[0]  # "normal (edited)" shows as a normal
            if key in ("normal", "depth"):
                image = to_unit(key, image)
            if key == "depth":
                image = depth_to_color(image[..., 0])
            tiles.append((name, image))
        rows.append((f"frame {t}", tiles))
    save_contact_sheet(contact_sheet_path(out, clip), rows)


# ------------------------------------------------------------------------------------------------------ inverse


def gbuffer_folder(out: Path, clip: str) -> Path:
    return out / GBUFFER_DIR / clip


def existing_passes(folder: Path) -> dict[str, int]:
    """{pass: frame count} of a finished G-buffer folder."""
    counts: dict[str, int] = {}
    if folder.is_dir():
        for file in folder.iterdir():
            parsed = parse_gbuffer_name(file.name)
            if parsed:
                counts[parsed[2]] = counts.get(parsed[2], 0) + 1
    return counts


def inverse_done(out: Path, clip: str, passes: Iterable[str], args: argparse.Namespace) -> bool:
    counts = existing_passes(gbuffer_folder(out, clip))
    if not all(counts.get(p) for p in passes):
        return False
    if args.no_video or max(counts.values()) == 1:
        return True
    return all(video_path(out, clip, p).is_file() for p in passes)


def write_gbuffers(out: Path, clip: str, gbuffers: Mapping[str, np.ndarray], fps: float, args) -> None:
    """Frames into ``gbuffer_frames/{clip}`` (one atomic folder), then one mp4 per pass for videos."""
    if not args.ranks.writes:
        return
    folder = gbuffer_folder(out, clip)
    with atomic_directory(folder) as tmp:
        for name, frames in gbuffers.items():
            for index, frame in enumerate(frames):
                chunk, local = frame_id(index, len(frames), args.frames, args.chunk_mode, args.temporal_compression)
                path = tmp / gbuffer_frame_path(out, clip, chunk, local, name, args.format).name
                write_gbuffer_frame(path, name, frame)
    count = len(next(iter(gbuffers.values())))
    if count > 1 and not args.no_video:
        for name, frames in gbuffers.items():
            write_clip_video(video_path(out, clip, name), name, frames, fps)


def run_inverse_clip(pipe, clip: InputClip, out: Path, args) -> tuple[np.ndarray, dict[str, np.ndarray], float]:
    frames, source_fps = load_clip(clip, args)
    result = pipe(
        frames,
        passes=args.passes,
        generator=generator(args),
        normalize_normal=args.normalize_normal,
        pass_batch_size=args.pass_batch_size,
        ensemble_size=args.ensemble,
        ensemble_mirror=args.ensemble_mirror,
        ensemble_shift=args.ensemble_shift,
        basecolor_detail=args.basecolor_detail,
        **pipeline_options(args),
    )
    fps = clip_fps(args, source_fps)
    write_gbuffers(out, clip.name, result.gbuffers, fps, args)
    return frames, result.gbuffers, fps


def cmd_inverse(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    lora_files(args, ("inverse",))  # a wrong --lora file: one line, before any work
    check_blur_options(args)
    out, summary = start_batch(args)
    clips = input_clips(args, summary)
    pipe = None
    for clip in tqdm(clips, desc="clips", disable=args.quiet):
        if not args.overwrite and inverse_done(out, clip.name, args.passes, args):
            summary.skipped += 1
            continue
        try:
            pipe = pipe or build_pipeline("inverse", args)
            frames, gbuffers, _ = run_inverse_clip(pipe, clip, out, args)
            if not args.no_contact_sheet:
                save_sheet(out, clip.name, {"input": frames, **gbuffers})
            summary.done += 1
        except (InputError, ValueError, OSError) as exc:
            summary.fail(clip_source(clip), exc)
    return summary.report(out)


# ------------------------------------------------------------------------------------------------------ forward


def resolve_lightings(args: argparse.Namespace, summary: Summary) -> list[tuple[str, object]]:
    """[(name, HDR array or None)]: the env maps, or one random-lighting run per requested index.

    A bad env map is reported and left out; the others still render. A bad ``--fov`` stops the command.
    """
    from diffusion_renderer.apps.relight import scale_lighting
    from diffusion_renderer.lighting.presets import load_envmap

    if args.fov is not None and not is_valid_fov(args.fov):
        raise InputError(None, f"--fov must be in (0, 180) degrees, got {args.fov}")
    check_blur_options(args)

    strength = light_strength(args)
    specs = args.envmap or list(OFFICIAL_ENVLIGHTS)
    if args.random_lighting:
        if strength != 1.0:
            raise InputError(None, "--light-strength scales env maps: --random-lighting has none")
        return [(f"random_{i:04d}", None) for i in range(len(specs))]
    lightings = []
    for spec in specs:
        try:
            name, hdr = load_envmap(spec)
        except (InputError, ValueError, OSError) as exc:
            summary.fail_once(spec, exc)
            continue
        factor = 1.0 if strength == AUTO else strength  # auto: render_lightings finds it per clip
        lightings.append((name + strength_suffix(strength), scale_lighting(hdr, factor)))
    return lightings


def light_strength(args: argparse.Namespace) -> float | str:
    """``--light-strength`` as a factor > 0 or ``auto``; a bad value stops the command in one line."""
    from diffusion_renderer.apps.relight import check_light_strength

    try:
        return check_light_strength(args.light_strength)
    except ValueError as exc:
        raise InputError(None, f"--light-strength: {exc}") from None


def refuse_auto_strength(args: argparse.Namespace, command: str) -> None:
    """``--light-strength auto`` matches relit frames to their input image, which ``forward`` does not have."""
    if args.light_strength == AUTO:
        message = "matches relit frames to their input image: relight, edit and insert only"
        raise InputError(None, f"--light-strength auto {message}, not {command}")


def strength_suffix(strength: float | str) -> str:
    """What a lighting's output name gains from ``--light-strength`` (none at 1), so that a re-run at another
    strength does not take the first one's frames for its own; no dots, which frame names use as separators."""
    if strength == 1.0:
        return ""
    return f"_{AUTO}" if strength == AUTO else "_x" + f"{strength:g}".replace(".", "p")


def load_gbuffer_clip(paths: Mapping[str, list[Path]]) -> dict[str, np.ndarray]:
    """{pass: frame paths} -> {pass: (T, h, w, C) in the conventions' ranges}."""
    gbuffers = {}
    for key, files in paths.items():
        frames = [read_gbuffer_frame(p, key) for p in files]
        if len({f.shape for f in frames}) > 1:
            raise InputError(files[0].parent, f"{key} frames differ in size")
        gbuffers[key] = np.stack(frames)
    return gbuffers


def forward_done(out: Path, clip: str, name: str, count: int, args) -> bool:
    frames = [
        relit_frame_path(
            out, clip, *frame_id(i, count, args.frames, args.chunk_mode, args.temporal_compression), name, args.format
        )
        for i in range(count)
    ]
    if not all(f.is_file() for f in frames):
        return False
    return count == 1 or args.no_video or video_path(out, clip, name).is_file()


def write_relit(out: Path, clip: str, name: str, images: np.ndarray, fps: float, args) -> None:
    if not args.ranks.writes:
        return
    for index, frame in enumerate(images):
        chunk, local = frame_id(index, len(images), args.frames, args.chunk_mode, args.temporal_compression)
        write_gbuffer_frame(relit_frame_path(out, clip, chunk, local, name, args.format), "rgb", frame)
    if len(images) > 1 and not args.no_video:
        write_clip_video(video_path(out, clip, name), "rgb", images, fps)


def neural_forward_options(pipe, args: argparse.Namespace, predicted: bool) -> dict:
    """The options only the neural forward pipeline takes: ``--correction-blur`` and the hint's fitted shadows,
    whose default is off for predicted G-buffers (their depth casts false shadows where their planes pass the
    camera fit: ``benchmarks/TINY_HISTORY.md``, fifteenth session) and on for G-buffers from files."""
    if not hasattr(pipe, "correction_sigma"):  # split-sum
        return {}
    options = {} if args.correction_blur is None else {"correction_blur": args.correction_blur}
    return options | {"fitted_shadows": (not predicted) if args.fitted_shadows is None else args.fitted_shadows}


def render_lightings(
    pipe,
    gbuffers: Mapping[str, np.ndarray],
    lightings,
    out: Path,
    clip: str,
    fps: float,
    args,
    summary: Summary,
    source: np.ndarray | None = None,
    predicted: bool = True,
    fov_deg: float | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Relight one clip under each lighting not yet rendered: ({lighting name: (T, h, w, 3)}, {lighting name: the
    factor ``--light-strength auto`` chose}). ``source``: the input frames (T, h, w, 3), whose level auto matches.
    ``predicted``: the G-buffers come from the inverse model (relight, edit, insert), not from files (forward).
    ``fov_deg``: the clip's camera (:func:`camera_fov`), None where unknown."""
    from diffusion_renderer.apps.relight import match_level, scale_lighting

    count = len(next(iter(gbuffers.values())))
    todo = [(n, e) for n, e in lightings if args.overwrite or not forward_done(out, clip, n, count, args)]
    if not todo:
        summary.skipped += 1
        return {}, {}
    neural_only = neural_forward_options(pipe, args, predicted)

    def render(factors: list[float]) -> list[np.ndarray]:  # factors on the maps' radiance, one per lighting
        return pipe(
            dict(gbuffers),
            [scale_lighting(env, factor) for (_, env), factor in zip(todo, factors, strict=True)],
            generator=generator(args),
            rotate_light=args.rotate_light,
            light_angle=args.light_angle,
            fixed_frame=args.fixed_frame,
            envmap_method=args.envmap_method,
            **({} if fov_deg is None else {"fov_deg": fov_deg}),  # split-sum's default camera is its own
            **neural_only,  # split-sum has no correction to smooth and no hint to shadow
            **pipeline_options(args),
        ).images

    chosen = {}
    if args.light_strength == AUTO:  # apps/relight.py: per map, the factor that matches the input's level
        factors, rendered = match_level(render, len(todo), source)
        chosen = {name: factor for (name, _), factor in zip(todo, factors, strict=True)}
        record_strengths(out, clip, chosen, args)
    else:  # a numeric strength is in the maps already (resolve_lightings)
        rendered = render([1.0] * len(todo))
    relit = {}
    for (name, hdr), images in zip(todo, rendered, strict=True):
        write_relit(out, clip, name, images, fps, args)
        if hdr is not None and not args.no_contact_sheet:
            relit[f"{name} (light)"] = light_thumbnails(hdr, count, args)
        relit[name] = images
    summary.done += 1
    return relit, chosen


def record_strengths(out: Path, clip: str, factors: Mapping[str, float], args) -> None:
    """Keep the factors ``--light-strength auto`` chose (:func:`light_strength_path`, beside those of earlier runs),
    so ``--light-strength S`` can give another shot of the same scene the same light; and say them."""
    if not args.quiet:
        print("\n".join(f"{clip}: {n}: light strength {f:.3g}" for n, f in factors.items()), file=sys.stderr)
    if not args.ranks.writes:
        return
    with atomic_file(light_strength_path(out, clip)) as tmp:
        tmp.write_text(json.dumps({**recorded_strengths(out, clip), **factors}, indent=1, sort_keys=True) + "\n")


def recorded_strengths(out: Path, clip: str) -> dict[str, float]:
    """The factors :func:`record_strengths` kept for ``clip`` ({} when none)."""
    path = light_strength_path(out, clip)
    try:
        known = json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:  # not a JSON file
        return {}
    return known if isinstance(known, dict) else {}


def light_thumbnails(hdr: np.ndarray, count: int, args: argparse.Namespace) -> np.ndarray:
    """(T, 64, 128, 3) env_ldr panoramas as the forward model sees them, per frame (for contact sheets)."""
    from diffusion_renderer.lighting.envmap import process_environment_map

    frames = count if args.rotate_light else 1
    env = process_environment_map(
        hdr, 64, 128, frames, rotate=args.rotate_light, fixed_angle_deg=args.light_angle, method="direct"
    )
    return env.env_ldr.expand(count, -1, -1, -1).numpy()


def cmd_forward(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    lora_files(args, ("forward",))
    refuse_auto_strength(args, "forward")
    out, summary = start_batch(args)
    lightings = resolve_lightings(args, summary)
    if not lightings:
        return summary.report(out)
    clips: dict[str, dict[str, list[Path]]] = {}
    for root in args.inputs:
        found, errors = find_gbuffer_clips(root, GBUFFER_KEYS)
        for err in errors:
            summary.fail_once(None, err)
        clips.update(found)
    pipe = None
    for clip, paths in tqdm(summary.ranks.shard(list(clips.items())), desc="clips", disable=args.quiet):
        try:
            gbuffers = load_gbuffer_clip(paths)
            pipe = pipe or build_pipeline("forward", args)
            relit, _ = render_lightings(
                pipe,
                gbuffers,
                lightings,
                out,
                clip,
                clip_fps(args, None),
                args,
                summary,
                predicted=False,
                fov_deg=args.fov,
            )
            if relit and not args.no_contact_sheet:
                save_sheet(out, clip, {**gbuffers, **relit})
        except (InputError, ValueError, OSError) as exc:
            summary.fail(next(iter(paths.values()))[0].parent, exc)
    return summary.report(out)


# ------------------------------------------------------------------------------------------------------ relight


def read_gbuffers_back(out: Path, clip: str, passes: Iterable[str]) -> dict[str, np.ndarray]:
    """The G-buffers an earlier run wrote for ``clip`` (see :func:`inverse_done`)."""
    found, errors = find_gbuffer_clips(gbuffer_folder(out, clip), passes)
    if errors:
        raise errors[0]
    return load_gbuffer_clip(next(iter(found.values())))


def cmd_relight(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    if args.model.startswith("classical:"):
        classical_renderer(args.model, "inverse", "cpu")  # says, in one line, that it cannot estimate G-buffers
    lora_files(args, ("inverse", "forward"))
    out, summary = start_batch(args)
    lightings = resolve_lightings(args, summary)
    if not lightings:
        return summary.report(out)
    clips = input_clips(args, summary)
    inverse = forward = None
    passes = args.passes
    for clip in tqdm(clips, desc="clips", disable=args.quiet):
        try:
            frames = None
            if args.overwrite or not inverse_done(out, clip.name, passes, args):
                inverse = inverse or build_pipeline("inverse", args)
                frames, gbuffers, fps = run_inverse_clip(inverse, clip, out, args)
            else:  # G-buffers of an earlier run: read them back
                gbuffers, fps = read_gbuffers_back(out, clip.name, passes), clip_fps(args, None)
            if frames is None and args.light_strength == AUTO:  # G-buffers read back: auto needs the input too
                frames = load_clip(clip, args)[0]
            forward = forward or build_pipeline("forward", args)
            fov = camera_fov(clip, args)
            relit, _ = render_lightings(
                forward, gbuffers, lightings, out, clip.name, fps, args, summary, frames, fov_deg=fov
            )
            if relit and not args.no_contact_sheet:
                columns = {"input": frames} if frames is not None else {}
                save_sheet(out, clip.name, {**columns, **gbuffers, **relit})
        except (InputError, ValueError, OSError) as exc:
            summary.fail(clip_source(clip), exc)
    return summary.report(out)


# ----------------------------------------------------------------------------------------------- extract-frames


def parse_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from None
    if width < 1 or height < 1:
        raise argparse.ArgumentTypeError(f"sizes must be positive, got {text!r}")
    return width, height


def cmd_extract_frames(args: argparse.Namespace) -> int:
    """Video files (or folders of them) -> ``OUT/{video}/frame_{i:05d}.{ext}`` (one atomic folder per video)."""
    import torch

    from diffusion_renderer.io.images import write_image
    from diffusion_renderer.io.video import VIDEO_EXTENSIONS, read_video
    from diffusion_renderer.pipelines.image_processor import resize

    out, summary = start_batch(args)
    videos: list[Path] = []
    for item in map(Path, args.inputs):
        if item.is_dir():
            videos += sorted(p for p in item.iterdir() if p.suffix.lower() in VIDEO_EXTENSIONS)
        else:
            videos.append(item)
    for video in summary.ranks.shard(videos):
        target = out / video.stem
        if target.is_dir() and not args.overwrite:
            summary.skipped += 1
            continue
        try:
            frames, _ = read_video(video, fps=args.fps, every_n=args.every_n, max_frames=args.max_frames)
            if args.resize:
                width, height = args.resize
                tensor = torch.from_numpy(frames).permute(0, 3, 1, 2)
                frames = resize(tensor, (height, width)).permute(0, 2, 3, 1).numpy()
            with atomic_directory(target) as tmp:
                for index, frame in enumerate(frames):
                    write_image(tmp / f"frame_{index:05d}.{args.format}", frame, quality=95)
            summary.done += 1
        except (InputError, ValueError, OSError) as exc:
            summary.fail(video, exc)
    return summary.report(out)


# ------------------------------------------------------------------------------------------------------ parsers


def add_model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model and sampling")
    g.add_argument(
        "--model",
        default="tiny",
        help="model spec: tiny (shipped, default), random:tiny, a trained, converted or official folder; "
        "classical:splitsum (forward only)",
    )
    g.add_argument("--seed", type=int, default=DEFAULT_SEED, help="noise seed; same seed, same output (default 1000)")
    g.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's; 15, official)")
    g.add_argument("--guidance", type=float, default=0.0, help="classifier-free guidance weight (default 0: off)")
    g.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    g.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default=None, help="default: bf16 on GPU")
    g.add_argument(
        "--offload",
        choices=OFFLOAD_MODES,
        default="none",
        help="weights in CPU memory (GPU only): group streams the DiT's blocks (4.5 GiB for 57 frames at 720p), "
        "model keeps one component on the GPU, sequential one layer",
    )
    g.add_argument(
        "--attention",
        choices=ATTENTION_CHOICES,
        default="auto",
        help="attention kernels: auto (cuDNN on Hopper, else PyTorch's choice), cudnn, flash, efficient, math",
    )
    g.add_argument("--compile", action="store_true", help="torch.compile the DiT blocks (faster steps on a GPU)")
    g.add_argument(
        "--fp8",
        action="store_true",
        help="FP8 (e4m3) matrix products in the DiT's blocks: for Hopper GPUs, about 3 %% rounding per layer, "
        "half the DiT's weight memory (see models/fp8.py)",
    )
    g.add_argument(
        "--context-parallel",
        action="store_true",
        help="under torchrun: all ranks render each clip together, the DiT's tokens split across them (long clips "
        "at 7B); default: clips dealt to the ranks",
    )
    g.add_argument(
        "--lora",
        action="append",
        metavar="PATH",
        help="LoRA adapter file (e.g. the real-footage LoRA from `train --lora`), applied to the model of the "
        "role it was trained for; relight takes one per role",
    )
    g.add_argument("--lora-scale", type=float, default=1.0, metavar="S", help="LoRA strength (default 1; 0: off)")
    g = p.add_argument_group("frames and resolution")
    g.add_argument(
        "--resolution", type=int, nargs="+", metavar="N", help="H W, or the longest side (default 704 1280)"
    )
    g.add_argument("--resize-mode", choices=("fit", "stretch"), default="fit", help="fit: no stretching (default)")
    g.add_argument(
        "--frames",
        type=int,
        default=None,
        help="frames per window (default the model's: 57 = 1 + 8k official, 16 tiny)",
    )
    g.add_argument("--chunk-mode", choices=CHUNK_MODES, default="blend", help="blend: overlapping windows (default)")
    g.add_argument("--overlap", type=int, default=WINDOW_OVERLAP_LATENTS, help="latent frames shared by windows")
    g.add_argument("--fps", type=float, default=None, help="sample input videos at this rate; rate of output mp4s")
    g = p.add_argument_group("output")
    g.add_argument("--out", required=True, help="output folder")
    g.add_argument("--format", choices=FORMATS, default="png", help="png (lossless, default), jpg (official), exr")
    g.add_argument("--overwrite", action="store_true", help="redo finished outputs")
    g.add_argument("--no-video", action="store_true", help="no mp4 per pass / lighting")
    g.add_argument("--no-contact-sheet", action="store_true", help="no contact sheet PNG per clip")
    g.add_argument("--quiet", action="store_true", help="no progress bars")
    # env-map resampling (lighting.envmap.METHODS); default: the model's (area for ours, the cube map for official)
    g.add_argument("--envmap-method", choices=ENVMAP_METHODS, default=None, help=argparse.SUPPRESS)


def add_input_options(p: argparse.ArgumentParser, single: bool = False) -> None:
    if single:
        p.add_argument("input", metavar="INPUT", help="an image, a video, a frame folder or a G-buffer folder")
    else:
        p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, video files or folders")
    g = p.add_argument_group("inputs")
    g.add_argument("--group-mode", choices=GROUP_MODES, default="folder", help="folder grouping (as official)")
    g.add_argument("--max-frames", type=int, default=None, help="at most this many frames per clip")
    g.add_argument("--every-n", type=int, default=1, help="keep every n-th frame")


def add_inverse_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("inverse rendering")
    g.add_argument(
        "--passes",
        nargs="+",
        choices=tuple(CONTEXT_INDEX),
        default=list(INVERSE_PASSES),
        metavar="PASS",
        help="G-buffer passes (default: basecolor normal depth roughness metallic)",
    )
    g.add_argument("--normalize-normal", action="store_true", help="official soft re-normalisation of normals")
    g.add_argument("--pass-batch-size", type=int, default=None, help="passes per DiT batch (default: auto)")
    add_ensemble_options(g)


def add_ensemble_options(g) -> None:
    """The inverse step's ensemble and basecolor detail (render commands and eval); None everywhere: the model's
    default."""
    g.add_argument(
        "--ensemble",
        type=int,
        default=None,
        metavar="E",
        help="samples per pass, combined per pixel (median; normals: mean direction, mean length); E times the "
        "inverse work (default: the model's; tiny: 2 with --ensemble-shift, official: 1)",
    )
    g.add_argument(
        "--ensemble-shift",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="ensemble members also see the input moved half a token (default: the model's)",
    )
    g.add_argument(
        "--ensemble-mirror",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="ensemble members also see the input mirrored left-right (members cycle: plain, shifted, mirrored, "
        "both; default: the model's)",
    )
    g.add_argument(
        "--basecolor-detail",
        type=float,
        default=None,
        metavar="PX",
        help="the basecolor takes the input's detail finer than a Gaussian of PX processing pixels (default: the "
        "model's; tiny: 2, official: 0, off)",
    )


def add_forward_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("lighting")
    g.add_argument("--envmap", nargs="+", default=None, help="preset name, official index 0-3, or .hdr/.exr path")
    g.add_argument("--random-lighting", action="store_true", help="no env map: the model invents the lighting")
    g.add_argument("--rotate-light", action="store_true", help="one full turn of the light over the clip")
    g.add_argument("--light-angle", type=float, default=0.0, help="fixed light rotation in degrees")
    g.add_argument("--fixed-frame", type=int, default=None, help="use this G-buffer frame for every frame")
    g.add_argument(
        "--fov",
        type=float,
        default=None,
        metavar="DEG",
        help="the camera's vertical field of view, when known: `tiny` shades its hint with it, split-sum renders "
        "with it (default: a photo's EXIF 35 mm-equivalent focal length where it has one; else tiny reads it off "
        "the G-buffers where it can, else 40; split-sum 40)",
    )
    g.add_argument(
        "--light-strength",
        default="1",
        metavar="S",
        help="scale every env map's radiance by S (outputs named MAP_xS, '.' as 'p'), or `auto` (not forward): per "
        "map, the factor that gives the relit frames the input's mean level (MAP_auto; at most three renders; kept "
        "in OUT/CLIP.light_strength.json; edit, insert: the edited clip at the unedited one's factor)",
    )
    add_correction_blur_argument(g)
    g.add_argument(
        "--fitted-shadows",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="`tiny`: shadow the shading hint through a camera read off the G-buffers when --fov is not given "
        "(default: on for forward's G-buffer files, off for the inverse model's predicted G-buffers)",
    )


def check_blur_options(args: argparse.Namespace) -> None:
    """A bad ``--correction-blur`` or ``--basecolor-detail`` stops the command before any model loads (the pipeline
    would refuse every clip)."""
    from diffusion_renderer.pipelines.image_processor import is_valid_blur  # the pipelines' own rule

    for flag in ("correction_blur", "basecolor_detail"):
        sigma = getattr(args, flag, None)
        if sigma is not None and not is_valid_blur(sigma):
            option = "--" + flag.replace("_", "-")
            raise InputError(None, f"{option} must be a finite number of pixels >= 0, got {sigma}")


def add_correction_blur_argument(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    p.add_argument(
        "--correction-blur",
        type=float,
        default=None,
        metavar="PX",
        help="`tiny`: smooth the forward model's correction to its shading hint over PX pixels (default 2, a "
        "quarter of a token's 8x8 block; 0: off); other models ignore it",
    )


def add_render_parsers(sub, set_defaults: Callable[[argparse.ArgumentParser, Callable], None]) -> None:
    examples = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser(
        "inverse",
        help="image or video -> G-buffers (official inference_inverse_renderer)",
        formatter_class=examples,
        epilog="examples:\n  diffusion-renderer inverse photo.jpg clip.mp4 frames/ --out results --model CHECKPOINTS",
    )
    add_input_options(p)
    add_inverse_options(p)
    add_model_options(p)
    set_defaults(p, cmd_inverse)

    p = sub.add_parser(
        "forward",
        help="G-buffers + env maps -> relit frames (official inference_forward_renderer)",
        formatter_class=examples,
        epilog="examples:\n  diffusion-renderer forward results --out relit --envmap sunny_vondelpark my_sky.exr\n"
        "  diffusion-renderer forward results --out turntable --envmap 1 --rotate-light --fixed-frame 0",
    )
    p.add_argument("inputs", nargs="+", metavar="GBUFFER_DIR", help="output folder of `inverse` (or gbuffer_frames)")
    add_forward_options(p)
    add_model_options(p)
    set_defaults(p, cmd_forward)

    p = sub.add_parser(
        "relight",
        help="image or video -> G-buffers -> relit under each env map",
        formatter_class=examples,
        epilog="examples:\n  diffusion-renderer relight clip.mp4 --out relit --envmap street_lamp park --model CKPT\n"
        "  diffusion-renderer relight photo.jpg --out relit --random-lighting --seed 3",
    )
    add_input_options(p)
    add_inverse_options(p)
    add_forward_options(p)
    add_model_options(p)
    set_defaults(p, cmd_relight)

    p = sub.add_parser("extract-frames", help="video files -> frame folders (official dataproc script)")
    p.add_argument("inputs", nargs="+", metavar="VIDEO", help="video files or folders of them")
    p.add_argument("--out", required=True, help="output folder: OUT/{video}/frame_00000.png ...")
    p.add_argument("--fps", type=float, default=None, help="sample at this rate (default: every frame)")
    p.add_argument("--every-n", type=int, default=1, help="keep every n-th frame")
    p.add_argument("--resize", type=parse_size, default=None, metavar="WxH", help="exact output size")
    p.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    p.add_argument("--format", choices=("png", "jpg"), default="png")
    p.add_argument("--overwrite", action="store_true")
    set_defaults(p, cmd_extract_frames)


def remove_stale_temporaries(out: Path) -> None:
    """Leftovers of a killed run (hidden ``.name.XXXX.tmp`` siblings of atomic writes) are deleted."""
    if out.is_dir():
        for tmp in out.rglob(".*.tmp*"):
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)
