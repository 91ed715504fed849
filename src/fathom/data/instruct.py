"""Instruction data for Phase 2: records in the formats people have, rendered with the chat template.

Formats (one record each, read from .jsonl / .json / .parquet / datasets folders / ``hf:`` ids):

- chat: ``{"messages": [{"role": "system" | "user" | "assistant", "content": ...}, ...]}``
- ShareGPT: ``{"conversations": [{"from": "system" | "human" | "gpt", "value": ...}, ...]}``
- Alpaca: ``{"instruction", "input" (optional), "output"}``
- document QA: ``{"document": TEXT | "document_path": FILE, "question", "answer", "system" (optional)}``;
  the user turn is ``prompt_template`` with ``{document}`` and ``{question}`` filled in.

Rendering (:func:`render`) uses the tokenizer's own chat template (ChatML when it has none) and
supervises what the model must learn to write: the content of every assistant turn and its
end-of-turn token (``<|im_end|>`` for Qwen), nothing of the system, user or document tokens (their
labels are -100). Offsets of the rendered text decide which tokens are supervised, so the ids are
exactly ``apply_chat_template(messages, tokenize=True)``.

An example longer than the row is cut inside its document, middle out (the start and the end of a
long document carry most of its structure; the question and the answer are never cut, and where the
document quotes the answer the cut goes around that passage); an example without a document is cut
inside its longest user turn.

Worked example (ChatML, no system prompt): ``{"instruction": "Name the port.", "output": "Hamburg"}``
renders ``<|im_start|>user\\nName the port.<|im_end|>\\n<|im_start|>assistant\\nHamburg<|im_end|>\\n``
and only the tokens of ``Hamburg<|im_end|>`` carry labels.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fathom.config import DEFAULT_PROMPT_TEMPLATE
from fathom.data.ingest import BYTES_PER_CHAR, MAX_DOCUMENT_CHARS, IngestReport, records_of
from fathom.data.sources import HUB_PREFIX, expand_paths, special_file
from fathom.fsutil import printable
from fathom.labels import IGNORE_INDEX

logger = logging.getLogger("fathom")

ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}
# ChatML, for tokenizers without a chat template of their own (Qwen2.5 base models ship this one).
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@dataclass(frozen=True)
class QaPrompt:
    """How a question about a document is asked: the user turn (``sft.prompt_template``, with ``{document}``
    and ``{question}``) after the system turn (``sft.system``; None: the chat template's default).

    Phase 2 trains on these turns and evaluation and ``fathom generate`` ask in them, all built here: a model
    asked otherwise than it was taught (another template, or without its system prompt) scores less."""

    template: str = DEFAULT_PROMPT_TEMPLATE
    system: str | None = None

    @classmethod
    def of(cls, sft) -> QaPrompt:
        """The prompt a config's ``sft`` section (an SftConfig, or its dict in a run's saved config) trains."""
        get = sft.get if isinstance(sft, dict) else lambda key: getattr(sft, key, None)
        return cls(get("prompt_template") or DEFAULT_PROMPT_TEMPLATE, get("system"))

    def messages(self, document: str, question: str, system: str | None = None) -> list[dict]:
        """The turns before the answer; ``system``: a record's own system prompt, which wins over ours."""
        system = system or self.system
        head = [{"role": "system", "content": system}] if system else []
        return [*head, {"role": "user", "content": self.template.format(document=document, question=question)}]


@dataclass(frozen=True)
class Conversation:
    """One record as chat messages, before tokenization."""

    messages: tuple[dict, ...]  # {"role", "content"}
    format: str  # chat | sharegpt | alpaca | document_qa
    source: str
    document: str | None = None  # the text that may be shortened (document QA)
    meta: dict = field(default_factory=dict)  # carried from the record (e.g. qa build's depth and length)


@dataclass
class Example:
    """A rendered conversation: token ids and labels of the same length (1-D int64)."""

    input_ids: np.ndarray
    labels: np.ndarray
    format: str
    prompt_tokens: int
    supervised_tokens: int
    truncated_tokens: int = 0  # document tokens cut to fit the row
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.input_ids)


def _text(value) -> str | None:
    return value if isinstance(value, str) else None


