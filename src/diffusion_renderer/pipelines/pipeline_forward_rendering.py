"""Forward rendering: G-buffers + HDR environment map(s) -> relit image or video.

Stages: check inputs -> prepare G-buffers (any aspect ratio, any length) -> encode them per window (once,
shared by every lighting) -> per lighting: project and encode env_ldr / env_log / env_nrm (and, for a model
with the shading hint, shade and encode the split-sum hint), denoise, decode and join the windows ->
postprocess to [0, 1] at the input size.

G-buffer inputs: float arrays/tensors are in the conventions' ranges (normal and depth [-1, 1], the others
[0, 1]); integer arrays, PIL images and paths are image files, i.e. the [0, 1] encodings of those ranges.
A G-buffer left out becomes a zero latent with mask 0 (official); no lighting (``envmap=None``) leaves the
three lighting conditions out, and the model invents plausible lighting (official ``--use_custom_envmap=False``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from diffusers import DiffusionPipeline

from diffusion_renderer.conventions import (
    DEFAULT_FPS,
    GBUFFER_KEYS,
    GUIDANCE_SCALE,
    SHADING_HINT_KEY,
    WINDOW_OVERLAP_LATENTS,
    display_rgb,
    forward_condition_keys,
    from_model,
    is_valid_fov,
    scale_display,
    to_model,
)
from diffusion_renderer.lighting.envmap import OWN_MODEL_METHOD, EnvironmentConditions, process_environment_map
from diffusion_renderer.pipelines.conditions import assemble_latent_condition
from diffusion_renderer.pipelines.image_processor import (
    FitPlan,
    Resolution,
    collect_gbuffers,
    is_valid_blur,
    smooth_correction,
)
from diffusion_renderer.pipelines.pipeline_output import ForwardRenderingOutput
from diffusion_renderer.pipelines.sampling import ConditionInputs, sample_edm_euler_windows
from diffusion_renderer.pipelines.video_stages import RendererPipelineMixin, decode_windows, encode_windows
from diffusion_renderer.pipelines.windows import TemporalPlan

if TYPE_CHECKING:
    from diffusion_renderer.render.hint import HintCamera

Lighting = np.ndarray | torch.Tensor | EnvironmentConditions | None


class ForwardRenderingPipeline(RendererPipelineMixin, DiffusionPipeline):
    """DiffusionRenderer's forward renderer as a diffusers pipeline (components as the inverse pipeline)."""

    role = "forward"

    @property
    def shading_hint(self) -> int:
        """The version of the split-sum shading hint the DiT takes (this project's models); 0 for none."""
        return int(getattr(self.transformer.config, "shading_hint", 0))

    # ------------------------------------------------------------------------------------------- stages

    def correction_sigma(self, correction_blur: float | None) -> float:
        """Pixels of the low-pass on a hint-residual model's correction (:func:`smooth_correction`): ``None`` gives
        a quarter of a token's block (2 px for 8x8), chosen on the second held-out set (benchmarks/TINY_HISTORY.md);
        0 for every other model, whose output is not hint + correction."""
        if not getattr(self.transformer.config, "hint_residual", False):
            return 0.0
        return self.tokenizer.spatial_compression / 4 if correction_blur is None else float(correction_blur)

    @staticmethod
    def check_inputs(
        gbuffers: Mapping[str, object],
        num_inference_steps: int,
        fov_deg: float | None = None,
        correction_blur: float | None = None,
    ) -> None:
        unknown = sorted(set(gbuffers) - set(GBUFFER_KEYS))
        if unknown:
            raise ValueError(f"unknown G-buffer keys {unknown} (known: {', '.join(GBUFFER_KEYS)})")
        if not any(value is not None for value in gbuffers.values()):
            raise ValueError("no G-buffers given")
        if num_inference_steps < 1:
            raise ValueError("num_inference_steps must be >= 1")
        if fov_deg is not None and not is_valid_fov(fov_deg):
            raise ValueError(f"the field of view must be in (0, 180) degrees, got {fov_deg}")
        if correction_blur is not None and not is_valid_blur(correction_blur):
            raise ValueError(f"correction_blur must be a finite number of pixels >= 0, got {correction_blur}")

    def prepare_gbuffers(
        self,
        gbuffers: Mapping[str, object],
        fixed_frame: int | None,
        processing_resolution: Resolution,
        resize_mode: str | None,
        num_frames: int | None,
        chunk_mode: str,
        overlap_latents: int,
    ) -> tuple[dict[str, torch.Tensor], FitPlan, TemporalPlan]:
        """G-buffers -> {key: (1, 3, N, H, W) model-range video} with the clip's spatial and temporal plans."""
        frames, (count, height, width) = collect_gbuffers(gbuffers, fixed_frame)  # {key: (N, C, h, w)}
        fit = self.image_processor.plan(height, width, processing_resolution, resize_mode)
        plan = self.plan_windows(count, num_frames, chunk_mode, overlap_latents)
        videos = {}
        for key, f in frames.items():
            f = self.image_processor.preprocess(f, fit)  # (N, C, H, W)
            videos[key] = to_model(key, f.permute(1, 0, 2, 3).unsqueeze(0))  # (1, 3, N, H, W)
        return videos, fit, plan

    def prepare_lighting(
        self,
        envmap: Lighting,
        fit: FitPlan,
        plan: TemporalPlan,
        rotate_light: bool,
        light_angle: float,
        envmap_method: str,
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """One lighting -> ({env_ldr, env_log, env_nrm: (1, 3, N, H, W) model-range video}, its (T, H, W, 3)
        camera-frame HDR environment, T = 1 or N, when the model takes the shading hint); ({}, None) for none."""
        if envmap is None:
            return {}, None
        height, width = fit.processing_size
        frames = plan.output_frames
        if isinstance(envmap, EnvironmentConditions):
            env = envmap
        else:
            # a fixed light is the same every frame: project once, repeat
            env = process_environment_map(
                envmap,
                height,
                width,
                frames if rotate_light else 1,
                rotate=rotate_light,
                fixed_angle_deg=light_angle,
                method=envmap_method,
                device=self._execution_device,
            )
        videos = self.lighting_videos(env, fit, plan)
        if not self.shading_hint:
            return videos, None
        if env.env_hdr is None:
            raise ValueError(
                "this model takes the shading hint, which needs the HDR map (EnvironmentConditions.from_hdr)"
            )
        return videos, env.env_hdr

    @staticmethod
    def lighting_videos(env: EnvironmentConditions, fit: FitPlan, plan: TemporalPlan) -> dict[str, torch.Tensor]:
        """{env_ldr, env_log, env_nrm: (1, 3, N, H, W) model-range video} of one lighting's conditions."""
        height, width = fit.processing_size
        frames = plan.output_frames
        videos = {}
        for key in ("env_ldr", "env_log", "env_nrm"):
            value = getattr(env, key)  # (T, H, W, 3)
            if tuple(value.shape[1:3]) != (height, width) or value.shape[0] not in (1, frames):
                raise ValueError(f"{key} is {tuple(value.shape)}, expected ({frames}, {height}, {width}, 3)")
            value = to_model(key, value.permute(3, 0, 1, 2).unsqueeze(0).float())  # (1, 3, T, H, W), T = 1 or N
            videos[key] = value.expand(-1, -1, frames, -1, -1)  # a fixed light stays one frame in memory
        return videos

    def prepare_hint_gbuffers(
        self,
        videos: Mapping[str, torch.Tensor],
        fit: FitPlan,
        fov_deg: float | None = None,
        fitted_shadows: bool = True,
    ) -> tuple[dict[str, torch.Tensor], HintCamera] | None:
        """Model-range G-buffer videos {key: (1, 3, N, H, W)} -> ({key: (N, H, W, C)} in the conventions' ranges,
        the hint's camera), once per call (shared by every lighting); None for a model without the hint.
        ``fov_deg``: the input camera's, when known (seen through the padding ``fit`` adds). ``fitted_shadows``
        False: no shadows through a camera read off the G-buffers (``__call__``)."""
        from diffusion_renderer.render.hint import hint_camera, padded_fov

        if not self.shading_hint:
            return None
        frames = {key: from_model(key, video)[0].permute(1, 2, 3, 0) for key, video in videos.items()}
        known = None if fov_deg is None else padded_fov(fov_deg, fit.resized_size[0], fit.processing_size[0])
        return frames, hint_camera(frames, self.shading_hint, known, fitted_shadows)

    def shade_hint(
        self, hint_gbuffers: tuple[dict[str, torch.Tensor], HintCamera], env_hdr: torch.Tensor
    ) -> torch.Tensor:
        """:meth:`prepare_hint_gbuffers`' output, (T, H, W, 3) HDR -> (N, H, W, 3) linear hint."""
        from diffusion_renderer.render.hint import shading_hint

        frames, camera = hint_gbuffers
        count = next(iter(frames.values())).shape[0]
        if 1 < env_hdr.shape[0] < count:  # chunk_mode "first": frames past the output are encoded, never shown
            env_hdr = torch.cat([env_hdr, env_hdr[-1:].expand(count - env_hdr.shape[0], -1, -1, -1)])
        env_hdr = env_hdr.to(self._execution_device)
        return shading_hint(frames, env_hdr, self.shading_hint, camera=camera)

    @staticmethod
    def hint_video(linear: torch.Tensor) -> torch.Tensor:
        """(N, H, W, 3) linear hint -> its condition video (1, 3, N, H, W), display-encoded like ``rgb``."""
        return to_model(SHADING_HINT_KEY, display_rgb(linear).permute(3, 0, 1, 2).unsqueeze(0))

    def prepare_shading_hint(
        self, hint_gbuffers: tuple[dict[str, torch.Tensor], HintCamera], env_hdr: torch.Tensor
    ) -> torch.Tensor:
        """:meth:`prepare_hint_gbuffers`' output, (T, H, W, 3) HDR -> hint video (1, 3, N, H, W)."""
        return self.hint_video(self.shade_hint(hint_gbuffers, env_hdr))

    @property
    def default_envmap_method(self) -> str:
        """How a map becomes this model's lighting conditions unless told: ``area`` (power-preserving) for the
        package's own models, whose shading hint is as bright as the light it is given (a lamp that point sampling
        missed left the hint, and so the frame, up to a stop too dark); ``cubemap`` for official checkpoints
        (no hint), as they were trained."""
        return OWN_MODEL_METHOD if self.shading_hint else "cubemap"

    @property
    def exposure_level(self) -> float:
        """The hint level a normalising model sees every light at (DiT ``exposure_level``); 0 for other models."""
        return float(getattr(self.transformer.config, "exposure_level", 0.0) or 0.0)

    def exposure_gain(self, hint: torch.Tensor, fit: FitPlan) -> float:
        """The factor on one lighting that brings its (N, H, W, 3) linear hint to the model's level, measured on
        the content (not the padding); 1 for a model without ``exposure_level``."""
        from diffusion_renderer.render.hint import hint_level, normalizing_gain

        if not self.exposure_level:
            return 1.0
        top, bottom, left, right = fit.content_box
        level = hint_level(hint[None, :, top:bottom, left:right], channel_dim=-1)
        return float(normalizing_gain(level, self.exposure_level))

    def prepare_hint(
        self,
        hint_gbuffers: tuple[dict[str, torch.Tensor], HintCamera],
        env_hdr: torch.Tensor,
        env_videos: dict[str, torch.Tensor],
        fit: FitPlan,
        plan: TemporalPlan,
    ) -> float:
        """Shade the hint of one lighting into ``env_videos`` (at the model's level, with the lighting videos
        re-made from the HDR map scaled alike, for a normalising model); returns that scale, the exposure gain."""
        linear = self.shade_hint(hint_gbuffers, env_hdr)  # (N, H, W, 3)
        gain = self.exposure_gain(linear, fit)
        if gain != 1.0:
            env_videos.update(self.lighting_videos(EnvironmentConditions.from_hdr(env_hdr * gain), fit, plan))
            linear = linear * gain
        env_videos[SHADING_HINT_KEY] = self.hint_video(linear)
        return gain

    def encode_conditions(
        self, videos: Mapping[str, torch.Tensor], plan: TemporalPlan
    ) -> dict[str, list[torch.Tensor]]:
        """{key: (1, 3, N, H, W)} -> {key: one (1, C, T_lat, h, w) latent per window}, one key at a time (bounded
        memory: a 57-frame 720p condition is 0.6 GB in float32)."""
        device = self._execution_device
        return {key: encode_windows(self.tokenizer, video, plan, device) for key, video in videos.items()}

    def assemble(
        self, latents: Mapping[str, list[torch.Tensor]], plan: TemporalPlan, padding_mask, fps: float
    ) -> list[ConditionInputs]:
        """Per window, the 8 x (16 + 1) condition channels in the official order (9 with the shading hint)."""
        shape = next(iter(latents.values()))[0].shape
        keys = forward_condition_keys(self.shading_hint)
        conditions = []
        for w in range(plan.num_windows):
            present = {key: windows[w] for key, windows in latents.items()}
            latent = assemble_latent_condition(present, keys, shape)
            conditions.append(ConditionInputs(latent, fps=fps, padding_mask=padding_mask))
        return conditions

    def postprocess(self, clip: torch.Tensor, fit: FitPlan, output_type: str) -> np.ndarray | torch.Tensor:
        """Decoded (1, 3, N, H, W) -> (N, h, w, 3) numpy in [0, 1] (or (N, 3, h, w) tensor)."""
        value = self.image_processor.postprocess(from_model("rgb", clip)[0].permute(1, 0, 2, 3), fit).clamp(0, 1)
        return value if output_type == "pt" else value.permute(0, 2, 3, 1).cpu().numpy()

    # --------------------------------------------------------------------------------------------- call

    @torch.no_grad()
    def __call__(
        self,
        gbuffers: Mapping[str, object],
        envmap: Lighting | Sequence[Lighting] = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        generator: torch.Generator | None = None,
        processing_resolution: Resolution = None,
        resize_mode: str | None = None,
        num_frames: int | None = None,
        chunk_mode: str = "blend",
        overlap_latents: int = WINDOW_OVERLAP_LATENTS,
        fps: float = DEFAULT_FPS,
        rotate_light: bool = False,
        light_angle: float = 0.0,
        fixed_frame: int | None = None,
        envmap_method: str | None = None,
        fov_deg: float | None = None,
        correction_blur: float | None = None,
        fitted_shadows: bool = True,
        output_type: str = "np",
        output_latent: bool = False,
        progress: bool = True,
        return_dict: bool = True,
    ) -> ForwardRenderingOutput | tuple:
        """Render G-buffers under each lighting.

        Args:
            gbuffers: {basecolor, normal, depth, roughness, metallic} -> frames (any subset; see module doc).
            envmap: an (H0, W0, 3) linear HDR equirect (array or tensor), precomputed
                :class:`EnvironmentConditions`, ``None`` (random lighting) or a list of these (one result each).
                A model with ``exposure_level`` sees each lighting scaled so that its hint has that level, its
                conditions re-encoded from ``env_hdr``, and the frame scaled back (``output_latent``: at its level).
            rotate_light: one full turn of the light about the vertical axis over the clip (official
                ``--rotate_light``); ``light_angle``: a fixed rotation in degrees.
            fixed_frame: use this G-buffer frame for every frame (official ``--use_fixed_frame_ind``).
            envmap_method: how a map is projected into the camera's conditions: ``cubemap`` (official
                resampling), ``direct`` (one equirect lookup) or ``area`` (power-preserving); None: the model's
                :attr:`default_envmap_method`.
            fov_deg: the G-buffers' vertical field of view in degrees, when the camera is known. Only models with
                a version-3 shading hint use it (else the hint reads it off the G-buffers, or takes 40 degrees);
                official checkpoints have no camera input.
            correction_blur: for a model that renders the hint plus a correction (``hint_residual``), the sigma
                in processing pixels of a Gaussian low-pass on that correction, which the network makes in 8x8
                blocks (None: 2 px, see :meth:`correction_sigma`; 0: off). Other models ignore it.
            fitted_shadows: for a model with a version-4 hint, whether its shadows may use a camera read off the
                G-buffers when ``fov_deg`` is not given (True, as in training). False suits predicted G-buffers:
                where their planes are clean enough to pass the fit, their depth casts false shadows
                (``benchmarks/TINY_HISTORY.md``, fifteenth session). Other models ignore it.
            Others: as :class:`InverseRenderingPipeline`.
        """
        steps = num_inference_steps or self.default_inference_steps
        guidance = GUIDANCE_SCALE if guidance_scale is None else guidance_scale
        self.check_inputs(gbuffers, steps, fov_deg, correction_blur)
        sigma = self.correction_sigma(correction_blur)
        lightings = list(envmap) if isinstance(envmap, (list, tuple)) else [envmap]
        method = envmap_method or self.default_envmap_method

        videos, fit, plan = self.prepare_gbuffers(
            gbuffers, fixed_frame, processing_resolution, resize_mode, num_frames, chunk_mode, overlap_latents
        )
        gbuffer_latents = self.encode_conditions(videos, plan)  # shared by every lighting
        hint_gbuffers = self.prepare_hint_gbuffers(videos, fit, fov_deg, fitted_shadows)  # shaded under each lighting
        del videos
        padding_mask = self.image_processor.padding_mask(fit, self._execution_device)
        images, all_latents = [], []
        for lighting in lightings:
            # the lighting videos are dropped once encoded: they would sit beside the DiT's activations
            env_videos, env_hdr = self.prepare_lighting(lighting, fit, plan, rotate_light, light_angle, method)
            hint, gain = None, 1.0
            if env_hdr is not None:
                gain = self.prepare_hint(hint_gbuffers, env_hdr, env_videos, fit, plan)
                hint = env_videos[SHADING_HINT_KEY].cpu() if sigma > 0 else None  # off the GPU while it denoises
            latents = {**gbuffer_latents, **self.encode_conditions(env_videos, plan)}
            del env_videos
            conditions = self.assemble(latents, plan, padding_mask, fps)
            samples = sample_edm_euler_windows(
                self.transformer,
                conditions,
                plan,
                tuple(next(iter(gbuffer_latents.values()))[0].shape),  # (1, C, T_lat, h, w)
                num_inference_steps=steps,
                guidance_scale=guidance,
                generator=generator,
                scheduler=self.scheduler,
                progress=progress,
                device=self._execution_device,
            )
            clip = decode_windows(self.tokenizer, samples, plan)
            if hint is not None:
                clip = smooth_correction(clip, hint, sigma)
            if gain != 1.0:  # back from the model's level: the light was scaled by gain, so was the frame
                clip = to_model("rgb", scale_display(from_model("rgb", clip), 1.0 / gain))
            images.append(self.postprocess(clip, fit, output_type))
            all_latents.append(samples)
        self.maybe_free_model_hooks()
        out_latents = all_latents if output_latent else None
        if not return_dict:
            return images, out_latents
        return ForwardRenderingOutput(images=images, latents=out_latents)
