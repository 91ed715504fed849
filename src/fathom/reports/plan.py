"""``fathom plan``: the phase plan with RoPE, length mix, memory and time per hardware, as one JSON-ready
object (:func:`plan_report`), and its text (:func:`print_plan`).

The memory and time come from :mod:`fathom.estimate` and, with ``--simulate``, from running each
phase's step on fake tensors (:func:`fathom.train.simulate.add_simulation`); nothing here reaches for
the network or reads weights.
"""

from __future__ import annotations

from pathlib import Path

from fathom.config import ConfigError, FathomConfig
from fathom.data.mix import mix_for
from fathom.schedule import PhasePlan, plan_phases, plan_summary, schedule_concerns

MIX_HINT = "length mix per phase: shown once the corpus is prepared (fathom prepare --config ...)"


def plan_report(
    config: FathomConfig, world_size: int = 1, hardware_keys: list[str] | None = None, cache: Path | None = None
) -> dict:
    """``plan_summary`` plus ``hardware`` / ``model_shape`` (or ``hardware_note``), per-phase ``rope`` and
    ``length_mix`` (or ``length_mix_note``). The document lengths come from ``cache`` (a token cache folder
    ``fathom prepare`` wrote) or from the config's own prepared corpus; they set the mix and the time."""
    from fathom.estimate import hardware_choices, plan_hardware

    unknown = [k for k in hardware_keys or [] if k not in hardware_choices()]
    if unknown:
        import difflib

        close = difflib.get_close_matches(unknown[0], hardware_choices(), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"--gpu: unknown hardware '{unknown[0]}'{hint}; choose from {', '.join(hardware_choices())}")
    sft_rows, sft_note = sft_rows_per_epoch(config)
    summary = plan_summary(config, world_size, sft_rows)
    if sft_note:
        summary["sft_note"] = sft_note
    lengths = cache_lengths(cache) if cache is not None else prepared_lengths(config)
    try:
        hardware = plan_hardware(config, hardware_keys, sft_rows, world_size, lengths)
        summary["hardware"], summary["model_shape"] = hardware["hardware"], hardware["model_shape"]
    except ValueError as exc:  # the model's config cannot be read (offline, unknown id)
        summary["hardware_note"] = str(exc)
    plans = plan_phases(config, world_size, sft_rows)
    for phase, rope in zip(summary["phases"], phase_rope_report(config, plans) or [None] * len(plans), strict=True):
        if rope is not None:
            phase["rope"] = rope
    if lengths is None:
        summary["length_mix_note"] = MIX_HINT
    else:
        for phase_cfg, phase in zip(config.phases(), summary["phases"], strict=False):  # Phase 2 mixes examples
            phase["length_mix"] = mix_for(phase_cfg, lengths).to_dict()
        summary["concerns"] = schedule_concerns(config, plans, lengths)
    return summary


def _local_tokenizer(config: FathomConfig):
    """The configured model's tokenizer when it is on this machine (a folder or the demo's), else None."""
    from fathom.model.load import load_tokenizer
    from fathom.model.sources import SMOLLM2_ALIAS, resolve_model_source

    name = config.model.name_or_path
    if not (Path(name).exists() or name == SMOLLM2_ALIAS):
        return None  # a Hub id: do not reach for the network just to plan
    try:
        return load_tokenizer(resolve_model_source(name), config.model)
    except (OSError, ValueError, ImportError):
        return None


def sft_rows_per_epoch(config: FathomConfig) -> tuple[int | None, str | None]:
    """Rows one pass over Phase 2's examples packs into, read from the data; or None and why not.

    Read with ``sft.total_tokens`` set too, for the passes that budget makes (the note under the table);
    a budget in tokens needs no data to plan, so there a failure to read is not said here."""
    if config.sft is None:
        return None, None
    from fathom.data.instruct import prepare_instructions
    from fathom.data.sources import expand_paths

    by_tokens = config.sft.total_tokens is not None
    tokenizer = _local_tokenizer(config)
    if tokenizer is None:
        why = "Phase 2's budget comes from its data: set sft.total_tokens, or plan with a local model folder"
        return None, None if by_tokens else why
    try:
        expand_paths([*config.sft.paths, *config.sft.short_instruction_paths])
        examples = prepare_instructions(config.sft, tokenizer, config.train.seed, len(config.phases()))
    except (FileNotFoundError, ConfigError) as exc:
        return None, None if by_tokens else f"Phase 2's budget comes from its data, which cannot be read: {exc}"
    return examples.rows_per_epoch, None


