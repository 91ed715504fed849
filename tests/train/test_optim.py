"""The optimizer and the learning rate, checked directly (the end-to-end runs only see their result)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from fathom.config import TrainConfig
from fathom.train.optim import build_optimizer, learning_rate_at, lr_multiplier


def test_lr_multiplier_matches_its_worked_example():
    values = [lr_multiplier(p, 0.1, "cosine", 0.1) for p in (0.0, 0.05, 0.1, 0.55, 1.0)]
    assert values == pytest.approx([0.0, 0.5, 1.0, 0.55, 0.1])


@pytest.mark.parametrize("scheduler", ["cosine", "linear", "constant"])
def test_lr_warms_up_then_never_rises_and_ends_at_its_floor(scheduler):
    progress = [i / 200 for i in range(201)]
    values = [lr_multiplier(p, 0.2, scheduler, 0.1) for p in progress]
    warm, decay = values[:41], values[40:]
    assert all(b > a for a, b in itertools.pairwise(warm)) and warm[-1] == pytest.approx(1.0)
    assert all(b <= a + 1e-12 for a, b in itertools.pairwise(decay))
    assert decay[-1] == pytest.approx(1.0 if scheduler == "constant" else 0.1)
    assert values[100] == pytest.approx(
        {
            "cosine": 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.375)),
            "linear": 0.1 + 0.9 * (1 - 0.375),
            "constant": 1.0,
        }[scheduler]
    )


def test_progress_outside_the_schedule_is_clamped_and_no_warmup_starts_at_the_peak():
    assert lr_multiplier(-1.0, 0.1, "cosine", 0.0) == 0.0
    assert lr_multiplier(2.0, 0.1, "cosine", 0.0) == pytest.approx(0.0)
    assert lr_multiplier(0.0, 0.0, "linear", 0.2) == pytest.approx(1.0)


def test_learning_rate_per_phase_or_over_the_whole_run():
    per_phase = TrainConfig(learning_rate=1e-3, warmup_ratio=0.5, lr_scheduler="linear", min_lr_ratio=0.0)
    # halfway through a phase's warmup, whatever the run's progress
    assert learning_rate_at(per_phase, 25, 100, 925, 1000) == pytest.approx(0.5e-3)
    whole_run = TrainConfig(
        learning_rate=1e-3, warmup_ratio=0.5, lr_scheduler="linear", min_lr_ratio=0.0, rewarmup_each_phase=False
    )
    assert learning_rate_at(whole_run, 25, 100, 750, 1000) == pytest.approx(0.5e-3)  # half of the decay left


def test_the_optimizer_holds_exactly_the_trainable_parameters():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    model[0].requires_grad_(False)
    cfg = TrainConfig(learning_rate=3e-4, weight_decay=0.01, adam_beta1=0.8, adam_beta2=0.9, adam_epsilon=1e-6)
    optimizer = build_optimizer(model, cfg)
    (group,) = optimizer.param_groups
    assert {id(p) for p in group["params"]} == {id(p) for p in model[1].parameters()}
    assert (group["lr"], group["betas"], group["eps"], group["weight_decay"]) == (3e-4, (0.8, 0.9), 1e-6, 0.01)
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        build_optimizer(model, cfg)


def test_the_divergence_watch_speaks_once_when_the_loss_stays_high():
    from fathom.train.step import DivergenceWatch

    watch = DivergenceWatch(factor=2.0, patience=3, warmup=4)
    assert not any(watch.update(loss) for loss in [3.0, 2.5, 2.2, 2.0, 1.9, 1.8, 5.0, 1.7])  # a single spike
    assert [watch.update(9.0) for _ in range(4)] == [False, False, True, False]
    assert "may be diverging" in watch.describe("Phase_1a_Short", 12)
