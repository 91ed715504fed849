from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import REPO, hang_guard, small_run_config, write_config

from fathom.cli import main
from fathom.config import load_config
from fathom.estimate import (
    GIB,
    HARDWARE,
    KNOWN_SHAPES,
    ModelShape,
    Options,
    estimate_memory,
    judge,
    memory_candidates,
    memory_setup,
    model_shape,
    with_memory,
)
from fathom.schedule import plan_phases

SHIPPED_7B = REPO / "configs" / "qwen2.5-7b-maritime-32k.yaml"


def test_qwen25_7b_shape_matches_its_published_facts():
    shape = model_shape("Qwen/Qwen2.5-7B")
    assert (shape.num_layers, shape.hidden, shape.intermediate, shape.num_heads, shape.num_kv_heads) == (
        28,
        3584,
        18944,
        28,
        4,
    )
    assert shape.vocab == 152_064 and not shape.tied_embeddings
    assert abs(shape.parameters - 7.6e9) / 7.6e9 < 0.01
    assert model_shape("Qwen/Qwen2.5-7B-Instruct") == shape


def test_shape_from_a_transformers_config():
    from transformers import Qwen2Config

    config = Qwen2Config(
        vocab_size=151_936,
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        tie_word_embeddings=True,
    )
    assert ModelShape.from_config(config) == KNOWN_SHAPES["Qwen/Qwen2.5-0.5B"]


def test_unknown_model_offline_is_a_clear_error(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ValueError, match="cannot read the config of 'no-org/no-model'"):
        model_shape("no-org/no-model")


def test_verdicts_for_the_7b_config():
    config = load_config(SHIPPED_7B, check_paths=False)
    shape = model_shape("Qwen/Qwen2.5-7B")
    phases = plan_phases(config)
    short, long_ = (
        judge(shape, config, HARDWARE["rtx4090"], phases[0]),
        judge(shape, config, HARDWARE["rtx4090"], phases[2]),
    )
    assert short.fits and short.label == "fits"
    # train.memory auto (the default) offloads 32K on 24 GB by itself, in bf16: no quantization needed
    assert long_.fits and long_.memory.offload and long_.memory.chosen and long_.estimate.total <= 24 * 2**30
    manual = load_config(SHIPPED_7B, ["train.memory=manual"], check_paths=False)
    long_ = judge(shape, manual, HARDWARE["rtx4090"], phases[2])
    assert not long_.fits and long_.fixed_estimate is not None and long_.fixed_estimate.total <= 24 * 2**30
    assert long_.fix == ["train.offload_activations=true"]
    assert all(judge(shape, config, HARDWARE["a100-80gb"], p).fits for p in phases)
    # memory grows with the length; time per phase follows the phase's tokens and cost per token
    totals = [judge(shape, manual, HARDWARE["h100-80gb"], p).estimate.total for p in phases]  # one setup
    assert totals == sorted(totals)
    assert (
        judge(shape, config, HARDWARE["h100-80gb"], phases[0]).hours
        < judge(shape, config, HARDWARE["rtx4090"], phases[0]).hours
    )


def test_options_that_save_memory_lower_the_estimate():
    shape = model_shape("Qwen/Qwen2.5-7B")
    base = Options()
    full = estimate_memory(shape, base, 32768).total
    for change in ({"quant_bits": 8}, {"quant_bits": 4}, {"offload_activations": True}, {"lora_dropout": 0.0}):
        assert estimate_memory(shape, Options(**change), 32768).total < full, change
    assert estimate_memory(shape, Options(gradient_checkpointing=False), 32768).total > full
    assert estimate_memory(shape, Options(loss="plain"), 32768).total > full + 20 * 2**30  # the 32K logits
    assert estimate_memory(shape, Options(attention="eager"), 32768).total > full


