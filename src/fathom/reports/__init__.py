"""What ``fathom plan``, ``prepare`` and ``data stats`` compute, as JSON-ready objects (the CLI only renders them).

:func:`plan_report` is the phase plan plus, where they can be had without the network or a model,
each phase's RoPE, its length mix (once the corpus is prepared), and memory and time per
hardware. :func:`data_stats` is what the token cache holds and how each phase draws from it.
"""

from __future__ import annotations

from pathlib import Path

from fathom.config import ConfigError, FathomConfig
from fathom.data.mix import mix_for
from fathom.schedule import PhasePlan, plan_phases, plan_summary

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
    """Rows one pass over Phase 2's examples packs into, read from the data; or None and why not."""
    if config.sft is None or config.sft.total_tokens is not None:
        return None, None
    from fathom.data.ingest import expand_paths
    from fathom.data.instruct import prepare_instructions

    tokenizer = _local_tokenizer(config)
    if tokenizer is None:
        return None, "Phase 2's budget comes from its data: set sft.total_tokens, or plan with a local model folder"
    try:
        expand_paths([*config.sft.paths, *config.sft.short_instruction_paths])
        examples = prepare_instructions(config.sft, tokenizer, config.train.seed, len(config.phases()))
    except (FileNotFoundError, ConfigError) as exc:
        return None, f"Phase 2's budget comes from its data, which cannot be read: {exc}"
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


def prepare_configured_corpus(config: FathomConfig, verify: bool = False):
    """The token cache of ``config``'s documents (built on first use) with its model's tokenizer (no weights);
    ``verify`` checks the checksums of a reused one."""
    from fathom.data.cache import prepare_corpus, require_training_documents
    from fathom.data.eod import resolve_eod_token_id
    from fathom.model.load import load_configured_tokenizer

    tokenizer = load_configured_tokenizer(config.model)
    cache = prepare_corpus(config, tokenizer, resolve_eod_token_id(tokenizer, config.data.eod_token), verify=verify)
    require_training_documents(cache, config.data.paths)  # a corpus with nothing usable fails as train does
    return cache


def configured_instructions(config: FathomConfig):
    """Phase 2's instruction examples (rendered with the model's tokenizer), or None without an sft section."""
    if config.sft is None:
        return None
    from fathom.data.instruct import prepare_instructions
    from fathom.model.load import load_configured_tokenizer

    tokenizer = load_configured_tokenizer(config.model)
    return prepare_instructions(config.sft, tokenizer, config.train.seed, len(config.phases()))


def instruction_stats(examples) -> dict:
    """The ``sft`` object of ``data stats``: examples by format, skips by reason, tokens, cuts, lengths."""
    from fathom.data.cache import length_histogram

    report = examples.report
    return {
        "examples": len(examples.examples),
        "by_format": report.by_format,
        "skipped_by_reason": report.skipped_by_reason | report.ingest.reasons(),
        "prompt_tokens": sum(e.prompt_tokens for e in examples.examples),
        "supervised_tokens": sum(e.supervised_tokens for e in examples.examples),
        "truncated": report.truncated,
        "rows_per_epoch": examples.rows_per_epoch,
        "long_share": round(examples.mix.long_share, 4),
        "length_histogram": length_histogram(examples.lengths()),
    }


def data_show(config: FathomConfig, path: Path) -> dict:
    """``fathom data show FILE``: one file as it enters the token cache, with the configured model's
    tokenizer and cleaning settings (:func:`fathom.data.cache.document_as_cached`)."""
    from fathom.data.cache import CleaningSettings, document_as_cached
    from fathom.model.load import load_configured_tokenizer

    if not Path(path).is_file():
        raise ConfigError(f"FILE: {path} is not a file; give one file of your corpus")
    return document_as_cached(path, CleaningSettings.from_config(config), load_configured_tokenizer(config.model))


def data_stats(config: FathomConfig, cache, examples=None) -> dict:
    """What ``fathom data stats`` reports, as one JSON-ready object (``examples``: Phase 2's, when any)."""
    meta = cache.meta
    train = cache.train_documents()
    lengths = train.lengths
    phases = []
    for phase_cfg, plan in zip(config.phases(), plan_phases(config), strict=False):  # Phase 1's
        mix = mix_for(phase_cfg, lengths)
        phases.append(
            {
                "name": plan.name,
                "max_seq_length": plan.max_seq_length,
                "rows": plan.rows,
                "tokens": plan.trained_tokens,
                "padding_fraction": 0.0,  # rows are packed to exactly max_seq_length
                "long_threshold": mix.long_threshold,
                "long_documents": mix.long_documents,
                "natural_long_share": round(mix.natural_long_share, 4),
                "long_share": round(mix.long_share, 4),
                "long_weight": round(mix.long_weight, 4),
                "short_weight": round(mix.short_weight, 4),
                "passes_over_corpus": round(mix.passes(plan.trained_tokens), 3),
            }
        )
    return {
        "cache": str(cache.folder),
        "sources": meta["sources"],
        "files_read": meta["files_read"],
        "skipped": len(meta["skipped"]),
        "skipped_by_reason": meta["skipped_by_reason"],
        "skipped_files": meta["skipped"],
        "pdf": meta.get("pdf") or {},
        "lowest_confidence": meta.get("lowest_confidence") or [],
        "documents": meta["documents"],
        "tokens": meta["tokens"],
        "train_documents": len(train),
        "train_tokens": int(lengths.sum()),
        "held_out_documents": meta["held_out_documents"],
        "duplicates_removed": meta["duplicates_removed"],
        "length_histogram": cache.length_histogram("train"),
        "phases": phases,
    } | ({"sft": instruction_stats(examples)} if examples is not None else {})


def build_qa_file(
    config: FathomConfig,
    out: Path,
    lengths: list[int] | None = None,
    per_document: int = 2,
    held_out: bool = False,
    seed: int = 0,
    teacher=None,
    teacher_per_document: int = 2,
) -> dict:
    """``fathom qa build``: document-QA records from the run's corpus (its held-out part with ``held_out``).

    Lengths default to a quarter, half and all but 128 tokens of Phase 2's row (or the last phase's).
    With ``teacher`` (a :class:`fathom.data.teacher.Teacher`), ``teacher_per_document`` passages of
    each document are also asked of it and its grounded pairs added. Returns a summary (records, by
    kind, by length, the teacher's report); ``out`` is written whole or not at all, never overwritten.
    """
    import json

    from fathom.data.qa import build_records
    from fathom.fsutil import atomic_write_text

    if out.exists():
        raise ConfigError(f"--out: {out} already exists; choose a new file (nothing was changed)")
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

        more_facts, teacher_report = teacher_facts(texts, teacher, teacher_per_document, seed)
    records = build_records(texts, tokenizer, lengths, per_document, seed, more_facts)
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