def phase_rope_report(config: FathomConfig, plans: list[PhasePlan]) -> list[dict] | None:
    """Each phase's RoPE (model.rope_* and per-phase overrides resolved against the model's own), or None
    when the model's config cannot be read."""
    from fathom.estimate import native_rope
    from fathom.model.rope import phase_ropes

    m = config.model
    native = native_rope(m.name_or_path, m.revision, m.trust_remote_code, m.native_context)
    if native is None:
        return None
    out = []
    for plan, (setting, why) in zip(plans, phase_ropes(native, m, config.phase_configs(), plans), strict=True):
        rope = setting.to_dict() | {"description": setting.describe(), "why": why}
        if not setting.covers(plan.max_seq_length):
            rope["description"] += f" (! {plan.max_seq_length:,} > trained window {setting.window:,})"
        out.append(rope)
    return out


def cache_lengths(folder: Path):
    """Token counts of the training documents of the token cache in ``folder`` (``fathom prepare``'s)."""
    from fathom.data.cache import CorpusCache

    if not (Path(folder) / "meta.json").is_file():
        raise ConfigError(
            f"--cache: {folder} is not a fathom token cache (no meta.json); give a folder fathom prepare wrote"
        )
    return CorpusCache(Path(folder)).train_documents().lengths


def prepared_lengths(config: FathomConfig):
    """Token counts of the training documents when the corpus is already in the token cache, else None.

    Never reaches for the network (a Hub model id gives None) and never builds the cache.
    """
    from fathom.data.cache import find_corpus
    from fathom.data.eod import resolve_eod_token_id

    tokenizer = _local_tokenizer(config)
    if tokenizer is None:
        return None
    try:
        cache = find_corpus(config, tokenizer, resolve_eod_token_id(tokenizer, config.data.eod_token))
    except (OSError, ValueError, ImportError):
        return None
    return None if cache is None else cache.train_documents().lengths


def print_plan(console, summary: dict, detail_gpu: bool = False) -> None:
    """The plan's text: the phase table, how a step's tokens are counted, the length mix, the simulated
    step (when ``summary`` holds one), and memory and time: one hardware in detail or a table of all."""
    console.print(_phase_table(summary))
    console.print(
        f"tokens per step = max_seq_length x micro_batch_size {summary['micro_batch_size']} x "
        f"gradient_accumulation_steps {summary['gradient_accumulation_steps']} x world size {summary['world_size']}"
    )
    for line in _plan_notes(summary):
        console.print(line, markup=False)
    if "simulation_note" in summary:
        print_simulation(console, summary)
    if "hardware" not in summary:
        console.print(f"memory and time estimates unavailable: {summary['hardware_note']}", markup=False)
    elif detail_gpu:
        print_hardware_detail(console, summary["hardware"][0])
    else:
        print_hardware_table(console, summary["hardware"], [p["name"] for p in summary["phases"]])


def _phase_table(summary: dict):
    from rich.table import Table

    finals = [summary[k] for k in ("final_model_dir", "final_instruct_model_dir") if summary.get(k)]
    table = Table(title=f"fathom plan: {summary['model']} -> {summary['output_dir']}/{' + '.join(finals)}")
    for column in ["phase", "max_seq_length", "tokens", "share", "rows", "tokens / step", "steps", "RoPE"]:
        table.add_column(column, justify="left" if column in ("phase", "RoPE") else "right", no_wrap=True)
    for p in summary["phases"]:
        sft = p["kind"] == "sft"
        table.add_row(
            p["name"],
            f"{p['max_seq_length']:,}",
            f"{p['tokens']:,}" if p["tokens"] or not sft else "from data",
            "Phase 2" if sft else f"{p['tokens'] / max(summary['total_tokens'], 1):.0%}",
            f"{p['rows']:,}",
            f"{p['tokens_per_step']:,}",
            f"{p['steps']:,}",
            p["rope"]["description"] if p.get("rope") else "model's own (config unreadable)",
        )
    total = f"{sum(p['tokens'] for p in summary['phases']):,}"
    table.add_row("total", "", total, "", "", "", f"{summary['total_steps']:,}", end_section=True)
    return table


def _plan_notes(summary: dict) -> list[str]:
    """The lines under the phase table: the length mix (or why it is not known yet), Phase 2's budget
    note, and the attention span of packed rows the time estimate counts."""
    lines = (
        [summary["length_mix_note"]]
        if summary.get("length_mix_note")
        else [
            "length mix (share of tokens from documents of at least half a row): "
            + ", ".join(
                f"{p['name']} {p['length_mix']['natural_long_share']:.0%} -> {p['length_mix']['long_share']:.0%}"
                for p in summary["phases"]
                if "length_mix" in p
            )
        ]
    )
    lines += [f"warning: {concern}" for concern in summary.get("concerns", [])]
    if summary.get("sft_note"):
        lines.append(summary["sft_note"])
    lines += _passes_note(summary["phases"][-1])
    spans = [(p["phase"], p["attention_span"]) for p in (summary.get("hardware") or [{}])[0].get("phases", [])]
    if any(span for _, span in spans):
        lines.append(
            "attention on the corpus's packed rows costs, per document, what a row of this many tokens does "
            "(the time counts it): " + ", ".join(f"{name} {span:,}" for name, span in spans if span)
        )
    return lines


