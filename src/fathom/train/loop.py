"""The training loop: one explicit pass over the phases, the same LoRA weights carried through all.

Read top to bottom: :func:`train` prepares (output folder, model, data, adapter, optimizer, resume
state), then runs :func:`_run_phase` for each phase of the plan and writes the final model. A phase
ends when its token budget is consumed; progress, the learning rate and the resume point are all
counted in tokens and rows, never in epochs.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from fathom.config import ConfigError, FathomConfig, check_strategy_fits_model, config_from_dict, validate
from fathom.data.cache import DocumentView, prepare_corpus
from fathom.data.loader import PhaseLoader
from fathom.data.mix import document_weights, phase_mix
from fathom.data.pack import IGNORE_INDEX
from fathom.data.tokenize import resolve_eod_token_id
from fathom.errors import RunExistsError, TrainingStopped
from fathom.model.adapter import loading_code
from fathom.model.load import load_configured_tokenizer, load_model
from fathom.model.lora import apply_lora
from fathom.model.loss import causal_lm_loss_sum, resolve_loss_implementation
from fathom.model.rope import RopeSetting, apply_rope, model_rope, phase_ropes, write_rope_record
from fathom.schedule import PhasePlan, final_model_dirname, plan_phases
from fathom.train import distributed
from fathom.train.checkpoint import (
    TRAINER_STATE,
    RunLayout,
    TrainerState,
    capture_rng_state,
    restore_rng_state,
)
from fathom.train.optim import build_optimizer, learning_rate_at
from fathom.train.tracking import NullLogger, PhaseLogger, peak_memory_gb

logger = logging.getLogger("fathom")

# Fields whose change makes a checkpoint meaningless for the run being resumed.
_RESUME_MUST_MATCH = (
    ("model", "name_or_path"),
    ("lora", None),
    ("data", "paths"),
    ("train", "total_tokens"),
    ("train", "progressive"),
    ("train", "schedule"),
    ("train", "seed"),
)


@dataclass
class RunResult:
    output_dir: Path
    final_dir: Path | None  # None when the run stopped early (max_steps or interrupted)
    state: TrainerState
    phase_losses: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class _Run:
    """Everything the phases share: built once by :func:`train`."""

    config: FathomConfig
    plans: list[PhasePlan]
    ropes: list[RopeSetting]  # one per plan
    native_rope: RopeSetting  # the base model's own
    base_source: str  # what from_pretrained loaded (named in the adapters' loading instructions)
    layout: RunLayout
    model: torch.nn.Module
    tokenizer: object
    device: torch.device
    optimizer: torch.optim.Optimizer
    step_module: torch.nn.Module  # model + loss, wrapped in DDP when there are several ranks
    world: distributed.World
    token_docs: DocumentView
    held_out: DocumentView
    state: TrainerState
    result: RunResult


def _check_resume_compatible(saved: FathomConfig, current: FathomConfig) -> None:
    a, b = saved.to_dict(), current.to_dict()
    for section, key in _RESUME_MUST_MATCH:
        left = a[section] if key is None else a[section][key]
        right = b[section] if key is None else b[section][key]
        if left != right:
            where = section if key is None else f"{section}.{key}"
            raise ConfigError(
                f"{where}: differs from the run being resumed ({left!r} there, {right!r} now); "
                "resume with the same value or start a new output_dir"
            )


def _end_of_phase_eval(run: _Run, plan: PhasePlan, tb) -> None:
    """Needles and perplexity by position at this phase's lengths; a failure is logged, never fatal."""
    from fathom.eval.runner import evaluate_phase

    try:
        cfg = run.config.eval
        with torch.no_grad():
            scalars = evaluate_phase(
                run.model,
                run.tokenizer,
                run.device,
                plan.max_seq_length,
                cfg.depths,
                cfg.samples,
                list(cfg.kinds),
                list(run.held_out),
                run.config.train.seed,
            )
        tb.scalars(run.state.global_step, scalars)
        logger.info(
            "%s eval: %s", plan.name, ", ".join(f"{k.removeprefix('eval/')} {v:.3g}" for k, v in scalars.items())
        )
    except Exception as exc:  # evaluation must never cost the user the run
        logger.warning(
            "%s: end-of-phase evaluation failed (%s: %s); training goes on",
            plan.name,
            type(exc).__name__,
            str(exc)[:200],
        )


