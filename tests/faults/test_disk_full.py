"""A full disk (a file-size cap in a subprocess: RLIMIT_FSIZE) mid-run: one line, exit 3, the last
checkpoint intact, and ``--resume`` (with room again) ends where a run never stopped would."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys

import pytest
from helpers import assert_same_adapters, hang_guard

from fathom.cli import main
from fathom.train.checkpoint import RunLayout

pytestmark = pytest.mark.faults


def _capped(limit: int):
    def apply() -> None:  # in the child, before exec: writes past `limit` bytes fail with EFBIG
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # (instead of killing the process)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.slow
def test_a_write_that_does_not_fit_is_one_line_and_the_run_resumes_to_the_same_adapter(interrupted_and_straight):
    config, out, straight = interrupted_and_straight
    assert main(["train", "--config", config, "train.max_steps=4"]) == 0  # the token cache and step 4 exist
    step4 = out / "checkpoints" / "step-0000004"
    adapter = (step4 / "adapter_model.safetensors").stat().st_size
    assert (step4 / "optimizer.safetensors").stat().st_size > 1.5 * adapter  # the optimizer file cannot fit

    proc = subprocess.run(
        [sys.executable, "-m", "fathom", "train", "--config", config, "--resume"],
        capture_output=True, text=True, timeout=hang_guard(900), preexec_fn=_capped(int(1.5 * adapter)),
    )  # fmt: skip
    assert proc.returncode == 3, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("fathom: error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "no room to write" in errors[0] and "rerun with --resume" in errors[0]
    assert [p.name for p in RunLayout(out).checkpoints()] == ["step-0000004"]
    RunLayout.load_checkpoint(step4)  # intact: every file parses and is finite
    assert not [p for p in out.rglob("*") if p.name.startswith(".tmp-")]

    assert main(["train", "--config", config, "--resume"]) == 0
    assert_same_adapters(straight, out, ("final_256_model",))
    assert os.path.getsize(out / "final_256_model" / "adapter_model.safetensors") == adapter
