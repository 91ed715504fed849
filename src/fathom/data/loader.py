"""Serve one phase's packed rows as micro-batches, resumable by a global row position.

The position counts rows of the whole job (all ranks), so a run resumed with another world size
continues at the same place in the data: at each micro-step the ranks together take the next
``micro_batch_size * world_size`` rows and rank ``r`` keeps its own slice of them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from fathom.data.pack import PackedRow, epoch_stream, pack_rows


class PhaseLoader:
    """Micro-batches of a phase: dicts of (micro_batch_size, seq_len) int64 tensors."""

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
        self.micro_batch_size = micro_batch_size
        self.world_size = world_size
        self.rank = rank
        self._rows = pack_rows(epoch_stream(documents, seed, phase_index, weights), seq_len)
        self.rows_consumed = 0
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
