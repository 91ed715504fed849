"""Causal-LM loss computed in chunks, so the full (tokens x vocab) logits never exist at once.

Why by hand: with Qwen's 152K vocabulary the logits of one 32K-token row are 10 GB in bf16 (20 GB
in fp32 for the softmax), more than everything else in a LoRA step. The decoder runs once to its
final hidden states; then :class:`ChunkedLinearCrossEntropy` walks over ``chunk_size`` tokens at a
time, computing that chunk's logits, its loss and, right away, its gradient with respect to the
hidden states (``softmax - onehot``, times the output weight). Backward only scales the stored
gradient. So the step does the same two output-layer matmuls as the plain path (no recomputation)
while holding one chunk's logits instead of all of them: the idea of Liger's fused linear
cross-entropy, written in plain torch so it runs on every device. On CUDA with ``liger-kernel``
installed, Liger's Triton kernel is used instead (``train.loss_implementation``).
"""

from __future__ import annotations

import importlib.util
import logging

import torch
import torch.nn.functional as F

from fathom.config import ConfigError
from fathom.labels import IGNORE_INDEX

logger = logging.getLogger("fathom")

# Config attributes that change the logits after the output layer; such models use their own forward.
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")


class ChunkedLinearCrossEntropy(torch.autograd.Function):
    """Sum of cross-entropy of ``hidden @ weight.T (+ bias)`` against ``labels``, chunk by chunk.

    Shapes: hidden (N, H), weight (V, H), bias (V,) or None, labels (N,) with -100 ignored.
    Forward returns a 0-d fp32 sum. Gradients for ``hidden`` and (when it requires grad) ``weight``
    and ``bias`` are computed during forward and kept: (N, H) and (V, H), never (N, V).
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, chunk_size):
        n = hidden.shape[0]
        want_weight = weight.requires_grad
        want_bias = bias is not None and bias.requires_grad
        grad_hidden = torch.zeros_like(hidden) if hidden.requires_grad else None
        acc = torch.promote_types(hidden.dtype, torch.float32)  # fp32 accumulators (fp64 stays fp64)
        grad_weight = torch.zeros_like(weight, dtype=acc) if want_weight else None
        grad_bias = torch.zeros_like(bias, dtype=acc) if want_bias else None
        total = torch.zeros((), dtype=acc, device=hidden.device)
        for start in range(0, n, chunk_size):
            y = labels[start : start + chunk_size]
            valid = y != IGNORE_INDEX
            if not bool(valid.any()):
                continue
            h = hidden[start : start + chunk_size]
            logits = F.linear(h, weight, bias)  # (c, V): the only vocabulary-sized tensor alive
            if logits.dtype in (torch.float16, torch.bfloat16):
                logits = logits.float()  # softmax in fp32, as the plain path does
            safe_y = torch.where(valid, y, 0)
            picked = logits.gather(1, safe_y[:, None]).squeeze(1)
            # softmax in place, so the chunk needs one (c, V) buffer and no temporaries of that size
            row_max = logits.amax(dim=-1, keepdim=True)
            probs = logits.sub_(row_max).exp_()
            row_sum = probs.sum(dim=-1, keepdim=True)
            log_z = (row_max + row_sum.log()).squeeze(1)
            total += ((log_z - picked) * valid).sum()
            if grad_hidden is None and grad_weight is None and grad_bias is None:
                del logits, probs
                continue
            # d(loss)/d(logits) = softmax - onehot, zero on ignored rows
            grad_logits = probs.div_(row_sum)
            grad_logits[torch.arange(len(y), device=y.device), safe_y] -= 1.0
            grad_logits *= valid[:, None]
            grad_logits = grad_logits.to(hidden.dtype)
            if grad_hidden is not None:
                grad_hidden[start : start + chunk_size] = grad_logits @ weight.to(hidden.dtype)
            if grad_weight is not None:
                grad_weight += (grad_logits.T @ h).to(acc)
            if grad_bias is not None:
                grad_bias += grad_logits.sum(0).to(acc)
            # free this chunk's (c, V) buffer before the next one is allocated: one alive at a time
            del logits, probs, grad_logits
        ctx.save_for_backward(grad_hidden, grad_weight, grad_bias)
        ctx.dtypes = (weight.dtype, bias.dtype if bias is not None else None)
        return total

    @staticmethod
    def backward(ctx, grad_output):
        grad_hidden, grad_weight, grad_bias = ctx.saved_tensors
        weight_dtype, bias_dtype = ctx.dtypes
        return (
            grad_hidden * grad_output.to(grad_hidden.dtype) if grad_hidden is not None else None,
            (grad_weight * grad_output).to(weight_dtype) if grad_weight is not None else None,
            (grad_bias * grad_output).to(bias_dtype) if grad_bias is not None else None,
            None,
            None,
        )


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers causal-LM inside a PeftModel (LoRA layers are injected in place)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if get_base is not None else model


def _has_logit_transform(causal_lm: torch.nn.Module) -> bool:
    config = getattr(causal_lm, "config", None)
    return any(getattr(config, name, None) not in (None, 1, 1.0) for name in _LOGIT_TRANSFORMS)


def liger_available() -> bool:
    return importlib.util.find_spec("liger_kernel") is not None


def resolve_loss_implementation(requested: str, device: torch.device) -> str:
    """auto: Liger's fused kernel on CUDA when liger-kernel is installed, else fathom's chunked loss."""
    if requested == "auto":
        return "liger" if device.type == "cuda" and liger_available() else "chunked"
    if requested == "liger" and (device.type != "cuda" or not liger_available()):
        raise ConfigError(
            "train.loss_implementation: liger needs a CUDA device and liger-kernel (pip install liger-kernel); "
            "use auto or chunked"
        )
    return requested


def padding_free(causal_lm: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """For attention that keeps documents apart by their restarting position ids alone (flash-attn,
    ``fathom_varlen``, ``fathom_sdpa_packed``): the micro-batch laid end to end, (B, L) -> (1, N), without
    the documents nothing is learned from, that is the padding that closes instruction rows.

    Phase 2 packs whole examples, so a row ends in padding wherever the next example does not fit
    (:func:`fathom.data.pack.pack_examples`): the demo's rows of 512 hold one example of 250 to 510
    tokens, a quarter of their tokens padding, which the model would otherwise run through every layer.
    Skipping a document whose labels are all -100 is exact: it adds no loss, no other token attends to
    it, and the token after it opens a document, so its label is -100 too (the packers' contract). Rows
    are laid end to end on these backends only: transformers reads boundaries from position ids for
    flash_attention_2 only in a one-row batch, and fathom's own two split at any restart; ``sdpa`` and
    ``eager`` build a (T x T) block-diagonal mask per row, which a longer row would square, so their
    batches keep the (B, L) shape. ``fathom plan --simulate`` runs on fake tensors, whose labels have no
    values: it keeps the padded rows, an upper bound. ``batch``: input_ids, position_ids, labels, each (B, L).
    """
    from torch._subclasses.fake_tensor import is_fake

    from fathom.model.attention import SDPA_PACKED, VARLEN

    attn = str(getattr(causal_lm.config, "_attn_implementation", "") or "")
    flash = "flash" in attn
    if not (flash or attn in (SDPA_PACKED, VARLEN)) or is_fake(batch["labels"]):
        return batch
    flat = {key: value.reshape(1, -1) for key, value in batch.items()}
    keep = _learned_from(flat["position_ids"][0], flat["labels"][0])
    if bool(keep.all()) or not bool(keep.any()):
        return flat if flash and batch["input_ids"].shape[0] > 1 else batch
    return {key: value[:, keep] for key, value in flat.items()}


def _learned_from(position_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(N,) bool: the tokens of documents holding at least one label. A document is a run of positions going
    up by 1 (transformers' rule, as :func:`fathom.model.attention.document_bounds`). Both inputs (N,)."""
    starts = torch.ones_like(position_ids, dtype=torch.bool)
    starts[1:] = position_ids[1:] != position_ids[:-1] + 1
    document = torch.cumsum(starts, 0) - 1
    labelled = torch.zeros(int(document[-1]) + 1, dtype=torch.long, device=labels.device)
    labelled.index_add_(0, document, (labels != IGNORE_INDEX).long())
    return labelled[document] > 0


def _checkpointed_chunks_loss_sum(
    head: torch.nn.Module, hidden: torch.Tensor, labels: torch.Tensor, chunk_size: int
) -> torch.Tensor:
    """For an output layer that is not a plain Linear (LoRA on lm_head, a trained copy of it): call
    the module chunk by chunk under activation checkpointing, recomputing each chunk in backward."""
    from torch.utils.checkpoint import checkpoint

    def chunk_loss(h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(head(h).float(), y, ignore_index=IGNORE_INDEX, reduction="sum")

    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, hidden.shape[0], chunk_size):
        h, y = hidden[start : start + chunk_size], labels[start : start + chunk_size]
        if bool((y != IGNORE_INDEX).any()):
            total = total + checkpoint(chunk_loss, h, y, use_reentrant=False)
    return total


def _liger_loss_sum(head: torch.nn.Module, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

    loss_fn = LigerFusedLinearCrossEntropyLoss(ignore_index=IGNORE_INDEX, reduction="sum")
    return loss_fn(head.weight, hidden, labels, getattr(head, "bias", None))


def causal_lm_loss_sum(
    model: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    chunk_size: int = 1024,
    implementation: str = "chunked",
) -> tuple[torch.Tensor, int]:
    """Summed next-token cross-entropy over ``batch`` and the number of predicted tokens.

    ``batch`` holds ``input_ids``, ``position_ids`` and ``labels``, each (B, L), labels -100 where
    nothing is predicted (see :mod:`fathom.data.pack`). No attention mask is passed and the cache is
    off: transformers then derives the document-masked attention from the restarting position ids.
    Returns ``(loss_sum, n_tokens)``; divide by the tokens of the whole optimizer step, not of the
    micro-batch, so every token weighs the same. ``implementation`` is one of chunked, liger or
    plain (the model's own full-logits forward, kept as the reference).
    """
    causal_lm = _unwrap(model)
    batch = padding_free(causal_lm, batch)
    labels = batch["labels"][:, 1:]
    n_tokens = int((labels != IGNORE_INDEX).sum())
    if implementation == "plain" or _has_logit_transform(causal_lm):
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
    if type(head) is not torch.nn.Linear or not head.weight.is_floating_point():
        return _checkpointed_chunks_loss_sum(head, hidden, flat_labels, chunk_size), n_tokens
    if implementation == "liger":
        return _liger_loss_sum(head, hidden, flat_labels), n_tokens
    return ChunkedLinearCrossEntropy.apply(hidden, head.weight, head.bias, flat_labels, chunk_size), n_tokens
