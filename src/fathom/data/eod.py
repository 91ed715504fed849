"""The end-of-document token appended to every document (tokenization itself: :mod:`fathom.data.cache`)."""

from __future__ import annotations

import logging

logger = logging.getLogger("fathom")

_EOD_CANDIDATES = ("<|endoftext|>", "</s>", "<|end_of_text|>")


def resolve_eod_token_id(tokenizer, eod_token: str = "auto") -> int:
    """The id appended after every document.

    ``auto`` prefers ``<|endoftext|>``: Qwen2.5's base models end documents with it (id 151643), while
    the tokenizer's configured eos is the chat ``<|im_end|>``. Packing with the chat token would
    teach the base model a wrong document boundary.
    """
    vocab = tokenizer.get_vocab()
    if eod_token != "auto":
        if eod_token not in vocab:
            raise ValueError(f"data.eod_token: '{eod_token}' is not in the tokenizer's vocabulary")
        return vocab[eod_token]
    for candidate in _EOD_CANDIDATES:
        if candidate in vocab:
            return vocab[candidate]
    if tokenizer.eos_token_id is not None:
        return int(tokenizer.eos_token_id)
    raise ValueError("data.eod_token: the tokenizer has no eos token; name one explicitly")
