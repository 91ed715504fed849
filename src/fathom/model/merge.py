"""``fathom merge``: fold an adapter into its base and write one plain transformers model folder.

PEFT's ``merge_and_unload`` does the arithmetic (LoRA deltas added to the base weights, modules
trained whole swapped in); this module adds what a user needs around it: the RoPE setting the
adapter was trained with applied first, so the merged ``config.json`` carries it; the dtype asked
for; sharded safetensors; the tokenizer and generation config; and an atomic write that never
touches an existing folder.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from fathom.errors import raise_problems
from fathom.fsutil import atomic_dir, is_empty_dir
from fathom.model.adapter import MERGE_RECORD, adapter_problem

logger = logging.getLogger("fathom")

DTYPES = {
    "auto": None,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
    "fp32": torch.float32,
    "float32": torch.float32,
}


def merge_adapter(
    base: str,
    adapter: str | Path,
    out: str | Path,
    dtype: str = "auto",
    rope: str | None = None,
    max_shard_size: str = "5GB",
) -> Path:
    """Write base + adapter as one model to ``out`` (which must not exist or be empty); returns ``out``."""
    from peft import PeftModel
    from transformers import AutoTokenizer

    from fathom.model.adapter import inference_rope, load_base, read_adapter
    from fathom.model.rope import apply_rope, model_rope, warn_if_mismatch
    from fathom.model.sources import resolve_model_source

    adapter, out = Path(adapter), Path(out)
    problems = [
        f"--dtype: {dtype!r} is not one of {', '.join(DTYPES)}" if dtype not in DTYPES else None,
        adapter_problem(adapter),
        f"--out: {out} already exists and is not empty; choose a new folder (nothing was changed)"
        if out.exists() and not is_empty_dir(out)
        else None,
    ]
    raise_problems(problems)
    info = read_adapter(adapter)

    model = load_base(base, dtype=DTYPES[dtype] or "auto")
    source = resolve_model_source(base)
    base_rope = model_rope(model.config)
    setting = inference_rope(model, adapter, rope)
    if setting is not None and apply_rope(model, setting):
        logger.info("RoPE: %s, written into the merged config.json", setting.describe())
    warn_if_mismatch(model, adapter)
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    tokenizer = AutoTokenizer.from_pretrained(str(adapter) if info.has_tokenizer else source)
    record = {"base_model": base, "base_source": source, "adapter": str(adapter), "base_rope": base_rope.to_dict()}
    save_merged(merged, tokenizer, out, record, max_shard_size)
    logger.info("merged %s into %s: %s", adapter, source, out)
    return out


def save_merged(merged, tokenizer, out: str | Path, record: dict, max_shard_size: str = "5GB") -> None:
    """Write a merged model as a plain transformers folder (atomically), with ``record`` as fathom_merge.json.

    The record gains the dtype and the RoPE setting the folder's config.json carries. ``use_cache`` is
    switched on in the written config (training turns it off; a merged model is for inference).
    """
    from fathom.model.rope import model_rope

    use_cache = merged.config.use_cache
    merged.config.use_cache = True
    try:
        with atomic_dir(out) as tmp:
            merged.save_pretrained(tmp, safe_serialization=True, max_shard_size=max_shard_size)
            if tokenizer is not None:
                tokenizer.save_pretrained(tmp)
            record = record | {
                "dtype": str(next(merged.parameters()).dtype).replace("torch.", ""),
                "rope": model_rope(merged.config).to_dict(),
            }
            (tmp / MERGE_RECORD).write_text(json.dumps(record, indent=2), encoding="utf-8")
    finally:
        merged.config.use_cache = use_cache