@dataclass(frozen=True)
class DocumentAccess:
    """Where a document-QA record's ``document_path`` may point: the trust boundary of instruction data.

    A path resolves against the folder of the data file naming it and must stay inside that folder or
    one of ``roots`` (the folders given in ``sft.paths``), symlinks resolved; ``anywhere``
    (``sft.allow_outside_paths``) lifts that for local files. Records of a Hub dataset (``hf:``) never
    read a file: a downloaded dataset could otherwise put any file of the machine into the training data.
    """

    roots: tuple[Path, ...] = ()
    anywhere: bool = False

    def refusal(self, path: Path, source: str) -> str | None:
        if source.startswith(HUB_PREFIX):
            return "document_path in a Hub dataset record is not read (only inline document text is)"
        if self.anywhere:
            return None
        real = Path(os.path.realpath(path))
        folders = (Path(source).parent, *self.roots)
        if any(real.is_relative_to(os.path.realpath(folder)) for folder in folders):
            return None
        return (
            f"document_path {path} is outside {Path(source).parent} (the folder of the file naming it); "
            "sft.allow_outside_paths: true reads it"
        )


def _read_document(record: dict, source: str, access: DocumentAccess) -> tuple[str | None, str | None]:
    """(document text, skip reason) of a document-QA record: inline, or a file beside the data file."""
    if "document" in record:
        text = _text(record["document"])
        return (text, None) if text and text.strip() else (None, "empty document")
    if not isinstance(record["document_path"], str) or not record["document_path"].strip():
        return None, "document_path is not a file name"
    path = Path(record["document_path"])
    path = path if path.is_absolute() else Path(source).parent / path
    refusal = access.refusal(path, source)
    if refusal:
        return None, refusal
    special = special_file(path)  # /dev/zero or a FIFO would never end or block
    if special:
        return None, f"document_path {path} is not a regular file ({special})"
    try:
        if path.stat().st_size > BYTES_PER_CHAR * MAX_DOCUMENT_CHARS:
            return None, f"document_path {path} is above {BYTES_PER_CHAR * MAX_DOCUMENT_CHARS:,} bytes"
        text = path.read_bytes().decode("utf-8")
    except OSError:
        return None, f"document_path {path} cannot be read"
    except UnicodeDecodeError:
        return None, f"document_path {path} is not valid UTF-8"
    return (text, None) if text.strip() else (None, f"document_path {path} is empty")


def to_conversation(
    record,
    source: str,
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE,
    system: str | None = None,
    access: DocumentAccess = DocumentAccess(),
) -> Conversation | str:
    """The record as a :class:`Conversation`, or the reason it is skipped (one short phrase)."""
    if not isinstance(record, dict):
        return "not a JSON object"
    meta = {k: record[k] for k in ("depth", "context_tokens", "kind", "answer_depth") if k in record}
    if "messages" in record or "conversations" in record:
        return _chat(record, source, system)
    if "instruction" in record and "output" in record:
        instruction, extra, output = _text(record["instruction"]), record.get("input") or "", _text(record["output"])
        if not instruction or not isinstance(extra, str):
            return "alpaca record without a text instruction"
        if not output or not output.strip():
            return "empty answer"
        user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
        return Conversation(_with_system(system, ({"role": "user", "content": user},), output), "alpaca", source)
    if ("document" in record or "document_path" in record) and "question" in record and "answer" in record:
        question, answer = _text(record["question"]), _text(record["answer"])
        if not question or not question.strip():
            return "empty question"
        if not answer or not answer.strip():
            return "empty answer"
        document, reason = _read_document(record, source, access)
        if reason:
            return reason
        turns = QaPrompt(prompt_template, system).messages(document, question, _text(record.get("system")))
        messages = (*turns, {"role": "assistant", "content": answer})
        return Conversation(messages, "document_qa", source, document=document, meta=meta)
    return "unknown format (expected messages, conversations, instruction/output or document/question/answer)"


def _with_system(system: str | None, turns: tuple[dict, ...], answer: str) -> tuple[dict, ...]:
    head = ({"role": "system", "content": system},) if system else ()
    return (*head, *turns, {"role": "assistant", "content": answer})


def _chat(record: dict, source: str, system: str | None) -> Conversation | str:
    sharegpt = "messages" not in record
    turns = record.get("conversations" if sharegpt else "messages")
    if not isinstance(turns, list) or not turns:
        return "no messages"
    messages = []
    for turn in turns:
        if not isinstance(turn, dict):
            return "a message is not an object"
        role = turn.get("from") if sharegpt else turn.get("role")
        role = SHAREGPT_ROLES.get(role) if sharegpt else role
        content = turn.get("value") if sharegpt else turn.get("content")
        if role not in ROLES:
            return f"unknown role {turn.get('from') if sharegpt else turn.get('role')!r}"
        if not isinstance(content, str):
            return "a message without text content"
        messages.append({"role": role, "content": content})
    assistants = [m for m in messages if m["role"] == "assistant"]
    if not assistants:
        return "no assistant turn"
    if any(not m["content"].strip() for m in assistants):
        return "empty answer"
    if system and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": system})
    return Conversation(tuple(messages), "sharegpt" if sharegpt else "chat", source)


