"""Serve one phase's packed rows as micro-batches, resumable by a global row position.

The position counts rows of the whole job (all ranks), so a run resumed with another world size
continues at the same place in the data: at each micro-step the ranks together take the next
``micro_batch_size * world_size`` rows and rank ``r`` keeps its own slice of them. The rows of a
phase are a deterministic stream (seeded), so skipping ``start_row`` of them puts a resumed run
exactly where the interrupted one was.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from fathom.data.pack import PackedRow, epoch_stream, pack_examples, pack_rows


class RowLoader:
    """Micro-batches of a stream of packed rows: dicts of (micro_batch_size, seq_len) int64 tensors."""

    def __init__(
        self,
        rows: Iterator[PackedRow],
        micro_batch_size: int = 1,
        world_size: int = 1,
        rank: int = 0,
        start_row: int = 0,
    ) -> None:
        self.micro_batch_size = micro_batch_size
        self.world_size = world_size
        self.rank = rank
        self._rows = rows
        for _ in range(start_row):
            next(self._rows)
        self.rows_consumed = start_row

    def next_micro_batch(self) -> dict[str, torch.Tensor]:
        group: list[PackedRow] = [next(self._rows) for _ in range(self.micro_batch_size * self.world_size)]
        self.rows_consumed += len(group)
        mine = group[self.rank * self.micro_batch_size : (self.rank + 1) * self.micro_batch_size]
        return {
            "input_ids": torch.from_numpy(np.stack([r.input_ids for r in mine])),
            "position_ids": torch.from_numpy(np.stack([r.position_ids for r in mine])),
            "labels": torch.from_numpy(np.stack([r.labels for r in mine])),
        }


class PhaseLoader(RowLoader):
    """The rows of a language-modelling phase: ``documents`` packed into rows of ``seq_len``."""

    def __init__(
        self,
        documents: Sequence[np.ndarray],
        seq_len: int,
        seed: int,
        phase_index: int,
        micro_batch_size: int = 1,
        world_size: int = 1,
        rank: int = 0,
        start_row: int = 0,
        weights: np.ndarray | None = None,
    ) -> None:
        self.seq_len = seq_len
        rows = pack_rows(epoch_stream(documents, seed, phase_index, weights), seq_len)
        super().__init__(rows, micro_batch_size, world_size, rank, start_row)


def instruction_rows(
    examples: Sequence[tuple[np.ndarray, np.ndarray]],
    seq_len: int,
    seed: int,
    phase_index: int,
    pad_id: int,
    weights: np.ndarray | None = None,
    replay: Iterator[PackedRow] | None = None,
    replay_fraction: float = 0.0,
) -> Iterator[PackedRow]:
    """Rows of whole examples, reshuffled every pass; a seeded ``replay_fraction`` of the rows comes from
    ``replay`` instead (language-modelling rows of the Phase-1 corpus, which keep the domain knowledge).

    ``examples`` are ``(input_ids, labels)`` pairs; the order, the long-example weights and the replay
    choice are all fixed by ``seed``, so the stream is the same after a resume.
    """
    example_rows = pack_examples(epoch_stream(examples, seed, phase_index, weights), seq_len, pad_id)
    choose = np.random.default_rng([seed, phase_index, 1_000_003])
    while True:
        if replay is not None and choose.random() < replay_fraction:
            yield next(replay)
        else:
            yield next(example_rows)