def _warn_if_global_batch_changed(
    saved: FathomConfig | None, config: FathomConfig, old_world: int, new_world: int
) -> None:
    if saved is None:
        return
    old = saved.train.micro_batch_size * saved.train.gradient_accumulation_steps * old_world
    new = config.train.micro_batch_size * config.train.gradient_accumulation_steps * new_world
    if old != new:
        keep = old / (config.train.micro_batch_size * new_world)
        hint = f"; train.gradient_accumulation_steps={int(keep)} keeps it" if keep == int(keep) and keep >= 1 else ""
        logger.warning(
            "--resume: the global batch changes from %d to %d rows per step (micro_batch_size x "
            "gradient_accumulation_steps x world size %d)%s; the data position stays exact",
            old,
            new,
            new_world,
            hint,
        )


def _load_saved_config(layout: RunLayout) -> FathomConfig | None:
    import yaml

    if not layout.config_file.is_file():
        return None
    saved = config_from_dict(yaml.safe_load(layout.config_file.read_text(encoding="utf-8")))
    validate(saved, check_paths=False)
    return saved


def _prepare_documents(config: FathomConfig, tokenizer) -> tuple[DocumentView, DocumentView]:
    """Training and held-out documents from the token cache (built on first use, reused after)."""
    eod = resolve_eod_token_id(tokenizer, config.data.eod_token)
    cache = prepare_corpus(config, tokenizer, eod)
    documents = cache.train_documents()
    if not len(documents):
        skipped = cache.meta.get("skipped_by_reason") or {}
        detail = f" (skipped: {', '.join(f'{n} {r}' for r, n in skipped.items())})" if skipped else ""
        raise ConfigError(f"data.paths: no usable training documents in {', '.join(config.data.paths)}{detail}")
    lengths = documents.lengths
    logger.info(
        "data: %s training documents, %s tokens, median %d / longest %d tokens; end of document %r (id %d)",
        f"{len(documents):,}",
        f"{int(lengths.sum()):,}",
        int(np.median(lengths)),
        int(lengths.max()),
        tokenizer.convert_ids_to_tokens(eod),
        eod,
    )
    return documents, cache.eval_documents()


def train(config: FathomConfig, resume: bool = False) -> RunResult:
    """Run (or resume) the progressive schedule of ``config``; returns where everything was written.

    Launched by torchrun / accelerate with several processes, every rank runs this; see
    :mod:`fathom.train.distributed`.
    """
    world = distributed.setup(config.train.strategy)
    try:
        return _train(config, resume, world)
    finally:
        distributed.teardown(world)


