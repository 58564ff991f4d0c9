"""The real-footage LoRA on the CPU: adapt the shipped forward model to real videos, test on a held-out one.

Pseudo-labels come from the shipped inverse model; the lighting conditions are masked out (the paper's real
domain). Reported: forward re-rendering PSNR of held-out real frames from their pseudo-G-buffers, without
lighting, for the base model (LoRA scale 0), the adapter (scale 1) and half of it. Held-out clips come from a
video the adapter never saw.

Usage: python benchmarks/lora_real_cpu.py --out benchmarks/results/lora_real_cpu.json [--steps 150]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import tempfile
import time
from pathlib import Path

import torch

from diffusion_renderer.conventions import GBUFFER_KEYS, from_model
from diffusion_renderer.models.lora import add_lora, set_lora_scale
from diffusion_renderer.models.specs import load_model
from diffusion_renderer.training.examples import forward_example
from diffusion_renderer.training.real_domain import pseudo_label_bank
from diffusion_renderer.training.trainer import TrainConfig, Trainer

VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "examples" / "videos"


@torch.no_grad()
def one_step_psnr(model: torch.nn.Module, batch: dict[str, torch.Tensor], tokenizer) -> float:
    """PSNR of D(x; 80) (the default 1-step render) against the real frames, lighting masked out."""
    from diffusion_renderer.pipelines.sampling import sample_edm_euler

    generator = torch.Generator().manual_seed(0)
    example = forward_example(batch, tokenizer, generator, key_drop=0, condition_drop=0, drop_lighting=True)
    latent = sample_edm_euler(
        model,
        example.condition,
        tuple(example.x0.shape),
        num_inference_steps=1,
        generator=torch.Generator().manual_seed(1),
    )
    pred = from_model("rgb", tokenizer.decode(latent.float()))
    target = from_model("rgb", batch["rgb"])
    return 10 * math.log10(1 / float((pred - target).square().mean()))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--rank", type=int, default=16)
    args = parser.parse_args()
    train_videos = [VIDEOS / n for n in ("bikes.mp4", "demo1.mp4", "video3.mp4")]
    test_videos = [VIDEOS / "video2.mp4"]
    start = time.perf_counter()
    bank = pseudo_label_bank(train_videos, "tiny", size=args.size, frames=2)
    test_bank = pseudo_label_bank(test_videos, "tiny", size=args.size, frames=2)
    label_s = time.perf_counter() - start
    keys = ["rgb", *GBUFFER_KEYS]
    test_batch = test_bank.sample(test_bank.num_clips, 2, torch.Generator().manual_seed(0), keys=keys, flip=False)

    model = load_model("tiny", "forward").transformer.float()
    add_lora(model, rank=args.rank)
    config = TrainConfig(
        role="forward",
        steps=args.steps,
        batch_size=8,
        clip_frames=2,
        lr=1e-3,
        warmup_steps=10,
        log_every=25,
        val_every=0,
        checkpoint_every=0,
        drop_lighting=True,
        ema_decay=0.95,
    )
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(config, Path(tmp), bank, model=model, progress=False)
        tokenizer = trainer.tokenizer
        before = {
            "train": one_step_psnr(
                trainer.ema.module,
                bank.sample(8, 2, torch.Generator().manual_seed(0), keys=keys, flip=False),
                tokenizer,
            )
        }
        t0 = time.perf_counter()
        trainer.fit()
        train_s = time.perf_counter() - t0
        records = [json.loads(line) for line in (Path(tmp) / "forward.log.jsonl").read_text().splitlines()]
        losses = [r["loss"] for r in records if "loss" in r]
        adapted = trainer.ema.module.eval()
        heldout = {}
        for scale in (0.0, 0.5, 1.0):
            set_lora_scale(adapted, scale)
            heldout[f"scale_{scale}"] = round(one_step_psnr(adapted, test_batch, tokenizer), 2)
    result = {
        "date": dt.date.today().isoformat(),
        "torch": torch.__version__,
        "train_videos": [p.name for p in train_videos],
        "heldout_videos": [p.name for p in test_videos],
        "size": args.size,
        "rank": args.rank,
        "steps": args.steps,
        "train_clips": bank.num_clips,
        "heldout_clips": test_bank.num_clips,
        "pseudo_label_s": round(label_s, 1),
        "train_s": round(train_s, 1),
        "loss_first_last": [round(losses[0], 4), round(losses[-1], 4)],
        "train_psnr_before": round(before["train"], 2),
        "heldout_psnr_by_lora_scale": heldout,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
