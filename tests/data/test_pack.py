from __future__ import annotations

import numpy as np
import pytest

from fathom.data.loader import PhaseLoader
from fathom.data.pack import IGNORE_INDEX, epoch_order, epoch_stream, pack_rows


def _docs(*lengths, start=1):
    out, nxt = [], start
    for n in lengths:
        out.append(np.arange(nxt, nxt + n, dtype=np.int32))
        nxt += n
    return out


def test_docstring_worked_example():
    rows = list(pack_rows([np.array([1, 2, 0]), np.array([3, 4, 5, 6, 0])], 4))
    assert [r.input_ids.tolist() for r in rows] == [[1, 2, 0, 3], [4, 5, 6, 0]]
    assert [r.position_ids.tolist() for r in rows] == [[0, 1, 2, 0], [0, 1, 2, 3]]
    assert [r.labels.tolist() for r in rows] == [[-100, 2, 0, -100], [-100, 5, 6, 0]]


def test_rows_are_exactly_seq_len_and_keep_every_token_in_order():
    docs = _docs(5, 17, 3, 40, 1, 9)
    rows = list(pack_rows(docs, 8))
    assert all(len(r.input_ids) == 8 for r in rows)
    flat = np.concatenate([r.input_ids for r in rows])
    expected = np.concatenate(docs)[: len(flat)]
    assert np.array_equal(flat, expected)
    assert len(flat) == (sum(map(len, docs)) // 8) * 8


def test_positions_restart_at_every_document_and_chunk():
    docs = _docs(3, 10, 2)
    rows = list(pack_rows(docs, 6))
    assert [r.segment_lengths for r in rows] == [[3, 3], [6]]
    for row in rows:
        starts = row.position_ids == 0
        assert (row.labels[starts] == IGNORE_INDEX).all()
        assert (row.labels[~starts] == row.input_ids[~starts]).all()


def test_document_longer_than_a_row_is_cut_not_dropped():
    rows = list(pack_rows(_docs(25), 10))
    assert len(rows) == 2
    assert rows[1].input_ids[0] == rows[0].input_ids[-1] + 1
    assert rows[1].position_ids[0] == 0


def test_epoch_stream_is_deterministic_and_reshuffles():
    assert np.array_equal(epoch_order(50, 1, 0, 0), epoch_order(50, 1, 0, 0))
    assert not np.array_equal(epoch_order(50, 1, 0, 0), epoch_order(50, 1, 0, 1))
    assert not np.array_equal(epoch_order(50, 1, 0, 0), epoch_order(50, 1, 1, 0))
    docs = _docs(*range(1, 11))
    stream = epoch_stream(docs, seed=3, phase_index=0)
    first_pass = [next(stream) for _ in range(10)]
    assert sorted(len(d) for d in first_pass) == list(range(1, 11))
    with pytest.raises(ValueError, match="no documents"):
        next(epoch_stream([], 0, 0))


def test_loader_resumes_at_a_row_position_without_repeating_or_skipping():
    docs = _docs(7, 30, 12, 3, 50, 21, 8)
    full = PhaseLoader(docs, 16, seed=5, phase_index=1, micro_batch_size=2)
    batches = [full.next_micro_batch() for _ in range(12)]  # more than one pass over the corpus
    resumed = PhaseLoader(docs, 16, seed=5, phase_index=1, micro_batch_size=2, start_row=10)
    assert resumed.rows_consumed == 10
    for expected in batches[5:]:
        got = resumed.next_micro_batch()
        for key in ("input_ids", "position_ids", "labels"):
            assert got[key].equal(expected[key])
    assert batches[0]["input_ids"].shape == (2, 16)


def test_ranks_take_disjoint_slices_of_the_global_rows():
    docs = _docs(7, 30, 12, 3, 50, 21, 8)
    single = PhaseLoader(docs, 16, seed=5, phase_index=0, micro_batch_size=2)
    global_rows = [single.next_micro_batch()["input_ids"] for _ in range(2)]
    rank0 = PhaseLoader(docs, 16, seed=5, phase_index=0, micro_batch_size=1, world_size=2, rank=0)
    rank1 = PhaseLoader(docs, 16, seed=5, phase_index=0, micro_batch_size=1, world_size=2, rank=1)
    for step in range(2):
        a, b = rank0.next_micro_batch()["input_ids"], rank1.next_micro_batch()["input_ids"]
        assert a[0].equal(global_rows[step][0]) and b[0].equal(global_rows[step][1])
    assert rank0.rows_consumed == rank1.rows_consumed == 4
