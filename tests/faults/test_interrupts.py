"""Ctrl-C twice (the second while the first one's checkpoint is being written): one line, exit 130,
the half-written checkpoint dropped whole, the one before it intact, and ``--resume`` ends equal."""

from __future__ import annotations

import pytest
from helpers import assert_same_adapters

import fathom.train.checkpoint as checkpoint
import fathom.train.loop as loop
from fathom.cli import main
from fathom.train.checkpoint import RunLayout

pytestmark = pytest.mark.faults


@pytest.mark.slow
def test_a_second_ctrl_c_during_the_save_drops_that_checkpoint_and_keeps_the_one_before(
    interrupted_and_straight, monkeypatch, capsys
):
    config, out, straight = interrupted_and_straight
    real_loss, real_save, calls = loop.causal_lm_loss_sum, checkpoint.save_file, {"n": 0, "first": False}

    def loss_then_ctrl_c(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 14:  # step 7 (2 micro-batches a step): the first Ctrl-C
            calls["first"] = True
            raise KeyboardInterrupt
        return real_loss(*args, **kwargs)

    def save_then_ctrl_c(*args, **kwargs):
        if calls["first"]:  # the second Ctrl-C, while step 6's checkpoint is being written
            raise KeyboardInterrupt
        return real_save(*args, **kwargs)

    monkeypatch.setattr(loop, "causal_lm_loss_sum", loss_then_ctrl_c)
    monkeypatch.setattr(checkpoint, "save_file", save_then_ctrl_c)
    capsys.readouterr()
    assert main(["train", "--config", config]) == 130
    err = capsys.readouterr().err
    assert err.rstrip().splitlines()[-1] == "fathom: interrupted" and "Traceback" not in err
    assert "interrupted again while saving: that checkpoint was dropped" in err
    monkeypatch.setattr(loop, "causal_lm_loss_sum", real_loss)
    monkeypatch.setattr(checkpoint, "save_file", real_save)

    assert [p.name for p in RunLayout(out).checkpoints()] == ["step-0000004"]
    RunLayout.load_checkpoint(out / "checkpoints" / "step-0000004")
    assert not [p for p in out.rglob("*") if p.name.startswith((".tmp-", ".old-"))]
    assert main(["train", "--config", config, "--resume"]) == 0
    assert_same_adapters(straight, out, ("final_256_model",))
