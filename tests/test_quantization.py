"""int4 renderer files, quantisation-aware training, never-read tensors and grown models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffusion_renderer.checkpoints.quantization import (
    INT4_GROUP,
    dequantize_groups_int4,
    fake_quantize,
    int4_eligible,
    quantize_groups_int4,
    stored_value,
)
from diffusion_renderer.checkpoints.renderer_file import (
    load_renderer_state,
    never_read,
    read_renderer_file,
    save_renderer_file,
)
from diffusion_renderer.io.tagged_safetensors import read_tagged
from diffusion_renderer.models.space_to_depth import SpaceToDepthTokenizer
from diffusion_renderer.models.specs import SHIPPED_DIR, load_model, random_transformer
from diffusion_renderer.training.frames import FrameBank
from diffusion_renderer.training.qat import MASTER_SUFFIX, enable_qat, plain_state
from diffusion_renderer.training.trainer import TrainConfig, Trainer, adapt_to_config
from test_models import tiny_inputs
from test_training import CLIPS, small_config, synthetic_clip


def save_model(path, model, role: str, storage: str):
    return save_renderer_file(
        path,
        model.state_dict(),
        role=role,
        dit_config=dict(model.config),
        tokenizer_config=SpaceToDepthTokenizer().config(),
        storage=storage,
    )


def model_output(model: torch.nn.Module, role: str, seed: int = 1) -> torch.Tensor:
    """The DiT's raw output on a fixed random 1-frame 4 x 4-token input."""
    g = torch.Generator().manual_seed(seed)
    channels = model.config.out_channels
    x = torch.randn(1, channels, 1, 4, 4, generator=g)
    condition = torch.randn(1, model.condition_channels, 1, 4, 4, generator=g)
    kwargs = {"context_index": torch.tensor([[1]])} if role == "inverse" else {}
    with torch.no_grad():
        return model.eval()(x, torch.tensor([0.3]), latent_condition=condition, **kwargs).sample


@pytest.fixture(scope="module")
def bank() -> FrameBank:
    rng = np.random.default_rng(0)
    clips = [synthetic_clip(rng) for _ in range(CLIPS)]
    return FrameBank({k: torch.stack([c[k] for c in clips]) for k in clips[0]}, [f"c{i}" for i in range(CLIPS)])


# ----------------------------------------------------------------------------------------------- int4 groups


def test_int4_groups_error_bound_packing_and_exact_restorage():
    weight = torch.randn(48, 4 * INT4_GROUP) * torch.logspace(-3, 1, 4 * 48).reshape(48, 4, 1).repeat_interleave(
        INT4_GROUP, 2
    ).flatten(1)  # groups of very different scales
    packed, scale = quantize_groups_int4(weight)
    assert packed.dtype == torch.uint8 and packed.shape == (48, 2 * INT4_GROUP)
    assert scale.dtype == torch.float16 and scale.shape == (48, 4)
    back = dequantize_groups_int4(packed, scale)
    groups = weight.reshape(48, 4, INT4_GROUP)
    error = (back.reshape(48, 4, INT4_GROUP) - groups).abs().amax(2)
    assert (error <= groups.abs().amax(2) / 14 * 1.01 + 1e-7).all()  # half a level of 15
    assert len(torch.unique(back.reshape(48, 4, INT4_GROUP)[0, 0])) <= 15
    again = quantize_groups_int4(back)
    assert torch.equal(again[0], packed) and torch.equal(again[1], scale)  # re-storage is exact
    assert int4_eligible(weight) and not int4_eligible(torch.randn(64, 100)) and not int4_eligible(torch.randn(64))
    with pytest.raises(ValueError, match="multiple of 64"):
        quantize_groups_int4(torch.randn(128, 100))


def test_fake_quantize_is_the_files_weight_with_a_straight_through_gradient():
    weight = torch.randn(32, 2 * INT4_GROUP, requires_grad=True)
    fake = fake_quantize(weight, "int4")
    assert torch.equal(fake.detach(), dequantize_groups_int4(*quantize_groups_int4(weight)))
    (fake * torch.arange(fake.numel()).reshape(fake.shape)).sum().backward()
    assert torch.equal(weight.grad, torch.arange(fake.numel()).reshape(fake.shape).float())