def _train(config: FathomConfig, resume: bool, world: distributed.World) -> RunResult:
    world_size = world.size
    layout = RunLayout(config.output_dir)
    plans = plan_phases(config, world_size)
    final_dirname = final_model_dirname(plans[-1].max_seq_length)

    checkpoint_dir = None
    if layout.holds_a_run():
        if not resume:
            raise RunExistsError(
                f"output_dir: {layout.root} already holds a run; pass --resume to continue it, "
                "or choose another output_dir (nothing was changed)"
            )
        saved = _load_saved_config(layout)
        if saved is not None:
            _check_resume_compatible(saved, config)
        checkpoint_dir = layout.latest_checkpoint()
        if checkpoint_dir is None:
            logger.warning("--resume: %s has no complete checkpoint yet; starting from the beginning", layout.root)
        else:
            last = TrainerState.from_file(checkpoint_dir / TRAINER_STATE)
            if last.run_complete:
                logger.info("--resume: the run in %s is already complete", layout.root)
                return RunResult(layout.root, layout.final_dir(final_dirname), last)
    elif resume:
        logger.warning("--resume: %s holds no run yet; starting from the beginning", layout.root)

    check_strategy_fits_model(world.strategy, config.model)
    distributed.barrier(world)  # every rank has checked the folder before rank 0 writes to it
    # The documents before the model: a corpus with nothing usable is reported in seconds, not after loading.
    tokenizer = load_configured_tokenizer(config.model)
    if not world.is_main:
        distributed.barrier(world)  # rank 0 builds the token cache; the others then read it
    token_docs, held_out = _prepare_documents(config, tokenizer)
    if world.is_main:
        distributed.barrier(world)
    torch.manual_seed(config.train.seed)
    loaded = load_model(
        config.model,
        offload_activations=config.train.offload_activations,
        # FSDP moves each rank's shards to the GPU: the whole base never has to fit on one
        place_on_device=world.strategy != "fsdp",
        tokenizer=tokenizer,
    )
    native_rope = model_rope(loaded.model.config)
    ropes = [setting for setting, _ in _plan_ropes(config, plans, native_rope)]
    model = apply_lora(loaded.model, config.lora, config.train.seed)
    loss_implementation = resolve_loss_implementation(config.train.loss_implementation, loaded.device)
    logger.info("loss: %s cross-entropy", loss_implementation)

    state = TrainerState(world_size=world_size)
    optim_state = None
    if checkpoint_dir is not None:
        from peft import set_peft_model_state_dict

        state, adapter, optim_state, rng = RunLayout.load_checkpoint(checkpoint_dir)
        set_peft_model_state_dict(model, adapter)
        restore_rng_state(rng)
        logger.info(
            "resuming from %s: phase %s, step %d, %s tokens seen",
            checkpoint_dir.name,
            state.phase_name,
            state.phase_step,
            f"{state.tokens_seen:,}",
        )
        if state.phase_complete:
            if world.is_main and not (layout.phase_dir(state.phase_name) / TRAINER_STATE).is_file():
                # stopped while the phase folder was being written: write it again from the checkpoint
                done = ropes[[p.name for p in plans].index(state.phase_name)]
                layout.describe_adapter = lambda tmp, path: write_rope_record(
                    tmp, path, done, native_rope, loaded.source
                )
                layout.save_phase(state.phase_name, model, loaded.tokenizer, config, state)  # not sharded yet
            state.phase_index += 1
            state.phase_step = state.phase_tokens_seen = state.phase_rows_consumed = 0
            state.phase_complete = False
            state.log_history = []
        _warn_if_global_batch_changed(saved, config, state.world_size, world_size)
        state.world_size = world_size  # rows are counted globally, so another world size resumes fine
    if world.is_main:
        layout.write_run_config(config)

    result = RunResult(layout.root, None, state)
    if config.train.max_steps and state.global_step >= config.train.max_steps:
        logger.warning(
            "train.max_steps=%d is already reached (step %d); set train.max_steps=0 or higher to continue",
            config.train.max_steps,
            state.global_step,
        )
        return result
    step_module = distributed.wrap(
        world,
        distributed.LossModule(model, causal_lm_loss_sum, config.train.loss_chunk_size, loss_implementation),
        loaded.device,
        cpu_offload=config.train.fsdp_cpu_offload,
    )
    optimizer = build_optimizer(model, config.train)  # after wrapping: FSDP replaces the parameters by shards
    if optim_state is not None:
        distributed.load_optimizer_state(optimizer, optim_state)
    run = _Run(
        config,
        plans,
        ropes,
        native_rope,
        loaded.source,
        layout,
        model,
        loaded.tokenizer,
        loaded.device,
        optimizer,
        step_module,
        world,
        token_docs,
        held_out,
        state,
        result,
    )
    # log lines go through tqdm.write, so they never land in the middle of a progress bar
    with _sigterm_as_interrupt(), logging_redirect_tqdm():
        for plan in plans[state.phase_index :]:
            if not _run_phase(run, plan):
                return result
    state.run_complete = True
    result.final_dir = layout.final_dir(final_dirname)
    _save(run, final=final_dirname)
    if world.is_main:
        logger.info("done: final model in %s", result.final_dir)
        if not ropes[-1].same_as(native_rope):
            logger.info("it was trained with %s; the loading code below applies it", ropes[-1].describe())
        logger.info(
            "load it with plain transformers + peft (also in its README.md):\n%s",
            loading_code(loaded.source, result.final_dir.resolve(), ropes[-1], native_rope),
        )
    distributed.barrier(world)
    return result


