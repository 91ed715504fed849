"""Memory cuts of the training step: the same math, less memory (shown by the fake-tensor simulation).

lora.lean_forward: the adapter path in the activations' dtype, with shared dropout masks;
train.mlp_tile_tokens: each MLP over sequence tiles, each checkpointed;
train.lean_norms: RMSNorm saving its input and 1/rms only.
"""

from __future__ import annotations

import pytest
import torch
from helpers import small_run_config

from fathom.config import LoraConfig, config_from_dict
from fathom.model.lora import apply_lora
from fathom.model.loss import causal_lm_loss_sum
from fathom.schedule import plan_phases
from fathom.train.simulate import simulate_phase, transformers_config


def _loss_and_grads(
    model_dir, lean: bool, dropout: float = 0.0, tile: int = 0, checkpointing: bool = False, norms: bool = False,
    train_norms: bool = False,
):  # fmt: skip
    from transformers import AutoModelForCausalLM

    from fathom.model.load import enable_activation_checkpointing, lean_norms, tile_mlps

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if checkpointing:
        enable_activation_checkpointing(base)
    model = apply_lora(
        base, LoraConfig(r=4, alpha=8, dropout=dropout, lean_forward=lean, train_norms=train_norms), seed=3
    )
    assert tile_mlps(model, tile) == (2 if tile else 0)
    # 2 a layer and the final one; trained norms are there twice (PEFT's frozen original and the trained copy)
    assert (lean_norms(model) if norms else 0) == (5 * (1 + train_norms) if norms else 0)
    model.train()
    torch.manual_seed(0)
    ids = torch.randint(0, base.config.vocab_size, (2, 48))
    position_ids = torch.cat([torch.arange(20), torch.arange(28)]).repeat(2, 1)  # two documents a row
    batch = {"input_ids": ids, "labels": ids.clone(), "position_ids": position_ids}
    for p in model.parameters():  # lora_B starts at zero: give it values, so every gradient is non-trivial
        if "lora_B" in getattr(p, "_fathom_name", "") or (p.requires_grad and p.dim() == 2 and p.shape[1] == 4):
            torch.nn.init.normal_(p, std=0.02)
    loss, _ = causal_lm_loss_sum(model, batch, 16, "chunked")
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return loss.detach(), grads


def test_the_lean_path_equals_peft_on_an_fp32_base(local_model_dir):
    loss, grads = _loss_and_grads(local_model_dir, lean=False)
    lean_loss, lean_grads = _loss_and_grads(local_model_dir, lean=True)
    torch.testing.assert_close(lean_loss, loss, rtol=1e-5, atol=1e-5)
    assert grads.keys() == lean_grads.keys() and len(grads) == 28  # A and B of 7 projections, 2 layers
    for name in grads:
        torch.testing.assert_close(lean_grads[name], grads[name], rtol=1e-5, atol=1e-6, msg=name)


