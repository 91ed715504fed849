"""A full disk (a file-size cap in a subprocess: RLIMIT_FSIZE) mid-run: one line, exit 3, the last
checkpoint intact, and ``--resume`` (with room again) ends where a run never stopped would."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys

import pytest
import torch
from helpers import hang_guard, small_run_config, write_config
from safetensors.torch import load_file

from fathom.cli import main
from fathom.train.checkpoint import RunLayout

pytestmark = pytest.mark.faults


def _capped(limit: int):
    def apply() -> None:  # in the child, before exec: writes past `limit` bytes fail with EFBIG
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # (instead of killing the process)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.slow
def test_a_write_that_does_not_fit_is_one_line_and_the_run_resumes_to_the_same_adapter(
    tmp_path, local_model_dir, synthetic_corpus
):
    straight = tmp_path / "straight"
    cfg = small_run_config(local_model_dir, [synthetic_corpus], straight, save_every_steps=4)
    assert main(["train", "--config", str(write_config(tmp_path / "s.yaml", cfg))]) == 0

    out = tmp_path / "run"
    cfg["output_dir"] = str(out)
    config = str(write_config(tmp_path / "c.yaml", cfg))
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
    a = load_file(str(straight / "final_256_model" / "adapter_model.safetensors"))
    b = load_file(str(out / "final_256_model" / "adapter_model.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert os.path.getsize(out / "final_256_model" / "adapter_model.safetensors") == adapter
