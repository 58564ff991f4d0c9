"""Temporal streaming of the Cosmos tokenizer (models/causal_streaming.py): the same numbers as one pass.

Random networks of several Cosmos layouts (with and without a temporal resampling level, more levels), clips
split into pieces of every size, batches of two; plus the wrapper's option and the modules' restoration.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
import torch
from diffusers import AutoencoderKLCosmos

from diffusion_renderer.models.causal_streaming import (
    CausalStream,
    decode_streaming,
    encode_streaming,
    latent_pieces,
    pixel_pieces,
)
from diffusion_renderer.models.tokenizer import CV8X8X8_720P_CONFIG, CosmosTokenizer, official_tokenizer_to_vae_config

LAYOUTS: dict[str, dict] = {
    "cv8x8x8": {**CV8X8X8_720P_CONFIG, "channels": 8},
    # patch 4 does all the temporal compression: no temporal down/upsampler
    "cv4x8x8": {**CV8X8X8_720P_CONFIG, "channels": 8, "temporal_compression": 4},
    # two temporal levels
    "cv16x16x16": {
        **CV8X8X8_720P_CONFIG,
        "channels": 8,
        "channels_mult": [2, 4, 4, 4],
        "temporal_compression": 16,
        "spatial_compression": 16,
        "attn_resolutions": [16],  # the mid-block only
    },
}


def random_vae(layout: str, level_attention: bool = False) -> AutoencoderKLCosmos:
    """A default-initialised network; ``level_attention`` adds spatial + causal temporal attention to the second
    down/up level (diffusers builds it; no released Cosmos tokenizer has it, so our loader refuses it)."""
    config = official_tokenizer_to_vae_config(LAYOUTS[layout])
    if level_attention:
        config["attention_resolutions"] = (config["resolution"] // config["patch_size"] // 2,)
    torch.manual_seed(1)
    return AutoencoderKLCosmos(**config).eval()


def relative_max(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("layout", [*LAYOUTS, "cv8x8x8+level-attention"])
def test_streaming_equals_one_pass(layout: str) -> None:
    vae = random_vae(layout.split("+")[0], level_attention="+" in layout)
    c, s = vae.config.temporal_compression_ratio, vae.config.spatial_compression_ratio
    latent_frames = 5
    g = torch.Generator().manual_seed(0)
    pixels = torch.rand(2, 3, 1 + c * (latent_frames - 1), 2 * s, 3 * s, generator=g) * 2 - 1  # (B, 3, T, H, W)
    with torch.no_grad():
        latents = vae.encode(pixels).latent_dist.mode()  # (B, C, 5, 2, 3)
        decoded = vae.decode(latents).sample
        for step in (1, 2, 3, latent_frames, 7):
            streamed = encode_streaming(vae, pixels, step)
            assert streamed.shape == latents.shape
            assert relative_max(streamed, latents) < 1e-5, (layout, step)
            streamed = decode_streaming(vae, latents, step)
            assert streamed.shape == decoded.shape
            assert relative_max(streamed, decoded) < 1e-5, (layout, step)
    assert not any("forward" in vars(m) for m in vae.modules())  # every module has its own forward back


@pytest.mark.parametrize("layout", [*LAYOUTS, "cv8x8x8+level-attention"])
def test_a_still_clip_has_its_frames_latent_everywhere(layout: str) -> None:
    """What ``CosmosTokenizer.encode_still`` rests on: every module maps a clip constant in time to one constant
    in time, so each latent frame of a repeated frame is that frame's own latent."""
    vae = random_vae(layout.split("+")[0], level_attention="+" in layout)
    c, s = vae.config.temporal_compression_ratio, vae.config.spatial_compression_ratio
    frame = torch.rand(1, 3, 1, 2 * s, 3 * s, generator=torch.Generator().manual_seed(4)) * 2 - 1
    with torch.no_grad():
        one = vae.encode(frame).latent_dist.mode()  # (1, C, 1, 2, 3)
        clip = vae.encode(frame.expand(-1, -1, 1 + 3 * c, -1, -1)).latent_dist.mode()  # (1, C, 4, 2, 3)
    assert clip.shape[2] == 4
    assert relative_max(clip, one.expand_as(clip)) < 1e-5, layout


def test_later_pieces_depend_on_earlier_frames() -> None:
    """The state really crosses pieces: changing the first frames changes the last latent frame, streamed or not."""
    tokenizer = CosmosTokenizer.random(LAYOUTS["cv8x8x8"], seed=2, decode_stream_frames=None)
    vae = tokenizer.vae
    pixels = torch.rand(1, 3, 25, 16, 16) * 2 - 1
    changed = pixels.clone()
    changed[:, :, :9] = -changed[:, :, :9]
    with torch.no_grad():
        a, b = encode_streaming(vae, pixels, 1), encode_streaming(vae, changed, 1)
        whole = vae.encode(changed).latent_dist.mode()
    assert relative_max(a[:, :, -1], b[:, :, -1]) > 1e-3  # the last piece saw the first ones
    assert relative_max(b, whole) < 1e-5


