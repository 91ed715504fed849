"""The quality ablation's report (``python bench/quality.py --report``): the tables and the figure of
docs/benchmarks.md, read from ``bench/results/quality-<scale>/<arm>.json``. Nothing here trains or loads
a model; ``quality.py`` says which arms and probes exist."""

from __future__ import annotations

import json
from pathlib import Path


def load_results(results: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted(results.glob("*.json"))}


def tables(
    found: dict,
    order: list[str],
    probe_arms: dict,
    lengths: list[str],
    figure: Path | None,
    contexts: dict[tuple[str, str], str] | None = None,
) -> str:
    """The markdown tables: QA per length with intervals, like / unseen, needles and perplexities per arm
    (``order``), paired differences, QA by answer depth, the probes (``probe_arms``, name -> Arm); with
    ``figure``, QA against context length drawn there. ``lengths``: the context buckets, as strings;
    ``contexts``: the longest questions' documents ((question, reference) -> context), for what the misses are."""
    header = ["arm", *[f"QA <={int(n):,}" for n in lengths], "like / unseen (longest)", "needles", "ppl last"]
    header.append("short ppl")
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    base_short = found.get("base", {}).get("model", {}).get("short_perplexity", {}).get("perplexity")
    lines += ["| " + " | ".join(_row(name, found[name]["model"], lengths, base_short)) + " |" for name in order]
    lines += ["", *_paired_lines(found, lengths[-1])]
    lines += _depth_lines(found, order, lengths[-1])
    lines += _probe_lines(probe_arms, found, lengths[-1])
    if contexts:
        lines += _miss_lines(found, [*order, *[n for n in probe_arms if n in found]], contexts, lengths[-1])
    lines += _kind_lines(found, [*order, *[n for n in probe_arms if n in found]], lengths[-1])
    lines += _relabel_lines(found, lengths[-1])
    if figure is not None and order:
        _figure(found, order, lengths, figure)
    return "\n".join(lines)


def _row(name: str, model: dict, lengths: list[str], base_short: float | None) -> list[str]:
    """One arm's cells: QA per length with its interval, like / unseen at the longest, needles, perplexities."""
    cells = [name]
    qa = model.get("qa")
    for n in lengths:
        if qa and n in qa["contains_by_length"]:
            low, high = qa["contains_interval_by_length"][n]
            cells.append(f"{qa['contains_by_length'][n]:.0%} [{low:.0%}, {high:.0%}]")
        else:
            cells.append("-")
    if qa:
        cells.append(_groups(qa["items"], lengths[-1], with_n=True))
    else:
        cells.append("-")
    needles = [v for kind in model["needle"].values() for cell in kind.values() for v in cell.values()]
    cells.append(f"{sum(needles) / max(len(needles), 1):.0%}")
    buckets = model.get("perplexity_by_position", {}).get("buckets", {})
    cells.append(f"{list(buckets.values())[-1]['perplexity']:.2f}" if buckets else "-")
    short = model.get("short_perplexity", {}).get("perplexity")
    change = f" ({short / base_short - 1:+.1%})" if short and base_short else ""
    cells.append(f"{short:.2f}{change}" if short else "-")
    return cells


COMPARISONS = (
    ("progressive+qa", "base"),
    ("progressive+qa", "progressive"),
    ("progressive+qa", "qa-only"),
    ("progressive+qa", "direct+qa"),
    ("progressive+qa", "short+qa"),
    # the winning Phase-2 settings: Phase 1 + 2 against Phase 1 alone and against Phase 2 alone (the goals),
    # and whole answers on top of the rate and the tokens
    ("progressive+qa--best", "progressive"),
    ("progressive+qa--best", "qa-only--best"),
    ("qa-only--best", "qa-only--lr-x4+tokens-x4"),
    ("progressive+qa--best+question-twice", "progressive+qa--best"),  # the question before the document too
    ("progressive+qa--best+longest", "progressive+qa--best"),  # every training question at the longest context
    ("progressive+qa--best+tokens-x8", "progressive+qa--best"),  # twice as many Phase-2 tokens
    # the schedule claim again with a Phase 2 that teaches (0.7 passes): progressive against direct and short
    # only, and Phase 1's share against Phase 2 alone
    ("progressive+qa--best+tokens-x8", "direct+qa--best+tokens-x8"),
    ("progressive+qa--best+tokens-x8", "short+qa--best+tokens-x8"),
    ("progressive+qa--best+tokens-x8", "qa-only--best+tokens-x8"),
)
# a paragraph's label at the start of a line, written inline ("(a) Any vessel ...") or as a heading
# ("###### (a) In General"): US Code sections use both, the COLREGs the first
_LABEL = r"(?m)^[ \t]*(?:#+[ \t]+)?"
_ASKED_LABEL = r'^What does paragraph (\([a-z0-9]{1,4}\)|\d{1,2}\.) of "'


