"""Peak memory of one LoRA training step, fathom versus the plain transformers + PEFT path.

Model: a tiny Qwen2 (2 layers, hidden 64) with the real 151,936-token vocabulary, so the output
layer and the loss dominate as they do for Qwen2.5 at long lengths. Reference: ``model(input_ids,
labels=input_ids)`` then backward (full logits). fathom: a packed row with document-masked
attention, gradient checkpointing and the chunked fused cross-entropy. Each measurement runs in a
fresh process; "step" is the resident memory the step added on top of the loaded model.

Target: at 8K, fathom's step peak at most 1/8 of the reference's.
Run: python bench/memory.py [--lengths 2048,4096,8192]   (the 8K reference needs ~20 GB of RAM)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import measure_peak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="2048,4096,8192")
    args = parser.parse_args()
    rows = []
    print(f"{'tokens':>7} {'reference MiB':>14} {'fathom MiB':>11} {'ratio':>7}   (step peak above the loaded model)")
    for seq_len in (int(x) for x in args.lengths.split(",")):
        ours = measure_peak("fathom", seq_len)
        ref = measure_peak("reference", seq_len)
        if "error" in ref or "error" in ours:
            print(f"{seq_len:>7} reference: {ref.get('error', 'ok')} fathom: {ours.get('error', 'ok')}")
            rows.append({"seq_len": seq_len, "reference": ref, "fathom": ours})
            continue
        ratio = ours["step_peak_mib"] / ref["step_peak_mib"]
        print(f"{seq_len:>7} {ref['step_peak_mib']:>14.0f} {ours['step_peak_mib']:>11.0f} {ratio:>7.3f}")
        rows.append(
            {
                "seq_len": seq_len,
                "reference_step_mib": round(ref["step_peak_mib"], 1),
                "fathom_step_mib": round(ours["step_peak_mib"], 1),
                "reference_process_mib": round(ref["process_peak_mib"], 1),
                "fathom_process_mib": round(ours["process_peak_mib"], 1),
                "ratio": round(ratio, 4),
            }
        )
    longest = rows[-1]
    target_met = "ratio" in longest and longest["ratio"] <= 1 / 8
    print(f"target (fathom <= 1/8 of the reference at {longest['seq_len']}): {'met' if target_met else 'NOT met'}")
    print(json.dumps({"benchmark": "memory", "rows": rows, "target_met": target_met}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
