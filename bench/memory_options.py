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
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import VOCAB, fathom_step, packed_batch


def build(lean: bool, tile: int):
    from transformers import AutoModelForCausalLM, Qwen2Config

    from fathom.config import LoraConfig
    from fathom.model.load import enable_activation_checkpointing, tile_mlps
    from fathom.model.lora import apply_lora

    config = Qwen2Config(
        vocab_size=VOCAB,
        hidden_size=256,
        intermediate_size=1344,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=32768,
        tie_word_embeddings=False,
        attn_implementation="sdpa",
        use_cache=False,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
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
        "none": build(lean=False, tile=0),
        "lean_forward": build(lean=True, tile=0),
        "tiled_mlp": build(lean=False, tile=args.seq_len // 4),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    for step in range(args.steps + 1):
        batch = packed_batch(args.seq_len, seed=step)
        for name, model in variants.items():
            start = time.perf_counter()
            fathom_step(model, batch)
            elapsed = time.perf_counter() - start
            model.zero_grad(set_to_none=True)
            if step > 0:  # the first step warms up kernels
                times[name].append(elapsed)
    tps = {name: args.seq_len / statistics.median(t) for name, t in times.items()}
    ratios = {name: tps[name] / tps["none"] for name in variants if name != "none"}
    for name, ratio in ratios.items():
        verdict = "met" if ratio >= 0.9 else "NOT met"
        print(f"{name}: {tps[name]:.0f} vs {tps['none']:.0f} tok/s without: ratio {ratio:.3f} (>= 0.9: {verdict})")
    print(json.dumps({"benchmark": "memory_options", "seq_len": args.seq_len, "tokens_per_s": tps, "ratios": ratios}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
