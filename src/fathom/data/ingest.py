"""Read documents from files and folders (.txt, .md, .jsonl), skipping bad files with a reason.

The full pipeline (PDF, HTML, parquet, cleaning, deduplication) is the job of ``fathom prepare``;
this module is the basic reader the training loop needs: every file is read as UTF-8 (with a
warning and a lossy fallback when it is not), and a file that cannot be read is skipped with a
warning naming it, never aborting the run.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger("fathom")

TEXT_SUFFIXES = {".txt", ".md", ".markdown", ".rst"}
JSONL_SUFFIXES = {".jsonl"}
SUPPORTED_SUFFIXES = TEXT_SUFFIXES | JSONL_SUFFIXES


@dataclass
class Document:
    text: str
    source: str  # file path, plus ":<line>" for a JSONL record


@dataclass
class IngestReport:
    """What was read and what was skipped (and why)."""

    files_read: int = 0
    documents: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def skip(self, path: Path | str, reason: str) -> None:
        self.skipped.append((str(path), reason))
        logger.warning("skipping %s: %s", path, reason)


def find_files(paths: list[str]) -> Iterator[Path]:
    """Files under ``paths`` with a supported suffix, folders searched recursively, in sorted order."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                if child.suffix.lower() in SUPPORTED_SUFFIXES and (child.is_file() or child.is_symlink()):
                    yield child
        elif path.exists() or path.is_symlink():
            yield path
        else:
            raise FileNotFoundError(f"data.paths: {raw} does not exist")


def _read_text(path: Path, report: IngestReport) -> str | None:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        report.skip(path, f"cannot be read ({exc.strerror or exc})")
        return None
    if b"\x00" in raw[:8192]:
        report.skip(path, "looks binary (NUL bytes), not text")
        return None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        logger.warning("%s is not valid UTF-8 (byte %d); decoding with replacement characters", path, exc.start)
        return raw.decode("utf-8", errors="replace")


def read_documents(
    paths: list[str], text_field: str = "text", min_chars: int = 1
) -> tuple[list[Document], IngestReport]:
    """Read every document under ``paths``. A .txt/.md file is one document; a .jsonl line is one."""
    report = IngestReport()
    documents: list[Document] = []
    for path in find_files(paths):
        suffix = path.suffix.lower()
        if suffix not in SUPPORTED_SUFFIXES:
            report.skip(path, f"unsupported file type '{suffix}' (supported: {', '.join(sorted(SUPPORTED_SUFFIXES))})")
            continue
        text = _read_text(path, report)
        if text is None:
            continue
        report.files_read += 1
        if suffix in JSONL_SUFFIXES:
            bad = 0
            for lineno, line in enumerate(text.splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    value = record[text_field] if isinstance(record, dict) else None
                except (json.JSONDecodeError, KeyError):
                    value = None
                if not isinstance(value, str):
                    bad += 1
                    continue
                if len(value.strip()) >= min_chars:
                    documents.append(Document(value, f"{path}:{lineno}"))
            if bad:
                report.skip(f"{path} ({bad} lines)", f"not JSON objects with a string field '{text_field}'")
        elif len(text.strip()) >= min_chars:
            documents.append(Document(text, str(path)))
        else:
            report.skip(path, f"shorter than data.min_chars={min_chars}" if text.strip() else "empty")
    report.documents = len(documents)
    return documents, report
