"""``fathom generate``: the guide's long-document test, with the adapter the run produced.

Loads the base (and an adapter folder written by ``fathom train``), reads a long document, says how
many tokens it is and whether that is beyond the length the adapter was trained at, and streams the
model's continuation (or its answer to ``--prompt``, appended after the document).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import yaml

from fathom.config import ConfigError

logger = logging.getLogger("fathom")


def trained_length(adapter: Path) -> int | None:
    """The longest phase length of the run that wrote ``adapter`` (from its fathom_config.yaml)."""
    config_file = adapter / "fathom_config.yaml"
    if not config_file.is_file():
        return None
    try:
        data = yaml.safe_load(config_file.read_text(encoding="utf-8")) or {}
        schedule = data.get("train", {}).get("schedule", [])
        return max(int(p["max_seq_length"]) for p in schedule) if schedule else None
    except (yaml.YAMLError, KeyError, TypeError, ValueError):
        return None


def inference_rope(model, adapter: str | None, rope: str | None, where: str = "--rope-scaling"):
    """The RoPE setting to run with: ``rope`` when given (e.g. 'yarn:2', 'none'), else the adapter's record.

    None means the base model's own. Callers apply it, then :func:`fathom.model.rope.warn_if_mismatch`
    says so when an override differs from what the adapter was trained with.
    """
    from fathom.model.rope import model_rope, read_rope_record, resolve_rope

    recorded = read_rope_record(adapter) if adapter else None
    if rope is None:
        return recorded
    if str(rope).strip().lower() == "auto":
        raise ConfigError(f"{where}: auto needs a training length; give TYPE:FACTOR (e.g. yarn:2) or none")
    return resolve_rope(model_rope(model.config), None, rope, 0, where)[0]


def load_for_inference(
    base: str, adapter: str | None, dtype: str = "auto", device: str = "auto", rope: str | None = None
):
    """(model, tokenizer, device) with the adapter applied; the tokenizer comes from the adapter when it has one.

    The RoPE setting the adapter was trained with (its ``fathom_rope.json``) is applied to the base
    first, unless ``rope`` overrides it.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from fathom.model.load import pick_attn_implementation, pick_device, pick_dtype
    from fathom.model.rope import apply_rope, warn_if_mismatch
    from fathom.model.sources import resolve_model_source

    source = resolve_model_source(base)
    target = pick_device(device)
    attn = pick_attn_implementation("auto", target)
    try:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=pick_dtype(dtype, target), attn_implementation=attn)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--base: cannot load '{base}' ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    tokenizer_source = source
    if adapter is not None and not (Path(adapter) / "adapter_config.json").is_file():
        raise ConfigError(f"--adapter: {adapter} has no adapter_config.json (is it a fathom phase or final folder?)")
    setting = inference_rope(model, adapter, rope)
    if setting is not None and apply_rope(model, setting):
        logger.info("RoPE: %s (%s)", setting.describe(), "as asked" if rope else f"the one {adapter} was trained with")
    if adapter is not None:
        folder = Path(adapter)
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(folder))
        warn_if_mismatch(model, folder)
        if (folder / "tokenizer_config.json").is_file():
            tokenizer_source = str(folder)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    model.to(target).eval()
    return model, tokenizer, target


def generate(
    base: str,
    file: str,
    adapter: str | None = None,
    prompt: str | None = None,
    max_new_tokens: int = 512,
    do_sample: bool = False,
    temperature: float = 0.7,
    rope: str | None = None,
) -> str:
    """Stream a continuation of ``file`` (plus ``prompt``) to stdout; returns the generated text."""
    from transformers import TextStreamer

    path = Path(file)
    if not path.is_file():
        raise ConfigError(f"--file: {path} does not exist")
    text = path.read_text(encoding="utf-8", errors="replace")
    if prompt:
        text = f"{text.rstrip()}\n\n{prompt}"
    model, tokenizer, device = load_for_inference(base, adapter, rope=rope)
    inputs = tokenizer(text, return_tensors="pt").to(device)
    n_tokens = inputs["input_ids"].shape[1]
    print(f"Input length: {n_tokens} tokens", flush=True)
    limit = trained_length(Path(adapter)) if adapter else None
    native = getattr(model.config, "max_position_embeddings", None)
    if limit and n_tokens > limit:
        logger.warning("the input (%d tokens) is longer than the adapter was trained for (%d tokens)", n_tokens, limit)
    elif native and n_tokens > native:
        logger.warning("the input (%d tokens) is longer than the model's window (%d tokens)", n_tokens, native)
    streamer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    with torch.no_grad():
        output = model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            temperature=temperature if do_sample else None,
            top_p=None,
            top_k=None,
            streamer=streamer,
            pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
        )
    return tokenizer.decode(output[0, n_tokens:], skip_special_tokens=True)
