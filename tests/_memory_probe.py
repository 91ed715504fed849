"""Measure the peak resident memory of one fathom training step on the CPU, in this process.

Run as ``python tests/_memory_probe.py '<json spec>'`` in a fresh process with
``MALLOC_MMAP_THRESHOLD_`` fixed (glibc's moving threshold otherwise keeps freed blocks in the heap
and the kernel's peak would count fragmentation, not tensors). Prints ``{"measured": bytes}``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def measure(vocab, hidden, inter, layers, seq, ckpt, dropout, attn="sdpa", micro_batch=1) -> int:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, Qwen2Config

    from fathom.data.loader import PhaseLoader
    from fathom.model.load import enable_activation_checkpointing
    from fathom.model.loss import causal_lm_loss_sum

    config = Qwen2Config(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=65536,
        attn_implementation=attn,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    for p in model.parameters():
        p.requires_grad_(False)
    if ckpt:
        enable_activation_checkpointing(model)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=dropout, target_modules="all-linear"))
    model.train()
    rng = np.random.default_rng(0)
    docs = [rng.integers(1, vocab - 1, int(n)).astype(np.int32) for n in rng.integers(300, 3000, 64)]

    def step(length: int) -> None:
        batch = PhaseLoader(docs, length, 0, 0, micro_batch).next_micro_batch()
        loss_sum, n = causal_lm_loss_sum(model, batch, 1024, "chunked")
        (loss_sum / n).backward()
        model.zero_grad(set_to_none=True)

    step(128)  # warm up kernels and caches
    Path("/proc/self/clear_refs").write_text("5")  # reset the kernel's peak (VmHWM)
    before = _status("VmRSS")
    step(seq)
    return _status("VmHWM") - before


if __name__ == "__main__":
    print(json.dumps({"measured": measure(**json.loads(sys.argv[1]))}))
