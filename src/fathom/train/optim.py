"""AdamW over the trainable parameters, and a learning rate that is a function of tokens seen."""

from __future__ import annotations

import math

import torch

from fathom.config import TrainConfig


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over the parameters that require grad (the LoRA weights and any modules trained whole)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("lora: the model has no trainable parameters; check lora.target_modules")
    fused = all(p.is_cuda for p in params)
    return torch.optim.AdamW(
        params,
        lr=cfg.learning_rate,
        betas=(cfg.adam_beta1, cfg.adam_beta2),
        eps=cfg.adam_epsilon,
        weight_decay=cfg.weight_decay,
        fused=fused or None,
    )


def lr_multiplier(progress: float, warmup_ratio: float, scheduler: str, min_lr_ratio: float) -> float:
    """Multiplier of the peak learning rate at ``progress`` (0..1, share of the schedule's tokens seen
    once the step is done, so the first step already has a small non-zero rate and the last one
    ends exactly at the minimum).

    Linear warmup from ~0 over ``warmup_ratio``, then cosine or linear decay to ``min_lr_ratio``
    (or constant). E.g. warmup 0.1, cosine, min 0.1: 0.0 -> 0.0, 0.05 -> 0.5, 0.1 -> 1.0, 0.55 -> 0.55, 1.0 -> 0.1.
    """
    progress = min(max(progress, 0.0), 1.0)
    if warmup_ratio > 0 and progress < warmup_ratio:
        return progress / warmup_ratio
    if scheduler == "constant":
        return 1.0
    decay = (progress - warmup_ratio) / max(1.0 - warmup_ratio, 1e-12)
    shape = 0.5 * (1.0 + math.cos(math.pi * decay)) if scheduler == "cosine" else 1.0 - decay
    return min_lr_ratio + (1.0 - min_lr_ratio) * shape


def learning_rate_at(
    cfg: TrainConfig,
    phase_tokens_done: int,
    phase_tokens: int,
    run_tokens_done: int,
    run_tokens: int,
    peak: float | None = None,
    own_schedule: bool = False,
) -> float:
    """The learning rate of an optimizer step; the ``*_done`` counts include that step's tokens.

    With ``rewarmup_each_phase`` (or ``own_schedule``, as Phase 2 has) a phase warms up and decays
    over its own tokens (the new sequence length shifts the loss landscape, and a fresh warmup keeps
    the first long-context steps stable); otherwise one schedule spans the whole run. ``peak``: the
    phase's peak rate (default ``cfg.learning_rate``).
    """
    if cfg.rewarmup_each_phase or own_schedule:
        progress = phase_tokens_done / max(phase_tokens, 1)
    else:
        progress = run_tokens_done / max(run_tokens, 1)
    peak = cfg.learning_rate if peak is None else peak
    return peak * lr_multiplier(progress, cfg.warmup_ratio, cfg.lr_scheduler, cfg.min_lr_ratio)
