"""Long-document question answering, scored: what Phase 2 is for.

Each record (``fathom qa build`` writes them; any document-QA .jsonl works) is asked with the chat
template, the answer generated greedily, and scored three ways after SQuAD's normalization
(lowercase, no punctuation (Unicode's too), no articles, single spaces): exact match, token F1,
and whether the reference is contained in the answer. Results come per context-length bucket x
answer-depth bucket, so a heatmap shows where in a long document a model stops finding things.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import torch
from tqdm.auto import tqdm

from fathom.data.instruct import QaPrompt
from fathom.data.qa import normalize_answer
from fathom.errors import ConfigError

logger = logging.getLogger("fathom")

ANSWER_ROOM = 32  # tokens a generated answer may spend beyond its reference's length
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
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise ConfigError(f"--qa: {path} is not UTF-8 text (byte {exc.start})") from None
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
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
def answer_questions(
    model,
    tokenizer,
    device,
    records: list[dict],
    prompt: QaPrompt,
    max_new_tokens: int | None = None,
    token_budget: int = 16384,
    progress: bool = False,
) -> list[str]:
    """The model's greedy answer to every record, asked with the chat template in ``prompt``'s turns (as
    Phase 2 trains; a record's own ``system`` wins over the prompt's).

    Prompts of similar length are generated together (left-padded, at most ``token_budget`` prompt
    tokens per batch), which on a CPU costs about one prompt's decoding time per batch. Each batch
    stops at ``max_new_tokens``, or by default :data:`ANSWER_ROOM` tokens past its longest reference:
    room for a sentence of preamble ("The paragraph (b) of ... states:") before an answer that
    contains the reference, which is all the scores look for.
    """
    from fathom.data.instruct import ensure_chat_template

    ensure_chat_template(tokenizer)
    prompts = [
        tokenizer.apply_chat_template(
            prompt.messages(r["document"], r["question"], r.get("system")),
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
        )["input_ids"]
        for r in records
    ]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    answers: dict[int, str] = {}
    bar = tqdm(total=len(records), desc="questions", unit="question", disable=not progress)
    for group in _length_batches([len(p) for p in prompts], token_budget):
        longest = max(len(prompts[i]) for i in group)
        ids = torch.full((len(group), longest), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, i in enumerate(group):
            ids[row, longest - len(prompts[i]) :] = torch.tensor(prompts[i])
            mask[row, longest - len(prompts[i]) :] = 1
        new = max_new_tokens or ANSWER_ROOM + max(
            len(tokenizer(records[i]["answer"], add_special_tokens=False)["input_ids"]) for i in group
        )
        output = model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            max_new_tokens=new,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            pad_token_id=pad,
        )
        for row, i in enumerate(group):
            answers[i] = tokenizer.decode(output[row, longest:], skip_special_tokens=True).strip()
        bar.update(len(group))
    bar.close()
    return [answers[i] for i in range(len(records))]


def _length_batches(lengths: list[int], token_budget: int) -> list[list[int]]:
    """Indices grouped by similar length, each group's padded size (rows x longest) within the budget.

    >>> _length_batches([10, 300, 12, 290], 620)
    [[0, 2], [3, 1]]
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    groups: list[list[int]] = []
    for i in order:
        if groups and (len(groups[-1]) + 1) * lengths[i] <= token_budget and lengths[i] <= 2 * lengths[groups[-1][0]]:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def score_answers(records: list[dict], answers: list[str], tokenizer=None) -> dict:
    """Exact match, F1 and contained, overall and per (length bucket, depth bucket) of the records.

    ``contains_by_length`` comes with its question count and 95% Wilson interval per length
    (``n_by_length``, ``contains_interval_by_length``); ``items`` holds every question with its
    answer and score, so two models asked the same questions can be compared question by question.
    """
    from fathom.eval.stats import wilson_interval

    grid: dict[str, dict[str, list[bool]]] = {}
    totals = {"exact_match": 0.0, "f1": 0.0, "contains": 0.0}
    items = []
    for record, answer in zip(records, answers, strict=True):
        tokens = record.get("context_tokens")
        if tokens is None:
            tokens = len(tokenizer(record["document"], add_special_tokens=False)["input_ids"]) if tokenizer else 0
        length, depth = str(length_bucket(int(tokens))), depth_bucket(float(record.get("depth", 0.5)))
        hit = contains(answer, record["answer"])
        grid.setdefault(length, {}).setdefault(depth, []).append(hit)
        totals["exact_match"] += exact_match(answer, record["answer"])
        totals["f1"] += token_f1(answer, record["answer"])
        totals["contains"] += hit
        item = {"question": record["question"], "reference": record["answer"], "answer": answer, "contains": hit}
        items.append(item | {"length": int(length), "depth": depth, "group": record.get("group")})
    n = max(len(records), 1)
    by_length = {
        length: [hit for cell in cells.values() for hit in cell]
        for length, cells in sorted(grid.items(), key=lambda kv: int(kv[0]))
    }
    return {
        "n": len(records),
        **{k: round(v / n, 4) for k, v in totals.items()},
        "grid_contains": {
            length: {depth: round(sum(v) / len(v), 4) for depth, v in sorted(cells.items())}
            for length, cells in sorted(grid.items(), key=lambda kv: int(kv[0]))
        },
        "contains_interval": [round(x, 4) for x in wilson_interval(sum(i["contains"] for i in items), len(items))],
        "contains_by_length": {length: round(sum(hits) / len(hits), 4) for length, hits in by_length.items()},
        "n_by_length": {length: len(hits) for length, hits in by_length.items()},
        "contains_interval_by_length": {
            length: [round(x, 4) for x in wilson_interval(sum(hits), len(hits))] for length, hits in by_length.items()
        },
        "examples": [{k: item[k] for k in ("question", "reference", "answer")} for item in items[:5]],
        "items": items,
    }


