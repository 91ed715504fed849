"""train.report_to: W&B (offline), MLflow (local SQLite store) and Trackio (local) get what TensorBoard gets.

Each tracker's run is read back with that library's own reader and compared scalar by scalar with
TensorBoard's events; a run stopped by max_steps and resumed logs into the same tracker run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import small_run_config, write_config

from fathom.cli import main

PHASES = ["Phase_1a_Short", "Phase_1b_Medium", "Phase_1c_Long"]


def _tensorboard_losses(out: Path) -> dict[int, float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    losses = {}
    for phase in PHASES:
        acc = EventAccumulator(str(out / phase / "logs"), size_guidance={"scalars": 0})
        acc.Reload()
        losses |= {e.step: e.value for e in acc.Scalars("train/loss")}
    return losses


def _wandb_history(out: Path) -> list[dict]:
    """W&B's offline transaction logs, read by W&B's own CLI (``wandb leet inspect --json``)."""
    history = []
    for log in sorted(out.glob("wandb/offline-run-*/run-*.wandb")):
        listing = subprocess.run(
            [str(Path(sys.executable).parent / "wandb"), "leet", "inspect", "--json", str(log)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        records = [json.loads(line) for line in listing.splitlines() if line.startswith("{")]
        history.extend(r["history"]["item"] for r in records if r.get("type") == "history")
    return history


def _mlflow_run(out: Path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{(out / 'mlflow.db').resolve()}")
    experiment = client.get_experiment_by_name("fathom")
    runs = client.search_runs([experiment.experiment_id])
    return client, runs


@pytest.mark.slow
def test_every_tracker_reads_back_the_scalars_tensorboard_has(tmp_path, local_model_dir, synthetic_corpus, monkeypatch):
    for module in ("wandb", "mlflow", "trackio"):
        pytest.importorskip(module, reason=f"pip install 'fathom[{module}]'")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("TRACKIO_DIR", str(tmp_path / "trackio"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "run"
    cfg = small_run_config(local_model_dir, [synthetic_corpus], out, total_tokens=3072, max_steps=4)
    cfg["train"]["report_to"] = ["tensorboard", "wandb", "mlflow", "trackio"]
    cfg["train"]["run_name"] = "maritime-test"
    cfg["eval"] = {"enabled": True, "depths": 2, "samples": 1, "kinds": ["passkey"]}  # a heatmap for the last phase
    config = write_config(tmp_path / "run.yaml", cfg)
    assert main(["train", "--config", str(config)]) == 0  # stops at step 4 (resumable)
    assert main(["train", "--config", str(config), "--resume", "train.max_steps=0"]) == 0

    board = _tensorboard_losses(out)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    last_phase = EventAccumulator(str(out / "Phase_1c_Long" / "logs"), size_guidance={"images": 0})
    last_phase.Reload()
    assert "eval/needle_heatmap" in last_phase.Tags()["images"]
    steps = sorted(board)
    assert steps == list(range(1, steps[-1] + 1)) and len(steps) > 4

    # MLflow: one run through the resume, every step's loss, the config and plan as parameters
    client, runs = _mlflow_run(out)
    assert len(runs) == 1, "the resumed run must log into the same MLflow run"
    run = runs[0]
    history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "train/loss")}
    assert history.keys() == board.keys()
    assert all(abs(history[s] - board[s]) <= 1e-6 * max(1.0, abs(board[s])) for s in steps)
    assert run.data.params["train.learning_rate"] == str(cfg["train"]["learning_rate"])
    assert run.data.params["plan.Phase_1c_Long.max_seq_length"] == "256"
    assert run.info.status == "FINISHED" and run.info.run_name == "maritime-test"
    assert "Phase_1c_Long" in run.data.tags["phase_transition"]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"fathom_config.yaml", "README.md", "phase_transition", "eval"} <= artifacts
    heatmaps = [a.path for a in client.list_artifacts(run.info.run_id, "eval/needle_heatmap")]
    assert heatmaps and (out / "Phase_1c_Long" / "needle_heatmap.png").is_file()
    needle = client.get_metric_history(run.info.run_id, "eval/needle_acc/256")
    assert len(needle) == 1 and 0.0 <= needle[0].value <= 1.0

    # W&B offline: the same losses against global_step, in one run id across the resume
    history = _wandb_history(out)
    wandb_rows = [r for r in history if "train/loss" in r]
    assert {r["global_step"]: r["train/loss"] for r in wandb_rows} == pytest.approx(board, rel=1e-6)
    assert any(r.get("eval/needle_heatmap._type") == "image-file" for r in history)
    assert len({p.name.split("-")[-1] for p in out.glob("wandb/offline-run-*")}) == 1

    # Trackio: its local database holds the same series
    from trackio.sqlite_storage import SQLiteStorage

    logs = SQLiteStorage.get_logs("fathom", "maritime-test")
    assert {r["step"]: r["train/loss"] for r in logs if "train/loss" in r} == pytest.approx(board, rel=1e-6)
    assert json.loads((out / "trackers.json").read_text()).keys() == {"wandb", "mlflow", "trackio"}


def test_a_tracker_not_installed_is_one_line_before_any_work(tmp_path, local_model_dir, synthetic_corpus, capsys):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    out = tmp_path / "run"
    cfg = small_run_config(local_model_dir, [synthetic_corpus], out)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real_find_spec(name, *a)
        )
        code = main(["train", "--config", str(write_config(tmp_path / "run.yaml", cfg)), "train.report_to=[wandb]"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == [
        "fathom: error: train.report_to: wandb is not installed; pip install 'fathom[wandb]' "
        "(or remove it from train.report_to)"
    ]
    assert not out.exists()


def test_an_unknown_tracker_is_named_with_the_choices(tmp_path, capsys):
    assert main(["plan", "train.report_to=[tensorbord]"]) == 2
    err = capsys.readouterr().err
    assert "train.report_to: 'tensorbord' is not one of tensorboard, wandb, mlflow, trackio" in err
    assert "did you mean 'tensorboard'" in err
