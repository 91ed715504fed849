"""End-to-end: the real CLI trains tiny models through three phases and leaves the promised outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import small_run_config, write_config
from safetensors.torch import load_file

from fathom.cli import main

PHASES = ["Phase_1a_Short", "Phase_1b_Medium", "Phase_1c_Long"]


def _events(log_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def _scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    acc = _events(log_dir)
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _texts(log_dir: Path) -> list[str]:
    acc = _events(log_dir)
    out = []
    for tag in acc.Tags()["tensors"]:
        for event in acc.Tensors(tag):
            out.extend(v.decode() for v in event.tensor_proto.string_val)
    return out


def _run(tmp_path: Path, cfg: dict, *extra: str) -> int:
    return main(["train", "--config", str(write_config(tmp_path / "run.yaml", cfg)), *extra])


def _assert_run_outputs(out: Path, cfg: dict, base: Path) -> None:
    # --- the output tree
    for phase in PHASES:
        folder = out / phase
        for name in (
            "adapter_model.safetensors",
            "adapter_config.json",
            "tokenizer_config.json",
            "trainer_state.json",
            "fathom_config.yaml",
        ):
            assert (folder / name).is_file(), f"{folder / name} missing"
        assert list((folder / "logs").glob("events.out.tfevents.*")), f"{phase} has no TensorBoard events"
    final = out / "final_256_model"
    for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer_config.json"):
        assert (final / name).is_file()
    assert not list(out.rglob(".tmp-*")), "temporary folders were left behind"
    assert not list(out.rglob("*.bin")), "only safetensors are written"

    # --- the per-phase token split (planned 50% / 25% / 25%)
    total = cfg["train"]["total_tokens"]
    for phase, share in zip(PHASES, (0.5, 0.25, 0.25), strict=True):
        state = json.loads((out / phase / "trainer_state.json").read_text())
        assert state["phase_complete"] and state["phase_name"] == phase
        assert abs(state["phase_tokens_seen"] - share * total) <= 0.02 * share * total

    # --- TensorBoard: every phase on one global step axis, transitions visible
    steps_seen = []
    for index, phase in enumerate(PHASES):
        scalars = _scalars(out / phase / "logs")
        for tag in (
            "train/loss",
            "train/learning_rate",
            "train/tokens_seen",
            "train/tokens_per_second",
            "train/grad_norm",
            "train/seq_len",
            "train/phase_index",
            "train/peak_memory_gb",
        ):
            assert scalars.get(tag), f"{phase}: no {tag}"
        assert {v for _, v in scalars["train/phase_index"]} == {index}
        assert {v for _, v in scalars["train/seq_len"]} == {64 * 2**index}
        steps_seen.append([s for s, _ in scalars["train/loss"]])
        assert any(phase in text and "begins" in text for text in _texts(out / phase / "logs"))
    assert steps_seen[0][-1] < steps_seen[1][0] and steps_seen[1][-1] < steps_seen[2][0]
    tokens = _scalars(out / PHASES[-1] / "logs")["train/tokens_seen"]
    assert tokens[-1][1] == total

    # --- the adapter moved from phase to phase
    first = load_file(str(out / PHASES[0] / "adapter_model.safetensors"))
    last = load_file(str(final / "adapter_model.safetensors"))
    assert first.keys() == last.keys()
    assert any(not torch.equal(first[k], last[k]) for k in first)

    # --- the guide's loading code works on the result, unchanged
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base_model = AutoModelForCausalLM.from_pretrained(str(base), device_map="auto", torch_dtype="auto")
    model = PeftModel.from_pretrained(base_model, str(final))
    tokenizer = AutoTokenizer.from_pretrained(str(final))
    inputs = tokenizer("Rule 19. Conduct of vessels in restricted visibility", return_tensors="pt").to(model.device)
    outputs = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert outputs.shape[1] == inputs["input_ids"].shape[1] + 4
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)


@pytest.mark.slow
def test_three_phases_on_the_real_corpus_with_a_real_tokenizer(tmp_path, real_model_dir, real_corpus):
    """Qwen2.5's tokenizer on the maritime corpus where ../shared exists, else SmolLM2's on the synthetic one."""
    out = tmp_path / "qwen-maritime-longcontext-cpt"
    cfg = small_run_config(real_model_dir, [real_corpus], out)
    assert _run(tmp_path, cfg) == 0
    _assert_run_outputs(out, cfg, real_model_dir)
    state = json.loads((out / "Phase_1c_Long" / "trainer_state.json").read_text())
    assert state["log_history"][-1]["tokens_seen"] == cfg["train"]["total_tokens"]


@pytest.mark.slow
def test_three_phases_need_nothing_from_shared(tmp_path, local_model_dir, synthetic_corpus):
    out = tmp_path / "run"
    cfg = small_run_config(local_model_dir, [synthetic_corpus], out)
    assert _run(tmp_path, cfg) == 0
    _assert_run_outputs(out, cfg, local_model_dir)


@pytest.mark.slow
def test_resume_after_interruption_gives_the_uninterrupted_result(tmp_path, local_model_dir, synthetic_corpus):
    straight = tmp_path / "straight"
    cfg = small_run_config(local_model_dir, [synthetic_corpus], straight, save_every_steps=3)
    cfg["lora"]["dropout"] = 0.1  # dropout draws random numbers: the RNG state must be restored too
    assert _run(tmp_path, cfg) == 0

    resumed = tmp_path / "resumed"
    cfg["output_dir"] = str(resumed)
    # stop in the middle of phase 1a (its 12 steps), then in the middle of phase 1b
    assert _run(tmp_path, cfg, "train.max_steps=5") == 0
    state = json.loads(next((resumed / "checkpoints").glob("step-0000005/trainer_state.json")).read_text())
    assert (state["phase_name"], state["phase_step"], state["phase_rows_consumed"]) == (
        "Phase_1a_Short",
        5,
        20,
    )
    assert not (resumed / "Phase_1a_Short" / "adapter_model.safetensors").exists()

    # without --resume the run refuses to touch the folder
    assert _run(tmp_path, cfg) == 1
    assert (resumed / "checkpoints" / "step-0000005").is_dir()

    assert _run(tmp_path, cfg, "--resume", "train.max_steps=15") == 0
    assert _run(tmp_path, cfg, "--resume") == 0
    for phase in [*PHASES, "final_256_model"]:
        a = load_file(str(straight / phase / "adapter_model.safetensors"))
        b = load_file(str(resumed / phase / "adapter_model.safetensors"))
        for key in a:
            assert torch.allclose(a[key], b[key], atol=1e-6), f"{phase}/{key} differs after resume"
    logged = [s for s, _ in _scalars(resumed / "Phase_1a_Short" / "logs")["train/loss"]]
    assert sorted(logged) == list(range(1, 13)), "resumed run logged some steps twice or missed some"
    # a finished run resumed again does nothing and says so
    assert _run(tmp_path, cfg, "--resume") == 0


@pytest.mark.slow
def test_resume_refuses_a_changed_schedule(tmp_path, local_model_dir, synthetic_corpus, capsys):
    cfg = small_run_config(local_model_dir, [synthetic_corpus], tmp_path / "run")
    assert _run(tmp_path, cfg, "train.max_steps=2") == 0
    cfg["train"]["total_tokens"] = 12288
    assert _run(tmp_path, cfg, "--resume") == 2
    assert "train.total_tokens: differs from the run being resumed" in capsys.readouterr().err


@pytest.mark.slow
def test_not_progressive_trains_one_phase_at_the_longest_length(tmp_path, local_model_dir, synthetic_corpus):
    out = tmp_path / "direct"
    cfg = small_run_config(local_model_dir, [synthetic_corpus], out, progressive=False, total_tokens=2048)
    assert _run(tmp_path, cfg) == 0
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == [
        "Phase_1c_Long",
        "checkpoints",
        "final_256_model",
    ]
    state = json.loads((out / "Phase_1c_Long" / "trainer_state.json").read_text())
    assert state["phase_tokens_seen"] == 2048


@pytest.mark.slow
def test_embeddings_and_norms_train_and_save_with_the_adapter(tmp_path, local_model_dir, synthetic_corpus):
    out = tmp_path / "longlora"
    cfg = small_run_config(local_model_dir, [synthetic_corpus], out, total_tokens=1024)
    cfg["lora"].update(train_embeddings=True, train_norms=True)
    assert _run(tmp_path, cfg) == 0
    weights = load_file(str(out / "final_256_model" / "adapter_model.safetensors"))
    assert any("embed_tokens" in k for k in weights)
    assert any("input_layernorm" in k for k in weights) and any(k.endswith("model.norm.weight") for k in weights)

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(local_model_dir))
    before = base.model.norm.weight.detach().clone()
    model = PeftModel.from_pretrained(base, str(out / "final_256_model"))
    trained_norm = model.get_base_model().model.norm
    assert not torch.equal(trained_norm(torch.ones(1, 64)), torch.ones(1, 64) * before)


@pytest.mark.slow
@pytest.mark.parametrize("bits", ["load_in_8bit", "load_in_4bit"])
def test_quantized_base_trains_on_cpu(tmp_path, local_model_dir, synthetic_corpus, bits):
    pytest.importorskip("bitsandbytes", reason="the 8/4-bit path needs bitsandbytes (pip install 'fathom[quant]')")
    out = tmp_path / bits
    cfg = small_run_config(local_model_dir, [synthetic_corpus], out, total_tokens=1024)
    cfg["model"][bits] = True
    assert _run(tmp_path, cfg) == 0
    state = json.loads((out / "Phase_1c_Long" / "trainer_state.json").read_text())
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in state["log_history"])
    first = load_file(str(out / "Phase_1a_Short" / "adapter_model.safetensors"))
    final = load_file(str(out / "final_256_model" / "adapter_model.safetensors"))
    assert any(not torch.equal(first[k], final[k]) for k in first)
    # the log counts the quantized base's weights whole (4-bit packs two in a byte)
    import re

    from transformers import AutoModelForCausalLM

    trainable, total = re.search(r"([\d,]+) trainable of ([\d,]+) parameters", (out / "train.log").read_text()).groups()
    base = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(local_model_dir).parameters())
    assert int(total.replace(",", "")) == base + int(trainable.replace(",", ""))


@pytest.mark.slow
def test_ctrl_c_saves_the_last_completed_step_and_resume_matches(
    tmp_path, local_model_dir, synthetic_corpus, monkeypatch
):
    import fathom.train.loop as loop

    straight = tmp_path / "straight"
    cfg = small_run_config(local_model_dir, [synthetic_corpus], straight, save_every_steps=0)
    cfg["lora"]["dropout"] = 0.1
    assert _run(tmp_path, cfg) == 0

    interrupted = tmp_path / "interrupted"
    cfg["output_dir"] = str(interrupted)
    real_loss, calls = loop.causal_lm_loss_sum, {"n": 0}

    def loss_then_ctrl_c(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 16:  # the 2nd micro-batch of step 8 (2 micro-batches a step)
            raise KeyboardInterrupt
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(loop, "causal_lm_loss_sum", loss_then_ctrl_c)
    assert _run(tmp_path, cfg) == 130
    monkeypatch.setattr(loop, "causal_lm_loss_sum", real_loss)
    saved = json.loads((interrupted / "checkpoints" / "step-0000007" / "trainer_state.json").read_text())
    assert (saved["phase_step"], saved["phase_rows_consumed"]) == (7, 28)
    assert _run(tmp_path, cfg, "--resume") == 0
    a = load_file(str(straight / "final_256_model" / "adapter_model.safetensors"))
    b = load_file(str(interrupted / "final_256_model" / "adapter_model.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides",
    [["train.offload_activations=true"], ["train.loss_implementation=plain"], ["model.gradient_checkpointing=false"]],
)
def test_memory_options_train_to_the_same_adapter(tmp_path, local_model_dir, synthetic_corpus, overrides):
    reference = tmp_path / "reference"
    cfg = small_run_config(local_model_dir, [synthetic_corpus], reference, total_tokens=1024)
    assert _run(tmp_path, cfg) == 0
    cfg["output_dir"] = str(tmp_path / "variant")
    assert _run(tmp_path, cfg, *overrides) == 0
    a = load_file(str(reference / "final_256_model" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "variant" / "final_256_model" / "adapter_model.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a), overrides


def test_missing_bitsandbytes_fails_with_the_install_command(monkeypatch):
    import importlib.util

    from fathom.config import ConfigError, ModelConfig
    from fathom.model.load import quantization_config

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a)
    )
    with pytest.raises(ConfigError, match=r"model.load_in_8bit: needs bitsandbytes: pip install 'fathom\[quant\]'"):
        quantization_config(ModelConfig(load_in_8bit=True), torch.float32)


def test_unreachable_hub_model_gives_one_clear_line(tmp_path, synthetic_corpus, monkeypatch, capsys):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # no network retries in tests
    cfg = small_run_config(Path("no-such-org/no-such-model"), [synthetic_corpus], tmp_path / "x")
    assert _run(tmp_path, cfg) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("fathom: error: model.name_or_path: 'no-such-org/no-such-model'")
    assert not (tmp_path / "x").exists()


def test_a_corpus_too_small_for_its_schedule_is_named_before_training(tmp_path, local_model_dir, capsys):
    # three notes of a few dozen tokens each: 6,144 tokens see them dozens of times, and no note reaches
    # half of the 128- or 256-token rows of the later phases
    notes = tmp_path / "notes"
    notes.mkdir()
    for i in range(3):
        (notes / f"note{i}.txt").write_text(f"Bunker note {i}: 120 tonnes of fuel oil received at Rotterdam.\n")
    cfg = small_run_config(local_model_dir, [notes], tmp_path / "out", max_steps=1)
    cfg["data"]["cache_dir"] = str(tmp_path / "cache")
    config = write_config(tmp_path / "run.yaml", cfg)
    assert main(["data", "stats", "--config", str(config)]) == 0
    printed = capsys.readouterr().out
    assert "warning: Phase 1 shows each training document up to" in printed
    assert "warning: Phase_1b_Medium: no training document has 64 tokens" in printed
    assert "warning: Phase_1c_Long: no training document has 128 tokens" in printed
    assert "Phase_1a_Short: no training" not in printed  # the first phase learns the domain on short rows
    assert main(["plan", "--config", str(config)]) == 0  # the plan reads the prepared lengths and says so too
    assert "warning: Phase_1c_Long: no training document has 128 tokens" in capsys.readouterr().out
    assert main(["train", "--config", str(config)]) == 0
    logged = capsys.readouterr().err
    assert "WARNING: Phase 1 shows each training document up to" in logged
    assert "WARNING: Phase_1c_Long: no training document has 128 tokens" in logged
    assert logged.index("WARNING: Phase 1 shows") < logged.index("LoRA r=")  # before the model loads

    # Phase 1 finished, then continued into Phase 2 with --resume: the warnings were about phases already
    # trained, so they are not logged again (Phase 2's replay still reads the corpus)
    cfg["train"].pop("max_steps")
    cfg["output_dir"] = str(tmp_path / "whole")
    assert main(["train", "--config", str(write_config(tmp_path / "whole.yaml", cfg))]) == 0
    assert "WARNING: Phase 1 shows" in capsys.readouterr().err
    qa = tmp_path / "qa.jsonl"
    record = {"document": (notes / "note0.txt").read_text(), "question": "Where?", "answer": "Rotterdam"}
    qa.write_text(json.dumps(record) + "\n")
    cfg["sft"] = {"paths": [str(qa)], "max_seq_length": 128, "total_tokens": 256, "replay_fraction": 0.25}
    assert main(["train", "--config", str(write_config(tmp_path / "whole.yaml", cfg)), "--resume"]) == 0
    logged = capsys.readouterr().err
    assert "it continues with Phase 2" in logged and "WARNING: Phase" not in logged
