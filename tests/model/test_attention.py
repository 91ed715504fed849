"""fathom's document-masked attention: packed rows train exactly like their documents alone, with no T x T mask.

``sdpa_packed`` runs here as it runs anywhere; ``varlen`` (CUDA only) runs through a reference
``varlen_attn`` with torch's signature, so fathom's flattening and ``cu_seqlens`` are what is checked.
"""

from __future__ import annotations

import itertools
import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import tiny_config
from transformers import AutoModelForCausalLM

from fathom.config import ConfigError, LoraConfig
from fathom.model import attention
from fathom.model.attention import SDPA_PACKED, VARLEN, document_bounds, register
from fathom.model.load import pick_attn_implementation
from fathom.model.lora import apply_lora
from fathom.model.loss import causal_lm_loss_sum

LENGTHS = [[15, 25], [40], [3, 9, 28]]  # three rows of 40 tokens: two documents, one, three


def _model(attn: str, seed: int = 0):
    register()
    config = tiny_config("qwen2", 256, 0, intermediate_size=96, max_position_embeddings=128)
    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="sdpa")
    base.config._attn_implementation = attn
    for p in base.parameters():
        p.requires_grad_(False)
    model = apply_lora(base, LoraConfig(r=4, alpha=8, dropout=0.0), seed=3)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.02)  # non-zero, so the adapter changes the output
    return model.train()


def _packed_batch(lengths=LENGTHS, vocab: int = 256):
    torch.manual_seed(1)
    ids = torch.randint(1, vocab, (len(lengths), sum(lengths[0])))
    positions = torch.stack([torch.cat([torch.arange(n) for n in row]) for row in lengths])
    labels = ids.clone()
    labels[positions == 0] = -100  # nothing is predicted across a document boundary
    return {"input_ids": ids, "labels": labels, "position_ids": positions}


def _loss_and_grads(model, batch):
    model.zero_grad(set_to_none=True)
    loss, n = causal_lm_loss_sum(model, batch, 16, "chunked")
    loss.backward()
    return loss.detach(), n, {k: p.grad.clone() for k, p in model.named_parameters() if p.requires_grad}


def _documents_alone(model, batch, lengths=LENGTHS):
    """Every document of the batch run by itself (whole-row causal SDPA): the reference."""
    model.zero_grad(set_to_none=True)
    total, count = 0.0, 0
    for row, row_lengths in enumerate(lengths):
        start = 0
        for length in row_lengths:
            doc = {k: v[row : row + 1, start : start + length] for k, v in batch.items()}
            loss, n = causal_lm_loss_sum(model, doc, 16, "chunked")
            total, count = total + loss, count + n
            start += length
    total.backward()
    return total.detach(), count, {k: p.grad.clone() for k, p in model.named_parameters() if p.requires_grad}


def _assert_same(got, want):
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-5)
    assert got[1] == want[1]
    assert got[2].keys() == want[2].keys()
    for name in got[2]:
        torch.testing.assert_close(got[2][name], want[2][name], rtol=1e-5, atol=1e-6, msg=name)


def test_document_bounds_split_where_positions_restart_and_are_cached_per_tensor():
    positions = torch.tensor([[0, 1, 2, 0, 1, 0, 1, 2, 3]])
    assert document_bounds(positions, 2) == [[0, 3, 5, 9], [0, 3, 5, 9]]  # (1, T) serves every row
    assert document_bounds(torch.tensor([[7, 8, 9, 10]]), 1) == [[0, 4]]  # a chunk starting mid-document
    assert document_bounds(positions, 1) is document_bounds(positions, 1)  # one host copy per forward


def test_sdpa_packed_rows_equal_documents_alone_loss_and_lora_gradients():
    packed = _model(SDPA_PACKED)
    batch = _packed_batch()
    got = _loss_and_grads(packed, batch)
    alone = _model("sdpa")
    _assert_same(got, _documents_alone(alone, batch))
    # and plain SDPA, which builds the T x T mask from the same position ids, agrees too
    _assert_same(got, _loss_and_grads(_model("sdpa"), batch))


def test_the_padding_closing_instruction_rows_is_skipped_with_the_same_loss_and_lora_gradients():
    """Phase 2's rows end in padding (an example never splits across rows); the per-document path lays the
    micro-batch end to end without it, and trains exactly as the padded rows do through SDPA's mask."""
    from fathom.data.pack import pack_examples
    from fathom.model.loss import padding_free

    torch.manual_seed(2)
    examples = []
    for n in (30, 25, 12):  # rows of 40: 30 + 10 padding, then 25 + 12 + 3 padding
        ids = torch.randint(1, 256, (n,))
        labels = ids.clone()
        labels[: n // 2] = -100  # the prompt: only the answer is learned
        examples.append((ids.numpy(), labels.numpy()))
    rows = list(pack_examples(examples, 40, pad_id=0))
    assert [r.segment_lengths for r in rows] == [[30, 10], [25, 12, 3]]
    batch = {key: torch.from_numpy(np.stack([getattr(r, key) for r in rows])) for key in ("input_ids", "labels")}
    batch["position_ids"] = torch.from_numpy(np.stack([r.position_ids for r in rows]))
    packed = _model(SDPA_PACKED)
    skipped = padding_free(packed.get_base_model(), batch)
    assert skipped["input_ids"].shape == (1, 67) and int((skipped["input_ids"] == 0).sum()) == 0
    assert padding_free(_model("sdpa").get_base_model(), batch) is batch  # a masked path keeps its rows
    seen = []
    packed.get_input_embeddings().register_forward_hook(lambda module, args, out: seen.append(args[0].shape))
    _assert_same(_loss_and_grads(packed, batch), _loss_and_grads(_model("sdpa"), batch))
    assert seen == [(1, 67)]  # the step itself ran the 67 tokens of the examples, not 80
    whole = _packed_batch()  # rows without padding are left as they are, not copied
    assert padding_free(packed.get_base_model(), whole) is whole


def test_without_restarting_positions_documents_would_see_each_other():
    """The equality above is not vacuous: the same row read as one document gives another loss."""
    model = _model(SDPA_PACKED)
    batch = _packed_batch()
    packed = _loss_and_grads(model, batch)[0]
    whole = dict(batch, position_ids=torch.arange(40).expand(3, -1).contiguous())
    assert not torch.allclose(packed, _loss_and_grads(model, whole)[0], atol=1e-3)


def _reference_varlen_attn(calls):
    def varlen_attn(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, *, scale=None, window_size=(-1, -1),
                    enable_gqa=False, **_):  # fmt: skip
        """torch's signature: (total, heads, d) tensors, one causal attention per cu_seqlens segment."""
        assert window_size == (-1, 0) and torch.equal(cu_seq_q, cu_seq_k) and cu_seq_q.dtype == torch.int32
        bounds = cu_seq_q.tolist()
        calls.append((bounds, max_q))
        parts = []
        for a, b in itertools.pairwise(bounds):
            q, k, v = (x[a:b].transpose(0, 1)[None] for x in (query, key, value))
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=enable_gqa)
            parts.append(out[0].transpose(0, 1))
        return torch.cat(parts)

    return varlen_attn


