"""Wrap the base model with the LoRA adapter (through PEFT) that every phase keeps training."""

from __future__ import annotations

import logging

import torch

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
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in peft_model.parameters())
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