def test_int4_file_is_half_the_int8_file_and_loads(tmp_path):
    model = random_transformer("inverse-small", seed=2)
    sizes = {}
    for storage in ("int8", "int4"):
        path = save_model(tmp_path / f"{storage}.safetensors", model, "inverse", storage)
        sizes[storage] = path.stat().st_size
        state, meta = read_renderer_file(path)
        assert meta["storage"] == storage and set(state) == set(model.state_dict())
    assert sizes["int4"] < 0.65 * sizes["int8"]  # the attention and MLP matrices (9/10 of the weights) at 0.53
    tensors, _ = read_tagged(tmp_path / "int4.safetensors", "diffusion_renderer.RendererFile/1", "file", ValueError)
    assert tensors["transformer_blocks.0.ff.net.0.proj.weight"].dtype == torch.uint8  # (768, 192): int4 groups
    assert tensors["patch_embed.proj.weight"].dtype == torch.int8  # 385 columns: int8 rows
    loaded = load_model(str(tmp_path / "int4.safetensors"), "inverse").transformer
    assert torch.isfinite(model_output(loaded, "inverse")).all()


# ----------------------------------------------------------------------------------------- never-read tensors


def test_forward_files_leave_out_the_cross_attention_and_compute_the_same(tmp_path):
    model = random_transformer("forward-small", seed=3)
    dropped = [name for name in model.state_dict() if never_read(name, dict(model.config))]
    assert dropped and all(".attn2." in name or ".norm2." in name for name in dropped)
    path = save_model(tmp_path / "forward.safetensors", model, "forward", "float32")
    state, _ = read_renderer_file(path)
    assert not set(dropped) & set(state)
    loaded = load_model(str(path), "forward").transformer
    assert all(loaded.state_dict()[name].abs().sum() == 0 for name in dropped)
    assert torch.equal(model_output(model, "forward"), model_output(loaded, "forward"))
    inverse = random_transformer("inverse-small", seed=3)  # its cross-attention reads the pass's embedding
    assert not any(never_read(name, dict(inverse.config)) for name in inverse.state_dict())
    with pytest.raises(RuntimeError, match="Missing"):
        load_renderer_state(inverse, {k: v for k, v in inverse.state_dict().items() if ".attn2." not in k})


# ------------------------------------------------------------------------------------------------ growth


@pytest.mark.parametrize(
    ("role", "shallow", "deep"),
    [("inverse", "small", "small-deep"), ("forward", "medium-residual", "medium-deep-residual")],
)
def test_grown_model_computes_what_it_did(role, shallow, deep):
    model = random_transformer(f"{role}-{shallow}", seed=5)
    blocks = len(model.transformer_blocks)
    grown = adapt_to_config(model, TrainConfig(role=role, model_config=deep))
    assert len(grown.transformer_blocks) == 2 * blocks
    assert torch.equal(model_output(model, role), model_output(grown, role))
    copies = [bool(block.ff.net[2].weight.abs().sum() == 0) for block in grown.transformer_blocks]
    assert copies == [False, True] * blocks  # each block, then its copy that adds nothing yet
    assert adapt_to_config(grown, TrainConfig(role=role, model_config=shallow)) is grown  # never shrinks


# ---------------------------------------------------------------------------------------------------- QAT


def test_qat_trains_through_the_int4_weights_and_writes_them_exactly(bank, tmp_path):
    trainer = Trainer(small_config("inverse", steps=3, qat="int4"), tmp_path, bank, progress=False)
    names = [n for n, _ in trainer.model.named_parameters() if n.endswith(MASTER_SUFFIX)]
    assert names and all(n.endswith(".weight" + MASTER_SUFFIX) for n in names)
    trainer.fit()
    _, meta = read_renderer_file(tmp_path / "inverse.safetensors")
    assert meta["storage"] == "int4" and meta["record"]["train_config"]["qat"] == "int4"
    loaded = load_model(str(tmp_path), "inverse").transformer
    assert torch.equal(model_output(trainer.ema.module, "inverse"), model_output(loaded, "inverse"))
    # the master weights are float, between the levels: the quantised module computes something else
    float_state = plain_state(trainer.ema.module.state_dict())
    plain = random_transformer("inverse-small", seed=0)
    plain.load_state_dict(float_state)
    assert not torch.equal(model_output(plain, "inverse"), model_output(loaded, "inverse"))


