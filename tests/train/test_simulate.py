"""``fathom plan --simulate``: the real step on fake tensors counts what the same step allocates for real."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from helpers import REPO, free_port, hang_guard, small_run_config, write_config

from fathom.cli import main
from fathom.config import config_from_dict
from fathom.schedule import plan_phases
from fathom.train.simulate import quantized_bytes, simulate_phase, transformers_config


def _config_dict(model_dir, tmp_path, **train) -> dict:
    cfg = small_run_config(model_dir, [tmp_path], tmp_path / "out", **train)
    cfg["lora"]["dropout"] = 0.05
    return cfg


def _config(model_dir, tmp_path, **train):
    return config_from_dict(_config_dict(model_dir, tmp_path, **train))


def test_the_fake_step_counts_the_bytes_the_real_step_allocates(local_model_dir, tmp_path):
    config = _config(local_model_dir, tmp_path)
    plan = plan_phases(config, 1)[2]  # 256 tokens
    fake = simulate_phase(config, plan, fake=True)
    real = simulate_phase(config, plan, fake=False)
    assert fake.peak_bytes == real.peak_bytes and fake.at_peak == real.at_peak
    assert (fake.peak_op, fake.peak_module, fake.peak_in_backward) == (real.peak_op, real.peak_module, True)

    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_config(transformers_config(config))
    at, lora_tensors = fake.at_peak, 2 * 7 * base.config.num_hidden_layers  # A and B of 7 projections a layer
    assert at["weights"] >= 2 * sum(p.numel() for p in base.parameters())  # the bf16 base, whole
    assert at["optimizer"] == 2 * at["adapter"] + 512 * lora_tensors  # AdamW: two fp32 moments + a step count
    assert at["gradients"] == at["adapter"]  # one fp32 gradient a trainable weight


def test_longer_rows_and_no_checkpointing_cost_activations(local_model_dir, tmp_path):
    config = _config(local_model_dir, tmp_path)
    short, long = plan_phases(config, 1)[1:3]  # 128 and 256 tokens
    at_128, at_256 = simulate_phase(config, short), simulate_phase(config, long)
    assert 1.6 < at_256.at_peak["activations"] / at_128.at_peak["activations"] < 2.4  # linear in the length
    config.model.gradient_checkpointing = False
    without = simulate_phase(config, long)
    assert without.at_peak["activations"] > 1.5 * at_256.at_peak["activations"]


def test_plan_simulate_json_reports_a_peak_per_phase_beside_the_planner(local_model_dir, tmp_path, capsys):
    config = write_config(tmp_path / "c.yaml", small_run_config(local_model_dir, [tmp_path], tmp_path / "out"))
    assert main(["plan", "--config", str(config), "--simulate", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    peaks = [p["simulated_peak_bytes"] for p in summary["phases"]]
    assert len(peaks) == 3 and peaks == sorted(peaks) and all(p > 0 for p in peaks)
    assert set(summary["phases"][0]["simulated_at_peak_gib"]) >= {"weights", "activations", "optimizer"}
    assert "CUDA context" in summary["simulation_note"]
    import io

    from rich.console import Console

    from fathom.reports.plan import print_simulation as _print_simulation

    console = Console(file=io.StringIO(), width=200)
    _print_simulation(console, summary)  # the table `fathom plan --simulate` prints (without a second run)
    table = console.file.getvalue()
    assert "simulated step" in table and "Phase_1c_Long" in table and "mm in the loss" in table  # where: op, module
    assert "planner (tensors)" in table and all(p["planner_tensors_gib"] >= 0 for p in summary["phases"])
    assert all(p["simulated_shards"] == 1 for p in summary["phases"])

    # --world-size with FSDP: one rank's step, sharded over that many
    one_phase = "train.schedule=[{name: Phase_1c_Long, max_seq_length: 256, token_fraction: 1.0}]"
    fsdp = ["--world-size", "2", "train.strategy=fsdp", one_phase]
    assert main(["plan", "--config", str(config), "--simulate", "--json", *fsdp]) == 0
    sharded = json.loads(capsys.readouterr().out)
    assert all(p["simulated_shards"] == 2 for p in sharded["phases"])
    assert "one rank of FSDP over 2" in sharded["simulation_note"]
    optimizer = [p["simulated_at_peak_gib"]["optimizer"] for p in (sharded["phases"][0], summary["phases"][-1])]
    assert optimizer[0] <= optimizer[1]


@pytest.mark.parametrize("bits", [4, 8])
def test_a_quantized_base_is_counted_at_the_bytes_bitsandbytes_stores(local_model_dir, tmp_path, bits):
    """The stand-in layers hold what bitsandbytes' own layers hold; the fake step counts what the real one allocates."""
    bnb = pytest.importorskip("bitsandbytes", reason="comparing with bitsandbytes' layers needs it (fathom[quant])")
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    quant = (
        BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True)
        if bits == 4
        else BitsAndBytesConfig(load_in_8bit=True)
    )
    loaded = AutoModelForCausalLM.from_pretrained(local_model_dir, quantization_config=quant, device_map="cpu")
    layers = [m for m in loaded.modules() if isinstance(m, (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt))]
    assert len(layers) == 7 * loaded.config.num_hidden_layers  # every decoder linear; embeddings and lm_head not
    for layer in layers:
        w = layer.weight
        if bits == 4:
            state = w.quant_state
            parts = (w, state.absmax, state.code, state.offset, state.state2.absmax, state.state2.code)
        else:
            parts = (w, w.SCB)
        assert sum(t.nbytes for t in parts) == quantized_bytes(layer.in_features, layer.out_features, bits)

    config = _config(local_model_dir, tmp_path)
    setattr(config.model, f"load_in_{bits}bit", True)
    plan = plan_phases(config, 1)[1]
    fake = simulate_phase(config, plan, fake=True)
    if bits == 4:  # the same stand-in layers for both widths; one check of fake against real suffices
        real = simulate_phase(config, plan, fake=False)
        assert fake.peak_bytes == real.peak_bytes and fake.at_peak == real.at_peak
    config.model.load_in_4bit = config.model.load_in_8bit = False
    full = simulate_phase(config, plan)
    base = AutoModelForCausalLM.from_config(transformers_config(config))
    linears = [m for m in base.model.layers.modules() if isinstance(m, torch.nn.Linear)]
    saved = sum(2 * m.weight.numel() - quantized_bytes(m.in_features, m.out_features, bits) for m in linears)
    assert abs((full.at_peak["weights"] - fake.at_peak["weights"]) - saved) <= 1024 * len(linears)  # block rounding


