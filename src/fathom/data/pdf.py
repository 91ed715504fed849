"""A PDF's text as a reader sees it: furniture out, words broken at line ends joined, columns and tables in order.

pdfium (through pypdfium2) finds the text and its boxes: one rectangle per run of text on a line, in the
page's own coordinates, rotation undone. What no library does for a corpus is the reading layer on top,
so it is written here, from positions and repetition only (no per-publisher patterns):

- **Lines**: rectangles whose vertical middles agree form a line; a line with wide gaps between its
  rectangles is a row of cells. Two or more such rows in a row are a table, kept as Markdown rows
  (``| Tug | 480 | 32 | 6 |``: the cleaner folds tabs, a model has read many such tables).
- **Columns**: a page whose lines leave a vertical gutter in its middle third (at most 10% of the
  lines cross it) is read column by column.
- **Furniture**: the top and bottom lines of each page (the two outermost at each end) whose text, digits
  aside, recurs at the same end of at least half the pages (two at least), or which are only a page
  number ("7", "Page 7", "- 7 -", "7 of 12", roman numerals), are dropped.
- **Hyphens**: a line ending in a letter and "-" (pdfium marks such hyphens) followed by a line starting
  in lower case is one word broken in two, unless the document writes the compound with its hyphen
  elsewhere (power-driven, sea-going) more often than the word whole. No dictionary is needed, and
  a compound the document writes nowhere else loses its hyphen (the one error this rule makes).
- **Reading order across breaks**: a block that ends without a full stop and a next one (column or
  page) starting in lower case are one sentence; other blocks are paragraphs.

- **Scans**: a page with no text at all is rendered at 300 dpi and read by tesseract (``data.ocr: auto``,
  where the ``tesseract`` program is installed: it reads English print well and ships no Python
  package to install); its words, with their boxes, go through the same reading as a text layer.
- **Garbage text layers**: a page whose text mostly does not read as words or numbers (a font whose
  encoding maps glyphs to the wrong characters, a bad OCR layer under a scan: under half of its
  characters, of 50 or more) is read by OCR like a scan; with no OCR it is left out and counted, since
  training on it would teach the model the garbage.

Worked example: a page whose lines are ``Rules for Ships - Page 3`` (and the same on most pages),
``the vessel shall keep a look-`` and ``out at all times`` becomes ``the vessel shall keep a lookout at
all times`` when "lookout" occurs elsewhere in the document, ``... a look-out at all times`` when "look-out"
does.
"""

from __future__ import annotations

import functools
import itertools
import logging
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

PAGE_NUMBER = re.compile(
    r"^[-–—\s]*(page|p\.|seite|pag\.?)?\s*([0-9]+|[ivxlcdm]{1,6})(\s*(of|/|de|von)\s*[0-9]+)?[-–—\s]*$", re.I
)
logger = logging.getLogger("fathom")

READER_VERSION = "fathom-pdf-2"  # in the token cache's key of every PDF: bump when the text read changes
OCR_DPI = 300
OCR_INSTALL = "install tesseract (apt-get install tesseract-ocr, or brew install tesseract) and prepare again"
SOFT_HYPHENS = ("\x02", "\ufffe", "\u00ad")  # how pdfium marks a hyphen that ends a line
TERMINAL = ".!?:;\")'”’»"
READABLE = re.compile(r"^[\W_]*(?:[^\W\d_]+(?:[-'’][^\W\d_]+)*|\d[\d.,:/%-]*)[\W_]*$")  # a word or a number
BROKEN = re.compile(r"([^\W\d_]+)-$")  # a line that ends in a word and a hyphen
WORD = re.compile(r"[^\W\d_]+(?:-[^\W\d_]+)*", re.U)
GARBLED_BELOW = 0.5  # a page whose readable share is under this, of at least GARBLED_MIN_CHARS, is garbage
GARBLED_MIN_CHARS = 50


Box = tuple[float, float, float, float, str]  # left, bottom, right, top (page points), text