def _paired_lines(found: dict, longest: str) -> list[str]:
    """Paired differences at the longest length (same questions, 95% bootstrap interval)."""
    from fathom.eval.stats import paired_difference

    lines = []
    for a, b in COMPARISONS:
        if a not in found or b not in found or not found[a]["model"].get("qa") or not found[b]["model"].get("qa"):
            continue
        d = paired_difference(_hits_at(found, a, longest), _hits_at(found, b, longest))
        lines.append(
            f"- {a} minus {b} at <={int(longest):,} tokens: {d['difference']:+.1%} "
            f"[{d['low']:+.1%}, {d['high']:+.1%}] over {d['n']} questions"
        )
    return lines


def _depth_lines(found: dict, order: list[str], longest: str) -> list[str]:
    """QA at the longest context by where the answer sits in it (answer depth), one row per arm asked."""
    asked = [name for name in order if found[name]["model"].get("qa")]
    if not asked:
        return []
    depths = sorted({i["depth"] for name in asked for i in found[name]["model"]["qa"]["items"]})
    lines = ["", f"| arm (QA at <={int(longest):,} by answer depth) | " + " | ".join(depths) + " |"]
    lines.append("|---" * (len(depths) + 1) + "|")
    for name in asked:
        items = [i for i in found[name]["model"]["qa"]["items"] if str(i["length"]) == longest]
        cells = []
        for depth in depths:
            hits = [i["contains"] for i in items if i["depth"] == depth]
            cells.append(f"{sum(hits) / len(hits):.0%} (n={len(hits)})" if hits else "-")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _probe_lines(probe_arms: dict, found: dict, longest: str) -> list[str]:
    """The probes' table at the longest context: each against the arm it varies and against the base (the
    issue's goal), on held-out documents like the training ones and of the kind never trained on."""
    from fathom.eval.stats import wilson_interval

    done = [arm for name, arm in probe_arms.items() if name in found]
    if not done:
        return []
    lines = [
        "",
        "| probe | changed | QA at the longest | minus the arm it varies (paired) | minus base (paired) "
        "| like / unseen | short ppl |",
        "|---" * 7 + "|",
    ]
    for arm in done:
        hits = _hits_at(found, arm.name, longest)
        low, high = wilson_interval(sum(hits), len(hits))
        score = f"{sum(hits) / len(hits):.0%} [{low:.0%}, {high:.0%}]"
        against = [_paired_cell(found, arm.name, other, longest) for other in (arm.name.split("--")[0], "base")]
        changed = ", ".join(f"{k}={json.dumps(v) if isinstance(v, str) else v}" for k, v in arm.overrides)
        groups = _groups(found[arm.name]["model"]["qa"]["items"], longest)
        short = found[arm.name]["model"].get("short_perplexity", {}).get("perplexity")
        lines.append(f"| {arm.name} | {changed} | {score} | {' | '.join(against)} | {groups} | {short:.2f} |")
    return lines


