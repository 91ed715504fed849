"""Causal-LM loss computed in chunks, so the full (tokens x vocab) logits never exist at once.

Why by hand: with Qwen's 152K vocabulary the logits of one 32K-token row are 10 GB in bf16 (20 GB
in fp32 for the softmax), more than the rest of a LoRA step. Here the decoder runs once to its
final hidden states; the output layer and cross-entropy then run over chunks of
``chunk_size`` tokens, each under activation checkpointing, so only one chunk's logits are alive
in forward and each is recomputed in backward. (Liger's fused kernel does the same on CUDA; it is
an option of the memory issue.)
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from fathom.data.pack import IGNORE_INDEX

logger = logging.getLogger("fathom")

# Config attributes that change the logits after the output layer; such models use their own forward.
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers causal-LM inside a PeftModel (LoRA layers are injected in place)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if get_base is not None else model


def _has_logit_transform(causal_lm: torch.nn.Module) -> bool:
    config = getattr(causal_lm, "config", None)
    return any(getattr(config, name, None) not in (None, 1, 1.0) for name in _LOGIT_TRANSFORMS)


def flatten_for_varlen(causal_lm: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """For flash-attention kernels, lay the micro-batch's rows end to end: (B, L) -> (1, B * L).

    transformers reads document boundaries from restarting position ids for flash_attention_2 only
    when the batch has one row (it then runs the varlen kernel); with several rows it would attend
    across documents. Every row starts a chunk at position 0, so the flattened row keeps every
    boundary, and its labels already mask each chunk's first token. Other backends get a
    block-diagonal mask from the position ids at any batch size and keep the (B, L) shape.
    """
    attn = str(getattr(causal_lm.config, "_attn_implementation", "") or "")
    if batch["input_ids"].shape[0] > 1 and "flash" in attn:
        return {key: value.reshape(1, -1) for key, value in batch.items()}
    return batch


def _chunk_loss_sum(head: torch.nn.Module, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    logits = head(hidden).float()
    return F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="sum")


def causal_lm_loss_sum(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], chunk_size: int = 1024
) -> tuple[torch.Tensor, int]:
    """Summed next-token cross-entropy over ``batch`` and the number of predicted tokens.

    ``batch`` holds ``input_ids``, ``position_ids`` and ``labels``, each (B, L), labels -100 where
    nothing is predicted (see :mod:`fathom.data.pack`). No attention mask is passed and the cache is
    off: transformers then derives the document-masked attention from the restarting position ids.
    Returns ``(loss_sum, n_tokens)``; divide by the tokens of the whole optimizer step, not of the
    micro-batch, so every token weighs the same.
    """
    causal_lm = _unwrap(model)
    batch = flatten_for_varlen(causal_lm, batch)
    labels = batch["labels"][:, 1:]
    n_tokens = int((labels != IGNORE_INDEX).sum())
    if _has_logit_transform(causal_lm):
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
        loss_sum = F.cross_entropy(
            logits[:, :-1].flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
        )
        return loss_sum, n_tokens
    decoder = causal_lm.get_decoder()
    hidden = decoder(
        input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False
    ).last_hidden_state
    hidden = hidden[:, :-1].flatten(0, 1)  # (B * (L - 1), H)
    flat_labels = labels.flatten()
    head = causal_lm.get_output_embeddings()
    total = hidden.new_zeros((), dtype=torch.float32)
    needs_grad = torch.is_grad_enabled() and hidden.requires_grad
    for start in range(0, hidden.shape[0], chunk_size):
        h, y = hidden[start : start + chunk_size], flat_labels[start : start + chunk_size]
        if not bool((y != IGNORE_INDEX).any()):
            continue
        if needs_grad:
            total = total + checkpoint(_chunk_loss_sum, head, h, y, use_reentrant=False)
        else:
            total = total + _chunk_loss_sum(head, h, y)
    return total, n_tokens
