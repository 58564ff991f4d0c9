"""Speed and memory of the renderers: ``diffusion-renderer bench`` (issue 6).

Random weights at the real shapes (speed does not depend on weight values). Per case: the median of
``repeats`` timed runs after ``warmup`` runs, CUDA events on a GPU (wall clock on the CPU), and the peak of
allocated GPU memory. DiT steps also get their FLOPs (counted analytically, below) and the achieved TFLOP/s
against a bf16 GEMM measured in the same run; diffusers' stock ``CosmosTransformer3DModel`` of the same width
runs at the same shapes, as the peer to beat.

FLOPs of one DiT step (N tokens, M context tokens, width D, L blocks, multiply-add = 2 FLOPs):
self-attention projections 8 N D², cross-attention q / out projections 4 N D² (+ k / v on M tokens 4 M D²),
MLP (ratio 4) 16 N D², attention 4 N² D; the AdaLN, patch and output layers are under 0.5 % and left out.
"""

from __future__ import annotations

import datetime as dt
import functools
import gc
import importlib.util
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

import torch

from diffusion_renderer.conventions import CONTEXT_INDEX

if TYPE_CHECKING:
    from diffusion_renderer.models.specs import RendererModel

GEMM_SHAPE = (28160, 4096, 12288)  # tokens x width x 3 width: the video step's QKV projection


@dataclass
class BenchConfig:
    """What to measure. ``size``: ``7b`` (the official networks) or ``tiny`` (a CPU smoke run of the same code)."""

    size: str = "7b"
    device: str = "cuda"
    dtype: torch.dtype = torch.bfloat16
    cases: tuple[str, ...] = ("dit", "vae", "pipeline")
    variants: tuple[str, ...] = ("stock", "default", "auto", "auto+compile")
    repeats: int = 5
    warmup: int = 1
    steps: int = 15  # end-to-end denoising steps
    frames: int | None = None  # clip frames (default: the tokenizer's window, 57 official)
    resolution: tuple[int, int] | None = None  # (H, W) (default: the tokenizer's, 704 x 1280 official)
    pipeline_variant: str = "auto"  # attention of the end-to-end runs (+compile would compile both models anew)
    offloads: tuple[str, ...] = ("none",)  # end-to-end runs: none, group (DiT blocks streamed from the CPU), model
    vae_streams: tuple[int, ...] = (0, 1, 2, 4)  # tokenizer latent frames per streaming step; 0: the whole clip
    save: Callable[[dict], None] | None = field(default=None, repr=False)  # called with the report as it grows


