"""A Word document's (.docx) text in reading order: paragraphs and tables as they follow each other.

Written here because no library reads a .docx as a stream: python-docx (used by the tests to write
them) parses the whole document into a tree first, about seven times its XML in memory, and its
paragraph and table objects see neither content controls (the fields of a report form) nor the text
inside them. This module finds the main part through the package's relationships and walks it with
lxml's ``iterparse``, one top-level paragraph or table at a time, cleared once read, so memory holds
the largest paragraph or table and the text, not the tree; it matches what :mod:`fathom.data.pdf`
makes of a PDF, so a corpus of both reads alike:

- **Order**: paragraphs and tables as they come, content controls (``w:sdt``) opened in place.
- **A paragraph's text**: its runs' text in order, with what Word shows: tracked insertions, field
  results, hyperlinks, text in inline content controls; a tab as a space, a line break as one; a text
  box's paragraphs on lines of their own (once: the fallback copy Word also writes is skipped).
- **Tables**: one Markdown row per table row (``| Tug | 480 | 32 |``), as the PDF reader writes them;
  a cell merged across columns is one cell in the file, so it is written once; a cell's paragraphs (and
  a table nested in it) joined by spaces.
- **Furniture**: headers, footers, footnotes and comments are other parts of the package and are left
  out, as the PDF reader drops running heads and page numbers; deleted text (``w:delText``) too.
- **Hostile files**: a .docx is a zip archive; the size its main part declares is checked before
  anything is decompressed, and one above ``max_bytes`` is skipped (Python's zip reader never yields
  more than an entry declares); entities are not resolved and nothing is fetched from the network.

- **List numbers**: the clause numbers and letters Word's automatic numbering draws ("5.3.1", "(c)",
  bullets) are written before their paragraph, counted as Word counts them
  (:mod:`fathom.data.word_numbering`), so that "section 5.3" can be found.

Worked example: a heading "3. Bunkering", a paragraph, then a table ``Tank | Capacity`` /
``No. 1 DB | 120 m3`` becomes::

    3. Bunkering

    The chief engineer shall sound every tank before the transfer begins.

    | Tank | Capacity |
    | No. 1 DB | 120 m3 |
"""

from __future__ import annotations

import logging
import posixpath
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

from fathom.data.word_numbering import ListNumbers
from fathom.fsutil import printable

logger = logging.getLogger("fathom")

# the WordprocessingML elements the reading walks (ECMA-376 part 1, section 17)
W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
BODY, P, TBL, TR, TC, SDT, SDT_CONTENT = (W + t for t in ("body", "p", "tbl", "tr", "tc", "sdt", "sdtContent"))
T, TAB, BR, CR, PPR = (W + t for t in ("t", "tab", "br", "cr", "pPr"))
FALLBACK = "{http://schemas.openxmlformats.org/markup-compatibility/2006}Fallback"
SIDE_PART_BYTES = 8_000_000  # numbering and styles are parsed whole: Word's own are under 1 MB


class DocxError(Exception):
    """The file cannot be read as a Word document; the message says why (one line)."""


def read_docx(path: Path, max_bytes: int) -> str:
    """The document's body text (see the module docstring); raises :class:`DocxError`."""
    from lxml import etree

    blocks = []
    try:
        with zipfile.ZipFile(path) as archive:
            main = _main_part(archive, max_bytes)
            numbers = _list_numbers(archive, main, max_bytes, path)
            with archive.open(main) as stream:
                parser = etree.iterparse(stream, events=("end",), resolve_entities=False, no_network=True)
                for _, element in parser:
                    parent = element.getparent()
                    if parent is None or parent.tag != BODY:
                        continue
                    blocks.extend(block for block in _blocks([element], numbers) if block)  # never a list of empties
                    element.clear()
                    while element.getprevious() is not None:  # the blocks read before it, cleared already
                        del parent[0]
    except DocxError:
        raise
    except (zipfile.BadZipFile, OSError) as exc:
        raise DocxError(f"not a Word document (.docx is a zip archive: {str(exc)[:120]})") from exc
    except Exception as exc:  # malformed XML, a missing part: anything inside lxml or the zip reader
        raise DocxError(f"not a readable Word document ({type(exc).__name__}: {str(exc)[:120]})") from exc
    return "\n\n".join(blocks)


