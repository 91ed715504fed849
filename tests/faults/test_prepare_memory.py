"""``fathom prepare`` stays bounded on hostile input: each case adds (almost) nothing to its peak memory.

Small versions of the inputs that swamped it (a 200 MB one-line text file, a 2 KB zstd parquet of
40 x 50 MB strings, /dev/zero, /dev/urandom, a FIFO, a Word document that decompresses to millions of
empty paragraphs): every file here holds 48 MB, the caps are scaled down to match
(``data.max_document_chars`` 250,000, so 1 MB a file read whole, a line, a parquet row or a Word
document's XML; 16 MB a parquet row group), and the peak resident memory of one ``prepare`` process
is measured per case. Reading any of them whole would add at least its 48 MB. The last case raises
the cap above its 48 MB, so that the Word document is read, as a stream: parsed whole, its eight
million empty paragraphs would take gigabytes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import hang_guard, small_run_config, write_config

pytestmark = pytest.mark.faults

HOSTILE_MB = 48
BOUND_MB = 24  # what a hostile case may add above an ordinary prepare's own peak rise: half the file
CASES = ["one-line text", "one JSONL line", "whole JSON", "parquet: one group", "parquet: a row a group",
         "/dev/zero", "/dev/urandom", "FIFO", "docx: zip bomb", "docx: streamed"]  # fmt: skip
WORD_RELS = (
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Id="rId1" Target="word/document.xml" '
    'Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument"/></Relationships>'
)


def _word_bomb(path: Path, size: int) -> None:
    """A .docx whose main part is ``size`` bytes of empty paragraphs, deflated to kilobytes."""
    head = b'<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>'
    tail = b"</w:body></w:document>"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("_rels/.rels", WORD_RELS)
        archive.writestr("word/document.xml", head + b"<w:p/>" * ((size - len(head) - len(tail)) // 6) + tail)


def _hostile_inputs(folder: Path) -> dict[str, str]:
    size = HOSTILE_MB << 20
    words = (b"starboard tack keeps clear of port tack vessel " * (size // 48 + 1))[:size]
    (folder / "line.txt").write_bytes(words)
    (folder / "line.jsonl").write_bytes(b'{"text": "' + words[: size - 12] + b'"}\n')
    (folder / "whole.json").write_bytes(b'[{"text": "' + words[: size - 14] + b'"}]')
    row = words[: 4 << 20].decode()
    pq.write_table(pa.table({"text": [row] * 12}), folder / "group.parquet", compression="zstd")
    pq.write_table(pa.table({"text": [row] * 12}), folder / "rows.parquet", compression="zstd", row_group_size=1)
    os.mkfifo(folder / "pipe.txt")
    _word_bomb(folder / "bomb.docx", size)
    paths = ["line.txt", "line.jsonl", "whole.json", "group.parquet", "rows.parquet"]
    found = [str(folder / p) for p in paths] + ["/dev/zero", "/dev/urandom", str(folder / "pipe.txt")]
    found += [str(folder / "bomb.docx")] * 2
    assert all(os.path.getsize(p) < 64 << 10 for p in found[3:5])  # zstd: 48 MB of text in kilobytes
    assert os.path.getsize(found[-1]) < 1 << 20  # deflate: 48 MB of XML in under a megabyte
    return dict(zip(CASES, found, strict=True))


@pytest.fixture(scope="module")
def peaks(tmp_path_factory, local_model_dir, synthetic_corpus) -> dict:
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux /proc to reset and read the peak resident memory")
    folder = tmp_path_factory.mktemp("hostile")
    cfg = small_run_config(local_model_dir, [synthetic_corpus], folder / "out")
    cfg["data"]["max_document_chars"] = 250_000
    spec = {
        "config": str(write_config(folder / "c.yaml", cfg)),
        "good": str(synthetic_corpus),
        "cases": _hostile_inputs(folder),
        "cache": str(folder / "cache"),
        "max_parquet_group_bytes": 16 << 20,
        "case_overrides": {"docx: streamed": ["data.max_document_chars=13000000"]},  # 52 MB: the XML is read
    }
    (folder / "spec.json").write_text(json.dumps(spec))
    probe = Path(__file__).with_name("_prepare_memory.py")
    env = os.environ | {"MALLOC_MMAP_THRESHOLD_": "1048576"}  # freed big blocks go back to the kernel
    proc = subprocess.run(
        [sys.executable, str(probe), str(folder / "spec.json")],
        capture_output=True, text=True, timeout=hang_guard(900), env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", CASES)
def test_prepare_skips_a_hostile_input_in_bounded_memory(peaks, case):
    ordinary, hostile = peaks["ordinary"], peaks[case]
    assert ordinary["rc"] == 0 and hostile["rc"] == 0  # the good documents are prepared, the case skipped
    assert hostile["rise_mb"] <= ordinary["rise_mb"] + BOUND_MB, (
        f"{case}: prepare's peak rose {hostile['rise_mb']:.0f} MB (ordinary: {ordinary['rise_mb']:.0f} MB)"
    )