def test_fsdp_shards_the_weights_and_is_the_first_fix_for_a_base_too_big_for_one_gpu():
    shape = model_shape("Qwen/Qwen2.5-14B")
    one, two = estimate_memory(shape, Options(), 4096), estimate_memory(shape, Options(shards=2), 4096)
    assert two.weights < 0.7 * one.weights and two.adapter == one.adapter / 2  # the root stays gathered
    config = load_config(SHIPPED_7B, ["model.name_or_path=Qwen/Qwen2.5-14B"], check_paths=False)
    verdict = judge(shape, config, HARDWARE["2x3090-ddp"], plan_phases(config, world_size=2)[0])
    assert not verdict.fits and verdict.fix[0] == "train.strategy=fsdp", verdict.fix  # lossless before quantizing
    assert not any("load_in" in fix for fix in verdict.fix)  # sharding and offload suffice: no quantization
    single = judge(shape, config, HARDWARE["rtx4090"], plan_phases(config)[0])
    assert "train.strategy=fsdp" not in single.fix  # nothing to shard over on one GPU
    sharded = load_config(SHIPPED_7B, ["model.name_or_path=Qwen/Qwen2.5-14B", *verdict.fix], check_paths=False)
    assert judge(shape, sharded, HARDWARE["2x3090-ddp"], plan_phases(sharded, world_size=2)[0]).fits


# (vocab, hidden, intermediate, layers, seq, checkpointing, dropout, attention)
CPU_CASES = [  # (a 1K case added nothing the 4K one does not check, and took 10 s)
    (8000, 256, 1024, 4, 4096, True, 0.05, "sdpa"),
    (8000, 256, 1024, 4, 2048, False, 0.0, "sdpa"),
    (151_936, 128, 512, 2, 4096, True, 0.05, "sdpa"),
    (8000, 256, 1024, 4, 2048, True, 0.0, "eager"),
]


