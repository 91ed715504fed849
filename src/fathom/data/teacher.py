"""Question-answer pairs written by a teacher model, kept only where the passage supports the answer.

``fathom qa build --teacher-url URL --teacher-model NAME`` sends passages of the corpus to any
OpenAI-compatible chat server (vLLM, Ollama, llama.cpp's server, ``transformers serve``) through the
``openai`` client (retries, timeouts, error kinds) and asks for question/answer pairs whose answer
is copied from the passage. A teacher can misread or invent, so a pair is kept only when

- its answer, after SQuAD's normalization, occurs in the normalized passage (grounded),
- the question does not already contain the answer, and both are short enough to be a QA pair,
- it is not a repeat of a pair already kept for the same passage;

everything else is counted by reason. A kept pair becomes a :class:`~fathom.data.qa.Fact` whose key
is the whole passage, so :func:`fathom.data.qa.build_records` places the passage at a chosen depth
of a long context, exactly like the offline facts: the model must find it to answer.

Replies are parsed from the two shapes small and large models produce: JSON (a list of
``{"question", "answer"}`` objects, or one) and ``Q: ... / A: ...`` lines.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from fathom.data.qa import Fact, normalize_answer
from fathom.errors import ConfigError, raise_problems

logger = logging.getLogger("fathom")

PASSAGE_CHARS = 1200  # a passage is whole paragraphs up to this size: ~300 tokens, room in a 1K context
MIN_PASSAGE_CHARS = 200
MAX_ANSWER_CHARS = 200
MAX_QUESTION_CHARS = 300

SYSTEM_PROMPT = (
    "You write questions that test whether a reader understood a passage of a maritime document. "
    "Each answer is a short phrase copied word for word from the passage. Write each pair on two lines:\n"
    "Q: <question>\nA: <answer>"
)
# one worked example as a previous turn: small models follow a shown format far better than a described one
EXAMPLE_PASSAGE = (
    "Vessel: MV Northern Star\nPort of registry: Bergen\n"
    "The master reported a leak in ballast tank 4 on 12 March; the tank was pumped out and sealed."
)
EXAMPLE_REPLY = "Q: What is the port of registry?\nA: Bergen\nQ: Which tank leaked?\nA: ballast tank 4"


@dataclass(frozen=True)
class Teacher:
    """Where the teacher is and how to ask it (``fathom qa build --teacher-*``)."""

    url: str  # the server's OpenAI-compatible base URL, e.g. http://localhost:8000/v1
    model: str
    api_key_env: str = "OPENAI_API_KEY"  # the key is read from this variable, never from the command line
    pairs_per_passage: int = 3
    max_tokens: int = 256
    concurrency: int = 4
    timeout_s: float = 600.0
    per_document: int = 2  # passages of each document asked

    def __post_init__(self) -> None:
        if not (self.url and self.model):
            raise ConfigError("--teacher-url and --teacher-model: give both (the server and the model it serves)")
        raise_problems(
            f"--teacher-{name}: must be at least {least}, got {value}"
            for name, value, least in (
                ("per-document", self.per_document, 1),
                ("pairs", self.pairs_per_passage, 1),
                ("max-tokens", self.max_tokens, 16),
                ("concurrency", self.concurrency, 1),
            )
            if value < least
        )


@dataclass
class TeacherReport:
    passages: int = 0
    requests_failed: int = 0
    proposed: int = 0
    kept: int = 0
    rejected: dict[str, int] = field(default_factory=dict)

    def reject(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    def as_dict(self) -> dict:
        return {
            "passages": self.passages,
            "requests_failed": self.requests_failed,
            "proposed": self.proposed,
            "kept": self.kept,
            "rejected": dict(self.rejected),
        }


def passages_of(text: str, count: int, rng: random.Random, size: int = PASSAGE_CHARS) -> list[tuple[int, str]]:
    """Up to ``count`` (character offset, passage) of ``text``: runs of whole paragraphs of at most
    ``size`` characters (a longer paragraph is cut at a line end), each an exact slice of ``text``."""
    spans: list[tuple[int, int]] = []
    start = end = None
    for match in re.finditer(r"[^\n]+(?:\n(?!\s*\n)[^\n]+)*", text):  # paragraphs: lines without a blank between
        p_start, p_end = match.span()
        if start is not None and p_end - start <= size:
            end = p_end
            continue
        if start is not None:
            spans.append((start, end))
        start, end = p_start, min(p_end, p_start + size)
        if p_end - p_start > size:  # cut a long paragraph at the last line end (or space) inside the size
            cut = max(text.rfind("\n", p_start, p_start + size), text.rfind(" ", p_start, p_start + size))
            end = cut if cut > p_start + MIN_PASSAGE_CHARS else p_start + size
    if start is not None:
        spans.append((start, end))
    usable = [(s, text[s:e]) for s, e in spans if e - s >= MIN_PASSAGE_CHARS]
    return sorted(rng.sample(usable, min(count, len(usable))))


_PAIR_LINE = re.compile(
    r"^\s*(?:\*\*)?(Q|Question|A|Answer)\s*\d*\s*(?:\*\*)?\s*[:.)-]\s*(?:\*\*)?\s*(.+?)\s*$", re.I | re.M
)


def parse_pairs(reply: str) -> list[tuple[str, str]]:
    """(question, answer) pairs of a teacher's reply: JSON objects, or ``Q:`` / ``A:`` lines."""
    pairs = _json_pairs(reply)
    if pairs:
        return pairs
    question = None
    for match in _PAIR_LINE.finditer(reply):
        kind, value = match.group(1).lower(), match.group(2).strip()
        if kind.startswith("q"):
            question = value
        elif question is not None:
            pairs.append((question, value))
            question = None
    return pairs


