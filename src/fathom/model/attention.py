"""Document-masked attention for packed rows without a T x T mask, from what torch ships.

A packed row holds several documents whose positions restart at 0 (:mod:`fathom.data.pack`); each
token may attend only to earlier tokens of its own document. transformers builds that as a dense
(T x T) block-diagonal mask for ``sdpa``, which sends SDPA to its masked kernel: 55% of the
whole-row speed and 3.4 GiB more at 32K on an H200, 0.80x on this project's CPU. flash-attn's
varlen kernel avoids it, but flash-attn is often not installed. Two attention functions are
registered with transformers' ``AttentionInterface`` instead:

- ``fathom_varlen`` (CUDA): ``torch.nn.attention.varlen.varlen_attn`` (torch >= 2.10, grouped
  heads from 2.12) over the micro-batch laid end to end, ``cu_seqlens`` taken from the position ids.
- ``fathom_sdpa_packed`` (any device, exact): one causal SDPA call per document of the row, so the
  flash-style kernel runs on each and a row of short documents costs the sum of their squares.

Both are written here because transformers derives document boundaries from position ids only for
flash-attn; the boundaries are computed once per forward (every layer receives the same position-id
tensor) and cached on it. Anything that is not a training forward (a padding mask, a KV cache, a
query shorter than its keys) goes to transformers' own SDPA with the mask transformers built, so
generation and evaluation are unchanged.
"""

from __future__ import annotations

import importlib.util
import itertools

import torch
import torch.nn.functional as F
from torch.utils.weak import WeakIdKeyDictionary

VARLEN = "fathom_varlen"
SDPA_PACKED = "fathom_sdpa_packed"
# what a config names -> what transformers is told
IMPLEMENTATIONS = {"varlen": VARLEN, "sdpa_packed": SDPA_PACKED}

_bounds_cache = WeakIdKeyDictionary()  # position-id tensor -> its bounds, gone with the tensor


def varlen_available(device: torch.device) -> tuple[bool, str]:
    """torch's varlen kernel: CUDA, compute capability 8.0 or newer, torch with grouped-query support."""
    if device.type != "cuda":
        return False, f"no CUDA device (this run is on {device.type})"
    if importlib.util.find_spec("torch.nn.attention.varlen") is None:
        return False, f"torch {torch.__version__} has no torch.nn.attention.varlen (2.10 or newer has it)"
    if torch.cuda.get_device_capability(device) < (8, 0):
        return False, "the GPU is older than compute capability 8.0 (flash kernels need Ampere or newer)"
    return True, "torch.nn.attention.varlen over the packed documents"


def document_bounds(position_ids: torch.Tensor, batch: int) -> list[list[int]]:
    """Per row, where its documents start and end: a new document wherever the position does not go up by 1.

    >>> document_bounds(torch.tensor([[0, 1, 2, 0, 1, 0], [5, 6, 7, 8, 9, 10]]), 2)
    [[0, 3, 5, 6], [0, 6]]

    The rule is transformers' own (``find_packed_sequence_indices``), so every path splits rows alike.
    ``position_ids`` (B, T) or (1, T) for ``batch`` rows alike; the answer is cached on the tensor, which
    every layer of one forward receives (one device-to-host copy per forward, not per layer).
    """
    cached = _bounds_cache.get(position_ids)
    if cached is None:
        steps = torch.diff(position_ids, dim=-1) != 1  # (B, T - 1): True where a new document starts
        length = position_ids.shape[-1]
        cached = [[0, *(torch.nonzero(row).flatten() + 1).tolist(), length] for row in steps.cpu()]
        _bounds_cache[position_ids] = cached
    return cached if len(cached) == batch else cached * batch


def remember_bounds(position_ids: torch.Tensor, bounds: list[list[int]]) -> None:
    """Give ``position_ids`` known bounds: ``plan --simulate`` runs on fake tensors, which have no values."""
    _bounds_cache[position_ids] = bounds


def _packed_positions(module, query, key, attention_mask, kwargs: dict) -> torch.Tensor | None:
    """The position ids of a forward over whole rows with no padding and no cache (the only one packed
    rows reach), else None. A model whose layers do not pass position ids to their attention cannot
    say where its documents end: training it here is refused rather than attending across them."""
    if attention_mask is not None or query.shape[2] != key.shape[2]:
        return None
    position_ids = kwargs.get("position_ids")
    if position_ids is None and module.training:
        raise ValueError(
            f"model.attn_implementation: {type(module).__name__} does not pass position ids to its attention, "
            "so packed documents cannot be kept apart; use attn_implementation: sdpa"
        )
    return position_ids


def _fallback(module, query, key, value, attention_mask, dropout, scaling, kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)


