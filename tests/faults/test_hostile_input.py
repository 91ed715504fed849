"""Input that could hang or swamp a run is skipped with a reason: devices, FIFOs, oversize files and lines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import hang_guard, small_run_config, write_config

import fathom.data.ingest as ingest
from fathom.data.ingest import read_documents
from fathom.data.sources import expand_paths

pytestmark = pytest.mark.faults


def test_devices_and_fifos_are_never_opened(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "good.txt").write_text("Rule 5. Every vessel shall maintain a proper look-out.", encoding="utf-8")
    os.mkfifo(folder / "pipe.txt")  # opening it for reading would block forever
    (folder / "zero.txt").symlink_to("/dev/zero")  # reading it would never end
    docs, report = read_documents([str(folder), "/dev/null"])
    assert [d.text[:7] for d in docs] == ["Rule 5."]
    reasons = dict(report.skipped)
    assert reasons[str(folder / "pipe.txt")] == "not a regular file (a FIFO)"
    assert reasons[str(folder / "zero.txt")].startswith("symlink to a file outside")  # data.follow_symlinks: inside
    assert reasons["/dev/null"] == "not a regular file (a character device)"
    docs, report = read_documents([str(folder)], follow_symlinks="all")  # followed: still never opened
    assert dict(report.skipped)[str(folder / "zero.txt")] == "not a regular file (a character device)"


def test_prepare_on_a_device_ends_with_one_line_instead_of_hanging(tmp_path, local_model_dir):
    cfg = small_run_config(local_model_dir, ["/dev/zero"], tmp_path / "out")
    cfg["data"]["cache_dir"] = str(tmp_path / "cache")
    config = write_config(tmp_path / "c.yaml", cfg)
    proc = subprocess.run(
        [sys.executable, "-m", "fathom", "prepare", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=hang_guard(600),
    )
    assert proc.returncode == 2
    assert (
        "fathom: error: data.paths: no usable training documents in /dev/zero (skipped: 1 not a regular file"
        in proc.stderr
    )


def _documents(folder: Path, max_chars: int) -> tuple[list, dict[str, str]]:
    report = ingest.IngestReport()
    sources = expand_paths([str(folder)])
    docs = [d for source in sources for d in ingest.documents_of(source, "text", report, max_chars)]
    return docs, dict(report.skipped)


def test_oversize_documents_are_split_files_above_the_cap_skipped_and_long_lines_dropped(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "long.txt").write_text("x" * 2500, encoding="utf-8")
    (folder / "huge.txt").write_text("y" * 5000, encoding="utf-8")
    lines = [json.dumps({"text": "short record"}), json.dumps({"text": "z" * 5000}), json.dumps({"text": "after"})]
    (folder / "records.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "whole.json").write_text(json.dumps([{"text": "w" * 5000}]), encoding="utf-8")
    docs, reasons = _documents(folder, max_chars=1000)  # 4,000 bytes a file read whole, a line, a row
    assert sorted(len(d.text) for d in docs if d.text.startswith("x")) == [500, 1000, 1000]  # split in pieces
    assert not any(d.text.startswith(("y", "w")) for d in docs)
    assert [d.text for d in docs if d.source.endswith(".jsonl")] == ["short record", "after"]
    assert "5,000 bytes: above 4,000 (4 x data.max_document_chars)" in reasons[str(folder / "huge.txt")]
    assert "write it as JSONL" in reasons[str(folder / "whole.json")]
    assert reasons[f"{folder / 'records.jsonl'} line 2"].startswith("longer than 4,000 bytes")


def test_parquet_is_decoded_a_bounded_batch_at_a_time_and_oversize_row_groups_are_skipped(tmp_path, monkeypatch):
    folder = tmp_path / "docs"
    folder.mkdir()
    path = folder / "rows.parquet"
    texts = [f"row {i} " + "a" * 90 for i in range(40)]  # row groups of 10 rows, ~1 KB each
    texts[25] = "b" * 50_000  # group 2 averages ~5 KB a row: above 4 x max_chars
    with pq.ParquetWriter(path, pa.schema([("text", pa.string()), ("n", pa.int64())]), compression="zstd") as w:
        for start in range(0, 40, 10):
            w.write_table(pa.table({"text": texts[start : start + 10], "n": list(range(start, start + 10))}))
    batch_sizes = []
    real_iter = pq.ParquetFile.iter_batches

    def spy(self, batch_size, **kwargs):
        batch_sizes.append(batch_size)
        yield from real_iter(self, batch_size=batch_size, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", spy)
    monkeypatch.setattr(ingest, "PARQUET_BATCH_BYTES", 300)  # about 3 rows of ~100 bytes
    docs, reasons = _documents(folder, max_chars=1000)
    assert [d.text for d in docs] == texts[:20] + texts[30:]
    assert [int(d.record) for d in docs] == [*range(20), *range(30, 40)]  # the rows' numbers in the file
    assert reasons[f"{path} row group 2"].startswith("10 rows holding")
    assert batch_sizes and max(batch_sizes) <= 3

    monkeypatch.setattr(ingest, "MAX_PARQUET_GROUP_BYTES", 500)  # every group is now too big to decode
    docs, reasons = _documents(folder, max_chars=1000)
    assert not docs and len([r for r in reasons if "row group" in r]) == 4

    # one long string repeated in every row: the dictionary page holds it once, so the metadata
    # says ~5 KB while decoding would give 12 copies; each row is measured and skipped in Arrow
    pq.write_table(pa.table({"text": ["c" * 5000] * 12}), folder / "rows.parquet", compression="zstd")
    monkeypatch.setattr(ingest, "MAX_PARQUET_GROUP_BYTES", 1 << 30)
    docs, reasons = _documents(folder, max_chars=1000)
    assert not docs and reasons[f"{path} (12 rows)"].startswith("longer than 4,000 bytes")
    with pq.ParquetWriter(path, pa.schema([("text", pa.string()), ("n", pa.int64())]), compression="zstd") as w:
        for start in range(0, 40, 10):
            w.write_table(pa.table({"text": texts[start : start + 10], "n": list(range(start, start + 10))}))

    monkeypatch.setattr(ingest, "MAX_PARQUET_GROUP_BYTES", 500)
    records = list(ingest.records_of(str(path), ingest.IngestReport(), max_chars=10_000))  # every column
    assert records == []  # the group cap holds for instruction data too
    monkeypatch.setattr(ingest, "MAX_PARQUET_GROUP_BYTES", 1 << 30)
    records = [r for _, r in ingest.records_of(str(path), ingest.IngestReport(), max_chars=20_000)]
    assert [r["n"] for r in records] == list(range(40)) and records[25]["text"] == texts[25]


def test_a_document_path_to_a_device_or_fifo_is_skipped_not_read(tmp_path, real_tokenizer):
    from fathom.data.instruct import read_examples

    os.mkfifo(tmp_path / "pipe.txt")
    records = [
        {"document_path": "/dev/zero", "question": "q?", "answer": "a"},
        {"document_path": "pipe.txt", "question": "q?", "answer": "a"},
        {"document": "Rule 5. Look-out.", "question": "Which rule?", "answer": "Rule 5"},
    ]
    (tmp_path / "qa.jsonl").write_text("\n".join(json.dumps(r) for r in records), encoding="utf-8")
    examples, report = read_examples([str(tmp_path / "qa.jsonl")], real_tokenizer.load(), 512)
    assert len(examples) == 1
    assert set(report.skipped_by_reason) == {
        f"document_path /dev/zero is outside {tmp_path} (the folder of the file naming it); "
        "sft.allow_outside_paths: true reads it",
        f"document_path {tmp_path / 'pipe.txt'} is not a regular file (a FIFO)",
    }
    examples, report = read_examples([str(tmp_path / "qa.jsonl")], real_tokenizer.load(), 512, allow_outside_paths=True)
    assert len(examples) == 1
    assert set(report.skipped_by_reason) == {
        "document_path /dev/zero is not a regular file (a character device)",
        f"document_path {tmp_path / 'pipe.txt'} is not a regular file (a FIFO)",
    }


@pytest.mark.parametrize("value", ["0", "-5"])
def test_the_size_cap_is_validated(value):
    from fathom.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"data\.max_document_chars: must be > 0"):
        load_config(None, [f"data.max_document_chars={value}"], check_paths=False)


def test_hostile_files_are_skipped_with_a_reason(tmp_path):
    """Deep JSON, random bytes as parquet, a number column, another encoding: skips, never tracebacks."""
    folder = tmp_path / "docs"
    folder.mkdir()
    deep = "[" * 50_000 + "]" * 50_000
    (folder / "deep.jsonl").write_text(json.dumps({"text": "Rule 7."}) + "\n" + '{"text": ' + deep + "}\n")
    (folder / "deep.json").write_text(deep)
    (folder / "random.parquet").write_bytes(os.urandom(4096))
    pq.write_table(pa.table({"text": [1, 2, 3]}), folder / "numbers.parquet")
    (folder / "latin1.txt").write_bytes("Règle 5 : veille. Navire à moteur, éclairé, près du côté.".encode("latin-1"))
    (folder / "other.txt").write_bytes(b"Rule 8. " + bytes(range(0x80, 0x100)) * 4)  # neither UTF-8 nor cp1252
    stray = "Rule 6. Safe speed at all times. " * 200
    (folder / "stray.txt").write_bytes(stray.encode() + b"\xff" + stray.encode())
    docs, report = read_documents([str(folder)])
    # the stray byte is replaced and the rest read; Latin-1 is read as such
    assert {d.text[:7] for d in docs} == {"Règle 5", "Rule 6.", "Rule 7."}
    reasons = dict(report.skipped)
    assert reasons[f"{folder / 'deep.jsonl'} line 2"] == "JSON nested too deeply to parse"
    assert reasons[str(folder / "deep.json")] == "JSON nested too deeply to parse"
    assert reasons[str(folder / "random.parquet")].startswith("unreadable parquet")
    assert reasons[str(folder / "numbers.parquet")] == (
        "column 'text' holds int64, not text; set data.text_field to a text column"
    )
    assert reasons[str(folder / "other.txt")].startswith("not UTF-8 text (")
    assert str(folder / "latin1.txt") not in reasons


def test_a_config_file_that_is_not_utf8_is_one_line(tmp_path, capsys):
    from fathom.cli import main

    config = tmp_path / "c.yaml"
    config.write_bytes(b"output_dir: caf\xe9-run\n")
    assert main(["plan", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"fathom: error: --config: {config} is not UTF-8 text (byte 15); save it as UTF-8" in err
    assert "Traceback" not in err
