"""Tokenize documents with the model's tokenizer and end each one with the end-of-document token."""

from __future__ import annotations

import logging

import numpy as np

from fathom.data.ingest import Document

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


def tokenize_documents(
    documents: list[Document], tokenizer, eod_token_id: int, batch_size: int = 64
) -> list[np.ndarray]:
    """Token ids of each document (int32), each ending with ``eod_token_id``.

    Shapes: one 1-D array per document, of its token count + 1.
    """
    out: list[np.ndarray] = []
    for start in range(0, len(documents), batch_size):
        texts = [d.text for d in documents[start : start + batch_size]]
        encoded = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
        for ids in encoded:
            arr = np.empty(len(ids) + 1, dtype=np.int32)
            arr[:-1] = ids
            arr[-1] = eod_token_id
            out.append(arr)
    return out
