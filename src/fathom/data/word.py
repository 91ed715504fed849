"""A Word document's (.docx) text in reading order: paragraphs and tables as they follow each other.

python-docx (MIT) opens the package and finds the main document; what no library does for a corpus is
the reading of its body, written here to match what :mod:`fathom.data.pdf` makes of a PDF, so a corpus
of both reads alike. It walks the body's XML rather than python-docx's paragraph and table objects,
which see neither content controls (the fields of a report form) nor text inside them:

- **Order**: paragraphs and tables as they come, content controls (``w:sdt``) opened in place.
- **A paragraph's text**: its runs' text in order, with what Word shows: tracked insertions, field
  results, hyperlinks, text in inline content controls; a tab as a space, a line break as one; a text
  box's paragraphs on lines of their own (once: the fallback copy Word also writes is skipped).
- **Tables**: one Markdown row per table row (``| Tug | 480 | 32 |``), as the PDF reader writes them;
  a cell merged across columns is one cell in the file, so it is written once; a cell's paragraphs (and
  a table nested in it) joined by spaces.
- **Furniture**: headers, footers, footnotes and comments are other parts of the package and are left
  out, as the PDF reader drops running heads and page numbers; deleted text (``w:delText``) too.
- **Hostile files**: a .docx is a zip archive; the sizes its entries declare are summed before anything
  is decompressed, and an archive that would decompress past ``max_bytes`` is skipped (Python's zip
  reader never yields more than an entry declares, so the check bounds the memory).

Not read: the numbers and letters that Word's automatic list numbering draws (only typed ones are text).
Worked example: a heading "3. Bunkering", a paragraph, then a table ``Tank | Capacity`` /
``No. 1 DB | 120 m3`` becomes::

    3. Bunkering

    The chief engineer shall sound every tank before the transfer begins.

    | Tank | Capacity |
    | No. 1 DB | 120 m3 |
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path

# the WordprocessingML elements the reading walks (ECMA-376 part 1, section 17)
W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
P, TBL, TR, TC, SDT, SDT_CONTENT = (W + t for t in ("p", "tbl", "tr", "tc", "sdt", "sdtContent"))
T, TAB, BR, CR, PPR = (W + t for t in ("t", "tab", "br", "cr", "pPr"))
FALLBACK = "{http://schemas.openxmlformats.org/markup-compatibility/2006}Fallback"


class DocxError(Exception):
    """The file cannot be read as a Word document; the message says why (one line)."""


def read_docx(path: Path, max_bytes: int) -> str:
    """The document's body text (see the module docstring); raises :class:`DocxError`."""
    _check_archive(path, max_bytes)
    import docx

    try:
        body = docx.Document(str(path)).element.body
        blocks = list(_blocks(body))
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


def _blocks(container) -> Iterator[str]:
    """The text of each paragraph and table directly in ``container`` (the body, a cell, a content
    control's content), in order."""
    for child in container:
        if child.tag == P:
            yield _paragraph_text(child).strip()
        elif child.tag == TBL:
            yield _table_text(child)
        elif child.tag == SDT and child.find(SDT_CONTENT) is not None:
            yield from _blocks(child.find(SDT_CONTENT))


def _paragraph_text(node) -> str:
    """A paragraph's text as Word shows it (module docstring); its properties (tab stops) are skipped."""
    parts = []
    for child in node:
        if child.tag in (PPR, FALLBACK):
            continue
        if child.tag == T:
            parts.append(child.text or "")
        elif child.tag == TAB:
            parts.append(" ")
        elif child.tag in (BR, CR):
            parts.append("\n")
        elif child.tag == P:  # a text box's paragraph, inside a drawing in a run
            parts.append("\n" + _paragraph_text(child).strip() + "\n")
        else:
            parts.append(_paragraph_text(child))
    return "".join(parts)


def _table_text(table) -> str:
    """One Markdown row per table row, a cell's blocks joined by spaces."""
    rows = []
    for row in _children(table, TR):
        cells = [" ".join(" ".join(_blocks(cell)).split()) for cell in _children(row, TC)]
        if any(cells):
            rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _children(node, tag: str) -> Iterator:
    """``node``'s children of ``tag``, those inside a content control (a form's repeating row) in place."""
    for child in node:
        if child.tag == tag:
            yield child
        elif child.tag == SDT and child.find(SDT_CONTENT) is not None:
            yield from _children(child.find(SDT_CONTENT), tag)