def test_tokenizer_option_keeps_the_numbers() -> None:
    g = torch.Generator().manual_seed(3)
    pixels = torch.rand(1, 3, 17, 16, 24, generator=g) * 2 - 1
    whole = CosmosTokenizer.random(LAYOUTS["cv8x8x8"], seed=4, pixel_chunk_duration=17, decode_stream_frames=None)
    streamed = CosmosTokenizer.random(
        LAYOUTS["cv8x8x8"], seed=4, pixel_chunk_duration=17, encode_stream_frames=1, decode_stream_frames=1
    )
    latents = whole.encode(pixels)
    assert relative_max(streamed.encode(pixels), latents) < 1e-5
    assert relative_max(streamed.decode(latents), whole.decode(latents)) < 1e-5
    with pytest.raises(ValueError, match="decode_stream_frames"):
        CosmosTokenizer.random(LAYOUTS["cv8x8x8"], decode_stream_frames=0)


def test_modules_are_restored_after_an_error() -> None:
    vae = CosmosTokenizer.random(LAYOUTS["cv8x8x8"], seed=0).vae
    with pytest.raises(RuntimeError), CausalStream(vae.encoder):
        assert any("forward" in vars(m) for m in vae.encoder.modules())
        vae.encoder(torch.zeros(1, 5, 9, 16, 16))  # wrong channel count
    assert not any("forward" in vars(m) for m in vae.modules())


def test_pieces_tile_the_clip() -> None:
    for frames, c, step in [(57, 8, 2), (57, 8, 1), (57, 8, 8), (9, 8, 3), (1, 8, 2), (33, 4, 3)]:
        pieces = pixel_pieces(frames, c, step)
        assert pieces[0].start == 0 and pieces[-1].stop == frames
        assert all(a.stop == b.start for a, b in itertools.pairwise(pieces))
        assert (pieces[0].stop - 1) % c == 0 and all((p.stop - p.start) % c == 0 for p in pieces[1:])
        latents = latent_pieces((frames - 1) // c + 1, step)
        assert len(latents) == len(pieces)
    with pytest.raises(ValueError, match="8·n \\+ 1"):
        pixel_pieces(10, 8, 2)


def _accelerate_offload(vae: AutoencoderKLCosmos) -> None:
    from accelerate import cpu_offload

    cpu_offload(vae, execution_device=torch.device("cpu"))  # weights on "meta" until a hook brings them


def _group_offload(vae: AutoencoderKLCosmos) -> None:
    vae.enable_group_offload(onload_device=torch.device("cpu"), offload_type="leaf_level")


@pytest.mark.parametrize("install", [_accelerate_offload, _group_offload], ids=["accelerate", "group"])
def test_streaming_runs_inside_offloading_hooks(install: Callable[[AutoencoderKLCosmos], None]) -> None:
    """Offloading hooks wrap each module's forward: streaming replaces the computation inside them, and leaves them
    in place afterwards (a patched ``forward`` would read weights that are not there, then drop the hook)."""
    vae = random_vae("cv8x8x8")
    pixels = torch.rand(1, 3, 25, 16, 16, generator=torch.Generator().manual_seed(5)) * 2 - 1
    with torch.no_grad():
        latents = vae.encode(pixels).latent_dist.mode()
        decoded = vae.decode(latents).sample
        install(vae)
        assert relative_max(encode_streaming(vae, pixels, 1), latents) < 1e-5
        assert relative_max(decode_streaming(vae, latents, 2), decoded) < 1e-5
        assert relative_max(vae.encode(pixels).latent_dist.mode(), latents) < 1e-6  # the hooks still work


def test_contiguous_spatial_attention_keeps_the_outputs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tokenizer's attention processor: diffusers' arithmetic, with inputs SDPA's fused kernels accept."""
    import diffusion_renderer.models.vae_attention as vae_attention

    vae = random_vae("cv8x8x8", level_attention=True)
    pixels = torch.rand(2, 3, 9, 16, 24, generator=torch.Generator().manual_seed(6)) * 2 - 1
    with torch.no_grad():
        reference = vae.decode(vae.encode(pixels).latent_dist.mode()).sample
        seen: list[bool] = []
        sdpa = torch.nn.functional.scaled_dot_product_attention

        def spy(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kwargs: object) -> torch.Tensor:
            seen.append(all(t.is_contiguous() for t in (q, k, v)))
            return sdpa(q, k, v, **kwargs)

        monkeypatch.setattr(vae_attention.F, "scaled_dot_product_attention", spy)
        vae_attention.use_contiguous_attention(vae)
        assert relative_max(vae.decode(vae.encode(pixels).latent_dist.mode()).sample, reference) < 1e-5
    spatial = [
        m
        for m in vae.modules()
        if isinstance(getattr(m, "processor", None), vae_attention.ContiguousSpatialAttnProcessor)
    ]
    assert len(spatial) >= 4 and seen and all(seen)  # encoder and decoder: mid-block + level attention
