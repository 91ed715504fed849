"""What a training run holds while it runs: the state its phases share (:class:`Run`) and what
:func:`fathom.train.loop.train` returns (:class:`RunResult`). Its own module so that the loop, the step
(:mod:`fathom.train.step`), resuming (:mod:`fathom.train.resume`) and Phase 2's setup
(:mod:`fathom.train.phase2`) read one definition without importing each other."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from fathom.config import FathomConfig
from fathom.data.cache import DocumentView
from fathom.data.instruct import InstructionSet
from fathom.model.rope import RopeRecord
from fathom.schedule import PhasePlan, final_model_dirname, pretrain_plans
from fathom.train import distributed
from fathom.train.checkpoint import RunLayout, TrainerState
from fathom.train.progress import StatusFile
from fathom.train.tracking import Tracking


@dataclass
class RunResult:
    output_dir: Path
    final_dir: Path | None  # None when the run stopped early (max_steps or interrupted)
    state: TrainerState
    phase_losses: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class Run:
    """Everything the phases share: built once by :func:`train`."""

    config: FathomConfig
    plans: list[PhasePlan]
    ropes: list[RopeRecord]  # one per plan: the RoPE each phase trains with, recorded in its adapters
    layout: RunLayout
    model: torch.nn.Module
    tokenizer: object
    device: torch.device
    world: distributed.World
    token_docs: DocumentView
    held_out: DocumentView
    state: TrainerState
    result: RunResult
    instructions: InstructionSet | None = None  # Phase 2's examples (config.sft)
    data_summary: dict = field(default_factory=dict)  # counts, lengths, formats: for model cards (no text)
    step_module: torch.nn.Module | None = None  # model + loss, wrapped in DDP / FSDP when there are several ranks
    optimizer: torch.optim.Optimizer | None = None  # over the adapter (its shards under FSDP)
    tracking: Tracking | None = None  # TensorBoard and train.report_to's trackers (rank 0)
    status: StatusFile | None = None  # <output_dir>/status.json, for fathom runs (rank 0)

    def pretrain_final(self) -> str | None:
        """The Phase-1 final folder's name when Phase 2 follows (it is written when Phase 1 ends)."""
        pretrain = pretrain_plans(self.plans)
        return final_model_dirname(pretrain[-1].max_seq_length) if pretrain and self.config.sft else None

    def rope_of(self, plan: PhasePlan | None = None) -> RopeRecord:
        """The RoPE record of ``plan``, or of the phase in progress (the last one once all are done)."""
        return self.ropes[plan.index if plan is not None else min(self.state.phase_index, len(self.ropes) - 1)]

    def save_phase_folder(self, plan: PhasePlan, adapter_state: dict | None) -> None:
        """``plan``'s phase folder (adapter, tokenizer, trainer state): at its end, or again on resume."""
        self.layout.save_phase(
            plan.name, self.model, self.tokenizer, self.config, self.state, self.rope_of(plan), adapter_state
        )