def ensure_chat_template(tokenizer) -> None:
    """Give a tokenizer without a chat template ChatML (logged once); its own template always wins."""
    if getattr(tokenizer, "chat_template", None):
        return
    tokenizer.chat_template = CHATML_TEMPLATE
    logger.info("the tokenizer has no chat template: using ChatML (<|im_start|>role ... <|im_end|>)")


def _render_text(tokenizer, messages, generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=generation_prompt)


def _supervised_spans(tokenizer, messages: tuple[dict, ...], full: str) -> list[tuple[int, int]]:
    """Character spans of ``full`` to supervise: each assistant turn's content and its end-of-turn token."""
    spans, cursor = [], 0
    for k, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prefix = _render_text(tokenizer, messages[:k], generation_prompt=True)
        through = _render_text(tokenizer, messages[: k + 1]).rstrip()
        if full.startswith(prefix) and full.startswith(through) and len(through) > len(prefix):
            start, end = len(prefix), len(through)
        else:  # a template that is not prefix-stable: find the content itself
            start = full.index(message["content"], cursor)
            end = start + len(message["content"])
        spans.append((start, end))
        cursor = end
    return spans


def _cuttable_span(conversation: Conversation, full: str) -> tuple[int, int] | None:
    """Characters of ``full`` that may be cut: the document, else the longest user turn."""
    text = conversation.document
    if text is None:
        users = [m["content"] for m in conversation.messages if m["role"] == "user"]
        text = max(users, key=len) if users else None
    if not text:
        return None
    start = full.find(text)
    return (start, start + len(text)) if start >= 0 else None


def _droppable(conversation: Conversation, full: str, offsets: np.ndarray, cuttable: np.ndarray) -> np.ndarray:
    """The cuttable tokens that may go: all but the passage quoting the answer (document QA), with a margin
    of 32 tokens either side, so the evidence survives any cut."""
    answer = conversation.messages[-1]["content"] if conversation.document is not None else ""
    where = full.find(answer, 0, full.rfind(answer)) if answer else -1  # in the document, not the reply
    if where < 0:
        return cuttable
    first = int(np.searchsorted(offsets[cuttable, 1], where, side="right"))
    last = int(np.searchsorted(offsets[cuttable, 0], where + len(answer), side="left"))
    return np.concatenate([cuttable[: max(first - 32, 0)], cuttable[last + 32 :]])


