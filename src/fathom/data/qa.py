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
from collections.abc import Sequence
from dataclasses import dataclass

_KEY_VALUE = re.compile(r"^[ \t]*(?:[-*][ \t]+)?([A-Z][\w ()'./-]{1,48}?):[ \t]+(\S[^\n]{0,160})$", re.M)
_PARAGRAPH = re.compile(r"^[ \t]*(\([a-z]{1,4}\)|\d{1,2}\.)[ \t]+(\S[^\n]{20,})$", re.M)
_TITLE = re.compile(r"^(?:title:[ \t]*|#[ \t]+)(\S[^\n]{2,100})$", re.M)
_SKIP_KEYS = {"http", "https", "source_pdf", "verified", "regime", "part", "number", "note"}
DEPTHS = (0.1, 0.3, 0.5, 0.7, 0.9)


def normalize_answer(text: str) -> str:
    """SQuAD's normalization: lowercase, punctuation and articles removed, whitespace folded."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


@dataclass(frozen=True)
class Fact:
    question: str
    answer: str
    key: str  # the text that locates the fact; it must appear once in a context
    start: int  # character offset of the key in the document
    kind: str  # key_value | paragraph | teacher
    evidence: str | None = None  # what a context must hold for the answer to be found there (default: the answer)

    @property
    def needs(self) -> str:
        return self.evidence if self.evidence is not None else self.answer


def _first_sentence(text: str, limit: int = 200) -> str:
    match = re.match(r"(.{10,}?[.;:])(?:\s|$)", text)
    sentence = match.group(1) if match else text
    return sentence[:limit].rstrip(" .;:")


def extract_facts(text: str) -> list[Fact]:
    """The askable facts of a document, in order of appearance."""
    facts = []
    seen: set[str] = set()
    for match in _KEY_VALUE.finditer(text):
        key, value = match.group(1).strip(), _first_sentence(match.group(2).strip())
        if key.lower() in _SKIP_KEYS or ". " in key or len(value) < 2 or key in seen:
            continue
        seen.add(key)
        facts.append(Fact(f'What does the document give for "{key}"?', value, f"{key}:", match.start(1), "key_value"))
    title = _TITLE.search(text)
    if title:
        name = title.group(1).strip().strip("'\"")
        for match in _PARAGRAPH.finditer(text):
            label = match.group(1)
            if label in seen:
                continue
            seen.add(label)
            answer = _first_sentence(match.group(2).strip())
            question = f'What does paragraph {label} of "{name}" say?'
            facts.append(Fact(question, answer, match.group(0).strip()[:60], match.start(1), "paragraph"))
    return facts


def build_records(
    texts: Sequence[str],
    tokenizer,
    lengths: Sequence[int],
    per_document: int = 2,
    seed: int = 0,
    more_facts: dict[int, list[Fact]] | None = None,
) -> list[dict]:
    """Document-QA records (``fathom.data.instruct`` reads them) with contexts of ``lengths`` tokens.

    ``per_document`` facts of each document are drawn from :func:`extract_facts`; ``more_facts``
    (document index -> facts, e.g. a teacher's, see ``fathom.data.teacher``) are all asked too.
    """
    rng = random.Random(seed)
    more_facts = more_facts or {}
    # each text ends with a blank line, so documents placed side by side in a context stay apart
    encoded = [tokenizer(t.rstrip() + "\n\n", add_special_tokens=False, return_offsets_mapping=True) for t in texts]
    records = []
    for index, text in enumerate(texts):
        facts = extract_facts(text)
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
    """The record for ``fact`` of document ``index`` in a context of ``length`` tokens, fact at ``depth``."""
    ids = encoded[index]["input_ids"]
    at = _token_at(encoded[index]["offset_mapping"], fact.start)
    span = _token_at(encoded[index]["offset_mapping"], fact.start + len(fact.key)) - at  # the key fits whole
    if len(ids) >= length:
        start = min(max(at - round(depth * max(length - span, 0)), 0), len(ids) - length)
        context_ids, fact_token = ids[start : start + length], at - start
    else:  # the document between others that do not state the same key
        pool = iter(i for i in rng.sample(range(len(texts)), len(texts)) if i != index and fact.key not in texts[i])
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
    return {
        "document": context,
        "question": fact.question,
        "answer": fact.answer,
        "context_tokens": len(context_ids),
        "depth": round(fact_token / max(len(context_ids), 1), 3),
        "kind": fact.kind,
        "source_document": index,
    }
