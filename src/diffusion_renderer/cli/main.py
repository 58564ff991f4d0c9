"""The ``diffusion-renderer`` command.

Bad input ends with one line ``diffusion-renderer: error: ...`` on stderr and exit status 2, no traceback.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from diffusion_renderer.cli.apps import add_app_parsers
from diffusion_renderer.cli.bench import add_bench_parser
from diffusion_renderer.cli.data import add_data_parsers
from diffusion_renderer.cli.eval import add_eval_parser
from diffusion_renderer.cli.official import translate
from diffusion_renderer.cli.render import PROG, add_render_parsers
from diffusion_renderer.cli.train import add_train_parser
from diffusion_renderer.distributed import teardown

DTYPES = ("float32", "bfloat16", "float16")


class CLIError(Exception):
    """A user-facing error: printed as one line."""


def _dtype(name: str):
    import torch

    return getattr(torch, name)


def cmd_convert_official(args: argparse.Namespace) -> int:
    from diffusion_renderer.checkpoints.official import convert_official

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise CLIError(f"{out}: already exists (use --overwrite to replace it)")
    dtype = _dtype(args.dtype) if args.dtype else None
    convert_official(args.checkpoint_dir, out, dtype=dtype)
    print(f"converted {args.checkpoint_dir} -> {out}")
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from diffusion_renderer.checkpoints.download import download_official

    root = download_official(args.checkpoint_dir, args.components, token=args.token)
    print(f"official checkpoints in {root}")
    return 0


def cmd_check_model(args: argparse.Namespace) -> int:
    """Load a model spec and run tokenizer encode -> full sampling run -> decode for each role."""
    import torch

    from diffusion_renderer.conventions import CONTEXT_INDEX, FORWARD_CONDITION_KEYS, GBUFFER_KEYS
    from diffusion_renderer.models.specs import load_model
    from diffusion_renderer.pipelines.conditions import assemble_latent_condition
    from diffusion_renderer.pipelines.sampling import ConditionInputs, sample_edm_euler

    device, dtype = torch.device(args.device), _dtype(args.dtype)
    generator = torch.Generator().manual_seed(args.seed)
    pixels = torch.rand(1, 3, args.frames, args.height, args.width, generator=generator) * 2 - 1
    for role in args.roles:
        start = time.perf_counter()
        model = load_model(args.model, role, device=device, dtype=dtype, seed=args.seed)
        net, tokenizer = model.transformer, model.tokenizer
        params = sum(p.numel() for p in net.parameters())
        with torch.no_grad():
            latent = tokenizer.encode(pixels.to(device))
            if role == "inverse":
                condition = ConditionInputs(latent, context_index=torch.tensor([[CONTEXT_INDEX["basecolor"]]]))
            else:
                # G-buffers present, lighting absent (zero latents, zero masks: "random lighting")
                gbuffers = dict.fromkeys(GBUFFER_KEYS, latent)
                condition = ConditionInputs(assemble_latent_condition(gbuffers, FORWARD_CONDITION_KEYS, latent.shape))
            sample = sample_edm_euler(
                net,
                condition,
                tuple(latent.shape),
                num_inference_steps=args.steps,
                generator=torch.Generator().manual_seed(args.seed),
                progress=True,
            )
            decoded = tokenizer.decode(sample.to(tokenizer.dtype))
        finite = bool(torch.isfinite(decoded).all())
        print(
            f"{role}: {params / 1e6:.1f}M parameters, latent {tuple(latent.shape)}, "
            f"decoded {tuple(decoded.shape)}, finite={finite}, {time.perf_counter() - start:.1f}s"
        )
        if not finite:
            raise CLIError(f"{args.model}: {role} model produced non-finite values")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Neural inverse and forward rendering (DiffusionRenderer)."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("convert-official", help="convert official checkpoints to diffusers-style folders")
    p.add_argument("checkpoint_dir", help="official checkpoint folder (or one downloaded repo)")
    p.add_argument("--out", required=True, help="output folder (written atomically)")
    p.add_argument("--dtype", choices=DTYPES, default=None, help="store weights in this dtype (default: as is)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.set_defaults(func=cmd_convert_official)

    p = sub.add_parser("download", help="download the official checkpoints (Hugging Face)")
    p.add_argument("--checkpoint-dir", required=True)
    p.add_argument("--components", nargs="+", choices=("inverse", "forward", "tokenizer"), default=None)
    p.add_argument("--token", default=None, help="Hugging Face token (default: the logged-in one)")
    p.set_defaults(func=cmd_download)

    p = sub.add_parser("check-model", help="load a model spec and run encode -> sample -> decode once per role")
    p.add_argument("--model", default="random:tiny", help="model spec (see README)")
    p.add_argument("--roles", nargs="+", choices=("inverse", "forward"), default=["inverse", "forward"])
    p.add_argument("--frames", type=int, default=1)
    p.add_argument("--height", type=int, default=64)
    p.add_argument("--width", type=int, default=96)
    p.add_argument("--steps", type=int, default=15)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=DTYPES, default="float32")
    p.set_defaults(func=cmd_check_model)

    add_render_parsers(sub, lambda parser, func: parser.set_defaults(func=func))
    add_app_parsers(sub, lambda parser, func: parser.set_defaults(func=func))
    add_data_parsers(sub, lambda parser, func: parser.set_defaults(func=func))
    add_eval_parser(sub, lambda parser, func: parser.set_defaults(func=func))
    add_train_parser(sub, lambda parser, func: parser.set_defaults(func=func))
    add_bench_parser(sub, lambda parser, func: parser.set_defaults(func=func))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(translate(list(sys.argv[1:] if argv is None else argv)))
        func: Callable[[argparse.Namespace], int] = args.func
        code = func(args)
        teardown()  # torchrun: every rank closes its process group before the interpreter exits
        return code
    except KeyboardInterrupt:
        teardown(wait=False)
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except (CLIError, ValueError, FileNotFoundError, FileExistsError, OSError, RuntimeError, ImportError) as exc:
        teardown(wait=False)
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