# ------------------------------------------------------------------------------------------------ measurement


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int) -> dict[str, float]:
    """{seconds (median), seconds_all, peak_gib} of ``fn`` (peak: allocated GPU memory, 0 on the CPU)."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end) / 1000)
        else:
            begin = time.perf_counter()
            fn()
            times.append(time.perf_counter() - begin)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0
    return {"seconds": statistics.median(times), "seconds_all": [round(t, 5) for t in times], "peak_gib": peak}


def gemm_tflops(device: torch.device, dtype: torch.dtype, shape: tuple[int, int, int] = GEMM_SHAPE) -> float:
    """Achieved TFLOP/s of one (m x k) @ (k x n) matmul: the device's ceiling for the DiT's projections."""
    m, k, n = shape
    a = torch.randn(m, k, device=device, dtype=dtype)
    b = torch.randn(k, n, device=device, dtype=dtype)
    seconds = measure(lambda: a @ b, device, repeats=10, warmup=3)["seconds"]
    return 2 * m * k * n / seconds / 1e12


def dit_flops(tokens: int, context_tokens: int, width: int, blocks: int, batch: int = 1) -> float:
    """FLOPs of one DiT forward (see the module docstring); ``tokens`` per sample."""
    n, m, d = tokens, context_tokens, width
    per_block = 8 * n * d * d + 4 * n * d * d + 4 * m * d * d + 16 * n * d * d + 4 * n * n * d
    return float(batch * blocks * per_block)


# ---------------------------------------------------------------------------------------------------- models


def random_model(role: str, config: BenchConfig) -> RendererModel:
    """DiT + tokenizer of ``role`` with random weights: ``random:{role}-7b`` (official sizes) or ``random:tiny``."""
    from diffusion_renderer.models.specs import load_model

    return load_model(
        f"random:{role}-{config.size}" if config.size != "tiny" else "random:tiny",
        role,
        device=config.device,
        dtype=config.dtype,
    )


VARIANT_EXTRAS = frozenset({"compile", "fp8"})


def parse_variant(variant: str) -> tuple[str, frozenset[str]]:
    """``"auto+fp8+compile"`` -> (``"auto"``, {``fp8``, ``compile``}): the attention, then what is applied."""
    attention, *extras = variant.split("+")
    if unknown := set(extras) - VARIANT_EXTRAS:
        raise ValueError(f"variant {variant!r}: unknown {', '.join(sorted(unknown))} (+compile, +fp8)")
    return attention, frozenset(extras)


def variant_order(variant: str) -> tuple[bool, bool]:
    """Irreversible steps last: plain, compiled, FP8, FP8 compiled (``stock`` first)."""
    extras = frozenset() if variant == "stock" else parse_variant(variant)[1]
    return "fp8" in extras, "compile" in extras


def prepare_dit(net: torch.nn.Module, attention: str, extras: frozenset[str]) -> None:
    """Attention kernels, FP8 GEMMs (before compiling: the graphs then hold the FP8 layers), compilation."""
    from diffusion_renderer.models.fp8 import convert_to_fp8

    net.set_attention(attention)
    if "fp8" in extras:
        convert_to_fp8(net)
    if "compile" in extras:
        net.compile_repeated_blocks()


def stock_dit(ours: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """diffusers' CosmosTransformer3DModel of the same width, depth and input channels (random weights)."""
    from diffusers import CosmosTransformer3DModel

    cfg = ours.config
    with torch.device(device):
        stock = CosmosTransformer3DModel(
            in_channels=cfg.in_channels,
            out_channels=cfg.out_channels,
            num_attention_heads=cfg.num_attention_heads,
            attention_head_dim=cfg.attention_head_dim,
            num_layers=cfg.num_layers,
            mlp_ratio=cfg.mlp_ratio,
            text_embed_dim=cfg.text_embed_dim,
            adaln_lora_dim=cfg.adaln_lora_dim,
            max_size=tuple(cfg.max_size),
            patch_size=tuple(cfg.patch_size),
            rope_scale=tuple(cfg.rope_scale),
            concat_padding_mask=cfg.concat_padding_mask,
            extra_pos_embed_type=None,
        )
    return torch.nn.Module.to(stock, dtype=dtype).eval()


def dit_inputs(net, latent: tuple[int, ...], device: torch.device, dtype: torch.dtype, stock: bool) -> dict:
    """Keyword inputs of one denoising call: ours (context index / no context) or the stock model (T5 zeros)."""
    generator = torch.Generator(device=device).manual_seed(0)
    batch = latent[0]
    x = torch.randn(latent, generator=generator, device=device).to(dtype)
    t = torch.full((batch,), 0.5, device=device, dtype=dtype)
    if stock:
        channels = net.config.in_channels
        x = torch.cat([x, torch.randn((batch, channels - latent[1], *latent[2:]), device=device, dtype=dtype)], 1)
        context = torch.zeros(batch, 512, net.config.text_embed_dim, device=device, dtype=dtype)
        padding = torch.zeros(1, 1, latent[3] * 8, latent[4] * 8, device=device, dtype=dtype)  # as the peer passes
        return {
            "hidden_states": x,
            "timestep": t,
            "encoder_hidden_states": context,
            "fps": 24,
            "padding_mask": padding,
        }
    condition = torch.randn((batch, net.condition_channels, *latent[2:]), generator=generator, device=device)
    kwargs = {"hidden_states": x, "timestep": t, "latent_condition": condition.to(dtype), "fps": 24}
    if net.context_embedding is not None:
        kwargs["context_index"] = torch.full((batch, 1), CONTEXT_INDEX["normal"], device=device)
    return kwargs


# ------------------------------------------------------------------------------------------------------ cases