def _question_key(item: dict) -> tuple:
    return item.get("question"), item.get("reference"), item.get("length"), item.get("depth")


def compare_models(models: list[dict]) -> list[dict]:
    """Paired differences of "answer contained" between models asked the same questions (``models``: the
    entries of :func:`fathom.eval.runner.evaluate_models`, those with ``qa``): each one minus the first (the
    base, or the first adapter) and each one minus the one before it (what each phase added).

    Paired because two models asked the same n questions differ far less by chance than their own
    intervals suggest: most questions are easy or hard for both. ``[{"model", "against", "difference",
    "low", "high", "n"}]``, the interval a 95% paired bootstrap; empty when fewer than two models were
    asked, or they were asked different questions.
    """
    from fathom.eval.stats import paired_difference

    asked = [m for m in models if (m.get("qa") or {}).get("items")]
    if len(asked) < 2:
        return []
    keys = [[_question_key(i) for i in m["qa"]["items"]] for m in asked]
    if any(k != keys[0] for k in keys[1:]):
        return []
    pairs = [(i, 0) for i in range(1, len(asked))] + [(i, i - 1) for i in range(2, len(asked))]
    out = []
    for i, j in pairs:
        hits = [[bool(item["contains"]) for item in asked[k]["qa"]["items"]] for k in (i, j)]
        d = paired_difference(*hits)
        out.append({"model": asked[i]["name"], "against": asked[j]["name"]} | {k: round(v, 4) for k, v in d.items()})
    return out


def qa_summary_lines(results: dict) -> list[str]:
    """The evaluation's QA in a few lines for the log: each model's share of answers holding the reference
    with its 95% interval, F1 and exact match, then the paired differences (``results["qa_paired"]``)."""
    lines = []
    for m in results.get("models") or []:
        qa = m.get("qa")
        if not qa:
            continue
        low, high = qa.get("contains_interval") or (None, None)
        interval = f" [{low:.0%}, {high:.0%}]" if low is not None else ""
        lines.append(
            f"QA {m['name']}: answer contained {qa['contains']:.0%}{interval} of {qa['n']}, F1 {qa['f1']:.2f}, "
            f"exact {qa['exact_match']:.0%}"
        )
    for d in results.get("qa_paired") or []:
        lines.append(
            f"QA {d['model']} minus {d['against']}: {100 * d['difference']:+.1f} points "
            f"[{100 * d['low']:+.1f}, {100 * d['high']:+.1f}] on the same {d['n']} questions (paired, 95%)"
        )
    return lines