@dataclass
class Line:
    """One line of a page: its cells (one for running text) left to right, its box in page points."""

    cells: list[str]
    left: float
    right: float
    bottom: float
    top: float
    boxes: list[Box] = field(default_factory=list)

    @property
    def text(self) -> str:
        return " ".join(self.cells)

    @property
    def middle(self) -> float:
        return (self.top + self.bottom) / 2


@dataclass
class PdfText:
    """The text of one PDF and what reading it took away or joined."""

    text: str
    pages: int
    furniture_lines: int = 0
    hyphens_joined: int = 0
    table_rows: int = 0
    pages_without_text: list[int] = field(default_factory=list)  # 1-based: scanned, or images only
    pages_ocr: int = 0  # of those and the garbled ones, read by OCR
    pages_garbled: list[int] = field(default_factory=list)  # 1-based: a text layer that is not text

    @property
    def confidence(self) -> float:
        """How much of the text reads as words or numbers (0-1): a text layer in a broken font encoding,
        or a poor scan, scores low; ``fathom data stats`` lists the lowest files to look at first."""
        return readable_share(self.text)


def readable_share(text: str) -> float:
    """The share of ``text``'s characters (whitespace aside) in tokens that read as a word or a number."""
    tokens = text.split()
    total = sum(len(t) for t in tokens)
    return sum(len(t) for t in tokens if READABLE.match(t)) / total if total else 0.0


def _garbled(boxes: list[Box]) -> bool:
    """A page's text layer is garbage: enough text, and under half of it reads as words or numbers."""
    text = " ".join(box[4] for box in boxes)
    return len(text) >= GARBLED_MIN_CHARS and readable_share(text) < GARBLED_BELOW


def read_pdf(path: str | Path, ocr: str = "off") -> PdfText:
    """The reader's text of ``path`` (see the module docstring); ``ocr``: data.ocr. Raises pypdfium2's
    PdfiumError when the file is not a PDF it can open (an encrypted one without an empty password
    included)."""
    import pypdfium2

    engine = ocr_engine(ocr)
    document = pypdfium2.PdfDocument(str(path))
    pages, garbled, scanned, started = [], [], 0, time.perf_counter()
    try:
        for i in range(len(document)):
            boxes = _page_boxes(document[i])
            if boxes and _garbled(boxes):
                garbled.append(i + 1)
                boxes = []  # read again by OCR below, or left out
            if not boxes and engine:
                if scanned % 10 == 0:  # OCR takes seconds a page: say where it is
                    logger.info("OCR: %s, page %d of %d, with %s", path, i + 1, len(document), engine)
                boxes = _ocr_boxes(document[i])
                scanned += 1
            pages.append(boxes)
    finally:
        document.close()
    if scanned:
        logger.info("OCR: %s: %d pages read in %.0f s", path, scanned, time.perf_counter() - started)
    result = assemble(pages)
    result.pages_ocr, result.pages_garbled = scanned, garbled
    return result


