"""One run per output folder, leftovers of killed writes cleared, folders of other things never written to."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import small_run_config, write_config

from fathom.cli import main
from fathom.train.checkpoint import RunLayout

pytestmark = pytest.mark.faults


def _errors(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("fathom: error:")]


def _config(tmp_path: Path, model: Path, corpus: Path, out: Path) -> str:
    return str(write_config(tmp_path / "c.yaml", small_run_config(model, [corpus], out, total_tokens=1024)))


def test_a_second_run_into_a_folder_in_use_stops_at_once_naming_the_holder(
    tmp_path, local_model_dir, synthetic_corpus, capsys
):
    out = tmp_path / "run"
    config = _config(tmp_path, local_model_dir, synthetic_corpus, out)
    with RunLayout(out).locked():  # another fathom train holds it
        assert main(["train", "--config", config]) == 1
    (error,) = _errors(capsys)
    assert error.startswith(f"fathom: error: output_dir: {out} is in use by another fathom train (pid {os.getpid()} on")
    assert not (out / "checkpoints").exists()


@pytest.mark.slow
def test_leftovers_of_killed_writes_are_removed_and_the_lock_is_released(
    tmp_path, local_model_dir, synthetic_corpus, capsys
):
    out = tmp_path / "run"
    config = _config(tmp_path, local_model_dir, synthetic_corpus, out)
    assert main(["train", "--config", config, "train.max_steps=2"]) == 0
    for leftover in (out / ".tmp-final_256_model-x1", out / "checkpoints" / ".tmp-step-0000003-y2", out / ".old-x"):
        leftover.mkdir(parents=True)
        (leftover / "adapter_model.safetensors").write_bytes(b"half")
    (out / ".tmp-fathom_config.yaml").write_text("half", encoding="utf-8")  # a killed atomic_write_text
    assert main(["train", "--config", config, "--resume", "train.max_steps=0"]) == 0  # overrides after --resume
    assert "removed 4 unfinished temporary file(s)" in capsys.readouterr().err
    assert not [p for p in [*out.iterdir(), *(out / "checkpoints").iterdir()] if p.name.startswith((".tmp-", ".old-"))]
    assert (out / "final_256_model" / "adapter_model.safetensors").is_file()
    with RunLayout(out).locked():  # the finished run let go of it
        pass


def test_output_dir_refuses_the_root_the_home_folder_and_a_folder_of_other_things(
    tmp_path, local_model_dir, synthetic_corpus, capsys
):
    config = _config(tmp_path, local_model_dir, synthetic_corpus, tmp_path / "unused")
    assert main(["train", "--config", config, "output_dir=/"]) == 2
    assert _errors(capsys) == [
        "fathom: error: output_dir: / is the file-system root; give a folder of its own, e.g. runs/maritime-32k"
    ]
    assert main(["train", "--config", config, f"output_dir={Path.home()}"]) == 2
    assert "is your home folder" in _errors(capsys)[0]
    theirs = tmp_path / "reports"
    theirs.mkdir()
    (theirs / "voyage.txt").write_text("keep me", encoding="utf-8")
    assert main(["train", "--config", config, f"output_dir={theirs}"]) == 2
    assert "already holds other files (voyage.txt) and no fathom run" in _errors(capsys)[0]
    assert sorted(p.name for p in theirs.iterdir()) == ["voyage.txt"]


def test_prepare_with_nothing_usable_fails_like_train(tmp_path, local_model_dir, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "empty.md").write_text("   ", encoding="utf-8")
    cfg = small_run_config(local_model_dir, [bad], tmp_path / "out")
    cfg["data"]["cache_dir"] = str(tmp_path / "cache")
    config = str(write_config(tmp_path / "c.yaml", cfg))
    assert main(["prepare", "--config", config]) == 2
    prepared = _errors(capsys)
    assert main(["train", "--config", config]) == 2
    assert prepared == _errors(capsys) and "no usable training documents" in prepared[0]


@pytest.mark.slow
def test_resume_on_changed_documents_stops_unless_allowed(tmp_path, local_model_dir, synthetic_corpus, capsys):
    import json
    import shutil

    corpus = tmp_path / "corpus"
    shutil.copytree(synthetic_corpus, corpus)
    out = tmp_path / "run"
    config = _config(tmp_path, local_model_dir, corpus, out)
    assert main(["train", "--config", config, "train.max_steps=2"]) == 0
    for path in sorted(corpus.glob("*.md"))[:10]:
        path.unlink()
    capsys.readouterr()
    assert main(["train", "--config", config, "--resume"]) == 2
    (error,) = _errors(capsys)
    assert error.startswith("fathom: error: data.paths: the documents, their cleaning settings or the tokenizer differ")
    assert "--allow-changed data" in error
    assert main(["train", "--config", config, "--resume", "--allow-changed", "data"]) == 0
    state = json.loads((out / "final_256_model" / "trainer_state.json").read_text())
    assert len(state["data_changes"]) == 1 and state["data_changes"][0].startswith("step 2: ")


def test_prepare_waits_for_another_build_of_the_same_cache_entry_and_clears_its_leftovers(
    tmp_path, local_model_dir, synthetic_corpus
):
    import subprocess
    import sys

    from filelock import FileLock
    from helpers import hang_guard

    from fathom.config import load_config
    from fathom.data.cache import _Entry
    from fathom.data.eod import resolve_eod_token_id
    from fathom.model.load import load_configured_tokenizer

    cfg = small_run_config(local_model_dir, [synthetic_corpus], tmp_path / "out")
    cfg["data"]["cache_dir"] = str(tmp_path / "cache")
    config_file = write_config(tmp_path / "c.yaml", cfg)
    config = load_config(str(config_file), [])
    tokenizer = load_configured_tokenizer(config.model)
    entry = _Entry.locate(config, tokenizer, resolve_eod_token_id(tokenizer, config.data.eod_token)).folder
    entry.parent.mkdir(parents=True)
    leftover = entry.parent / f".tmp-{entry.name}-killed"  # what a killed build of this entry leaves
    leftover.mkdir()
    (leftover / "tokens-00000.bin").write_bytes(b"\0" * 64)

    lock = FileLock(str(entry.parent / f".{entry.name}.lock"))
    lock.acquire()  # another process building this entry
    proc = subprocess.Popen(
        [sys.executable, "-m", "fathom", "prepare", "--config", str(config_file)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for line in proc.stderr:  # blocks until the line comes: no timing involved
            if "another fathom is building the token cache" in line:
                break
        else:
            raise AssertionError("prepare did not wait for the entry's lock")
        assert leftover.is_dir() and not entry.exists(), "prepare touched the entry while another process held it"
    finally:
        lock.release()
    rest = proc.communicate(timeout=hang_guard(600))[1]
    assert proc.returncode == 0, rest
    assert (entry / "meta.json").is_file() and not leftover.exists()


def test_two_processes_never_share_a_run_folder(tmp_path, local_model_dir, synthetic_corpus):
    import subprocess
    import sys

    from helpers import hang_guard

    out = tmp_path / "run"
    config = _config(tmp_path, local_model_dir, synthetic_corpus, out)
    holder = subprocess.Popen(  # another process inside a run: holds the folder until told to stop
        [sys.executable, "-c", "import sys\nfrom fathom.train.checkpoint import RunLayout\n"
         f"with RunLayout({str(out)!r}).locked():\n    print('held', flush=True)\n    sys.stdin.readline()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        second = subprocess.run(
            [sys.executable, "-m", "fathom", "train", "--config", config],
            capture_output=True, text=True, timeout=hang_guard(600),
        )  # fmt: skip
    finally:
        holder.communicate("\n", timeout=hang_guard(600))
    assert second.returncode == 1 and "Traceback" not in second.stderr
    assert f"is in use by another fathom train (pid {holder.pid} on" in second.stderr
    assert not (out / "checkpoints").exists()
    assert main(["train", "--config", config]) == 0  # free again once the holder is gone
