"""``fathom report``: one self-contained HTML page of a run, for the people who decide whether it is good enough.

A superintendent or a surveyor will not start TensorBoard or read JSON. The page says what was trained on
what, how the loss went through the phases, where in a long document the model finds things, and what it
answered, question by question. It reads only what a run and ``fathom eval`` leave on disk (the run's
``fathom_config.yaml``, ``status.json``, ``data_summary.json``, each phase's ``trainer_state.json``,
``fathom_rope.json`` and needle heatmap, ``train.log``'s warnings; an eval folder's ``results.json`` and
PNGs) and writes one file: CSS, the filter script and every picture (PNG, base64) inline, no external
URL, so it opens from a file, an e-mail attachment or a shared drive, and prints.

Written by hand on purpose: the page is a few tables, pictures and one filter, which the standard
library's ``html.escape`` and matplotlib cover; a templating or dashboard library would add a
dependency for no reader-visible gain.
"""

from __future__ import annotations

import base64
import html
import io
import re
from pathlib import Path

import yaml

from fathom.fsutil import read_json
from fathom.reports.runs import format_duration

STYLE = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#1b2733;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:2px solid #d6e2ee;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}td,th{border:1px solid #ccd6e0;padding:.3em .6em;
text-align:left;vertical-align:top}th{background:#eef3f8}.muted{color:#5b6b7b}.ok{color:#17692f;font-weight:600}
.bad{color:#a3211b;font-weight:600}img{max-width:100%;border:1px solid #e3e9ef}pre{background:#f4f7fa;
padding:.8em;overflow-x:auto;font-size:.88em}.filters{margin:.5em 0}.filters select{margin-right:1em}
@media print{.filters{display:none}body{max-width:none}}
"""
SCRIPT = """
function filterQA(id){const t=document.getElementById(id);const L=document.getElementById(id+'-length').value;
const A=document.getElementById(id+'-answers').value;const [m,want]=A.split(':');let shown=0;
for(const row of t.tBodies[0].rows){const right=row.dataset.right.split(',');
const ok=(L==='all'||row.dataset.length===L)&&(A==='all'||(A==='differ'?new Set(right).size>1:right[+m]===want));
row.style.display=ok?'':'none';if(ok)shown++;}document.getElementById(id+'-count').textContent=shown+' shown';}
window.addEventListener('DOMContentLoaded',()=>{const h=new URLSearchParams(location.hash.slice(1));
for(const t of document.querySelectorAll('table.qa')){for(const k of ['length','answers']){
const s=document.getElementById(t.id+'-'+k);if(h.has(k)&&[...s.options].some(o=>o.value===h.get(k)))s.value=h.get(k);}
filterQA(t.id);}});
"""


def write_report(run_dir: Path, eval_dirs: list[Path] | None = None, out: Path | None = None) -> Path:
    """Write the page of ``run_dir`` (and of each ``fathom eval`` folder in ``eval_dirs``) to ``out``
    (default ``<run_dir>/report.html``), atomically; returns its path."""
    from fathom.errors import ConfigError

    run_dir = Path(run_dir)
    if not (run_dir / "status.json").is_file():
        raise ConfigError(f"RUN_DIR: {run_dir} holds no fathom run (no status.json); give fathom train's output_dir")
    for folder in eval_dirs or []:
        if not (Path(folder) / "results.json").is_file():
            raise ConfigError(f"--eval: {folder} holds no results.json; give a folder fathom eval --out wrote")
    out = Path(out) if out is not None else run_dir / "report.html"
    page = render(run_dir, [Path(d) for d in eval_dirs or []])
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    return out


def write_eval_page(eval_dir: Path) -> Path:
    """``<eval_dir>/report.html``: the page of one ``fathom eval`` folder alone (written beside report.md)."""
    eval_dir = Path(eval_dir)
    results = read_json(eval_dir / "results.json")
    intro = (
        f"<h1>fathom eval: {html.escape(str(results.get('base', '?')))}</h1><p class='muted'>Lengths "
        f"{', '.join(f'{int(n):,}' for n in results.get('lengths') or [])}; written by <code>fathom eval</code>. "
        "<code>fathom report RUN_DIR --eval this-folder</code> puts it beside the run.</p>"
    )
    out = eval_dir / "report.html"
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(_page(f"fathom eval: {eval_dir.name}", [intro, _evaluation(eval_dir)]), encoding="utf-8")
    tmp.replace(out)
    return out


def _page(title: str, body: list[str]) -> str:
    return (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<meta name='viewport' content='width=device-width, initial-scale=1'><style>{STYLE}</style>"
        f"<script>{SCRIPT}</script></head><body>{''.join(body)}</body></html>"
    )


def render(run_dir: Path, eval_dirs: list[Path]) -> str:
    config = _yaml(run_dir / "fathom_config.yaml")
    status = read_json(run_dir / "status.json")
    phases = _phases(run_dir, status)
    body = [
        _header(run_dir, config, status),
        _in_short(eval_dirs),
        _what_was_trained(run_dir, config, phases),
        _phase_table(phases),
        _curves(phases),
        _warnings(run_dir),
        *(_evaluation(d) for d in eval_dirs),
        _phase_heatmaps(phases),
        _how_to_use(run_dir, config),
    ]
    return _page(f"fathom run: {run_dir.name}", body)


# ---------------------------------------------------------------------------------------------------
# Reading the run


def _yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def _phases(run_dir: Path, status: dict) -> list[dict]:
    """Each phase the run planned, with what its folder holds (history, RoPE, heatmap) once it ended."""
    out = []
    for planned in status.get("phases") or []:
        if not isinstance(planned, dict) or not isinstance(planned.get("name"), str):
            continue
        folder = run_dir / Path(planned["name"]).name  # a name, never a path out of the run
        state = read_json(folder / "trainer_state.json")
        history = [h for h in state.get("log_history") or [] if isinstance(h, dict) and "loss" in h]
        rope = read_json(folder / "fathom_rope.json").get("trained_with") or {}
        memory = (state.get("memory") or {}).get(planned["name"]) if isinstance(state.get("memory"), dict) else None
        out.append(
            planned
            | {"folder": folder, "history": history, "rope": rope, "done": bool(history), "memory": memory or {}}
        )
    return out


# ---------------------------------------------------------------------------------------------------
# Sections


def _header(run_dir: Path, config: dict, status: dict) -> str:
    state = status.get("status", "unknown")
    css = "ok" if state == "complete" else "bad" if state == "failed" else "muted"
    base = (config.get("model") or {}).get("name_or_path", "?")
    return (
        f"<h1>fathom run: {html.escape(run_dir.name)}</h1>"
        f"<p>Base model <b>{html.escape(str(base))}</b>; run <span class='{css}'>{html.escape(str(state))}</span>, "
        f"{int(status.get('tokens_seen') or 0):,} tokens trained in {int(status.get('global_step') or 0):,} steps. "
        "<span class='muted'>This page is written by <code>fathom report</code> from the run's folder.</span></p>"
    )


def _in_short(eval_dirs: list[Path]) -> str:
    """Each evaluation's questions in one line under the title, for a reader who reads nothing else: every
    model's share of answers holding the reference with its 95% interval, then the last model minus the
    first on the same questions (``qa_paired`` of results.json, which ``fathom eval`` writes)."""
    lines = []
    for folder in eval_dirs:
        results = read_json(folder / "results.json")
        asked = [m for m in results.get("models") or [] if isinstance(m, dict) and _asked(m.get("qa"))]
        if not asked:
            continue
        names = [str(m.get("name")) for m in asked]
        shares = ", ".join(
            f"<b>{html.escape(n)}</b>{_gloss(n)} {_share(m['qa'])}" for n, m in zip(names, asked, strict=True)
        )
        same = _same_questions([m["qa"] for m in asked])
        count = f"{len(asked[0]['qa']['items']):,} questions" if same else "Questions"
        line = f"{count} ({html.escape(folder.name)}), answers holding the reference: {shares}."
        first, last = names[0], names[-1]
        pairs = [d for d in results.get("qa_paired") or [] if isinstance(d, dict) and _points(d, 0)]
        d = next((d for d in pairs if (d.get("model"), d.get("against")) == (last, first)), None)
        if same and d is not None:
            clear = "a clear gain" if d["low"] > 0 else "a clear loss" if d["high"] < 0 else "no clear difference"
            line += (
                f" {html.escape(last)} minus {html.escape(first)}: <b>{_points(d, 0)} points</b> on the same "
                f"questions ({clear}: [low, high] is the 95% interval of the difference, paired)."
            )
        lines.append(f"<li>{line}</li>")
    return f"<h2>In short</h2><ul>{''.join(lines)}</ul>" if lines else ""


def _gloss(name: str) -> str:
    """What a model of fathom's naming is, for a reader who does not know it: " (after Phase 2)" for
    ``.../final_32k_instruct_model``; "" for a name fathom did not give."""
    last = name.rsplit("/", 1)[-1]
    if name == "base":
        return " (untrained)"
    if re.fullmatch(r"final_\d+k?_instruct_model", last):
        return " (after Phase 2)"
    return " (after Phase 1)" if re.fullmatch(r"final_\d+k?_model", last) else ""


def _points(d, digits: int) -> str:
    """A paired difference of results.json's ``qa_paired`` in points, as "+25 [-12, +62]"; "" when malformed."""
    values = [d.get(k) for k in ("difference", "low", "high")] if isinstance(d, dict) else []
    if len(values) != 3 or not all(isinstance(v, float | int) for v in values):
        return ""
    mid, low, high = (f"{100 * v:+.{digits}f}" for v in values)
    return f"{mid} [{low}, {high}]"


def _asked(qa) -> bool:
    return isinstance(qa, dict) and isinstance(qa.get("contains"), float | int) and bool(qa.get("items"))


def _share(qa: dict) -> str:
    """The share of answers holding the reference and its 95% interval where known, as "62% [31%, 86%]"."""
    interval = qa.get("contains_interval")
    if not (isinstance(interval, list) and len(interval) == 2 and all(isinstance(x, float | int) for x in interval)):
        return f"{qa['contains']:.0%}"
    return f"{qa['contains']:.0%} [{interval[0]:.0%}, {interval[1]:.0%}]"


def _what_was_trained(run_dir: Path, config: dict, phases: list[dict]) -> str:
    lora = config.get("lora") or {}
    summary = read_json(run_dir / "data_summary.json")
    corpus = summary.get("corpus") or {}
    rows = [
        ("LoRA", f"rank {lora.get('r')}, alpha {lora.get('alpha')}, on {lora.get('target_modules')}"),
        ("RoPE per phase", "; ".join(f"{p['name']}: {_rope(p['rope'])}" for p in phases) or "-"),
    ]
    if corpus:
        histogram = ", ".join(f"{k} tokens: {v}" for k, v in (corpus.get("length_histogram") or {}).items())
        formats = ", ".join(f"{k} {v}" for k, v in (corpus.get("formats") or {}).items())
        skipped = ", ".join(f"{v} {k}" for k, v in (corpus.get("skipped_by_reason") or {}).items()) or "none"
        rows += [
            (
                "Corpus",
                f"{corpus.get('documents', 0):,} documents, {corpus.get('tokens', 0):,} tokens "
                f"({corpus.get('held_out_documents', 0):,} held out for evaluation)",
            ),
            ("Document lengths", histogram or "-"),
            ("Formats", formats or "-"),
            ("Skipped files", skipped),
        ]
    instructions = summary.get("instructions") or {}
    if instructions:
        rows.append(("Phase 2 data", ", ".join(f"{k.replace('_', ' ')} {_plain(v)}" for k, v in instructions.items())))
    return "<h2>What was trained</h2>" + _table(None, rows)


def _plain(value) -> str:
    """A value for a reader: numbers with thousands separators, a mapping as "key value" pairs."""
    if isinstance(value, dict):
        return ", ".join(f"{k.replace('_', ' ')} {_plain(v)}" for k, v in value.items())
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def _rope(rope: dict) -> str:
    if not rope:
        return "the model's own"
    kind = rope.get("rope_type") or (rope.get("parameters") or {}).get("rope_type") or "default"
    factor = rope.get("factor") or (rope.get("parameters") or {}).get("factor")
    return f"{kind}" + (f" x{factor}" if factor else "")


def _phase_table(phases: list[dict]) -> str:
    rows = []
    for p in phases:
        rows.append(
            (
                html.escape(str(p["name"])),
                f"{int(p.get('max_seq_length') or 0):,}",
                f"{int(p.get('trained_tokens') or 0):,}",
                f"{int(p.get('steps') or 0):,}",
                *_speed(p["history"], int(p.get("trained_tokens") or 0) // max(int(p.get("steps") or 1), 1)),
                _memory(p),
                _loss_trend([h["loss"] for h in p["history"]]),
                "done" if p["done"] else "not reached",
            )
        )
    header = ["phase", "length (tokens a row)", "tokens", "steps", "wall time", "tokens/s",
              "peak memory, planned / measured", "loss, first tenth of the steps to last", "status"]  # fmt: skip
    note = (
        "<p class='muted'>Wall time and tokens/s count the training steps (not evaluations or checkpoints). "
        "Planned memory is fathom's estimate for the setup the phase chose; measured is the GPU allocator's "
        "peak in the phase, or on a CPU the process's largest resident memory so far (evaluations and all).</p>"
    )
    return "<h2>The phases</h2>" + _table(header, rows, escape=False) + note  # cells escaped as they were built


def _speed(history: list[dict], tokens_per_step: int) -> tuple[str, str]:
    """The phase's wall time (its steps' seconds summed) and tokens/s; "-" for a run that did not log them."""
    seconds = [h.get("seconds") for h in history]
    if not history or not all(isinstance(s, int | float) and s > 0 for s in seconds):
        return "-", "-"
    tokens = history[-1].get("tokens_seen", 0) - history[0].get("tokens_seen", 0) + tokens_per_step
    return format_duration(sum(seconds)), f"{tokens / sum(seconds):,.0f}"


def _memory(phase: dict) -> str:
    planned = (phase.get("memory") or {}).get("estimated_gib")
    measured = [h["peak_memory_gib"] for h in phase["history"] if isinstance(h.get("peak_memory_gib"), int | float)]
    planned_text = f"{planned:.1f}" if isinstance(planned, int | float) else "-"
    return f"{planned_text} / {max(measured):.1f} GiB" if measured else f"{planned_text} / - GiB"


def _loss_trend(losses: list[float]) -> str:
    """Mean loss over the first and the last tenth of a phase's steps (one step's loss is noisy)."""
    if not losses:
        return "-"
    if len(losses) == 1:
        return f"{losses[0]:.3f} (one step: no trend)"
    tenth = max(1, len(losses) // 10)
    first, last = sum(losses[:tenth]) / tenth, sum(losses[-tenth:]) / tenth
    verdict = " <span class='ok'>fell</span>" if last < first else " <span class='bad'>did not fall</span>"
    return f"{first:.3f} &rarr; {last:.3f}{verdict}"


def _curves(phases: list[dict]) -> str:
    """Loss and learning rate over the run's tokens, every phase on one axis, its start marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [p for p in phases if p["history"]]
    if not done:
        return "<h2>Loss and learning rate</h2><p class='muted'>No phase has ended yet.</p>"
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 5.2), sharex=True)
    for p, (start, xs) in zip(done, curve_positions(done), strict=True):
        losses = [h["loss"] for h in p["history"]]
        marker = "o" if len(xs) == 1 else None  # a one-step phase is a point, not an invisible line
        (line,) = top.plot(xs, losses, alpha=0.35, lw=0.8, marker=marker, ms=3)
        smooth = _moving_mean(losses, max(1, len(losses) // 10))  # the trend under each step's noise
        label = f"{p['name']} ({int(p.get('max_seq_length') or 0):,})"
        top.plot(xs, smooth, color=line.get_color(), label=label, marker=marker, ms=4)
        bottom.plot(xs, [h.get("learning_rate", 0.0) for h in p["history"]], marker=marker, ms=3)
        for axis in (top, bottom):
            axis.axvline(start, color="#889", lw=0.8, ls="--")
    top.set_ylabel("loss")
    bottom.set_ylabel("learning rate")
    bottom.set_xlabel("tokens trained")
    top.legend(fontsize=8)
    fig.tight_layout()
    return (
        "<h2>Loss and learning rate</h2><p>Every phase on one axis of tokens; a dashed line marks where a "
        "phase starts (and its learning rate warms up again); the pale line is each step's loss, the strong one "
        "its mean over a tenth of the phase.</p>" + _figure(fig, "loss and learning rate")
    )


def curve_positions(phases: list[dict]) -> list[tuple[int, list[int]]]:
    """Per phase with a history: where it starts on the run's token axis and each logged step's position.
    ``tokens_seen`` already counts the whole run, so a phase starts where the one before it ended."""
    out, start = [], 0
    for p in phases:
        xs = [int(h.get("tokens_seen") or 0) for h in p["history"]]
        out.append((start, xs))
        start = xs[-1] if xs else start
    return out


def _moving_mean(values: list[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value - (values[i - window] if i >= window else 0.0)
        out.append(total / min(i + 1, window))
    return out


def _warnings(run_dir: Path) -> str:
    try:
        lines = (run_dir / "train.log").read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    warned = [line for line in lines if " WARNING" in line or "divergence" in line.lower()][:50]
    if not warned:
        return "<h2>Warnings</h2><p class='ok'>None in train.log.</p>"
    return "<h2>Warnings</h2><pre>" + html.escape("\n".join(warned)) + "</pre>"


def _phase_heatmaps(phases: list[dict]) -> str:
    pictures = [(p["name"], p["folder"] / "needle_heatmap.png") for p in phases]
    shown = [f"<h3>{html.escape(name)}</h3>{_png(path, name)}" for name, path in pictures if path.is_file()]
    if not shown:
        return ""
    return (
        "<h2>Needles at the end of each phase</h2><p>Where in a document of each length the model found a "
        "planted fact (rows: how deep in the document; columns: how long it is).</p>" + "".join(shown)
    )


def _evaluation(folder: Path) -> str:
    results = read_json(folder / "results.json")
    if not results:
        return f"<h2>Evaluation {html.escape(folder.name)}</h2><p class='bad'>No results.json in this folder.</p>"
    parts = [f"<h2>Evaluation: {html.escape(folder.name)}</h2>"]
    parts += [f"<h3>{html.escape(p.stem)}</h3>{_png(p, p.stem)}" for p in sorted(folder.glob("*.png"))]
    asked = [
        (str(m.get("name", index)), m["qa"])
        for index, m in enumerate(results.get("models") or [])
        if isinstance(m, dict) and isinstance(m.get("qa"), dict) and m["qa"].get("items")
    ]
    if asked:
        parts.append(_qa_accuracy(asked))
        parts.append(_qa_paired(results.get("qa_paired")))
        if _same_questions([qa for _, qa in asked]):
            parts.append(_qa_table(f"qa-{folder.name}", asked))
        else:  # other question sets (another --qa per model): a table each
            parts += [_qa_table(f"qa-{folder.name}-{i}", [one]) for i, one in enumerate(asked)]
    return "".join(parts)


def _same_questions(scores: list[dict]) -> bool:
    def key(item: dict) -> tuple:
        return item.get("question"), item.get("reference"), item.get("length"), item.get("depth")

    first = [key(i) for i in scores[0]["items"]]
    return all([key(i) for i in qa["items"]] == first for qa in scores[1:])


def _qa_accuracy(asked: list[tuple[str, dict]]) -> str:
    """Each model's share of answers holding the reference, by context length, with the 95% interval
    where the evaluation gives one: where along the lengths a model stops finding things."""
    lengths = sorted({int(n) for _, qa in asked for n in (qa.get("contains_by_length") or {})})
    rows = []
    for name, qa in asked:
        cells = []
        for n in lengths:
            share = (qa.get("contains_by_length") or {}).get(str(n))
            low, high = ((qa.get("contains_interval_by_length") or {}).get(str(n)) or [None, None])[:2]
            count = (qa.get("n_by_length") or {}).get(str(n))
            interval = f" [{low:.0%}, {high:.0%}]" if isinstance(low, float) and isinstance(high, float) else ""
            cells.append("-" if share is None else f"{share:.0%}{interval}" + (f", n={count}" if count else ""))
        rows.append((name, *cells, f"{qa.get('contains', 0):.0%} of {len(qa['items'])}"))
    header = ["model", *(f"{n:,} tokens" for n in lengths), "all"]
    return (
        "<h3>Answers holding the reference, by context length</h3>"
        + _table(header, rows)
        + "<p class='muted'>[low, high]: 95% interval of the share; a few questions give a wide one.</p>"
    )


def _qa_paired(paired) -> str:
    """The paired differences ``fathom eval`` computed (results.json's ``qa_paired``) as a table."""
    rows = [(d.get("model"), d.get("against"), _points(d, 1)) for d in paired or [] if _points(d, 1)]
    if not rows:
        return ""
    return (
        "<h3>One model against another, on the same questions</h3>"
        + _table(["model", "minus", "points [95% interval]"], rows)
        + "<p class='muted'>Paired: each question counts for both models, so the interval is narrower than the "
        "two models' own; one that spans 0 is no clear difference.</p>"
    )


def _qa_table(table_id: str, asked: list[tuple[str, dict]]) -> str:
    """Every question, its reference and each model's answer side by side, filterable by context length and
    by a model's answers being right or wrong (or the models disagreeing); ``#length=N&answers=0:no`` in
    the page's address opens it filtered."""
    table_id = "".join(c if c.isalnum() else "-" for c in table_id)
    items = [[i if isinstance(i, dict) else {} for i in qa["items"]] for _, qa in asked]
    lengths = sorted({int(i.get("length") or 0) for i in items[0]})
    options = "".join(f"<option value='{n}'>{n:,} tokens</option>" for n in lengths)
    answers = "".join(
        f"<option value='{m}:yes'>{html.escape(name)} right</option><option value='{m}:no'>{html.escape(name)} "
        "wrong</option>"
        for m, (name, _) in enumerate(asked)
    ) + ("<option value='differ'>the models disagree</option>" if len(asked) > 1 else "")
    rows = "".join(_qa_row([column[r] for column in items]) for r in range(len(items[0])))
    columns = "".join(f"<th>{html.escape(name)}</th>" for name, _ in asked)
    return (
        f"<h3>Questions and answers: {', '.join(html.escape(name) for name, _ in asked)}</h3>"
        f"<div class='filters'>length <select id='{table_id}-length' onchange=\"filterQA('{table_id}')\">"
        f"<option value='all'>all</option>{options}</select> answers <select id='{table_id}-answers' "
        f"onchange=\"filterQA('{table_id}')\"><option value='all'>all</option>{answers}</select>"
        f"<span id='{table_id}-count' class='muted'>{len(items[0])} shown</span></div>"
        f"<table class='qa' id='{table_id}'><thead><tr><th>context</th><th>depth</th><th>question</th>"
        f"<th>reference</th>{columns}</tr></thead><tbody>{rows}</tbody></table>"
    )


def _qa_row(answers: list[dict]) -> str:
    """One question's row: its context, depth, question and reference, then each model's answer marked."""
    first = answers[0]
    right = ",".join("yes" if a.get("contains") else "no" for a in answers)
    cells = "".join(
        f"<td class='{'ok' if a.get('contains') else 'bad'}'>{'&#10003;' if a.get('contains') else '&#10007;'} "
        f"<span style='font-weight:normal;color:#1b2733'>{html.escape(str(a.get('answer', '')))}</span></td>"
        for a in answers
    )
    depth = first.get("depth")  # a bin ("40-60%") as fathom eval writes it, or a share
    depth = f"{depth:.0%}" if isinstance(depth, float) else html.escape(str(depth)) if depth else "-"
    return (
        f"<tr data-length='{int(first.get('length') or 0)}' data-right='{right}'>"
        f"<td>{int(first.get('length') or 0):,}</td><td>{depth}</td>"
        f"<td>{html.escape(str(first.get('question', '')))}</td><td>{html.escape(str(first.get('reference', '')))}"
        f"</td>{cells}</tr>"
    )


def _how_to_use(run_dir: Path, config: dict) -> str:
    finals = sorted(p.name for p in run_dir.glob("final_*_model") if p.is_dir())
    if not finals:
        return "<h2>Using the result</h2><p class='muted'>No final model yet.</p>"
    final = finals[-1]
    base = (config.get("model") or {}).get("name_or_path", "BASE")
    commands = "\n".join(
        [
            f"fathom generate --adapter {run_dir.name}/{final} --file DOCUMENT --prompt 'QUESTION'",
            f"fathom eval --adapter {run_dir.name}/{final} --qa questions.jsonl --out eval",
            f"fathom merge --adapter {run_dir.name}/{final} --out merged",
            f"fathom serve {run_dir.name}/{final}      # the vLLM, llama.cpp and Ollama commands",
            f"fathom push --adapter {run_dir.name}/{final} --repo ORG/NAME",
        ]
    )
    return (
        f"<h2>Using the result</h2><p>The final adapter is <code>{html.escape(final)}</code> over "
        f"<code>{html.escape(str(base))}</code>.</p><pre>{html.escape(commands)}</pre>"
    )


# ---------------------------------------------------------------------------------------------------
# HTML pieces


def _table(header: list[str] | None, rows: list[tuple], escape: bool = True) -> str:
    cell = (lambda v: html.escape(str(v))) if escape else str
    head = "<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr></thead>" if header else ""
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table>{head}<tbody>{body}</tbody></table>"


def _figure(fig, alt: str) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return _img(buffer.getvalue(), alt)


def _png(path: Path, alt: str) -> str:
    try:
        return _img(path.read_bytes(), alt)
    except OSError:
        return ""


def _img(data: bytes, alt: str) -> str:
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{base64.b64encode(data).decode()}'>"
