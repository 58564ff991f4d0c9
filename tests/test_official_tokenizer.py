"""Cosmos tokenizer: parity with the official wrapper (every ``tokenizer_*.io.safetensors`` fixture), key layout
against the 720p manifest, and the wrapper's own contract (strict loading, frame counts, save/load).

Fixture sets are found by name: ``<stem>.io.safetensors`` with ``<stem>.encoder.safetensors`` /
``<stem>.decoder.safetensors`` beside it; configs, chunk duration and cases come from the files.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKLCosmos

from conftest import assert_close, fixture_files, params, read_fixture
from diffusion_renderer.checkpoints.keys import TOKENIZER_IGNORED, official_to_tokenizer_key, vae_key_to_official
from diffusion_renderer.models.tokenizer import (
    CV8X8X8_720P_CONFIG,
    CosmosTokenizer,
    LatentTokenizer,
    official_tokenizer_to_vae_config,
)

TOKENIZER_IO = fixture_files("tokenizer_*.io.safetensors")
MANIFESTS = fixture_files("manifest_tokenizer_*.json")
TINY = {**CV8X8X8_720P_CONFIG, "channels": 8}
NUM_UP = len(TINY["channels_mult"])


def sibling(io_path: Path, part: str) -> Path:
    stem = io_path.name.removesuffix(".io.safetensors")
    return io_path.with_name(f"{stem}.{part}.safetensors")


def fixture_tokenizer(io_path: Path) -> tuple[CosmosTokenizer, dict[str, torch.Tensor], float]:
    """The tokenizer the fixture was made with (its weights, fake stats and wrapper settings), and tolerance."""
    io, meta = read_fixture(io_path)
    encoder, _ = read_fixture(sibling(io_path, "encoder"))
    decoder, _ = read_fixture(sibling(io_path, "decoder"))
    wrapper = meta["wrapper_config"]
    bf16 = bool(wrapper["video_vae"].get("is_bf16") or wrapper["image_vae"].get("is_bf16"))
    dtype = torch.bfloat16 if bf16 else torch.float32
    tokenizer = CosmosTokenizer.from_official_state_dicts(
        encoder,
        decoder,
        (io["fake_mean_std.video_mean"], io["fake_mean_std.video_std"]),
        (io["fake_mean_std.image_mean"], io["fake_mean_std.image_std"]),
        meta["tokenizer_config"],
        pixel_chunk_duration=wrapper["video_vae"]["pixel_chunk_duration"],
        sigma_data=meta["sigma_data"],
        dtype=dtype,
        stats_dtype=dtype,
    )
    # 1e-4 is the float32 parity tolerance; bf16 fixtures (none yet) get a bf16-sized one.
    return tokenizer, io, 5e-2 if bf16 else 1e-4


@pytest.mark.official
@pytest.mark.parametrize("stream", [None, 1, 2], ids=["whole", "stream1", "stream2"])
@pytest.mark.parametrize("io_path", params(TOKENIZER_IO))
def test_official_tokenizer_parity(io_path: Path, stream: int | None) -> None:
    """The wrapper matches the official outputs whole and streamed (``stream`` latent frames at a time)."""
    tokenizer, io, tol = fixture_tokenizer(io_path)
    tokenizer.encode_stream_frames = tokenizer.decode_stream_frames = stream
    vae = tokenizer.vae
    prefixes = sorted(k.removesuffix(".latent_raw") for k in io if k.endswith(".latent_raw"))
    assert prefixes, f"{io_path.name}: no '<case>.latent_raw' tensors"
    for prefix in prefixes:
        x = io[prefix].to(tokenizer.dtype)  # (B, 3, T, H, W)

        def check(name: str, compute, prefix=prefix) -> None:
            key = f"{prefix}.{name}"
            if key in io:
                with torch.no_grad():
                    actual = compute()
                assert_close(actual.float(), io[key], f"{io_path.name}:{key}", tol)

        # Internals (only where the fixture has them), raw network, applied stats, then the full wrapper.
        check("patcher3d_output", lambda x=x: vae.encoder.patch_embed(x))
        check("encoder_output", lambda x=x: vae.encoder(x))
        check("latent_raw", lambda x=x: vae.encode(x).latent_dist.mode())
        check("decoded_raw", lambda k=f"{prefix}.latent_raw": vae.decode(io[k].to(tokenizer.dtype)).sample)
        check("latent_mean_applied", lambda x=x: tokenizer.latent_stats(x.shape[2])[0])
        check("latent_std_applied", lambda x=x: tokenizer.latent_stats(x.shape[2])[1])
        check("model_latent", lambda p=prefix: tokenizer.encode(io[p]))
        check("model_decoded", lambda k=f"{prefix}.model_latent": tokenizer.decode(io[k]))


@pytest.mark.official
@pytest.mark.parametrize("manifest_path", params(MANIFESTS))
def test_official_tokenizer_keys_and_shapes_match_manifest(manifest_path: Path) -> None:
    manifest = json.loads(manifest_path.read_text())
    config = manifest["config"]
    with torch.device("meta"):
        vae = AutoencoderKLCosmos(**official_tokenizer_to_vae_config(config))
    num_up = len(config["channels_mult"])
    entries = manifest["encoder_jit_state_dict"] + manifest["decoder_jit_state_dict"]
    official = {e["key"]: tuple(e["shape"]) for e in entries if not TOKENIZER_IGNORED.search(e["key"])}
    ignored = {e["key"] for e in entries} - set(official)
    assert ignored <= {
        f"{p}.{b}"
        for p in ("encoder.patcher3d", "decoder.unpatcher3d")
        for b in ("wavelets", "_arange", "patch_size_buffer")
    }
    ours = {k: tuple(v.shape) for k, v in vae.state_dict().items()}
    # both directions of the key map, shapes included
    assert {vae_key_to_official(k, num_up): s for k, s in ours.items()} == official
    assert {official_to_tokenizer_key(k, num_up): s for k, s in official.items()} == ours
    if "CV8x8x8-720p" in manifest.get("model", ""):
        assert config == CV8X8X8_720P_CONFIG


# ------------------------------------------------------------------------------ without fixtures


def official_state_dicts(tokenizer: CosmosTokenizer) -> tuple[dict, dict]:
    """Our weights under the official encoder.jit / decoder.jit key names."""
    state_dict = {vae_key_to_official(k, NUM_UP): v for k, v in tokenizer.vae.state_dict().items()}
    encoder = {k: v for k, v in state_dict.items() if k.startswith(("encoder.", "quant_conv."))}
    decoder = {k: v for k, v in state_dict.items() if k not in encoder}
    return encoder, decoder


def random_stats_tokenizer(pixel_chunk_duration: int = 9, **kwargs) -> CosmosTokenizer:
    """Tiny random network with non-trivial statistics."""
    base = CosmosTokenizer.random(TINY, seed=3, pixel_chunk_duration=pixel_chunk_duration)
    g = torch.Generator().manual_seed(4)
    return CosmosTokenizer(
        base.vae,
        torch.randn(16, 5, generator=g),
        torch.rand(16, 5, generator=g) + 0.5,
        torch.randn(16, generator=g),
        torch.rand(16, generator=g) + 0.5,
        pixel_chunk_duration=pixel_chunk_duration,
        **kwargs,
    )


def test_720p_config_is_diffusers_default_architecture() -> None:
    """diffusers' defaults are the CV8x8x8 network (research notes §2.3); the derived config must agree."""
    cfg = official_tokenizer_to_vae_config(CV8X8X8_720P_CONFIG)
    defaults = inspect.signature(AutoencoderKLCosmos.__init__).parameters
    for name, value in cfg.items():
        if name not in ("latents_mean", "latents_std"):
            assert value == defaults[name].default, name


