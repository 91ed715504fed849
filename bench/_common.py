"""Shared pieces of the benchmarks: a tiny Qwen2 with the real 151,936-token vocabulary, LoRA through
PEFT, and one training step done either the plain transformers + PEFT way (the reference) or fathom's.

Peak memory is read from the kernel (VmHWM of /proc/self/status, reset through /proc/self/clear_refs)
in a fresh process per measurement, so the numbers are the resident memory the step really needed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

VOCAB = 151_936


def qwen2_config(hidden: int = 64, intermediate: int = 256, layers: int = 2, attn: str = "sdpa"):
    """A small Qwen2 with the real vocabulary (4 heads, 2 KV heads, untied output layer)."""
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=VOCAB,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=32768,
        tie_word_embeddings=False,
        attn_implementation=attn,
    )


def tiny_qwen2_with_lora(gradient_checkpointing: bool, attn: str = "sdpa"):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(qwen2_config(attn=attn), dtype=torch.float32)
    model.config.use_cache = False
    if gradient_checkpointing:
        from fathom.model.load import enable_activation_checkpointing

        enable_activation_checkpointing(model)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"))
    model.train()
    return model


def tokens_per_second(runs: dict, seq_len: int, steps: int) -> dict[str, float]:
    """Median tokens/s of each ``name: (model, step_fn)``, the runs alternating step by step on the same
    packed rows, so machine noise hits all alike; the first step warms up kernels and is not counted."""
    import statistics

    batches = {step: packed_batch(seq_len, seed=step) for step in range(steps + 1)}
    times = alternate_steps(runs, lambda name, step: batches[step], steps)
    return {name: seq_len / statistics.median(t) for name, t in times.items()}


def alternate_steps(runs: dict, batch_for, steps: int, report=None) -> dict[str, list[float]]:
    """Seconds of ``steps`` training steps of each ``name: (model, step_fn)``, the runs alternating step by
    step (machine noise hits all alike) on ``batch_for(name, step)``; one warm-up step first, not kept.
    ``report(step, times)`` is called after each round."""
    import time

    times: dict[str, list[float]] = {name: [] for name in runs}
    for step in range(steps + 1):
        for name, (model, fn) in runs.items():
            batch = batch_for(name, step)
            start = time.perf_counter()
            fn(model, batch)
            elapsed = time.perf_counter() - start
            model.zero_grad(set_to_none=True)
            if step > 0:
                times[name].append(elapsed)
        if report is not None:
            report(step, times)
    return times


def packed_batch(seq_len: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """One row of ``seq_len`` tokens packed by fathom's packer from documents of 300-3000 tokens."""
    from fathom.data.loader import PhaseLoader

    rng = np.random.default_rng(seed)
    docs = [rng.integers(1, VOCAB - 300, int(n)).astype(np.int32) for n in rng.integers(300, 3000, 64)]
    return PhaseLoader(docs, seq_len, seed=seed, phase_index=0).next_micro_batch()


def reference_step(model, batch) -> float:
    """The plain path: full logits, transformers' own loss."""
    out = model(input_ids=batch["input_ids"], labels=batch["input_ids"])
    out.loss.backward()
    return float(out.loss.detach())


def fathom_step(model, batch) -> float:
    from fathom.model.loss import causal_lm_loss_sum

    loss_sum, n = causal_lm_loss_sum(model, batch, chunk_size=1024, implementation="chunked")
    (loss_sum / n).backward()
    return float(loss_sum.detach()) / n


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure_peak_in_this_process(which: str, seq_len: int) -> dict:
    """Build the model, reset the peak, run one step; memory in MiB."""
    model = tiny_qwen2_with_lora(gradient_checkpointing=which == "fathom")
    step = fathom_step if which == "fathom" else reference_step
    step(model, packed_batch(256, seed=1))  # warm up kernels and caches on a short row
    model.zero_grad(set_to_none=True)
    batch = packed_batch(seq_len)
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_kib("VmRSS")
    step(model, batch)
    peak = _status_kib("VmHWM")
    return {
        "which": which,
        "seq_len": seq_len,
        "baseline_mib": before / 1024,
        "step_peak_mib": (peak - before) / 1024,
        "process_peak_mib": peak / 1024,
    }


