"""Read documents from every supported source, skipping bad input with a reason instead of failing.

Sources under ``data.paths`` (which files a path names, and which links are followed:
:mod:`fathom.data.sources`): files, folders (searched recursively), glob patterns, Hugging Face
``datasets`` folders written by ``save_to_disk``, and ``hf:<id>[:split]`` for a dataset loaded with
``datasets.load_dataset`` (a Hub id, or a local folder or script, which is how it is tested offline).

File formats: .txt .md .markdown .rst (plain text), .html .htm (main text by trafilatura),
.pdf (text layer by pdfium, read as a reader sees it: fathom.data.pdf; a PDF without one is reported
as probably scanned), .jsonl and .json (records with ``data.text_field``), .parquet (column
``data.text_field``, read in batches).

A bad file (empty, binary, unreadable, a broken symlink, a corrupt or encrypted PDF, a JSON line
without the text field) is recorded in the :class:`IngestReport` with its reason and logged once;
it never stops the run. Text that is not UTF-8 is read as Windows-1252 (Latin-1) when it decodes so,
with a warning; a stray invalid byte in UTF-8 text is replaced; anything else is skipped.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from fathom.data.formats import (
    HTML_SUFFIXES,
    JSON_SUFFIXES,
    PARQUET_SUFFIXES,
    PDF_SUFFIXES,
    SUPPORTED_SUFFIXES,
    TEXT_SUFFIXES,
    WORD_SUFFIXES,
    unsupported_reason,
)
from fathom.data.sources import HUB_PREFIX, expand_paths, special_file
from fathom.fsutil import printable

logger = logging.getLogger("fathom")

MAX_DOCUMENT_CHARS = 20_000_000  # data.max_document_chars' default


@dataclass
class Document:
    text: str
    source: str  # the file, dataset folder or hf: id it came from
    record: str | None = None  # line, row or index inside the source, for records

    @property
    def where(self) -> str:
        return f"{self.source}:{self.record}" if self.record is not None else self.source


@dataclass
class IngestReport:
    """What was read and what was skipped (and why)."""

    files_read: int = 0
    documents: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    pdf: Counter = field(default_factory=Counter)  # what reading PDFs removed, joined and kept (data stats)
    confidence: list[tuple[str, float]] = field(default_factory=list)  # per PDF: share of its text that reads

    def skip(self, source: Path | str, reason: str) -> None:
        """Record a skip; whoever owns the report logs it (see :func:`log_skips`)."""
        self.skipped.append((str(source), reason))

    def reasons(self) -> dict[str, int]:
        """Skips counted by reason (the part before any detail in parentheses)."""
        return dict(Counter(reason.split(" (")[0] for _, reason in self.skipped))

    def merge(self, other: IngestReport) -> None:
        self.files_read += other.files_read
        self.documents += other.documents
        self.skipped.extend(other.skipped)
        self.pdf.update(other.pdf)
        self.confidence.extend(other.confidence)


def log_skips(skipped: list[tuple[str, str]], already_logged: int = 0, limit: int = 20) -> int:
    """Warn about skipped inputs, one line each up to ``limit`` in all; returns the new count logged."""
    for source, reason in skipped:
        if already_logged < limit:
            logger.warning("skipping %s: %s", printable(source), printable(reason))
        elif already_logged == limit:
            logger.warning("more inputs skipped; `fathom data stats` lists them all")
        already_logged += 1
    return already_logged


def _read_bytes(path: Path, report: IngestReport) -> bytes | None:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        reason = "broken symlink" if path.is_symlink() and not path.exists() else "cannot be read"
        report.skip(path, f"{reason} ({exc.strerror or exc})")
        return None
    if not raw.strip():
        report.skip(path, "empty")
        return None
    return raw


def _readable(path: Path, report: IngestReport) -> bool:
    """Cheap check that a binary-format file can be opened and is not empty (without reading it all)."""
    try:
        with path.open("rb") as handle:
            head = handle.read(16)
    except OSError as exc:
        reason = "broken symlink" if path.is_symlink() and not path.exists() else "cannot be read"
        report.skip(path, f"{reason} ({exc.strerror or exc})")
        return False
    if not head:
        report.skip(path, "empty")
        return False
    return True


# Text that is not UTF-8 is read with replacement characters only while they stay this rare (a stray byte);
# more means another encoding (Latin-1, UTF-16), and training on replacement characters teaches nothing.
MAX_REPLACED_SHARE = 0.001


def _utf8(raw: bytes) -> tuple[str, float]:
    """``raw`` decoded as UTF-8 (a BOM dropped) and the share of its characters that had to be replaced."""
    try:
        return raw.decode("utf-8-sig"), 0.0
    except UnicodeDecodeError:
        text = raw.decode("utf-8", errors="replace").removeprefix("\ufeff")
        return text, text.count("\ufffd") / max(len(text), 1)


def decode_text(raw: bytes, path: Path | str, report: IngestReport) -> str | None:
    if b"\x00" in raw[:8192]:
        report.skip(path, "binary (NUL bytes), not text")
        return None
    text, replaced = _utf8(raw)
    if replaced > MAX_REPLACED_SHARE:
        try:  # older Western documents: Windows-1252, a superset of Latin-1's printable characters
            text = raw.decode("cp1252")
        except UnicodeDecodeError:
            report.skip(path, f"not UTF-8 text ({replaced:.1%} of it undecodable); convert it, e.g. iconv -t utf-8")
            return None
        logger.warning("%s is not UTF-8; read as Windows-1252 (Latin-1)", printable(path))
        return text
    if replaced:
        logger.warning(
            "%s holds a few bytes that are not UTF-8 (%.2f%%); they are replaced", printable(path), 100 * replaced
        )
    return text


def _html_text(raw: bytes, path: Path, report: IngestReport) -> str | None:
    import trafilatura

    html = decode_text(raw, path, report)
    if html is None:
        return None
    text = trafilatura.extract(html, include_comments=False, include_tables=True, favor_recall=True)
    if not text:
        # pages that are all navigation or all table: keep their visible text rather than nothing
        from lxml import html as lxml_html

        try:
            text = lxml_html.fromstring(html).text_content()
        except (ValueError, lxml_html.etree.ParserError):
            text = ""
    if not text or not text.strip():
        report.skip(path, "HTML without text")
        return None
    return text


def _word_text(path: Path, report: IngestReport, max_bytes: int) -> str | None:
    """A .docx body's text in reading order (fathom.data.word), or None with the reason recorded."""
    from fathom.data.word import DocxError, read_docx

    try:
        text = read_docx(path, max_bytes)
    except DocxError as exc:
        report.skip(path, str(exc))
        return None
    if not text.strip():
        report.skip(path, "empty (a Word document with no text in its body)")
        return None
    return text