def dit_shapes(tokenizer, config: BenchConfig) -> dict[str, tuple[int, ...]]:
    """Latent shapes of the DiT cases: a clip, an image, and an image with the 5 inverse passes batched."""
    height, width = clip_size(tokenizer, config)
    frames = config.frames or tokenizer.window_frames
    channels = tokenizer.latent_channels
    return {
        f"video_{frames}x{height}x{width}": (1, channels, *tokenizer.latent_shape(frames, height, width)),
        f"image_{height}x{width}": (1, channels, *tokenizer.latent_shape(1, height, width)),
        f"image_{height}x{width}_5passes": (5, channels, *tokenizer.latent_shape(1, height, width)),
    }


def clip_size(tokenizer, config: BenchConfig) -> tuple[int, int]:
    size = config.resolution or tokenizer.resolution
    return (size, size) if isinstance(size, int) else tuple(size)


def tokens_of(net, latent: tuple[int, ...]) -> int:
    p_t, p_h, p_w = net.config.patch_size
    return latent[2] // p_t * (latent[3] // p_h) * (latent[4] // p_w)


def relative_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def bench_dit(config: BenchConfig, report: dict) -> None:
    """Per-step time, peak memory and TFLOP/s of the inverse DiT per variant, diffusers' stock model beside it.

    Variants: ``stock``; ``default`` (PyTorch's attention kernel choice); an attention name of
    ``models/performance.py`` (``auto``, ``cudnn``, ``flash`` ...); ``+compile`` compiles the blocks and ``+fp8``
    turns their linear layers to FP8 (``models/fp8.py``). Neither can be undone: variants run in the order plain,
    compiled, FP8, FP8 compiled, and the FP8 ones on a fresh copy of the same random weights. Outputs of every
    variant of ours are compared with the first one's (relative L2): for FP8, its rounding error against bf16.
    """
    device = torch.device(config.device)
    model = random_model("inverse", config)
    net, shapes = model.transformer, dit_shapes(model.tokenizer, config)
    width = net.config.num_attention_heads * net.config.attention_head_dim
    ceiling = gemm_tflops(device, config.dtype) if device.type == "cuda" else None
    report["gemm_tflops"] = ceiling
    section: dict[str, dict] = report.setdefault("dit", {})
    reference: dict[str, torch.Tensor] = {}
    applied: set[str] = set()  # what the current copy of the weights has been through
    runs: dict[str, tuple] = {}
    for variant in sorted(config.variants, key=variant_order):
        if variant == "stock" and importlib.util.find_spec("torchvision") is None:
            section["stock"] = {"skipped": "diffusers' stock Cosmos DiT resizes its padding mask with torchvision"}
            continue
        if variant == "stock":
            torch.nn.Module.to(net, "cpu")  # measured alone: the peak is the stock model's own
            stock = stock_dit(net, device, config.dtype)
            runs = {
                name: (stock, dit_inputs(stock, shape, device, config.dtype, True), 512)
                for name, shape in shapes.items()
            }
        else:
            attention, extras = parse_variant(variant)
            if "fp8" in extras and "fp8" not in applied:  # a fresh, uncompiled copy of the same weights
                runs = {}  # the last runs hold the old copy: drop it before building the new one
                del net, model
                gc.collect()
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                model = random_model("inverse", config)
                net, applied = model.transformer, set()
            prepare_dit(net, attention, extras - applied)
            applied |= extras
            context = 1 if net.context_embedding is not None else 0
            runs = {
                name: (net, dit_inputs(net, shape, device, config.dtype, False), context)
                for name, shape in shapes.items()
            }
        for name, (module, kwargs, context) in runs.items():
            with torch.no_grad():
                result = measure(lambda m=module, k=kwargs: m(**k), device, config.repeats, config.warmup)
                if variant != "stock":
                    out = module(**kwargs).sample.float().cpu()
                    result["relative_l2_to_first"] = relative_l2(out, reference.setdefault(name, out))
            batch = shapes[name][0]
            flops = dit_flops(tokens_of(module, shapes[name]), context, width, net.config.num_layers, batch)
            result.update(tflop=flops / 1e12, tflops=flops / result["seconds"] / 1e12, batch=batch)
            if ceiling:
                result["fraction_of_gemm_ceiling"] = result["tflops"] / ceiling
            section.setdefault(variant, {})[name] = result
            print(f"dit {variant:>14} {name:>28}: {result['seconds']:.4f} s, {result['peak_gib']:.2f} GiB", flush=True)
            if config.save is not None:
                config.save(report)
        if variant == "stock":
            del stock, runs
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
            torch.nn.Module.to(net, device)
    if "skipped" not in section.get("stock", {"skipped": True}):
        report["dit_speedup_vs_stock"] = {
            variant: {name: section["stock"][name]["seconds"] / r["seconds"] for name, r in rows.items()}
            for variant, rows in section.items()
            if variant != "stock"
        }


