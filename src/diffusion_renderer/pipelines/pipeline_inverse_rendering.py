"""Inverse rendering: image or video -> G-buffers (basecolor, normal, depth, roughness, metallic).

Stages: check inputs -> prepare frames (any aspect ratio, any length) -> encode the RGB condition per window
-> denoise every requested pass (passes batched through the DiT, they share the condition) -> decode and
join the windows -> postprocess to the conventions' ranges at the input size -> ensemble (optional).

Ensembling (``ensemble_size`` E > 1, as Marigold's pipelines): every pass is sampled E times from independent
noise and the members are combined per pixel - the median for basecolor, roughness, metallic and depth (depth is
normalised per clip by convention, so members share its range), for normals the mean direction at the members'
mean length (a model's normals are unit on surfaces and short where it sees none, the background the shading hint
reads off them) - with their spread as an uncertainty map. E = 1 is exactly the plain pipeline; member 0 always
uses the plain noise.
Views (test-time augmentation): with ``ensemble_shift`` some members see the input moved half a DiT token down and
right (``image_processor.translate``, undone on the decoded frames), so their token grid falls between the plain
one's; with ``ensemble_mirror`` some see it mirrored left-right, their G-buffers mirrored back
(``conventions.mirror_pass``). The members cycle through the views in the order plain, shifted, mirrored, mirrored
and shifted (only the enabled ones): E = 2 with one option is the plain run plus that view. Why: at its 1-step
default a model errs much the same way from new noise, but differently on a view it has to re-tokenise or
mirror. ``tiny`` on the second held-out set (120 images), E = 2: normals 11.77 degrees -> 11.75 with new noise,
11.58 mirrored, 11.57 shifted; basecolor si-PSNR 19.91 dB -> 19.93, 19.95, 20.35; E = 4, both views: 11.41
degrees, 20.37 dB.

Basecolor detail (``basecolor_detail`` sigma, in processing pixels; a trained model may record its default,
``record["default_basecolor_detail"]``, official models 0): the combined basecolor takes the input's detail finer than
that Gaussian (``image_processor.transfer_detail``), at the input's own size. Why: the space-to-depth models make each
8 x 8 token in one linear step and leave out the texture inside it; on the held-out sets the input's detail is worth
more than theirs (``benchmarks/TINY_HISTORY.md``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import DiffusionPipeline
from diffusers.utils.torch_utils import randn_tensor
from tqdm.auto import tqdm

from diffusion_renderer.conventions import (
    CONTEXT_INDEX,
    DEFAULT_FPS,
    GUIDANCE_SCALE,
    INVERSE_PASSES,
    VALUE_RANGE,
    WINDOW_OVERLAP_LATENTS,
    context_index,
    from_model,
    mirror_pass,
)
from diffusion_renderer.pipelines.image_processor import (
    FitPlan,
    FramesInput,
    Resolution,
    is_valid_blur,
    transfer_detail,
    translate,
    translate_back,
)
from diffusion_renderer.pipelines.pipeline_output import InverseRenderingOutput
from diffusion_renderer.pipelines.sampling import ConditionInputs, sample_edm_euler_windows
from diffusion_renderer.pipelines.video_stages import RendererPipelineMixin, decode_windows, encode_windows
from diffusion_renderer.pipelines.windows import TemporalPlan


def length(value: torch.Tensor, dim: int) -> torch.Tensor:
    """Euclidean length over ``dim`` (kept). As a sum of squares: torch's CPU ``norm`` / ``std`` over a dimension that
    is not the innermost took 50-100x longer (measured, torch 2.13: 280 ms against 2.4 ms for two 600x400 normal
    maps), a third of an ensemble's time."""
    return value.square().sum(dim, keepdim=True).sqrt()


def soft_normalize(normal: torch.Tensor, low: float = 0.2, high: float = 0.4, dim: int = 1) -> torch.Tensor:
    """Official ``--normalize_normal``: unit length where the norm >= ``high``, untouched below ``low``."""
    norm = length(normal, dim)
    weight = ((norm - low) / (high - low)).clamp(0, 1)
    return normal / norm.clamp_min(1e-12) * weight + normal * (1 - weight)


