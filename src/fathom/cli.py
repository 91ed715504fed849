"""The ``fathom`` command line: parses, calls one library function per command, prints the result.

=============  ===================================================================  ==========================
command        what it does                                                         library
=============  ===================================================================  ==========================
train          train the LoRA adapter through the phases (``--resume`` continues)  fathom.train.loop
plan           phases, rows, steps, RoPE, length mix, memory and time per device   fathom.reports.plan
prepare        read, clean and tokenize the corpus into the token cache            fathom.reports.corpus
data show      one file's text exactly as it enters the token cache                fathom.reports.corpus
data stats     files, skips, documents, tokens, lengths, per-phase mix             fathom.reports.corpus
qa build       long-document QA records from the corpus (answer at a known depth)  fathom.reports.qa
config         the resolved config, every field with its help text                fathom.config
generate       read a long document, stream the continuation or answer            fathom.eval.generate
eval           needles, perplexity by position, long-document QA, RULER           fathom.eval.command
merge          fold an adapter into its base: one transformers folder              fathom.model.merge
runs           where runs are (phase, step, tokens, ETA), read from status.json    fathom.reports.runs
report         one self-contained HTML page of a run and its evaluations          fathom.reports.html
push           an adapter or merged folder to the Hub, with a model card           fathom.export.hub
serve-args     vLLM / llama.cpp / Ollama commands keeping the RoPE setting         fathom.export.serve
export         a merged folder as GGUF, its RoPE metadata checked                  fathom.export.gguf
demo-corpus    write the demo's synthetic documents into a new folder             fathom.demo.corpus
=============  ===================================================================  ==========================

The options of each are in :mod:`fathom.cli_parser`; what a command shows is rendered by
:mod:`fathom.reports`, so this module only maps parsed options onto library calls.
The config commands take ``--config FILE`` plus ``section.field=value`` overrides (values read as
YAML); without ``--config`` the built-in demo config is used (SmolLM2-135M-Instruct on a synthetic
maritime corpus, or on ``data.paths=[...]``). Every user error is one ``fathom: error:`` line per
problem (:func:`run_guarded`).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from pathlib import Path

from fathom.cli_parser import build_parser
from fathom.config import ConfigError, FathomConfig, config_to_yaml, load_config
from fathom.errors import raise_problems, system_failure
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
    from fathom.reports import table_console
    from fathom.reports.plan import plan_report, print_plan
    from fathom.train.simulate import add_simulation

    config = _resolve_config(args)
    summary = plan_report(config, args.world_size, [args.gpu] if args.gpu else None, args.cache)
    if args.simulate:
        add_simulation(config, summary, args.world_size, args.gpu)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print_plan(table_console(), summary, detail_gpu=bool(args.gpu))
    return 0


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
    from fathom.reports.corpus import prepare_configured_corpus

    cache = prepare_configured_corpus(_resolve_config(args), verify=args.verify)
    logger.info("token cache ready: %s", cache.folder)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from fathom.reports.html import write_report

    page = write_report(args.run, args.eval, args.out)
    print(f"wrote {page} ({page.stat().st_size / 2**20:.1f} MB): open it in a browser")
    return 0


def _cmd_data_show(args: argparse.Namespace) -> int:
    from fathom.reports.corpus import data_show, print_data_show

    shown = data_show(_resolve_config(args), args.file)
    if args.json:
        print(json.dumps(shown, indent=2, ensure_ascii=False))
        return 0
    return print_data_show(shown)


def _cmd_data_stats(args: argparse.Namespace) -> int:
    from fathom.reports import table_console
    from fathom.reports.corpus import configured_instructions, data_stats, prepare_configured_corpus, print_data_stats

    config = _resolve_config(args)
    stats = data_stats(config, prepare_configured_corpus(config), configured_instructions(config))
    if args.json:
        print(json.dumps(stats, indent=2))
    else:
        print_data_stats(table_console(), stats)
    return 0


def _cmd_qa_build(args: argparse.Namespace) -> int:
    from fathom.reports.qa import build_qa_file, qa_summary_lines

    lengths = None
    if args.lengths:
        try:
            lengths = [int(x) for x in args.lengths.split(",") if x.strip()]
        except ValueError:
            raise ConfigError(f"--lengths: {args.lengths!r} is not a comma-separated list of token counts") from None
    teacher = None
    if args.teacher_url or args.teacher_model:
        from fathom.data.teacher import Teacher

        options = ("url", "model", "api_key_env", "pairs", "max_tokens", "concurrency", "per_document")
        url, model, key, pairs, most, concurrency, per_document = (vars(args)[f"teacher_{o}"] for o in options)
        teacher = Teacher(url, model, key, pairs, most, concurrency, per_document=per_document)
    config = _resolve_config(args)
    options = (args.per_document, args.held_out, args.seed, teacher, args.answer_chars)
    summary = build_qa_file(config, args.out, lengths, *options)
    for line in qa_summary_lines(summary, args.teacher_model, args.held_out):
        logger.info("%s", line)
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
    from fathom.eval.qa import qa_summary_lines
    from fathom.eval.runner import write_report
    from fathom.reports.html import write_eval_page

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
    for line in qa_summary_lines(results):
        logger.info("%s", line)
    logger.info("report: %s and %s (a page to open in a browser)", report, write_eval_page(args.out))
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    config = _resolve_config(args)
    sys.stdout.write(config_to_yaml(config, with_help=True))
    return 0


def _cmd_runs(args: argparse.Namespace) -> int:
    from fathom.reports.runs import describe
    from fathom.train.progress import find_runs

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


COMMANDS = {
    "train": _cmd_train,
    "plan": _cmd_plan,
    "prepare": _cmd_prepare,
    "data show": _cmd_data_show,
    "data stats": _cmd_data_stats,
    "qa build": _cmd_qa_build,
    "config": _cmd_config,
    "generate": _cmd_generate,
    "eval": _cmd_eval,
    "merge": _cmd_merge,
    "runs": _cmd_runs,
    "report": _cmd_report,
    "push": _cmd_push,
    "serve-args": _cmd_serve_args,
    "export": _cmd_export,
    "demo-corpus": _cmd_demo_corpus,
}  # the words after ``fathom`` -> what runs them (cli_parser sets ``handler``)


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
    return run_guarded(lambda: COMMANDS[args.handler](_with_base(args)), args.verbose)


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
        message = system_failure(exc)
        if message is None:
            raise  # a bug is not dressed up as a user error
        failure, code = exc, EXIT_SYSTEM
    if verbose:
        import traceback

        traceback.print_exception(failure)
    _print_error(message)
    return code


def _print_error(message: str) -> None:
    for line in message.splitlines() or ["failed"]:
        print(f"fathom: error: {line}", file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
