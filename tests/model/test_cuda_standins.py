"""The CUDA-only paths of the shipped 7B config, run on the CPU through pure-torch stand-ins.

The shipped config trains with FlashAttention-2 (varlen over packed documents) and Liger's fused
linear cross-entropy, neither of which runs without CUDA. Here reference implementations with the
same signatures are put where transformers and fathom import them (a ``flash_attn`` module,
``liger_kernel.transformers``), so fathom's whole path runs unchanged: packed rows flattened to one
row, transformers' flash integration deriving ``cu_seqlens`` from the restarting position ids, the
varlen call, the loss. It must equal each document run alone, forward and backward.
"""

from __future__ import annotations

import itertools
import sys
import types

import pytest
import torch
import torch.nn.functional as F

from fathom.config import LoraConfig
from fathom.model.lora import apply_lora
from fathom.model.loss import causal_lm_loss_sum


def _attend(q, k, v, causal: bool, scale):
    """(L, heads, d) queries over (L, kv_heads, d) keys and values, grouped-query as flash-attn does."""
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    out = F.scaled_dot_product_attention(
        q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None], is_causal=causal, scale=scale
    )
    return out[0].transpose(0, 1)


def flash_attn_varlen_func(
    q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0, softmax_scale=None,
    causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None, deterministic=False,
    return_attn_probs=False, block_table=None,
):  # fmt: skip
    """flash-attn 2's varlen signature: q (total, heads, d), one causal attention per cu_seqlens segment."""
    assert dropout_p == 0.0 and softcap == 0.0 and alibi_slopes is None and tuple(window_size) == (-1, -1)
    assert torch.equal(cu_seqlens_q, cu_seqlens_k)
    CALLS.append(cu_seqlens_q.tolist())
    bounds = cu_seqlens_q.tolist()
    parts = [_attend(q[a:b], k[a:b], v[a:b], causal, softmax_scale) for a, b in itertools.pairwise(bounds)]
    return torch.cat(parts)


def flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), **_):
    """flash-attn 2's dense signature: q (B, L, heads, d)."""
    return torch.stack([_attend(q[i], k[i], v[i], causal, softmax_scale) for i in range(q.shape[0])])


CALLS: list[list[int]] = []


@pytest.fixture
def flash_stand_in(monkeypatch):
    """``import flash_attn`` gives the reference functions, and transformers believes FA2 is installed."""
    import transformers.modeling_flash_attention_utils as fa_utils

    module = types.ModuleType("flash_attn")
    module.flash_attn_func, module.flash_attn_varlen_func, module.flash_attn_with_kvcache = (
        flash_attn_func, flash_attn_varlen_func, None,
    )  # fmt: skip
    padding = types.ModuleType("flash_attn.bert_padding")
    padding.pad_input, padding.unpad_input = fa_utils._pad_input, fa_utils._unpad_input
    module.bert_padding = padding
    monkeypatch.setitem(sys.modules, "flash_attn", module)
    monkeypatch.setitem(sys.modules, "flash_attn.bert_padding", padding)
    monkeypatch.setattr(fa_utils, "is_flash_attn_2_available", lambda: True)
    monkeypatch.setattr(fa_utils, "_loaded_implementation", None)
    CALLS.clear()
    yield
    fa_utils._loaded_implementation = None


def _lora_model(model_dir, attention: str):
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
    base.config._attn_implementation = attention  # set after loading: from_pretrained refuses FA2 off CUDA
    model = apply_lora(base, LoraConfig(r=4, alpha=8, dropout=0.0), seed=3)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.02)  # non-zero, so the adapter path changes the output
    return model.train()


def _packed_batch(vocab: int):
    """Two rows of 40 tokens, each packing two documents (positions restart), as fathom's packer lays them."""
    torch.manual_seed(0)
    lengths = [[15, 25], [22, 18]]
    ids = torch.randint(1, vocab, (2, 40))
    positions = torch.cat([torch.cat([torch.arange(n) for n in row])[None] for row in lengths])
    labels = ids.clone()
    labels[positions == 0] = -100  # no token is predicted across a document boundary
    return {"input_ids": ids, "labels": labels, "position_ids": positions}, lengths


def _grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def test_packed_rows_through_transformers_flash_path_equal_documents_alone(local_model_dir, flash_stand_in):
    flash = _lora_model(local_model_dir, "flash_attention_2")
    batch, lengths = _packed_batch(flash.config.vocab_size)
    loss, n = causal_lm_loss_sum(flash, batch, 16, "chunked")
    loss.backward()
    # one varlen call per layer over the flattened row, its boundaries those of the four documents
    assert CALLS and all(c == [0, 15, 40, 62, 80] for c in CALLS) and len(CALLS) == flash.config.num_hidden_layers
    alone = _lora_model(local_model_dir, "sdpa")
    total, count, start = 0.0, 0, 0
    for row, row_lengths in enumerate(lengths):
        start = 0
        for length in row_lengths:
            part = slice(start, start + length)
            doc = {k: v[row : row + 1, part] for k, v in batch.items()}
            doc_loss, doc_n = causal_lm_loss_sum(alone, doc, 16, "chunked")
            total, count = total + doc_loss, count + doc_n
            start += length
    total.backward()
    assert n == count
    torch.testing.assert_close(loss, total, rtol=1e-5, atol=1e-5)
    flash_grads, alone_grads = _grads(flash), _grads(alone)
    for name in flash_grads:
        torch.testing.assert_close(flash_grads[name], alone_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_liger_fused_loss_is_called_as_liger_defines_it(local_model_dir, monkeypatch):
    """fathom's Liger path with a reference LigerFusedLinearCrossEntropyLoss (weight, input, target, bias)."""

    class LigerFusedLinearCrossEntropyLoss(torch.nn.Module):
        def __init__(self, ignore_index=-100, reduction="mean", **kwargs):
            super().__init__()
            self.ignore_index, self.reduction = ignore_index, reduction

        def forward(self, lin_weight, _input, target, bias=None):
            logits = F.linear(_input, lin_weight, bias).float()
            return F.cross_entropy(logits, target, ignore_index=self.ignore_index, reduction=self.reduction)

    liger = types.ModuleType("liger_kernel")
    liger_transformers = types.ModuleType("liger_kernel.transformers")
    liger_transformers.LigerFusedLinearCrossEntropyLoss = LigerFusedLinearCrossEntropyLoss
    monkeypatch.setitem(sys.modules, "liger_kernel", liger)
    monkeypatch.setitem(sys.modules, "liger_kernel.transformers", liger_transformers)

    model = _lora_model(local_model_dir, "sdpa")
    batch, _ = _packed_batch(model.config.vocab_size)
    results = {}
    for implementation in ("liger", "chunked", "plain"):
        model.zero_grad(set_to_none=True)
        loss, n = causal_lm_loss_sum(model, batch, 16, implementation)
        loss.backward()
        results[implementation] = (loss.detach(), n, _grads(model))
    for other in ("chunked", "plain"):
        torch.testing.assert_close(results["liger"][0], results[other][0], rtol=1e-5, atol=1e-5)
        assert results["liger"][1] == results[other][1]
        for name, grad in results["liger"][2].items():
            torch.testing.assert_close(grad, results[other][2][name], rtol=1e-4, atol=1e-6, msg=name)
