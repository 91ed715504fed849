"""Long-document question answering, scored: what Phase 2 is for.

Each record (``fathom qa build`` writes them; any document-QA .jsonl works) is asked with the chat
template, the answer generated greedily, and scored three ways after SQuAD's normalization
(lowercase, no punctuation, no articles, single spaces): exact match, token F1, and whether the
reference is contained in the answer. Results come per context-length bucket x answer-depth
bucket, so a heatmap shows where in a long document a model stops finding things.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import torch

from fathom.data.qa import normalize_answer
from fathom.errors import ConfigError

logger = logging.getLogger("fathom")

DEPTH_BUCKETS = ((0.2, "0-20%"), (0.4, "20-40%"), (0.6, "40-60%"), (0.8, "60-80%"), (1.01, "80-100%"))


def exact_match(prediction: str, reference: str) -> bool:
    return normalize_answer(prediction) == normalize_answer(reference)


def token_f1(prediction: str, reference: str) -> float:
    """Harmonic mean of token precision and recall after normalization (SQuAD's F1)."""
    predicted, wanted = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not predicted or not wanted:
        return float(predicted == wanted)
    common = sum((Counter(predicted) & Counter(wanted)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(wanted)
    return 2 * precision * recall / (precision + recall)


def contains(prediction: str, reference: str) -> bool:
    return normalize_answer(reference) in normalize_answer(prediction)


def length_bucket(tokens: int) -> int:
    """The power of two (at least 256) a context of ``tokens`` rounds up to: the column of the grid."""
    bucket = 256
    while bucket < tokens:
        bucket *= 2
    return bucket


def depth_bucket(depth: float) -> str:
    return next(label for upper, label in DEPTH_BUCKETS if depth < upper)


def read_qa_records(path: str | Path) -> list[dict]:
    """Document-QA records of a .jsonl file (``document``, ``question``, ``answer``; ``context_tokens`` and
    ``depth`` when ``qa build`` wrote it); ConfigError naming the file and line when one is unusable."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--qa: {path} does not exist")
    records = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise ConfigError(f"--qa: {path} line {lineno} is not valid JSON") from None
        if not isinstance(record, dict) or not all(
            isinstance(record.get(k), str) for k in ("document", "question", "answer")
        ):
            raise ConfigError(f"--qa: {path} line {lineno} needs string fields document, question and answer")
        records.append(record)
    if not records:
        raise ConfigError(f"--qa: {path} holds no records")
    return records


@torch.no_grad()
def answer_questions(model, tokenizer, device, records: list[dict], prompt_template: str, max_new_tokens: int = 32):
    """The model's greedy answer to every record, asked with the chat template (as Phase 2 trains)."""
    from fathom.data.instruct import ensure_chat_template

    ensure_chat_template(tokenizer)
    answers = []
    for record in records:
        user = prompt_template.format(document=record["document"], question=record["question"])
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": user}], add_generation_prompt=True, return_tensors="pt", return_dict=True
        ).to(device)
        output = model.generate(
            **prompt,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
        )
        answers.append(tokenizer.decode(output[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True).strip())
    return answers


def score_answers(records: list[dict], answers: list[str], tokenizer=None) -> dict:
    """Exact match, F1 and contained, overall and per (length bucket, depth bucket) of the records."""
    grid: dict[str, dict[str, list[bool]]] = {}
    totals = {"exact_match": 0.0, "f1": 0.0, "contains": 0.0}
    for record, answer in zip(records, answers, strict=True):
        tokens = record.get("context_tokens")
        if tokens is None:
            tokens = len(tokenizer(record["document"], add_special_tokens=False)["input_ids"]) if tokenizer else 0
        cell = grid.setdefault(str(length_bucket(int(tokens))), {}).setdefault(
            depth_bucket(float(record.get("depth", 0.5))), []
        )
        cell.append(contains(answer, record["answer"]))
        totals["exact_match"] += exact_match(answer, record["answer"])
        totals["f1"] += token_f1(answer, record["answer"])
        totals["contains"] += contains(answer, record["answer"])
    n = max(len(records), 1)
    return {
        "n": len(records),
        **{k: round(v / n, 4) for k, v in totals.items()},
        "grid_contains": {
            length: {depth: round(sum(v) / len(v), 4) for depth, v in sorted(cells.items())}
            for length, cells in sorted(grid.items(), key=lambda kv: int(kv[0]))
        },
        "contains_by_length": {
            length: round(sum(sum(v) for v in cells.values()) / sum(len(v) for v in cells.values()), 4)
            for length, cells in sorted(grid.items(), key=lambda kv: int(kv[0]))
        },
        "examples": [
            {"question": r["question"], "reference": r["answer"], "answer": a}
            for r, a in list(zip(records, answers, strict=True))[:5]
        ],
    }
