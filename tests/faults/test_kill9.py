"""kill -9 during every kind of write, then ``--resume``: the same adapter as a run never stopped.

One run is killed at five different writes in turn (``_kill_at.py`` wraps ``os.replace``
and safetensors' ``save_file`` from outside fathom and sends SIGKILL), checks after each kill that
the newest checkpoint still loads whole, and resumes; the finished run must equal the
uninterrupted one to 1e-6 in every phase folder and the final folder.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import assert_same_adapters, hang_guard, small_run_config, write_config

from fathom.cli import main
from fathom.train.checkpoint import RunLayout

pytestmark = pytest.mark.faults

KILLER = Path(__file__).with_name("_kill_at.py")
FOLDERS = ("Phase_1a_Short", "Phase_1b_Medium", "Phase_1c_Long", "final_256_model")


def _config(folder: Path, model: Path, corpus: Path, out: Path) -> Path:
    cfg = small_run_config(model, [corpus], out, save_every_steps=4)
    cfg["lora"]["dropout"] = 0.1  # the RNG state must survive the kills too
    cfg["data"]["cache_dir"] = str(folder / "cache")
    return write_config(folder / f"{out.name}.yaml", cfg)


@pytest.fixture(scope="module")
def straight(tmp_path_factory, local_model_dir, synthetic_corpus) -> Path:
    folder = tmp_path_factory.mktemp("straight")
    out = folder / "run"
    assert main(["train", "--config", str(_config(folder, local_model_dir, synthetic_corpus, out))]) == 0
    return out


def _killed(config: Path, when: str, pattern: str, nth: int = 1, resume: bool = True) -> None:
    args = ["train", "--config", str(config), *(["--resume"] if resume else [])]
    proc = subprocess.run(
        [sys.executable, str(KILLER), when, pattern, str(nth), *args],
        capture_output=True, text=True, timeout=hang_guard(900),
    )  # fmt: skip
    assert proc.returncode == -9, f"not killed at {when} {pattern}:\n{proc.stderr[-3000:]}"


def _newest_checkpoint_loads(out: Path) -> None:
    newest = RunLayout(out).latest_checkpoint()
    if newest is not None:
        RunLayout.load_checkpoint(newest)  # raises DamagedCheckpoint when anything in it is broken


def _assert_same_as(out: Path, straight: Path) -> None:
    assert_same_adapters(straight, out, FOLDERS)
    assert not [p for p in out.rglob("*") if p.name.startswith((".tmp-", ".old-"))], "leftovers remain"


@pytest.mark.slow
def test_killed_inside_every_kind_of_write_then_resumed_equals_the_uninterrupted_run(
    tmp_path, local_model_dir, synthetic_corpus, straight
):
    out = tmp_path / "run"
    config = _config(tmp_path, local_model_dir, synthetic_corpus, out)
    _killed(config, "before-replace", f"{tmp_path / 'cache'}/*", resume=False)  # the token cache entry
    assert not [p for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")], "a cache entry appeared"

    _killed(config, "before-replace", f"{out}/fathom_config.yaml")  # the run's config, written at its start
    _killed(config, "mid-file", "*/.tmp-step-0000008-*/optimizer.safetensors")  # half a checkpoint file
    assert [p.name for p in RunLayout(out).checkpoints()] == ["step-0000004"]
    assert list((out / "checkpoints").glob(".tmp-step-0000008-*/optimizer.safetensors")), "no half-written file"
    _newest_checkpoint_loads(out)

    _killed(config, "after-replace", f"{out}/Phase_1a_Short/*")  # one file of the phase folder moved in
    assert (out / "Phase_1a_Short").is_dir() and not (out / "Phase_1a_Short" / "trainer_state.json").exists()
    _newest_checkpoint_loads(out)

    _killed(config, "before-replace", f"{out}/final_256_model")  # complete, never renamed into place
    assert not (out / "final_256_model").exists()
    _newest_checkpoint_loads(out)

    assert main(["train", "--config", str(config), "--resume"]) == 0
    _assert_same_as(out, straight)
