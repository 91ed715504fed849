"""Wrap the base model with the LoRA adapter (through PEFT) that every phase keeps training."""

from __future__ import annotations

import logging
import types
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.weak import WeakTensorKeyDictionary

from fathom.config import LoraConfig

logger = logging.getLogger("fathom")


def _module_name(model: torch.nn.Module, target: torch.nn.Module) -> str | None:
    for name, module in model.named_modules():
        if module is target:
            return name
    return None


def extra_trainable_modules(model: torch.nn.Module, cfg: LoraConfig) -> list[str]:
    """Full names of the modules trained whole and saved with the adapter (embeddings, norms).

    Full names, because PEFT matches ``modules_to_save`` by suffix and ``norm`` would also match
    ``input_layernorm``.
    """
    names: list[str] = []
    if cfg.train_embeddings:
        name = _module_name(model, model.get_input_embeddings())
        if name is None:
            raise ValueError("lora.train_embeddings: could not find this model's input embedding module")
        names.append(name)
    if cfg.train_norms:
        norms = [n for n, m in model.named_modules() if n and "norm" in type(m).__name__.lower()]
        if not norms:
            raise ValueError("lora.train_norms: this model has no module whose class name contains 'Norm'")
        names.extend(norms)
    return names


def apply_lora(model: torch.nn.Module, cfg: LoraConfig, seed: int):
    """A PeftModel with fresh LoRA weights (initialized from ``seed``); only adapter weights train."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    modules_to_save = extra_trainable_modules(model, cfg) or None
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    peft_config = PeftLoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=cfg.target_modules,
        modules_to_save=modules_to_save,
        ensure_weight_tying=bool(cfg.train_embeddings and tied),
        bias="none",
        task_type="CAUSAL_LM",
    )
    torch.manual_seed(seed)
    peft_model = get_peft_model(model, peft_config)
    if cfg.lean_forward:
        lean_lora_forward(peft_model, cfg.share_dropout)
    trainable, total = peft_model.get_nb_trainable_parameters()  # counts a 4-bit base's packed weights whole
    logger.info(
        "LoRA r=%d alpha=%d on %s%s: %s trainable of %s parameters (%.2f%%)",
        cfg.r,
        cfg.alpha,
        cfg.target_modules,
        f" + {len(modules_to_save)} modules trained whole" if modules_to_save else "",
        f"{trainable:,}",
        f"{total:,}",
        100 * trainable / max(total, 1),
    )
    return peft_model


def fresh_lora_on_merged(peft_model, cfg: LoraConfig, seed: int, rope, merged_dir: Path, tokenizer, record: dict):
    """A fresh LoRA over ``peft_model``'s weights with its adapter folded in (sft.lora_init merged).

    The merged weights are written once to ``merged_dir`` (a plain transformers folder, with the RoPE
    ``rope`` in its config) when ``tokenizer`` is given (rank 0) and the folder is not there yet; the
    new adapter's ``base_model_name_or_path`` names that folder, so plain transformers + peft load
    the instruct adapter over it. The new LoRA's initialization draws from its own RNG (``seed``):
    the run's RNG stream, which resume restores, is left as it was.
    """
    from fathom.model.merge import save_merged
    from fathom.model.rope import apply_rope

    base = peft_model.merge_and_unload()
    apply_rope(base, rope)
    if tokenizer is not None and not (merged_dir / "config.json").is_file():
        save_merged(base, tokenizer, merged_dir, record)
    with torch.random.fork_rng():  # CPU and CUDA generators restored afterwards
        model = apply_lora(base, cfg, seed)
    model.peft_config["default"].base_model_name_or_path = str(merged_dir.resolve())
    return model


_LEAN_TYPES = ("Linear", "Linear8bitLt", "Linear4bit")  # PEFT's LoRA layers over nn.Linear and bitsandbytes
_SHARED_DROPOUT = WeakTensorKeyDictionary()  # layer input -> (p, its dropped copy), while the input lives


def lean_lora_forward(peft_model, share_dropout: bool = True) -> int:
    """Give every LoRA linear layer fathom's lean forward (lora.lean_forward); returns how many.

    PEFT casts each layer input to the adapter's dtype (fp32 over a bf16 base) before the adapter
    path, and autograd keeps that fp32 copy (and its dropout output) for the backward: at 32K tokens
    on a 7B that is ~5 GiB in the recomputed layer. Here the adapter weights are cast to the input's
    dtype instead (r x in values, not T x in), so only bf16 activations are kept; the weights, their
    gradients and AdamW's state stay fp32. With ``share_dropout`` the projections that read the same
    input (q/k/v, gate/up) share one dropout mask, so one dropped copy is kept instead of three.
    Written by hand: PEFT has no option for either. A layer with a LoRA variant (DoRA) keeps PEFT's.
    """
    count = 0
    for module in peft_model.modules():
        if (
            type(module).__name__ in _LEAN_TYPES
            and hasattr(module, "lora_A")
            and not module.lora_variant
            and all(b.bias is None for b in module.lora_B.values())
        ):
            module.forward = types.MethodType(_lean_forward, module)
            module.fathom_share_dropout = share_dropout
            count += 1
    return count


def _lean_forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    if self.disable_adapters or self.merged or kwargs.get("adapter_names") is not None:
        return type(self).forward(self, x, *args, **kwargs)  # PEFT's own path for these cases
    result = self.base_layer(x, *args, **kwargs)
    for name in self.active_adapters:
        if name not in self.lora_A:
            continue
        dropped = _dropped(x, self.lora_dropout[name], self.fathom_share_dropout)
        hidden = F.linear(dropped, self.lora_A[name].weight.to(x.dtype))
        result = result + F.linear(hidden, self.lora_B[name].weight.to(x.dtype)) * self.scaling[name]
    return result


def _dropped(x: torch.Tensor, dropout: torch.nn.Module, share: bool) -> torch.Tensor:
    """``dropout(x)``; with ``share``, the same dropped tensor for every projection reading this ``x``."""
    if not isinstance(dropout, torch.nn.Dropout) or not dropout.training or dropout.p == 0:
        return x
    if not share:
        return dropout(x)
    cached = _SHARED_DROPOUT.get(x)
    if cached is not None and cached[0] == dropout.p:
        return cached[1]
    out = dropout(x)
    _SHARED_DROPOUT[x] = (dropout.p, out)
    return out
