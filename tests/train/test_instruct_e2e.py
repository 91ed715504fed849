"""Phase 2 through the real CLI: Phase 1 then instruction tuning on the same LoRA, its folders, plan, logs, resume."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from helpers import small_run_config, write_config
from safetensors.torch import load_file

from fathom.cli import main
from fathom.demo.corpus import generate_documents

PHASE_2 = "Phase_2_Instruct"


@pytest.fixture(scope="module")
def qa_folder(tmp_path_factory) -> Path:
    """Document-QA records about synthetic voyage logs (which vessel, which port), plus a chat and an Alpaca one."""
    folder = tmp_path_factory.mktemp("qa")
    lines = []
    for _name, text in generate_documents(9, seed=11):
        vessel = re.search(r"(M[VT] [A-Z][\w-]+(?: [A-Z][\w-]+)*)", text).group(1)
        lines.append({"document": text, "question": "Which vessel is this record about?", "answer": vessel})
    lines.append(
        {"messages": [{"role": "user", "content": "Port of Hamburg?"}, {"role": "assistant", "content": "Germany"}]}
    )
    lines.append({"instruction": "Spell SOLAS out.", "output": "Safety of Life at Sea"})
    (folder / "qa.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\n", encoding="utf-8")
    return folder


def _config(folder: Path, model: Path, corpus: Path, qa: Path, out: Path, **sft) -> Path:
    """Phase 1 of 6 steps (64 / 128 / 256), then Phase 2 at 512 tokens with a quarter of its rows replayed."""
    cfg = small_run_config(model, [corpus], out, total_tokens=2048)
    cfg["sft"] = {"paths": [str(qa)], "max_seq_length": 512, "epochs": 2, "learning_rate": 2e-3}
    cfg["sft"].update({"replay_fraction": 0.25, **sft})
    return write_config(folder / f"{out.name}.yaml", cfg)


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory, local_model_dir, synthetic_corpus, qa_folder) -> tuple[Path, Path]:
    """(config, output folder) of one uninterrupted Phase 1 + Phase 2 run, shared by the tests below."""
    folder = tmp_path_factory.mktemp("phase2")
    config = _config(folder, local_model_dir, synthetic_corpus, qa_folder, folder / "straight")
    assert main(["train", "--config", str(config)]) == 0
    return config, folder / "straight"


@pytest.mark.slow
def test_phase_1_then_phase_2_leaves_both_finals_and_logs_supervised_tokens(straight_run, local_model_dir, capsys):
    config, out = straight_run
    assert main(["plan", "--config", str(config), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert [p["kind"] for p in plan["phases"]] == ["pretrain"] * 3 + ["sft"]
    sft_plan = plan["phases"][3]
    assert sft_plan["name"] == PHASE_2 and sft_plan["rows"] > 0 and sft_plan["learning_rate"] == 2e-3
    assert (plan["final_model_dir"], plan["final_instruct_model_dir"]) == (
        "final_256_model",
        "final_512_instruct_model",
    )

    for folder in ("Phase_1a_Short", "Phase_1c_Long", PHASE_2, "final_256_model", "final_512_instruct_model"):
        assert (out / folder / "adapter_model.safetensors").is_file(), folder
    state = json.loads((out / PHASE_2 / "trainer_state.json").read_text())
    assert state["phase_name"] == PHASE_2 and state["supervised_tokens_seen"] > 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / PHASE_2 / "logs"))
    events.Reload()
    supervised = [e.value for e in events.Scalars("train/supervised_tokens")]
    assert supervised == sorted(supervised) and supervised[-1] == state["supervised_tokens_seen"]
    assert [e.step for e in events.Scalars("train/loss")][-1] == plan["total_steps"]
    # Phase 1's final adapter is what Phase 1 left; the instruct one moved on from it
    phase_1 = load_file(str(out / "final_256_model" / "adapter_model.safetensors"))
    last_phase_1 = load_file(str(out / "Phase_1c_Long" / "adapter_model.safetensors"))
    assert all(torch.equal(v, last_phase_1[k]) for k, v in phase_1.items())
    instruct = load_file(str(out / "final_512_instruct_model" / "adapter_model.safetensors"))
    assert any(not torch.equal(phase_1[k], instruct[k]) for k in phase_1)

    # the instruct folder loads with plain transformers + peft and carries the chat template
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(out / "final_512_instruct_model")
    assert tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template
    base = AutoModelForCausalLM.from_pretrained(local_model_dir)
    model = PeftModel.from_pretrained(base, out / "final_512_instruct_model")
    messages = [{"role": "user", "content": "Which vessel?"}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    assert model.generate(**prompt, max_new_tokens=3, do_sample=False).shape[1] == prompt["input_ids"].shape[1] + 3


@pytest.mark.slow
def test_interrupted_inside_phase_2_and_resumed_equals_the_uninterrupted_run(
    tmp_path, straight_run, local_model_dir, synthetic_corpus, qa_folder
):
    _, straight = straight_run
    resumed = tmp_path / "resumed"
    config = str(_config(tmp_path, local_model_dir, synthetic_corpus, qa_folder, resumed))
    assert main(["train", "--config", config, "train.max_steps=8"]) == 0  # Phase 1 has 6 steps: 8 is in Phase 2
    last = sorted((resumed / "checkpoints").glob("step-*"))[-1]
    state = json.loads((last / "trainer_state.json").read_text())
    assert state["phase_name"] == PHASE_2 and state["phase_step"] > 0
    assert not (resumed / "final_512_instruct_model").exists() and (resumed / "final_256_model").is_dir()
    assert main(["train", "--config", config, "--resume"]) == 0
    for folder in (PHASE_2, "final_512_instruct_model"):
        a = load_file(str(straight / folder / "adapter_model.safetensors"))
        b = load_file(str(resumed / folder / "adapter_model.safetensors"))
        assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a), folder


@pytest.mark.slow
def test_phase_2_alone_from_a_given_adapter(
    tmp_path, straight_run, local_model_dir, synthetic_corpus, qa_folder, capsys
):
    _, first = straight_run
    alone = tmp_path / "alone"
    config = _config(
        tmp_path,
        local_model_dir,
        synthetic_corpus,
        qa_folder,
        alone,
        replay_fraction=0.0,
        init_adapter=str(first / "final_256_model"),
        learning_rate=1e-12,
        epochs=0.5,
    )
    capsys.readouterr()
    assert main(["train", "--config", str(config), "train.schedule=[]", "data.paths=[/nonexistent]"]) == 0
    assert "Phase 2 starts from the adapter in" in capsys.readouterr().err
    assert sorted(p.name for p in alone.iterdir() if not p.name.startswith(".")) == [
        PHASE_2,
        "checkpoints",
        "data_summary.json",  # Phase 2's examples only: no corpus was read
        "fathom_config.yaml",
        "final_512_instruct_model",
        "report.html",  # the run on one page (fathom report)
        "status.json",
        "train.log",
    ]
    assert list(json.loads((alone / "data_summary.json").read_text())) == ["instructions"]
    # with a learning rate of ~0, Phase 2 ends where it started: at the given adapter, not at a fresh LoRA
    given = load_file(str(first / "final_256_model" / "adapter_model.safetensors"))
    ended = load_file(str(alone / "final_512_instruct_model" / "adapter_model.safetensors"))
    assert given.keys() == ended.keys() and all(torch.allclose(given[k], ended[k], atol=1e-6) for k in given)
    assert any(given[k].abs().sum() > 0 for k in given if "lora_B" in k)


@pytest.mark.slow
def test_qa_build_data_stats_and_eval_qa_through_the_cli(tmp_path, straight_run, local_model_dir, capsys):
    config, out = straight_run
    assert main(["data", "stats", "--config", str(config), "--json"]) == 0
    sft = json.loads(capsys.readouterr().out)["sft"]
    assert sft["by_format"] == {"document_qa": 9, "chat": 1, "alpaca": 1} and sft["examples"] == 11
    assert sft["supervised_tokens"] > 0 and sft["prompt_tokens"] > sft["supervised_tokens"]

    qa = tmp_path / "qa_built.jsonl"
    assert main(["qa", "build", "--config", str(config), "--out", str(qa), "--lengths", "256,512"]) == 0
    records = [json.loads(line) for line in qa.read_text(encoding="utf-8").splitlines()]
    assert records and {r["context_tokens"] for r in records} <= {256, 512} and all(r["answer"] for r in records)
    assert main(["qa", "build", "--config", str(config), "--out", str(qa)]) == 2  # never overwritten
    assert "already exists" in capsys.readouterr().err
    short = tmp_path / "qa_short_answers.jsonl"
    assert main(["qa", "build", "--config", str(config), "--out", str(short), "--answer-chars", "30"]) == 0
    answers = [json.loads(line)["answer"] for line in short.read_text(encoding="utf-8").splitlines()]
    assert max(len(a) for a in answers) <= 30 < max(len(r["answer"]) for r in records)
    too_short = ["qa", "build", "--config", str(config), "--out", str(tmp_path / "x.jsonl"), "--answer-chars", "5"]
    assert main(too_short) == 2
    assert "--answer-chars: 5 is too short" in capsys.readouterr().err and not (tmp_path / "x.jsonl").exists()

    report_dir = tmp_path / "eval"
    adapter = str(out / "final_512_instruct_model")
    command = ["eval", "--base", str(local_model_dir), "--adapter", adapter, "--qa", str(qa), "--qa-limit", "3"]
    assert main([*command, "--kinds", "none", "--lengths", "256", "--out", str(report_dir)]) == 0
    results = json.loads((report_dir / "results.json").read_text())
    assert [m["qa"]["n"] for m in results["models"]] == [3, 3]
    assert all(0 <= m["qa"]["f1"] <= 1 and m["qa"]["grid_contains"] for m in results["models"])
    report = (report_dir / "report.md").read_text()
    assert "## Long-document question answering" in report and "| final_512_instruct_model | 3 |" in report
    (paired,) = results["qa_paired"]  # the adapter against the base, question by question
    assert (paired["model"], paired["against"], paired["n"]) == ("final_512_instruct_model", "base", 3)
    assert "- final_512_instruct_model minus base: " in report and paired["low"] <= paired["difference"]
    assert all(len(m["qa"]["contains_interval"]) == 2 for m in results["models"])
    assert (report_dir / "qa_heatmap_final_512_instruct_model.png").stat().st_size > 1000


@pytest.mark.slow
def test_phase_2_evaluates_qa_at_its_end_and_generate_asks_with_the_chat_template(
    tmp_path, local_model_dir, synthetic_corpus, qa_folder, capsys
):
    out = tmp_path / "evaluated"
    config = _config(tmp_path, local_model_dir, synthetic_corpus, qa_folder, out, epochs=0.5)
    overrides = ["eval.enabled=true", "eval.kinds=[passkey]", "data.eval_fraction=0.3", "eval.depths=2"]
    assert main(["train", "--config", str(config), *overrides]) == 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / PHASE_2 / "logs"))
    events.Reload()
    assert {"eval/qa/contains", "eval/qa/f1", "eval/qa/exact_match"} <= set(events.Tags()["scalars"])
    phase_1_events = EventAccumulator(str(out / "Phase_1c_Long" / "logs"))
    phase_1_events.Reload()
    assert "eval/qa/contains" not in phase_1_events.Tags()["scalars"]
    for phase in ("Phase_1a_Short", "Phase_1b_Medium", "Phase_1c_Long", PHASE_2):  # too short for a needle: none
        logged = EventAccumulator(str(out / phase / "logs"))
        logged.Reload()
        evals = [tag for tag in logged.Tags()["scalars"] if tag.startswith("eval/")]
        assert evals and all(math.isfinite(e.value) for tag in evals for e in logged.Scalars(tag)), (phase, evals)

    capsys.readouterr()
    document = next(synthetic_corpus.glob("*voyage*.md"))
    base, instruct = str(local_model_dir), str(out / "final_512_instruct_model")
    ask = ["generate", "--base", base, "--adapter", instruct, "--file", str(document), "--prompt", "Which vessel?"]
    assert main([*ask, "--max-new-tokens", "2"]) == 0
    chat = int(capsys.readouterr().out.split("Input length: ")[1].split(" tokens")[0])
    assert main([*ask, "--max-new-tokens", "2", "--no-chat"]) == 0
    plain = int(capsys.readouterr().out.split("Input length: ")[1].split(" tokens")[0])
    assert chat > plain  # the instruct adapter is asked in a user turn: the template's tokens come on top


@pytest.mark.slow
def test_phase_2_as_a_fresh_lora_over_the_merged_phase_1_resumes_and_loads_with_plain_peft(
    tmp_path, straight_run, local_model_dir, synthetic_corpus, qa_folder
):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    def run(out: Path, *extra: str) -> Path:
        config = _config(tmp_path, local_model_dir, synthetic_corpus, qa_folder, out, lora_init="merged")
        assert main(["train", "--config", str(config), *extra]) == 0
        return config

    merged_run = tmp_path / "merged"
    run(merged_run)
    _, continued = straight_run
    merged_dir = merged_run / "merged_256_model"
    assert (merged_dir / "config.json").is_file() and (merged_dir / "fathom_merge.json").is_file()
    instruct = merged_run / "final_512_instruct_model"
    adapter_config = json.loads((instruct / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == str(merged_dir.resolve())
    assert str(merged_dir.resolve()) in (instruct / "README.md").read_text()  # its loading code names it

    # Phase 1 is the same run either way; the merged folder is the base with the Phase-1 adapter folded in
    phase1 = load_file(str(merged_run / "final_256_model" / "adapter_model.safetensors"))
    same = load_file(str(continued / "final_256_model" / "adapter_model.safetensors"))
    assert all(torch.allclose(phase1[k], same[k], atol=1e-6) for k in phase1)
    ids = torch.tensor([[5, 17, 42, 99, 7, 3, 250, 11]])
    with torch.no_grad():
        on_base = PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(local_model_dir), str(continued / "final_256_model")
        )
        merged = AutoModelForCausalLM.from_pretrained(merged_dir)
        torch.testing.assert_close(merged(ids).logits, on_base(ids).logits, atol=1e-4, rtol=1e-4)
        # the instruct adapter is a new LoRA of the same shapes, trained over the merged weights
        model = PeftModel.from_pretrained(merged, str(instruct))
        assert model(ids).logits.shape == on_base(ids).logits.shape
    from fathom.model.adapter import read_adapter, warn_if_trained_over_another_base

    assert warn_if_trained_over_another_base(str(local_model_dir), read_adapter(instruct))  # the wrong base: said
    assert not warn_if_trained_over_another_base(str(merged_dir), read_adapter(instruct))
    fresh = load_file(str(instruct / "adapter_model.safetensors"))
    assert fresh.keys() == phase1.keys() and not all(torch.allclose(fresh[k], phase1[k]) for k in fresh)

    # stopped inside Phase 2 and resumed: the merged weights are made again, the result is the same
    resumed = tmp_path / "resumed"
    run(resumed, "train.max_steps=8")
    state = json.loads((sorted((resumed / "checkpoints").glob("step-*"))[-1] / "trainer_state.json").read_text())
    assert state["phase_name"] == PHASE_2 and state["phase_step"] > 0
    run(resumed, "--resume")
    b = load_file(str(resumed / "final_512_instruct_model" / "adapter_model.safetensors"))
    assert all(torch.allclose(fresh[k], b[k], atol=1e-6) for k in fresh)


@pytest.mark.slow
def test_phase_2_added_to_a_finished_phase_1_run_with_resume(
    tmp_path, straight_run, local_model_dir, synthetic_corpus, qa_folder, capsys
):
    """The README's path: Phase 1 alone, then the same config with an sft section and --resume continues the
    run into Phase 2 (before, the hints went in a circle: 'pass --resume', then 'sft differs')."""
    _, straight = straight_run
    out = tmp_path / "added"
    config = str(_config(tmp_path, local_model_dir, synthetic_corpus, qa_folder, out))
    phase_1_only = [f"--config={config}", "sft=null"]
    assert main(["train", *phase_1_only]) == 0
    assert (out / "final_256_model").is_dir() and not (out / "final_512_instruct_model").exists()
    capsys.readouterr()
    assert main(["train", "--config", config]) == 1  # without --resume: refused, and the hint says --resume
    assert "pass --resume to continue it (also to add Phase 2" in capsys.readouterr().err
    assert main(["train", "--config", config, "--resume"]) == 0
    assert "the run's Phase 1 is complete; it continues with Phase 2" in capsys.readouterr().err
    a = load_file(str(straight / "final_512_instruct_model" / "adapter_model.safetensors"))
    b = load_file(str(out / "final_512_instruct_model" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert main(["train", "--config", config, "--resume"]) == 0  # and now the whole run is complete
    assert "is already complete" in capsys.readouterr().err


def test_plan_says_the_passes_phase_2_makes_over_its_examples(
    tmp_path, local_model_dir, synthetic_corpus, qa_folder, capsys
):
    """Passes over the questions are what Phase 2's gain comes from (docs/benchmarks.md), so plan says them,
    for a budget in tokens too, and how many tokens make one pass where a budget leaves most examples out."""
    by_epochs = _config(tmp_path, local_model_dir, synthetic_corpus, qa_folder, tmp_path / "epochs")
    assert main(["plan", "--config", str(by_epochs), "--json"]) == 0
    two = json.loads(capsys.readouterr().out)["phases"][-1]
    assert 2 <= two["passes_over_examples"] < 2.2  # sft.epochs 2, rounded up to whole rows
    assert two["passes_over_examples"] == round(two["rows"] * 0.75 / two["example_rows_per_pass"], 3)

    small = _config(tmp_path, local_model_dir, synthetic_corpus, qa_folder, tmp_path / "small", total_tokens=1024)
    assert main(["plan", "--config", str(small), "--json"]) == 0
    part = json.loads(capsys.readouterr().out)["phases"][-1]
    assert part["rows"] == 2 and part["passes_over_examples"] == round(2 * 0.75 / part["example_rows_per_pass"], 3) < 1
    assert main(["plan", "--config", str(small)]) == 0
    text = " ".join(capsys.readouterr().out.split())
    one_pass = math.ceil(part["example_rows_per_pass"] / 0.75) * 512  # what sft.epochs: 1 would train
    assert part["tokens_per_pass"] == one_pass
    assert f"{PHASE_2}: {part['passes_over_examples']:.2g} passes over its examples" in text
    assert f"most examples are never trained on: sft.epochs sets passes, or sft.total_tokens={one_pass:,}" in text


def _adam_steps(checkpoint: Path) -> set[int]:
    """The step counts AdamW holds in a checkpoint: how many updates its moments have seen."""
    from fathom.train.checkpoint import RunLayout

    optimizer = RunLayout.load_checkpoint(checkpoint).optimizer
    return {int(entry["step"]) for entry in optimizer["state"].values()}


@pytest.mark.slow
def test_phase_2_starts_with_a_fresh_optimizer_unless_told_to_continue(
    tmp_path, straight_run, local_model_dir, synthetic_corpus, qa_folder
):
    """By default Phase 2 is its own stage with a new AdamW, as in LLaMA-Factory or TRL; sft.optimizer_state:
    continue keeps Phase 1's moments (docs/benchmarks.md measures both on the demo)."""
    _, straight = straight_run
    last = sorted((straight / "checkpoints").glob("step-*"))[-1]
    state = json.loads((last / "trainer_state.json").read_text())
    assert state["phase_name"] == PHASE_2 and state["global_step"] > 6  # Phase 1 has 6 steps
    assert _adam_steps(last) == {state["global_step"] - 6}  # Phase 2's updates only

    kept = tmp_path / "kept"
    config = _config(tmp_path, local_model_dir, synthetic_corpus, qa_folder, kept, optimizer_state="continue")
    assert main(["train", "--config", str(config), "train.max_steps=7"]) == 0  # Phase 1 has 6 steps
    last = sorted((kept / "checkpoints").glob("step-*"))[-1]
    assert json.loads((last / "trainer_state.json").read_text())["phase_step"] == 1
    assert _adam_steps(last) == {7}  # Phase 1's six updates and Phase 2's first
