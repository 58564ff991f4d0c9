"""What both rendering pipelines share: their construction, and the window stages (cut a clip into windows,
encode them, decode and re-join them)."""

from __future__ import annotations

import torch
from diffusers import AutoencoderKLCosmos, EDMEulerScheduler

from diffusion_renderer.conventions import NUM_INFERENCE_STEPS
from diffusion_renderer.models.performance import OFFLOAD_MODES
from diffusion_renderer.models.tokenizer import LatentTokenizer
from diffusion_renderer.models.transformer_diffusion_renderer import DiffusionRendererTransformer3DModel
from diffusion_renderer.pipelines.image_processor import DiffusionRendererImageProcessor
from diffusion_renderer.pipelines.sampling import make_scheduler
from diffusion_renderer.pipelines.windows import TemporalPlan, blend_frames, plan_windows


class RendererPipelineMixin:
    """Components of a rendering pipeline (mixed into a ``DiffusionPipeline``).

    ``transformer`` (the DiT of the pipeline's ``role``), ``vae`` (the Cosmos tokenizer network, registered so
    diffusers' offloading manages it; None for a tokenizer without weights) and ``scheduler``; ``tokenizer``
    wraps ``vae`` with the latent normalisation and is what the stages call.
    """

    role: str
    model_cpu_offload_seq = "vae->transformer"
    default_inference_steps: int = NUM_INFERENCE_STEPS  # a trained model may record its own (see from_model)

    def __init__(
        self,
        transformer: DiffusionRendererTransformer3DModel,
        vae: AutoencoderKLCosmos | None,
        scheduler: EDMEulerScheduler,
        tokenizer: LatentTokenizer | None = None,
    ) -> None:
        super().__init__()  # DiffusionPipeline's, next in the MRO
        if tokenizer is None:
            raise ValueError("pass `tokenizer` (the latent normalisation around `vae`)")
        self.register_modules(transformer=transformer, vae=vae, scheduler=scheduler)
        self.tokenizer = tokenizer
        self.image_processor = DiffusionRendererImageProcessor(resolution=tokenizer.resolution)

    @classmethod
    def from_model(cls, model):
        """From a :class:`~diffusion_renderer.models.specs.RendererModel` of the pipeline's role."""
        if model.role != cls.role:
            raise ValueError(f"{model.spec}: a {model.role} model cannot run {cls.role} rendering")
        pipe = cls(model.transformer, model.tokenizer.vae, make_scheduler(), tokenizer=model.tokenizer)
        pipe.default_inference_steps = int(model.record.get("default_steps", NUM_INFERENCE_STEPS))
        return pipe

    def enable_offload(self, mode: str, device: torch.device | str) -> None:
        """Where the weights live while the pipeline runs on ``device`` (see ``OFFLOAD_MODES``)."""
        if mode not in OFFLOAD_MODES:
            raise ValueError(f"unknown offload mode {mode!r} (choose from {', '.join(OFFLOAD_MODES)})")
        if mode == "none":
            self.to(device)
        elif mode == "model":
            self.enable_model_cpu_offload(device=device)
        elif mode == "sequential":
            self.enable_sequential_cpu_offload(device=device)
        else:
            self.tokenizer.to(device)  # small; its activations are bounded by streaming
            self.transformer.to("cpu")
            # One block on the GPU at a time, the next one's copy from pinned memory overlapping the compute on a
            # side stream: a video step (about 1.5 s of compute) hides the 14 GB of copies.
            self.transformer.enable_group_offload(
                onload_device=torch.device(device),
                offload_type="block_level",
                num_blocks_per_group=1,
                use_stream=True,
            )

    @property
    def token_size(self) -> int:
        """Processing pixels on a side of one DiT token: the tokenizer's spatial compression times the patch."""
        return self.tokenizer.spatial_compression * int(self.transformer.config.patch_size[-1])

    def plan_windows(self, count: int, num_frames: int | None, chunk_mode: str, overlap_latents: int) -> TemporalPlan:
        """Windows of a ``count``-frame clip in the tokenizer's frame grid (``num_frames`` None: its default)."""
        window = num_frames or self.tokenizer.window_frames
        return plan_windows(count, window, chunk_mode, overlap_latents, self.tokenizer.temporal_compression)


def window_frames(video: torch.Tensor, plan: TemporalPlan, window: int) -> torch.Tensor:
    """(B, C, N, H, W) clip -> (B, C, L, H, W) frames of ``window`` (the last frame repeats past the end)."""
    index = torch.tensor(plan.frame_indices(window), device=video.device)
    return video.index_select(2, index)


def encode_windows(
    tokenizer: LatentTokenizer, video: torch.Tensor, plan: TemporalPlan, device: torch.device
) -> list[torch.Tensor]:
    """(B, 3, N, H, W) in [-1, 1] -> one latent (B, C, T_lat, h, w) per window, on ``device``.

    One sample of one window on ``device`` at a time: a 57-frame 720p window is 0.6 GB in float32. A still video
    (one frame expanded in time, as a fixed light's conditions are) is encoded from its one frame.
    """
    still = video.shape[2] > 1 and video.stride(2) == 0
    latents = []
    for w in range(plan.num_windows):
        if still:
            parts = [tokenizer.encode_still(s[:, :, :1].to(device), plan.window_frames) for s in video.split(1)]
        else:
            parts = [tokenizer.encode(window_frames(s, plan, w).to(device)) for s in video.split(1)]
        latents.append(torch.cat(parts))
    return latents


def decode_windows(tokenizer: LatentTokenizer, latents: list[torch.Tensor], plan: TemporalPlan) -> torch.Tensor:
    """One latent per window -> the clip (B, 3, output_frames, H, W), overlaps cross-faded, float32."""
    return blend_frames(plan, [tokenizer.decode(latent).float() for latent in latents])
