"""Train the shipped small renderers on one GPU in one command: the data engine renders training shards
(Mitsuba ``cuda_ad_rgb``), then the inverse and forward trainers run side by side on them.

Usage (device): python benchmarks/train_small_gpu.py --out $OUT/run1 --minutes 8 --steps 6000 [--init DIR]
[--pure-noise-fraction 0.5] [--train-hdri-dir DIR] [--keep DIR] [--extra TRAIN FLAGS...]

The validation clips are rendered first (held-out maps, ``--only-split val``), then training clips with new
seeds per run (``--seed``), so a second run adds data instead of repeating it. Rendering and training take
turns (``--gen-seconds``, then ``--minutes``): run together on one GPU, both crawled. Without a forward role
(``--roles inverse``) the shards leave out the shading hints, which only the forward model reads. The GPU hosts
carry no OpenCV/OpenEXR: HDRIs are read with Mitsuba's Bitmap, and the shards need no image codecs. What comes back:
each role's EMA weights as a float16 renderer file, or int8 where float16 would exceed the 16 MiB a returned
file may have (the ``medium`` forward model; the float32 file and the optimizer state exceed it too),
``summary.json``, and the training logs and validation grids in one ``logs.tar.gz`` (a device run returns at
most 8 files). ``--keep DIR`` also copies the float32 weights there, so a next run on the same warm machine can
``--init`` from them (with ``--data`` on a kept path, its clips too); ``--state DIR`` keeps the whole training
state there instead, so the next call resumes it (``train --resume``: optimizer moments, EMA and step go on;
each call's time limit runs its own cosine, a warm restart). ``--role-extra ROLE "FLAGS"`` adds flags for one role
(both roles train side by side on one call's clips, each with its own recipe). ``--compile-cache DIR`` (with
``train --compile``) starts each role's torch.compile caches from ``DIR/ROLE.compile_cache`` and returns the
updated file beside the weights: carry it to the next fresh machine, which then skips most of the compiling.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RETURN_LIMIT_BYTES = 15 * 2**20  # a device run returns files of at most 16 MiB; 1 MiB for the header
STORAGE_TAG = {"float16": "fp16", "int8": "int8", "int4": "int4"}
COMPILE_CACHE_SUFFIX = ".compile_cache"  # train --compile-cache: one file per role, returned beside the weights


def generate(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(HERE))
    from data_engine import use_mitsuba_hdr_reader
    from diffusion_renderer.data.make_data import make_dataset

    use_mitsuba_hdr_reader()
    if args.gen_threads:
        import drjit as dr

        dr.set_thread_count(args.gen_threads)
    common = {"frames": args.frames, "resolution": 256, "variant": "gpu", "spp": args.spp, "layout": "shards"}
    common["hints"] = not args.no_hints
    common["val_fraction"] = 0.25
    if args.worker == 0:
        make_dataset(args.data, scenes=args.val_scenes, seed=900_000, only_split="val", progress=False, **common)
    seed = args.seed + 100_000 * args.worker  # workers render disjoint seed ranges
    make_dataset(
        args.data,
        scenes=args.scenes,
        seed=seed,
        only_split="train",
        progress=False,
        **common,
        train_hdri_dir=args.train_hdri_dir,
    )


def renders_hints(roles: list[str]) -> bool:
    """Whether a call's shards carry the shading hints: only a forward model reads them, and their shadow marching
    shares the GPU with the path tracing of every data-engine process."""
    return "forward" in roles


def generate_command(args: argparse.Namespace) -> list[str]:
    """The command of one data-engine process (``--worker`` added per process), ``--no-hints`` unless
    :func:`renders_hints`."""
    cmd = [sys.executable, __file__, "generate", "--out", str(args.out), "--data", str(args.data)]
    cmd += ["--scenes", str(args.scenes), "--val-scenes", str(args.val_scenes), "--frames", str(args.frames)]
    cmd += ["--spp", str(args.spp), "--seed", str(args.seed), "--gen-threads", str(args.gen_threads)]
    if args.train_hdri_dir:
        cmd += ["--train-hdri-dir", str(args.train_hdri_dir)]
    if not renders_hints(args.roles):
        cmd += ["--no-hints"]
    return cmd


def count_clips(data: Path, split: str) -> int:
    from diffusion_renderer.data.shards import list_shards

    return len(list_shards(data, split))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", nargs="?", default="run", choices=("run", "generate"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=Path("/tmp/dr_data"))
    parser.add_argument("--minutes", type=float, default=8.0, help="training time per role (0: render only)")
    parser.add_argument("--steps", type=int, default=6000, help="schedule length (cosine) per role")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--scenes", type=int, default=4000, help="training clips to render (at most)")
    parser.add_argument("--val-scenes", type=int, default=64, help="scene indices for validation (1 in 4 is val)")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--spp", type=int, default=64, help="the trainer regresses the mean: noise is averaged")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gen-seconds", type=float, default=200, help="rendering phase before training")
    parser.add_argument("--val-every", type=int, default=1000)
    parser.add_argument("--generators", type=int, default=3, help="data-engine processes sharing the GPU")
    parser.add_argument(
        "--gen-threads",
        type=int,
        default=1,
        help="OMP / Dr.Jit threads per data-engine process (0: the libraries' default, as wide as the machine; "
        "12 such processes rendered 4.7 frames/s on an H200 host, 12 of one thread 24)",
    )
    parser.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--no-hints", action="store_true", help=argparse.SUPPRESS)  # generate: generate_command
    parser.add_argument("--min-clips", type=int, default=24, help="training clips before the trainers start")
    parser.add_argument("--init", type=Path, default=None, help="folder with {role}.safetensors to continue from")
    parser.add_argument("--roles", nargs="+", default=["inverse", "forward"])
    parser.add_argument(
        "--pure-noise-fraction", type=float, default=0.0, help="share of samples at sigma_max from pure noise"
    )
    parser.add_argument("--train-hdri-dir", type=Path, default=None, help="maps for training clips only")
    parser.add_argument("--keep", type=Path, default=None, help="copy the float32 weights here too")
    parser.add_argument(
        "--state", type=Path, default=None, help="resume from and keep the training states here (across calls)"
    )
    parser.add_argument(
        "--role-extra",
        nargs=2,
        action="append",
        default=[],
        metavar=("ROLE", "FLAGS"),
        help="more `train` flags for one role only, as one string (repeatable)",
    )
    parser.add_argument(
        "--compile-cache",
        type=Path,
        default=None,
        metavar="DIR",
        help="with `train --compile`: each role's torch.compile caches start from DIR/ROLE.compile_cache where it "
        "exists (a carried folder) and come back in --out, for the next fresh machine (train --compile-cache)",
    )
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more `train` flags (every role)")
    args = parser.parse_args()
    role_extra = {role: shlex.split(flags) for role, flags in args.role_extra}
    if args.mode == "generate":
        generate(args)
        return
    if args.train_hdri_dir and not args.train_hdri_dir.is_dir() and args.generators:
        # a device call that did not carry the maps: every generator would die and the call train on old clips
        parser.error(f"--train-hdri-dir {args.train_hdri_dir}: no such folder")

    args.out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "4"}
    start = time.perf_counter()
    gen_cmd = generate_command(args)
    gen_env = {**env, "OMP_NUM_THREADS": str(args.gen_threads)} if args.gen_threads else env
    # clips already in a kept --data folder (an earlier call's) are not this call's rendering
    clips_before = count_clips(args.data, "train") + count_clips(args.data, "val")
    generators = []
    for worker in range(args.generators):
        gen_log = (args.out / f"generate{worker}.log").open("w")
        cmd = [*gen_cmd, "--worker", str(worker)]
        generators.append(subprocess.Popen(cmd, stdout=gen_log, stderr=subprocess.STDOUT, env=gen_env))
    # Render first, then train: sharing the GPU, Mitsuba's long kernels starve the trainers' short ones
    # (measured: 100 frames/s of training and 1.1 frames/s of rendering when both ran at once).
    while count_clips(args.data, "train") < args.min_clips or time.perf_counter() - start < args.gen_seconds:
        if all(g.poll() is not None for g in generators):
            break
        time.sleep(2)
    failed = [g.returncode for g in generators if g.poll() not in (None, 0)]  # exited before being stopped
    for generator in generators:
        generator.terminate()
        generator.wait()
    gen_s = time.perf_counter() - start
    if failed:
        print(f"{len(failed)} of {len(generators)} data-engine processes failed (logs: generate*.log)", flush=True)
    trainers = {}
    for role in args.roles if args.minutes > 0 else ():  # --minutes 0: a call that only renders
        kept_state = args.state / f"{role}.train_state.safetensors" if args.state else None
        resume = kept_state is not None and kept_state.is_file()
        if resume:  # a warm machine's earlier call: optimizer, EMA go on
            shutil.copyfile(kept_state, args.out / kept_state.name)
        seed_compile_cache(args.compile_cache, args.out, role)
        cmd = train_command(args, role, resume, role_extra.get(role, []))
        log = (args.out / f"{role}.stdout.log").open("w")
        trainers[role] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    codes = {role: proc.wait() for role, proc in trainers.items()}
    train_clips = count_clips(args.data, "train")
    val_clips = count_clips(args.data, "val")

    for role in args.roles:
        export_role(args.out, role, keep=args.keep, state_dir=args.state)

    import torch

    summary = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "exit_codes": codes,
        "seconds": time.perf_counter() - start,
        "render_s": gen_s,
        "rendered_clips": train_clips + val_clips - clips_before,
        "rendered_frames_per_s": (train_clips + val_clips - clips_before) * args.frames / gen_s,
        "train_clips": train_clips,
        "val_clips": val_clips,
        "frames_per_clip": args.frames,
        "spp": args.spp,
        "hints": renders_hints(args.roles),
        "seed": args.seed,
        "init": str(args.init) if args.init else None,
        "pure_noise_fraction": args.pure_noise_fraction,
        "train_hdri_dir": str(args.train_hdri_dir) if args.train_hdri_dir else None,
        "extra": args.extra,
        "role_extra": role_extra,
        "generators": args.generators,
        "failed_generators": len(failed),
        "gen_threads": args.gen_threads or None,
        "compile_cache": str(args.compile_cache) if args.compile_cache else None,
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    pack_logs(args.out)
    print(json.dumps(summary, indent=1))


def train_command(args: argparse.Namespace, role: str, resume: bool, role_extra: list[str]) -> list[str]:
    """The ``diffusion-renderer train`` command of one role: the call's settings, then ``--extra``, then the role's
    own flags (last, so a role's flag overrides a common one: argparse keeps the last value)."""
    cmd = [sys.executable, "-m", "diffusion_renderer", "train", role, "--data", str(args.data)]
    cmd += ["--pure-noise-fraction", str(args.pure_noise_fraction)]
    cmd += ["--out", str(args.out), "--steps", str(args.steps), "--batch-size", str(args.batch_size)]
    cmd += ["--time-limit", str(args.minutes), "--quiet", "--val-every", str(args.val_every)]
    cmd += ["--val-steps", "1"]  # the shipped model's default sampler: its validation figures mean something
    cmd += ["--checkpoint-every", "100000", "--seed", str(args.seed)]
    if resume:
        cmd += ["--resume"]
    elif args.init is not None:
        cmd += ["--init", str(args.init / f"{role}.safetensors")]
    if args.compile_cache is not None:
        cmd += ["--compile-cache", str(args.out / f"{role}{COMPILE_CACHE_SUFFIX}")]
    return cmd + args.extra + role_extra


def seed_compile_cache(folder: Path | None, out: Path, role: str) -> None:
    """Start ``role``'s compile cache in ``out`` (where its trainer reads and writes it) from ``folder``'s, when
    there is one and ``out`` has none yet (a warm machine's earlier call left a newer one)."""
    name = f"{role}{COMPILE_CACHE_SUFFIX}"
    if folder is not None and (folder / name).is_file() and not (out / name).exists():
        shutil.copyfile(folder / name, out / name)


def export_role(out: Path, role: str, keep: Path | None = None, state_dir: Path | None = None) -> Path | None:
    """Leave in ``out`` what a device run can return of ``role``'s training: the EMA weights as float16, or as
    int8 rows (the shipped storage) where float16 would exceed the 16 MiB a returned file may have; a QAT run's int4
    file as it is. ``keep`` gets the trainer's file, ``state_dir`` the whole training state (the next call's
    ``--state``). Returns the file."""
    from diffusion_renderer.checkpoints.renderer_file import read_renderer_file, save_renderer_file

    path, exported = out / f"{role}.safetensors", None
    if path.is_file():
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, keep / path.name)
        state, meta = read_renderer_file(path)
        storage = "float16" if 2 * sum(t.numel() for t in state.values()) < RETURN_LIMIT_BYTES else "int8"
        storage = "int4" if meta["storage"] == "int4" else storage  # a QAT file: re-stored exactly
        exported = out / f"{role}.{STORAGE_TAG[storage]}.safetensors"
        save_renderer_file(
            exported,
            state,
            role=role,
            dit_config=meta["dit_config"],
            tokenizer_config=meta["tokenizer"],
            storage=storage,
            record=meta["record"],
        )
        path.unlink()
    train_state = out / f"{role}.train_state.safetensors"
    if state_dir is not None and train_state.is_file():
        state_dir.mkdir(parents=True, exist_ok=True)
        shutil.move(train_state, state_dir / train_state.name)
    train_state.unlink(missing_ok=True)  # over the 16 MiB a returned file may have
    return exported


def pack_logs(out: Path) -> None:
    """Everything but the weights, the compile caches and the summary into ``logs.tar.gz`` (fewer, smaller files to
    return). Renderer files stay out of it, those of a ``--keep`` folder inside ``out`` too: a float32 copy once took
    the archive over the 16 MiB a returned file may have (run 30), and the call's loss log was lost with it."""
    keep = {"summary.json", "logs.tar.gz"}
    files = [p for p in sorted(out.rglob("*")) if p.is_file() and p.name not in keep]
    files = [p for p in files if p.suffix not in (".safetensors", COMPILE_CACHE_SUFFIX)]  # returned as they are
    with tarfile.open(out / "logs.tar.gz", "w:gz") as tar:
        for path in files:
            tar.add(path, arcname=str(path.relative_to(out)))
    for path in files:
        path.unlink()
    for folder in sorted((p for p in out.rglob("*") if p.is_dir()), reverse=True):  # deepest first
        if not any(folder.iterdir()):
            folder.rmdir()


if __name__ == "__main__":
    main()