def test_qat_resumes_exactly_and_from_a_float_run(bank, tmp_path):
    config = small_config("inverse", steps=4, qat="int4")
    straight = Trainer(config, tmp_path / "a", bank, progress=False)
    straight.fit()
    first = Trainer(config, tmp_path / "b", bank, progress=False)
    first.fit(steps=2)
    resumed = Trainer(config, tmp_path / "b", bank, progress=False)
    assert resumed.resume() and resumed.step == 2
    resumed.fit()
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    float_run = Trainer(small_config("inverse", steps=2), tmp_path / "c", bank, progress=False)
    float_run.fit()
    under_qat = Trainer(config, tmp_path / "c", bank, progress=False)
    assert under_qat.resume() and under_qat.step == 2
    for name, value in plain_state(under_qat.model.state_dict()).items():
        assert torch.equal(value, float_run.model.state_dict()[name]), name


def test_qat_rounds_each_parameter_as_the_int4_file_stores_it():
    model = random_transformer("forward-small", seed=0)
    kinds = enable_qat(model, "int4")
    assert kinds["transformer_blocks.0.attn1.to_q.weight"] == "int4"
    assert kinds["patch_embed.proj.weight"] == "int8"  # 8 x 193 + 1 columns: no multiple of the group
    assert kinds["transformer_blocks.0.norm1.linear_2.weight"] == "int8"  # 32 columns
    assert kinds["transformer_blocks.0.norm1.linear_1.weight"] == "int8"  # the timestep path: int8 rows
    assert kinds["time_embed.t_embedder.linear_1.weight"] == kinds["proj_out.weight"] == "int8"
    assert kinds["transformer_blocks.0.ff.net.2.weight"] == "int4"
    assert kinds["transformer_blocks.0.attn1.norm_q.weight"] == "float16"  # 1-D
    assert not any(".attn2." in n or ".norm2." in n for n in kinds)  # never read
    to_q = model.transformer_blocks[0].attn1.to_q
    master = to_q.weight_qat_master
    assert torch.equal(to_q.weight, stored_value(master.detach(), "int4").to(master.dtype))  # computes rounded
    assert not torch.equal(to_q.weight, master)
    # one class per (module class, names), shared by every block: torch.compile guards on the class, so compiling
    # one block reuses its graph for the others (with a class per module it recompiled for each)
    blocks = model.transformer_blocks
    assert all(
        type(b.attn1.to_q) is type(to_q) and type(b.norm1.linear_1) is type(blocks[0].norm1.linear_1) for b in blocks
    )
    assert type(to_q).__name__ == "QATLinear" and isinstance(to_q, torch.nn.Linear)
    with pytest.raises(ValueError, match="unknown QAT scheme"):
        enable_qat(model, "int3")


def test_qat_blocks_share_one_compiled_graph():
    """``train --qat int4 --compile-blocks``: every block of the quantised model reuses the first one's graph."""
    model = random_transformer("inverse-small", seed=0)
    kwargs = tiny_inputs(model)
    enable_qat(model, "int4")
    with torch.no_grad():
        reference = model(**kwargs).sample
        model.compile_repeated_blocks(backend="aot_eager")  # the graph capture, without a C++ toolchain
        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()
        torch.testing.assert_close(model(**kwargs).sample, reference, atol=1e-5, rtol=1e-5)
    assert len(model.transformer_blocks) > 1 and torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1


def test_qat_refuses_fsdp(bank):
    with pytest.raises(ValueError, match="FSDP2"):
        Trainer(small_config("inverse", qat="int4", fsdp=True), "unused", bank, progress=False)