def _main_part(archive: zipfile.ZipFile, max_bytes: int) -> str:
    """The name of the package's main document part (its ``officeDocument`` relationship), checked to
    decompress to at most ``max_bytes``: the zip-bomb guard."""
    targets = _related(archive, "_rels/.rels", "", "/officeDocument")
    if not targets:
        raise DocxError("not a Word document (no main document part in _rels/.rels)")
    limit = f"above {max_bytes:,} (4 x data.max_document_chars); split the document or raise data.max_document_chars"
    return _checked_size(archive, targets[0], max_bytes, limit).filename


def _related(archive: zipfile.ZipFile, rels_name: str, base: str, kind: str) -> list[str]:
    """The parts a relationships part names with a type ending in ``kind``, as names in the archive
    (targets are relative to ``base``, the folder of the part the relationships belong to)."""
    from lxml import etree

    rels = archive.getinfo(rels_name)
    if rels.file_size > 1_000_000:
        raise DocxError(f"{rels_name} decompresses to {rels.file_size:,} bytes: not a Word document")
    root = etree.fromstring(archive.read(rels), etree.XMLParser(resolve_entities=False, no_network=True))
    targets = [r.get("Target", "") for r in root if r.get("Type", "").endswith(kind)]
    return [t.lstrip("/") if t.startswith("/") else posixpath.normpath(posixpath.join(base, t)) for t in targets]


def _checked_size(archive: zipfile.ZipFile, name: str, max_bytes: int, limit: str) -> zipfile.ZipInfo:
    """The part ``name``, checked to decompress to at most ``max_bytes`` (the zip-bomb guard; ``limit``
    says which limit and its fix)."""
    part = archive.getinfo(name)
    if part.file_size > max_bytes:
        raise DocxError(f"{name} decompresses to {part.file_size:,} bytes: {limit}")
    return part


def _list_numbers(archive: zipfile.ZipFile, main: str, max_bytes: int, path: Path) -> ListNumbers | None:
    """The counters of the document's automatic list numbering, from the numbering and styles parts
    the main part's relationships name (None where it has no numbering part). A damaged or oversized one
    costs the clause numbers, not the document: it is read without them, and a warning names the file."""
    from lxml import etree

    try:
        return _parse_list_numbers(archive, main, max_bytes)
    except (DocxError, etree.XMLSyntaxError, KeyError, ValueError, zipfile.BadZipFile, zlib.error, EOFError) as exc:
        logger.warning("%s: read without its list numbers (%s)", printable(str(path)), str(exc)[:160])
        return None


def _parse_list_numbers(archive: zipfile.ZipFile, main: str, max_bytes: int) -> ListNumbers | None:
    """:func:`_list_numbers`' reading, which raises where a part is damaged or too big."""
    from lxml import etree

    folder, name = posixpath.split(main)
    rels_name = posixpath.join(folder, "_rels", name + ".rels")
    if rels_name not in archive.namelist():
        return None
    parts = {}
    for kind in ("numbering", "styles"):
        found = [n for n in _related(archive, rels_name, folder, "/" + kind) if n in archive.namelist()]
        if found:
            limit = f"above {SIDE_PART_BYTES:,}, more than any Word writes: not read"
            data = archive.read(_checked_size(archive, found[0], min(max_bytes, SIDE_PART_BYTES), limit))
            parts[kind] = etree.fromstring(data, etree.XMLParser(resolve_entities=False, no_network=True))
    if "numbering" not in parts:
        return None
    return ListNumbers(parts["numbering"], parts.get("styles"))


def _blocks(container, numbers: ListNumbers | None) -> Iterator[str]:
    """The text of each paragraph and table directly in ``container`` (the body, a cell, a content
    control's content), in order; a numbered paragraph's with its label (counted even when it is empty,
    as Word counts it)."""
    for child in container:
        if child.tag == P:
            label = numbers.label(child.find(PPR)) if numbers is not None else ""
            text = _paragraph_text(child).strip()
            yield label + text if text else ""
        elif child.tag == TBL:
            yield _table_text(child, numbers)
        elif child.tag == SDT and child.find(SDT_CONTENT) is not None:
            yield from _blocks(child.find(SDT_CONTENT), numbers)


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


def _table_text(table, numbers: ListNumbers | None) -> str:
    """One Markdown row per table row, a cell's blocks joined by spaces."""
    rows = []
    for row in _children(table, TR):
        cells = [" ".join(" ".join(_blocks(cell, numbers)).split()) for cell in _children(row, TC)]
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
