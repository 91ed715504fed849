"""Phase 2 on real weights: does instruction tuning with long examples teach a model to answer from a long document?

SmolLM2-135M-Instruct (the demo's weights) on the synthetic maritime corpus: Phase 1 (the demo's three
phases), then Phase 2 on questions ``fathom qa build`` makes from the training documents, at contexts
of about 512, 1K and 2K tokens. Evaluated on questions about *other* synthetic documents (held out:
no phase trains on them): the share of answers that contain the reference, for the base, Phase 1
alone and Phase 1 + 2, per context length, plus the short-context perplexity of Phase 1 and of
Phase 1 + 2 on the held-out documents. Everything runs on the CPU; the numbers go to
docs/benchmarks.md.

    python bench/instruct.py [--phase1-tokens 40960] [--phase2-tokens 32768] [--questions 12]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "instruct"
LENGTHS = (448, 960, 1984)  # contexts that fit rows of 512 / 1K / 2K with the question and answer


def _write_jsonl(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def prepare(args) -> tuple[object, list[dict], list[str]]:
    """The config (demo preset + Phase 2 at 2K), the held-out questions and the held-out documents."""
    from fathom.config import load_config
    from fathom.data.qa import build_records
    from fathom.demo import DEMO_CONFIG
    from fathom.demo.corpus import generate_documents, write_corpus
    from fathom.model.load import load_configured_tokenizer

    OUT.mkdir(parents=True, exist_ok=True)
    corpus = OUT / "corpus"
    if not corpus.exists():
        write_corpus(corpus, documents=60, seed=0)
    overrides = [
        f"data.paths=[{corpus}]",
        f"data.cache_dir={OUT / 'cache'}",
        f"output_dir={OUT / 'run'}",
        f"train.total_tokens={args.phase1_tokens}",
        f"sft.paths=[{OUT / 'qa_train.jsonl'}]",
        "sft.max_seq_length=2048",
        f"sft.total_tokens={args.phase2_tokens}",
        "sft.learning_rate=5.0e-4",
        "sft.replay_fraction=0.1",
        "sft.long_fraction=0.5",
    ]
    config = load_config(DEMO_CONFIG, overrides, check_paths=False)
    tokenizer = load_configured_tokenizer(config.model)
    train_texts = [t for _, t in generate_documents(60, seed=0)]
    held_out_texts = [t for _, t in generate_documents(24, seed=2024)]
    _write_jsonl(OUT / "qa_train.jsonl", build_records(train_texts, tokenizer, LENGTHS, per_document=2, seed=0))
    held_out = build_records(held_out_texts, tokenizer, LENGTHS, per_document=1, seed=7)
    by_length: dict[int, list[dict]] = {}
    for record in held_out:
        by_length.setdefault(min(LENGTHS, key=lambda n: abs(n - record["context_tokens"])), []).append(record)
    questions = [r for n in LENGTHS for r in by_length.get(n, [])[: args.questions]]
    _write_jsonl(OUT / "qa_eval.jsonl", questions)
    return config, questions, held_out_texts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phase1-tokens", type=int, default=40960)
    parser.add_argument("--phase2-tokens", type=int, default=32768)
    parser.add_argument("--questions", type=int, default=12, help="held-out questions per context length")
    parser.add_argument("--skip-train", action="store_true", help="evaluate the run already in bench/out")
    args = parser.parse_args()
    from fathom.cli import setup_logging
    from fathom.data.instruct import QaPrompt
    from fathom.eval.runner import evaluate_models
    from fathom.train.loop import train

    setup_logging()
    config, questions, held_out_texts = prepare(args)
    started = time.time()
    if not args.skip_train:
        result = train(config, resume=True)
        if result.final_dir is None:
            print("training stopped early", file=sys.stderr)
            return 1
    trained_minutes = (time.time() - started) / 60
    run = Path(config.output_dir)
    results = evaluate_models(
        config.model.name_or_path,
        [str(run / "final_1k_model"), str(run / "final_2k_instruct_model")],
        [512],
        [0.5],
        1,
        [],
        held_out_texts,
        qa_records=questions,
        qa_prompt=QaPrompt.of(config.sft),
    )
    names = ["base", "Phase 1", "Phase 1 + 2"]
    lengths = sorted({k for m in results["models"] for k in m["qa"]["contains_by_length"]}, key=int)
    print(f"\nanswer contains the reference, {len(questions)} held-out questions ({args.questions} per length)")
    print(f"{'model':<12}" + "".join(f"{'<=' + n:>10}" for n in lengths) + f"{'all':>8}{'F1':>7}{'short ppl':>11}")
    row = {}
    for name, model in zip(names, results["models"], strict=True):
        qa = model["qa"]
        cells = [qa["contains_by_length"].get(n, float("nan")) for n in lengths]
        ppl = model.get("short_perplexity", {}).get("perplexity", float("nan"))
        print(
            f"{name:<12}"
            + "".join(f"{c:>10.0%}" for c in cells)
            + f"{qa['contains']:>8.0%}{qa['f1']:>7.2f}{ppl:>11.2f}"
        )
        row[name] = {"contains_by_length": qa["contains_by_length"], "contains": qa["contains"], "f1": qa["f1"]}
        row[name]["short_ppl"] = ppl
    print(json.dumps({"bench": "instruct", "train_minutes": round(trained_minutes, 1), **row}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