def sdpa_packed_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """One causal SDPA per document. query (B, Hq, T, D), key and value (B, Hkv, T, D) -> (B, T, Hq, D)."""
    position_ids = _packed_positions(module, query, key, attention_mask, kwargs)
    if position_ids is None:
        return _fallback(module, query, key, value, attention_mask, dropout, scaling, kwargs)
    gqa = query.shape[1] != key.shape[1]
    dropout = dropout if module.training else 0.0
    # split and unbind, not indexing: their backward joins the parts' gradients once (cat / stack)
    # instead of a zero-filled full-size gradient per document
    rows = []
    for b, (q, k, v) in enumerate(zip(query.unbind(0), key.unbind(0), value.unbind(0), strict=True)):
        bounds = document_bounds(position_ids, query.shape[0])[b]
        sizes = [e - s for s, e in itertools.pairwise(bounds)]
        parts = [
            F.scaled_dot_product_attention(
                qd[None], kd[None], vd[None], dropout_p=dropout, is_causal=True, scale=scaling, enable_gqa=gqa
            )[0]
            for qd, kd, vd in zip(q.split(sizes, dim=1), k.split(sizes, dim=1), v.split(sizes, dim=1), strict=True)
        ]
        rows.append(parts[0] if len(parts) == 1 else torch.cat(parts, dim=1))  # (Hq, T, D)
    return torch.stack(rows).transpose(1, 2).contiguous(), None


def varlen_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """torch's varlen kernel over the micro-batch laid end to end: (B, H, T, D) -> (B * T, H, D) and back."""
    position_ids = _packed_positions(module, query, key, attention_mask, kwargs)
    if position_ids is None:
        return _fallback(module, query, key, value, attention_mask, dropout, scaling, kwargs)
    from torch.nn.attention.varlen import varlen_attn

    if dropout and module.training:
        raise ValueError("attention dropout is not supported by the varlen path; use sdpa_packed")
    batch, heads, length, dim = query.shape
    bounds = document_bounds(position_ids, batch)
    cu = [0]
    for b, row in enumerate(bounds):
        cu += [b * length + end for end in row[1:]]
    cu_seqlens = torch.tensor(cu, dtype=torch.int32, device=query.device)
    longest = max(e - s for row in bounds for s, e in itertools.pairwise(row))

    def flat(x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2).reshape(batch * length, x.shape[1], dim)

    query, key, value, options = _varlen_options(varlen_attn, query, key, value, scaling)
    out = varlen_attn(flat(query), flat(key), flat(value), cu_seqlens, cu_seqlens, longest, longest, **options)
    return out.view(batch, length, heads, dim), None


def _varlen_options(varlen_attn, query, key, value, scaling):
    """(query, key, value, keyword arguments) for the installed torch's ``varlen_attn``, whose signature grew:
    2.10 takes ``is_causal`` only; 2.11 ``scale`` and ``window_size``; 2.12 ``enable_gqa``. Where an option
    is missing its effect is made on the inputs: the query pre-scaled (the kernel scales by 1/sqrt(D)),
    and the key/value heads repeated for grouped-query attention (their memory, per layer, once)."""
    import inspect

    params = inspect.signature(varlen_attn).parameters
    options: dict = {"window_size": (-1, 0)} if "window_size" in params else {"is_causal": True}
    if scaling is not None and "scale" in params:
        options["scale"] = scaling
    elif scaling is not None:
        query = query * (scaling * query.shape[-1] ** 0.5)
    groups = query.shape[1] // key.shape[1]
    if groups > 1 and "enable_gqa" in params:
        options["enable_gqa"] = True
    elif groups > 1:
        key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    return query, key, value, options


def _mask(*args, attention_mask=None, q_length=None, kv_length=None, q_offset=0, kv_offset=0, **kwargs):
    """No mask for a training forward (the attention function splits the row itself); else SDPA's mask."""
    from transformers.masking_utils import sdpa_mask

    training = attention_mask is None and q_length == kv_length and not _nonzero(q_offset) and not _nonzero(kv_offset)
    if training:
        return None
    return sdpa_mask(
        *args,
        attention_mask=attention_mask,
        q_length=q_length,
        kv_length=kv_length,
        q_offset=q_offset,
        kv_offset=kv_offset,
        **kwargs,
    )


def _nonzero(offset) -> bool:
    return bool(offset != 0) if isinstance(offset, torch.Tensor) else offset != 0


def register() -> None:
    """Make both names known to transformers (idempotent): attention functions and their mask builders."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    for name, function in ((VARLEN, varlen_attention), (SDPA_PACKED, sdpa_packed_attention)):
        AttentionInterface.register(name, function)
        AttentionMaskInterface.register(name, _mask)