def test_offloaded_checkpoints_leave_the_device(local_model_dir, tmp_path):
    config = _config(local_model_dir, tmp_path)
    plan = plan_phases(config, 1)[2]
    deep = transformers_config(config)
    deep.num_hidden_layers = 4  # three layer inputs wait while the last layer is recomputed
    deep.layer_types = [deep.layer_types[0]] * 4
    kept = simulate_phase(config, plan, deep)
    config.train.offload_activations = True
    offloaded = simulate_phase(config, plan, deep)
    assert offloaded.at_peak["offloaded to host"] > 0 and kept.at_peak["offloaded to host"] == 0
    assert offloaded.at_peak["activations"] < kept.at_peak["activations"]
    assert offloaded.peak_bytes < kept.peak_bytes


# A small Qwen2 (4 layers, hidden 512) at 2,048 tokens: seconds to simulate, and every per-token term of
# the planner's formula is exercised (MLP tiles of 512 tokens, dropout, checkpoints, the chunked loss).
SMALL_QWEN2 = dict(
    num_hidden_layers=4, hidden_size=512, intermediate_size=1536, num_attention_heads=8, num_key_value_heads=2,
    head_dim=64, vocab_size=32_000, max_position_embeddings=32_768, tie_word_embeddings=False, use_cache=False,
)  # fmt: skip


@pytest.mark.parametrize(("bits", "offload", "every"), [(16, False, 1), (4, True, 1), (16, False, 2), (16, False, 0)])
def test_every_planner_term_is_within_10_percent_of_the_simulated_one(local_model_dir, tmp_path, bits, offload, every):
    """The planner's terms against the simulated step's live bytes at its peak, by kind: the weights; the
    adapter with its gradients and AdamW state; checkpoints + the recomputed layer (or the loss), which
    the simulation sees as forward activations and backward temporaries. ``every``: train.memory's
    setups: every layer recomputed (1), every other one (2), none (0); the MLP tiled in all."""
    import dataclasses

    from transformers import Qwen2Config

    from fathom.estimate import ModelShape, Options, estimate_memory, hardware_by_key, with_memory

    hf = Qwen2Config(**SMALL_QWEN2)
    config = _config(local_model_dir, tmp_path, micro_batch_size=1, mlp_tile_tokens=512, offload_activations=offload)
    config.model.load_in_4bit = bits == 4
    plan = dataclasses.replace(plan_phases(config, 1)[2], max_seq_length=2048)
    at = simulate_phase(config, plan, hf, memory=(every, offload)).at_peak
    options = Options.from_config(config, hardware_by_key("rtx4090"))
    options = with_memory(dataclasses.replace(options, attention="flash"), every, offload)  # whole rows: no mask
    est = estimate_memory(ModelShape.from_config(hf), options, 2048, gpu_overhead=False)
    pairs = {
        "weights": (est.weights, at["weights"]),
        "adapter": (est.adapter, at["adapter"] + at["gradients"] + at["optimizer"]),
        "activations and loss": (est.activations_and_loss, at["activations"] + at["backward temporaries"]),
    }
    for term, (planned, simulated) in pairs.items():
        assert planned == pytest.approx(simulated, rel=0.10), (
            f"{term}: planner {planned:,.0f}, simulated {simulated:,.0f}"
        )