def test_train_command_grows_the_shipped_inverse_and_trains_it_for_int4(tmp_path, capsys):
    """``train --init tiny --model-config small-deep --qat int4``: the grown model starts as the shipped one and
    its file is int4, twice the blocks in less than the shipped int8 file's size."""
    from diffusion_renderer.cli.main import main
    from test_training import write_synthetic_data

    write_synthetic_data(tmp_path / "data", seed=4, train=2, val=0)
    args = ["train", "inverse", "--data", str(tmp_path / "data"), "--batch-size", "2", "--clip-frames", "1"]
    args += ["--warmup", "1", "--quiet", "--device", "cpu", "--val-every", "0", "--init", "tiny"]
    out = tmp_path / "deep"
    assert main([*args, "--steps", "0", "--model-config", "small-deep", "--out", str(out)]) == 0
    shipped = load_model("tiny", "inverse").transformer
    grown = load_model(str(out), "inverse").transformer
    assert len(grown.transformer_blocks) == 2 * len(shipped.transformer_blocks)
    record = load_model(str(out), "inverse").record  # the shipped file's inference defaults hold for its fine-tunes
    assert record["default_steps"] == 1 and record["init"] == "tiny"
    shipped_record = load_model("tiny", "inverse").record
    for key in ("default_ensemble", "default_basecolor_detail"):
        assert record[key] == shipped_record[key], key
    torch.testing.assert_close(model_output(grown, "inverse"), model_output(shipped, "inverse"), atol=0, rtol=0)
    assert main([*args, "--steps", "1", "--model-config", "small-deep", "--qat", "int4", "--out", str(out)]) == 0
    _, meta = read_renderer_file(out / "inverse.safetensors")
    assert meta["storage"] == "int4" and meta["dit_config"]["num_layers"] == 12
    shipped_size = (SHIPPED_DIR / "tiny" / "inverse.safetensors").stat().st_size
    assert (out / "inverse.safetensors").stat().st_size < 1.2 * shipped_size
    capsys.readouterr()
    assert main([*args, "--steps", "1", "--qat", "int4", "--lora", "4", "--out", str(tmp_path / "lora")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--qat trains all weights" in err[0]


def test_ship_model_appends_the_run_and_keeps_a_qat_files_int4(tmp_path, capsys):
    """tools/ship_model.py: the candidate's weights in the shipped file's place, its run appended to the shipped
    record with the sums updated, int4 kept for a QAT candidate; a run already shipped is refused in one line."""
    from test_training import load_tool

    tool = load_tool("ship_model")
    shipped_dir = tmp_path / "tiny"
    shipped_dir.mkdir()
    model = random_transformer("inverse-small", seed=1)
    history = {"runs": [{"run": 30, "steps": 100, "minutes": 2.0}], "total_steps": 100, "default_steps": 1,
               "training_minutes_h200": 2.0}  # fmt: skip
    save_renderer_file(shipped_dir / "inverse.safetensors", model.state_dict(), role="inverse",
                       dit_config=dict(model.config), tokenizer_config=SpaceToDepthTokenizer().config(),
                       storage="int8", record=history)  # fmt: skip
    grown = adapt_to_config(model, TrainConfig(role="inverse", model_config="small-deep"))
    trained = {"steps": 40, "clips": 12, "init": "tiny", "train_config": {"lr": 2e-4, "qat": "int4", "seed": 3}}
    candidate = save_renderer_file(tmp_path / "candidate.safetensors", grown.state_dict(), role="inverse",
                                   dit_config=dict(grown.config), tokenizer_config=SpaceToDepthTokenizer().config(),
                                   storage="int4", record=trained)  # fmt: skip
    args = [str(candidate), "--run", "32", "--minutes", "10.5", "--note", "deep", "--shipped-dir", str(shipped_dir)]
    assert tool.main(args) == 0
    state, meta = read_renderer_file(shipped_dir / "inverse.safetensors")
    assert meta["storage"] == "int4" and meta["dit_config"]["num_layers"] == 12
    assert all(torch.equal(state[k], v) for k, v in read_renderer_file(candidate)[0].items())
    record = meta["record"]
    assert [r["run"] for r in record["runs"]] == [30, 32] and record["total_steps"] == 140
    assert record["training_minutes_h200"] == 12.5 and record["default_steps"] == 1
    assert record["runs"][-1] == {"run": 32, "steps": 40, "minutes": 10.5, "note": "deep", "lr": 2e-4, "qat": "int4",
                                  "clips": 12, "init": "tiny"}  # fmt: skip
    assert record["train_config"]["seed"] == 3
    # a record that sums its minutes under the H100 name keeps that name (no second sum beside it)
    history_h100 = {key: value for key, value in history.items() if key != "training_minutes_h200"}
    entry = tool.run_entry({"steps": 5, "train_config": {"off_plane_weight": 4.0}}, 33, 1.5, "weighted")
    assert entry["off_plane_weight"] == 4.0
    summed = tool.shipped_record({**history_h100, "training_minutes_h100": 7.0}, {}, entry)
    assert summed["training_minutes_h100"] == 8.5 and "training_minutes_h200" not in summed
    capsys.readouterr()
    assert tool.main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "run 32 is already in its record" in err[0]
