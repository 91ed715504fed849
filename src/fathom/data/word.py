"""A Word document's (.docx) text in reading order: paragraphs and tables as they follow each other.

python-docx (MIT) parses the file; what it leaves to the caller is the order and the shape of the text,
written here to match what :mod:`fathom.data.pdf` makes of a PDF, so a corpus of both reads alike:

- **Order**: the body's paragraphs and tables as they come (``Document.iter_inner_content``), not all
  paragraphs and then all tables.
- **Tables**: one Markdown row per table row (``| Tug | 480 | 32 |``), a cell merged across columns
  written once, a cell's own paragraphs joined by spaces.
- **Furniture**: headers, footers, footnotes and comments are not part of the body and are left out, as
  the PDF reader drops running heads and page numbers.
- **Hostile files**: a .docx is a zip archive; the sizes its entries declare are summed before anything
  is decompressed, and an archive that would decompress past ``max_bytes`` is skipped (Python's zip
  reader never yields more than an entry declares, so the check bounds the memory).

Not read: numbers and letters that Word's automatic list numbering draws (only typed ones are text),
tracked insertions not yet accepted, text boxes. Worked example: a heading "3. Bunkering", a paragraph,
then a two-row table ``Tank | Capacity`` / ``No. 1 DB | 120 m3`` becomes::

    3. Bunkering

    The chief engineer shall sound every tank before the transfer begins.

    | Tank | Capacity |
    | No. 1 DB | 120 m3 |
"""

from __future__ import annotations

import zipfile
from pathlib import Path


class DocxError(Exception):
    """The file cannot be read as a Word document; the message says why (one line)."""


def read_docx(path: Path, max_bytes: int) -> str:
    """The document's body text (see the module docstring); raises :class:`DocxError`."""
    _check_archive(path, max_bytes)
    import docx
    from docx.table import Table

    try:
        document = docx.Document(str(path))
        blocks = [_table_text(b) if isinstance(b, Table) else b.text.strip() for b in document.iter_inner_content()]
    except Exception as exc:  # a damaged part can fail anywhere inside python-docx or lxml
        raise DocxError(f"not a readable Word document ({type(exc).__name__}: {str(exc)[:120]})") from exc
    return "\n\n".join(block for block in blocks if block)


def _check_archive(path: Path, max_bytes: int) -> None:
    """A zip archive whose entries together declare at most ``max_bytes``: the zip-bomb guard."""
    try:
        with zipfile.ZipFile(path) as archive:
            declared = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError) as exc:
        raise DocxError(f"not a Word document (.docx is a zip archive: {str(exc)[:120]})") from exc
    if declared > max_bytes:
        raise DocxError(
            f"decompresses to {declared:,} bytes: above {max_bytes:,} (4 x data.max_document_chars); "
            "split the document or raise data.max_document_chars"
        )


def _table_text(table) -> str:
    """One Markdown row per table row; a cell merged across columns (python-docx repeats it) written once."""
    rows = []
    for row in table.rows:
        cells, last = [], None
        for cell in row.cells:
            if cell._tc is not last:
                cells.append(" ".join(p.text.strip() for p in cell.paragraphs if p.text.strip()))
            last = cell._tc
        if any(cells):
            rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)