def _miss_lines(found: dict, names: list[str], contexts: dict[tuple[str, str], str], longest: str) -> list[str]:
    """What the wrong answers at the longest context are, per arm and group: how many copy another passage of
    the context (the model read the document and picked the wrong paragraph) rather than invent text; and,
    once, the distractors a question faces: how many labelled paragraphs ("(a)", "(b)", ...) a context
    holds, and how many times the label a question asks about starts a line of its context."""
    import re

    from fathom.data.qa import normalize_answer

    rows, labels, asked_labels = [], {"like": [], "unseen": []}, {"like": [], "unseen": []}
    for name in names:
        qa = found[name]["model"].get("qa")
        at = [i for i in (qa or {}).get("items", []) if str(i["length"]) == longest]
        items = [
            i | {"context": contexts[i["question"], i["reference"]]}
            for i in at
            if (i["question"], i["reference"]) in contexts
        ]
        if not items:
            continue
        cells = []
        for group in ("like", "unseen"):
            asked = [i for i in items if i["group"] == group]
            labels[group] = [len(re.findall(_LABEL + r"\([a-z]{1,4}\)", i["context"])) for i in asked]
            asked_labels[group] = [
                len(re.findall(_LABEL + re.escape(m.group(1)), i["context"]))
                for i in asked
                if (m := re.match(_ASKED_LABEL, i["question"]))
            ]
            misses = [i for i in asked if not i["contains"]]
            copied = [i for i in misses if _copies_context(i["answer"], i["context"], normalize_answer)]
            opening = [i for i in copied if _quotes_section_opening(i, normalize_answer)]
            cells.append(f"{len(copied)} of {len(misses)} ({len(opening)} the asked section's opening)")
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    if not rows:
        return []
    per_context = ", ".join(f"{g} {sum(v) / max(len(v), 1):.1f}" for g, v in labels.items())
    same = ", ".join(f"{g} {sum(v) / max(len(v), 1):.1f}" for g, v in asked_labels.items())
    return [
        "",
        f"Labelled paragraphs per context at the longest length: {per_context}; the asked label per context: {same}.",
        "",
        "| arm | like: misses copying another passage | unseen: misses copying another passage |",
        "|---|---|---|",
        *rows,
    ]


def _kind_lines(found: dict, names: list[str], longest: str) -> list[str]:
    """QA at the longest context by the kind of question, like and unseen apart: a section's opening, a
    paragraph "(a)" or "(b)", a paragraph further down its list. The groups ask these in different shares,
    so a gap between them is read kind by kind."""
    import re

    def kind(question: str) -> str:
        label = re.match(_ASKED_LABEL, question)
        if label is None:
            return "section"
        return "(a)-(b)" if label.group(1) in ("(a)", "(b)", "1.", "2.") else "(c) on"

    columns = [(g, k) for g in ("like", "unseen") for k in ("section", "(a)-(b)", "(c) on")]
    rows = []
    for name in names:
        qa = found[name]["model"].get("qa")
        items = [i for i in (qa or {}).get("items", []) if str(i["length"]) == longest]
        if not items:
            continue
        cells = []
        for group, asked in columns:
            hits = [i["contains"] for i in items if i["group"] == group and kind(i["question"]) == asked]
            cells.append(f"{sum(hits)} of {len(hits)}" if hits else "-")
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    if not rows:
        return []
    header = " | ".join(f"{g}: {k}" for g, k in columns)
    return ["", f"| arm (answered, by kind of question) | {header} |", "|---" * (len(columns) + 1) + "|", *rows]


RELABELLED = "--relabelled"  # the results of ``quality.py --relabel``: <arm>--relabelled.json


def _relabel_lines(found: dict, longest: str) -> list[str]:
    """Each arm asked again with its contexts' labels in the other layout (``quality.py --relabel``),
    against its own answers on the same questions, like and unseen apart (paired, 95% interval)."""
    from fathom.eval.stats import paired_difference

    def at_longest(name: str) -> dict[tuple[str, str], dict]:
        # one fact is asked at every context length with the same words: the length tells them apart
        items = found[name]["model"]["qa"]["items"]
        return {(i["question"], i["reference"]): i for i in items if str(i["length"]) == longest}

    rows = []
    for name in sorted(n for n in found if n.endswith(RELABELLED) and n.removesuffix(RELABELLED) in found):
        asked, again = at_longest(name.removesuffix(RELABELLED)), at_longest(name)
        cells = []
        for group in ("like", "unseen"):
            pairs = [
                (asked[key]["contains"], i["contains"])
                for key, i in again.items()
                if i["group"] == group and key in asked
            ]
            if not pairs:
                cells.append("-")
                continue
            d = paired_difference([b for _, b in pairs], [a for a, _ in pairs])
            cells.append(
                f"{sum(a for a, _ in pairs)} -> {sum(b for _, b in pairs)} of {len(pairs)}, "
                f"{d['difference']:+.1%} [{d['low']:+.1%}, {d['high']:+.1%}]"
            )
        rows.append(f"| {name.removesuffix(RELABELLED)} | " + " | ".join(cells) + " |")
    if not rows:
        return []
    return [
        "",
        f"| arm (QA at <={int(longest):,}: as asked -> labels in the other layout) | like | unseen |",
        "|---|---|---|",
        *rows,
    ]


