"""``fathom eval``: needle accuracy by length and depth, perplexity by position, for a base and its adapters.

The base is loaded once; adapters are loaded into it by name and switched (PEFT's ``load_adapter`` /
``set_adapter``; the base alone runs under ``disable_adapter``), so every model sees exactly the same
prompts. Prompts of one length have exactly that many tokens, so they batch without padding.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from fathom.data.instruct import QaPrompt
from fathom.errors import raise_problems
from fathom.eval.needle import build_prompt, fixed_prompt_tokens, score
from fathom.eval.perplexity import loss_by_position, short_perplexity

logger = logging.getLogger("fathom")


@torch.no_grad()
def needle_accuracy(
    model,
    tokenizer,
    device,
    lengths,
    depths,
    samples: int,
    kinds,
    haystack,
    seed: int = 0,
    progress: bool = True,
    token_budget: int = 16384,
) -> dict:
    """{kind: {length: {depth: accuracy}}} with ``samples`` seeded prompts per cell."""
    out: dict = {}
    cells = [(k, n, d) for k in kinds for n in lengths for d in depths]
    bar = tqdm(total=len(cells) * samples, desc="needles", unit="prompt", disable=not progress)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    for kind in kinds:
        for length in lengths:
            prompts = [
                build_prompt(tokenizer, kind, length, d, seed + s, haystack) for d in depths for s in range(samples)
            ]
            batch_size = max(1, token_budget // length)
            correct: dict[float, list[bool]] = {d: [] for d in depths}
            for start in range(0, len(prompts), batch_size):
                group = prompts[start : start + batch_size]
                ids = torch.tensor([p.input_ids for p in group], device=device)
                new = max(len(tokenizer(" " + p.answer, add_special_tokens=False)["input_ids"]) for p in group) + 3
                generated = model.generate(
                    input_ids=ids,
                    attention_mask=torch.ones_like(ids),
                    max_new_tokens=new,
                    do_sample=False,
                    pad_token_id=pad,
                    temperature=None,
                    top_p=None,
                    top_k=None,
                )
                for p, row in zip(group, generated[:, ids.shape[1] :], strict=True):
                    correct[p.depth].append(score(tokenizer.decode(row, skip_special_tokens=True), p.answer))
                bar.update(len(group))
            out.setdefault(kind, {})[str(length)] = {str(d): float(np.mean(v)) for d, v in correct.items()}
    bar.close()
    return out


def evaluate_models(
    base: str,
    adapters: list[str],
    lengths: list[int],
    depths: list[float],
    samples: int,
    kinds: list[str],
    haystack: list[str],
    seed: int = 0,
    rope: str | None = None,
    qa_records: list[dict] | None = None,
    qa_prompt: QaPrompt | None = None,
    include_base: bool = True,
    qa_token_budget: int = 16384,
) -> dict:
    """Every model (the base, then each adapter) on the same prompts and documents.

    ``haystack`` texts hide the maritime needles and are the documents of perplexity by position.
    ``qa_records`` (document-QA) are asked of every model with the chat template and scored, prompts of
    similar length batched up to ``qa_token_budget`` tokens (more is faster where memory allows).
    Each adapter runs with the RoPE setting it was trained with (its record), the base with its own;
    ``rope`` (e.g. 'yarn:2') overrides both.
    """
    from fathom.eval.qa import compare_models
    from fathom.model.adapter import inference_rope, load_for_inference, read_adapter
    from fathom.model.rope import apply_rope, model_rope, warn_if_mismatch

    model, tokenizer, device = load_for_inference(base, None, rope=rope)
    base_rope = model_rope(model.config)
    ropes = [base_rope] + [inference_rope(model, a, rope) or base_rope for a in adapters]
    if adapters and read_adapter(adapters[-1]).has_tokenizer:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(adapters[-1])
    fixed = {kind: fixed_prompt_tokens(tokenizer, kind) for kind in kinds}
    raise_problems(
        f"--lengths: {n} tokens is too short for a {kind} prompt with this tokenizer (more than {least} needed)"
        for kind, least in fixed.items()
        for n in lengths
        if n <= least
    )
    ppl_documents = [np.asarray(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in haystack]
    ppl_documents.sort(key=len, reverse=True)
    model, names = _load_adapters(model, adapters)
    labels = ["base", *_labels(adapters)]
    results = []
    for name, label, path, setting in zip(names, labels, [None, *adapters], ropes, strict=True):
        if name == "base" and not include_base:
            continue
        apply_rope(model, setting)
        if path is not None:
            warn_if_mismatch(model, path)
        logger.info("evaluating %s (%s)", label, setting.describe())
        if name == "base":
            context = model.disable_adapter() if adapters else contextlib.nullcontext()
        else:
            model.set_adapter(name)
            context = contextlib.nullcontext()
        with context:
            entry = {"name": label, "path": path, "rope": setting.to_dict()}
            entry["needle"] = needle_accuracy(model, tokenizer, device, lengths, depths, samples, kinds, haystack, seed)
            qa = (qa_records, qa_prompt or QaPrompt(), qa_token_budget)
            entry |= _document_scores(model, tokenizer, device, ppl_documents, max(lengths), *qa)
        results.append(entry)
    out = {"base": base, "lengths": lengths, "depths": depths, "samples": samples, "kinds": kinds, "models": results}
    return out | ({"qa_paired": compare_models(results)} if qa_records else {})


def _load_adapters(model, adapters: list[str]):
    """The base with every adapter loaded under its own name (switched with set_adapter); their names."""
    names = ["base"]
    if not adapters:
        return model, names
    from peft import PeftModel

    for i, path in enumerate(adapters):
        name = f"adapter{i}"
        if i == 0:
            model = PeftModel.from_pretrained(model, path, adapter_name=name)
        else:
            model.load_adapter(path, adapter_name=name)
        names.append(name)
    return model.eval(), names


def _document_scores(model, tokenizer, device, ppl_documents, length, qa_records, qa_prompt, budget) -> dict:
    """Perplexity by position and short-context perplexity (with documents); QA scores (with records)."""
    out = {}
    if ppl_documents:
        out["perplexity_by_position"] = loss_by_position(model, ppl_documents, length, device)
        out["short_perplexity"] = short_perplexity(model, ppl_documents, device)
    if qa_records:
        from fathom.eval.qa import answer_questions, score_answers

        answers = answer_questions(model, tokenizer, device, qa_records, qa_prompt, token_budget=budget, progress=True)
        out["qa"] = score_answers(qa_records, answers, tokenizer)
    return out


def evaluate_phase(
    model,
    tokenizer,
    device,
    max_seq_length: int,
    depths: int,
    samples: int,
    kinds: list[str],
    held_out: list[np.ndarray],
    seed: int,
    qa_prompt: QaPrompt | None = None,
    heatmap: Path | None = None,
) -> dict[str, float]:
    """The end-of-phase check: TensorBoard scalars eval/needle_acc/<len> and eval/ppl/<bucket>; with
    ``qa_prompt`` (Phase 2) also eval/qa/<metric> on questions built from the held-out documents.
    ``heatmap``: where to draw needle accuracy by length and depth (all kinds pooled), when any ran."""
    from fathom.eval.needle import default_depths, default_lengths, shortest_needle_prompt

    lengths = default_lengths(max_seq_length, start=min(1024, max_seq_length))
    haystack = [tokenizer.decode(np.asarray(d[:-1]).tolist()) for d in held_out[:64]]
    kinds = [k for k in kinds if k == "passkey" or haystack]
    # needles need room for the instruction, the needle and the question; tiny phases get perplexity only
    shortest = {k: shortest_needle_prompt(tokenizer, k) for k in kinds}
    kinds = [k for k in kinds if shortest[k] <= max(lengths)]
    lengths = [n for n in lengths if all(shortest[k] <= n for k in kinds)] if kinds else []  # no kind fits: no needles
    scalars: dict[str, float] = {}
    was_training = model.training
    model.eval()
    try:
        grid = (
            needle_accuracy(
                model,
                tokenizer,
                device,
                lengths,
                default_depths(depths),
                samples,
                kinds,
                haystack,
                seed,
                progress=False,
            )
            if lengths
            else {}
        )
        for length in lengths:
            cells = [v for kind in grid.values() for v in kind[str(length)].values()]
            scalars[f"eval/needle_acc/{length}"] = float(np.mean(cells))
        if grid and heatmap is not None:
            _phase_heatmap(grid, lengths, heatmap)
        if held_out:
            docs = sorted(held_out, key=len, reverse=True)
            for label, bucket in loss_by_position(model, docs, max_seq_length, device)["buckets"].items():
                scalars[f"eval/ppl/{label}"] = bucket["perplexity"]
        if qa_prompt is not None and haystack:
            scalars |= _phase_qa(model, tokenizer, device, haystack, max_seq_length, samples, seed, qa_prompt)
    finally:
        model.train(was_training)
    return scalars


def _phase_heatmap(grid: dict, lengths: list[int], path: Path) -> None:
    """Needle accuracy by length (columns) and depth (rows), the kinds averaged: the phase's picture."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    depths = list(next(iter(grid.values()))[str(lengths[0])])
    matrix = np.array([[np.mean([kind[str(n)][d] for kind in grid.values()]) for n in lengths] for d in depths])
    labels = [f"{float(d):.0%}" for d in depths]
    _heatmap(
        plt, matrix, [str(n) for n in lengths], labels, "needle depth", f"{path.parent.name}: needles", "accuracy", path
    )