def median(members: torch.Tensor) -> torch.Tensor:
    """Per-element median over dim 0, the mean of the two middle values for an even count. Why not
    ``Tensor.median``: it returns the lower middle value, so an ensemble of 2 took each pixel's minimum of the two
    (darker basecolor, lower roughness)."""
    ordered = members.sort(dim=0).values
    middle = (members.shape[0] - 1) // 2
    return ordered[middle] if members.shape[0] % 2 else (ordered[middle] + ordered[middle + 1]) / 2


@dataclass(frozen=True)
class EnsembleSettings:
    """Samples per pass and the views they cycle through (module doc). A trained model may record its own in its
    file (``record["default_ensemble"]``, e.g. ``{"size": 2, "shift": true}``), used where a call leaves them out."""

    size: int = 1
    mirror: bool = False
    shift: bool = False

    @classmethod
    def from_record(cls, record: dict) -> EnsembleSettings:
        """The record's ``default_ensemble``; ValueError in one line when it is not one."""
        recorded = record.get("default_ensemble") or {}
        fields = ("size", "mirror", "shift")  # other keys are notes (why it was chosen)
        settings = cls(**{k: recorded[k] for k in fields if k in recorded}) if isinstance(recorded, dict) else None
        if (
            settings is None
            or type(settings.size) is not int
            or settings.size < 1
            or not isinstance(settings.mirror, bool)
            or not isinstance(settings.shift, bool)
        ):
            raise ValueError(f"its record's default_ensemble is not {{size >= 1, mirror, shift}}: {recorded!r}")
        return settings


def basecolor_detail_from_record(record: dict) -> float:
    """The record's ``default_basecolor_detail`` (0 when absent); ValueError in one line when it is not a sigma."""
    sigma = record.get("default_basecolor_detail", 0.0)
    if isinstance(sigma, bool) or not isinstance(sigma, int | float) or not is_valid_blur(sigma):
        raise ValueError(f"its record's default_basecolor_detail is not a number of pixels >= 0: {sigma!r}")
    return float(sigma)


@dataclass(frozen=True)
class View:
    """How an ensemble member sees the input: mirrored left-right, moved ``shift`` processing pixels down and right."""

    mirror: bool = False
    shift: int = 0


def ensemble_views(size: int, mirror: bool, shift: int) -> list[View]:
    """The views E = ``size`` members cycle through (module doc): plain, shifted, mirrored, mirrored and shifted,
    those enabled (``shift`` 0: none shifted), at most ``size`` of them."""
    views = [View(m, s) for m in (False, True)[: 1 + mirror] for s in (0, shift)[: 1 + bool(shift)]]
    return views[:size]


def to_output(value: torch.Tensor, output_type: str) -> np.ndarray | torch.Tensor:
    """(N, C, h, w) -> (N, h, w, C) numpy, or the tensor itself for ``output_type="pt"``."""
    return value if output_type == "pt" else value.permute(0, 2, 3, 1).cpu().numpy()


