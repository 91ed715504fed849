from __future__ import annotations

import numpy as np
import pytest

from fathom.config import load_config
from fathom.schedule import MANY_DRAWS, final_model_dirname, plan_phases, plan_summary, schedule_concerns


def _config(*overrides):
    return load_config(None, list(overrides), check_paths=False)


def test_guide_plan_tokens_sequences_steps():
    plans = plan_phases(_config())
    assert [(p.name, p.tokens, p.rows, p.steps) for p in plans] == [
        ("Phase_1a_Short", 300_000_000, 73_243, 9_156),
        ("Phase_1b_Medium", 150_000_000, 9_156, 1_145),
        ("Phase_1c_Long", 50_000_000, 1_526, 191),
    ]
    assert plans[0].tokens_per_step == 4096 * 1 * 8


def test_world_size_and_micro_batch_enter_tokens_per_step():
    plans = plan_phases(_config("train.micro_batch_size=2"), world_size=4)
    first = plans[0]
    assert first.tokens_per_step == 4096 * 2 * 8 * 4
    assert first.rows % (2 * 4) == 0
    assert first.steps == -(-first.micro_batches_per_rank // 8)
    # the budget is met to within one micro-batch over all ranks
    assert 0 <= first.trained_tokens - first.tokens < 4096 * 2 * 4


def test_plan_summary_json_shape():
    summary = plan_summary(
        _config(
            "train.schedule=[{name: A, max_seq_length: 4096, token_fraction: 0.6}, "
            "{name: B, max_seq_length: 16384, token_fraction: 0.4}]"
        )
    )
    assert set(summary["phases"][0]) >= {"name", "max_seq_length", "tokens", "rows", "sequences", "steps"}
    assert summary["final_model_dir"] == "final_16k_model"
    assert summary["total_steps"] == sum(p["steps"] for p in summary["phases"])


@pytest.mark.parametrize(
    ("length", "name"),
    [
        (32768, "final_32k_model"),
        (16384, "final_16k_model"),
        (1024, "final_1k_model"),
        (300, "final_300_model"),
    ],
)
def test_final_model_dirname(length, name):
    assert final_model_dirname(length) == name


def test_world_size_must_be_positive():
    with pytest.raises(ValueError, match="world_size"):
        plan_phases(_config(), world_size=0)


def test_schedule_concerns_name_a_corpus_seen_too_often_and_a_long_phase_without_long_documents():
    # the shipped 7B schedule (4K / 16K / 32K, 500M tokens) on corpora of documents of these lengths
    config = _config()
    plans = plan_phases(config)
    ample = np.array([40_000] * 2_000 + [2_000] * 100_000)  # 280M tokens, with documents past 16K
    assert schedule_concerns(config, plans, ample) == []
    small = np.array([40_000] * 200 + [2_000] * 10_000)  # 28M tokens: the 500M see it ~18 times
    (repeated,) = schedule_concerns(config, plans, small)
    assert repeated.startswith("Phase 1 shows each training document up to 17.9 times; past about 4")
    assert repeated.endswith("add documents or lower train.total_tokens")
    short_only = np.array([3_000] * 200_000)  # 600M tokens, none reaching half of 16K
    concerns = schedule_concerns(config, plans, short_only)
    assert [c.split(":")[0] for c in concerns] == ["Phase_1b_Medium", "Phase_1c_Long"]  # 1a learns the domain
    assert concerns[1].startswith("Phase_1c_Long: no training document has 16,384 tokens (half of its 32,768-token")


def test_upsampled_long_documents_count_as_the_most_drawn():
    # the same corpus seen under 4 times on average, but its rare long documents drawn 20x in the last phase
    schedule = (
        "train.schedule=[{name: A, max_seq_length: 4096, token_fraction: 0.5}, "
        "{name: B, max_seq_length: 32768, token_fraction: 0.5, long_doc_upsample: 20}]"
    )
    config = _config(schedule, "train.total_tokens=100000000")
    lengths = np.array([40_000] * 50 + [2_000] * 100_000)
    plain = _config(schedule.replace(", long_doc_upsample: 20", ""), "train.total_tokens=100000000")
    assert schedule_concerns(plain, plan_phases(plain), lengths) == []
    (repeated,) = schedule_concerns(config, plan_phases(config), lengths)
    draws = float(repeated.split("up to ")[1].split(" times")[0])
    assert draws > MANY_DRAWS