def render(conversation: Conversation, tokenizer, max_length: int) -> Example | str:
    """Token ids and labels of ``conversation``, at most ``max_length`` tokens; or the reason it cannot fit."""
    full = _render_text(tokenizer, conversation.messages)
    encoded = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids = np.asarray(encoded["input_ids"], dtype=np.int64)
    offsets = np.asarray(encoded["offset_mapping"], dtype=np.int64).reshape(-1, 2)
    labels = np.full(len(ids), IGNORE_INDEX, dtype=np.int64)
    for start, end in _supervised_spans(tokenizer, conversation.messages, full):
        inside = (offsets[:, 0] >= start) & (offsets[:, 1] <= end) & (offsets[:, 1] > offsets[:, 0])
        labels[inside] = ids[inside]
    truncated = 0
    if len(ids) > max_length:
        span = _cuttable_span(conversation, full)
        if span is None:
            return "longer than the row and nothing to shorten"
        cuttable = np.flatnonzero((offsets[:, 0] >= span[0]) & (offsets[:, 1] <= span[1]) & (labels == IGNORE_INDEX))
        truncated = len(ids) - max_length
        if truncated >= len(cuttable):
            return "longer than the row even with its document shortened"
        droppable = _droppable(conversation, full, offsets, cuttable)
        if truncated >= len(droppable):  # the quoted passage cannot be kept whole: cut as if there were none
            droppable = cuttable
        # middle out: the document's first and last tokens stay, a run from its middle goes
        drop = droppable[max(len(droppable) // 2 - truncated // 2, 0) :][:truncated]
        keep = np.ones(len(ids), dtype=bool)
        keep[drop] = False
        ids, labels = ids[keep], labels[keep]
    supervised = int((labels != IGNORE_INDEX).sum())
    if supervised == 0:
        return "no supervised tokens after rendering"
    return Example(ids, labels, conversation.format, len(ids) - supervised, supervised, truncated, conversation.meta)


@dataclass
class InstructReport:
    """What reading and rendering the instruction data did, for ``data stats`` and the log."""

    ingest: IngestReport = field(default_factory=IngestReport)
    by_format: dict[str, int] = field(default_factory=dict)
    skipped_by_reason: dict[str, int] = field(default_factory=dict)
    truncated: int = 0

    def skip(self, reason: str) -> None:
        self.skipped_by_reason[reason] = self.skipped_by_reason.get(reason, 0) + 1


def read_examples(
    paths: list[str],
    tokenizer,
    max_length: int,
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE,
    system: str | None = None,
    allow_outside_paths: bool = False,
) -> tuple[list[Example], InstructReport]:
    """Every usable record of ``paths`` rendered into an :class:`Example`; bad ones counted by reason.

    A record's ``document_path`` is read only inside the folders ``paths`` name or the data file's own
    (see :class:`DocumentAccess`), unless ``allow_outside_paths``."""
    ensure_chat_template(tokenizer)
    report = InstructReport()
    examples = []
    access = DocumentAccess(tuple(Path(p) for p in paths if Path(p).is_dir()), allow_outside_paths)
    refused: list[tuple[str, str]] = []
    sources = expand_paths(paths, refused=refused)
    for _path, reason in refused:
        report.skip(reason)
    for source in sources:
        for _where, record in records_of(source, report.ingest):
            conversation = to_conversation(record, source, prompt_template, system, access)
            if isinstance(conversation, str):
                report.skip(conversation)
                continue
            example = render(conversation, tokenizer, max_length)
            if isinstance(example, str):
                report.skip(example)
                continue
            report.by_format[example.format] = report.by_format.get(example.format, 0) + 1
            report.truncated += example.truncated_tokens > 0
            examples.append(example)
    for reason, count in report.skipped_by_reason.items():
        logger.warning("instruction data: %d record(s) skipped: %s", count, printable(reason))
    if report.truncated:
        logger.info("instruction data: %d example(s) shortened inside their document to fit", report.truncated)
    return examples, report


@dataclass
class InstructionSet:
    """Phase 2's examples with how often each is drawn, and how many rows one pass packs into."""

    examples: list[Example]
    report: InstructReport
    weights: np.ndarray | None  # expected draws per pass (long examples upsampled); None: once each
    rows_per_epoch: int
    mix: object  # fathom.data.mix.PhaseMix over example lengths

    def pairs(self) -> list[tuple[np.ndarray, np.ndarray]]:
        return [(e.input_ids, e.labels) for e in self.examples]

    def lengths(self) -> np.ndarray:
        return np.asarray([len(e) for e in self.examples], dtype=np.int64)


def prepare_instructions(sft, tokenizer, seed: int, phase_index: int) -> InstructionSet:
    """Read, render and weigh ``sft.paths`` (+ ``sft.short_instruction_paths``); ConfigError when nothing is usable."""
    from fathom.data.mix import document_weights, phase_mix
    from fathom.data.pack import epoch_order, pack_examples
    from fathom.errors import ConfigError

    paths = [*sft.paths, *sft.short_instruction_paths]
    examples, report = read_examples(
        paths, tokenizer, sft.max_seq_length, sft.prompt_template, sft.system, sft.allow_outside_paths
    )
    if not examples:
        skipped = report.skipped_by_reason | report.ingest.reasons()
        detail = f" (skipped: {', '.join(f'{n} {r}' for r, n in skipped.items())})" if skipped else ""
        raise ConfigError(f"sft.paths: no usable instruction records in {', '.join(paths)}{detail}")
    lengths = np.asarray([len(e) for e in examples], dtype=np.int64)
    mix = phase_mix(lengths, sft.max_seq_length, 1.0, sft.long_fraction)
    weights = document_weights(lengths, mix)
    order = epoch_order(len(examples), seed, phase_index, 0, weights)
    pad = 0  # the id does not change the count
    rows = sum(
        1 for _ in pack_examples(((examples[i].input_ids, examples[i].labels) for i in order), sft.max_seq_length, pad)
    )
    return InstructionSet(examples, report, weights, rows, mix)
