"""Fixtures of the fault suite."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import small_run_config, write_config

from fathom.cli import main


@pytest.fixture
def interrupted_and_straight(tmp_path, local_model_dir, synthetic_corpus) -> tuple[str, Path, Path]:
    """(config file, its output folder, the output folder of the same run uninterrupted): a small
    three-phase run with checkpoints every 4 steps, already trained straight through once."""
    straight = tmp_path / "straight"
    cfg = small_run_config(local_model_dir, [synthetic_corpus], straight, save_every_steps=4)
    assert main(["train", "--config", str(write_config(tmp_path / "s.yaml", cfg))]) == 0
    out = tmp_path / "run"
    cfg["output_dir"] = str(out)
    return str(write_config(tmp_path / "c.yaml", cfg)), out, straight