@pytest.mark.slow
@pytest.mark.parametrize("case", CPU_CASES, ids=lambda c: f"V{c[0]}-H{c[1]}-L{c[3]}-T{c[4]}-ckpt{int(c[5])}-{c[7]}")
def test_activation_and_loss_estimate_within_30_percent_of_the_measured_cpu_peak(case):
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux /proc to reset and read the peak resident memory")
    vocab, hidden, inter, layers, seq, ckpt, dropout, attn = case
    spec = dict(vocab=vocab, hidden=hidden, inter=inter, layers=layers, seq=seq, ckpt=ckpt, dropout=dropout, attn=attn)
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072")
    proc = subprocess.run(
        [sys.executable, str(REPO / "tests" / "_memory_probe.py"), json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
        timeout=hang_guard(),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    measured = json.loads(proc.stdout.strip().splitlines()[-1])["measured"]
    shape = ModelShape(layers, hidden, inter, 4, 2, hidden // 4, vocab, False, True)
    # the probe trains through PEFT's own LoRA forward, untiled: the formula of that path
    opts = Options(4, gradient_checkpointing=ckpt, lora_dropout=dropout, attention=attn, lean_lora=False, mlp_tile=0)
    estimate = estimate_memory(shape, opts, seq, gpu_overhead=False).activations_and_loss
    assert 0.7 <= estimate / measured <= 1.3, (
        f"estimate {estimate / 2**20:.0f} MiB, measured {measured / 2**20:.0f} MiB"
    )


def test_plan_json_carries_hardware_estimates(capsys):
    assert main(["plan", "--config", str(SHIPPED_7B), "--json", "--gpu", "rtx4090"]) == 0
    out = json.loads(capsys.readouterr().out)
    (hw,) = out["hardware"]
    assert hw["key"] == "rtx4090" and [p["phase"] for p in hw["phases"]] == [
        "Phase_1a_Short",
        "Phase_1b_Medium",
        "Phase_1c_Long",
    ]
    assert hw["phases"][0]["verdict"] == "fits"
    assert hw["phases"][2]["verdict"] == "fits"  # train.memory auto offloads by itself
    assert hw["phases"][2]["memory"]["offload_activations"] and hw["phases"][2]["memory"]["chosen"]
    assert hw["phases"][2]["memory"]["short"] == "recompute all + offload (1.00x)"
    assert out["model_shape"]["parameters"] > 7e9


def test_plan_table_of_all_hardware(capsys):
    assert main(["plan", "--config", str(SHIPPED_7B)]) == 0
    out = capsys.readouterr().out
    for hw in HARDWARE.values():
        assert hw.key in out
    assert "does not fit" in out and "fits with" in out


def test_plan_unknown_gpu_is_one_line(capsys):
    assert main(["plan", "--config", str(SHIPPED_7B), "--gpu", "rtx490"]) == 2
    assert "did you mean 'rtx4090'" in capsys.readouterr().err


@pytest.mark.slow
def test_out_of_memory_stops_with_the_planners_advice_and_keeps_checkpoints(
    tmp_path, local_model_dir, synthetic_corpus, monkeypatch, capsys
):
    import fathom.train.loop as loop

    cfg = small_run_config(local_model_dir, [synthetic_corpus], tmp_path / "run")
    real_loss, calls = loop.causal_lm_loss_sum, {"n": 0}

    def oom_in_phase_two(model, batch, *args):
        calls["n"] += 1
        if batch["input_ids"].shape[1] == 128:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real_loss(model, batch, *args)

    monkeypatch.setattr(loop, "causal_lm_loss_sum", oom_in_phase_two)
    assert main(["train", "--config", str(write_config(tmp_path / "c.yaml", cfg))]) == 1
    err = capsys.readouterr().err
    assert "Phase_1b_Medium: out of GPU memory at max_seq_length 128" in err
    assert "planner estimates" in err and "--resume" in err
    assert (tmp_path / "run" / "Phase_1a_Short" / "adapter_model.safetensors").is_file()
    monkeypatch.setattr(loop, "causal_lm_loss_sum", real_loss)
    assert main(["train", "--config", str(tmp_path / "c.yaml"), "--resume"]) == 0
    assert (tmp_path / "run" / "final_256_model" / "adapter_model.safetensors").is_file()


@pytest.mark.parametrize(
    ("seq_len", "offload", "simulated_gib"),
    [(4096, False, 16.68), (16384, False, 20.67), (32768, False, 24.79), (32768, True, 19.10), (65536, True, 21.59)],
)
def test_the_7b_estimate_is_within_2_percent_of_the_simulated_step(seq_len, offload, simulated_gib):
    # simulated_gib: python -m fathom plan --config configs/qwen2.5-7b-maritime-32k.yaml --simulate (bf16,
    # LoRA r16 dropout 0.05, lean forward, MLP tiles of 8,192, lean norms; 64K with
    # 'train.schedule=[{name: P64, max_seq_length: 65536, token_fraction: 1.0}]' train.offload_activations=true
    # model.rope_scaling=auto); tests/train/test_simulate.py checks that
    # the simulation counts what the same step allocates on real tensors
    estimate = estimate_memory(model_shape("Qwen/Qwen2.5-7B"), Options(offload_activations=offload), seq_len, False)
    assert estimate.total / 2**30 == pytest.approx(simulated_gib, rel=0.02)


def test_memory_auto_takes_the_fastest_setup_that_fits_and_an_explicit_flag_wins():
    """On an H200 the shipped config's 4K phase needs no checkpointing; every faster candidate than the one
    chosen does not fit; auto is faster than all-on; a flag set in the config is never overridden."""
    config = load_config(SHIPPED_7B, check_paths=False)
    shape, h200 = model_shape("Qwen/Qwen2.5-7B"), HARDWARE["h200-141gb"]
    phases = plan_phases(config)
    verdicts = [judge(shape, config, h200, p) for p in phases]
    assert verdicts[0].memory.checkpoint_every == 0 and verdicts[0].memory.speed_vs_all_on > 1.4
    for verdict, phase in zip(verdicts, phases, strict=True):
        assert verdict.fits and verdict.memory.estimated_bytes <= 141 * GIB
        candidates = memory_candidates(shape.num_layers, None, None)
        chosen = candidates.index((verdict.memory.checkpoint_every, verdict.memory.offload))
        opts = Options.from_config(config, h200)
        for every, offload in candidates[:chosen]:
            assert not memory_setup(shape, opts, phase.max_seq_length, 141 * GIB, True, every, offload, True).fits
    manual = load_config(SHIPPED_7B, ["train.memory=manual"], check_paths=False)
    all_on = [judge(shape, manual, h200, p) for p in phases]
    assert all(v.memory.checkpoint_every == 1 and not v.memory.chosen for v in all_on)
    assert sum(v.hours for v in verdicts) < 0.8 * sum(v.hours for v in all_on)
    forced = load_config(SHIPPED_7B, ["model.gradient_checkpointing=true"], check_paths=False)
    assert all(judge(shape, forced, h200, p).memory.checkpoint_every == 1 for p in phases)
    off = load_config(SHIPPED_7B, ["model.gradient_checkpointing=false"], check_paths=False)
    assert judge(shape, off, HARDWARE["rtx4090"], phases[2]).memory.checkpoint_every == 0  # even where it does not fit


def test_memory_candidates_run_from_fastest_to_most_frugal():
    # every 4th layer recomputes 1 of 4, every 3rd and every 2nd both 2 (layers 0 and 2 / 0 and 3): one kept
    assert memory_candidates(4, None, None) == [(0, False), (4, False), (3, False), (1, False), (1, True)]
    assert memory_candidates(4, True, None) == [(1, False), (1, True)]
    assert memory_candidates(4, None, False) == [(0, False), (4, False), (3, False), (1, False)]
    assert memory_candidates(4, None, True) == [(1, True)]
    assert memory_candidates(4, False, True) == [(0, False)]
    # fewer recomputed layers keep more activations: the estimate grows as checkpointing thins out
    shape, opts = KNOWN_SHAPES["Qwen/Qwen2.5-7B"], Options()
    candidates = memory_candidates(28, None, None)
    totals = [estimate_memory(shape, with_memory(opts, e, o), 16384).total for e, o in candidates]
    assert totals == sorted(totals, reverse=True)


def test_attention_span_of_packed_rows():
    from fathom.estimate import attention_span

    assert attention_span([1000, 3000], 4096) == 2500.0  # (1000^2 + 3000^2) / 4000
    assert attention_span([4096], 4096) == 4096.0  # one document fills the row
    assert attention_span([10_000], 4096) == pytest.approx((2 * 4096**2 + 1808**2) / 10_000)  # cut into rows
    assert attention_span([1000, 3000], 4096, weights=[3, 1]) == pytest.approx((3e6 + 9e6) / 6000)


def test_plan_with_a_token_cache_counts_its_packed_rows_attention(local_model_dir, synthetic_corpus, tmp_path, capsys):
    """fathom plan --cache: the corpus's document lengths set each phase's attention span; short documents
    make long phases cheaper than whole rows; a folder that is no cache is one clear line."""
    cfg = small_run_config(local_model_dir, [synthetic_corpus], tmp_path / "run")
    cfg["data"]["cache_dir"] = str(tmp_path / "cache")
    cfg["train"]["schedule"][-1]["max_seq_length"] = 8192  # longer than any synthetic document
    cfg["model"]["attn_implementation"] = "auto"  # per document; an explicit sdpa's mask costs whole rows
    config = write_config(tmp_path / "run.yaml", cfg)

    def phases(*extra):
        command = ["plan", "--config", str(config), "--json", "--gpu", "h200-141gb", "train.total_tokens=1e11"]
        assert main([*command, *extra]) == 0  # tokens enough for hours to show
        return json.loads(capsys.readouterr().out)["hardware"][0]["phases"]

    whole = phases()  # before fathom prepare: whole rows
    assert [p["attention_span"] for p in whole] == [None, None, None]
    assert main(["prepare", "--config", str(config)]) == 0
    (cache,) = (p.parent for p in (tmp_path / "cache").rglob("meta.json"))
    capsys.readouterr()
    packed = phases("--cache", str(cache))
    assert packed == phases()  # the config's own prepared corpus is found by itself
    spans = [p["attention_span"] for p in packed]
    assert all(0 < span <= p["max_seq_length"] for span, p in zip(spans, packed, strict=True))
    assert spans[-1] < 8192 and packed[-1]["hours"] < whole[-1]["hours"]
    masked = phases("--cache", str(cache), "model.attn_implementation=sdpa")
    assert masked[-1]["hours"] == whole[-1]["hours"]
    assert main(["plan", "--config", str(config), "--cache", str(tmp_path)]) == 2
    assert f"--cache: {tmp_path} is not a fathom token cache" in capsys.readouterr().err
