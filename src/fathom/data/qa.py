"""Long-document question answering built from the users' own documents, offline and deterministic.

Few teams own long-document QA data, but their documents state facts that can be asked about:

- ``key: value`` lines (manifests, particulars, report headers, YAML front matter):
  *What does the document give for "Hold 3"?* -> ``3,280 t of soybeans``;
- lettered or numbered paragraphs of a rule or section (``(a) ...``, ``1. ...``), under the
  document's title: *What does paragraph (b) of "Overtaking" say?* -> the paragraph's first sentence.

Each question gets a context of a chosen token length with its fact at a chosen depth: a window of
the document when it is long enough, else the document between other documents of the corpus
(which do not state the same key, so the answer is unambiguous). Every record carries
``context_tokens`` and ``depth`` (where the fact sits, 0 = start, 1 = end), so evaluation can
report accuracy by length and depth. The same seed gives the same records.
"""

from __future__ import annotations

import bisect
import random
import re
import string
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

_KEY_VALUE = re.compile(r"^[ \t]*(?:[-*][ \t]+)?([A-Z][\w ()'./-]{1,48}?):[ \t]+(\S[^\n]{0,160})$", re.M)
_PARAGRAPH = re.compile(r"^[ \t]*(\([a-z]{1,4}\)|\d{1,2}\.)[ \t]+(\S[^\n]{20,})$", re.M)
_TITLE = re.compile(r"^(?:title:[ \t]*|#[ \t]+)(\S[^\n]{2,100})$", re.M)
_HEADING = re.compile(r"^(#{1,6})[ \t]+(\S[^\n]{1,160}?)[ \t]*$", re.M)
_LABELLED_HEADING = re.compile(r"^(\([a-z0-9]{1,4}\)|\d{1,2}\.)(?:[ \t]+|$)")  # "(a) In General" or "(a)" alone
_SKIP_KEYS = {"http", "https", "source_pdf", "verified", "regime", "part", "number", "note"}
DEPTHS = (0.1, 0.3, 0.5, 0.7, 0.9)
_ASCII_PUNCTUATION = frozenset(string.punctuation)  # SQuAD's set: it holds symbols ($, +, =) too
ANSWER_CHARS = 100  # longer first sentences are cut at the last word boundary before this
# ``fathom qa build``'s cut for training sets: whole sentences (bench/quality.py's whole-answers probe)
TRAINING_ANSWER_CHARS = 300


def normalize_answer(text: str) -> str:
    """SQuAD's normalization (lowercase, punctuation and articles removed, whitespace folded), with
    Unicode's punctuation as well as ASCII's, after NFKC.

    Text from statutes and PDFs has typographic quotes and dashes where a model writes ASCII: with
    SQuAD's ASCII set, "the Secretary's decision" missed the reference "the Secretary’s decision" (1 or
    2 answers of 52 to 108 in each real-statute evaluation). NFKC folds ligatures and no-break spaces.
    """
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(ch for ch in text if ch not in _ASCII_PUNCTUATION and not unicodedata.category(ch).startswith("P"))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


@dataclass(frozen=True)
class Fact:
    question: str
    answer: str
    key: str  # the text that locates the fact; it must appear once in a context
    start: int  # character offset of the key in the document
    kind: str  # key_value | paragraph | section | teacher
    evidence: str | None = None  # what a context must hold for the answer to be found there (default: the answer)
    anchor: str | None = None  # the heading or title the question names; once in a context, before the key
    anchor_start: int | None = None  # its character offset in the document

    @property
    def needs(self) -> str:
        return self.evidence if self.evidence is not None else self.answer