def _json_pairs(reply: str) -> list[tuple[str, str]]:
    starts = [i for i in (reply.find("["), reply.find("{")) if i >= 0]
    if not starts:
        return []
    try:
        data, _ = json.JSONDecoder().raw_decode(reply[min(starts) :])
    except json.JSONDecodeError:
        return []
    items = data if isinstance(data, list) else [data]
    pairs = []
    for item in items:
        if isinstance(item, dict):
            lowered = {str(k).lower(): v for k, v in item.items()}
            question, answer = lowered.get("question", lowered.get("q")), lowered.get("answer", lowered.get("a"))
            if isinstance(question, str) and isinstance(answer, str | int | float):
                pairs.append((question.strip(), str(answer).strip()))
    return pairs


def judge(question: str, answer: str, passage: str, kept: set[tuple[str, str]]) -> str | None:
    """Why the pair is not kept (one short phrase), or None: see the module's rules."""
    q, a = normalize_answer(question), normalize_answer(answer)
    if not q or not a:
        return "empty question or answer"
    if len(answer) > MAX_ANSWER_CHARS or len(question) > MAX_QUESTION_CHARS:
        return "too long for a question-answer pair"
    if f" {a} " not in f" {normalize_answer(passage)} ":
        return "answer not found in the passage"
    if f" {a} " in f" {q} ":
        return "question contains its answer"
    if (q, a) in kept:
        return "repeated"
    return None


def _client(teacher: Teacher):
    try:
        import openai
    except ImportError:
        raise ImportError(
            "--teacher-url: talking to a teacher needs the openai client: pip install 'fathom[teacher]'"
        ) from None
    key = os.environ.get(teacher.api_key_env) or "none"  # local servers accept any key
    return openai, openai.OpenAI(base_url=teacher.url, api_key=key, timeout=teacher.timeout_s, max_retries=2)


def _messages(passage: str, pairs: int) -> list[dict]:
    ask = "Passage:\n{}\n\nWrite {} question-answer pairs."
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": ask.format(EXAMPLE_PASSAGE, 2)},
        {"role": "assistant", "content": EXAMPLE_REPLY},
        {"role": "user", "content": ask.format(passage, pairs)},
    ]


def check_teacher(teacher: Teacher) -> None:
    """Fail in one line, before any work, when the server cannot be reached or lacks the model."""
    openai, client = _client(teacher)
    try:
        served = [m.id for m in client.models.list()]
    except openai.APIConnectionError as exc:
        raise ConfigError(
            f"--teacher-url: cannot reach {teacher.url} ({exc.__cause__ or exc}); start the server "
            "(vllm serve MODEL, ollama serve, transformers serve) or fix the URL"
        ) from None
    except openai.APIError:
        return  # some servers do not list their models; the first question will tell
    if served and teacher.model not in served:
        raise ConfigError(
            f"--teacher-model: {teacher.url} serves {', '.join(served[:5])}, not {teacher.model}; pass one of those"
        )


def teacher_facts(
    texts: list[str], teacher: Teacher, per_document: int, seed: int = 0
) -> tuple[dict[int, list[Fact]], TeacherReport]:
    """Grounded facts per document index: ``per_document`` passages of each asked of the teacher."""
    check_teacher(teacher)
    openai, client = _client(teacher)
    rng = random.Random(seed)
    jobs = [
        (index, start, passage)
        for index, text in enumerate(texts)
        for start, passage in passages_of(text, per_document, rng)
    ]
    report = TeacherReport(passages=len(jobs))

    def ask(job) -> str | None:
        try:
            reply = client.chat.completions.create(
                model=teacher.model,
                messages=_messages(job[2], teacher.pairs_per_passage),
                temperature=0.0,
                max_tokens=teacher.max_tokens,
            )
            return reply.choices[0].message.content or ""
        except openai.APIError as exc:
            logger.warning("teacher: a request failed (%s)", str(exc).splitlines()[0][:160])
            return None

    facts: dict[int, list[Fact]] = {}
    with ThreadPoolExecutor(max_workers=max(1, teacher.concurrency)) as pool:
        for (index, start, passage), reply in zip(jobs, pool.map(ask, jobs), strict=True):  # in order: reproducible
            if reply is None:
                report.requests_failed += 1
                continue
            kept: set[tuple[str, str]] = set()
            for question, answer in parse_pairs(reply)[: teacher.pairs_per_passage]:
                report.proposed += 1
                reason = judge(question, answer, passage, kept)
                if reason:
                    report.reject(reason)
                    continue
                kept.add((normalize_answer(question), normalize_answer(answer)))
                facts.setdefault(index, []).append(Fact(question, answer, passage, start, "teacher", passage))
                report.kept += 1
    if jobs and report.requests_failed == len(jobs):
        raise ConfigError(f"--teacher-url: every request to {teacher.url} failed; see the warnings above")
    return facts, report
