"""A damaged newest checkpoint is named in one line and the one before it resumes; all damaged: one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import small_run_config, write_config
from safetensors.torch import load_file, save_file

from fathom.cli import main

pytestmark = pytest.mark.faults


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory, local_model_dir, synthetic_corpus) -> tuple[Path, Path]:
    """(config, output folder) of a run stopped after 6 steps with checkpoints step-4 and step-6."""
    folder = tmp_path_factory.mktemp("damaged")
    out = folder / "run"
    cfg = small_run_config(local_model_dir, [synthetic_corpus], out, total_tokens=4096, save_every_steps=2)
    config = write_config(folder / "c.yaml", cfg)
    assert main(["train", "--config", str(config), "train.max_steps=6"]) == 0
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-0000004", "step-0000006"]
    return config, out


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


def _poison(path: Path) -> None:
    tensors = load_file(str(path))
    first = sorted(tensors)[0]
    tensors[first] = torch.full_like(tensors[first], float("nan"))
    save_file(tensors, str(path))


def _reshape(path: Path) -> None:
    tensors = load_file(str(path))
    first = sorted(tensors)[0]
    tensors[first] = torch.zeros(tensors[first].shape[0] + 1, *tensors[first].shape[1:])
    save_file(tensors, str(path))


def _drop_one(path: Path) -> None:
    tensors = load_file(str(path))
    del tensors[sorted(tensors)[-1]]
    save_file(tensors, str(path))


def _edit_state(path: Path, **fields) -> None:
    state = json.loads(path.read_text(encoding="utf-8"))
    path.write_text(json.dumps(state | fields), encoding="utf-8")


def _edit_tensors(path: Path, edit) -> None:
    tensors = load_file(str(path))
    first = sorted(tensors)[0]
    tensors[first] = edit(tensors[first])
    save_file(tensors, str(path))


DAMAGE = {
    "truncated adapter": lambda c: _truncate(c / "adapter_model.safetensors"),
    "garbage trainer state": lambda c: (c / "trainer_state.json").write_text("{not json", encoding="utf-8"),
    "garbage optimizer metadata": lambda c: (c / "optimizer.json").write_text("[]", encoding="utf-8"),
    "non-finite adapter": lambda c: _poison(c / "adapter_model.safetensors"),
    "missing rng": lambda c: (c / "rng.safetensors").unlink(),
    "adapter tensor of the wrong shape": lambda c: _reshape(c / "adapter_model.safetensors"),
    "adapter tensor missing": lambda c: _drop_one(c / "adapter_model.safetensors"),
    # parseable but wrong
    "phase 7 of 3": lambda c: _edit_state(c / "trainer_state.json", phase_index=6, phase_complete=True),
    "more rows than the phase has": lambda c: _edit_state(c / "trainer_state.json", phase_rows_consumed=10**6),
    "negative counter": lambda c: _edit_state(c / "trainer_state.json", tokens_seen=-5),
    "step of another folder": lambda c: _edit_state(c / "trainer_state.json", global_step=4),
    "optimizer tensor of the wrong shape": lambda c: _edit_tensors(c / "optimizer.safetensors", lambda t: t[:1]),
    "rng of the wrong type": lambda c: _edit_tensors(c / "rng.safetensors", lambda t: t.float()),
    "garbage optimizer.json": lambda c: (c / "optimizer.json").write_text('{"param_groups": 3}', encoding="utf-8"),
    "adapter scaled by 1e30": lambda c: _edit_tensors(c / "adapter_model.safetensors", lambda t: t * 1e30 + 1e30),
}


@pytest.mark.slow
@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(tmp_path, stopped_run, damage, capsys):
    config, original = stopped_run
    out = tmp_path / "run"
    shutil.copytree(original, out)
    DAMAGE[damage](out / "checkpoints" / "step-0000006")
    capsys.readouterr()
    assert main(["train", "--config", str(config), f"output_dir={out}", "--resume"]) == 0
    err = capsys.readouterr().err
    assert "checkpoint step-0000006: " in err and "; trying the one before it" in err
    assert "continuing from step-0000004, the newest intact checkpoint" in err
    assert "resuming from step-0000004" in err and "Traceback" not in err
    assert (out / "final_256_model" / "adapter_model.safetensors").is_file()


@pytest.mark.slow
def test_every_checkpoint_damaged_is_one_line_and_a_damaged_run_config_is_read_from_the_checkpoint(
    tmp_path, stopped_run, capsys
):
    config, original = stopped_run
    out = tmp_path / "run"
    shutil.copytree(original, out)
    (out / "fathom_config.yaml").write_text(": : not yaml [", encoding="utf-8")
    for checkpoint in (out / "checkpoints").iterdir():
        _truncate(checkpoint / "optimizer.safetensors")
    capsys.readouterr()
    assert main(["train", "--config", str(config), f"output_dir={out}", "--resume"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("fathom: error:")]
    assert len(errors) == 1 and "every checkpoint in" in errors[0] and "is damaged (step-0000006:" in errors[0]

    shutil.rmtree(out)
    shutil.copytree(original, out)
    (out / "fathom_config.yaml").write_text(": : not yaml [", encoding="utf-8")
    assert main(["train", "--config", str(config), f"output_dir={out}", "--resume", "lora.r=8"]) == 2
    err = capsys.readouterr().err
    assert "fathom_config.yaml is damaged" in err  # the run's own copy: the checkpoint's is compared instead
    assert "fathom: error: lora: differs from the run being resumed" in err
