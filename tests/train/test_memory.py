"""train.memory: the per-phase choice is applied layer by layer, changes no value, is logged and recorded,
and a resumed run keeps what the phase began with."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import small_run_config, tiny_config, write_config
from transformers import AutoModelForCausalLM

from fathom.cli import main
from fathom.config import LoraConfig
from fathom.model.load import enable_activation_checkpointing, set_checkpointing
from fathom.model.lora import apply_lora
from fathom.model.loss import causal_lm_loss_sum
from fathom.train import memory


def _tiny(layers: int = 4):
    config = tiny_config("qwen2", 128, 0, hidden_size=32, intermediate_size=64, num_hidden_layers=layers)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.config.use_cache = False
    enable_activation_checkpointing(model)
    model = apply_lora(model, LoraConfig(r=4, alpha=8, dropout=0.1), seed=0)  # dropout: the RNG must replay
    return model.train()


def _loss_and_grads(model, batch):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(1)
    loss_sum, n = causal_lm_loss_sum(model, batch, chunk_size=16, implementation="chunked")
    (loss_sum / n).backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    return float(loss_sum.detach() / n), grads


def test_set_checkpointing_recomputes_the_chosen_layers_and_changes_no_value():
    model = _tiny()
    ids = torch.randint(0, 128, (2, 24))
    batch = {"input_ids": ids, "labels": ids, "position_ids": torch.arange(24).repeat(2, 1)}
    layers = model.get_base_model().model.layers
    reference = None
    for every, expected in ((0, [False] * 4), (3, [True, False, False, True]), (1, [True] * 4)):
        assert set_checkpointing(model, every, offload=False) == sum(expected)
        assert [layer.gradient_checkpointing for layer in layers] == expected
        loss, grads = _loss_and_grads(model, batch)
        if reference is None:
            reference = loss, grads
            assert len(grads) == 4 * 7 * 2  # every LoRA matrix got a gradient
            continue
        assert loss == pytest.approx(reference[0], abs=1e-6)
        for name, grad in grads.items():
            torch.testing.assert_close(grad, reference[1][name], atol=1e-6, rtol=1e-5)
    # a second call with the same offload adds no second input-gradient hook
    hooks = len(model.get_base_model()._require_grads_hooks)
    set_checkpointing(model, 2, offload=False)
    assert len(model.get_base_model()._require_grads_hooks) == hooks


def _state_memory(out, phase: str) -> dict:
    return json.loads((out / phase / "trainer_state.json").read_text(encoding="utf-8"))["memory"]


def test_auto_chooses_per_phase_logs_and_records_it_and_resume_keeps_it(
    local_model_dir, synthetic_corpus, tmp_path, monkeypatch
):
    out = tmp_path / "run"
    cfg = small_run_config(local_model_dir, [synthetic_corpus], out)
    del cfg["model"]["gradient_checkpointing"]  # unset: train.memory (auto by default) decides
    path = write_config(tmp_path / "run.yaml", cfg)
    monkeypatch.setattr(memory, "device_memory_gib", lambda device: 1000.0)  # room for every activation
    assert main(["train", "--config", str(path), "train.max_steps=14"]) == 0  # 12 steps in Phase_1a: stops in 1b
    log = (out / "train.log").read_text(encoding="utf-8")
    assert "Phase_1a_Short: memory: no gradient checkpointing (train.memory: auto; planner:" in log
    first = _state_memory(out, "Phase_1a_Short")["Phase_1a_Short"]
    assert first["checkpoint_every"] == 0 and first["chosen"] and first["speed_vs_all_on"] > 1.2
    # resumed on a "device" with no room: the phase in progress keeps its setup, the next one frugal
    monkeypatch.setattr(memory, "device_memory_gib", lambda device: 1e-6)
    assert main(["train", "--config", str(path), "--resume"]) == 0
    log = (out / "train.log").read_text(encoding="utf-8")[len(log) :]
    assert "Phase_1b_Medium: memory: no gradient checkpointing (as the run recorded it" in log
    recorded = _state_memory(out, "Phase_1c_Long")
    assert recorded["Phase_1b_Medium"]["checkpoint_every"] == 0
    assert recorded["Phase_1c_Long"]["checkpoint_every"] == 1 and not recorded["Phase_1c_Long"]["fits"]
    assert "Phase_1c_Long: memory: gradient checkpointing on every layer" in log and "does NOT fit" in log


def test_an_explicit_flag_wins_over_auto(local_model_dir, synthetic_corpus, tmp_path, monkeypatch):
    out = tmp_path / "run"
    cfg = small_run_config(local_model_dir, [synthetic_corpus], out, total_tokens=1024)
    cfg["train"]["schedule"] = [{"name": "Phase_1a_Short", "max_seq_length": 64, "token_fraction": 1.0}]
    monkeypatch.setattr(memory, "device_memory_gib", lambda device: 1000.0)
    assert main(["train", "--config", str(write_config(tmp_path / "run.yaml", cfg))]) == 0
    log = (out / "train.log").read_text(encoding="utf-8")
    assert "Phase_1a_Short: memory: gradient checkpointing on every layer (as configured)" in log
    assert _state_memory(out, "Phase_1a_Short")["Phase_1a_Short"]["chosen"] is False


def test_out_of_gpu_memory_under_auto_steps_down_and_retries_the_step(
    local_model_dir, synthetic_corpus, tmp_path, monkeypatch
):
    """A CUDA out-of-memory error in a phase auto set up: the next more frugal setup, the same step again;
    without a more frugal one (or under manual) the run stops with the planner's advice, as before."""
    from fathom.train import loop

    real = loop.causal_lm_loss_sum
    raised = []

    def runs_out_without_checkpointing(model, batch, *args, **kwargs):
        layers = model.get_base_model().model.layers
        if not any(layer.gradient_checkpointing for layer in layers):  # "too big" whole
            raised.append(1)
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(model, batch, *args, **kwargs)

    monkeypatch.setattr(loop, "causal_lm_loss_sum", runs_out_without_checkpointing)
    monkeypatch.setattr(memory, "device_memory_gib", lambda device: 1000.0)
    out = tmp_path / "run"
    cfg = small_run_config(local_model_dir, [synthetic_corpus], out, total_tokens=1024)
    del cfg["model"]["gradient_checkpointing"]
    cfg["train"]["schedule"] = [{"name": "Phase_1a_Short", "max_seq_length": 64, "token_fraction": 1.0}]
    assert main(["train", "--config", str(write_config(tmp_path / "run.yaml", cfg))]) == 0
    assert len(raised) == 1  # once, then every step of the phase ran with the frugal setup
    log = (out / "train.log").read_text(encoding="utf-8")
    assert "Phase_1a_Short: out of GPU memory with no gradient checkpointing; retrying the step with" in log
    recorded = _state_memory(out, "Phase_1a_Short")["Phase_1a_Short"]
    assert recorded["checkpoint_every"] > 0 and recorded["after_out_of_memory"]
    cfg["output_dir"] = str(tmp_path / "manual")
    cfg["train"]["memory"] = "manual"
    cfg["model"]["gradient_checkpointing"] = False
    assert main(["train", "--config", str(write_config(tmp_path / "manual.yaml", cfg))]) == 1
