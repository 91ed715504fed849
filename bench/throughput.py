"""Training throughput (tokens/s) at 2K tokens, fathom versus the plain transformers + PEFT path.

Same tiny Qwen2 with the real 151,936-token vocabulary as bench/memory.py. The two paths alternate
step by step in one process, so machine noise hits both alike; the ratio is of median step times.
fathom pays for gradient checkpointing (one extra forward of the layers) and saves the full-logits
softmax and its copies.

Target: fathom at least 0.9x the reference's tokens/s.
Run: python bench/throughput.py [--seq-len 2048] [--steps 6]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import fathom_step, reference_step, tiny_qwen2_with_lora, tokens_per_second


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    runs = {
        "reference": (tiny_qwen2_with_lora(gradient_checkpointing=False), reference_step),
        "fathom": (tiny_qwen2_with_lora(gradient_checkpointing=True), fathom_step),
    }
    tps = tokens_per_second(runs, args.seq_len, args.steps)
    ratio = tps["fathom"] / tps["reference"]
    print(f"reference {tps['reference']:.0f} tok/s   fathom {tps['fathom']:.0f} tok/s   ratio {ratio:.3f}")
    print(f"target (fathom >= 0.9x the reference): {'met' if ratio >= 0.9 else 'NOT met'}")
    print(
        json.dumps(
            {
                "benchmark": "throughput",
                "seq_len": args.seq_len,
                "reference_tokens_per_s": round(tps["reference"], 1),
                "fathom_tokens_per_s": round(tps["fathom"], 1),
                "ratio": round(ratio, 4),
                "target_met": ratio >= 0.9,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
