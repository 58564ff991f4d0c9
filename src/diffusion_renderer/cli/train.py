"""``diffusion-renderer train {inverse,forward}``: train (or fine-tune, or LoRA-adapt) a renderer."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from diffusion_renderer.cli.render import check_output_dir, default_device
from diffusion_renderer.distributed import setup

if TYPE_CHECKING:  # the CLI imports torch-side modules lazily
    from diffusion_renderer.training.frames import FrameBank


def parse_pass_weights(items: list[str] | None, role: str) -> dict[str, float] | None:
    """``["basecolor=2", ...]`` -> {pass: weight}; a one-line ValueError for a bad item."""
    from diffusion_renderer.conventions import INVERSE_PASSES

    if items is None:
        return None
    if role != "inverse":
        raise ValueError("train: --pass-weights weighs the inverse model's target passes; not for forward")
    weights: dict[str, float] = {}
    for item in items:
        name, _, value = item.partition("=")
        if name not in INVERSE_PASSES:
            raise ValueError(f"train: --pass-weights: unknown pass {name!r} (passes: {', '.join(INVERSE_PASSES)})")
        try:
            weights[name] = float(value)
        except ValueError:
            raise ValueError(f"train: --pass-weights: {item!r} is not PASS=NUMBER") from None
        if not weights[name] >= 0:
            raise ValueError(f"train: --pass-weights: {item!r}: weights must be >= 0")
    if sum(weights.get(p, 1.0) for p in INVERSE_PASSES) <= 0:
        raise ValueError("train: --pass-weights: every pass has weight 0")
    return weights


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from diffusion_renderer.conventions import SHADING_HINT_KEY
    from diffusion_renderer.data.shards import FIXED_CAMERA_HINT
    from diffusion_renderer.io.errors import InputError
    from diffusion_renderer.models.configs import dit_config
    from diffusion_renderer.models.specs import load_model
    from diffusion_renderer.training.compile_cache import load_compile_cache, save_compile_cache
    from diffusion_renderer.training.frames import bank_keys, load_frame_bank, refresh_frame_bank
    from diffusion_renderer.training.trainer import TrainConfig, Trainer, adapt_to_config

    if args.real is None and not args.data:
        raise ValueError("train: give --data DIR (make-data output), or --real VIDEOS for a LoRA")
    if args.exposure_stops < 0:
        raise ValueError(f"train: --exposure-stops must be >= 0 (a range of ± stops), got {args.exposure_stops}")
    if args.exposure_stops and args.real is not None:
        raise ValueError("train: --exposure-stops needs linear HDR frames; real footage has none")
    if args.qat and args.lora:
        raise ValueError("train: --qat trains all weights; a --lora adapter stays float")
    if args.compile_cache and not (args.compile or args.compile_blocks):
        raise ValueError("train: --compile-cache keeps what --compile or --compile-blocks compiles; give one of them")
    if args.watch and args.real is not None:
        raise ValueError("train: --watch re-scans --data; it does not apply to --real")
    pass_weights = parse_pass_weights(args.pass_weights, args.role)
    if args.off_plane_weight <= 0:
        raise ValueError(f"train: --off-plane-weight must be > 0, got {args.off_plane_weight}")
    if args.off_plane_weight != 1.0 and args.role != "inverse":
        raise ValueError(
            "train: --off-plane-weight weighs the inverse model's loss by the true normals; not for forward"
        )
    if not 0 <= args.hint_fixed_camera <= 1:
        raise ValueError(f"train: --hint-fixed-camera is a share in [0, 1], got {args.hint_fixed_camera}")
    if args.hint_fixed_camera and (args.role != "forward" or args.real is not None):
        raise ValueError("train: --hint-fixed-camera is for forward models with the shading hint, on rendered data")
    ranks = setup(args.device)  # torchrun: data parallel (training/trainer.py)
    if args.watch and ranks.world > 1:
        raise ValueError("train: --watch re-scans --data at different moments on each rank; use one process")
    out = Path(args.out)
    check_output_dir(out, ranks)
    device = default_device(args.device, ranks)
    config = TrainConfig(
        role=args.role,
        model_config=args.model_config,
        steps=args.steps,
        batch_size=args.batch_size,
        clip_frames=args.clip_frames,
        clip_fraction=args.clip_fraction,
        lr=args.lr,
        warmup_steps=args.warmup,
        ema_decay=args.ema_decay,
        precision=args.precision,
        gradient_checkpointing=args.gradient_checkpointing,
        compile=args.compile,
        compile_blocks=args.compile_blocks,
        seed=args.seed,
        log_every=args.log_every,
        val_every=args.val_every,
        val_steps=args.val_steps,
        checkpoint_every=args.checkpoint_every,
        drop_lighting=args.real is not None,
        p_mean=args.p_mean,
        p_std=args.p_std,
        pure_noise_fraction=args.pure_noise_fraction,
        exposure_stops=args.exposure_stops,
        pass_weights=pass_weights,
        off_plane_weight=args.off_plane_weight,
        hint_fixed_camera=args.hint_fixed_camera,
        fsdp=args.fsdp,
        qat=args.qat,
    )
    auto = args.bank_device == "auto"
    try:
        bank_device = device if auto else torch.device(args.bank_device)
    except RuntimeError as error:  # torch's message lists the device types
        raise ValueError(f"train: --bank-device {args.bank_device!r}: {error}") from None
    progress = not args.quiet and ranks.is_main
    level = 0.0 if args.real is not None else exposure_level_of(args)  # the real domain has no lighting
    if args.real is not None:
        from diffusion_renderer.training.real_domain import pseudo_label_bank

        bank = pseudo_label_bank(
            [Path(p) for p in args.real], args.init, size=args.real_size, frames=args.clip_frames, device=device
        )
        val_bank = None
    else:
        keys = bank_keys(args.role, args.exposure_stops, args.hint_fixed_camera, level)
        bank = load_frame_bank(Path(args.data), "train", bank_device, progress, keys=keys, auto_device=auto)
        try:
            # sampled as they are (no exposure augmentation, no fixed-camera hint), normalised as the model is
            val_keys = bank_keys(args.role, exposure_level=level)
            val_bank = load_frame_bank(
                Path(args.data), "val", bank_device, progress, first_frames=1, keys=val_keys, auto_device=auto
            )
        except ValueError:  # InputError: no validation clips; training goes on without validation samples
            val_bank = None
    if args.exposure_stops > 0 and (missing := bank.missing_hdr()):
        raise InputError(Path(args.data), f"--exposure-stops needs {', '.join(missing)} in the shards (re-make them)")
    if level > 0 and (missing := bank.missing_hdr()):
        message = f"{args.role}-{args.model_config} normalises exposure: it needs {', '.join(missing)} in the shards"
        raise InputError(Path(args.data), message)
    if args.hint_fixed_camera > 0 and not bank.has(FIXED_CAMERA_HINT):
        raise InputError(Path(args.data), "--hint-fixed-camera needs shards with the fixed-camera hint (re-make them)")
    model, inherited = None, {}
    if args.init:
        start = load_model(args.init, args.role)
        model = adapt_to_config(start.transformer.float(), config)
        # what the starting file says about using it: its sampler default (tiny: 1 step) holds for its fine-tunes
        inherited = {"init": str(args.init), **{k: start.record[k] for k in INHERITED_RECORD if k in start.record}}
        if dit_config(f"{args.role}-{args.model_config}").get("shading_hint") and not model.config.shading_hint:
            raise ValueError(f"--init {args.init} is not a {args.role}-{args.model_config} without the hint")
    if args.lora:
        from diffusion_renderer.models.lora import add_lora

        if model is None:
            raise ValueError("--lora adapts an existing model: name it with --init SPEC")
        # A seeded A init: the same adapter on every rank (FSDP2 shards what each rank built; it does not
        # broadcast) and on every run.
        with torch.random.fork_rng():
            torch.manual_seed(config.seed)
            add_lora(model, rank=args.lora)
    trainer = Trainer(
        config, out, bank, val_bank, model=model, device=device, progress=progress, ranks=ranks, record=inherited
    )
    takes_hint = args.role == "forward" and SHADING_HINT_KEY in trainer.forward_kwargs()["condition_keys"]
    if takes_hint and args.real is None:
        check_hint_version(Path(args.data), bank, int(trainer.model.config.shading_hint))
    if args.hint_fixed_camera and not takes_hint:
        raise ValueError(f"train: --hint-fixed-camera: {args.role}-{args.model_config} takes no shading hint")
    if args.resume and trainer.resume() and ranks.is_main:
        print(f"resumed {args.role} at step {trainer.step}", file=sys.stderr)

    def refresh(step: int) -> None:
        if args.watch and step % args.watch == 0:
            refresh_frame_bank(bank, Path(args.data), "train")

    limit = args.time_limit * 60 if args.time_limit else None
    if args.compile_cache:
        loaded = load_compile_cache(args.compile_cache)  # every rank compiles for itself
        trainer.log({"step": trainer.step, "compile_cache_loaded": loaded})
    result = trainer.fit(time_limit_s=limit, on_step=refresh if args.watch else None)
    if args.compile_cache and ranks.is_main:
        saved = save_compile_cache(args.compile_cache)
        print(
            f"{args.role}: {loaded} compile cache entries loaded, {saved} written -> {args.compile_cache}",
            file=sys.stderr,
        )
    written = trainer.path(".lora.safetensors" if args.lora else ".safetensors")
    if ranks.is_main:
        on = f" on {ranks.world} ranks" if ranks.world > 1 else ""
        held = f"{bank.nbytes / 1e9:.2f} GB on {bank.device.type}"  # where --bank-device auto put the clips
        print(
            f"{args.role}: step {result['step']} in {result['seconds']:.0f}s{on}, {bank.num_clips} clips ({held})"
            f" -> {written}",
            file=sys.stderr,
        )
    return 0


def exposure_level_of(args: argparse.Namespace) -> float:
    """The hint level ``--model-config`` sees every light at (0: none; render/hint.py, exposure normalisation)."""
    from diffusion_renderer.models.configs import dit_config

    return float(dit_config(f"{args.role}-{args.model_config}").get("exposure_level", 0.0))


# record keys a fine-tune keeps from its --init file: its sampling defaults
INHERITED_RECORD = ("default_steps", "default_ensemble", "default_basecolor_detail")


def check_hint_version(data: Path, bank: FrameBank, version: int) -> None:
    """A hint model trains only on shards whose hints were made with its version of ``render/hint.py``."""
    from diffusion_renderer.conventions import SHADING_HINT_KEY
    from diffusion_renderer.io.errors import InputError

    if not bank.has(SHADING_HINT_KEY):  # with exposure augmentation the bank holds only its HDR form
        raise InputError(data, "this model takes the shading hint; these shards have none (make them anew)")
    if bank.hint_version != version:
        from diffusion_renderer.models.configs import OFFICIAL_NETS

        takers = [
            name.removeprefix("forward-")
            for name, net in OFFICIAL_NETS.items()
            if name.startswith("forward-") and net.get("shading_hint") == bank.hint_version
        ]
        advice = f" (--model-config {' or '.join(takers)} takes them)" if takers else ""
        raise InputError(
            data,
            f"these shards hold version {bank.hint_version} shading hints; this model takes version {version}{advice}",
        )


def add_train_parser(sub, set_defaults: Callable[[argparse.ArgumentParser, Callable], None]) -> None:
    p = sub.add_parser("train", help="train a renderer (EDM, the official condition layout) on make-data clips")
    p.add_argument("role", choices=("inverse", "forward"))
    p.add_argument("--data", help="a make-data folder (folder or shards layout)")
    p.add_argument("--out", required=True, help="output folder: {role}.safetensors is a model spec")
    p.add_argument("--model-config", default="small", help="DiT size (models/configs.py; default small)")
    p.add_argument("--steps", type=int, default=20000)
    p.add_argument("--batch-size", type=int, default=64, help="frames per step")
    p.add_argument("--clip-frames", type=int, default=4, help="frames of a clip example")
    p.add_argument("--clip-fraction", type=float, default=0.5, help="share of steps on clips (others: images)")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--p-mean", type=float, default=0.0, help="log-normal sigma: mean of ln sigma (official 0)")
    p.add_argument("--p-std", type=float, default=1.0, help="log-normal sigma: std of ln sigma (official 1)")
    p.add_argument(
        "--fsdp",
        action="store_true",
        help="under torchrun: shard weights, gradients and optimizer state (FSDP2) instead of replicating (DDP)",
    )
    p.add_argument(
        "--pure-noise-fraction",
        type=float,
        default=0.0,
        help="share of samples drawn as the sampler's first input: sigma 80, pure noise (not official; 0.5 "
        "trained the shipped inverse model, whose 1-step default starts from pure noise)",
    )
    p.add_argument(
        "--exposure-stops",
        type=float,
        default=0.0,
        help="exact exposure augmentation: light and frame scaled by 2^U(-N, N) per example (needs HDR shards)",
    )
    p.add_argument(
        "--pass-weights",
        nargs="+",
        default=None,
        metavar="PASS=W",
        help="inverse: how often each pass is the target, relative (unnamed passes 1; default uniform, official), "
        "e.g. basecolor=2 normal=1.5",
    )
    p.add_argument(
        "--off-plane-weight",
        type=float,
        default=1.0,
        metavar="W",
        help="inverse, space-to-depth models: weight of the loss on pixels whose true normal leaves the frame's "
        "dominant surface by over 10 degrees (objects, a ground's bumps), normalised per example (default 1: "
        "uniform, official)",
    )
    p.add_argument(
        "--hint-fixed-camera",
        type=float,
        default=0.0,
        metavar="SHARE",
        help="forward with the shading hint: share of examples whose hint is shaded through the fixed 40-degree "
        "camera, what inference falls back to when the field of view cannot be read off the G-buffers",
    )
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto", help="auto: bf16 on CUDA")
    p.add_argument("--gradient-checkpointing", action="store_true")
    compiling = p.add_mutually_exclusive_group()
    compiling.add_argument("--compile", action="store_true", help="torch.compile the DiT")
    compiling.add_argument(
        "--compile-blocks",
        action="store_true",
        help="torch.compile each transformer block instead (one graph shared by the blocks: compiles faster)",
    )
    p.add_argument(
        "--compile-cache",
        type=Path,
        default=None,
        metavar="FILE",
        help="with --compile(-blocks): load torch.compile's caches from FILE before training and write them back "
        "after it, so a fresh machine skips most of the compiling (the file holds compiled code: use your own)",
    )
    p.add_argument(
        "--qat",
        choices=("int4",),
        default=None,
        help="quantisation-aware training: compute with the int4 weights the renderer file then stores (not "
        "official; how a DiT twice the shipped size fits the 16 MiB budget)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--val-every", type=int, default=1000)
    p.add_argument(
        "--val-steps", type=int, default=15, help="sampler steps of the validation renders (15, official; tiny: 1)"
    )
    p.add_argument("--checkpoint-every", type=int, default=1000)
    p.add_argument("--resume", action="store_true", help="continue from OUT/{role}.train_state.safetensors")
    p.add_argument("--time-limit", type=float, default=None, help="stop (and checkpoint) after this many minutes")
    p.add_argument("--watch", type=int, default=0, help="re-scan --data for new shards every N steps")
    p.add_argument("--device", default=None)
    p.add_argument(
        "--bank-device",
        default="auto",
        help="where the training clips live (auto: on --device when they take at most 35%% of its free memory, "
        "else in host memory)",
    )
    p.add_argument("--init", default=None, help="start from this model spec (fine-tuning; required by --lora)")
    p.add_argument("--lora", type=int, default=0, help="train a LoRA adapter of this rank instead of all weights")
    p.add_argument("--real", nargs="+", default=None, help="real images/videos: pseudo-labelled LoRA domain")
    p.add_argument("--real-size", type=int, default=256, help="square size of the real frames")
    p.add_argument("--quiet", action="store_true")
    set_defaults(p, cmd_train)