def bench_vae(config: BenchConfig, report: dict) -> None:
    """Tokenizer encode / decode of one clip and one image, whole and streamed: time, peak memory, and the
    streamed outputs' distance to the whole-clip ones (relative L2, in the benchmark's dtype).

    Each call runs with only its own input on the GPU (the pixels for the encode, the latents for the decode):
    the references and earlier outputs wait on the CPU, so the peaks are the tokenizer's and not the bench's.
    """
    device = torch.device(config.device)
    tokenizer = random_model("inverse", config).tokenizer
    height, width = clip_size(tokenizer, config)
    section = report.setdefault("vae", {})
    for frames in (config.frames or tokenizer.window_frames, 1):
        pixels = torch.rand(1, 3, frames, height, width, dtype=config.dtype) * 2 - 1  # CPU: copied per call
        rows = section.setdefault(f"{frames}x{height}x{width}", {})
        reference: tuple[torch.Tensor, torch.Tensor] | None = None  # whole-clip latents and pixels, on the CPU
        for stream in config.vae_streams if frames > 1 else config.vae_streams[:1]:
            tokenizer.encode_stream_frames = tokenizer.decode_stream_frames = stream or None
            with torch.no_grad():
                on_device = pixels.to(device)
                encode = measure(lambda p=on_device: tokenizer.encode(p), device, config.repeats, config.warmup)
                latents = tokenizer.encode(on_device)
                del on_device
                decode_input = latents if reference is None else reference[0].to(device)
                decode = measure(lambda z=decode_input: tokenizer.decode(z), device, config.repeats, config.warmup)
                decoded = tokenizer.decode(decode_input).cpu()
                del decode_input
            row = {
                "encode_s": encode["seconds"],
                "encode_peak_gib": encode["peak_gib"],
                "decode_s": decode["seconds"],
                "decode_peak_gib": decode["peak_gib"],
                "latent_shape": list(latents.shape),
            }
            latents = latents.cpu()
            if reference is None:
                reference = (latents, decoded)
            else:
                row["encode_relative_l2_to_whole"] = relative_l2(latents, reference[0])
                row["decode_relative_l2_to_whole"] = relative_l2(decoded, reference[1])
            del latents, decoded
            rows[f"stream{stream}" if stream else "whole"] = row
            print(f"vae {frames} frames, stream {stream or 'whole'}: {row}", flush=True)
        del pixels, reference
        gc.collect()


def bench_pipelines(config: BenchConfig, report: dict) -> None:
    """End to end on one clip: inverse (5 passes x ``steps``) and forward (one env map), per offload mode."""
    device = torch.device(config.device)
    variant = config.pipeline_variant
    attention, extras = parse_variant(variant)
    section = report.setdefault("pipeline", {"variant": variant, "steps": config.steps})
    for offload in config.offloads:
        for role in ("inverse", "forward"):
            model = random_model(role, config)
            prepare_dit(model.transformer, attention, extras)
            pipe, run, frames = pipeline_run(model, config)
            pipe.enable_offload(offload, device)
            if "compile" in extras:  # compiled on a 1-step run of the same shapes, not on a timed one
                run(num_inference_steps=1)
            result = measure(run, device, repeats=1, warmup=0)
            key = role if offload == "none" else f"{role}+offload_{offload}"
            section[key] = {"seconds": result["seconds"], "peak_gib": result["peak_gib"], "frames": frames}
            print(f"pipeline {key}: {result['seconds']:.2f} s, {result['peak_gib']:.2f} GiB", flush=True)
            del pipe, model, run
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()


