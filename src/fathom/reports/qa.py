"""``fathom qa build``: document-QA records from the run's corpus, and the lines that say what was built."""

from __future__ import annotations

from pathlib import Path

from fathom.config import ConfigError, FathomConfig
from fathom.reports.corpus import prepare_configured_corpus

MIN_ANSWER_CHARS = 20  # shorter cuts leave a word or two: not an answer to train on or score against


def build_qa_file(
    config: FathomConfig,
    out: Path,
    lengths: list[int] | None = None,
    per_document: int = 2,
    held_out: bool = False,
    seed: int = 0,
    teacher=None,
    answer_chars: int | None = None,
) -> dict:
    """``fathom qa build``: document-QA records from the run's corpus (its held-out part with ``held_out``).

    Lengths default to a quarter, half and all but 128 tokens of Phase 2's row (or the last phase's).
    With ``teacher`` (a :class:`fathom.data.teacher.Teacher`), ``teacher.per_document`` passages of
    each document are also asked of it and its grounded pairs added. Returns a summary (records, by
    kind, by length, the teacher's report); ``out`` is written whole or not at all, never overwritten.
    ``answer_chars``: where a long first sentence is cut. None: ``TRAINING_ANSWER_CHARS`` (300) for a
    training set, whose whole sentences trained better in bench/quality.py's whole-answers probe (the
    model sees where an answer ends), and ``ANSWER_CHARS`` (100) for a held-out set, whose short
    references are scored by containment.
    """
    import json

    from fathom.fsutil import atomic_write_text

    if out.exists():
        raise ConfigError(f"--out: {out} already exists; choose a new file (nothing was changed)")
    from fathom.data.qa import ANSWER_CHARS, TRAINING_ANSWER_CHARS, build_records

    if answer_chars is not None and answer_chars < MIN_ANSWER_CHARS:
        raise ConfigError(
            f"--answer-chars: {answer_chars} is too short for an answer; use {MIN_ANSWER_CHARS} or more "
            f"(default {TRAINING_ANSWER_CHARS} for training questions, {ANSWER_CHARS} with --held-out)"
        )
    if answer_chars is None:
        answer_chars = ANSWER_CHARS if held_out else TRAINING_ANSWER_CHARS
    cache = prepare_configured_corpus(config)
    from fathom.model.load import load_configured_tokenizer

    tokenizer = load_configured_tokenizer(config.model)
    documents = cache.eval_documents() if held_out else cache.train_documents()
    if not len(documents):
        which = "held-out documents (data.eval_fraction is 0)" if held_out else "training documents"
        raise ConfigError(f"data.paths: no {which} to build questions from")
    texts = [tokenizer.decode(documents[i][:-1].tolist()) for i in range(len(documents))]
    if not lengths:  # the whole row less room for the chat template, the question and the answer
        row = config.sft.max_seq_length if config.sft else config.phases()[-1].max_seq_length
        lengths = sorted({max(row // 4, 64), max(row // 2, 64), max(row - 128, 64)})
    more_facts, teacher_report = {}, None
    if teacher is not None:
        from fathom.data.teacher import teacher_facts

        more_facts, teacher_report = teacher_facts(texts, teacher, teacher.per_document, seed)
    records = build_records(texts, tokenizer, lengths, per_document, seed, more_facts, answer_chars)
    if not records:
        found = "key: value lines, lettered or numbered paragraphs"
        if teacher_report is not None:
            t = teacher_report
            found += f"; the teacher kept {t.kept} of {t.proposed} pairs it proposed for {t.passages} passages"
            found += "".join(f", {n} {reason}" for reason, n in t.rejected.items())
        raise ConfigError(f"data.paths: no askable facts found ({found})")
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    by_kind: dict[str, int] = {}
    by_length: dict[int, int] = {}
    for record in records:
        by_kind[record["kind"]] = by_kind.get(record["kind"], 0) + 1
        by_length[record["context_tokens"]] = by_length.get(record["context_tokens"], 0) + 1
    return {
        "out": str(out),
        "records": len(records),
        "documents": len(texts),
        "by_kind": by_kind,
        "by_length": by_length,
        "teacher": teacher_report.as_dict() if teacher_report is not None else None,
    }


def qa_summary_lines(summary: dict, teacher_model: str | None, held_out: bool) -> list[str]:
    """What ``qa build`` says when done: the teacher's yield (when one was asked) and the records written."""
    lines = []
    if summary["teacher"] is not None:
        t = summary["teacher"]
        rejected = "; rejected: " + ", ".join(f"{n} {r}" for r, n in t["rejected"].items()) if t["rejected"] else ""
        lines.append(
            f"teacher {teacher_model}: {t['passages']} passages asked ({t['requests_failed']} failed), "
            f"{t['proposed']} pairs proposed, {t['kept']} kept{rejected}"
        )
    kinds = ", ".join(f"{n} {kind}" for kind, n in summary["by_kind"].items())
    lengths = ", ".join(f"{length:,}: {n}" for length, n in sorted(summary["by_length"].items()))
    lines.append(
        f"wrote {summary['records']} questions from {summary['documents']} {'held-out ' if held_out else ''}"
        f"documents to {summary['out']} ({kinds}; context tokens: {lengths})"
    )
    return lines
