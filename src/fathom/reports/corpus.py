"""``fathom prepare``, ``data show`` and ``data stats``: the configured corpus in the token cache, one file as
it enters it, and what the cache holds and how each phase draws from it, as JSON-ready objects and their
text (:func:`print_data_show`, :func:`print_data_stats`)."""

from __future__ import annotations

from pathlib import Path

from fathom.config import ConfigError, FathomConfig
from fathom.data.mix import mix_for
from fathom.schedule import plan_phases, schedule_concerns


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
        "concerns": schedule_concerns(config, plan_phases(config), lengths),
    } | ({"sft": instruction_stats(examples)} if examples is not None else {})


def print_data_show(shown: dict) -> int:
    """Each document of ``data_show``'s object as it enters the cache, what reading did and what was skipped;
    returns the exit code (1: nothing of the file would be trained on)."""
    for doc in shown["documents"]:
        print(f"=== {doc['where']}: {doc['tokens']:,} tokens (with the end-of-document token) ===")
        print(doc["text"])
    done = ", ".join(f"{k.replace('_', ' ')} {n:,}" for k, n in shown["pdf"].items())
    print(f"--- {len(shown['documents'])} document(s)" + (f"; PDF: {done}" if done else ""))
    for source, reason in shown["skipped"]:
        print(f"skipped {source}: {reason}")
    return 0 if shown["documents"] else 1


def print_data_stats(console, stats: dict) -> None:
    """``data_stats``'s object as text: the corpus, PDF signals, skips, lengths, a table per phase, Phase 2."""
    console.print(
        f"{stats['documents']:,} documents, {stats['tokens']:,} tokens from {stats['files_read']:,} of "
        f"{stats['sources']:,} sources; {stats['held_out_documents']:,} held out for evaluation; duplicates removed: "
        f"{stats['duplicates_removed']['exact']:,} exact, {stats['duplicates_removed']['near']:,} near"
    )
    if stats["pdf"]:
        console.print("PDFs: " + ", ".join(f"{k.replace('_', ' ')} {n:,}" for k, n in stats["pdf"].items()))
        lowest = ", ".join(f"{source} ({share:.0%})" for source, share in stats["lowest_confidence"][:5])
        console.print(f"PDFs whose text reads least as words (check with fathom data show): {lowest}", markup=False)
    if stats["skipped"]:
        console.print("skipped: " + ", ".join(f"{n} {r}" for r, n in stats["skipped_by_reason"].items()))
        for source, reason in stats["skipped_files"][:50]:
            console.print(f"  {source}: {reason}", markup=False)
    console.print(
        "training documents by length: "
        + ", ".join(f"{label} tokens: {n:,}" for label, n in stats["length_histogram"].items())
    )
    console.print(_phase_table(stats["phases"]))
    for concern in stats["concerns"]:
        console.print(f"warning: {concern}", markup=False)
    if "sft" in stats:
        sft = stats["sft"]
        console.print(
            f"Phase 2: {sft['examples']:,} instruction examples ("
            + ", ".join(f"{n:,} {kind}" for kind, n in sft["by_format"].items())
            + f"), {sft['prompt_tokens']:,} prompt and {sft['supervised_tokens']:,} supervised tokens, "
            f"{sft['truncated']:,} cut to fit, {sft['rows_per_epoch']:,} rows per pass; by length: "
            + ", ".join(f"{label}: {n:,}" for label, n in sft["length_histogram"].items())
        )
        if sft["skipped_by_reason"]:
            console.print("  skipped: " + ", ".join(f"{n} {r}" for r, n in sft["skipped_by_reason"].items()))


def _phase_table(phases: list[dict]):
    from rich.table import Table

    table = Table(title="per phase")
    columns = ("phase", "max_seq_length", "rows", "tokens", "padding", "long docs (>= half a row)",
               "long share natural -> trained", "passes")  # fmt: skip
    for column in columns:
        table.add_column(column, no_wrap=True)
    for p in phases:
        table.add_row(
            p["name"],
            f"{p['max_seq_length']:,}",
            f"{p['rows']:,}",
            f"{p['tokens']:,}",
            f"{p['padding_fraction']:.0%}",
            f"{p['long_documents']:,} (>= {p['long_threshold']:,})",
            f"{p['natural_long_share']:.0%} -> {p['long_share']:.0%}",
            f"{p['passes_over_corpus']:.2f}",
        )
    return table
