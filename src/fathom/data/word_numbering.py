"""The numbers and letters Word's automatic list numbering draws before a paragraph ("4.2", "(c)", "•").

In Word documents the clause numbers of a procedure or a regulation ("5.3.1 The master shall ...") are
rarely typed: a list definition draws them, so they are not in the paragraph's text, and a question
about "section 5.3" has nothing to find. This module counts them as Word does for the common cases and
gives :mod:`fathom.data.word` the label of each numbered paragraph, in reading order.

Written here because the Python readers of .docx (python-docx, docx2txt, mammoth's plain text) leave the
numbers out. What it follows (ECMA-376 part 1, 17.9):

- a paragraph's list and level: its own ``w:numPr`` (``w:numId``, ``w:ilvl``), else its style's,
  following ``w:basedOn``; ``w:numId`` 0 switches numbering off; a style without a level takes the
  level whose ``w:pStyle`` names it (headings linked to a multi-level list), else level 0;
- a list (``w:num``) draws with its abstract definition (``w:abstractNum``, or the one a
  ``w:numStyleLink`` points to through a numbering style); lists of one definition share its counters,
  and a list's ``w:startOverride`` restarts them where it is first used (Word's "restart numbering");
- a level's counter starts at ``w:start``, counts each paragraph at that level, and restarts when a
  paragraph at a higher level comes (or only at the levels ``w:lvlRestart`` names; 0: never); a
  list's own ``w:lvl`` in a ``w:lvlOverride`` replaces its definition's level;
- ``w:lvlText`` ("%1.%2.") shows each level's counter in that level's ``w:numFmt`` (decimal,
  letters, roman; every level decimal under ``w:isLgl``); a bullet shows its character ("•" where
  it is a symbol-font code); ``w:suff`` nothing joins label and text.

Not followed (rare in the documents fathom reads): formats other than decimal, letters and roman (they
count in decimal), numbering inside text boxes, a level's picture bullets (written as "•").
"""

from __future__ import annotations

from dataclasses import dataclass

W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
VAL = W + "val"
MAX_LEVELS = 9  # levels 0..8 (17.9.3)
# Bounds on what a hostile file can make a label cost: Word's own start values stop at 32767, and past
# these letters ("zzz...") and roman numerals grow with the count, so they are written in decimal there
MAX_START, MAX_LETTERS, MAX_ROMAN, MAX_LEVEL_TEXT = 32767, 26 * 3, 3999, 64


@dataclass(frozen=True)
class Level:
    """One level of a list definition (``w:lvl``)."""

    start: int = 1
    fmt: str = "decimal"
    text: str = "%1."
    legal: bool = False  # w:isLgl: every level's number shown in decimal
    space: bool = True  # False where w:suff is "nothing"
    style: str | None = None  # w:pStyle: the paragraph style this level belongs to
    restart: int | None = None  # w:lvlRestart: restarts after a level above this one (1-based); 0 never

    def restarts_after(self, used: int) -> bool:
        """Whether a paragraph at level ``used`` (0-based, above this level) restarts this level's counter."""
        return self.restart is None or (self.restart > 0 and used < self.restart)


def _val(node, tag: str, default=None):
    child = node.find(W + tag) if node is not None else None
    return default if child is None else child.get(VAL, default)


