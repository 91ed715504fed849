"""``fathom generate``: the guide's long-document test, with the adapter the run produced.

Loads the base (and an adapter folder written by ``fathom train``), reads a long document, says how
many tokens it is and whether that is beyond the length the adapter was trained at, and streams the
model's continuation (or its answer to ``--prompt``, appended after the document).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from fathom.config import ConfigError
from fathom.model.adapter import load_for_inference, read_adapter

logger = logging.getLogger("fathom")


def generate(
    base: str,
    file: str,
    adapter: str | None = None,
    prompt: str | None = None,
    max_new_tokens: int = 512,
    do_sample: bool = False,
    temperature: float = 0.7,
    rope: str | None = None,
    chat: bool | None = None,
) -> str:
    """Stream a continuation of ``file`` (plus ``prompt``) to stdout; returns the generated text.

    ``chat`` (default: when the adapter was written by Phase 2) asks with the chat template instead:
    the document and ``prompt`` fill the adapter's ``sft.prompt_template`` in a user turn, after its
    ``sft.system`` where it trained with one.
    """
    from transformers import TextStreamer

    path = Path(file)
    if not path.is_file():
        raise ConfigError(f"--file: {path} does not exist")
    info = read_adapter(adapter) if adapter else None
    text = path.read_text(encoding="utf-8", errors="replace")
    template = info.prompt_template if info else None
    chat = template is not None if chat is None else chat
    model, tokenizer, device = load_for_inference(base, adapter, rope=rope)
    if chat:
        from fathom.data.instruct import QaPrompt, ensure_chat_template

        ensure_chat_template(tokenizer)
        asked = QaPrompt(template, info.system) if template else QaPrompt()
        messages = asked.messages(text.rstrip(), prompt or "")
        inputs = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        ).to(device)
    else:
        inputs = tokenizer(f"{text.rstrip()}\n\n{prompt}" if prompt else text, return_tensors="pt").to(device)
    n_tokens = inputs["input_ids"].shape[1]
    print(f"Input length: {n_tokens} tokens", flush=True)
    limit = info.trained_length if info else None
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