def _first_sentence(text: str, limit: int = ANSWER_CHARS) -> str:
    """The first sentence of ``text``; past ``limit`` characters cut at a word boundary, never inside a word.

    A stop inside brackets does not end the sentence: "lube oil 2.5 bar (below limit: standby pump
    started)" is one value, and stopping at its colon taught answers that end in an open bracket.
    """
    sentence = text
    for match in re.finditer(r"[.;:](?=\s|$)", text):
        head = text[: match.start() + 1]
        if len(head) > 10 and head.count("(") <= head.count(")") and head.count("[") <= head.count("]"):
            sentence = head
            break
    if len(sentence) > limit:
        cut = sentence.rfind(" ", 0, limit + 1)
        sentence = sentence[: cut if cut > limit // 2 else limit]
    return sentence.rstrip(" .;:,")


def _is_prose(line: str) -> bool:
    """A sentence of running text (a section's body), not a list item, a record line or a label."""
    return len(line) >= 20 and line[0].isalpha() and not _KEY_VALUE.match(line) and not _PARAGRAPH.match(line)


def _headings(text: str) -> list[tuple[int, int, str, str]]:
    """Markdown headings as (offset, level, heading line, name), in order."""
    return [(m.start(), len(m.group(1)), m.group(0).strip(), m.group(2).strip()) for m in _HEADING.finditer(text)]


def _enclosing(headings, at: int, title) -> tuple[str, str, int] | None:
    """(name, anchor line, anchor offset) of the nearest heading above ``at`` that is not itself a labelled
    paragraph; the document's title when no such heading precedes it; None when there is neither."""
    for start, _, line, name in reversed([h for h in headings if h[0] < at]):
        if not _LABELLED_HEADING.match(name):
            return name.rstrip(" ."), line, start
    if title is not None:
        return title.group(1).strip().strip("'\""), title.group(0).strip(), title.start()
    return None


def _body_after(text: str, end: int) -> tuple[str, int] | None:
    """The first non-blank line after ``end`` and its offset, unless that line is another heading."""
    match = re.compile(r"\n[ \t]*\n?[ \t]*(\S[^\n]*)").match(text, end)
    if match is None or match.group(1).startswith("#"):
        return None
    return match.group(1).strip(), match.start(1)


def extract_facts(text: str, answer_chars: int = ANSWER_CHARS) -> list[Fact]:
    """The askable facts of a document, in order of appearance; answers are first sentences (or values),
    cut at a word boundary past ``answer_chars``.

    Paragraph and section questions name the heading they sit under (a long document holds many
    paragraphs "(a)"), and a label that occurs twice under one heading is not asked at all: every
    question has one answer in its document.
    """
    facts = _key_value_facts(text, answer_chars)
    title = _TITLE.search(text)
    headings = _headings(text)
    candidates = _paragraph_candidates(text, headings, title, answer_chars) + _section_candidates(
        text, headings, answer_chars
    )
    counts: dict[tuple[str, str], int] = {}
    for name, label, *_ in candidates:
        counts[(name, label)] = counts.get((name, label), 0) + 1
    for name, label, answer, key, start, anchor, anchor_start in sorted(candidates, key=lambda c: c[4]):
        if counts[(name, label)] != 1 or len(answer) < 10:
            continue
        if label:
            question, kind = f'What does paragraph {label} of "{name}" say?', "paragraph"
        else:
            question, kind = f'What does the section "{name}" say?', "section"
        facts.append(Fact(question, answer, key, start, kind, None, anchor, anchor_start))
    return facts


def _key_value_facts(text: str, answer_chars: int) -> list[Fact]:
    facts, seen = [], set()
    for match in _KEY_VALUE.finditer(text):
        key, value = match.group(1).strip(), _first_sentence(match.group(2).strip(), answer_chars)
        if key.lower() in _SKIP_KEYS or ". " in key or len(value) < 2 or key in seen:
            continue
        seen.add(key)
        facts.append(Fact(f'What does the document give for "{key}"?', value, f"{key}:", match.start(1), "key_value"))
    return facts


def _paragraph_candidates(text: str, headings, title, answer_chars: int) -> list[tuple]:
    """(name, label, answer, key, key offset, anchor, anchor offset) of lettered / numbered paragraphs,
    written inline ("(a) Any vessel ...") or as a heading with the text below ("###### (a) In General")."""
    out = []
    for match in _PARAGRAPH.finditer(text):
        where = _enclosing(headings, match.start(), title)
        if where is not None:
            answer = _first_sentence(match.group(2).strip(), answer_chars)
            out.append((where[0], match.group(1), answer, match.group(0).strip()[:60], match.start(1), *where[1:]))
    for start, _, line, name in headings:
        label = _LABELLED_HEADING.match(name)
        body = _body_after(text, start + len(line))
        where = _enclosing(headings, start, title)
        if label and body and _is_prose(body[0]) and where is not None:
            key = f"{line}\n"  # the heading line, whole: "(a)" alone recurs under every section
            out.append((where[0], label.group(1), _first_sentence(body[0], answer_chars), key, start, *where[1:]))
    return out


def _section_candidates(text: str, headings, answer_chars: int) -> list[tuple]:
    """Sections (a heading below the title, not a labelled paragraph) whose text opens with a sentence."""
    out = []
    for start, level, line, name in headings:
        body = _body_after(text, start + len(line))
        if level == 1 or _LABELLED_HEADING.match(name) or body is None or not _is_prose(body[0]):
            continue
        out.append((name.rstrip(" ."), "", _first_sentence(body[0], answer_chars), f"{line}\n", start, None, None))
    return out


def build_records(
    texts: Sequence[str],
    tokenizer,
    lengths: Sequence[int],
    per_document: int = 2,
    seed: int = 0,
    more_facts: dict[int, list[Fact]] | None = None,
    answer_chars: int = ANSWER_CHARS,
) -> list[dict]:
    """Document-QA records (``fathom.data.instruct`` reads them) with contexts of ``lengths`` tokens.

    ``per_document`` facts of each document are drawn from :func:`extract_facts`; ``more_facts``
    (document index -> facts, e.g. a teacher's, see ``fathom.data.teacher``) are all asked too.
    ``answer_chars``: answers past it are cut at a word boundary (see :func:`extract_facts`).
    """
    rng = random.Random(seed)
    more_facts = more_facts or {}
    # each text ends with a blank line, so documents placed side by side in a context stay apart
    encoded = [tokenizer(t.rstrip() + "\n\n", add_special_tokens=False, return_offsets_mapping=True) for t in texts]
    records = []
    for index, text in enumerate(texts):
        facts = extract_facts(text, answer_chars)
        for length in lengths:
            chosen = rng.sample(facts, min(per_document, len(facts))) + more_facts.get(index, [])
            for fact in chosen:
                depth = rng.choice(DEPTHS)
                record = _context(index, fact, texts, encoded, tokenizer, length, depth, rng)
                if record is not None:
                    records.append(record)
    return records


def _token_at(offsets, char: int) -> int:
    """Index of the token that holds character ``char`` (offsets: (start, end) per token, in order)."""
    ends = [end for _, end in offsets]
    return min(bisect.bisect_right(ends, char), len(ends) - 1)


def _context(index, fact: Fact, texts, encoded, tokenizer, length: int, depth: float, rng) -> dict | None:
    """The record for ``fact`` of document ``index`` in a context of ``length`` tokens, fact at ``depth``.

    The window holds the fact's anchor (the heading its question names) through its key; documents
    placed beside a short one state neither the key nor the anchor, so the question keeps one answer.
    """
    ids, offsets = encoded[index]["input_ids"], encoded[index]["offset_mapping"]
    first = fact.anchor_start if fact.anchor_start is not None else fact.start
    at = _token_at(offsets, first)
    span = _token_at(offsets, fact.start + len(fact.key)) - at  # the anchor and the key fit whole
    if span >= length:
        return None
    if len(ids) >= length:
        start = min(max(at - round(depth * max(length - span, 0)), 0), len(ids) - length)
        context_ids, fact_token = ids[start : start + length], at - start
    else:  # the document between others that do not state the same key or heading
        marks = [m for m in (fact.key, fact.anchor) if m]
        pool = iter(i for i in rng.sample(range(len(texts)), len(texts)) if i != index and not _states(texts[i], marks))
        want_before = min(max(round(depth * length) - at, 0), length - len(ids))
        before: list[int] = []
        while len(before) < want_before and (i := next(pool, None)) is not None:
            before += encoded[i]["input_ids"]
        before = before[len(before) - want_before :] if want_before else []
        after: list[int] = []
        while len(before) + len(ids) + len(after) < length and (i := next(pool, None)) is not None:
            after += encoded[i]["input_ids"]
        context_ids, fact_token = [*before, *ids, *after][:length], len(before) + at
    context = tokenizer.decode(context_ids)
    if context.count(fact.key) != 1 or fact.needs not in context:
        return None  # cut away by the window, or stated twice: the question would not have one answer
    if fact.anchor is not None and not 0 <= context.find(fact.anchor) < context.find(fact.key):
        return None  # the heading the question names is not in the window
    return {
        "document": context,
        "question": fact.question,
        "answer": fact.answer,
        "context_tokens": len(context_ids),
        "depth": round(fact_token / max(len(context_ids), 1), 3),
        "kind": fact.kind,
        "source_document": index,
    }


def _states(text: str, marks: list[str]) -> bool:
    return any(mark in text for mark in marks)
