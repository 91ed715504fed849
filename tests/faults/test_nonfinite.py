"""Bad numbers never reach a checkpoint: non-finite steps are skipped, counted, and stop the run when too many."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import small_run_config, write_config
from safetensors.torch import load_file

import fathom.train.loop as loop
from fathom.cli import main

pytestmark = pytest.mark.faults


def _poison(monkeypatch, bad_calls: set[int]) -> None:
    """The loss of the listed forward passes (1-based) becomes NaN, so its gradients do too."""
    real, calls = loop.causal_lm_loss_sum, {"n": 0}

    def loss_sum(*args, **kwargs):
        calls["n"] += 1
        total, count = real(*args, **kwargs)
        return (total * float("nan"), count) if calls["n"] in bad_calls else (total, count)

    monkeypatch.setattr(loop, "causal_lm_loss_sum", loss_sum)


@pytest.mark.slow
def test_a_non_finite_step_is_skipped_and_the_run_finishes_finite(
    tmp_path, local_model_dir, synthetic_corpus, monkeypatch, capsys
):
    _poison(monkeypatch, {3})  # a micro-batch of step 2
    out = tmp_path / "run"
    cfg = small_run_config(local_model_dir, [synthetic_corpus], out, total_tokens=2048)
    assert main(["train", "--config", str(write_config(tmp_path / "c.yaml", cfg))]) == 0
    assert "the update was skipped (1 of train.max_skipped_steps=3)" in capsys.readouterr().err
    state = json.loads((out / "final_256_model" / "trainer_state.json").read_text())
    assert state["skipped_steps"] == 1
    weights = load_file(str(out / "final_256_model" / "adapter_model.safetensors"))
    assert all(torch.isfinite(w).all() for w in weights.values())


@pytest.mark.slow
def test_too_many_non_finite_steps_stop_in_one_line_and_keep_the_checkpoints_finite(
    tmp_path, local_model_dir, synthetic_corpus, monkeypatch, capsys
):
    _poison(monkeypatch, set(range(9, 1000)))  # from step 5 on, every step
    out = tmp_path / "run"
    cfg = small_run_config(local_model_dir, [synthetic_corpus], out, total_tokens=2048, max_skipped_steps=1)
    assert main(["train", "--config", str(write_config(tmp_path / "c.yaml", cfg))]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("fathom: error:")]
    assert len(err) == 1 and "2 steps had a non-finite loss or gradient norm" in err[0]
    newest = sorted((out / "checkpoints").glob("step-*"))[-1]
    assert str(newest) in err[0]
    for checkpoint in (out / "checkpoints").glob("step-*"):
        weights = load_file(str(checkpoint / "adapter_model.safetensors"))
        assert all(torch.isfinite(w).all() for w in weights.values())


@pytest.mark.parametrize(
    "override",
    ["train.learning_rate=.inf", "train.learning_rate=.nan", "train.learning_rate=1e6", "train.micro_batch_size=1e12"],
)
def test_a_non_finite_or_absurd_number_stops_train_in_one_line_before_anything_is_written(
    tmp_path, local_model_dir, synthetic_corpus, override, capsys
):
    out = tmp_path / "run"
    config = write_config(tmp_path / "c.yaml", small_run_config(local_model_dir, [synthetic_corpus], out))
    capsys.readouterr()
    assert main(["train", "--config", str(config), override]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("fathom: error:")]
    assert len(errors) == 1 and errors[0].startswith(f"fathom: error: {override.split('=')[0]}: ")
    assert "Traceback" not in err and not out.exists()