def _pdf_text(path: Path, report: IngestReport, ocr: str = "off") -> str | None:
    """The reader's text of a PDF (fathom.data.pdf: furniture out, hyphens joined, columns and tables in
    order, pages without text read by OCR when ``ocr`` is auto and tesseract is installed); what reading
    took away is counted in ``report.pdf``."""
    from pypdfium2 import PdfiumError

    from fathom.data.pdf import OCR_INSTALL, ocr_engine, read_pdf

    try:
        result = read_pdf(path, ocr)
    except PdfiumError as exc:
        message = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        if "password" in message.lower():
            report.skip(path, "encrypted PDF (needs a password)")
        else:
            report.skip(path, f"corrupt PDF ({message})")
        return None
    except Exception as exc:  # a damaged file can fail anywhere inside pdfium's reading
        report.skip(path, f"corrupt PDF ({type(exc).__name__}: {str(exc)[:120]})")
        return None
    if not result.text.strip():
        if ocr == "off":
            hint = "; data.ocr: auto reads such pages"
        else:
            hint = f"; to read it: {OCR_INSTALL}" if ocr_engine(ocr) is None else "; OCR read no text on it"
        what = (
            "PDF whose text layer does not read as words (a broken font encoding, or a bad OCR layer?)"
            if result.pages_garbled
            else "PDF without a text layer (scanned?)"
        )
        report.skip(path, f"{what} ({result.pages} pages{hint})")
        return None
    report.pdf.update(
        {
            "pdf_pages": result.pages,
            "header_footer_lines_removed": result.furniture_lines,
            "line_end_hyphens_joined": result.hyphens_joined,
            "table_rows": result.table_rows,
            "pages_without_text": len(result.pages_without_text),
            "pages_ocr": result.pages_ocr,
            "pages_with_garbled_text": len(result.pages_garbled),
        }
    )
    report.confidence.append((str(path), round(result.confidence, 3)))
    return result.text