def measure_peak(which: str, seq_len: int) -> dict:
    """Run :func:`measure_peak_in_this_process` in a fresh Python process.

    glibc's malloc keeps a moving mmap threshold; without pinning it, freed blocks stay in the heap and
    the kernel's peak counts fragmentation rather than tensors, so the threshold is fixed here.
    """
    code = (
        f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
        f"from _common import measure_peak_in_this_process as m; print(json.dumps(m({which!r}, {seq_len})))"
    )
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"), MALLOC_MMAP_THRESHOLD_="131072")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        return {"which": which, "seq_len": seq_len, "error": proc.stderr.strip().splitlines()[-1][:300]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- packed rows of a real corpus's document lengths (bench/throughput.py --packed, bench/gpu.py) ---

SHARED = Path(os.environ.get("FATHOM_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def corpus_lengths(cache: Path | None = None, shared: Path = SHARED) -> tuple[list[int], str]:
    """Token counts of the documents rows are packed from, and what they are.

    A fathom token cache (``cache``): its training documents, so the benchmark sees the user's corpus.
    Else the maritime corpus of bench/quality.py (US Code Title 46 chapters and the COLREGs rules from
    ``shared``, or its synthetic stand-in), counted in Qwen2.5 tokens where that tokenizer is in
    ``shared``, else at 4 characters a token.
    """
    if cache is not None:
        from fathom.data.cache import CorpusCache

        lengths = [int(n) for n in CorpusCache(Path(cache)).train_documents().lengths]
        return lengths, f"the training documents of the token cache {cache}"
    from quality import corpus_texts

    texts = [text for split in corpus_texts(shared).values() for _, text in split]
    qwen = shared / "tokenizers" / "qwen2.5" / "tokenizer.json"
    if qwen.is_file():
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(qwen))
        lengths = [len(e.ids) + 1 for e in tokenizer.encode_batch(texts, add_special_tokens=False)]  # + end token
        return lengths, f"{len(texts)} maritime documents from {shared / 'corpus'}, Qwen2.5 tokens"
    return [len(text) // 4 + 1 for text in texts], f"{len(texts)} documents at 4 characters a token"


def rows_from_lengths(lengths: list[int], vocab: int, seq_len: int, seed: int = 0):
    """Endless micro-batches of one row packed by fathom's packer (``fathom.data.loader``) from documents
    of these lengths in a shuffled order, random token ids; or, ``lengths`` empty, one document filling
    the row (position ids 0..T-1: whole rows)."""
    from fathom.data.loader import PhaseLoader

    rng = np.random.default_rng(seed)
    if not lengths:
        while True:
            ids = torch.from_numpy(rng.integers(1, vocab - 1, (1, seq_len)))
            yield {"input_ids": ids, "labels": ids.clone(), "position_ids": torch.arange(seq_len)[None]}
    docs = [rng.integers(1, vocab - 1, n).astype(np.int32) for n in lengths]
    loader = PhaseLoader(docs, seq_len, seed=seed, phase_index=0)
    while True:
        yield loader.next_micro_batch()


def config_of_shape(shape, **extra):
    """A transformers config of ``shape`` (a fathom.estimate.ModelShape): Qwen2's where the shape has
    q/k/v biases, else Llama's; ``extra`` set on top (attention, RoPE theta, ...)."""
    from transformers import LlamaConfig, Qwen2Config

    return (Qwen2Config if shape.qkv_bias else LlamaConfig)(
        vocab_size=shape.vocab,
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.num_layers,
        num_attention_heads=shape.num_heads,
        num_key_value_heads=shape.num_kv_heads,
        head_dim=shape.head_dim,
        max_position_embeddings=32768,
        tie_word_embeddings=shape.tied_embeddings,
        **extra,
    )


def shaped_model_with_lora(shape, attn: str, gradient_checkpointing: bool = True, seed: int = 0):
    """A model of ``shape`` (a fathom.estimate.ModelShape) with random fp32 weights, LoRA r=16 on every
    linear layer through fathom's own ``apply_lora``, ``attn`` as its attention (fathom's registered)."""
    from transformers import AutoModelForCausalLM

    from fathom.config import LoraConfig
    from fathom.model.attention import register
    from fathom.model.load import enable_activation_checkpointing
    from fathom.model.lora import apply_lora

    register()
    config = config_of_shape(shape, attn_implementation=attn, use_cache=False)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    if gradient_checkpointing:
        enable_activation_checkpointing(model)
    model = apply_lora(model, LoraConfig(r=16, alpha=32, dropout=0.0), seed=seed)
    model.train()
    return model
