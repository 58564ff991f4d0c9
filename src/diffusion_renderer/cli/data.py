"""The data-engine commands: ``make-data`` (path-traced clips with ground truth) and ``show-data``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from diffusion_renderer.cli.render import check_output_dir
from diffusion_renderer.data.scenes import LIGHT_FAMILIES


def cmd_make_data(args: argparse.Namespace) -> int:
    from diffusion_renderer.data.make_data import make_dataset

    out = Path(args.out)
    check_output_dir(out)
    report = make_dataset(
        out,
        scenes=args.scenes,
        frames=args.frames,
        resolution=args.resolution,
        seed=args.seed,
        hdri_dir=Path(args.hdri_dir) if args.hdri_dir else None,
        train_hdri_dir=Path(args.train_hdri_dir) if args.train_hdri_dir else None,
        variant=args.variant,
        spp=args.spp,
        val_fraction=args.val_fraction,
        map_seed=args.map_seed,
        layout=args.layout,
        only_split=args.only_split,
        light_family=args.light_family,
        progress=not args.quiet,
        hints=args.hints,
    )
    print(
        f"{report.written} clips written, {report.skipped} already there, "
        f"{report.frames} frames in {report.seconds:.1f}s ({report.frames_per_second:.2f} frames/s) -> {out}",
        file=sys.stderr,
    )
    return 0


def cmd_show_data(args: argparse.Namespace) -> int:
    from diffusion_renderer.data.make_data import show_dataset

    root = Path(args.data)
    out = Path(args.out) if args.out else root / "samples.png"
    print(show_dataset(root, out, count=args.count, seed=args.seed))
    return 0


def add_data_parsers(sub, set_defaults: Callable[[argparse.ArgumentParser, Callable], None]) -> None:
    p = sub.add_parser("make-data", help="path-traced synthetic clips with ground-truth G-buffers (Mitsuba 3)")
    p.add_argument("--out", required=True, help="dataset folder (resumable: finished clips are kept)")
    p.add_argument("--scenes", type=int, required=True, help="number of clips")
    p.add_argument("--frames", type=int, default=1, help="frames per clip (default 1: images)")
    p.add_argument("--resolution", type=int, default=256, help="square frame size (default 256)")
    p.add_argument("--seed", type=int, default=0, help="clip i has seed SEED + i")
    p.add_argument("--hdri-dir", default=None, help="folder of .hdr/.exr maps (default: the bundled presets)")
    p.add_argument("--train-hdri-dir", default=None, help="more maps that light training clips only (never held out)")
    p.add_argument("--variant", choices=("cpu", "gpu", "auto"), default="cpu", help="Mitsuba llvm or cuda")
    p.add_argument("--spp", type=int, default=None, help="samples per pixel (default: the engine's)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="held-out share of clips and of env maps")
    p.add_argument("--only-split", choices=("train", "val"), default=None, help="render only this split's clips")
    p.add_argument("--map-seed", type=int, default=0, help="seed of the held-out map choice (not tied to --seed)")
    p.add_argument(
        "--light-family",
        choices=LIGHT_FAMILIES,
        default=None,
        help="light every training clip with this procedural family (a test set of one kind of light)",
    )
    p.add_argument(
        "--layout", choices=("folder", "shards"), default="folder", help="PNG/EXR folders or training shards"
    )
    p.add_argument(
        "--no-hints",
        dest="hints",
        action="store_false",
        help="shards without the forward model's shading hints: inverse training data, rendered faster",
    )
    p.add_argument("--quiet", action="store_true")
    set_defaults(p, cmd_make_data)

    p = sub.add_parser("show-data", help="contact sheet of random clips of a make-data folder")
    p.add_argument("data", help="a make-data folder")
    p.add_argument("--out", default=None, help="PNG path (default DATA/samples.png)")
    p.add_argument("--count", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    set_defaults(p, cmd_show_data)
