"""What ``fathom eval`` does, callable from Python: check the inputs, pick defaults, run, say what was skipped.

:func:`eval_problems` finds every wrong input before a model is loaded; :func:`run_eval` builds the
haystack (``--haystack`` files, or the run's held-out documents), evaluates the base and each
adapter (needles, perplexity by position, optionally RULER) and lists in ``results["skipped"]``
what it could not run and how to get it. The report (``write_report``) shows the same list.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from fathom.errors import ConfigError, raise_problems

logger = logging.getLogger("fathom")

KINDS = ("passkey", "maritime")
RULER_TASKS = "niah_single_1,niah_multikey_2,niah_multikey_3,ruler_vt,ruler_cwe,ruler_fwe"
NO_HAYSTACK = (
    "no haystack text: pass --haystack FILES, or --config of a run whose data.eval_fraction is above 0 "
    "(its held-out documents)"
)


@dataclass
class EvalRequest:
    """The inputs of one evaluation (the command line's options, parsed)."""

    base: str
    adapters: list[str] = field(default_factory=list)
    config: Path | None = None  # a run config: its held-out documents are the haystack
    haystack: list[Path] = field(default_factory=list)
    lengths: str | None = None  # comma-separated; None: 1K doubling to the adapter's trained length
    depths: int = 10
    samples: int = 1
    kinds: str = "passkey,maritime"
    seed: int = 0
    ruler: bool = False
    ruler_tasks: str = RULER_TASKS
    rope: str | None = None
    qa: Path | None = None  # document-QA .jsonl (fathom qa build --held-out) asked of every model
    qa_template: str | None = None  # None: the prompt the Phase-2 adapters were taught (else the default)
    qa_limit: int = 0  # ask at most this many questions (0: all)

    def kind_list(self) -> list[str]:
        """Needle kinds; 'none' runs no needles (e.g. QA only)."""
        return [k.strip() for k in self.kinds.split(",") if k.strip() and k.strip() != "none"]


def _parse_lengths(text: str) -> list[int] | None:
    try:
        lengths = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        return None
    return lengths if lengths and all(n > 0 for n in lengths) else None


def eval_problems(request: EvalRequest) -> list[str]:
    """Every problem with ``request`` found without loading a model (one line each)."""
    from fathom.model.adapter import adapter_problem
    from fathom.model.sources import base_problem

    problems = [base_problem(request.base)]
    problems += [adapter_problem(a) for a in request.adapters]
    problems += [f"--haystack: {p} does not exist" for p in request.haystack if not Path(p).exists()]
    if request.config is not None and not Path(request.config).is_file():
        problems.append(f"--config: file {request.config} does not exist")
    if request.lengths is not None and _parse_lengths(request.lengths) is None:
        problems.append(f"--lengths: {request.lengths!r} is not a comma-separated list of positive token counts")
    if request.depths < 1:
        problems.append(f"--depths: the number of needle depths must be >= 1, got {request.depths}")
    if request.samples < 1:
        problems.append(f"--samples: must be >= 1, got {request.samples}")
    unknown = [k for k in request.kind_list() if k not in KINDS]
    if unknown or not (request.kind_list() or request.kinds.strip() == "none"):
        problems.append(f"--kinds: give passkey and/or maritime (comma-separated) or none, got {request.kinds!r}")
    if request.qa is not None and not Path(request.qa).is_file():
        problems.append(f"--qa: {request.qa} does not exist")
    template = request.qa_template
    if template is not None and ("{document}" not in template or "{question}" not in template):
        problems.append(f"--qa-template: must contain {{document}} and {{question}}, got {request.qa_template!r}")
    return [p for p in problems if p]


def qa_prompt(request: EvalRequest):
    """How the questions of ``--qa`` are asked: ``--qa-template`` as the user turn when given; else as the
    Phase-2 adapters among ``request.adapters`` were taught (their sft.prompt_template after their sft.system);
    else the default user turn. Every model is asked the same way, so adapters taught different prompts are
    refused rather than some of them asked wrongly."""
    from fathom.data.instruct import QaPrompt
    from fathom.model.adapter import read_adapter

    if request.qa_template is not None:
        return QaPrompt(request.qa_template)
    infos = [read_adapter(a) for a in request.adapters]
    taught = {(i.prompt_template, i.system) for i in infos if i.prompt_template is not None}
    if len(taught) > 1:
        names = ", ".join(str(i.folder) for i in infos if i.prompt_template is not None)
        raise ConfigError(
            f"--adapter: {names} were taught different prompts (sft.prompt_template / sft.system); "
            "evaluate them in separate runs, or pass --qa-template to ask them all one way"
        )
    return QaPrompt(*taught.pop()) if taught else QaPrompt()


def _haystack(request: EvalRequest) -> list[str]:
    """Texts that hide the maritime needles and feed perplexity by position."""
    if request.haystack:
        from fathom.data.ingest import read_documents

        return [d.text for d in read_documents([str(p) for p in request.haystack])[0]]
    if request.config is None:
        return []
    from fathom.config import load_config
    from fathom.data.cache import prepare_corpus
    from fathom.data.eod import resolve_eod_token_id
    from fathom.model.load import load_tokenizer
    from fathom.model.sources import resolve_model_source

    config = load_config(request.config, check_paths=True)
    source = resolve_model_source(config.model.name_or_path)
    tokenizer = load_tokenizer(source, config.model)
    cache = prepare_corpus(config, tokenizer, resolve_eod_token_id(tokenizer, config.data.eod_token))
    held_out = cache.eval_documents()
    return [tokenizer.decode(held_out[i][:-1].tolist()) for i in range(len(held_out))]


def default_eval_lengths(adapters: list[str]) -> list[int]:
    """1K doubling up to the last adapter's trained length (4K when it is unknown)."""
    from fathom.eval.needle import default_lengths
    from fathom.model.adapter import trained_length

    trained = trained_length(adapters[-1]) if adapters else None
    return default_lengths(trained or 4096, start=min(1024, trained or 4096))


def run_eval(request: EvalRequest) -> dict:
    """Evaluate the base and each adapter; the results dict that ``write_report`` renders."""
    from fathom.eval.needle import default_depths
    from fathom.eval.runner import evaluate_models

    raise_problems(eval_problems(request))
    skipped: list[str] = []
    haystack = _haystack(request)
    kinds = request.kind_list()
    if not haystack:
        if "maritime" in kinds:
            kinds.remove("maritime")
            skipped.append(f"maritime needles: {NO_HAYSTACK}")
        skipped.append(f"perplexity by position: {NO_HAYSTACK}")
    lengths = _parse_lengths(request.lengths) if request.lengths else default_eval_lengths(request.adapters)
    check_lengths(request, lengths)
    qa_records = None
    if request.qa is not None:
        from fathom.eval.qa import read_qa_records

        qa_records = read_qa_records(request.qa)
        if request.qa_limit:
            qa_records = qa_records[: request.qa_limit]
    elif not kinds:
        skipped.append("long-document QA: pass --qa FILE (fathom qa build --held-out writes one)")
    for line in skipped:
        logger.warning("skipped %s", line)
    results = evaluate_models(
        request.base,
        request.adapters,
        lengths,
        default_depths(request.depths),
        request.samples,
        kinds,
        haystack,
        request.seed,
        rope=request.rope,
        qa_records=qa_records,
        qa_prompt=qa_prompt(request),
    )
    if request.ruler:
        reason = _run_ruler(request, results, lengths)
        if reason:
            results["ruler_skipped"] = reason
            skipped.append(f"RULER: {reason}")
    results["skipped"] = skipped
    return results


def check_lengths(request: EvalRequest, lengths: list[int]) -> None:
    """Refuse lengths no model can read (one line with the window and the RoPE factor that would reach it),
    and warn about those past a model's window or the adapters' training, before any weights load."""
    import math
    from types import SimpleNamespace

    from transformers import AutoConfig

    from fathom.model.adapter import inference_rope, trained_length
    from fathom.model.rope import model_rope
    from fathom.model.sources import resolve_model_source

    try:
        holder = SimpleNamespace(config=AutoConfig.from_pretrained(resolve_model_source(request.base)))
    except (OSError, ValueError):
        return  # loading the base reports it, in one line
    base = model_rope(holder.config)
    settings = {"base": inference_rope(holder, None, request.rope) or base}
    settings |= {Path(a).name: inference_rope(holder, a, request.rope) or base for a in request.adapters}
    if any(s.rope_type == "dynamic" or not s.window for s in settings.values()):
        return  # dynamic scaling rescales itself: no fixed window to hold lengths to
    reach = max(s.window for s in settings.values())
    if max(lengths) > reach:
        factor = math.ceil(max(lengths) / base.window)
        raise ConfigError(
            f"--lengths: {max(lengths):,} tokens is past every model's window (at most {reach:,}: the base reads "
            f"{base.window:,}); give shorter --lengths, or --rope-scaling yarn:{factor} to stretch the base that far"
        )
    for name, setting in settings.items():
        past = [n for n in lengths if n > setting.window]
        if past:
            logger.warning("%s reads %s positions: expect scores near 0 at %s", name, f"{setting.window:,}", past)
    trained = max((trained_length(a) or 0 for a in request.adapters), default=0)
    if trained and max(lengths) > trained:
        logger.warning("--lengths: %s is past the longest row the adapters trained on (%s)", max(lengths), trained)


def _run_ruler(request: EvalRequest, results: dict, lengths: list[int]) -> str | None:
    """RULER for every model into its results entry; the reason when it cannot run."""
    from fathom.eval.ruler import ruler_available, run_ruler
    from fathom.model.rope import RopeSetting
    from fathom.model.sources import resolve_model_source

    reason = ruler_available()
    if reason:
        logger.warning("RULER skipped: %s", reason)
        return reason
    source = resolve_model_source(request.base)
    for model, adapter in zip(results["models"], [None, *request.adapters], strict=True):
        logger.info("RULER: %s", model["name"])
        model["ruler"] = run_ruler(
            source,
            adapter,
            lengths,
            request.samples,
            tuple(request.ruler_tasks.split(",")),
            rope=RopeSetting.from_dict(model["rope"]),
        )
    return None
