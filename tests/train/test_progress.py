"""``fathom runs`` and ``train.log``: where a run is, read from its folder without loading a model."""

from __future__ import annotations

import json
import subprocess
import sys

from helpers import small_run_config, write_config

from fathom.cli import main
from fathom.reports.runs import describe, format_duration
from fathom.train.progress import StatusFile, read_status


def test_runs_follows_a_run_in_progress_stopped_resumed_and_complete(
    tmp_path, local_model_dir, synthetic_corpus, capsys, monkeypatch
):
    import fathom.train.loop as loop

    out = tmp_path / "run"
    cfg = small_run_config(local_model_dir, [synthetic_corpus], out, total_tokens=3072, max_steps=6)
    config = write_config(tmp_path / "run.yaml", cfg)
    seen_mid_run = []
    real_step = loop.train_step

    def step_and_look(run, plan, loader):
        if run.state.global_step == 5:  # steps 1-4 logged, checkpoint step-0000004 written
            seen_mid_run.append(read_status(out))
        return real_step(run, plan, loader)

    monkeypatch.setattr(loop, "train_step", step_and_look)
    assert main(["train", "--config", str(config)]) == 0
    monkeypatch.setattr(loop, "train_step", real_step)

    (running,) = seen_mid_run
    lines = describe(running)
    assert running.status == "running" and lines[0].endswith(")") and "pid" in lines[0]
    assert "phase 1/3 Phase_1a_Short, rows of 64 tokens: step 5/" in lines[1]
    assert lines[2].startswith("  run: step 5/") and "loss " in lines[2]
    assert any("tokens/s; at that rate the phase ends in" in line for line in lines)
    assert "  last checkpoint: checkpoints/step-0000004" in lines

    capsys.readouterr()
    assert main(["runs", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"{out}: stopped\n") and "run: step 6/" in printed
    assert "last checkpoint: checkpoints/step-0000006" in printed

    assert main(["train", "--config", str(config), "--resume", "train.max_steps=0"]) == 0
    capsys.readouterr()
    assert main(["runs", str(tmp_path), "--json"]) == 0  # a folder of runs
    (record,) = json.loads(capsys.readouterr().out)
    assert record["status"] == "complete" and record["phase_name"] == "Phase_1c_Long"
    assert record["tokens_seen"] == sum(p["trained_tokens"] for p in record["phases"])
    assert main(["runs", str(out)]) == 0
    done = capsys.readouterr().out.splitlines()
    assert done[:2] == [f"{out}: complete", "  all 3 phases done: Phase_1a_Short, Phase_1b_Medium, Phase_1c_Long"]

    log = (out / "train.log").read_text(encoding="utf-8")
    assert "stopping after train.max_steps=6 steps" in log  # the first run's lines are kept
    assert "resuming from step-0000006" in log
    for phase in ("Phase_1a_Short", "Phase_1b_Medium", "Phase_1c_Long"):
        assert f"INFO: {phase} done: " in log
    assert "INFO: done: final model in" in log


def test_a_run_whose_process_died_is_reported_killed(tmp_path, capsys):
    from fathom.train.checkpoint import TrainerState

    out = tmp_path / "run"
    out.mkdir()
    (out / "fathom_config.yaml").write_text("{}\n")
    status = StatusFile(
        out, [{"name": "P", "kind": "pretrain", "max_seq_length": 64, "steps": 4, "trained_tokens": 256}]
    )
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    status.update(TrainerState(phase_name="P", global_step=2, tokens_seen=128))
    record = json.loads((out / "status.json").read_text())
    record["pid"] = int(gone.stdout)
    (out / "status.json").write_text(json.dumps(record))
    assert main(["runs", str(out)]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first == f"{out}: killed - the process ended without a word (killed?); continue with fathom train --resume"


def test_runs_on_a_folder_without_runs_is_one_line(tmp_path, capsys):
    assert main(["runs", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith(f"fathom: error: {tmp_path}: no fathom run here")


def test_durations_read_like_a_clock():
    assert [format_duration(s) for s in (4.4, 725, 3 * 3600 + 7 * 60, 2 * 86400 + 4 * 3600)] == [
        "4s",
        "12m05s",
        "3h07m",
        "2d04h",
    ]
