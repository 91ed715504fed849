from __future__ import annotations

import pytest

from fathom.config import load_config
from fathom.schedule import final_model_dirname, plan_phases, plan_summary


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
