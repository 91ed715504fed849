"""One optimizer step and its record: the micro-batches, the loss over every supervised token of all
ranks, the update (skipped when not finite), what is logged, and what to say when memory runs out."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import torch

from fathom.config import FathomConfig
from fathom.data.loader import PhaseLoader
from fathom.errors import TrainingStopped
from fathom.labels import IGNORE_INDEX
from fathom.schedule import PhasePlan
from fathom.train import distributed
from fathom.train.memory import step_down_after_oom
from fathom.train.optim import learning_rate_at
from fathom.train.run import Run
from fathom.train.tracking import peak_memory_gb

logger = logging.getLogger("fathom")


@dataclass
class StepStats:
    """One optimizer step, as logged."""

    loss: float  # mean over the step's supervised tokens, all ranks
    grad_norm: float
    learning_rate: float
    tokens: int  # tokens in the step, all ranks
    supervised_tokens: int  # tokens with a label (all but document starts; Phase 2: assistant tokens)
    seconds: float
    skipped: bool = False  # the loss or the gradient norm was not finite: no update was made


class DivergenceWatch:
    """Says once per phase when the loss stays far above its running mean: a run going wrong slowly.

    The mean is exponential (weight 0.9); after ``warmup`` steps, ``patience`` steps in a row above
    ``factor`` times it count as divergence.
    """

    def __init__(self, factor: float = 2.0, patience: int = 5, warmup: int = 10) -> None:
        self.factor, self.patience, self.warmup = factor, patience, warmup
        self.mean: float | None = None
        self.steps = self.above = 0
        self.reported = False
        self.loss = 0.0

    def update(self, loss: float) -> bool:
        """Take one step's loss; True the first time the phase looks divergent."""
        self.steps += 1
        self.loss = loss
        if self.mean is not None and self.steps > self.warmup and loss > self.factor * self.mean:
            self.above += 1
        else:
            self.above = 0
            self.mean = loss if self.mean is None else 0.9 * self.mean + 0.1 * loss
        if self.above >= self.patience and not self.reported:
            self.reported = True
            return True
        return False

    def describe(self, phase: str, step: int) -> str:
        return (
            f"{phase} step {step}: the loss ({self.loss:.3g}) has stayed above {self.factor:g}x its running mean "
            f"({self.mean:.3g}) for {self.patience} steps; the run may be diverging: consider a lower "
            "train.learning_rate and --resume from an earlier checkpoint"
        )


def train_step(run: Run, plan: PhasePlan, loader: PhaseLoader) -> StepStats:
    """One optimizer step: forward and backward over the step's micro-batches, then the update.

    Each micro-batch is ``micro_batch_size`` packed rows of ``max_seq_length`` tokens. The loss is the
    mean over every supervised token of the step on all ranks, so a short last step or an uneven
    split over ranks weighs each token the same as one process would.
    """
    started = time.perf_counter()
    world, state, t = run.world, run.state, run.config.train
    batches = next_batches(run, plan, loader)
    local_label_tokens = sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in batches)
    (step_label_tokens,) = distributed.all_reduce_sum(world, [local_label_tokens], run.device)
    step_tokens = sum(b["input_ids"].numel() for b in batches) * world.size
    run_tokens = sum(p.trained_tokens for p in run.plans)
    lr = learning_rate_at(
        t,
        state.phase_tokens_seen + step_tokens,
        plan.trained_tokens,
        state.tokens_seen + step_tokens,
        run_tokens,
        peak=plan.learning_rate,
        own_schedule=plan.kind == "sft",
    )
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    # DDP averages gradients over ranks; scaling by the world size turns that into the sum,
    # so every token of the global step weighs the same, as in one process.
    scale = world.size / max(step_label_tokens, 1)
    while True:
        try:
            loss_sum = forward_backward(run, batches, scale)
            break
        except torch.cuda.OutOfMemoryError as exc:
            run.optimizer.zero_grad(set_to_none=True)  # a retry starts the step's gradients afresh
            # one process only: with several, the others would wait in a collective for the one retrying
            if world.size > 1 or not step_down_after_oom(run.model, run.config, plan, run.device, state.memory):
                raise TrainingStopped(oom_message(plan, run.config, run.device)) from exc
    (loss_sum,) = distributed.all_reduce_sum(world, [loss_sum], run.device)
    loss = loss_sum / max(step_label_tokens, 1)
    params = [p for p in run.model.parameters() if p.requires_grad]
    grad_norm = distributed.as_float(
        torch.nn.utils.clip_grad_norm_(params, t.max_grad_norm if t.max_grad_norm > 0 else float("inf"))
    )
    finite = math.isfinite(loss) and math.isfinite(grad_norm)  # the same on every rank: both are all-reduced
    if finite:
        run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    seconds = time.perf_counter() - started
    return StepStats(loss, grad_norm, lr, step_tokens, int(step_label_tokens), seconds, skipped=not finite)


