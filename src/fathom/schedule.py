"""The phase plan: a pure function of the config and the world size (no model, no I/O).

Worked example (the shipped 7B config, one GPU): 500M tokens, micro batch 1, gradient accumulation 8::

    Phase_1a_Short   4,096  x 0.60 -> 300,000,000 tokens -> 73,243 rows -> 9,156 steps
    Phase_1b_Medium 16,384  x 0.30 -> 150,000,000 tokens ->  9,156 rows -> 1,145 steps
    Phase_1c_Long   32,768  x 0.10 ->  50,000,000 tokens ->  1,526 rows ->   191 steps

A phase's token budget is rounded up to whole rows (and whole rows per micro-batch across all ranks),
so the tokens it trains exceed the budget by less than one micro-batch. Its last optimizer step
may hold fewer micro-batches than ``gradient_accumulation_steps``; the loss is normalized by the
tokens actually in the step, so a short last step is not over-weighted.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from fathom.config import FathomConfig


@dataclass(frozen=True)
class PhasePlan:
    """What one phase will train."""

    index: int
    name: str
    max_seq_length: int
    tokens: int  # the phase's token budget (total_tokens x token_fraction)
    rows: int  # packed rows of max_seq_length the phase trains, over all ranks
    steps: int  # optimizer steps
    tokens_per_step: int  # max_seq_length x micro_batch_size x gradient_accumulation_steps x world_size
    micro_batches_per_rank: int  # forward passes each rank makes in the phase

    @property
    def trained_tokens(self) -> int:
        return self.rows * self.max_seq_length

    def to_dict(self) -> dict:
        out = asdict(self)
        out["sequences"] = self.rows  # the name fathom plan --json used before "rows"
        out["trained_tokens"] = self.trained_tokens
        return out


def final_model_dirname(max_seq_length: int) -> str:
    """``final_32k_model`` for 32768; ``final_1k_model`` for 1024; ``final_300_model`` for 300."""
    if max_seq_length % 1024 == 0:
        return f"final_{max_seq_length // 1024}k_model"
    return f"final_{max_seq_length}_model"


def plan_phases(config: FathomConfig, world_size: int = 1) -> list[PhasePlan]:
    """Split the token budget over the phases and count rows and steps for ``world_size`` ranks."""
    if world_size < 1:
        raise ValueError(f"world_size: must be >= 1, got {world_size}")
    t = config.train
    plans = []
    for index, phase in enumerate(config.phases()):
        tokens = round(t.total_tokens * phase.token_fraction)
        rows_per_micro = t.micro_batch_size * world_size
        micro_batches = max(1, math.ceil(tokens / (phase.max_seq_length * rows_per_micro)))
        steps = math.ceil(micro_batches / t.gradient_accumulation_steps)
        plans.append(
            PhasePlan(
                index=index,
                name=phase.name,
                max_seq_length=phase.max_seq_length,
                tokens=tokens,
                rows=micro_batches * rows_per_micro,
                steps=steps,
                tokens_per_step=phase.max_seq_length * rows_per_micro * t.gradient_accumulation_steps,
                micro_batches_per_rank=micro_batches,
            )
        )
    return plans


def plan_summary(config: FathomConfig, world_size: int = 1) -> dict:
    """The plan as one JSON-ready object (what ``fathom plan --json`` prints)."""
    plans = plan_phases(config, world_size)
    return {
        "model": config.model.name_or_path,
        "output_dir": config.output_dir,
        "world_size": world_size,
        "progressive": config.train.progressive,
        "total_tokens": config.train.total_tokens,
        "micro_batch_size": config.train.micro_batch_size,
        "gradient_accumulation_steps": config.train.gradient_accumulation_steps,
        "phases": [p.to_dict() for p in plans],
        "total_steps": sum(p.steps for p in plans),
        "total_trained_tokens": sum(p.trained_tokens for p in plans),
        "final_model_dir": final_model_dirname(plans[-1].max_seq_length),
    }
