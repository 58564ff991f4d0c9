"""The training loop: EDM denoising of one role's DiT on a :class:`FrameBank`, with EMA, checkpoints and logs.

Every step draws a batch of images (T = 1, ``batch_size`` of them) or, with probability ``clip_fraction``, of
short clips (T = ``clip_frames``, ``batch_size // clip_frames`` of them: the same frame count), builds the
inference condition layout (training/examples.py), and minimises the EDM loss (training/losses.py). All
randomness comes from one seeded generator whose state is checkpointed, so a resumed run continues exactly.

Outputs in ``out`` (``role`` = inverse or forward):

* ``{role}.safetensors``: the EMA weights as a renderer file - a model spec (``--model out``);
* ``{role}.train_state.safetensors``: weights, EMA, AdamW moments, step, RNG (``--resume``);
* ``{role}.log.jsonl`` (loss, lr, frames/s, validation figures) and ``{role}.loss.png``;
* ``{role}.val/step_{step}.png``: fixed validation samples (input | ground truth | prediction) every N steps,
  frame 0 of up to ``VAL_SAMPLES`` distinct validation clips.

Data parallel under torchrun (``ranks``): every rank draws the same *global* batch, noise and dropouts from the
same generator and trains on its slice of it through ``DistributedDataParallel``. Each rank's loss is its
slice's share of the global mean, so the averaged gradients are exactly those of one process with the same
batch. The replicas and the generator therefore stay identical, and a checkpoint written by rank 0 resumes on
any number of ranks. Rank 0 writes the files and runs validation. A ``time_limit`` is decided on rank 0's clock
and broadcast, so that all ranks stop at the same step with the same learning rate.

``fsdp``: the same, with the model and its EMA sharded by FSDP2 instead of replicated (each rank holds 1/N of
the weights, gradients and AdamW moments; with a LoRA, 1/N of the frozen base weights and of the adapters);
checkpoints gather full state dicts into the same files, and validation runs on every rank (the sharded EMA
needs them all) while rank 0 writes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from diffusion_renderer.checkpoints.renderer_file import save_renderer_file
from diffusion_renderer.conventions import INVERSE_PASSES, forward_condition_keys, from_model
from diffusion_renderer.distributed import Ranks, all_sum_float, broadcast_float
from diffusion_renderer.eval.metrics import mse_to_psnr
from diffusion_renderer.models.configs import dit_config
from diffusion_renderer.models.edm import c_in, c_noise
from diffusion_renderer.models.space_to_depth import SpaceToDepthTokenizer
from diffusion_renderer.models.transformer_diffusion_renderer import DiffusionRendererTransformer3DModel
from diffusion_renderer.pipelines.sampling import sample_edm_euler
from diffusion_renderer.training.checkpoint import (
    optimizer_state,
    prefixed,
    read_train_state,
    save_train_state,
)
from diffusion_renderer.training.examples import TrainingExample, make_example
from diffusion_renderer.training.frames import INVERSE_KEYS, FrameBank
from diffusion_renderer.training.losses import (
    P_MEAN,
    P_STD,
    add_noise,
    edm_loss,
    pure_noise_inputs,
    sample_sigma_lognormal,
)
from diffusion_renderer.training.qat import enable_qat, parametrized_state, plain_state

VAL_SAMPLES = 16  # fixed validation frames: frame 0 of up to this many distinct validation clips


@dataclass
class TrainConfig:
    role: str = "inverse"
    model_config: str = "small"  # a size of models/configs.py (``{role}-{size}``)
    steps: int = 1000
    batch_size: int = 64  # frames per step
    clip_frames: int = 4
    clip_fraction: float = 0.5
    lr: float = 3e-4
    min_lr_ratio: float = 0.1
    warmup_steps: int = 200
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    precision: str = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    gradient_checkpointing: bool = False
    compile: bool = False
    # torch.compile each transformer block instead of the whole model: the blocks share one compiled graph, so it
    # compiles in a fraction of the time (benchmarks/README.md, runs 32-34; its GPU speed is not measured yet)
    compile_blocks: bool = False
    seed: int = 0
    log_every: int = 50
    val_every: int = 1000
    val_steps: int = 15
    checkpoint_every: int = 1000
    drop_lighting: bool = False  # forward: the real-footage domain (no lighting conditions)
    p_mean: float = P_MEAN  # log-normal sigma: official N(0, 1) on ln sigma
    p_std: float = P_STD
    pure_noise_fraction: float = 0.0  # share of samples at sigma_max from pure noise (losses.py; not official)
    exposure_stops: float = 0.0  # exact exposure augmentation, log-uniform in ±stops (frames.py; not official)
    # inverse: relative frequency of each pass as the target ({pass: weight}, others 1; None: uniform, official)
    pass_weights: dict[str, float] | None = None
    # forward with the hint: share of examples given the fixed-camera hint (frames.py; not official)
    hint_fixed_camera: float = 0.0
    fsdp: bool = False  # under torchrun: shard with FSDP2 instead of replicating with DDP
    qat: str | None = None  # "int4": train through the int4 file's weights (training/qat.py; not official)
    # inverse: loss weight on the pixels off the frame's dominant surface (losses.off_plane_weights; 1: official)
    off_plane_weight: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def lr_at(step: int, config: TrainConfig, time_fraction: float = 0.0) -> float:
    """Linear warm-up, then cosine decay to ``min_lr_ratio`` at ``steps`` - or at the time limit, when
    ``time_fraction`` (:func:`schedule_fraction`) runs out first."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = min(1.0, (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps))
    progress = max(progress, min(1.0, time_fraction))
    return config.lr * (config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def new_transformer(config: TrainConfig) -> DiffusionRendererTransformer3DModel:
    """A fresh DiT of ``{role}-{model_config}``: PyTorch's default init seeded by ``config.seed`` (without
    touching the global RNG), output projection zeroed (D = c_skip x)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = DiffusionRendererTransformer3DModel(**dit_config(f"{config.role}-{config.model_config}"))
    torch.nn.init.zeros_(model.proj_out.weight)
    return model


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in config.items()}


HINT_SETTINGS = ("in_channels", "shading_hint", "hint_residual", "exposure_level")  # what adapt_to_config may change
ADAPTABLE = (*HINT_SETTINGS, "num_layers", "pos_embed_blocks")
BLOCK_OUTPUTS = ("attn1.to_out.", "attn2.to_out.", "ff.net.2.")  # what a block adds to the residual stream


def grown_pos_embed_blocks(old: int, new: int) -> list[int]:
    """The blocks of :func:`grown_blocks`' result that add the position embedding: each old block's first copy."""
    return [j for j in range(new) if j == 0 or (j - 1) * old // new != j * old // new]


def grown_blocks(state: dict[str, torch.Tensor], old: int, new: int) -> dict[str, torch.Tensor]:
    """A state with ``old`` blocks -> ``new`` >= ``old`` blocks computing the same function: block j is a copy of
    old block j * old // new, the first copy as it was, the others with their output projections zeroed (they
    add nothing to the residual stream until training gives them weight) and, in the config, no position
    embedding (``pos_embed_blocks``: :func:`grown_pos_embed_blocks`). Why copies rather than fresh blocks: their
    attention and MLP inputs start from features the trained block already reads."""
    prefix = "transformer_blocks."
    grown = {k: v for k, v in state.items() if not k.startswith(prefix)}
    firsts = grown_pos_embed_blocks(old, new)
    for j in range(new):
        source = j * old // new
        first = j in firsts
        for key, value in state.items():
            if key.startswith(f"{prefix}{source}."):
                rest = key[len(f"{prefix}{source}.") :]
                zero = not first and rest.startswith(BLOCK_OUTPUTS)
                grown[f"{prefix}{j}.{rest}"] = torch.zeros_like(value) if zero else value.clone()
    return grown


def adapt_to_config(
    model: DiffusionRendererTransformer3DModel, config: TrainConfig
) -> DiffusionRendererTransformer3DModel:
    """``model`` as a DiT of ``{role}-{model_config}`` when the two differ only in the shading hint's settings (a
    forward-medium fine-tuned into forward-medium-hint, that into forward-medium-residual) or in having more
    blocks (forward-medium-residual into forward-medium-deep-residual); ``model`` itself otherwise: with
    ``--init`` the starting model's size wins, as it always has.

    * More condition keys: zero input weights for the new keys' channels, so it computes exactly what it did until
      training gives them weight. New keys come last in the condition (``forward_condition_keys``), and the patch
      embedding reads [x, condition, padding mask] per patch position, so the new input columns go just before
      the padding mask's.
    * To ``hint_residual``: the output projection is zeroed, so it starts by rendering the hint exactly (the DiT's
      ``forward``); the trunk keeps what it learned.
    * Another hint version or exposure level: the weights as they are (the inputs change a little; training
      adapts to them).
    * More blocks: :func:`grown_blocks`, the same function.
    """
    target = _comparable(dit_config(f"{config.role}-{config.model_config}"))
    current = _comparable(dict(model.config))  # a renderer file's config holds lists where dit_config has tuples
    current["hint_residual"] = bool(current.get("hint_residual", False))  # files from before it existed
    current["exposure_level"] = float(current.get("exposure_level", 0.0) or 0.0)  # likewise
    same_size = all(current.get(k) == v for k, v in target.items() if k not in ADAPTABLE)
    if not same_size or target["in_channels"] < current["in_channels"]:
        return model
    if target["num_layers"] < current["num_layers"] or all(current.get(k) == target.get(k) for k in ADAPTABLE):
        return model
    if target["num_layers"] > current["num_layers"] and target.get("pos_embed_blocks") != grown_pos_embed_blocks(
        current["num_layers"], target["num_layers"]
    ):
        return model  # a deeper model of another layout: --init wins
    state = model.state_dict()
    if target["in_channels"] > current["in_channels"]:
        weight = state["patch_embed.proj.weight"]  # (D, P * (in + mask)), P = patch positions
        positions = math.prod(model.config.patch_size)
        old_in = weight.shape[1] // positions
        cols = weight.view(weight.shape[0], old_in, positions)  # channel-major, as the patch embedding flattens
        pad = cols.new_zeros(weight.shape[0], target["in_channels"] - current["in_channels"], positions)
        cut = current["in_channels"]  # the padding mask's column (concat_padding_mask) comes after all the channels
        state["patch_embed.proj.weight"] = torch.cat([cols[:, :cut], pad, cols[:, cut:]], dim=1).flatten(1)
    if target["hint_residual"] and not current["hint_residual"]:
        state = {k: torch.zeros_like(v) if k.startswith("proj_out.") else v for k, v in state.items()}
    if target["num_layers"] > current["num_layers"]:
        state = grown_blocks(state, current["num_layers"], target["num_layers"])
    adapted = new_transformer(config)
    adapted.load_state_dict(state)
    return adapted


def denoiser_loss(
    model: torch.nn.Module,
    example: TrainingExample,
    generator: torch.Generator,
    p_mean: float = P_MEAN,
    p_std: float = P_STD,
    pure_noise_fraction: float = 0.0,
    ranks: Ranks | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean loss, per-sample sigma) of one example batch; ``pure_noise_fraction`` of the samples (drawn per
    sample) are the sampler's first input instead: sigma_max, pure noise (losses.pure_noise_inputs).

    With several ``ranks`` the random draws still cover the whole batch (identical on every rank); the network
    runs on this rank's slice, and the loss is the slice's share of the batch mean times the world size (the
    gradient average over ranks then equals the single-process gradient, for any batch split)."""
    x0 = example.x0
    sigma = sample_sigma_lognormal(x0.shape[0], generator, x0.device, p_mean, p_std)
    noise = torch.randn(x0.shape, generator=generator, device=x0.device)
    noisy = add_noise(x0, sigma, noise)
    if pure_noise_fraction > 0:  # no extra draw otherwise: earlier runs replay exactly
        pure = torch.rand(x0.shape[0], generator=generator, device=x0.device) < pure_noise_fraction
        noisy, sigma = pure_noise_inputs(noisy, sigma, noise, pure)
    kwargs = example.condition.model_kwargs()
    weight = example.weight
    batch = x0.shape[0]
    if ranks is not None and ranks.world > 1:
        part = slice(batch * ranks.rank // ranks.world, batch * (ranks.rank + 1) // ranks.world)
        x0, noisy, sigma = x0[part], noisy[part], sigma[part]
        weight = None if weight is None else weight[part]
        kwargs = {k: v[part] if torch.is_tensor(v) and v.ndim and len(v) == batch else v for k, v in kwargs.items()}
    s = sigma.view(-1, 1, 1, 1, 1)
    output = model(c_in(s) * noisy, c_noise(sigma), **kwargs).sample
    losses = edm_loss(output, x0, noisy, sigma, weight=weight)  # (b,)
    if ranks is None or ranks.world == 1:
        return losses.mean(), sigma
    return losses.sum() * ranks.world / batch, sigma


def shard_blocks(model: torch.nn.Module, param_dtype: torch.dtype | None = None) -> None:
    """FSDP2: each transformer block, then the rest, sharded over the ranks (parameters, gradients and AdamW
    moments: 1/N each). ``param_dtype`` bf16 computes in bf16 and reduces gradients in float32."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32 if param_dtype else None)
    for block in model.transformer_blocks:
        fully_shard(block, mp_policy=policy)
    fully_shard(model, mp_policy=policy)


# The lr schedule's clock starts after a fit's first steps: under ``--compile`` they compile the model, and again for
# the second batch shape (1-frame images and clips are mixed, so it comes within the first steps). Counted, that
# compilation used up the cosine: run 32 (the deep int4 forward model, 2026-12-05) reached step 50 after 249 s of a
# 336 s limit, so it trained at under a fifth of its peak lr.
SCHEDULE_CLOCK_AFTER_STEPS = 10


def schedule_fraction(now: float, start: float, clock_start: float | None, time_limit_s: float) -> float:
    """Elapsed share of a time-limited cosine: 0 until ``clock_start`` (the end of the fit's first
    ``SCHEDULE_CLOCK_AFTER_STEPS`` steps), then the share of the time that was left at ``clock_start``."""
    if clock_start is None:
        return 0.0
    left = start + time_limit_s - clock_start
    return (now - clock_start) / left if left > 0 else 1.0


def fraction_now(start_time: float, time_limit_s: float, ranks: Ranks) -> float:
    """Elapsed share of the time limit, on rank 0's clock (all ranks stop after the same step)."""
    fraction = (time.perf_counter() - start_time) / time_limit_s
    return broadcast_float(ranks, fraction) if ranks.world > 1 else fraction


class Trainer:
    """Trains ``config.role`` on ``bank``; ``val_bank`` (T = 1 frames) gives fixed validation samples."""

    def __init__(
        self,
        config: TrainConfig,
        out: Path,
        bank: FrameBank,
        val_bank: FrameBank | None = None,
        model: DiffusionRendererTransformer3DModel | None = None,
        device: torch.device | str = "cpu",
        progress: bool = True,
        ranks: Ranks | None = None,
        record: dict[str, Any] | None = None,
    ) -> None:
        self.config, self.out, self.bank, self.val_bank = config, Path(out), bank, val_bank
        self.record = dict(record or {})  # goes into every renderer file it writes (e.g. the --init file's defaults)
        self.device = torch.device(device)
        self.ranks = ranks or Ranks()
        self.progress = progress and self.ranks.is_main
        self.tokenizer = SpaceToDepthTokenizer().to(device=self.device)
        self.model = (model if model is not None else new_transformer(config)).to(self.device).train()
        if config.qat:
            if config.fsdp:
                raise ValueError("--qat runs with DDP or one process; FSDP2 shards the parametrised weights")
            enable_qat(self.model, config.qat)  # before the EMA copy, which then computes quantised too
        if config.gradient_checkpointing:
            self.model.enable_gradient_checkpointing()
        # the EMA copy is made before sharding, then sharded alike: its update is elementwise on matching shards
        self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay))
        use_bf16 = config.precision == "bf16" or (config.precision == "auto" and self.device.type == "cuda")
        self.sharded = self.ranks.world > 1 and config.fsdp
        if self.sharded:
            for module in (self.model, self.ema.module):
                shard_blocks(module, torch.bfloat16 if use_bf16 else None)
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        decay = [p for p in trainable if p.ndim >= 2]
        no_decay = [p for p in trainable if p.ndim < 2]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=config.lr,
            betas=(0.9, 0.99),
            fused=self.device.type == "cuda",
        )
        self.generator = torch.Generator(device=self.device).manual_seed(config.seed)
        self.step = 0
        self.forward_fn = self.model
        if self.ranks.world > 1 and not self.sharded:
            ids = [self.device.index] if self.device.type == "cuda" else None
            # static graph: the same parameters are used every step (the forward model never uses its
            # cross-attention, which a zero context makes exactly zero), so DDP can skip searching for them
            self.forward_fn = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids, static_graph=True)
        if config.compile_blocks:
            self.model.compile_repeated_blocks()  # in place: the state dict keeps its names
        elif config.compile:
            self.forward_fn = torch.compile(self.forward_fn)
        self.autocast_dtype = torch.bfloat16 if use_bf16 else None
        self.val_batch = self._fixed_val_batch()

    # ------------------------------------------------------------------------------------------ paths

    def path(self, suffix: str) -> Path:
        return self.out / f"{self.config.role}{suffix}"

    # ------------------------------------------------------------------------------------------ one step

    def draw_batch(self) -> dict[str, torch.Tensor]:
        cfg = self.config
        clips = float(torch.rand(1, generator=self.generator, device=self.device)) < cfg.clip_fraction
        frames = min(cfg.clip_frames, self.bank.clip_frames) if clips else 1
        size = max(1, cfg.batch_size // frames)
        # the inverse examples read only the frame and its passes: gathering (and re-exposing) the lighting and the
        # shading hint for them would be wasted work on every step (the draws do not depend on the keys)
        keys = INVERSE_KEYS if cfg.role == "inverse" else None
        return self.bank.sample(
            size,
            frames,
            self.generator,
            keys=keys,
            exposure_stops=cfg.exposure_stops,
            fixed_camera_share=cfg.hint_fixed_camera,
            exposure_level=self.exposure_level,
        )

    @property
    def exposure_level(self) -> float:
        """The hint level a forward model sees every light at (render/hint.py; 0: the data's own levels). 0 in
        the real-footage domain: it has no lighting, and the pipeline normalises none without it."""
        if self.config.drop_lighting:
            return 0.0
        return float(getattr(self.model.config, "exposure_level", 0.0) or 0.0)

    def forward_kwargs(self) -> dict[str, Any]:
        """The forward examples' options: the real-footage domain's lighting drop and the model's condition keys."""
        hint = bool(getattr(self.model.config, "shading_hint", 0))
        return {"drop_lighting": self.config.drop_lighting, "condition_keys": forward_condition_keys(hint)}

    def inverse_kwargs(self) -> dict[str, Any]:
        """The inverse examples' options: the passes' sampling weights (in ``INVERSE_PASSES`` order) and the loss
        weight off the dominant surface (no random draw: 1 draws every example exactly as before)."""
        kwargs: dict[str, Any] = {"off_plane_weight": self.config.off_plane_weight}
        if self.config.pass_weights is not None:
            kwargs["pass_weights"] = [self.config.pass_weights.get(p, 1.0) for p in INVERSE_PASSES]
        return kwargs

    def example(self, batch: dict[str, torch.Tensor]) -> TrainingExample:
        kwargs = self.forward_kwargs() if self.config.role == "forward" else self.inverse_kwargs()
        with torch.no_grad():
            return make_example(self.config.role, batch, self.tokenizer, self.generator, **kwargs)

    def train_step(self, time_fraction: float = 0.0) -> float:
        cfg = self.config
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(self.step, cfg, time_fraction)
        example = self.example(self.draw_batch())
        with torch.autocast(self.device.type, self.autocast_dtype, enabled=self.autocast_dtype is not None):
            loss, _ = denoiser_loss(
                self.forward_fn, example, self.generator, cfg.p_mean, cfg.p_std, cfg.pure_noise_fraction, self.ranks
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        self.ema.update_parameters(self.model)
        self.step += 1
        if self.ranks.world > 1:  # the batch mean: the ranks' shares summed, over the world size
            return all_sum_float(self.ranks, float(loss.detach())) / self.ranks.world
        return float(loss.detach())

    # ------------------------------------------------------------------------------------------ the loop

    def fit(
        self,
        steps: int | None = None,
        time_limit_s: float | None = None,
        on_step: Callable[[int], None] | None = None,
    ) -> dict[str, Any]:
        """Train until ``steps`` (default ``config.steps``) or ``time_limit_s``; checkpoint at the end.

        ``on_step(step)`` runs after every step (e.g. to add shards a running generator wrote)."""
        cfg = self.config
        end = steps if steps is not None else cfg.steps
        start_time, window_start, window_losses = time.perf_counter(), time.perf_counter(), []
        frames_seen, first_step, clock_start = 0, self.step, None
        bar = tqdm(total=end, initial=self.step, desc=f"train {cfg.role}", disable=not self.progress)
        while self.step < end:
            now = time.perf_counter()
            fraction = schedule_fraction(now, start_time, clock_start, time_limit_s) if time_limit_s else 0.0
            if time_limit_s and self.ranks.world > 1:
                fraction = broadcast_float(self.ranks, fraction)  # rank 0's clock: same lr, same last step
            window_losses.append(self.train_step(fraction))
            if time_limit_s and clock_start is None and self.step - first_step >= SCHEDULE_CLOCK_AFTER_STEPS:
                clock_start = time.perf_counter()  # what the first steps took (compilation) goes in the log
                self.log({"step": self.step, "schedule_clock_start_s": clock_start - start_time})
            frames_seen += cfg.batch_size
            bar.update(1)
            if self.step % cfg.log_every == 0 or self.step == end:
                elapsed = time.perf_counter() - window_start
                record = {
                    "step": self.step,
                    "loss": float(np.mean(window_losses)),
                    "lr": self.optimizer.param_groups[0]["lr"],
                    "frames_per_s": frames_seen / max(elapsed, 1e-9),
                    "clips": self.bank.num_clips,
                    "time_s": time.perf_counter() - start_time,
                }
                bar.set_postfix(loss=f"{record['loss']:.4f}")
                self.log(record)
                window_start, window_losses, frames_seen = time.perf_counter(), [], 0
            if cfg.val_every and self.step % cfg.val_every == 0:
                self.validate()
            if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                self.save()
            if on_step is not None:
                on_step(self.step)
            if time_limit_s is not None and fraction_now(start_time, time_limit_s, self.ranks) > 1:
                break
        bar.close()
        self.save()
        return {"step": self.step, "seconds": time.perf_counter() - start_time}

    # ------------------------------------------------------------------------------------------ records

    def log(self, record: dict[str, Any]) -> None:
        if not self.ranks.is_main:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        with self.path(".log.jsonl").open("a") as f:
            f.write(json.dumps(record) + "\n")

    def save(self, record: dict[str, Any] | None = None) -> None:
        """The EMA model as a renderer file (a LoRA run: the EMA adapter, ``{role}.lora.safetensors``), then
        the full training state (all atomic). Sharded (FSDP2) states are gathered on every rank first."""
        from diffusion_renderer.models.lora import adapter_names, save_lora

        model_state, ema_state, optimizer_state = self.full_states()  # collective when sharded
        if not self.ranks.is_main:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        provenance = {**self.record, "steps": self.step, "train_config": self.config.to_dict()}
        provenance["clips"] = self.bank.num_clips
        provenance.update(record or {})
        adapters = adapter_names(self.ema.module)
        model_state, ema_state = plain_state(model_state), plain_state(ema_state)  # QAT: the modules' own names
        if adapters:
            ema_module = prefixed(ema_state, "module.")  # gathered: the sharded EMA holds shards only
            save_lora(self.ema.module, self.path(".lora.safetensors"), adapters[0], provenance, full_state=ema_module)
        else:
            save_renderer_file(
                self.path(".safetensors"),
                prefixed(ema_state, "module."),
                role=self.config.role,
                dit_config=dict(self.model.config),
                tokenizer_config=self.tokenizer.config(),
                storage="int4" if self.config.qat == "int4" else "float32",  # QAT: exactly the weights it trained
                record=provenance,
            )
        save_train_state(
            self.path(".train_state.safetensors"),
            step=self.step,
            model_state=model_state,
            ema_state=ema_state,
            optimizer_state=optimizer_state,
            rng=self.generator.get_state(),
            config=self.config.to_dict(),
            record=self.record,
        )
        plot_log(self.path(".log.jsonl"), self.path(".loss.png"))

    def full_states(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, Any]]:
        """(model, EMA, optimizer) state dicts, unsharded, in the single-process layouts."""
        if not self.sharded:
            return self.model.state_dict(), self.ema.state_dict(), self.optimizer.state_dict()
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            get_optimizer_state_dict,
        )

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        model_state = get_model_state_dict(self.model, options=options)
        ema_state = {f"module.{k}": v for k, v in get_model_state_dict(self.ema.module, options=options).items()}
        ema_state["n_averaged"] = self.ema.n_averaged.detach().cpu()
        by_name = get_optimizer_state_dict(self.model, self.optimizer, options=options)  # keyed by parameter name
        if not self.ranks.is_main:  # with cpu_offload the full states land on rank 0 only
            return {}, {}, {}
        names = self.parameter_names()
        index = {name: i for i, name in enumerate(names)}
        optimizer_state = {
            "state": {index[name]: value for name, value in by_name["state"].items()},
            "param_groups": [{**g, "params": [index[n] for n in g["params"]]} for g in by_name["param_groups"]],
        }
        return model_state, ema_state, optimizer_state

    def parameter_names(self) -> list[str]:
        """Names of the optimizer's parameters in its own order (the indices of ``optimizer.state_dict()``)."""
        name_of = {id(p): n for n, p in self.model.named_parameters()}
        return [name_of[id(p)] for group in self.optimizer.param_groups for p in group["params"]]

    def resume(self) -> bool:
        """Load ``{role}.train_state.safetensors`` if present (written by any number of ranks); returns whether it
        did."""
        path = self.path(".train_state.safetensors")
        if not path.is_file():
            return False
        tensors, meta = read_train_state(path)
        model_state, ema_state = prefixed(tensors, "model."), prefixed(tensors, "ema.")
        state = optimizer_state(tensors, meta["param_groups"])
        if self.sharded:
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                set_model_state_dict,
                set_optimizer_state_dict,
            )

            options = StateDictOptions(full_state_dict=True)  # every rank read the whole file
            set_model_state_dict(self.model, model_state, options=options)
            set_model_state_dict(self.ema.module, prefixed(ema_state, "module."), options=options)
            self.ema.n_averaged.copy_(ema_state["n_averaged"])
            names = self.parameter_names()
            by_name = {
                "state": {names[i]: value for i, value in state["state"].items()},
                "param_groups": [{**g, "params": [names[i] for i in g["params"]]} for g in state["param_groups"]],
            }
            set_optimizer_state_dict(self.model, self.optimizer, by_name, options=options)
        else:  # QAT: the file's plain names to the parametrised ones (also from a run without QAT)
            self.model.load_state_dict(parametrized_state(model_state, self.model))
            self.ema.load_state_dict(parametrized_state(ema_state, self.ema))
            self.optimizer.load_state_dict(state)  # moved to the params' device
        self.generator.set_state(tensors["rng"].to(torch.uint8))
        self.step = int(meta["step"])
        # the first call's provenance (its --init file and defaults); what this call was given wins. States written
        # before 2026-12-05 have none: their resumed files lacked default_steps and ran at the official 15 steps.
        self.record = {**meta.get("record", {}), **self.record}
        return True

    # ------------------------------------------------------------------------------------------ validation

    def _fixed_val_batch(self) -> dict[str, torch.Tensor] | None:
        if self.val_bank is None or self.val_bank.num_clips == 0:
            return None
        # Distinct clips spread over the bank: random draws repeated clips (run 18: 8 frames of 4 scenes), and a
        # figure over so few scenes misled more than once.
        generator = torch.Generator(device=self.device).manual_seed(1234)
        count = min(VAL_SAMPLES, self.val_bank.num_clips)
        clips = torch.linspace(0, self.val_bank.num_clips - 1, count).round().long()
        batch = self.val_bank.sample(count, 1, generator, flip=False, clips=clips, exposure_level=self.exposure_level)
        return {k: v.to(self.device) for k, v in batch.items()}

    @torch.no_grad()
    def predict(self, batch: dict[str, torch.Tensor], steps: int) -> dict[str, torch.Tensor]:
        """EMA-model samples of the fixed batch: {pass or "rgb": (B, 3, 1, H, W)} in [-1, 1]."""
        model = self.ema.module.eval()
        inverse = self.config.role == "inverse"
        keys = INVERSE_PASSES if inverse else ("rgb",)
        out = {}
        for i, key in enumerate(keys):
            generator = torch.Generator(device=self.device).manual_seed(i)
            kwargs = {"passes": (key,)} if inverse else {"key_drop": 0.0, **self.forward_kwargs()}
            example = make_example(self.config.role, batch, self.tokenizer, generator, condition_drop=0.0, **kwargs)
            with torch.autocast(self.device.type, self.autocast_dtype, enabled=self.autocast_dtype is not None):
                latent = sample_edm_euler(
                    model,
                    example.condition,
                    tuple(example.x0.shape),
                    num_inference_steps=steps,
                    generator=generator,
                    device=self.device,
                )
            out[key] = self.tokenizer.decode(latent.float()).clamp(-1, 1)
        return out

    def validate(self) -> dict[str, float]:
        if self.val_batch is None or not (self.ranks.is_main or self.sharded):
            return {}
        predictions = self.predict(self.val_batch, self.config.val_steps)  # sharded: every rank takes part
        if not self.ranks.is_main:
            return {}
        figures = {}
        for key, pred in predictions.items():
            target = from_model(key, self.val_batch[key]).float()
            figures[f"val_psnr_{key}"] = mse_to_psnr(float((from_model(key, pred) - target).square().mean()))
        self.log({"step": self.step, **figures})
        save_validation_grid(self.path(".val") / f"step_{self.step:07d}.png", self.val_batch, predictions)
        return figures


