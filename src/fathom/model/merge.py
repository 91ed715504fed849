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
import shutil
import tempfile
from pathlib import Path

import torch

from fathom.config import ConfigError

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
MERGE_RECORD = "fathom_merge.json"


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
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from fathom.eval.generate import inference_rope
    from fathom.model.rope import apply_rope, model_rope, warn_if_mismatch
    from fathom.model.sources import resolve_model_source

    adapter, out = Path(adapter), Path(out)
    if dtype not in DTYPES:
        raise ConfigError(f"--dtype: {dtype!r} is not one of {', '.join(DTYPES)}")
    if not (adapter / "adapter_config.json").is_file():
        raise ConfigError(f"--adapter: {adapter} has no adapter_config.json (is it a fathom phase or final folder?)")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out: {out} already exists and is not empty; choose a new folder (nothing was changed)")

    source = resolve_model_source(base)
    try:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=DTYPES[dtype] or "auto")
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--base: cannot load '{base}' ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    base_rope = model_rope(model.config)
    setting = inference_rope(model, str(adapter), rope)
    if setting is not None and apply_rope(model, setting):
        logger.info("RoPE: %s, written into the merged config.json", setting.describe())
    warn_if_mismatch(model, adapter)
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    merged.config.use_cache = True  # training turned it off; a merged model is for inference

    tokenizer_source = str(adapter) if (adapter / "tokenizer_config.json").is_file() else source
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{out.name}-", dir=out.parent))
    try:
        merged.save_pretrained(tmp, safe_serialization=True, max_shard_size=max_shard_size)
        tokenizer.save_pretrained(tmp)
        record = {
            "base_model": base,
            "base_source": source,
            "adapter": str(adapter),
            "dtype": str(next(merged.parameters()).dtype).replace("torch.", ""),
            "rope": model_rope(merged.config).to_dict(),
            "base_rope": base_rope.to_dict(),
        }
        (tmp / MERGE_RECORD).write_text(json.dumps(record, indent=2), encoding="utf-8")
        if out.exists():
            out.rmdir()  # empty, checked above
        tmp.replace(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("merged %s into %s: %s", adapter, source, out)
    return out