def next_batches(run: Run, plan: PhasePlan, loader: PhaseLoader) -> list[dict[str, torch.Tensor]]:
    """The micro-batches of the next optimizer step: accumulation steps, fewer at the phase's end.

    Progress is counted in global rows, so a run resumed with another world size ends where it should.
    """
    rows_per_micro = run.config.train.micro_batch_size * run.world.size
    remaining_micro = -(-(plan.rows - run.state.phase_rows_consumed) // rows_per_micro)
    n_micro = min(run.config.train.gradient_accumulation_steps, remaining_micro)
    return [loader.next_micro_batch() for _ in range(n_micro)]


def forward_backward(run: Run, batches: list[dict[str, torch.Tensor]], scale: float) -> float:
    """Forward and backward over the step's micro-batches (gradients accumulated); the summed loss."""
    loss_sum = 0.0
    for i, batch in enumerate(batches):
        batch = {k: v.to(run.device) for k, v in batch.items()}
        with distributed.accumulating(run.world, run.step_module, i == len(batches) - 1):
            micro_loss = run.step_module(batch)
            (micro_loss * scale).backward()
        loss_sum += float(micro_loss.detach())
    return loss_sum


def count_skipped_step(run: Run, plan: PhasePlan, stats: StepStats) -> None:
    """A step without an update (non-finite loss or gradients): warn, and stop once too many were skipped."""
    state, limit = run.state, run.config.train.max_skipped_steps
    state.skipped_steps += 1
    logger.warning(
        "%s step %d: loss %s, gradient norm %s: the update was skipped (%d of train.max_skipped_steps=%d)",
        plan.name,
        state.phase_step + 1,
        stats.loss,
        stats.grad_norm,
        state.skipped_steps,
        limit,
    )
    if state.skipped_steps > limit:
        newest = run.layout.latest_checkpoint()
        raise TrainingStopped(
            f"{plan.name}: {state.skipped_steps} steps had a non-finite loss or gradient norm; lower "
            f"train.learning_rate or check the data. "
            + (
                f"The newest checkpoint, {newest}, has finite weights; continue from it with --resume"
                if newest
                else "No checkpoint was written yet"
            )
        )


def log_step(run: Run, plan: PhasePlan, stats: StepStats, tb) -> None:
    """The step's record in the trainer state (saved with checkpoints) and its TensorBoard scalars."""
    state, peak_gib = run.state, peak_memory_gb(run.device)
    state.log_history.append(
        {
            "step": state.global_step,
            "loss": stats.loss,
            "learning_rate": stats.learning_rate,
            "grad_norm": stats.grad_norm,
            "tokens_seen": state.tokens_seen,
            "seconds": round(stats.seconds, 4),  # the step's wall time: the report's speed per phase
            "peak_memory_gib": round(peak_gib, 3),
        }
    )
    if run.status is not None:
        run.status.update(state, loss=stats.loss)
    tb.scalars(
        state.global_step,
        {
            "train/loss": stats.loss,
            "train/learning_rate": stats.learning_rate,
            "train/grad_norm": stats.grad_norm,
            "train/tokens_seen": state.tokens_seen,
            "train/supervised_tokens": state.supervised_tokens_seen,
            "train/tokens_per_second": stats.tokens / max(stats.seconds, 1e-9),
            "train/seq_len": plan.max_seq_length,
            "train/phase_index": plan.index,
            "train/peak_memory_gb": peak_gib,
        },
    )


def oom_message(plan: PhasePlan, config: FathomConfig, device: torch.device) -> str:
    """The planner's fixes for this phase on this GPU, or the generic list when it cannot tell."""
    from fathom.estimate import oom_advice

    memory_gib = None
    if device.type == "cuda":
        memory_gib = torch.cuda.get_device_properties(device).total_memory / 2**30
    advice = oom_advice(config, plan, memory_gib)
    if not advice:
        tips = []
        if not (config.model.load_in_8bit or config.model.load_in_4bit):
            tips.append("model.load_in_8bit=true (or load_in_4bit=true)")
        if config.model.gradient_checkpointing is False:
            tips.append("model.gradient_checkpointing=true")
        if config.train.micro_batch_size > 1:
            accumulation = config.train.gradient_accumulation_steps * config.train.micro_batch_size
            tips.append(f"train.micro_batch_size=1 with train.gradient_accumulation_steps={accumulation}")
        tips.append("train.offload_activations=true")
        advice = "try: " + "; ".join(tips)
    return (
        f"{plan.name}: out of GPU memory at max_seq_length {plan.max_seq_length:,}; {advice}; or drop {plan.name} "
        f"from train.schedule. The checkpoints already written are intact; rerun with --resume "
        f"(fathom plan --config ... shows the estimates)."
    )
