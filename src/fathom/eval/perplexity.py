"""Perplexity by position: does a token late in a long document benefit from the context before it?

Each held-out document (at least ``length`` tokens, cut to ``length``) is run once; the loss of every
token is added to the bucket of its position (0-1K, 1-2K, 2-4K, 4-8K, ...). If the model uses long
context, late buckets have lower loss than early ones; a model past its window shows a jump.
The output layer runs in chunks, as in training, so long documents fit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F


def position_buckets(length: int) -> list[tuple[int, int]]:
    """[(0, 1024), (1024, 2048), (2048, 4096), ...] up to ``length`` (the last bucket ends there)."""
    buckets, lo, hi = [], 0, 1024
    while lo < length:
        buckets.append((lo, min(hi, length)))
        lo, hi = hi, hi * 2
    return buckets


def bucket_label(lo: int, hi: int) -> str:
    fmt = lambda n: f"{n // 1024}K" if n and n % 1024 == 0 else str(n)  # noqa: E731
    return f"{fmt(lo)}-{fmt(hi)}"


@torch.no_grad()
def token_losses(model, ids: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """Per-token next-token loss of one row (1, L): (L - 1,) float32, without holding (L x vocab) logits."""
    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = causal_lm.get_decoder()(input_ids=ids, use_cache=False).last_hidden_state[0, :-1]
    head = causal_lm.get_output_embeddings()
    targets = ids[0, 1:]
    out = [
        F.cross_entropy(head(hidden[s : s + chunk]).float(), targets[s : s + chunk], reduction="none")
        for s in range(0, hidden.shape[0], chunk)
    ]
    return torch.cat(out)


def loss_by_position(model, documents: Sequence[np.ndarray], length: int, device, max_documents: int = 8) -> dict:
    """Mean loss and perplexity per position bucket over documents of at least ``length`` tokens."""
    buckets = position_buckets(length)
    sums, counts = np.zeros(len(buckets)), np.zeros(len(buckets))
    used = 0
    for doc in documents:
        if len(doc) < length:
            continue
        ids = torch.as_tensor(np.asarray(doc[:length], dtype=np.int64), device=device)[None]
        losses = token_losses(model, ids).cpu().numpy()  # loss of predicting token i+1 at position i+1
        positions = np.arange(1, length)
        for b, (lo, hi) in enumerate(buckets):
            mask = (positions >= lo) & (positions < hi)
            sums[b] += losses[mask].sum()
            counts[b] += mask.sum()
        used += 1
        if used >= max_documents:
            break
    rows = {}
    for (lo, hi), s, c in zip(buckets, sums, counts, strict=True):
        if c:
            rows[bucket_label(lo, hi)] = {"loss": s / c, "perplexity": math.exp(s / c), "tokens": int(c)}
    return {"length": length, "documents": used, "buckets": rows}


def short_perplexity(
    model, documents: Sequence[np.ndarray], device, length: int = 1024, max_documents: int = 32
) -> dict:
    """Perplexity over the first ``length`` tokens of held-out documents: the short-context check."""
    total, count, used = 0.0, 0, 0
    for doc in documents:
        if len(doc) < 16:
            continue
        ids = torch.as_tensor(np.asarray(doc[:length], dtype=np.int64), device=device)[None]
        losses = token_losses(model, ids)
        total += float(losses.sum())
        count += losses.numel()
        used += 1
        if used >= max_documents:
            break
    if not count:
        return {"documents": 0}
    return {"documents": used, "tokens": count, "loss": total / count, "perplexity": math.exp(total / count)}
