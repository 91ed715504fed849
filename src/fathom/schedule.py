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

import dataclasses
import math
from dataclasses import asdict, dataclass

from fathom.config import FathomConfig
from fathom.data.mix import mix_for


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
    kind: str = "pretrain"  # pretrain (Phase 1, language modelling) | sft (Phase 2, instruction tuning)
    learning_rate: float = 0.0  # peak learning rate of the phase

    @property
    def trained_tokens(self) -> int:
        return self.rows * self.max_seq_length

    def to_dict(self) -> dict:
        out = asdict(self)
        out["sequences"] = self.rows  # the name fathom plan --json used before "rows"
        out["trained_tokens"] = self.trained_tokens
        return out


def final_model_dirname(max_seq_length: int, instruct: bool = False) -> str:
    """``final_32k_model`` for 32768; ``final_1k_model`` for 1024; ``final_300_model`` for 300;
    ``final_32k_instruct_model`` for Phase 2's."""
    size = f"{max_seq_length // 1024}k" if max_seq_length % 1024 == 0 else str(max_seq_length)
    return f"final_{size}_{'instruct_' if instruct else ''}model"


def merged_model_dirname(max_seq_length: int) -> str:
    """``merged_32k_model``: the Phase-1-merged weights that sft.lora_init merged trains Phase 2 over."""
    return final_model_dirname(max_seq_length).replace("final_", "merged_", 1)


def _phase_plan(config: FathomConfig, index: int, name: str, seq_len: int, tokens: int, world_size: int, **extra):
    t = config.train
    rows_per_micro = t.micro_batch_size * world_size
    micro_batches = max(1, math.ceil(tokens / (seq_len * rows_per_micro)))
    return PhasePlan(
        index=index,
        name=name,
        max_seq_length=seq_len,
        tokens=tokens,
        rows=micro_batches * rows_per_micro,
        steps=math.ceil(micro_batches / t.gradient_accumulation_steps),
        tokens_per_step=seq_len * rows_per_micro * t.gradient_accumulation_steps,
        micro_batches_per_rank=micro_batches,
        **extra,
    )


def plan_phases(config: FathomConfig, world_size: int = 1, sft_rows_per_epoch: int | None = None) -> list[PhasePlan]:
    """Split the token budget over the phases and count rows and steps for ``world_size`` ranks.

    Phase 2 (``config.sft``) comes last. Its budget is ``sft.total_tokens``, else ``sft.epochs`` passes
    over the instruction examples: ``sft_rows_per_epoch`` packed rows each (counted from the data by
    :func:`fathom.data.instruct.rows_per_epoch`), plus the replayed Phase-1 rows; without either the
    phase plans 0 tokens (the data decides).
    """
    if world_size < 1:
        raise ValueError(f"world_size: must be >= 1, got {world_size}")
    t = config.train
    plans = [
        _phase_plan(
            config,
            i,
            phase.name,
            phase.max_seq_length,
            round(t.total_tokens * phase.token_fraction),
            world_size,
            learning_rate=t.learning_rate,
        )
        for i, phase in enumerate(config.phases())
    ]
    sft = config.sft
    if sft is not None:
        if sft.total_tokens is not None:
            tokens = sft.total_tokens
        elif sft_rows_per_epoch is not None:
            tokens = sft_rows(sft.epochs, sft_rows_per_epoch, sft.replay_fraction) * sft.max_seq_length
        else:
            tokens = 0
        plan = _phase_plan(
            config,
            len(plans),
            sft.name,
            sft.max_seq_length,
            tokens,
            world_size,
            kind="sft",
            learning_rate=sft.learning_rate,
        )
        plans.append(plan if tokens else dataclasses.replace(plan, rows=0, steps=0, micro_batches_per_rank=0))
    return plans


def sft_rows(passes: float, rows_per_epoch: int, replay_fraction: float) -> int:
    """Rows of Phase 2 that make ``passes`` passes over its examples, the replayed Phase-1 rows added."""
    return math.ceil(passes * rows_per_epoch / (1 - replay_fraction))


def sft_passes(rows: int, rows_per_epoch: int, replay_fraction: float) -> float:
    """How many passes over Phase 2's examples ``rows`` rows make, the replayed Phase-1 rows taken out
    (the inverse of :func:`sft_rows`, arguments in the same order).

    The number to watch in Phase 2: on bench/quality.py its gain on held-out questions came from passes
    over the training questions (0.35 -> 0.7 passes: +36 points, docs/benchmarks.md); under one pass,
    most examples are never trained on.
    """
    return rows * (1 - replay_fraction) / max(rows_per_epoch, 1)


def pretrain_plans(plans: list[PhasePlan]) -> list[PhasePlan]:
    return [p for p in plans if p.kind == "pretrain"]


# Past about four epochs, repeated tokens are worth rapidly less than new ones (Muennighoff et al. 2023,
# "Scaling Data-Constrained Language Models"), and a LoRA adapter starts to recite its documents.
MANY_DRAWS = 4.0


def schedule_concerns(config: FathomConfig, plans: list[PhasePlan], lengths) -> list[str]:
    """What Phase 1 will not teach as configured on documents of ``lengths`` tokens (the training ones),
    each a sentence with its fix: ``fathom train`` logs them before the model loads, ``fathom data
    stats`` and ``fathom plan`` print them.

    Two: a corpus seen so often that the adapter memorizes it (the most-drawn document's draws summed over
    the phases, an upper bound), and a longer phase (any but the first) with no document half its row's
    length, whose rows are then packed from short documents and never ask the model to read across them."""
    phases = [(plan, mix_for(config.phases()[plan.index], lengths)) for plan in pretrain_plans(plans)]
    concerns = []
    draws = sum(mix.most_draws(plan.trained_tokens) for plan, mix in phases)
    if draws > MANY_DRAWS:
        concerns.append(
            f"Phase 1 shows each training document up to {draws:.1f} times; past about {MANY_DRAWS:.0f}, repeated "
            "tokens add little and the adapter memorizes them: add documents or lower train.total_tokens"
        )
    for plan, mix in phases[1:]:
        if mix.long_documents == 0:
            concerns.append(
                f"{plan.name}: no training document has {mix.long_threshold:,} tokens (half of its "
                f"{plan.max_seq_length:,}-token rows), so its rows are packed from shorter documents and never ask "
                "the model to read across them: add long documents, or end the schedule at a length they reach"
            )
    return concerns


def plan_summary(config: FathomConfig, world_size: int = 1, sft_rows_per_epoch: int | None = None) -> dict:
    """The plan as one JSON-ready object (what ``fathom plan --json`` prints)."""
    plans = plan_phases(config, world_size, sft_rows_per_epoch)
    pretrain = pretrain_plans(plans)
    summary = {
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
        "final_model_dir": final_model_dirname(pretrain[-1].max_seq_length) if pretrain else None,
    }
    if config.sft is not None:
        summary["final_instruct_model_dir"] = final_model_dirname(config.sft.max_seq_length, instruct=True)
        if sft_rows_per_epoch:
            rows = plans[-1].rows
            summary["phases"][-1]["example_rows_per_pass"] = sft_rows_per_epoch
            one_pass = sft_rows(1, sft_rows_per_epoch, config.sft.replay_fraction) * config.sft.max_seq_length
            summary["phases"][-1]["tokens_per_pass"] = one_pass  # replayed rows included, as sft.epochs: 1 plans
            summary["phases"][-1]["passes_over_examples"] = round(
                sft_passes(rows, sft_rows_per_epoch, config.sft.replay_fraction), 3
            )
    return summary