def print_simulation(console, summary: dict) -> None:
    from rich.table import Table

    table = Table(title="simulated step (fake tensors at the real shape): live tensor bytes at the peak, GiB")
    columns = ["phase", "peak", "weights", "adapter + grads + optimizer", "activations", "backward temporaries"]
    for column in [*columns, "where", "planner (tensors)", "train.memory"]:
        table.add_column(column, no_wrap=column != "where")
    for p in summary["phases"]:
        at = p["simulated_at_peak_gib"]
        module = p["simulated_peak_module"].removesuffix(".default")
        module = module[module.find("layers.") :] if "layers." in module else module
        where = f"{p['simulated_peak_op']} in {module or 'the loss'}"  # the step module's own code: the loss
        table.add_row(
            p["name"],
            f"{p['simulated_peak_gib']:.1f}",
            f"{at['weights']:.1f}",
            f"{at['adapter'] + at['gradients'] + at['optimizer']:.1f}",
            f"{at['activations']:.1f}",
            f"{at['backward temporaries']:.1f}",
            where + (" (backward)" if p["simulated_peak_in_backward"] else ""),
            f"{p['planner_tensors_gib']:.1f}",
            (p.get("simulated_memory_setup") or {}).get("short", ""),
        )
    console.print(table)
    console.print(summary["simulation_note"])


def format_hours(hours: float) -> str:
    """A duration for people: seconds, minutes, hours or days, never '~0 h'."""
    seconds = hours * 3600
    if seconds < 60:
        return f"~{max(seconds, 1):.0f} s"
    if seconds < 3600:
        return f"~{seconds / 60:.0f} min"
    if hours < 48:
        return f"~{hours:.1f} h"
    return f"~{hours / 24:,.1f} days"


def print_hardware_table(console, rows: list[dict], phases: list[str]) -> None:
    from rich.table import Table

    table = Table(title="estimated peak memory per GPU and time per phase (details: --gpu NAME)")
    table.add_column("hardware (--gpu)", no_wrap=True)
    for name in phases:
        table.add_column(name)
    for hw in rows:
        cells = []
        for p in hw["phases"]:
            verdict = p["verdict"].replace("model.", "").replace("train.", "")
            memory = f", {p['memory']['short']}" if p.get("memory") and p["memory"]["chosen"] else ""
            cells.append(f"{p['estimated_gib']:.1f} GiB, {verdict}{memory}, {format_hours(p['hours'])}")
        table.add_row(f"{hw['label']} ({hw['key']})", *cells)
    console.print(table)
    from fathom.estimate import HARDWARE

    share = {hw.kind: f"{hw.mfu:.0%}" for hw in HARDWARE.values()}
    console.print(
        f"time at the stated utilization of each device's dense bf16 peak ({share['cuda']} NVIDIA GPUs, as measured "
        f"on an H200; {share['mps']} Apple); see fathom.estimate"
    )
    if rows and rows[0]["rate_note"]:
        console.print(f"this machine: {rows[0]['rate_note']}, training at {rows[0]['mfu']:.0%} of it")


def print_hardware_detail(console, hw: dict) -> None:
    from rich.table import Table

    from fathom.estimate import MEMORY_PARTS

    table = Table(title=f"{hw['label']}: {hw['memory_gib']:.0f} GiB, time at {hw['mfu']:.0%} of the bf16 peak")
    for column in ("phase", *MEMORY_PARTS, "total", "verdict", "train.memory", "time"):
        table.add_column(column, no_wrap=column not in ("verdict", "train.memory"))
    for p in hw["phases"]:
        table.add_row(
            p["phase"],
            *(f"{p['parts_gib'][k]:.1f}" for k in MEMORY_PARTS),
            f"{p['estimated_gib']:.1f}",
            p["verdict"] + (f" ({p['estimated_gib_with_fix']:.1f} GiB)" if p["fix"] else ""),
            p["memory"]["short"] + ("" if p["memory"]["chosen"] else ", as configured"),
            format_hours(p["hours"]),
        )
    console.print(table)
    console.print(
        "GiB; the total is the peak (checkpointed runs never hold the loss and a layer's activations together); "
        "train.memory: the layers recomputed in the backward and the speed against recomputing all of them"
    )


def _passes_note(phase: dict) -> list[str]:
    """Phase 2's passes over its examples; under one, how many tokens make one (what its gain comes from)."""
    passes = phase.get("passes_over_examples")
    if phase.get("kind") != "sft" or passes is None:
        return []
    line = f"{phase['name']}: {passes:.2g} passes over its examples ({phase['example_rows_per_pass']:,} rows a pass)"
    if passes < 1:
        line += (
            "; under one pass most examples are never trained on: sft.epochs sets passes, or "
            f"sft.total_tokens={phase['tokens_per_pass']:,} makes one (docs/benchmarks.md: Phase 2 gains from passes)"
        )
    return [line]