def _save(run: _Run, phase: str | None = None, final: str | None = None, rng=None) -> Path | None:
    """Write a checkpoint (and a phase or final folder): gathered on every rank under FSDP, written by rank 0."""
    world, layout, config, state = run.world, run.layout, run.config, run.state
    adapter_state = distributed.adapter_state_for_save(world, run.model)
    optimizer_state = (
        distributed.optimizer_state_for_save(world, run.optimizer)
        if world.is_main or world.strategy == "fsdp"
        else None
    )
    if not world.is_main:
        return None
    if phase is not None:
        layout.save_phase(phase, run.model, run.tokenizer, config, state, adapter_state)
    if final is not None:
        layout.save_final(final, run.model, run.tokenizer, config, state, adapter_state)
    return layout.save_checkpoint(
        run.model,
        optimizer_state,
        config,
        state,
        rng if rng is not None else capture_rng_state(),
        config.train.save_total_limit,
        adapter_state,
    )


def _run_phase(run: _Run, plan: PhasePlan) -> bool:
    """Train one phase to its token budget; False when the run stopped early (resumable)."""
    config, layout, state, model, optimizer = run.config, run.layout, run.state, run.model, run.optimizer
    world, t = run.world, config.train
    run_tokens = sum(p.trained_tokens for p in run.plans)
    resumed_mid_phase = state.phase_step > 0
    state.phase_index, state.phase_name = plan.index, plan.name
    rope = run.ropes[run.plans.index(plan)]
    if apply_rope(model, rope):
        logger.info("%s: RoPE set to %s", plan.name, rope.describe())
    layout.describe_adapter = lambda tmp, path: write_rope_record(tmp, path, rope, run.native_rope, run.base_source)
    phase_cfg = config.phases()[plan.index]
    mix = phase_mix(
        run.token_docs.lengths, plan.max_seq_length, phase_cfg.long_doc_upsample, phase_cfg.target_long_fraction()
    )
    loader = PhaseLoader(
        run.token_docs,
        plan.max_seq_length,
        t.seed,
        plan.index,
        t.micro_batch_size,
        world.size,
        world.rank,
        start_row=state.phase_rows_consumed,
        weights=document_weights(run.token_docs.lengths, mix),
    )
    tb = (
        PhaseLogger(layout.phase_logs(plan.name), purge_step=state.global_step + 1 if resumed_mid_phase else None)
        if world.is_main
        else NullLogger()
    )
    if not resumed_mid_phase:
        tb.text(
            "phase_transition",
            f"step {state.global_step}: **{plan.name}** begins: max_seq_length {plan.max_seq_length:,}, "
            f"{plan.tokens:,} tokens, {plan.steps:,} optimizer steps",
            state.global_step,
        )
        tb.scalars(state.global_step, {"train/seq_len": plan.max_seq_length, "train/phase_index": plan.index})
        pass_tokens = mix.long_tokens * mix.long_weight + mix.short_tokens * mix.short_weight
        logger.info(
            "%s: %s tokens at max_seq_length %s, %d steps (%.2g passes over the corpus); %.0f%% of tokens from "
            "documents of >= %s tokens%s",
            plan.name,
            f"{plan.tokens:,}",
            f"{plan.max_seq_length:,}",
            plan.steps,
            plan.trained_tokens / max(pass_tokens, 1),
            100 * mix.long_share,
            f"{mix.long_threshold:,}",
            f" (natural {100 * mix.natural_long_share:.0f}%)" if mix.weighted else "",
        )
    params = [p for p in model.parameters() if p.requires_grad]
    losses = run.result.phase_losses.setdefault(plan.name, [])
    bar = tqdm(
        total=plan.trained_tokens,
        initial=state.phase_tokens_seen,
        unit="tok",
        unit_scale=True,
        desc=plan.name,
        dynamic_ncols=True,
        leave=True,
        disable=not world.is_main,
    )
    last_time = time.perf_counter()
    # The data position and RNG of the last completed step: what Ctrl-C saves.
    committed = (state.phase_rows_consumed, capture_rng_state())
    try:
        # Progress is counted in global rows, so a run resumed with another world size ends where it should.
        rows_per_micro = t.micro_batch_size * world.size
        while state.phase_rows_consumed < plan.sequences:
            remaining_micro = -(-(plan.sequences - state.phase_rows_consumed) // rows_per_micro)
            n_micro = min(t.gradient_accumulation_steps, remaining_micro)
            batches = [loader.next_micro_batch() for _ in range(n_micro)]
            local_label_tokens = sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in batches)
            (step_label_tokens,) = distributed.all_reduce_sum(world, [local_label_tokens], run.device)
            step_tokens = sum(b["input_ids"].numel() for b in batches) * world.size
            lr = learning_rate_at(
                t,
                state.phase_tokens_seen + step_tokens,
                plan.trained_tokens,
                state.tokens_seen + step_tokens,
                run_tokens,
            )
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss_sum = 0.0
            # DDP averages gradients over ranks; scaling by the world size turns that into the sum,
            # so every token of the global step weighs the same, as in one process.
            scale = world.size / max(step_label_tokens, 1)
            try:
                for i, batch in enumerate(batches):
                    batch = {k: v.to(run.device) for k, v in batch.items()}
                    last = i == len(batches) - 1
                    with distributed.accumulating(world, run.step_module, last):
                        micro_loss = run.step_module(batch)
                        (micro_loss * scale).backward()
                    loss_sum += float(micro_loss.detach())
            except torch.cuda.OutOfMemoryError as exc:
                raise TrainingStopped(_oom_advice(plan, config, run.device)) from exc
            (loss_sum,) = distributed.all_reduce_sum(world, [loss_sum], run.device)
            loss = loss_sum / max(step_label_tokens, 1)
            if not math.isfinite(loss):
                raise TrainingStopped(
                    f"{plan.name} step {state.phase_step + 1}: loss is {loss}; lower train.learning_rate or check the "
                    f"data. The last checkpoint in {layout.checkpoints_dir} is intact"
                )
            grad_norm = distributed.as_float(
                torch.nn.utils.clip_grad_norm_(params, t.max_grad_norm if t.max_grad_norm > 0 else float("inf"))
            )
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

            state.phase_rows_consumed = loader.rows_consumed
            state.phase_step += 1
            state.global_step += 1
            state.phase_tokens_seen += step_tokens
            state.tokens_seen += step_tokens
            committed = (state.phase_rows_consumed, capture_rng_state())
            losses.append(loss)
            now = time.perf_counter()
            tokens_per_second = step_tokens / max(now - last_time, 1e-9)
            last_time = now
            bar.update(step_tokens)
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", refresh=False)
            phase_done = state.phase_rows_consumed >= plan.sequences
            if state.global_step % t.log_every_steps == 0 or phase_done:
                record = {
                    "step": state.global_step,
                    "loss": loss,
                    "learning_rate": lr,
                    "grad_norm": grad_norm,
                    "tokens_seen": state.tokens_seen,
                }
                state.log_history.append(record)
                tb.scalars(
                    state.global_step,
                    {
                        "train/loss": loss,
                        "train/learning_rate": lr,
                        "train/grad_norm": grad_norm,
                        "train/tokens_seen": state.tokens_seen,
                        "train/tokens_per_second": tokens_per_second,
                        "train/seq_len": plan.max_seq_length,
                        "train/phase_index": plan.index,
                        "train/peak_memory_gb": peak_memory_gb(run.device),
                    },
                )
            stop_now = (
                t.max_steps > 0
                and state.global_step >= t.max_steps
                and not (phase_done and plan.index == run.plans[-1].index)
            )
            if phase_done:
                state.phase_complete = True
                _save(run, phase=plan.name)
                if config.eval.enabled and (world.is_main or distributed.evaluates_on_every_rank(world)):
                    with distributed.whole_model(world, run.step_module):
                        _end_of_phase_eval(run, plan, tb)
                distributed.barrier(world)
                first, last = losses[0], float(np.mean(losses[-max(1, len(losses) // 10) :]))
                logger.info(
                    "%s done: %d steps, %s tokens, loss %.4f -> %.4f, saved to %s",
                    plan.name,
                    state.phase_step,
                    f"{state.phase_tokens_seen:,}",
                    first,
                    last,
                    layout.phase_dir(plan.name),
                )
            elif stop_now or (t.save_every_steps and state.global_step % t.save_every_steps == 0):
                _save(run)
                distributed.barrier(world)
            if stop_now:
                logger.info("stopping after train.max_steps=%d steps; continue with --resume", t.max_steps)
                return False
    except KeyboardInterrupt:
        # Save the state of the last completed step: its rows, its RNG, its weights.
        rows, rng = committed
        optimizer.zero_grad(set_to_none=True)
        state.phase_rows_consumed = rows
        if world.strategy == "fsdp":
            # gathering the shards needs every rank, and the others may already be gone
            logger.warning(
                "interrupted: under FSDP the last written checkpoint in %s stands; continue with --resume",
                layout.checkpoints_dir,
            )
        elif world.is_main:
            ckpt = _save(run, rng=rng)
            logger.warning("interrupted: state of step %d saved to %s; continue with --resume", state.global_step, ckpt)
        raise
    finally:
        bar.close()
        tb.close()
    # the next phase starts fresh
    state.phase_step = state.phase_tokens_seen = state.phase_rows_consumed = 0
    state.phase_complete = False
    state.log_history = []
    return True


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """Treat SIGTERM (a scheduler's preemption, `kill`) like Ctrl-C: save the last step, then stop."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _plan_ropes(config: FathomConfig, plans: list[PhasePlan], native: RopeSetting) -> list[tuple[RopeSetting, str]]:
    """Each phase's RoPE setting, logged; a phase past its window without scaling is warned about."""
    resolved = phase_ropes(native, config.model, config.phases(), plans)
    for plan, (setting, why) in zip(plans, resolved, strict=True):
        logger.info("%s: RoPE %s (%s)", plan.name, setting.describe(), why)
        if not setting.covers(plan.max_seq_length):
            logger.warning(
                "%s: max_seq_length %s is beyond the model's window (%s tokens) and RoPE is not scaled for it; "
                "set model.rope_scaling: auto (or e.g. yarn:%g) so positions past it are not garbage",
                plan.name,
                f"{plan.max_seq_length:,}",
                f"{setting.max_position_embeddings:,}",
                plan.max_seq_length / setting.max_position_embeddings,
            )
    return resolved


def _oom_advice(plan: PhasePlan, config: FathomConfig, device: torch.device) -> str:
    """The planner's fixes for this phase on this GPU, or the generic list when it cannot tell."""
    from fathom.planner import oom_advice

    memory_gib = None
    if device.type == "cuda":
        memory_gib = torch.cuda.get_device_properties(device).total_memory / 2**30
    advice = oom_advice(config, plan, memory_gib)
    if not advice:
        tips = []
        if not (config.model.load_in_8bit or config.model.load_in_4bit):
            tips.append("model.load_in_8bit=true (or load_in_4bit=true)")
        if not config.model.gradient_checkpointing:
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