def pipeline_run(model: RendererModel, config: BenchConfig) -> tuple[Any, Callable[[], object], int]:
    """(pipeline, one end-to-end call on random inputs, frames) for ``model``'s role."""
    import numpy as np

    from diffusion_renderer.conventions import GBUFFER_KEYS
    from diffusion_renderer.pipelines.pipeline_forward_rendering import ForwardRenderingPipeline
    from diffusion_renderer.pipelines.pipeline_inverse_rendering import InverseRenderingPipeline

    height, width = clip_size(model.tokenizer, config)
    frames = config.frames or model.tokenizer.window_frames
    rng = np.random.default_rng(0)
    options = {
        "num_inference_steps": config.steps,
        "processing_resolution": (height, width),
        "num_frames": frames,
        "progress": False,
    }
    if model.role == "inverse":
        pipe = InverseRenderingPipeline.from_model(model)
        clip = rng.random((frames, height, width, 3), dtype=np.float32)
        return pipe, functools.partial(pipe, clip, passes=GBUFFER_KEYS, **options), frames
    pipe = ForwardRenderingPipeline.from_model(model)
    gbuffers = {
        k: rng.random((frames, height, width, 1 if k in ("depth", "roughness", "metallic") else 3), dtype=np.float32)
        for k in GBUFFER_KEYS
    }
    hdr = rng.random((64, 128, 3), dtype=np.float32) * 4
    return pipe, functools.partial(pipe, gbuffers, [hdr], **options), frames


def bench_context_parallel(config: BenchConfig, report: dict) -> None:
    """The inverse DiT step of each case on one rank alone and split across all ranks (``--context-parallel``):
    time, peak memory, speed-up, and the split output's distance to the whole one. Runs under torchrun (every
    rank measures; rank 0's figures are reported)."""
    import torch.distributed as dist

    from diffusion_renderer.distributed import setup

    ranks = setup(config.device)
    if ranks.world < 2:
        raise ValueError("the cp case splits a step across ranks: run it under torchrun with 2 or more processes")
    device = torch.device(config.device)
    device = torch.device("cuda", ranks.local_rank) if device.type == "cuda" else device
    model = random_model("inverse", replace(config, device=str(device)))
    net = model.transformer
    section = report.setdefault("context_parallel", {"world": ranks.world})
    for name, shape in dit_shapes(model.tokenizer, config).items():
        kwargs = dit_inputs(net, shape, device, config.dtype, False)
        row: dict[str, float] = {}
        outputs = []
        for label, group in (("whole", None), ("split", dist.group.WORLD)):
            net.enable_context_parallel(group)
            with torch.no_grad():
                result = measure(lambda k=kwargs: net(**k), device, config.repeats, config.warmup)
                outputs.append(net(**kwargs).sample.float().cpu())
            row.update({f"{label}_s": result["seconds"], f"{label}_peak_gib": result["peak_gib"]})
        row["speedup"] = row["whole_s"] / row["split_s"]
        row["relative_l2_split_to_whole"] = relative_l2(outputs[1], outputs[0])
        section[name] = row
        if ranks.is_main:
            print(f"context parallel x{ranks.world} {name}: {row}", flush=True)
    net.enable_context_parallel(None)


CASES = {"dit": bench_dit, "vae": bench_vae, "pipeline": bench_pipelines, "cp": bench_context_parallel}
DEFAULT_CASES = ("dit", "vae", "pipeline")  # cp runs under torchrun only


def run_bench(config: BenchConfig, git_commit: str = "unknown") -> dict:
    """Run the chosen cases; returns the report (device, versions, date, commit, settings, results)."""
    import diffusers

    device = torch.device(config.device)
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit,
        "versions": {
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "python": platform.python_version(),
        },
        "settings": {
            f.name: str(getattr(config, f.name)) if f.name == "dtype" else getattr(config, f.name)
            for f in fields(config)
            if f.name != "save"
        },
    }
    for case in config.cases:
        CASES[case](config, report)
        if config.save is not None:
            config.save(report)
    return report
