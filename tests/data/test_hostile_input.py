"""Input that could hang or swamp a run is skipped with a reason: devices, FIFOs, oversize files and lines."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from helpers import hang_guard, small_run_config, write_config

import fathom.data.ingest as ingest
from fathom.data.ingest import read_documents


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
    assert reasons[str(folder / "zero.txt")] == "not a regular file (a character device)"
    assert reasons["/dev/null"] == "not a regular file (a character device)"


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


def test_oversize_documents_are_split_files_above_the_cap_skipped_and_long_lines_dropped(tmp_path, monkeypatch):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "long.txt").write_text("x" * 2500, encoding="utf-8")
    (folder / "huge.txt").write_text("y" * 5000, encoding="utf-8")
    monkeypatch.setattr(ingest, "MAX_LINE_BYTES", 200)
    lines = [json.dumps({"text": "short record"}), json.dumps({"text": "z" * 500}), json.dumps({"text": "after"})]
    (folder / "records.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    report = ingest.IngestReport()
    docs = [
        d for source in ingest.expand_paths([str(folder)]) for d in ingest.documents_of(source, "text", report, 1000)
    ]
    assert sorted(len(d.text) for d in docs if d.text.startswith("x")) == [500, 1000, 1000]  # split in pieces
    assert not any(d.text.startswith("y") for d in docs)
    assert [d.text for d in docs if d.source.endswith(".jsonl")] == ["short record", "after"]
    reasons = dict(report.skipped)
    assert "above 4 x data.max_document_chars (1,000)" in reasons[str(folder / "huge.txt")]
    assert reasons[f"{folder / 'records.jsonl'} line 2"] == "longer than 200 bytes"


@pytest.mark.parametrize("value", ["0", "-5"])
def test_the_size_cap_is_validated(value):
    from fathom.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"data\.max_document_chars: must be > 0"):
        load_config(None, [f"data.max_document_chars={value}"], check_paths=False)
