"""Trust boundaries: a dataset or a link from elsewhere cannot make fathom read a file outside the folders
the user named. Every case plants a canary file outside them and checks that its text never reaches
what fathom would train on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fathom.data.ingest import read_documents
from fathom.data.instruct import read_examples
from fathom.data.sources import expand_paths

pytestmark = pytest.mark.faults

CANARY = "CANARY-7f3a secret ssh key material"


@pytest.fixture
def layout(tmp_path):
    """``data/`` (what the user names) beside ``private/secret.txt`` (what must never be read)."""
    (tmp_path / "private").mkdir()
    (tmp_path / "private" / "secret.txt").write_text(CANARY, encoding="utf-8")
    (tmp_path / "data" / "docs").mkdir(parents=True)
    (tmp_path / "data" / "docs" / "rule5.txt").write_text("Rule 5. Look-out at all times.", encoding="utf-8")
    return tmp_path


def _qa(document_path: str) -> dict:
    return {"document_path": document_path, "question": "What does it say?", "answer": "Look-out"}


def _write_jsonl(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _texts(tokenizer, examples) -> str:
    return "\n".join(tokenizer.decode(e.input_ids) for e in examples)


def test_a_qa_record_cannot_read_a_file_outside_its_folder(layout, real_tokenizer):
    tokenizer = real_tokenizer.load()
    (layout / "data" / "docs" / "link.txt").symlink_to(layout / "private" / "secret.txt")
    qa = _write_jsonl(
        layout / "data" / "qa" / "train.jsonl",
        [
            _qa("../../private/secret.txt"),  # climbs out of the data folder
            _qa(str(layout / "private" / "secret.txt")),  # absolute
            _qa("/proc/self/environ"),  # the process's environment: tokens, keys
            _qa("../docs/link.txt"),  # a link inside the sft.paths folder pointing out of it
            _qa("../docs/rule5.txt"),  # inside the folder the user named: read
            _qa(""),
            {"document_path": ["x"], "question": "q?", "answer": "a"},
        ],
    )
    examples, report = read_examples([str(layout / "data")], tokenizer, 512)
    assert len(examples) == 1 and "Look-out at all times" in _texts(tokenizer, examples)
    assert CANARY not in _texts(tokenizer, examples)
    outside = [r for r in report.skipped_by_reason if "is outside" in r and "sft.allow_outside_paths" in r]
    assert len(outside) == 4, report.skipped_by_reason
    assert report.skipped_by_reason["document_path is not a file name"] == 2
    # named as a file instead of a folder, only the file's own folder (data/qa) is inside: rule5 is not
    examples, report = read_examples([str(qa)], tokenizer, 512)
    assert examples == [] and len(report.skipped_by_reason) == 6
    # the user's opt-in reads local files anywhere
    examples, _ = read_examples([str(qa)], tokenizer, 512, allow_outside_paths=True)
    assert CANARY in _texts(tokenizer, examples)


def test_a_hub_dataset_record_never_reads_a_local_file(layout, real_tokenizer):
    tokenizer = real_tokenizer.load()
    hub = layout / "hub"
    _write_jsonl(hub / "train.jsonl", [_qa(str(layout / "private" / "secret.txt")), _qa("secret.txt")])
    (hub / "secret.txt").write_text(CANARY, encoding="utf-8")
    for allow in (False, True):  # not even with the opt-in
        examples, report = read_examples([f"hf:{hub}:train"], tokenizer, 512, allow_outside_paths=allow)
        assert examples == []
        assert report.skipped_by_reason == {
            "document_path in a Hub dataset record is not read (only inline document text is)": 2
        }


@pytest.mark.parametrize(
    ("policy", "read"),
    [("inside", {"rule5", "inner"}), ("none", {"rule5"}), ("all", {"rule5", "inner", "secret"})],
)
def test_links_in_a_data_folder_follow_data_follow_symlinks(layout, policy, read):
    docs = layout / "data" / "docs"
    (docs / "secret.txt").symlink_to(layout / "private" / "secret.txt")
    (docs / "inner.txt").symlink_to(docs / "rule5.txt")  # stays inside: read under 'inside'
    (docs / "private_dir").symlink_to(layout / "private", target_is_directory=True)
    documents, report = read_documents([str(layout / "data")], follow_symlinks=policy)
    got = {Path(d.source).stem for d in documents}
    assert got == read
    assert (CANARY in "".join(d.text for d in documents)) == (policy == "all")
    skipped = dict(report.skipped)
    if policy != "all":
        assert skipped[str(docs / "secret.txt")].startswith("symlink to a file outside")
        assert f"data.follow_symlinks: {policy}" in skipped[str(docs / "secret.txt")]
    # a glob reads its own folder under the same rule
    refused: list = []
    matched = expand_paths([str(docs / "*.txt")], policy, refused)
    assert {Path(m).stem for m in matched} == read
    assert (str(docs / "secret.txt") in dict(refused)) == (policy != "all")


def test_a_file_named_in_data_paths_is_read_even_as_a_link(layout):
    link = layout / "data" / "named.txt"
    link.symlink_to(layout / "private" / "secret.txt")
    documents, _ = read_documents([str(link)])  # the user named it: their choice
    assert documents[0].text == CANARY


def test_the_cache_build_reports_a_refused_link(layout, real_tokenizer):
    from fathom.config import load_config
    from fathom.data.cache import prepare_corpus

    tokenizer = real_tokenizer.load()
    (layout / "data" / "docs" / "secret.txt").symlink_to(layout / "private" / "secret.txt")
    config = load_config(
        None, [f"data.paths=[{layout / 'data'}]", f"data.cache_dir={layout / 'cache'}"], check_paths=False
    )
    cache = prepare_corpus(config, tokenizer, real_tokenizer.endoftext_id, progress=False)
    decoded = "".join(tokenizer.decode(cache.document(i).tolist()) for i in range(len(cache)))
    assert CANARY not in decoded and "Look-out" in decoded
    meta = json.loads((cache.folder / "meta.json").read_text())
    assert any(path.endswith("secret.txt") and "outside" in reason for path, reason in meta["skipped"])


def test_a_model_folder_without_a_tokenizer_is_refused_before_any_work(
    tmp_path, local_model_dir, synthetic_corpus, capsys
):
    import shutil

    from helpers import small_run_config, write_config

    from fathom.cli import main

    model = tmp_path / "model"
    shutil.copytree(local_model_dir, model)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (model / name).unlink(missing_ok=True)
    config = write_config(tmp_path / "c.yaml", small_run_config(model, [synthetic_corpus], tmp_path / "out"))
    assert main(["train", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"fathom: error: model.name_or_path: {model} has no usable tokenizer" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").glob("final_*"))


def test_an_adapter_folder_without_weights_is_one_line_everywhere(tmp_path, capsys):
    from fathom.cli import main

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "x", "r": 4}))
    (adapter / "adapter_model.bin").write_bytes(b"\x80\x04pickle")  # never unpickled
    commands = [
        ["generate", "--base", "x", "--adapter", str(adapter), "--file", str(adapter / "adapter_config.json")],
        ["eval", "--base", "x", "--adapter", str(adapter), "--haystack", str(adapter / "adapter_config.json")],
        ["merge", "--base", "x", "--adapter", str(adapter), "--out", str(tmp_path / "merged")],
        ["push", "--adapter", str(adapter), "--repo", "acme/x", "--dry-run", "--out", str(tmp_path / "staged")],
    ]
    for command in commands:
        assert main(command) == 2, command
        err = capsys.readouterr().err
        assert "has no adapter weights (adapter_model.safetensors)" in err and "a pickle" in err, command
        assert "Traceback" not in err
    assert not (tmp_path / "staged").exists() and not (tmp_path / "merged").exists()


def test_eval_refuses_lengths_no_model_can_read_before_loading(local_model_dir, tmp_path, capsys):
    from fathom.cli import main

    haystack = tmp_path / "h.txt"
    haystack.write_text("Rule 5. Look-out. " * 50)
    args = ["eval", "--base", str(local_model_dir), "--haystack", str(haystack), "--out", str(tmp_path / "e")]
    assert main([*args, "--lengths", "10000000"]) == 2
    err = capsys.readouterr().err
    assert (
        "fathom: error: --lengths: 10,000,000 tokens is past every model's window (at most 4,096: the base reads "
        "4,096); give shorter --lengths, or --rope-scaling yarn:2442 to stretch the base that far"
    ) in err
    assert "evaluating" not in err and not (tmp_path / "e").exists()


@pytest.mark.parametrize(
    "status",
    [
        {"status": "running", "phase_name": "Phase_1a_Short"},  # fields missing
        {"status": "stopped", "phase_index": 9, "phases": [{"name": "a"}], "loss": "low", "updated": "yesterday"},
        ["not", "an", "object"],
        {"status": "complete", "phases": "all", "pid": -1, "tokens_seen": True},
    ],
)
def test_runs_reads_a_status_file_with_missing_or_wrong_fields(tmp_path, capsys, status):
    from fathom.cli import main

    run = tmp_path / "run"
    run.mkdir()
    (run / "fathom_config.yaml").write_text("output_dir: run\n")
    (run / "status.json").write_text(json.dumps(status))
    assert main(["runs", str(run)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"{run}: ") and "Traceback" not in err


def test_file_names_cannot_forge_log_lines(tmp_path, caplog):
    import logging

    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "x\n[12:00:00] fathom INFO: training done\x1b[2K.txt").write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="fathom"):
        read_documents([str(folder)])
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "x\\n[12:00:00] fathom INFO: training done\\x1b[2K.txt: empty" in logged
    assert "\n[12:00:00]" not in logged and "\x1b" not in logged