def _records(
    values: Iterator[tuple[str, object]], source: str, text_field: str, report: IngestReport
) -> Iterator[Document]:
    bad = 0
    for where, record in values:
        value = record.get(text_field) if isinstance(record, dict) else None
        if isinstance(value, str):
            yield Document(value, source, where)
        else:
            bad += 1
    if bad:
        report.skip(f"{source} ({bad} records)", f"records without a string field '{text_field}'")


def _jsonl_records(path: Path, report: IngestReport, max_bytes: int) -> Iterator[tuple[str, object]]:
    """(line number, parsed record or None) line by line: a JSONL dump of any size streams in constant memory.

    A line above ``max_bytes`` is read through in pieces and skipped with a reason, never held whole.
    """
    if not _readable(path, report):
        return
    warned = False
    with path.open("rb") as handle:
        for lineno, raw in enumerate(_bounded_lines(handle, max_bytes), start=1):
            if raw is None:
                report.skip(f"{path} line {lineno}", f"longer than {max_bytes:,} bytes ({_RAISE_CAP})")
                continue
            if not raw.strip():
                continue
            line, replaced = _utf8(raw)
            if replaced > MAX_REPLACED_SHARE:
                report.skip(f"{path} line {lineno}", f"not UTF-8 text ({replaced:.1%} of it undecodable)")
                continue
            if replaced and not warned:
                logger.warning("%s line %d holds a few bytes that are not UTF-8; replaced", printable(path), lineno)
                warned = True
            try:
                yield str(lineno), json.loads(line)
            except json.JSONDecodeError:
                yield str(lineno), None
            except RecursionError:
                report.skip(f"{path} line {lineno}", "JSON nested too deeply to parse")


# A file read whole, a JSONL line or a parquet row may hold at most this many bytes per allowed
# character (UTF-8 needs up to 4): the caps all follow data.max_document_chars.
BYTES_PER_CHAR = 4
_RAISE_CAP = "split it, or raise data.max_document_chars"
# A parquet row group is decoded one batch of rows at a time, each batch at most this many bytes of
# the columns read; a group whose columns decode to more than MAX_PARQUET_GROUP_BYTES is skipped
# (Arrow decodes a column chunk's pages whole, and zstd can pack gigabytes of text into kilobytes).
PARQUET_BATCH_BYTES = 64 << 20
MAX_PARQUET_GROUP_BYTES = 1 << 30


def _bounded_lines(handle, limit: int) -> Iterator[bytes | None]:
    """The lines of a binary file, each read in pieces of at most ``limit`` bytes: a longer line is
    consumed to its end without being kept, and comes as None."""
    while True:
        line = handle.readline(limit + 1)
        if not line:
            return
        if len(line) <= limit or line.endswith(b"\n"):
            yield line
            continue
        while line and not line.endswith(b"\n"):
            line = handle.readline(limit + 1)
        yield None


def _json_records(path: Path, report: IngestReport, max_bytes: int) -> Iterator[tuple[str, object]]:
    """A .json file holds one record or a list of them (read whole, so at most ``max_bytes``); a .jsonl file streams."""
    if path.suffix.lower() == ".jsonl":
        yield from _jsonl_records(path, report, max_bytes)
        return
    if _too_big(path, report, max_bytes, "write it as JSONL (one record a line), or raise data.max_document_chars"):
        return
    raw = _read_bytes(path, report)
    if raw is None:
        return
    text = decode_text(raw, path, report)
    if text is None:
        return
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        report.skip(path, f"invalid JSON (line {exc.lineno}: {exc.msg})")
        return
    except RecursionError:
        report.skip(path, "JSON nested too deeply to parse")
        return
    records = data if isinstance(data, list) else [data]
    yield from ((str(i), r) for i, r in enumerate(records))