def test_one_fsdp_rank_is_counted_as_a_real_gloo_run_counts_it(local_model_dir, tmp_path):
    """The simulation's fake process group (collectives that move nothing) against two real processes
    with gloo's collectives on real tensors: rank 0 holds the same bytes at the same peak."""
    cfg = _config_dict(local_model_dir, tmp_path, strategy="fsdp")
    config = config_from_dict(cfg)
    plan = plan_phases(config, 2)[1]
    fake = simulate_phase(config, plan, shards=2)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}"]
    probe = [str(REPO / "tests" / "_fsdp_probe.py"), json.dumps(cfg), "1"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([*torchrun, *probe], capture_output=True, text=True, env=env, timeout=hang_guard())
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == fake.as_dict()

    whole = simulate_phase(config, plan)  # one process, nothing sharded
    assert fake.as_dict()["simulated_shards"] == 2 and whole.shards == 1
    assert fake.at_peak["optimizer"] < 0.7 * whole.at_peak["optimizer"]  # AdamW state: half a rank, + 512-B blocks
    assert fake.at_peak["adapter"] < 0.6 * whole.at_peak["adapter"]


def test_fsdp_cpu_offload_keeps_shards_gradients_and_optimizer_in_host_memory(local_model_dir, tmp_path):
    config = _config(local_model_dir, tmp_path, strategy="fsdp")
    plan = plan_phases(config, 2)[1]
    on_device = simulate_phase(config, plan, shards=2)
    config.train.fsdp_cpu_offload = True
    offloaded = simulate_phase(config, plan, shards=2)
    at = offloaded.at_peak
    assert at["offloaded to host"] > on_device.at_peak["optimizer"] and at["optimizer"] == at["gradients"] == 0
    assert offloaded.peak_bytes < on_device.peak_bytes


@pytest.mark.parametrize("shards", [4])
def test_fsdp_planner_terms_match_one_simulated_rank(local_model_dir, tmp_path, shards):
    """Per rank: the adapter with its gradients and AdamW state within 10%; the weights as the simulation
    holds them (1/N shards, the root gathered whole) plus at most the two layers the planner allows for
    the layer being computed and the one CUDA's all-gather stream prefetches (the simulation runs FSDP2
    without CUDA streams, so it holds one at most)."""
    import dataclasses

    from transformers import Qwen2Config

    from fathom.estimate import ModelShape, Options, estimate_memory

    hf = Qwen2Config(**SMALL_QWEN2)
    shape = ModelShape.from_config(hf)
    config = _config(local_model_dir, tmp_path, micro_batch_size=1, mlp_tile_tokens=512, strategy="fsdp")
    plan = dataclasses.replace(plan_phases(config, shards)[2], max_seq_length=1024)  # weights do not grow with it
    at = simulate_phase(config, plan, hf, shards=shards).at_peak
    options = dataclasses.replace(Options.from_config(config), attention="flash", shards=shards)
    est = estimate_memory(shape, options, 1024, gpu_overhead=False)
    adapter = at["adapter"] + at["gradients"] + at["optimizer"]
    assert est.adapter == pytest.approx(adapter, rel=0.10), (
        f"adapter: planner {est.adapter:,.0f}, simulated {adapter:,.0f}"
    )
    gathered_layer = shape.layer_linear_params * 2  # bf16
    assert 0 <= est.weights - at["weights"] <= 2 * gathered_layer + 64 * 1024, (est.weights, at["weights"])


def test_packed_rows_build_no_t_by_t_tensor_with_fathoms_attention_and_one_with_plain_sdpa(local_model_dir, tmp_path):
    """The simulation of packed rows of short documents: per-document attention holds nothing of T x T size
    and peaks no higher than whole rows; plain SDPA builds the block mask, and peaks higher."""
    config = _config(local_model_dir, tmp_path)
    config.model.attn_implementation = "auto"
    plan = plan_phases(config, 1)[2]
    t = plan.max_seq_length  # 256
    whole = simulate_phase(config, plan)
    packed = simulate_phase(config, plan, documents=[37, 90, 12, 61])
    real = simulate_phase(config, plan, fake=False, documents=[37, 90, 12, 61])
    assert abs(packed.peak_bytes - real.peak_bytes) <= 0.01 * real.peak_bytes  # fake counts what real allocates
    assert packed.square_bytes == 0 and whole.square_bytes == 0
    # no higher but for the allocator's 512-byte rounding of each document's attention output and statistics
    assert packed.peak_bytes <= whole.peak_bytes + 512 * 2 * 2 * 6  # blocks x (output, logsumexp) x rows x parts
    config.model.attn_implementation = "sdpa"
    masked = simulate_phase(config, plan, documents=[37, 90, 12, 61])
    assert masked.square_bytes >= t * t  # the block-diagonal mask
    real_masked = simulate_phase(config, plan, fake=False, documents=[37, 90, 12, 61])
    assert abs(masked.peak_bytes - real_masked.peak_bytes) <= 0.01 * real_masked.peak_bytes
    assert masked.peak_bytes > packed.peak_bytes
