"""Ctrl-C twice (the second while the first one's checkpoint is being written): one line, exit 130,
the half-written checkpoint dropped whole, the one before it intact, and ``--resume`` ends equal."""

from __future__ import annotations

import pytest
import torch
from helpers import small_run_config, write_config
from safetensors.torch import load_file

import fathom.train.checkpoint as checkpoint
import fathom.train.loop as loop
from fathom.cli import main
from fathom.train.checkpoint import RunLayout

pytestmark = pytest.mark.faults


@pytest.mark.slow
def test_a_second_ctrl_c_during_the_save_drops_that_checkpoint_and_keeps_the_one_before(
    tmp_path, local_model_dir, synthetic_corpus, monkeypatch, capsys
):
    straight = tmp_path / "straight"
    cfg = small_run_config(local_model_dir, [synthetic_corpus], straight, save_every_steps=4)
    assert main(["train", "--config", str(write_config(tmp_path / "s.yaml", cfg))]) == 0

    out = tmp_path / "run"
    cfg["output_dir"] = str(out)
    config = str(write_config(tmp_path / "c.yaml", cfg))
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
    a = load_file(str(straight / "final_256_model" / "adapter_model.safetensors"))
    b = load_file(str(out / "final_256_model" / "adapter_model.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
