"""Pack tokenized documents into rows of exactly ``seq_len`` tokens (pure: no model, no I/O).

Documents are laid end to end; a document longer than the room left in a row is cut, and its next
chunk opens the following row. Every chunk gets position ids that restart at 0, which is what
tells the attention backends where one document stops: fathom's own paths (fathom.model.attention:
varlen, sdpa_packed) and flash_attention_2 attend per document from the restarts, with no mask;
transformers' sdpa / eager build a block-diagonal causal T x T mask from them instead. The first
token of every chunk gets the label -100, so no label is predicted across a boundary.

Worked example, ``seq_len=4``, documents ``[1, 2, 0]`` and ``[3, 4, 5, 6, 0]`` (0 = end of document)::

    row 0: input_ids [1, 2, 0, 3]   position_ids [0, 1, 2, 0]   labels [-100, 2, 0, -100]
    row 1: input_ids [4, 5, 6, 0]   position_ids [0, 1, 2, 3]   labels [-100, 5, 6, 0]

(``labels[i]`` is the token predicted from position ``i - 1``, the usual causal-LM shift.)
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from fathom.labels import IGNORE_INDEX

__all__ = ["IGNORE_INDEX", "PackedRow", "epoch_order", "epoch_stream", "pack_examples", "pack_rows"]


@dataclass
class PackedRow:
    input_ids: np.ndarray  # (seq_len,) int64
    position_ids: np.ndarray  # (seq_len,) int64, restarting at 0 at every document chunk
    supervised: np.ndarray | None = None  # (seq_len,) labels of instruction rows; None: language modelling

    @property
    def labels(self) -> np.ndarray:
        """Language modelling: ``input_ids`` with -100 at each chunk start (nothing is predicted across a
        boundary). Instruction rows: the examples' own labels (assistant tokens only)."""
        if self.supervised is not None:
            return self.supervised
        labels = self.input_ids.copy()
        labels[self.position_ids == 0] = IGNORE_INDEX
        return labels

    @property
    def segment_lengths(self) -> list[int]:
        """Lengths of the document chunks in this row, in order (they sum to seq_len)."""
        starts = [*np.flatnonzero(self.position_ids == 0).tolist(), len(self.position_ids)]
        return [b - a for a, b in itertools.pairwise(starts)]


def pack_rows(documents: Iterable[np.ndarray], seq_len: int) -> Iterator[PackedRow]:
    """Rows of exactly ``seq_len`` tokens from ``documents`` (1-D int arrays), in order.

    A tail shorter than ``seq_len`` at the end of a finite input is dropped; callers that need
    every token pass an endless stream (see :func:`epoch_stream`).
    """
    if seq_len <= 0:
        raise ValueError(f"seq_len must be > 0, got {seq_len}")
    ids = np.empty(seq_len, dtype=np.int64)
    pos = np.empty(seq_len, dtype=np.int64)
    filled = 0
    for doc in documents:
        offset = 0
        while offset < len(doc):
            take = min(len(doc) - offset, seq_len - filled)
            ids[filled : filled + take] = doc[offset : offset + take]
            pos[filled : filled + take] = np.arange(take)
            filled += take
            offset += take
            if filled == seq_len:
                yield PackedRow(ids.copy(), pos.copy())
                filled = 0


def pack_examples(examples: Iterable[tuple[np.ndarray, np.ndarray]], seq_len: int, pad_id: int) -> Iterator[PackedRow]:
    """Rows of exactly ``seq_len`` tokens holding whole examples ``(input_ids, labels)``, in order.

    Unlike documents, an example is never split across rows: when the next one does not fit, the
    row is closed with padding (``pad_id``, label -100, its own position ids, so it attends to
    nothing else). Every example must have at most ``seq_len`` tokens. E.g. seq_len 8, examples of
    3, 4 and 5 tokens -> row 1: 3 + 4 + 1 padding; row 2: 5 + 3 padding.
    """
    ids = np.empty(seq_len, dtype=np.int64)
    pos = np.empty(seq_len, dtype=np.int64)
    labels = np.empty(seq_len, dtype=np.int64)
    filled = 0

    def close() -> PackedRow:
        ids[filled:], labels[filled:] = pad_id, IGNORE_INDEX
        pos[filled:] = np.arange(seq_len - filled)
        return PackedRow(ids.copy(), pos.copy(), labels.copy())

    for example_ids, example_labels in examples:
        n = len(example_ids)
        if n > seq_len:
            raise ValueError(f"an example of {n} tokens does not fit a row of {seq_len}")
        if filled + n > seq_len:
            yield close()
            filled = 0
        ids[filled : filled + n], labels[filled : filled + n] = example_ids, example_labels
        pos[filled : filled + n] = np.arange(n)
        filled += n
        if filled == seq_len:
            yield PackedRow(ids.copy(), pos.copy(), labels.copy())
            filled = 0
    if filled:
        yield close()


def epoch_order(
    num_documents: int, seed: int, phase_index: int, epoch: int, weights: np.ndarray | None = None
) -> np.ndarray:
    """The document order of one pass over the corpus: a permutation fixed by (seed, phase, epoch).

    With ``weights`` (expected draws per document, see :mod:`fathom.data.mix`) a document can
    appear several times or not at all in a pass.
    """
    rng = np.random.default_rng([seed, phase_index, epoch])
    if weights is None:
        return rng.permutation(num_documents)
    from fathom.data.mix import draw_counts

    counts = draw_counts(weights, rng)
    if counts.sum() == 0:  # tiny corpus, small weights: never yield an empty pass
        counts = np.ones(num_documents, dtype=np.int64)
    return rng.permutation(np.repeat(np.arange(num_documents), counts))


def epoch_stream(
    documents: Sequence[np.ndarray], seed: int, phase_index: int, weights: np.ndarray | None = None
) -> Iterator[np.ndarray]:
    """Documents forever, reshuffled at each pass, so a phase can train more tokens than the corpus holds."""
    if not len(documents):
        raise ValueError("no documents to pack")
    for epoch in itertools.count():
        for i in epoch_order(len(documents), seed, phase_index, epoch, weights):
            yield documents[i]