def _too_big(path: Path, report: IngestReport, max_bytes: int, fix: str) -> bool:
    """Skip (with a reason) a file read whole that holds more than ``max_bytes``."""
    try:
        size = path.stat().st_size
    except OSError:
        return False  # missing or unreadable: the reader says so
    if size <= max_bytes:
        return False
    report.skip(path, f"{size:,} bytes: above {max_bytes:,} ({BYTES_PER_CHAR} x data.max_document_chars); {fix}")
    return True


def _json_documents(path: Path, text_field: str, report: IngestReport, max_bytes: int) -> Iterator[Document]:
    yield from _records(_json_records(path, report, max_bytes), str(path), text_field, report)


def _parquet_rows(
    path: Path, columns: list[str] | None, report: IngestReport, max_bytes: int
) -> Iterator[tuple[int, dict]]:
    """(row number in the file, row) of a parquet file (only ``columns``; None: all), in bounded memory.

    Zstd packs gigabytes of text into kilobytes and a dictionary page can repeat one long string in
    every row, so neither the file size nor the metadata bounds what decoding costs. Hence: a row
    group whose columns are too big to decode is skipped (:func:`_group_batch_size`); text columns
    are read dictionary-encoded, so a repeated string stays one copy in Arrow; each row's text bytes
    are measured in Arrow and a row above ``max_bytes`` is skipped before any Python string exists;
    a batch becomes Python objects whole only when it is small, else a row at a time.
    """
    import pyarrow.parquet as pq

    oversize = 0
    try:
        schema = pq.read_schema(str(path))
        names = columns or schema.names
        text = [n for n in names if _is_text(schema.field(n).type)]
        parquet = pq.ParquetFile(str(path), read_dictionary=text)
        wanted = [schema.names.index(n) for n in names]
        first_row = 0
        for group in range(parquet.metadata.num_row_groups):
            row, first_row = first_row, first_row + parquet.metadata.row_group(group).num_rows
            where = f"{path} row group {group}"
            batch_size = _group_batch_size(parquet.metadata.row_group(group), wanted, max_bytes, where, report)
            if batch_size is None:
                continue
            for batch in parquet.iter_batches(batch_size=batch_size, row_groups=[group], columns=columns):
                sizes = _row_text_bytes(batch, text)
                small = sizes.sum() <= PARQUET_BATCH_BYTES and sizes.max(initial=0) <= max_bytes
                records = batch.to_pylist() if small else None
                for i in range(batch.num_rows):
                    if sizes[i] > max_bytes:
                        oversize += 1
                    else:
                        yield row + i, records[i] if records is not None else batch.slice(i, 1).to_pylist()[0]
                row += batch.num_rows
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        report.skip(path, f"unreadable parquet ({str(exc).splitlines()[0][:120]})")
    if oversize:
        report.skip(f"{path} ({oversize} rows)", f"longer than {max_bytes:,} bytes ({_RAISE_CAP})")


