"""Two processes (torchrun, gloo, CPU) train exactly like one process with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import REPO, free_port, hang_guard, small_run_config, write_config
from safetensors.torch import load_file

PHASE_DIRS = ["Phase_1a_Short", "Phase_1b_Medium", "Phase_1c_Long", "final_256_model"]


def _launch(config: Path, nproc: int, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """``fathom train`` in one process, or under torchrun with ``nproc`` processes."""
    env = dict(env or os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "fathom", "train", "--config", str(config), *extra]
    if nproc > 1:
        torchrun = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}"]
        cmd = [*torchrun, f"--master_port={free_port()}", *cmd[1:]]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=hang_guard())


def _accelerate_launch(config: Path, *launcher_args: str) -> subprocess.CompletedProcess:
    """``accelerate launch <launcher_args> -m fathom train --config <config>``; skips where accelerate cannot launch."""
    if subprocess.run([sys.executable, "-c", "import accelerate.commands.launch"], capture_output=True).returncode:
        pytest.skip("accelerate's launcher is not importable")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *launcher_args, "--main_process_port", str(free_port())]
    cmd += ["-m", "fathom", "train", "--config", str(config)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=hang_guard())


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if "events.out" not in p.name}


def _assert_same_adapters(a: Path, b: Path, atol: float = 1e-5) -> None:
    for folder in PHASE_DIRS:
        wa, wb = (load_file(str(x / folder / "adapter_model.safetensors")) for x in (a, b))
        assert wa.keys() == wb.keys()
        for key in wa:
            assert torch.allclose(wa[key], wb[key], atol=atol), f"{folder}/{key}"


@pytest.fixture
def two_configs(tmp_path, local_model_dir, synthetic_corpus):
    def make(name: str, lora: dict | None = None, evaluation: dict | None = None, **train) -> Path:
        cfg = small_run_config(local_model_dir, [synthetic_corpus], tmp_path / name, total_tokens=2048, **train)
        cfg["data"]["cache_dir"] = str(tmp_path / "cache")
        cfg["lora"].update(lora or {})
        if evaluation:
            cfg["eval"] = evaluation
            cfg["data"].update(eval_fraction=0.2, cache_dir=str(tmp_path / "cache-eval"))
        return write_config(tmp_path / f"{name}.yaml", cfg)

    return make


@pytest.mark.slow
def test_two_processes_equal_one_process_with_the_same_global_batch(tmp_path, two_configs):
    one = two_configs("one", micro_batch_size=1, gradient_accumulation_steps=2)
    two = two_configs("two", micro_batch_size=1, gradient_accumulation_steps=1)
    proc = _launch(one, 1)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = _launch(two, 2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _assert_same_adapters(tmp_path / "one", tmp_path / "two")
    for phase in PHASE_DIRS[:3]:
        h1 = json.loads((tmp_path / "one" / phase / "trainer_state.json").read_text())
        h2 = json.loads((tmp_path / "two" / phase / "trainer_state.json").read_text())
        assert [r["step"] for r in h1["log_history"]] == [r["step"] for r in h2["log_history"]]
        for r1, r2 in zip(h1["log_history"], h2["log_history"], strict=True):
            assert abs(r1["loss"] - r2["loss"]) < 1e-5 and r1["tokens_seen"] == r2["tokens_seen"]
        assert h2["world_size"] == 2
    assert _tree(tmp_path / "one") - {"fathom_config.yaml"} == _tree(tmp_path / "two") - {"fathom_config.yaml"}
    assert "rank" not in proc.stderr.lower() or "Traceback" not in proc.stderr


@pytest.mark.slow
def test_a_two_process_run_resumes_as_one_process_without_repeating_rows(tmp_path, two_configs):
    straight = two_configs("straight", micro_batch_size=1, gradient_accumulation_steps=2)
    assert _launch(straight, 1).returncode == 0
    interrupted = two_configs("interrupted", micro_batch_size=1, gradient_accumulation_steps=1)
    proc = _launch(interrupted, 2, "train.max_steps=5")  # stops inside Phase_1a_Short (8 steps)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = json.loads((tmp_path / "interrupted" / "checkpoints" / "step-0000005" / "trainer_state.json").read_text())
    assert (state["world_size"], state["phase_rows_consumed"]) == (2, 10)
    # resume the same run with one process and twice the accumulation: the same global batch
    proc = _launch(interrupted, 1, "--resume", "train.gradient_accumulation_steps=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    _assert_same_adapters(tmp_path / "straight", tmp_path / "interrupted")
    logged = json.loads((tmp_path / "interrupted" / "Phase_1a_Short" / "trainer_state.json").read_text())
    assert [r["step"] for r in logged["log_history"]] == list(range(1, 9))  # no step twice, none missing


@pytest.mark.slow
def test_changing_the_global_batch_on_resume_is_allowed_with_a_warning(tmp_path, two_configs):
    cfg = two_configs("run", micro_batch_size=1, gradient_accumulation_steps=2)
    assert _launch(cfg, 1, "train.max_steps=2").returncode == 0
    proc = _launch(cfg, 1, "--resume", "train.gradient_accumulation_steps=4")
    assert proc.returncode == 0
    assert "global batch changes from 2 to 4" in proc.stderr and "gradient_accumulation_steps=2 keeps it" in proc.stderr


@pytest.mark.slow
def test_accelerate_launch_runs_the_same_training(tmp_path, two_configs):
    one = two_configs("one", micro_batch_size=1, gradient_accumulation_steps=2)
    two = two_configs("acc", micro_batch_size=1, gradient_accumulation_steps=1)
    assert _launch(one, 1).returncode == 0
    multi_gpu = ["--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no"]
    proc = _accelerate_launch(two, *multi_gpu, "--dynamo_backend", "no")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tmp_path / "acc" / "Phase_1a_Short" / "trainer_state.json").read_text())["world_size"] == 2
    _assert_same_adapters(tmp_path / "one", tmp_path / "acc")


@pytest.mark.slow
def test_a_rank_that_dies_stops_the_job_and_leaves_the_last_checkpoint_loadable(tmp_path, two_configs):
    """Rank 1 dies in the middle of step 4 (a sitecustomize injects the crash into that process only)."""
    hook = tmp_path / "crash_hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import os\n"
        "if os.environ.get('RANK') == '1':\n"
        "    import fathom.train.loop as loop\n"
        "    real, calls = loop.causal_lm_loss_sum, {'n': 0}\n"
        "    def crash(*args, **kwargs):\n"
        "        calls['n'] += 1\n"
        "        if calls['n'] == 4:\n"
        "            os._exit(3)\n"
        "        return real(*args, **kwargs)\n"
        "    loop.causal_lm_loss_sum = crash\n"
    )
    cfg = two_configs("crash", micro_batch_size=1, gradient_accumulation_steps=1, save_every_steps=2)
    # A surviving rank stuck in a collective would wait out FATHOM_DIST_TIMEOUT_MINUTES, here set beyond the
    # launch's hang guard: the launch returning at all shows torchrun stopped it (no clock is compared).
    env = dict(
        os.environ,
        PYTHONPATH=f"{hook}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        FATHOM_DIST_TIMEOUT_MINUTES=str(int(2 * hang_guard() / 60) + 1),
    )
    proc = _launch(cfg, 2, env=env)
    assert proc.returncode != 0
    assert "exitcode" in proc.stderr and "3" in proc.stderr  # torchrun names the failed rank and its exit code
    checkpoints = sorted((tmp_path / "crash" / "checkpoints").glob("step-*"))
    # step 2 was saved on schedule; when torchrun's SIGTERM reaches rank 0 outside the collective, rank 0
    # also saves the last step every rank completed (3) - never the step rank 1 died in
    assert [c.name for c in checkpoints] in (["step-0000002"], ["step-0000002", "step-0000003"])
    assert all((c / "trainer_state.json").is_file() for c in checkpoints)
    assert not list((tmp_path / "crash" / "checkpoints").glob(".tmp-*"))
    proc = _launch(cfg, 1, "--resume", "train.gradient_accumulation_steps=2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "crash" / "final_256_model" / "adapter_model.safetensors").is_file()


@pytest.mark.slow
def test_fsdp_two_processes_equal_one_process_and_save_a_consolidated_adapter(tmp_path, two_configs):
    """FSDP2 shards base and adapter (norms trained whole too); the saved adapter is whole and equal."""
    extra = {"train_norms": True}
    one = two_configs("one", lora=extra, micro_batch_size=1, gradient_accumulation_steps=2)
    two = two_configs("fsdp", lora=extra, micro_batch_size=1, gradient_accumulation_steps=1, strategy="fsdp")
    assert _launch(one, 1).returncode == 0
    proc = _launch(two, 2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "FSDP2:" in proc.stderr and "sharded over 2 ranks" in proc.stderr
    _assert_same_adapters(tmp_path / "one", tmp_path / "fsdp")
    weights = load_file(str(tmp_path / "fsdp" / "final_256_model" / "adapter_model.safetensors"))
    assert any("norm" in k for k in weights) and weights  # modules trained whole are saved too
    h1 = json.loads((tmp_path / "one" / "Phase_1a_Short" / "trainer_state.json").read_text())["log_history"]
    h2 = json.loads((tmp_path / "fsdp" / "Phase_1a_Short" / "trainer_state.json").read_text())["log_history"]
    assert [round(r["loss"], 5) for r in h1] == [round(r["loss"], 5) for r in h2]
    assert _tree(tmp_path / "one") - {"fathom_config.yaml"} == _tree(tmp_path / "fsdp") - {"fathom_config.yaml"}


@pytest.mark.slow
def test_fsdp_resumes_a_single_process_checkpoint_and_is_resumed_by_one(tmp_path, two_configs):
    """Optimizer state is saved whole and sharded on load: 1 process -> FSDP x2 -> 1 process, no row twice."""
    straight = two_configs("straight", micro_batch_size=1, gradient_accumulation_steps=2)
    assert _launch(straight, 1).returncode == 0
    mixed = two_configs("mixed", micro_batch_size=1, gradient_accumulation_steps=2)
    assert _launch(mixed, 1, "train.max_steps=3").returncode == 0
    proc = _launch(
        mixed, 2, "--resume", "train.max_steps=6", "train.gradient_accumulation_steps=1", "train.strategy=fsdp"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "mixed" / "checkpoints" / "step-0000006").is_dir()
    proc = _launch(mixed, 1, "--resume", "train.max_steps=0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    _assert_same_adapters(tmp_path / "straight", tmp_path / "mixed")
    logged = json.loads((tmp_path / "mixed" / "Phase_1a_Short" / "trainer_state.json").read_text())
    assert [r["step"] for r in logged["log_history"]] == list(range(1, 9))


@pytest.mark.slow
def test_accelerate_fsdp_config_selects_fsdp_and_evaluates_on_every_rank(tmp_path, two_configs):
    """The shipped FSDP config; end-of-phase evaluation runs sharded (every rank takes part)."""
    cfg = two_configs(
        "acc", evaluation={"enabled": True, "depths": 2}, micro_batch_size=1, gradient_accumulation_steps=1
    )
    shipped = REPO / "configs" / "accelerate" / "fsdp.yaml"
    proc = _accelerate_launch(cfg, "--config_file", str(shipped))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "train.strategy auto: fsdp" in proc.stderr and "sharded over 2 ranks" in proc.stderr
    assert "Phase_1c_Long eval: needle_acc/256 " in proc.stderr and "evaluation failed" not in proc.stderr
    assert (tmp_path / "acc" / "final_256_model" / "adapter_model.safetensors").is_file()