def _int(value, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _level(lvl) -> Level:
    suffix = _val(lvl, "suff", "tab")
    return Level(
        start=min(max(_int(_val(lvl, "start"), 1), 0), MAX_START),
        fmt=_val(lvl, "numFmt", "decimal"),
        text=(_val(lvl, "lvlText", "") or "")[:MAX_LEVEL_TEXT],
        legal=lvl.find(W + "isLgl") is not None and _val(lvl, "isLgl", "1") not in ("0", "false"),
        space=suffix != "nothing",
        style=_val(lvl, "pStyle"),
        restart=_int(_val(lvl, "lvlRestart"), 0) if lvl.find(W + "lvlRestart") is not None else None,
    )


def _letters(n: int, upper: bool) -> str:
    """Word's letter numbering: a..z, then aa..zz, aaa.. (the letter repeated, not base 26)."""
    letter = chr((ord("A") if upper else ord("a")) + (n - 1) % 26)
    return letter * ((n - 1) // 26 + 1)


_ROMAN = ((1000, "m"), (900, "cm"), (500, "d"), (400, "cd"), (100, "c"), (90, "xc"), (50, "l"), (40, "xl"))
_ROMAN += ((10, "x"), (9, "ix"), (5, "v"), (4, "iv"), (1, "i"))


def _roman(n: int) -> str:
    out = []
    for value, digits in _ROMAN:
        out.append(digits * (n // value))
        n %= value
    return "".join(out)


def format_number(n: int, fmt: str) -> str:
    """``n`` as ``w:numFmt`` ``fmt`` draws it; formats not listed here, and letters and roman numerals past
    their bounds, in decimal."""
    if n <= 0 and fmt != "decimal":
        return str(n)
    if fmt in ("lowerLetter", "upperLetter") and n <= MAX_LETTERS:
        return _letters(n, fmt == "upperLetter")
    if fmt in ("lowerRoman", "upperRoman") and n <= MAX_ROMAN:
        return _roman(n).upper() if fmt == "upperRoman" else _roman(n)
    if fmt == "decimalZero":
        return f"{n:02d}"
    return str(n)


def _bullet(text: str) -> str:
    """A bullet level's character; symbol fonts' private-use codes (Symbol's U+F0B7) as "•"."""
    shown = "".join(c for c in text if c.isprintable() and not 0xE000 <= ord(c) <= 0xF8FF)
    return shown.strip() or "•"


class ListNumbers:
    """The labels of numbered paragraphs, one call per paragraph in reading order (it keeps the counters).

    ``numbering`` and ``styles`` are the parsed roots of the package's numbering and styles parts (either
    may be None: a document without lists, or without styles).
    """

    def __init__(self, numbering, styles) -> None:
        self._abstract = {}  # abstractNumId -> {ilvl: Level}
        self._style_links = {}  # abstractNumId -> the numbering style it takes its levels from
        self._lists = {}  # numId -> (abstractNumId, {ilvl: start override}, {ilvl: its own Level})
        for node in numbering if numbering is not None else ():
            if node.tag == W + "abstractNum":
                ident = node.get(W + "abstractNumId")
                self._abstract[ident] = {_int(lvl.get(W + "ilvl"), 0): _level(lvl) for lvl in node.iter(W + "lvl")}
                link = _val(node, "numStyleLink")
                if link:
                    self._style_links[ident] = link
            elif node.tag == W + "num":
                overrides = list(node.iter(W + "lvlOverride"))
                starts = {
                    _int(o.get(W + "ilvl"), 0): min(max(_int(_val(o, "startOverride"), 1), 0), MAX_START)
                    for o in overrides
                    if o.find(W + "startOverride") is not None
                }
                own = {
                    _int(o.get(W + "ilvl"), 0): _level(o.find(W + "lvl"))
                    for o in overrides
                    if o.find(W + "lvl") is not None
                }
                self._lists[node.get(W + "numId")] = (_val(node, "abstractNumId"), starts, own)
        self._styles = {}  # styleId -> (basedOn, numId or None, ilvl or None)
        for style in styles.iter(W + "style") if styles is not None else ():
            num_pr = style.find(f"{W}pPr/{W}numPr")
            self._styles[style.get(W + "styleId")] = (
                _val(style, "basedOn"),
                _val(num_pr, "numId"),
                _val(num_pr, "ilvl"),
            )
        self._counts: dict[str, dict[int, int]] = {}  # abstractNumId -> {ilvl: the last number drawn}
        self._begun: set[str] = set()  # lists whose start overrides were applied

    def label(self, paragraph_properties) -> str:
        """The label Word draws before the paragraph whose ``w:pPr`` this is, with the space that follows
        it ("" when the paragraph is not numbered); counts the paragraph."""
        found = self._list_and_level(paragraph_properties)
        if found is None:
            return ""
        num_id, abstract_id, levels, ilvl = found
        levels = levels | self._lists[num_id][2]  # the list's own levels over its definition's
        counts = self._counts.setdefault(abstract_id, {})
        if num_id not in self._begun:
            self._begun.add(num_id)
            for level, start in self._lists[num_id][1].items():  # "restart numbering": from the override
                counts[level] = start - 1
                for deeper in [d for d in counts if d > level]:
                    del counts[deeper]
        level = levels.get(ilvl, Level())
        counts[ilvl] = counts.get(ilvl, level.start - 1) + 1
        for deeper in [d for d in counts if d > ilvl and levels.get(d, Level()).restarts_after(ilvl)]:
            del counts[deeper]  # a higher level restarts the lower ones
        if level.fmt == "none":
            return ""
        if level.fmt == "bullet":
            return _bullet(level.text) + " "
        text = level.text
        for shown in range(MAX_LEVELS - 1, -1, -1):  # %10 does not exist: %1 replaced last is safe
            if f"%{shown + 1}" in text:
                of = levels.get(shown, Level())
                n = counts.get(shown, of.start)
                text = text.replace(f"%{shown + 1}", format_number(n, "decimal" if level.legal else of.fmt))
        text = text.strip()
        return text + (" " if level.space and text else "")

    def _list_and_level(self, ppr):
        """(numId, abstractNumId, its levels, ilvl) of a paragraph, or None where it is not numbered."""
        num_pr = ppr.find(W + "numPr") if ppr is not None else None
        num_id, ilvl = _val(num_pr, "numId"), _val(num_pr, "ilvl")
        style = _val(ppr, "pStyle")
        seen = set()
        while (num_id is None or ilvl is None) and style in self._styles and style not in seen:
            seen.add(style)
            based_on, style_num, style_ilvl = self._styles[style]
            num_id = num_id if num_id is not None else style_num
            ilvl = ilvl if ilvl is not None else style_ilvl
            if num_id is not None and ilvl is None:  # the level whose w:pStyle names this style
                levels = self._levels_of(num_id)[1] or {}
                ilvl = next((str(i) for i, lvl in levels.items() if lvl.style == style), None)
            style = based_on
        if num_id is None or num_id == "0" or num_id not in self._lists:
            return None
        abstract_id, levels = self._levels_of(num_id)
        if not levels:
            return None
        return num_id, abstract_id, levels, min(max(_int(ilvl, 0), 0), MAX_LEVELS - 1)

    def _levels_of(self, num_id: str) -> tuple[str | None, dict[int, Level] | None]:
        """A list's abstract definition and its levels: its own, or the one its numbering style uses (whose
        counters it shares)."""
        abstract_id = self._lists.get(num_id, (None,))[0]
        for _ in range(4):  # numStyleLink -> style -> numId -> abstractNum: a short chain, never a loop
            link = self._style_links.get(abstract_id)
            if link is None:
                break
            linked_num = self._styles.get(link, (None, None, None))[1]
            abstract_id = self._lists.get(linked_num, (None,))[0]
        return abstract_id, self._abstract.get(abstract_id)