def _group_batch_size(meta, columns: list[int], max_bytes: int, where: str, report: IngestReport) -> int | None:
    """Rows per batch that keep one decoded batch near :data:`PARQUET_BATCH_BYTES`, or None (skipped)."""
    size = sum(meta.column(i).total_uncompressed_size for i in columns)
    rows = max(meta.num_rows, 1)
    if size > MAX_PARQUET_GROUP_BYTES or size / rows > max_bytes:
        report.skip(
            where,
            f"{meta.num_rows:,} rows holding {size:,} bytes: above the cap ({MAX_PARQUET_GROUP_BYTES:,} a group, "
            f"{max_bytes:,} a row); rewrite it with smaller row groups (pyarrow row_group_size), or raise "
            "data.max_document_chars",
        )
        return None
    return int(min(1024, max(1, PARQUET_BATCH_BYTES * rows // max(size, 1))))


def _is_text(arrow_type) -> bool:
    import pyarrow as pa

    return any(
        check(arrow_type)
        for check in (pa.types.is_string, pa.types.is_large_string, pa.types.is_binary, pa.types.is_large_binary)
    )


def _row_text_bytes(batch, text_columns: list[str]):
    """Bytes of text per row of an Arrow batch (int64 numpy, one per row), counted without decoding."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    total = np.zeros(batch.num_rows, dtype=np.int64)
    for name in text_columns:
        column = batch.column(name)
        if isinstance(column, pa.DictionaryArray):
            lengths = pc.take(pc.binary_length(column.dictionary), column.indices)
        else:
            lengths = pc.binary_length(column)
        total += pc.fill_null(lengths, 0).to_numpy(zero_copy_only=False).astype(np.int64)
    return total


def _parquet_documents(path: Path, text_field: str, report: IngestReport, max_bytes: int) -> Iterator[Document]:
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(str(path))
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        report.skip(path, f"unreadable parquet ({str(exc).splitlines()[0][:120]})")
        return
    if text_field not in schema.names:
        report.skip(path, f"no column '{text_field}' (columns: {', '.join(schema.names)})")
        return
    kind = schema.field(text_field).type
    if not _is_text(kind):
        report.skip(path, f"column '{text_field}' holds {kind}, not text; set data.text_field to a text column")
        return
    for row, record in _parquet_rows(path, [text_field], report, max_bytes):
        if isinstance(record[text_field], str):
            yield Document(record[text_field], str(path), str(row))


def _dataset_parts(source: str, report: IngestReport) -> list[tuple[str, object]]:
    """(split, dataset) of a ``save_to_disk`` folder or an ``hf:<id>[:split]`` id; [] (reported) when it cannot load."""
    import datasets

    try:
        if source.startswith(HUB_PREFIX):
            name, _, split = source[len(HUB_PREFIX) :].partition(":")
            loaded = datasets.load_dataset(name, split=split or None)
        else:
            loaded = datasets.load_from_disk(source)
    except Exception as exc:  # datasets raises many kinds (network, format, missing files)
        report.skip(source, f"cannot load dataset ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})")
        return []
    return list(loaded.items()) if isinstance(loaded, datasets.DatasetDict) else [("", loaded)]


def _dataset_documents(source: str, text_field: str, report: IngestReport) -> Iterator[Document]:
    """A ``save_to_disk`` folder or an ``hf:<id>[:split]`` dataset; DatasetDicts give every split."""
    for split, dataset in _dataset_parts(source, report):
        if text_field not in dataset.column_names:
            report.skip(
                f"{source}{':' + split if split else ''}",
                f"no column '{text_field}' (columns: {', '.join(dataset.column_names)})",
            )
            continue
        for start in range(0, len(dataset), 1024):
            for offset, value in enumerate(dataset[start : start + 1024][text_field]):
                if isinstance(value, str):
                    yield Document(value, source, f"{split + ':' if split else ''}{start + offset}")


def records_of(source: str, report: IngestReport, max_chars: int = MAX_DOCUMENT_CHARS) -> Iterator[tuple[str, object]]:
    """(where, record) of a .jsonl / .json / .parquet file, a ``save_to_disk`` folder or an ``hf:`` dataset.

    Instruction data (``sft.paths``) is read through this: whole records, not one text field.
    Unreadable sources go to ``report``; a record that is not valid JSON comes as ``None``. A
    record (line, row) above ``4 * max_chars`` bytes is skipped with a reason, never held whole.
    """
    path = Path(source)
    if source.startswith(HUB_PREFIX) or path.is_dir():
        yield from _dataset_records(source, report)
        return
    special = special_file(path)
    if special:
        report.skip(path, f"not a regular file ({special})")
        return
    suffix = path.suffix.lower()
    if suffix in JSON_SUFFIXES:
        yield from _json_records(path, report, BYTES_PER_CHAR * max_chars)
    elif suffix in PARQUET_SUFFIXES:
        if _readable(path, report):
            rows = _parquet_rows(path, None, report, BYTES_PER_CHAR * max_chars)
            yield from ((str(row), record) for row, record in rows)
    else:
        report.skip(path, f"unsupported file type '{suffix}' for instruction data (.jsonl, .json, .parquet)")


def _dataset_records(source: str, report: IngestReport) -> Iterator[tuple[str, object]]:
    for split, dataset in _dataset_parts(source, report):
        for i, record in enumerate(dataset):
            yield f"{split + ':' if split else ''}{i}", record


def documents_of(
    source: str, text_field: str, report: IngestReport, max_chars: int = MAX_DOCUMENT_CHARS, ocr: str = "off"
) -> Iterator[Document]:
    """The documents of one expanded source (see :func:`expand_paths`); bad input goes to ``report``.

    Only regular files are opened; a file read whole, a JSONL line or a parquet row above
    ``4 * max_chars`` bytes is skipped and a document above ``max_chars`` characters is split, so
    memory stays bounded whatever the input.
    """
    for document in _documents_of(source, text_field, report, max_chars, ocr):
        if len(document.text) <= max_chars:
            yield document
            continue
        for i, start in enumerate(range(0, len(document.text), max_chars)):
            yield Document(document.text[start : start + max_chars], document.source, f"{document.where}#{i}")


def _documents_of(
    source: str, text_field: str, report: IngestReport, max_chars: int, ocr: str = "off"
) -> Iterator[Document]:
    if source.startswith(HUB_PREFIX) or Path(source).is_dir():
        report.files_read += 1
        yield from _dataset_documents(source, text_field, report)
        return
    path = Path(source)
    special = special_file(path)
    if special:
        report.skip(path, f"not a regular file ({special})")
        return
    suffix, max_bytes = path.suffix.lower(), BYTES_PER_CHAR * max_chars
    if suffix in TEXT_SUFFIXES | HTML_SUFFIXES and _too_big(path, report, max_bytes, _RAISE_CAP):  # read whole
        return
    if suffix not in SUPPORTED_SUFFIXES:
        report.skip(path, unsupported_reason(suffix))
        return
    if suffix in JSON_SUFFIXES:
        if path.exists():
            report.files_read += 1
        yield from _json_documents(path, text_field, report, max_bytes)
        return
    if suffix in PARQUET_SUFFIXES | PDF_SUFFIXES | WORD_SUFFIXES and not _readable(path, report):
        return
    if suffix in PARQUET_SUFFIXES:
        report.files_read += 1
        yield from _parquet_documents(path, text_field, report, max_bytes)
        return
    text = _file_text(path, suffix, report, max_bytes, ocr)
    if text is not None:
        report.files_read += 1
        yield Document(text, str(path))


def _file_text(path: Path, suffix: str, report: IngestReport, max_bytes: int, ocr: str) -> str | None:
    """The text of a file that is one document (PDF, Word, HTML, plain text), or None with the reason recorded."""
    if suffix in PDF_SUFFIXES:
        return _pdf_text(path, report, ocr)
    if suffix in WORD_SUFFIXES:
        return _word_text(path, report, max_bytes)
    raw = _read_bytes(path, report)
    if raw is None:
        return None
    return _html_text(raw, path, report) if suffix in HTML_SUFFIXES else decode_text(raw, path, report)


def read_documents(
    paths: list[str], text_field: str = "text", min_chars: int = 1, follow_symlinks: str = "inside"
) -> tuple[list[Document], IngestReport]:
    """Every document under ``paths`` in memory (small corpora, tests); the cache streams instead."""
    report = IngestReport()
    documents = []
    for source in expand_paths(paths, follow_symlinks, report.skipped):
        for doc in documents_of(source, text_field, report):
            if len(doc.text.strip()) >= min_chars:
                documents.append(doc)
            else:
                report.skip(doc.where, f"shorter than data.min_chars={min_chars}" if doc.text.strip() else "empty")
    report.documents = len(documents)
    log_skips(report.skipped)
    return documents, report
