"""Speed cost of each memory option on the CPU: fathom's step with the option on versus off.

A small Qwen2 (hidden 256, MLP 1,344 = 5.25 x hidden as in Qwen2.5-7B, 4 layers, the real 151,936-token
vocabulary, gradient checkpointing, LoRA r16 all-linear, dropout 0.05) trains on packed rows of
``--seq-len`` tokens. The variants alternate step by step in one process, so machine noise hits all
alike; the ratio is of median step times (tokens/s of the option / tokens/s without any option).

- ``lean_forward``: the LoRA path in the activations' dtype with shared dropout masks (lora.lean_forward);
- ``tiled_mlp``: the MLP over tiles of a quarter row (train.mlp_tile_tokens = seq_len / 4; the default
  8,192 does not tile rows of 8K or less, so this forces the recompute the option costs on longer rows).

Target (issue 14): at most 10% slower per option (ratio >= 0.9). The memory each option saves is
shown by ``fathom plan --simulate`` (docs/memory.md), not here: a CPU run keeps fp32 weights.
Run: python bench/memory_options.py [--seq-len 2048] [--steps 4]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import fathom_step, qwen2_config, tokens_per_second


def build(lean: bool, tile: int):
    from transformers import AutoModelForCausalLM

    from fathom.config import LoraConfig
    from fathom.model.load import enable_activation_checkpointing, tile_mlps
    from fathom.model.lora import apply_lora

    torch.manual_seed(0)
    config = qwen2_config(hidden=256, intermediate=1344, layers=4)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.config.use_cache = False
    enable_activation_checkpointing(model)
    model = apply_lora(model, LoraConfig(r=16, alpha=32, dropout=0.05, lean_forward=lean), seed=0)
    tile_mlps(model, tile)
    model.train()
    return model


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    variants = {
        "none": (build(lean=False, tile=0), fathom_step),
        "lean_forward": (build(lean=True, tile=0), fathom_step),
        "tiled_mlp": (build(lean=False, tile=args.seq_len // 4), fathom_step),
    }
    tps = tokens_per_second(variants, args.seq_len, args.steps)
    ratios = {name: tps[name] / tps["none"] for name in variants if name != "none"}
    for name, ratio in ratios.items():
        verdict = "met" if ratio >= 0.9 else "NOT met"
        print(f"{name}: {tps[name]:.0f} vs {tps['none']:.0f} tok/s without: ratio {ratio:.3f} (>= 0.9: {verdict})")
    print(json.dumps({"benchmark": "memory_options", "seq_len": args.seq_len, "tokens_per_s": tps, "ratios": ratios}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