def _phase_qa(model, tokenizer, device, texts, max_seq_length, samples, seed, prompt) -> dict[str, float]:
    """Phase 2's own check: questions from held-out documents at half and all of its row, scored."""
    from fathom.data.qa import build_records
    from fathom.eval.qa import answer_questions, score_answers

    lengths = sorted({max(max_seq_length // 2, 64), max_seq_length})
    records = build_records(texts, tokenizer, lengths, per_document=1, seed=seed)[: max(4, 4 * samples)]
    if not records:
        return {}
    scores = score_answers(records, answer_questions(model, tokenizer, device, records, prompt), tokenizer)
    return {f"eval/qa/{k}": scores[k] for k in ("exact_match", "f1", "contains")}


def _labels(adapters: Sequence[str]) -> list[str]:
    """Each adapter's name in the report: its folder's name, with as many parent folders as it takes to
    tell it from the others (``run-a/final_512_instruct_model``, ``run-b/final_512_instruct_model``):
    runs name their final adapters alike, and two models under one label would share a row's name and
    overwrite each other's heatmap."""
    parts = [Path(a).resolve().parts for a in adapters]
    labels = []
    for own in parts:
        depth = 1
        while depth < len(own) and sum(other[-depth:] == own[-depth:] for other in parts) > 1:
            depth += 1
        labels.append("/".join(own[-depth:]))
    return labels


def write_report(results: dict, out: Path) -> Path:
    """results.json, a heatmap PNG per model and kind, a perplexity-by-position plot, report.md."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    lines = [f"# fathom eval: {results['base']}", ""]
    if results["kinds"]:
        lines += [
            f"Needle accuracy by context length (columns) and needle depth (rows), {results['samples']} "
            "sample(s) per cell, exact match.",
            "",
        ]
    lines += _needle_report(results, out, plt) + _perplexity_report(results, out, plt) + _ruler_report(results)
    lines += _qa_report(results, out, plt)
    if results.get("skipped"):
        lines += ["## Not run", "", *[f"- {line}" for line in results["skipped"]], ""]
    elif results.get("ruler_skipped"):
        lines += ["## RULER", "", f"Skipped: {results['ruler_skipped']}", ""]
    report = out / "report.md"
    report.write_text("\n".join(lines), encoding="utf-8")
    return report


def _needle_report(results: dict, out: Path, plt) -> list[str]:
    """A heatmap and a table per model and needle kind."""
    lines: list[str] = []
    lengths = [str(n) for n in results["lengths"]]
    depths = [str(d) for d in results["depths"]]
    for model in results["models"]:
        for kind, grid in model["needle"].items():
            matrix = np.array([[grid[n][d] for n in lengths] for d in depths])
            png = f"heatmap_{_slug(model['name'])}_{kind}.png"
            depth_labels = [f"{float(d):.0%}" for d in depths]
            _heatmap(
                plt, matrix, lengths, depth_labels, "needle depth", f"{model['name']}: {kind}", "accuracy", out / png
            )
            lines += [
                f"## {model['name']}: {kind} (mean accuracy {matrix.mean():.0%})",
                "",
                "| depth | " + " | ".join(lengths) + " |",
                "|---" * (len(lengths) + 1) + "|",
            ]
            lines += [f"| {float(d):.0%} | " + " | ".join(f"{grid[n][d]:.2f}" for n in lengths) + " |" for d in depths]
            lines += ["", f"![{model['name']} {kind}]({png})", ""]
    return lines


def _perplexity_report(results: dict, out: Path, plt) -> list[str]:
    """Perplexity by position of every model in one plot and one table."""
    lines: list[str] = []
    with_ppl = [m for m in results["models"] if m.get("perplexity_by_position", {}).get("buckets")]
    if with_ppl:
        fig, ax = plt.subplots(figsize=(7, 4))
        for model in with_ppl:
            buckets = model["perplexity_by_position"]["buckets"]
            ax.plot(list(buckets), [b["perplexity"] for b in buckets.values()], marker="o", label=model["name"])
        ax.set_xlabel("token position")
        ax.set_ylabel("perplexity")
        ax.set_title("perplexity by position (held-out documents)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "ppl_by_position.png", dpi=110)
        plt.close(fig)
        buckets = list(with_ppl[0]["perplexity_by_position"]["buckets"])
        lines += [
            "## Perplexity by position",
            "",
            "| model | " + " | ".join(buckets) + " | short-context ppl |",
            "|---" * (len(buckets) + 2) + "|",
        ]
        for model in with_ppl:
            row = model["perplexity_by_position"]["buckets"]
            short = model.get("short_perplexity", {}).get("perplexity")
            short_cell = f"{short:.2f}" if short else "-"
            cells = " | ".join(f"{row[b]['perplexity']:.2f}" if b in row else "-" for b in buckets)
            lines.append(f"| {model['name']} | {cells} | {short_cell} |")
        lines += ["", "![perplexity by position](ppl_by_position.png)", ""]
    return lines


def _ruler_report(results: dict) -> list[str]:
    lines: list[str] = []
    lengths = [str(n) for n in results["lengths"]]
    with_ruler = [m for m in results["models"] if m.get("ruler")]
    if with_ruler:
        lines += [
            "## RULER (lm-eval, offline synthetic tasks)",
            "",
            "| model | task | " + " | ".join(lengths) + " |",
            "|---" * (len(lengths) + 2) + "|",
        ]
        for model in with_ruler:
            for task, scores in model["ruler"].items():
                cells = " | ".join(f"{scores[n]:.2f}" if n in scores else "-" for n in lengths)
                lines.append(f"| {model['name']} | {task} | {cells} |")
        lines.append("")
    return lines


def _qa_report(results: dict, out: Path, plt) -> list[str]:
    """The long-document QA table, and a heatmap per model of 'answer contained' by length and depth."""
    with_qa = [m for m in results["models"] if m.get("qa")]
    if not with_qa:
        return []
    lines = [
        "## Long-document question answering",
        "",
        "SQuAD-normalized exact match, token F1, and reference contained in the answer (the heatmaps).",
        "",
        "| model | questions | exact match | F1 | contained |",
        "|---|---|---|---|---|",
    ]
    for m in with_qa:
        qa = m["qa"]
        lines.append(f"| {m['name']} | {qa['n']} | {qa['exact_match']:.2f} | {qa['f1']:.2f} | {qa['contains']:.2f} |")
    lines.append("")
    if results.get("qa_paired"):
        lines += ["Contained, one model minus another on the same questions (paired bootstrap, 95%):", ""]
        lines += [
            f"- {d['model']} minus {d['against']}: {100 * d['difference']:+.1f} points "
            f"[{100 * d['low']:+.1f}, {100 * d['high']:+.1f}], {d['n']} questions"
            for d in results["qa_paired"]
        ]
        lines.append("")
    for model in with_qa:
        grid = model["qa"]["grid_contains"]
        lengths = list(grid)
        depths = sorted({d for cells in grid.values() for d in cells})
        matrix = np.array([[grid[n].get(d, np.nan) for n in lengths] for d in depths])
        png = f"qa_heatmap_{_slug(model['name'])}.png"
        length_labels = [f"<={int(n):,}" for n in lengths]
        _heatmap(plt, matrix, length_labels, depths, "answer depth", f"{model['name']}: QA", "contained", out / png)
        lines += [f"![{model['name']} QA]({png})", ""]
    return lines


def _heatmap(plt, matrix, columns, rows, row_label: str, title: str, scale: str, path: Path) -> None:
    """A (rows x columns) grid of shares 0..1 by context length, red to green, saved as a PNG."""
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(columns), 1.2 + 0.45 * len(rows)))
    image = ax.imshow(matrix, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(columns)), columns)
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel(row_label)
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label=scale)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