def test_projections_reading_one_input_share_one_dropout_mask(local_model_dir, monkeypatch):
    calls = {"n": 0}
    real = torch.nn.functional.dropout

    def counting(*args, **kwargs):
        calls["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "dropout", counting)
    _loss_and_grads(local_model_dir, lean=True, dropout=0.1)
    shared = calls["n"]
    calls["n"] = 0
    _loss_and_grads(local_model_dir, lean=False, dropout=0.1)
    # per layer: q/k/v share one, o_proj one, gate/up share one, down_proj one = 4 of 7
    assert (shared, calls["n"]) == (2 * 4, 2 * 7)


def test_the_lean_path_keeps_no_fp32_copies_of_bf16_activations(local_model_dir, tmp_path, dropout=0.05):
    cfg = small_run_config(local_model_dir, [tmp_path], tmp_path / "out")
    cfg["lora"]["dropout"] = dropout
    plan = plan_phases(config_from_dict(cfg), 1)[2]
    peaks = {}
    for lean in (False, True):
        cfg["lora"]["lean_forward"] = lean
        peaks[lean] = simulate_phase(config_from_dict(cfg), plan)  # bf16 base, fake tensors

    def working_set(step) -> int:  # what the step holds beyond the weights, the adapter and its optimizer
        return step.at_peak["activations"] + step.at_peak["backward temporaries"]

    assert working_set(peaks[True]) < 0.8 * working_set(peaks[False])
    assert peaks[True].at_peak["weights"] == peaks[False].at_peak["weights"]


@pytest.mark.parametrize("checkpointing", [False, True])
def test_a_tiled_mlp_gives_the_same_loss_and_gradients(local_model_dir, checkpointing):
    loss, grads = _loss_and_grads(local_model_dir, lean=True, checkpointing=checkpointing)
    tiled_loss, tiled_grads = _loss_and_grads(local_model_dir, lean=True, tile=16, checkpointing=checkpointing)
    torch.testing.assert_close(tiled_loss, loss, rtol=1e-5, atol=1e-5)
    for name in grads:
        torch.testing.assert_close(tiled_grads[name], grads[name], rtol=1e-5, atol=1e-6, msg=name)


def test_a_tiled_mlp_with_shared_dropout_trains_without_layer_checkpointing(local_model_dir):
    """train.memory auto keeps most layers whole at long lengths, where the MLP is still tiled: each tile's
    recompute must draw its dropout again (not reuse the shared copy of its first forward), and give what
    the fully checkpointed layer gives (same RNG order, same masks)."""
    kept, kept_grads = _loss_and_grads(local_model_dir, lean=True, dropout=0.1, tile=16, checkpointing=False)
    recomputed, grads = _loss_and_grads(local_model_dir, lean=True, dropout=0.1, tile=16, checkpointing=True)
    torch.testing.assert_close(kept, recomputed, rtol=1e-5, atol=1e-5)
    for name in grads:
        torch.testing.assert_close(kept_grads[name], grads[name], rtol=1e-5, atol=1e-6, msg=name)


def test_a_tiled_mlp_holds_one_tile_of_intermediates(local_model_dir, tmp_path):
    cfg = small_run_config(local_model_dir, [tmp_path], tmp_path / "out")
    plan = plan_phases(config_from_dict(cfg), 1)[2]  # 256 tokens
    cfg["train"]["loss_chunk_size"] = 64
    shape = transformers_config(config_from_dict(cfg))
    shape.intermediate_size = 2048  # MLP-heavy, as a 7B is (18,944 = 5.3 x hidden)
    steps = {}
    for tile in (0, 64):
        cfg["train"]["mlp_tile_tokens"] = tile
        steps[tile] = simulate_phase(config_from_dict(cfg), plan, shape)
    whole, tiled = (s.at_peak["activations"] + s.at_peak["backward temporaries"] for s in (steps[0], steps[64]))
    assert tiled < 0.8 * whole


@pytest.mark.parametrize("train_norms", [False, True])
def test_lean_norms_give_the_same_loss_and_gradients(local_model_dir, train_norms):
    loss, grads = _loss_and_grads(local_model_dir, lean=True, checkpointing=True, train_norms=train_norms)
    lean_loss, lean_grads = _loss_and_grads(
        local_model_dir, lean=True, checkpointing=True, norms=True, train_norms=train_norms
    )
    torch.testing.assert_close(lean_loss, loss, rtol=1e-5, atol=1e-5)
    assert grads.keys() == lean_grads.keys() and len(grads) == 28 + 5 * train_norms
    for name in grads:
        torch.testing.assert_close(lean_grads[name], grads[name], rtol=1e-5, atol=1e-6, msg=name)


def test_lean_norms_keep_no_fp32_copies(local_model_dir):
    """What autograd keeps from a bf16 forward: transformers' RMSNorm keeps fp32 copies of its input,
    the lean one keeps none (the LoRA path, lean too, keeps none either)."""
    from transformers import AutoModelForCausalLM

    from fathom.model.load import lean_norms

    def fp32_saved(lean: bool) -> int:
        base = AutoModelForCausalLM.from_pretrained(local_model_dir, dtype=torch.bfloat16)
        model = apply_lora(base, LoraConfig(r=4, alpha=8, dropout=0.0), seed=3).train()
        if lean:
            lean_norms(model)
        kept = []

        def pack(tensor):
            if tensor.dtype == torch.float32 and tensor.numel() >= 2 * 64 * 64:  # T x hidden or more
                kept.append(tensor.numel())
            return tensor

        ids = torch.randint(0, base.config.vocab_size, (2, 64))
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(input_ids=ids).logits.sum()
        return len(kept)

    assert fp32_saved(lean=False) >= 2 * 4  # at least the input and normalized copies of the 4 layer norms
    assert fp32_saved(lean=True) == 0


def test_the_lean_norm_backward_in_pieces_equals_autograd(monkeypatch):
    """Over several pieces of rows (3-d and Qwen3's 4-d per-head inputs), input and weight gradients match."""
    from transformers.models.qwen3.modeling_qwen3 import Qwen3RMSNorm

    import fathom.model.load as load

    monkeypatch.setattr(load, "NORM_BACKWARD_ROWS", 16)
    torch.manual_seed(0)
    for shape in ((2, 40, 64), (2, 40, 4, 16)):
        norm = Qwen3RMSNorm(shape[-1], eps=1e-6)
        torch.nn.init.normal_(norm.weight, 1.0, 0.1)
        x, grad = torch.randn(shape, requires_grad=True), torch.randn(shape)
        norm(x).backward(grad)
        expected = (x.grad.clone(), norm.weight.grad.clone())
        x.grad, norm.weight.grad = None, None
        assert load.lean_norms(norm) == 1
        norm(x).backward(grad)
        torch.testing.assert_close(x.grad, expected[0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(norm.weight.grad, expected[1], rtol=1e-5, atol=1e-5)