@functools.cache
def ocr_engine(setting: str) -> str | None:
    """The OCR program a setting of data.ocr uses here ("tesseract 5.3.0"), or None (off, or not installed)."""
    program = shutil.which("tesseract") if setting == "auto" else None
    if program is None:
        return None
    try:
        version = subprocess.run([program, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    first = (version.stdout or version.stderr).splitlines()
    return first[0].strip() if version.returncode == 0 and first else None


def _ocr_boxes(page) -> list[Box]:
    """The words tesseract reads on the page rendered at ``OCR_DPI``, as boxes in page points."""
    image = page.render(scale=OCR_DPI / 72).to_pil().convert("L")
    height = page.get_size()[1]
    with tempfile.TemporaryDirectory(prefix="fathom-ocr-") as folder:
        picture = Path(folder) / "page.png"
        image.save(picture)
        command = ["tesseract", str(picture), "stdout", "--dpi", str(OCR_DPI), "-l", "eng", "tsv"]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.SubprocessError) as exc:
            logger.warning("OCR failed on a page (%s); the page is left out", exc)
            return []
    scale, boxes = 72 / OCR_DPI, []
    for row in done.stdout.splitlines()[1:]:
        cells = row.split("\t")
        if len(cells) == 12 and cells[0] == "5" and cells[11].strip():
            left, top, width, tall = (float(v) * scale for v in cells[6:10])
            boxes.append((left, height - top - tall, left + width, height - top, cells[11].strip()))
    return boxes


def _page_boxes(page) -> list[Box]:
    """pdfium's text rectangles of a page with their text (a line-end hyphen as "-")."""
    textpage = page.get_textpage()
    boxes = []
    for i in range(textpage.count_rects()):
        left, bottom, right, top = textpage.get_rect(i)
        text = textpage.get_text_bounded(left, bottom, right, top)
        for mark in SOFT_HYPHENS:
            text = text.replace(mark, "-")
        text = " ".join(text.split())
        if text:
            boxes.append((left, bottom, right, top, text))
    return boxes


def _lines(boxes: list[Box]) -> list[Line]:
    """Boxes (left, bottom, right, top, text) grouped into lines, each line's boxes left to right; a gap
    wider than twice the line's height splits it into cells, a narrower one is a space."""
    lines: list[list[tuple]] = []
    for box in sorted(boxes, key=lambda b: -(b[1] + b[3]) / 2):
        middle, height = (box[1] + box[3]) / 2, box[3] - box[1]
        if lines and abs(middle - (lines[-1][0][1] + lines[-1][0][3]) / 2) < 0.5 * max(height, 1.0):
            lines[-1].append(box)
        else:
            lines.append([box])
    out = []
    for group in lines:
        group.sort(key=lambda b: b[0])
        height = max(b[3] - b[1] for b in group)
        cells = [group[0][4]]
        for previous, box in itertools.pairwise(group):
            if box[0] - previous[2] > 2 * height:
                cells.append(box[4])
            else:
                cells[-1] += " " + box[4]
        top, bottom = max(b[3] for b in group), min(b[1] for b in group)
        out.append(Line(cells, group[0][0], group[-1][2], bottom, top, group))
    return out


def assemble(pages: list[list[Box]]) -> PdfText:
    """The document's text from every page's text boxes: furniture out, columns in order, tables as
    rows, blocks joined across breaks, hyphens joined where the document says so."""
    result = PdfText("", len(pages))
    page_lines = [_lines(boxes) for boxes in pages]
    furniture = _furniture(page_lines)
    result.furniture_lines = sum(len(ids) for ids in furniture)
    blocks: list[list[Line]] = []
    for number, (lines, dropped) in enumerate(zip(page_lines, furniture, strict=True), start=1):
        if not lines:
            result.pages_without_text.append(number)
        body = [box for i, line in enumerate(lines) if i not in dropped for box in line.boxes]
        blocks += [_lines(column) for column in _columns(body)]
    vocabulary = _vocabulary(page_lines)
    parts: list[str] = []
    tables: set[int] = set()  # indexes of the parts that are tables: text never runs on from one
    for block in blocks:
        for kind, content in _paragraphs(block):
            if kind == "table":
                result.table_rows += len(content)
                tables.add(len(parts))
                parts.append("\n".join("| " + " | ".join(row) + " |" for row in content))
                continue
            text, joined = _join_lines(content, vocabulary)
            result.hyphens_joined += joined
            if parts and len(parts) - 1 not in tables and _continues(parts[-1], text):
                glued, joined = _join_lines([parts[-1], text], vocabulary)
                parts[-1] = glued
                result.hyphens_joined += joined
            else:
                parts.append(text)
    result.text = "\n\n".join(p for p in parts if p.strip())
    return result


def _furniture(pages: list[list[Line]]) -> list[set[int]]:
    """Per page, the indexes of its header and footer lines (see the module docstring)."""

    def key(line: Line) -> str:
        return re.sub(r"\d+", "#", " ".join(line.text.lower().split()))

    zones: Counter = Counter()
    for lines in pages:
        zones.update({("top", key(line)) for line in lines[:2]} | {("bottom", key(line)) for line in lines[-2:]})
    enough = max(2, (len(pages) + 1) // 2)
    out = []
    for lines in pages:
        ends = {i: "top" for i in range(min(2, len(lines)))} | {
            i: "bottom" for i in range(max(0, len(lines) - 2), len(lines))
        }
        dropped = {
            i
            for i, zone in ends.items()
            if (len(pages) >= 2 and zones[(zone, key(lines[i]))] >= enough) or PAGE_NUMBER.match(lines[i].text)
        }
        out.append(dropped)
    return out


def _columns(boxes: list[Box]) -> list[list[Box]]:
    """The page's boxes in reading order: its left column then its right one where a gutter in the middle
    third splits them (at most 10% of the boxes cross it, and each side holds lines of running text, not
    a table's narrow cells), else the page as one block."""
    if len(boxes) < 6:
        return [boxes] if boxes else []
    left, right = min(b[0] for b in boxes), max(b[2] for b in boxes)
    best, crossing = None, len(boxes)
    for step in range(1, 30):
        x = left + (right - left) * (1 / 3 + step / 90)
        n = sum(1 for b in boxes if b[0] < x < b[2])
        if n < crossing:
            best, crossing = x, n
    if best is None or crossing > 0.1 * len(boxes):
        return [boxes]
    first = [b for b in boxes if b[2] <= best or b[0] < best < b[2]]
    second = [b for b in boxes if b[0] >= best]
    wide = 0.25 * (right - left)
    for side in (first, second):
        if len(side) < 0.2 * len(boxes) or statistics.median(b[2] - b[0] for b in side) < wide:
            return [boxes]
    return [first, second]


def _paragraphs(lines: list[Line]):
    """(``"text"``, lines' texts) and (``"table"``, rows of cells) runs of a block, in order; a new text
    paragraph where the gap between lines is over 1.6 times the usual one."""
    gaps = [a.bottom - b.top for a, b in itertools.pairwise(lines)]
    usual = statistics.median(gaps) if gaps else 0.0
    run: list = []
    kind = None
    for i, line in enumerate(lines):
        this = "table" if len(line.cells) >= 2 and _is_row(lines, i) else "text"
        gap = lines[i - 1].bottom - line.top if i else 0.0
        if run and (this != kind or (this == "text" and gap > 1.6 * max(usual, 1.0) + 1)):
            yield kind, run
            run = []
        kind = this
        run.append(line.cells if this == "table" else line.text)
    if run:
        yield kind, run


def _is_row(lines: list[Line], i: int) -> bool:
    """A line of cells is a table row when a neighbouring line has cells too (one line alone is not a table)."""
    return any(0 <= j < len(lines) and len(lines[j].cells) >= 2 for j in (i - 1, i + 1))


def _vocabulary(pages: list[list[Line]]) -> Counter:
    """How often each word (lower case) occurs inside lines, not at their ends: the document's own
    spelling, to decide line-end hyphens."""
    words: Counter = Counter()
    for lines in pages:
        for line in lines:
            found = WORD.findall(line.text.lower())
            words.update(found[1:-1] if len(found) > 2 else found[:-1])
    return words


def _join_lines(texts: list[str], vocabulary: Counter) -> tuple[str, int]:
    """The lines of one paragraph as one string; how many broken words were joined."""
    out, joined = texts[0], 0
    for text in texts[1:]:
        head = BROKEN.search(out[-80:])  # the tail only: searching all of a growing paragraph is quadratic
        tail = re.match(r"([^\W\d_]+)", text)
        if head and tail and text[:1].islower():
            first, second = head.group(1).lower(), tail.group(1).lower()
            if _one_word(first, second, vocabulary):
                out = out[:-1] + text
                joined += 1
                continue
            out += text  # a compound: "power-" + "driven"
            continue
        out += " " + text
    return out, joined


def _one_word(first: str, second: str, vocabulary: Counter) -> bool:
    """A word broken at a line end, unless the document writes the compound with its hyphen elsewhere and
    never the word whole: typesetters break words far more often than compounds land on their hyphen."""
    return not vocabulary[f"{first}-{second}"] or vocabulary[first + second] > vocabulary[f"{first}-{second}"]


def _continues(previous: str, text: str) -> bool:
    """Whether ``text`` carries on the sentence ``previous`` left open (across a column or a page)."""
    return bool(previous) and not previous.rstrip().endswith(tuple(TERMINAL)) and text[:1].islower()