@pytest.mark.parametrize(
    "change",
    [
        {"formulation": "VAE"},
        {"encoder": "ResNet"},
        {"decoder": "ResNet"},
        {"z_factor": 2},
        {"z_channels": 8},
        {"num_groups": 32},
        {"legacy_mode": True},
        {"patch_method": "rearrange"},
        {"temporal_compression": 32},
        {"spatial_compression": 6},
        {"attn_resolutions": [64]},
        {"embedding_dim": 6},
    ],
    ids=lambda change: next(iter(change)),
)
def test_unreproducible_configs_are_refused(change: dict) -> None:
    with pytest.raises(ValueError, match="tokenizer config"):
        official_tokenizer_to_vae_config({**CV8X8X8_720P_CONFIG, **change})


def test_official_state_dicts_round_trip_and_strict_errors() -> None:
    source = random_stats_tokenizer()
    encoder, decoder = official_state_dicts(source)
    stats = ((source.video_mean, source.video_std), (source.image_mean, source.image_std))
    loaded = CosmosTokenizer.from_official_state_dicts(encoder, decoder, *stats, TINY, pixel_chunk_duration=9)
    x = torch.rand(1, 3, 9, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert torch.equal(loaded.encode(x), source.encode(x))

    del encoder["encoder.conv_out.1.conv3d.weight"]
    encoder["encoder.surprise.weight"] = torch.zeros(1)
    decoder["decoder.conv_in.0.conv3d.weight"] = torch.zeros(3, 3)
    encoder["encoder.patcher3d.patch_size_buffer"] = torch.tensor([2], dtype=torch.int32)
    with pytest.raises(ValueError) as info:
        CosmosTokenizer.from_official_state_dicts(encoder, decoder, *stats, TINY, pixel_chunk_duration=9)
    message = str(info.value)
    assert "\n" not in message
    assert "1 missing (encoder.conv_out.1.conv3d.weight)" in message
    assert "1 unexpected (encoder.surprise.weight)" in message
    assert "decoder.conv_in.0.conv3d.weight: file [3, 3] vs model [32, 16, 1, 3, 3]" in message
    assert "encoder.patcher3d.patch_size_buffer: constant" in message


def test_frame_counts() -> None:
    tokenizer = CosmosTokenizer.random(TINY, seed=0, pixel_chunk_duration=17)  # 3 latent frames per chunk
    assert isinstance(tokenizer, LatentTokenizer)
    for frames, latent in ((1, 1), (9, 2), (17, 3), (34, 6), (51, 9)):
        assert tokenizer.latent_shape(frames, 16, 24) == (latent, 2, 3)
    for frames in (0, 2, 8, 16, 18, 25, 35):
        with pytest.raises(ValueError, match=r"allowed: 1, a multiple of 17, or 8·n\+1 below 17"):
            tokenizer.latent_shape(frames, 16, 16)
    with pytest.raises(ValueError, match="allowed"):
        tokenizer.encode(torch.zeros(1, 3, 18, 16, 16))
    with pytest.raises(ValueError, match="multiples of 8"):
        tokenizer.latent_shape(17, 12, 16)
    with pytest.raises(ValueError, match="allowed: 1, a multiple of 3, or fewer than 3"):
        tokenizer.decode(torch.zeros(1, 16, 4, 2, 2))
    with pytest.raises(ValueError, match="pixel_chunk_duration"):
        CosmosTokenizer.random(TINY, pixel_chunk_duration=10)


@pytest.mark.parametrize("frames", [1, 9, 18], ids=["image", "one-chunk", "two-chunks"])
def test_encode_decode_shapes(frames: int) -> None:
    tokenizer = random_stats_tokenizer()
    x = torch.rand(2, 3, frames, 16, 24, generator=torch.Generator().manual_seed(1)) * 2 - 1
    z = tokenizer.encode(x)
    assert z.shape == (2, 16, *tokenizer.latent_shape(frames, 16, 24))
    out = tokenizer.decode(z)
    assert out.shape == x.shape and out.dtype == x.dtype and torch.isfinite(out).all()
    if frames > 9:  # chunks are encoded independently
        assert torch.equal(z[:, :, :2], tokenizer.encode(x[:, :, :9]))


@pytest.mark.parametrize("frames", [1, 9, 18], ids=["image", "one-chunk", "two-chunks"])
def test_a_still_clip_encodes_from_its_one_frame(frames: int) -> None:
    """A fixed light's conditions: one frame's encode gives the repeated frame's latents (per-frame stats)."""
    tokenizer = random_stats_tokenizer()
    frame = torch.rand(2, 3, 1, 16, 24, generator=torch.Generator().manual_seed(3)) * 2 - 1
    clip = tokenizer.encode(frame.expand(-1, -1, frames, -1, -1))
    still = tokenizer.encode_still(frame, frames)
    assert still.shape == clip.shape
    torch.testing.assert_close(still, clip, atol=1e-5, rtol=1e-5)
    if frames > 1:
        assert not torch.allclose(still[:, :, 0], still[:, :, 1])  # each latent frame has its own statistics
    with pytest.raises(ValueError, match="one frame"):
        tokenizer.encode_still(frame.expand(-1, -1, 9, -1, -1), 9)


def test_save_pretrained_round_trip(tmp_path: Path) -> None:
    tokenizer = random_stats_tokenizer(stats_dtype=torch.bfloat16)
    tokenizer.save_pretrained(tmp_path / "tok")
    files = {p.relative_to(tmp_path / "tok").as_posix() for p in (tmp_path / "tok").rglob("*") if p.is_file()}
    assert all(f.endswith((".json", ".safetensors")) for f in files), files  # nothing pickled
    loaded = CosmosTokenizer.from_pretrained(tmp_path / "tok")
    assert (loaded.pixel_chunk_duration, loaded.sigma_data, loaded.stats_dtype, loaded.dtype) == (
        9,
        0.5,
        torch.bfloat16,
        torch.float32,
    )
    x = torch.rand(1, 3, 9, 16, 16, generator=torch.Generator().manual_seed(2)) * 2 - 1
    z = tokenizer.encode(x)
    assert torch.equal(loaded.encode(x), z)
    assert torch.equal(loaded.decode(z), tokenizer.decode(z))


def test_random_is_seeded_and_compute_dtype_keeps_io_dtype() -> None:
    a, b, c = (CosmosTokenizer.random(TINY, seed=s) for s in (0, 0, 1))
    sd_a, sd_b, sd_c = (t.vae.state_dict() for t in (a, b, c))
    assert all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
    assert not all(torch.equal(sd_a[k], sd_c[k]) for k in sd_a)
    # float64 stands in for bf16 here: CPU avg_pool3d has no bf16 kernel (the official bf16 runs on GPU).
    a.to(dtype=torch.float64)
    assert a.dtype == torch.float64 and a.stats_dtype == torch.float32
    z = a.encode(torch.zeros(1, 3, 1, 16, 16))
    assert z.dtype == torch.float32 and a.decode(z).dtype == torch.float32