def _quotes_section_opening(item: dict, normalize) -> bool:
    """Whether a miss about a lettered paragraph quotes instead the first paragraph of the section its
    question names: the model found the section and did not read the label (what the COLREGs misses do).

    The section's opening is the first paragraph of body text after the line holding its title, past
    front-matter lines ("number: '9'", "---") and label headings ("###### (a) In General")."""
    import re

    asked = re.match(_ASKED_LABEL + r'(.+)" say\?$', item["question"])
    if asked is None:
        return False
    title = re.search(r"(?m)^.*" + re.escape(asked.group(2)) + r".*$", item["context"])
    if title is None:
        return False
    body = item["context"][title.end() :]
    paragraph = next(
        (
            block
            for block in re.split(r"\n\s*\n", body)
            if block.strip() and not re.fullmatch(r"(?:\s*(?:---|#+ [^\n]*|[a-z_]+: [^\n]*))+\s*", block)
        ),
        "",
    )
    opening = normalize(item["answer"])[:60]
    return len(opening) >= 20 and opening in normalize(paragraph)


def _copies_context(answer: str, context: str, normalize) -> bool:
    """Whether an answer's opening (its first 60 normalized characters, at least 20) is text of the context."""
    opening = normalize(answer)[:60]
    return len(opening) >= 20 and opening in normalize(context)


def _groups(items: list[dict], length: str, with_n: bool = False) -> str:
    """ "like / unseen": the share answered at ``length`` on documents like the training ones and of the
    kind never trained on (with each count of questions when ``with_n``)."""
    cells = []
    for group in ("like", "unseen"):
        hits = [i["contains"] for i in items if i["group"] == group and str(i["length"]) == length]
        cells.append(f"{sum(hits) / max(len(hits), 1):.0%}" + (f" (n={len(hits)})" if with_n else ""))
    return " / ".join(cells)


def _hits_at(found: dict, name: str, length: str) -> list[bool]:
    return [i["contains"] for i in found[name]["model"]["qa"]["items"] if str(i["length"]) == length]


def _paired_cell(found: dict, name: str, other: str, length: str) -> str:
    """``name`` minus ``other`` on the same questions at ``length``, with its 95% interval; '-' when not run."""
    from fathom.eval.stats import paired_difference

    if other not in found or not found[other]["model"].get("qa"):
        return "-"
    d = paired_difference(_hits_at(found, name, length), _hits_at(found, other, length))
    return f"{d['difference']:+.1%} [{d['low']:+.1%}, {d['high']:+.1%}]"


def _figure(found: dict, order: list[str], lengths: list[str], path: Path) -> None:
    """QA accuracy against context length, one line per arm, its 95% interval shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name in order:
        qa = found[name]["model"].get("qa")
        if not qa:
            continue
        xs = [int(n) for n in lengths if n in qa["contains_by_length"]]
        ys = [qa["contains_by_length"][str(n)] for n in xs]
        low = [qa["contains_interval_by_length"][str(n)][0] for n in xs]
        high = [qa["contains_interval_by_length"][str(n)][1] for n in xs]
        (line,) = ax.plot(xs, ys, marker="o", label=name)
        ax.fill_between(xs, low, high, color=line.get_color(), alpha=0.15)
    ax.set_xscale("log", base=2)
    ax.set_xticks([int(n) for n in lengths], [f"{int(n):,}" for n in lengths])
    ax.set_ylim(0, 1)
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("answer contains the reference")
    ax.set_title("Held-out questions by context length (95% intervals)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