def _torch_2_10_varlen_attn(calls):
    """torch 2.10's signature: causal by a flag, the default 1/sqrt(D) scale, as many key heads as query heads."""
    reference = _reference_varlen_attn(calls)

    def varlen_attn(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, is_causal=False, return_aux=None):
        assert is_causal and key.shape[1] == query.shape[1]  # the heads were repeated for it
        return reference(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, window_size=(-1, 0))

    return varlen_attn


@pytest.mark.parametrize("signature", ["2.12+", "2.10"])
def test_varlen_path_lays_the_batch_end_to_end_and_equals_documents_alone(monkeypatch, signature):
    import torch.nn.attention.varlen as varlen

    calls = []
    stand_in = _reference_varlen_attn(calls) if signature == "2.12+" else _torch_2_10_varlen_attn(calls)
    monkeypatch.setattr(varlen, "varlen_attn", stand_in)
    batch = _packed_batch()
    got = _loss_and_grads(_model(VARLEN), batch)
    # one call per layer, forward only (the reference's backward is autograd's), over all three rows
    assert calls and all(c == ([0, 15, 40, 80, 83, 92, 120], 40) for c in calls)
    _assert_same(got, _documents_alone(_model("sdpa"), batch))


def test_a_training_forward_builds_no_mask_and_generation_still_gets_its_padding_mask(monkeypatch):
    import transformers.masking_utils as masking

    built = []
    real = masking.sdpa_mask
    monkeypatch.setattr(masking, "sdpa_mask", lambda *a, **k: built.append(k["q_length"]) or real(*a, **k))
    model = _model(SDPA_PACKED)
    _loss_and_grads(model, _packed_batch())
    assert built == []  # packed rows: no (T x T) mask at all
    # generation with left padding goes to transformers' SDPA with its mask, and answers as sdpa does
    prompts = torch.tensor([[0, 0, 5, 6, 7], [8, 9, 10, 11, 12]])
    mask = (prompts != 0).long()
    outputs = {}
    for attn in (SDPA_PACKED, "sdpa"):
        model.base_model.model.config._attn_implementation = attn
        model.eval()
        with torch.no_grad():
            outputs[attn] = model.generate(
                input_ids=prompts, attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=0
            )
    assert built  # the padding mask was built for generation
    assert torch.equal(outputs[SDPA_PACKED], outputs["sdpa"])


def test_a_layer_without_position_ids_is_refused_in_training():
    module = torch.nn.Module().train()
    q = torch.zeros(1, 2, 4, 8)
    with pytest.raises(ValueError, match="does not pass position ids"):
        attention.sdpa_packed_attention(module, q, q, q, None)
    module.eval()  # inference never packs: plain causal SDPA
    out, _ = attention.sdpa_packed_attention(module, q, q, q, None)
    assert out.shape == (1, 4, 2, 8)


def test_auto_picks_per_document_sdpa_on_the_cpu_and_says_why(caplog):
    with caplog.at_level(logging.INFO, logger="fathom"):
        assert pick_attn_implementation("auto", torch.device("cpu")) == SDPA_PACKED
    assert "one SDPA call per packed document" in caplog.text
    assert pick_attn_implementation("sdpa_packed", torch.device("cpu")) == SDPA_PACKED
    assert pick_attn_implementation("sdpa", torch.device("cpu")) == "sdpa"
    with pytest.raises(ConfigError, match="varlen cannot run here: no CUDA device"):
        pick_attn_implementation("varlen", torch.device("cpu"))


def test_auto_on_cuda_prefers_flash_attn_then_torch_varlen(monkeypatch):
    from fathom.model import load

    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(attention, "varlen_available", lambda device: (True, "stand-in"))
    monkeypatch.setattr(load, "flash_attn_available", lambda: True)
    assert pick_attn_implementation("auto", cuda) == "flash_attention_2"
    monkeypatch.setattr(load, "flash_attn_available", lambda: False)
    assert pick_attn_implementation("auto", cuda) == VARLEN
    assert pick_attn_implementation("varlen", cuda) == VARLEN
    monkeypatch.setattr(attention, "varlen_available", lambda device: (False, "the GPU is older than 8.0"))
    assert pick_attn_implementation("auto", cuda) == SDPA_PACKED