class InverseRenderingPipeline(RendererPipelineMixin, DiffusionPipeline):
    """DiffusionRenderer's inverse renderer as a diffusers pipeline (the shape of Marigold's pipelines).

    Components: ``transformer`` (inverse DiT), ``vae`` (the Cosmos tokenizer network; registered so diffusers'
    offloading manages it), ``scheduler``; ``tokenizer`` wraps ``vae`` with the latent normalisation.
    """

    role = "inverse"
    default_ensemble = EnsembleSettings()  # official models: one sample
    default_basecolor_detail = 0.0  # official models: their own basecolor, untouched

    @classmethod
    def from_model(cls, model):
        pipe = super().from_model(model)
        try:
            pipe.default_ensemble = EnsembleSettings.from_record(model.record)
            pipe.default_basecolor_detail = basecolor_detail_from_record(model.record)
        except ValueError as error:
            raise ValueError(f"{model.spec}: {error}") from None
        return pipe

    def basecolor_detail_setting(self, basecolor_detail: float | None = None) -> float:
        """The basecolor detail a call uses, in processing pixels: what it passes, the model's default for None."""
        return self.default_basecolor_detail if basecolor_detail is None else float(basecolor_detail)

    def detail_sigma(self, basecolor_detail: float | None, fit: FitPlan) -> float:
        """Output pixels of the basecolor's detail transfer: :meth:`basecolor_detail_setting` at the input's size."""
        return self.basecolor_detail_setting(basecolor_detail) * fit.original_size[0] / fit.resized_size[0]

    def ensemble_settings(
        self, size: int | None = None, mirror: bool | None = None, shift: bool | None = None
    ) -> EnsembleSettings:
        """The settings a call uses: what it passes, the model's default for what it leaves as None."""
        default = self.default_ensemble
        return EnsembleSettings(
            default.size if size is None else size,
            default.mirror if mirror is None else mirror,
            default.shift if shift is None else shift,
        )

    @staticmethod
    def add_input_detail(basecolor: torch.Tensor, frames: torch.Tensor, sigma: float) -> torch.Tensor:
        """(N, 3, h, w) basecolor with the (N, C, h, w) input's detail finer than ``sigma`` pixels (module doc), in
        range. Frame by frame: a long clip at the input's size would otherwise hold several blurred copies at once."""
        if sigma <= 0:
            return basecolor
        detailed = [
            transfer_detail(basecolor[i : i + 1], frames[i : i + 1].expand(-1, 3, -1, -1), sigma)
            for i in range(basecolor.shape[0])
        ]
        return torch.cat(detailed).clamp(*VALUE_RANGE["basecolor"])

    # ------------------------------------------------------------------------------------------- stages

    @staticmethod
    def check_inputs(
        passes: Sequence[str],
        num_inference_steps: int,
        pass_batch_size: int | None,
        ensemble_size: int = 1,
        basecolor_detail: float | None = None,
    ) -> None:
        if basecolor_detail is not None and not is_valid_blur(basecolor_detail):
            raise ValueError(f"basecolor_detail must be a finite number of pixels >= 0, got {basecolor_detail}")
        if ensemble_size < 1:
            raise ValueError(f"ensemble_size must be >= 1, got {ensemble_size}")
        if not passes:
            raise ValueError("no passes requested")
        for name in passes:
            context_index(name)  # raises on an unknown pass
        if len(set(passes)) != len(passes):
            raise ValueError(f"passes repeat: {list(passes)}")
        if num_inference_steps < 1:
            raise ValueError("num_inference_steps must be >= 1")
        if pass_batch_size is not None and pass_batch_size < 1:
            raise ValueError("pass_batch_size must be >= 1")

    def prepare_frames(
        self,
        image: FramesInput,
        processing_resolution: Resolution,
        resize_mode: str | None,
        num_frames: int | None,
        chunk_mode: str,
        overlap_latents: int,
    ) -> tuple[torch.Tensor, FitPlan, TemporalPlan]:
        """Input -> (1, 3, N, H, W) in [-1, 1] at the processing size, with its spatial and temporal plans."""
        frames = self.image_processor.to_frames(image)  # (N, C, h, w) in [0, 1]
        if frames.shape[1] == 1:
            frames = frames.expand(-1, 3, -1, -1)
        fit = self.image_processor.plan(*frames.shape[-2:], processing_resolution, resize_mode)
        frames = self.image_processor.preprocess(frames, fit)  # (N, 3, H, W)
        plan = self.plan_windows(frames.shape[0], num_frames, chunk_mode, overlap_latents)
        return (frames * 2 - 1).permute(1, 0, 2, 3).unsqueeze(0), fit, plan

    def prepare_latents(
        self, window_shape: tuple[int, ...], plan: TemporalPlan, num_passes: int, generator, device: torch.device
    ) -> list[torch.Tensor]:
        """One noise draw (1, C, global_latents, h, w) per pass, in pass order (independent of batching)."""
        shape = (1, window_shape[1], plan.global_latents, *window_shape[3:])
        return [
            randn_tensor(shape, generator=generator, device=device, dtype=torch.float32) for _ in range(num_passes)
        ]

    def denoise(
        self,
        rgb_latents: list[torch.Tensor],
        passes: Sequence[str],
        noise: list[torch.Tensor],
        plan: TemporalPlan,
        padding_mask: torch.Tensor | None,
        fps: float,
        num_inference_steps: int,
        guidance_scale: float,
        pass_batch_size: int,
        progress: bool,
    ) -> list[list[torch.Tensor]]:
        """Per pass, one latent per window. Passes are batched ``pass_batch_size`` at a time."""
        results: list[list[torch.Tensor]] = []
        groups = range(0, len(passes), pass_batch_size)
        for first in tqdm(groups, desc="passes", disable=not progress or len(groups) == 1, leave=False):
            group = passes[first : first + pass_batch_size]
            index = torch.tensor([[CONTEXT_INDEX[name]] for name in group], device=self._execution_device)
            conditions = [
                ConditionInputs(
                    latent.expand(len(group), -1, -1, -1, -1),
                    context_index=index,
                    fps=fps,
                    padding_mask=padding_mask,
                )
                for latent in rgb_latents
            ]
            samples = sample_edm_euler_windows(
                self.transformer,
                conditions,
                plan,
                (len(group), *rgb_latents[0].shape[1:]),
                num_inference_steps=num_inference_steps,
                guidance_scale=guidance_scale,
                noise=torch.cat(noise[first : first + pass_batch_size]),
                scheduler=self.scheduler,
                progress=progress,
                device=self._execution_device,
            )
            results.extend([[sample[i : i + 1] for sample in samples] for i in range(len(group))])
        return results

    def postprocess(self, name: str, clip: torch.Tensor, fit: FitPlan, normalize_normal: bool) -> torch.Tensor:
        """Decoded (1, 3, N, H, W) -> the pass at the input size, (N, C, h, w) in the conventions' range."""
        value = from_model(name, clip)[0].permute(1, 0, 2, 3)  # (N, C, H, W) in the pass's range
        value = self.image_processor.postprocess(value, fit)
        if name == "normal" and normalize_normal:
            value = soft_normalize(value)
        return value.clamp(*VALUE_RANGE[name])  # resampling may overshoot by an ulp

    @staticmethod
    def ensemble(name: str, members: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(E, N, C, h, w) members of one pass -> (combined (N, C, h, w), uncertainty (N, 1, h, w))."""
        if name == "normal":  # the mean direction at the members' mean length: background normals stay short
            mean = members.mean(0)
            direction = mean / length(mean, 1).clamp_min(1e-6)
            lengths = length(members, 2)  # (E, N, 1, h, w)
            cosine = (members * direction).sum(2, keepdim=True) / lengths.clamp_min(1e-6)
            spread = cosine.clamp(-1, 1).acos().square().mean(0).sqrt()  # RMS angle to the mean, radians
            return direction * lengths.mean(0).clamp(max=1), spread  # unit at most: in range
        deviation = (members - members.mean(0)).square().mean(0).sqrt()  # the population std (see length())
        return median(members), deviation.mean(1, keepdim=True)

    # --------------------------------------------------------------------------------------------- call

    @torch.no_grad()
    def __call__(
        self,
        image: FramesInput,
        passes: Sequence[str] | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        generator: torch.Generator | None = None,
        processing_resolution: Resolution = None,
        resize_mode: str | None = None,
        num_frames: int | None = None,
        chunk_mode: str = "blend",
        overlap_latents: int = WINDOW_OVERLAP_LATENTS,
        fps: float = DEFAULT_FPS,
        pass_batch_size: int | None = None,
        normalize_normal: bool = False,
        ensemble_size: int | None = None,
        ensemble_mirror: bool | None = None,
        ensemble_shift: bool | None = None,
        basecolor_detail: float | None = None,
        output_type: str = "np",
        output_latent: bool = False,
        progress: bool = True,
        return_dict: bool = True,
    ) -> InverseRenderingOutput | tuple:
        """Estimate G-buffers of one image or clip.

        Args:
            image: PIL image, array or tensor in [0, 1], a list of frames, or an image/video path.
            passes: G-buffer passes (default: basecolor, normal, depth, roughness, metallic).
            num_inference_steps, guidance_scale: sampler settings (official defaults 15 and 0).
            generator: the noise source; the same seed gives the same G-buffers.
            processing_resolution: ``None`` (704x1280, turned to the input's orientation), ``(H, W)``, an int
                (longest side) or 0 (native size); multiples of 16.
            resize_mode: ``fit`` (default: no stretching, padding flagged to the DiT) or ``stretch`` (official).
            num_frames: frames per window (default: the tokenizer's window, 57 = 1 + 8k for Cosmos);
                ``chunk_mode``: ``blend`` (overlapping windows agreeing in latent space), ``first`` (official:
                first window only), ``all`` (official: independent windows); ``overlap_latents``: latent
                frames neighbouring windows share.
            pass_batch_size: passes per DiT batch (default: all for images, 1 for videos).
            normalize_normal: the official soft re-normalisation of predicted normals.
            ensemble_size: samples per pass, combined per pixel (module doc); E times the DiT work.
            ensemble_mirror, ensemble_shift: members that see the input mirrored left-right / moved half a token
                (module doc). None: the model's default (:class:`EnsembleSettings`; 1 and no views for official
                models).
            basecolor_detail: the basecolor takes the input's detail finer than a Gaussian of this many processing
                pixels (module doc); None: the model's default (``tiny``: 2; official models: 0, off).
        """
        passes = tuple(passes or INVERSE_PASSES)
        steps = num_inference_steps or self.default_inference_steps
        guidance = GUIDANCE_SCALE if guidance_scale is None else guidance_scale
        ensemble = self.ensemble_settings(ensemble_size, ensemble_mirror, ensemble_shift)
        self.check_inputs(passes, steps, pass_batch_size, ensemble.size, basecolor_detail)
        device = self._execution_device

        frames = self.image_processor.to_frames(image)  # (N, C, h, w): read once, for every view
        views = ensemble_views(ensemble.size, ensemble.mirror, self.token_size // 2 if ensemble.shift else 0)
        prepared = {  # per mirror flag: the clip at the processing size, its fit and windows
            mirror: self.prepare_frames(
                frames.flip(-1) if mirror else frames,
                processing_resolution,
                resize_mode,
                num_frames,
                chunk_mode,
                overlap_latents,
            )
            for mirror in {view.mirror for view in views}
        }
        _, fit, plan = prepared[False]  # the views share their size, so their fit and windows
        if pass_batch_size is None:
            pass_batch_size = len(passes) if plan.window_frames == 1 else 1
        members = passes * ensemble.size  # member m of pass p at m * len(passes) + p: member 0 is the plain run
        view_of = [(i // len(passes)) % len(views) for i in range(len(members))]
        padding_mask = self.image_processor.padding_mask(fit, device)
        noise: list[torch.Tensor] = []
        latents: list[list[torch.Tensor]] = [[] for _ in members]
        for v, view in enumerate(views):
            video = translate(prepared[view.mirror][0], view.shift)  # (1, 3, N, H, W)
            rgb_latents = encode_windows(self.tokenizer, video, plan, device)
            if not noise:  # the plain view's shape: every view has it
                noise = self.prepare_latents(tuple(rgb_latents[0].shape), plan, len(members), generator, device)
            chosen = [i for i in range(len(members)) if view_of[i] == v]
            sampled = self.denoise(
                rgb_latents,
                [members[i] for i in chosen],
                [noise[i] for i in chosen],
                plan,
                None if padding_mask is None else translate(padding_mask, view.shift),
                fps,
                steps,
                guidance,
                pass_batch_size,
                progress,
            )
            for i, windows in zip(chosen, sampled, strict=True):
                latents[i] = windows
        gbuffers, uncertainty = {}, {}
        for p, name in enumerate(passes):
            samples = []
            for i in range(p, len(members), len(passes)):
                view = views[view_of[i]]
                clip = translate_back(decode_windows(self.tokenizer, latents[i], plan), view.shift)  # (1, 3, N, H, W)
                sample = self.postprocess(name, clip, fit, normalize_normal)  # (N, C, h, w)
                samples.append(mirror_pass(name, sample) if view.mirror else sample)
            if ensemble.size > 1:
                samples[0], spread = self.ensemble(name, torch.stack(samples))
                uncertainty[name] = to_output(spread, output_type)
            if name == "basecolor":  # (N, 3, h, w) under the input's (N, C, h, w) detail; grey input: C = 1
                samples[0] = self.add_input_detail(samples[0], frames, self.detail_sigma(basecolor_detail, fit))
            gbuffers[name] = to_output(samples[0], output_type)  # numpy: off the GPU before the next decode
        self.maybe_free_model_hooks()
        out_latents = dict(zip(passes, latents, strict=False)) if output_latent else None
        if not return_dict:
            return gbuffers, out_latents
        return InverseRenderingOutput(gbuffers=gbuffers, latents=out_latents, uncertainty=uncertainty or None)