def save_validation_grid(path: Path, batch: dict[str, torch.Tensor], predictions: dict[str, torch.Tensor]) -> None:
    """One row per sample: input RGB, then (ground truth, prediction) per predicted key."""
    from diffusion_renderer.conventions import to_unit
    from diffusion_renderer.io.contact_sheet import save_contact_sheet

    def image(key: str, value: torch.Tensor, b: int) -> np.ndarray:
        frame = from_model(key, value[b : b + 1].float())[0, :, 0]  # (C, H, W)
        return to_unit(key, frame).permute(1, 2, 0).cpu().numpy()

    rows = []
    for b in range(batch["rgb"].shape[0]):
        tiles = [("rgb", image("rgb", batch["rgb"], b))]
        for key, pred in predictions.items():
            if key != "rgb":
                tiles.append((f"{key} gt", image(key, batch[key], b)))
            tiles.append((f"{key} pred", image(key, pred, b)))
        rows.append((f"sample {b}", tiles))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_contact_sheet(path, rows, tile_height=128)


def plot_log(log_path: Path, out_png: Path) -> Path | None:
    """Loss curve (and validation PSNR) from a training log; None without matplotlib (GPU hosts)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    if not log_path.is_file():
        return None
    records = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    train = [r for r in records if "loss" in r]
    val = [r for r in records if any(k.startswith("val_psnr") for k in r)]
    fig, axes = plt.subplots(1, 2 if val else 1, figsize=(10 if val else 5, 3.5), squeeze=False)
    ax = axes[0, 0]
    ax.plot([r["step"] for r in train], [r["loss"] for r in train])
    ax.set(xlabel="step", ylabel="EDM loss", yscale="log", title=log_path.name.split(".")[0])
    if val:
        ax = axes[0, 1]
        for key in sorted({k for r in val for k in r if k.startswith("val_psnr")}):
            points = [(r["step"], r[key]) for r in val if key in r]
            ax.plot(*zip(*points, strict=True), marker="o", label=key.removeprefix("val_psnr_"))
        ax.set(xlabel="step", ylabel="validation PSNR (dB)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png
