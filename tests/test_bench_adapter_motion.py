"""bench/adapter_motion.py: how far Phase 2 moves an adapter, and how much along Phase 1's way (safetensors only)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parent.parent
MODULES = ("base_model.model.model.layers.0.self_attn.q_proj", "base_model.model.model.layers.0.mlp.up_proj")


@pytest.fixture(scope="module")
def motion_bench():
    spec = importlib.util.spec_from_file_location("bench_adapter_motion", ROOT / "bench" / "adapter_motion.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_adapter_motion"] = module
    spec.loader.exec_module(module)
    return module


def _adapter(folder: Path, factors: dict[str, tuple[torch.Tensor, torch.Tensor]], r=2, alpha=8) -> Path:
    """A PEFT LoRA folder as fathom saves one: adapter_config.json and adapter_model.safetensors."""
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"r": r, "lora_alpha": alpha, "peft_type": "LORA"}))
    tensors = {}
    for module, (a, b) in factors.items():
        tensors[f"{module}.lora_A.weight"] = a.contiguous()
        tensors[f"{module}.lora_B.weight"] = b.contiguous()
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    return folder


def _factors(seed: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return {m: (torch.randn(2, 6, generator=g), torch.randn(5, 2, generator=g)) for m in MODULES}


def test_the_product_is_compared_with_its_scale_and_the_motion_read_from_it(motion_bench, tmp_path):
    first = _factors(0)
    p1 = _adapter(tmp_path / "p1", first)
    delta = motion_bench.adapter_delta(p1)
    a, b = first[MODULES[0]]
    assert torch.allclose(delta[MODULES[0]], 4.0 * b @ a)  # alpha / r = 8 / 2

    # Phase 2 that goes on the way Phase 1 went, half as far again (B scaled; A refactored by 2, B by 0.75)
    along = {m: (2 * a_, 0.75 * b_) for m, (a_, b_) in first.items()}
    m = motion_bench.motion(delta, motion_bench.adapter_delta(_adapter(tmp_path / "along", along)))
    assert m["cos_phase2_move_phase1"] == pytest.approx(1.0)
    assert m["phase2_move_norm"] == pytest.approx(0.5 * m["phase1_norm"])

    # a Phase 2 that undoes Phase 1 moves against it
    m = motion_bench.motion(delta, {k: torch.zeros_like(v) for k, v in delta.items()})
    assert m["cos_phase2_move_phase1"] == pytest.approx(-1.0)
    assert m["phase2_move_norm"] == pytest.approx(m["phase1_norm"])


def test_a_run_folder_is_read_through_its_config_and_bad_input_gets_one_line(motion_bench, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(ROOT / "src" / "fathom" / "presets" / "demo-smollm2.yaml", run / "fathom_config.yaml")
    with pytest.raises(SystemExit, match="final_1k_model: missing"):
        motion_bench.main([str(run)])
    _adapter(run / "final_1k_model", _factors(0))
    _adapter(run / "final_512_instruct_model", _factors(1))
    motion_bench.main([str(run)])
    row = capsys.readouterr().out.splitlines()[-1]
    assert row.startswith(f"| {run / 'final_512_instruct_model'} |")

    saved = yaml.safe_load((run / "fathom_config.yaml").read_text())
    saved["sft"]["lora_init"] = "merged"
    (run / "fathom_config.yaml").write_text(yaml.safe_dump(saved))
    with pytest.raises(SystemExit, match="lora_init is merged"):
        motion_bench.main([str(run)])

    with pytest.raises(SystemExit, match="not a PEFT adapter folder"):
        motion_bench.main(["--phase1", str(run / "final_1k_model"), "--phase2", str(tmp_path / "nowhere")])

    other = _adapter(tmp_path / "other", {MODULES[0]: _factors(2)[MODULES[0]]})
    with pytest.raises(SystemExit, match="different modules"):
        motion_bench.main(["--phase1", str(run / "final_1k_model"), "--phase2", str(other)])
    with pytest.raises(SystemExit, match="no LoRA weights"):
        save_file({"x": torch.zeros(1)}, str(other / "adapter_model.safetensors"))
        motion_bench.adapter_delta(other)
