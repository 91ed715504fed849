"""The training loop: one explicit pass over the phases, the same LoRA weights carried through all.

Read top to bottom: :func:`train` prepares (where to start, documents, model, adapter, optimizer)
and runs :func:`_run_phase` for each phase of the plan, then writes the final model. A phase is a
loop of named steps: :func:`~fathom.train.step.train_step` (one optimizer step over a few
micro-batches), :func:`~fathom.train.step.log_step`, :func:`save` and, at its end,
:func:`finish_phase`. It ends when its token budget is consumed; progress, the learning rate and the
resume point are all counted in tokens and rows, never in epochs. Where a run resumes is decided
beside the checkpoints (:func:`fathom.train.checkpoint.resume_point`) and loaded by
:func:`fathom.train.resume.restore`; Phase 2's start is :mod:`fathom.train.phase2`.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from fathom.config import FathomConfig, check_strategy_fits_model, sft_merge_problems
from fathom.data.cache import DocumentView, prepare_corpus, require_training_documents
from fathom.data.eod import resolve_eod_token_id
from fathom.data.instruct import InstructionSet, QaPrompt, ensure_chat_template, prepare_instructions
from fathom.data.loader import PhaseLoader, RowLoader, instruction_rows
from fathom.data.mix import PhaseMix, document_weights, mix_for
from fathom.data.pack import epoch_stream, pack_rows
from fathom.errors import TrainingStopped, raise_problems
from fathom.model.allocator import prefer_expandable_segments
from fathom.model.load import lean_norms, load_configured_tokenizer, load_model, tile_mlps
from fathom.model.lora import apply_lora
from fathom.model.loss import causal_lm_loss_sum, resolve_loss_implementation
from fathom.model.rope import (
    RopeRecord,
    RopeSetting,
    apply_rope,
    loading_code,
    model_rope,
    nice_factor,
    phase_ropes,
)
from fathom.schedule import PhasePlan, final_model_dirname, plan_phases, pretrain_plans, schedule_concerns
from fathom.train import distributed
from fathom.train.checkpoint import (
    RunLayout,
    TrainerState,
    capture_rng_state,
    check_output_dir,
    resume_point,
)
from fathom.train.memory import apply_for_phase
from fathom.train.optim import build_optimizer
from fathom.train.phase2 import announce_instructions, load_init_adapter, phase2_on_merged
from fathom.train.progress import StatusFile, train_log
from fathom.train.resume import restore
from fathom.train.run import Run, RunResult
from fathom.train.step import DivergenceWatch, StepStats, count_skipped_step, log_step, train_step
from fathom.train.trackers import check_trackers_installed
from fathom.train.tracking import NullLogger, Tracking, reset_peak_memory

logger = logging.getLogger("fathom")


def train(config: FathomConfig, resume: bool = False, allow_changed: tuple[str, ...] = ()) -> RunResult:
    """Run (or resume) the progressive schedule of ``config``; returns where everything was written.

    Launched by torchrun / accelerate with several processes, every rank runs this; see
    :mod:`fathom.train.distributed`.
    """
    prefer_expandable_segments()  # for callers other than the CLI (the guide's script, notebooks)
    world = distributed.setup(config.train.strategy)
    finished = False
    try:
        result = _train(config, resume, world, allow_changed)
        finished = True
        return result
    finally:
        distributed.teardown(world, finished)


def _train(config: FathomConfig, resume: bool, world: distributed.World, allow_changed=()) -> RunResult:
    """One run per output folder: rank 0 holds its lock throughout and clears what killed writes left."""
    layout = RunLayout(config.output_dir)
    if not world.is_main:
        return _train_in(layout, config, resume, world, allow_changed)
    check_output_dir(layout.root)
    with layout.locked(), train_log(layout.root):
        layout.remove_leftovers()
        return _train_in(layout, config, resume, world, allow_changed)


def _train_in(
    layout: RunLayout, config: FathomConfig, resume: bool, world: distributed.World, allow_changed
) -> RunResult:
    final_dirname = _final_dirname(config)
    start = resume_point(layout, config, resume)
    if start.run_complete and config.sft is not None and start.state.phase_index < len(config.phases()):
        logger.info("--resume: the run's Phase 1 is complete; it continues with Phase 2 (%s)", config.sft.name)
        start.state.run_complete = False
        start.state.phase_complete = True  # its last phase is done: resume moves on to the next one
    if start.run_complete:
        logger.info("--resume: the run in %s is already complete", layout.root)
        return RunResult(layout.root, layout.final_dir(final_dirname), start.state)
    check_strategy_fits_model(world.strategy, config.model)
    check_trackers_installed(config.train.report_to)
    raise_problems(sft_merge_problems(config, world.strategy))
    distributed.barrier(world)  # every rank has checked the folder before rank 0 writes to it

    # The data before the model: a corpus with nothing usable is reported in seconds, not after loading.
    tokenizer = load_configured_tokenizer(config.model)
    token_docs, held_out, data_key, corpus = [], [], "", {}
    if config.needs_corpus():
        with distributed.main_first(world):  # rank 0 builds the token cache; the others then read it
            token_docs, held_out, data_key, corpus = _prepare_documents(config, tokenizer)
    instructions = _prepare_instructions(config, tokenizer)
    plans = plan_phases(config, world.size, instructions.rows_per_epoch if instructions else None)
    # before the model loads, and only while Phase 1 has phases to train: a run resumed into Phase 2 heard them
    if config.needs_corpus() and (start.state is None or start.state.phases_done() < len(config.phases())):
        for concern in schedule_concerns(config, plans, token_docs.lengths):
            world.on_main(logger.warning, concern)
    torch.manual_seed(config.train.seed)
    loaded = load_model(
        config.model,
        offload_activations=config.train.offload_activations,
        # FSDP moves each rank's shards to the GPU: the whole base never has to fit on one
        place_on_device=world.strategy != "fsdp",
        tokenizer=tokenizer,
    )
    native_rope = model_rope(loaded.model.config, config.model.native_context)
    ropes = [RopeRecord(setting, native_rope, loaded.source) for setting in _plan_ropes(config, plans, native_rope)]
    model = apply_lora(loaded.model, config.lora, config.train.seed)
    tile_mlps(model, config.train.mlp_tile_tokens)
    if config.train.lean_norms:
        lean_norms(model)
    state = TrainerState(world_size=world.size, data_key=data_key)
    run = Run(
        config=config,
        plans=plans,
        ropes=ropes,
        layout=layout,
        model=model,
        tokenizer=loaded.tokenizer,
        device=loaded.device,
        world=world,
        token_docs=token_docs,
        held_out=held_out,
        state=state,
        result=RunResult(layout.root, None, state),
        instructions=instructions,
        data_summary=_data_summary(corpus, instructions),
    )
    optim_state = restore(run, start, allow_changed)  # into the whole model, before it is wrapped (and sharded)
    logger.info("loss: %s cross-entropy", resolve_loss_implementation(config.train.loss_implementation, loaded.device))
    _wrap_for_training(run)
    if optim_state is not None:
        distributed.load_optimizer_state(run.optimizer, optim_state)
    world.on_main(layout.write_run_config, config, run.data_summary)
    if config.train.max_steps and run.state.global_step >= config.train.max_steps:
        logger.warning(
            "train.max_steps=%d is already reached (step %d); set train.max_steps=0 or higher to continue",
            config.train.max_steps,
            run.state.global_step,
        )
        return run.result
    _run_phases(run, final_dirname)
    return run.result


def _run_phases(run: Run, final_dirname: str) -> None:
    """The phases from where the run stands, then the final folder; trackers and status.json hear how it ended."""
    plans = [p.to_dict() for p in run.plans]
    run.status = run.world.on_main(StatusFile, run.layout.root, plans)
    if run.status is not None:  # a resumed run names the checkpoint it resumed from until it writes one
        run.status.update(run.state, checkpoint=run.layout.latest_checkpoint())
    run.tracking = run.world.on_main(Tracking, run.config, run.layout.root, plans)
    ending = "failed"
    try:
        # log lines go through tqdm.write, so they never land in the middle of a progress bar
        with _sigterm_as_interrupt(), logging_redirect_tqdm():
            for plan in run.plans[run.state.phase_index :]:
                if not _run_phase(run, plan):
                    ending = "stopped"
                    return
        _finish_run(run, final_dirname)
        ending = "complete"
    except KeyboardInterrupt:
        ending = "stopped"
        raise
    finally:
        if run.status is not None:
            run.status.update(run.state, ending, checkpoint=run.layout.latest_checkpoint())
            _refresh_report(run)
        if run.tracking is not None:
            run.tracking.close(ending)


def _wrap_for_training(run: Run) -> None:
    """The step module (model + loss, in DDP / FSDP when there are several ranks) and a new optimizer."""
    t = run.config.train
    loss_implementation = resolve_loss_implementation(t.loss_implementation, run.device)
    run.step_module = distributed.wrap(
        run.world,
        distributed.LossModule(run.model, causal_lm_loss_sum, t.loss_chunk_size, loss_implementation),
        run.device,
        cpu_offload=t.fsdp_cpu_offload,
    )
    run.optimizer = build_optimizer(run.model, t)  # after wrapping: FSDP replaces the parameters by shards


def _fresh_optimizer(run: Run) -> None:
    """Phase 2 as its own stage (sft.optimizer_state: fresh): a new AdamW, so the momentum and second moments
    of Phase 1's plain-text gradients do not steer the instruction steps (carried, they send a third of Phase
    2's move on along Phase 1's direction; fresh: +5 and +11 points on the demo's held-out questions, two
    seeds; docs/benchmarks.md). A resume inside Phase 2 loads the moments its checkpoint saved, which are
    this optimizer's."""
    run.optimizer = None  # the old moments go before the new ones are allocated
    run.optimizer = build_optimizer(run.model, run.config.train)
    logger.info("Phase 2 starts with a fresh optimizer (sft.optimizer_state: fresh)")


def _run_phase(run: Run, plan: PhasePlan) -> bool:
    """Train one phase to its token budget; False when the run stopped early (resumable)."""
    state = run.state
    loader, tb = _start_phase(run, plan)
    losses = run.result.phase_losses.setdefault(plan.name, [])
    bar = tqdm(
        total=plan.trained_tokens,
        initial=state.phase_tokens_seen,
        unit="tok",
        unit_scale=True,
        desc=plan.name,
        dynamic_ncols=True,
        leave=True,
        disable=not run.world.is_main,
    )
    # The data position and RNG of the last completed step: what Ctrl-C saves.
    committed = (state.phase_rows_consumed, capture_rng_state())
    divergence = DivergenceWatch()
    try:
        while state.phase_rows_consumed < plan.rows:
            stats = train_step(run, plan, loader)
            _count_step(run, plan, stats, loader.rows_consumed)
            committed = (state.phase_rows_consumed, capture_rng_state())
            losses.append(stats.loss)
            if not stats.skipped and divergence.update(stats.loss):
                message = divergence.describe(plan.name, state.global_step)
                logger.warning(message)
                tb.text("divergence", message, state.global_step)
            bar.update(stats.tokens)
            bar.set_postfix(loss=f"{stats.loss:.4f}", lr=f"{stats.learning_rate:.2e}", refresh=False)
            if not _after_step(run, plan, stats, tb):
                return False
    except KeyboardInterrupt:
        _save_on_interrupt(run, committed)
        raise
    finally:
        bar.close()
        tb.close()
    state.reset_phase_progress()  # the next phase starts fresh
    return True


def _start_phase(run: Run, plan: PhasePlan):
    """Set the phase up where the run stands: its RoPE, its rows, Phase 2's starting adapter, its memory
    setup and its logger (announced when it starts, not when it resumes); returns (loader, logger)."""
    state, world = run.state, run.world
    resumed_mid_phase = state.phase_step > 0
    state.phase_index, state.phase_name = plan.index, plan.name
    if apply_rope(run.model, run.rope_of(plan).setting):
        logger.info("%s: RoPE set to %s", plan.name, run.rope_of(plan).setting.describe())
    loader, mix = _phase_loader(run, plan)
    if plan.kind == "sft" and not resumed_mid_phase:  # Phase 2 begins: its adapter and optimizer
        if run.config.sft.init_adapter:
            load_init_adapter(run, run.config.sft.init_adapter)
        if run.config.sft.lora_init == "merged":
            phase2_on_merged(run, plan)
            _wrap_for_training(run)  # a new LoRA, so a new optimizer too
        elif run.config.sft.optimizer_state == "fresh" and plan.index > 0:  # index 0: the optimizer is new already
            _fresh_optimizer(run)
    shards = world.size if world.strategy == "fsdp" else 1
    state.memory[plan.name] = apply_for_phase(run.model, run.config, plan, run.device, state.memory, shards)
    reset_peak_memory(run.device)  # each phase's measured peak its own, beside its planned one
    purge = state.global_step + 1 if resumed_mid_phase else None
    tb = run.tracking.phase(run.layout.phase_logs(plan.name), purge) if run.tracking else NullLogger()
    if not resumed_mid_phase:
        _announce_phase(run, plan, mix, tb)
    return loader, tb


def _count_step(run: Run, plan: PhasePlan, stats: StepStats, rows_consumed: int) -> None:
    """The step in the run's counters (rows, steps, tokens), a skipped update counted against its limit."""
    state = run.state
    if stats.skipped:
        count_skipped_step(run, plan, stats)
    state.phase_rows_consumed = rows_consumed
    state.phase_step += 1
    state.global_step += 1
    state.phase_tokens_seen += stats.tokens
    state.tokens_seen += stats.tokens
    state.supervised_tokens_seen += stats.supervised_tokens


def _after_step(run: Run, plan: PhasePlan, stats: StepStats, tb) -> bool:
    """Log, checkpoint or finish the phase after a step; False when train.max_steps stops the run here."""
    state, t = run.state, run.config.train
    phase_done = state.phase_rows_consumed >= plan.rows
    if state.global_step % t.log_every_steps == 0 or phase_done:
        log_step(run, plan, stats, tb)
    last_of_run = phase_done and plan.index == run.plans[-1].index
    stop_now = t.max_steps > 0 and state.global_step >= t.max_steps and not last_of_run
    if phase_done:
        finish_phase(run, plan, tb)
    elif stop_now or (t.save_every_steps and state.global_step % t.save_every_steps == 0):
        save(run)
        distributed.barrier(run.world)
    if stop_now:
        logger.info("stopping after train.max_steps=%d steps; continue with --resume", t.max_steps)
    return not stop_now


def _phase_loader(run: Run, plan: PhasePlan) -> tuple[RowLoader, PhaseMix]:
    """The phase's rows from where the run stands: documents packed (Phase 1), or whole instruction
    examples with a share of replayed Phase-1 rows (Phase 2); and the length mix they follow."""
    t, world, start = run.config.train, run.world, run.state.phase_rows_consumed
    if plan.kind == "pretrain":
        mix = mix_for(run.config.phases()[plan.index], run.token_docs.lengths)
        weights = document_weights(run.token_docs.lengths, mix)
        loader = PhaseLoader(
            run.token_docs,
            plan.max_seq_length,
            t.seed,
            plan.index,
            t.micro_batch_size,
            world.size,
            world.rank,
            start_row=start,
            weights=weights,
        )
        return loader, mix
    sft, examples = run.config.sft, run.instructions
    replay = None
    if sft.replay_fraction > 0:
        replay = pack_rows(epoch_stream(run.token_docs, t.seed, plan.index), plan.max_seq_length)
    pad_id = run.tokenizer.pad_token_id if run.tokenizer.pad_token_id is not None else run.tokenizer.eos_token_id
    rows = instruction_rows(
        examples.pairs(), plan.max_seq_length, t.seed, plan.index, pad_id, examples.weights, replay, sft.replay_fraction
    )
    return RowLoader(rows, t.micro_batch_size, world.size, world.rank, start_row=start), examples.mix


def finish_phase(run: Run, plan: PhasePlan, tb) -> None:
    """Save the phase folder and a checkpoint, evaluate when asked, say how the phase went."""
    state, world = run.state, run.world
    state.phase_complete = True
    last_pretrain = plan.kind == "pretrain" and plan.index == len(pretrain_plans(run.plans)) - 1
    save(run, phase=plan, final=run.pretrain_final() if last_pretrain else None)
    if run.config.eval.enabled and (world.is_main or distributed.evaluates_on_every_rank(world)):
        with distributed.whole_model(world, run.step_module):
            _end_of_phase_eval(run, plan, tb)
    distributed.barrier(world)
    world.on_main(_refresh_report, run)
    losses = run.result.phase_losses[plan.name]
    logger.info(
        "%s done: %d steps, %s tokens, loss %.4f -> %.4f, saved to %s",
        plan.name,
        state.phase_step,
        f"{state.phase_tokens_seen:,}",
        losses[0],
        float(np.mean(losses[-max(1, len(losses) // 10) :])),
        run.layout.phase_dir(plan.name),
    )


def _refresh_report(run: Run) -> None:
    """``<output_dir>/report.html`` (fathom report) as the run stands; a page that cannot be drawn is a
    warning, never a stopped run."""
    from fathom.reports.html import write_report

    try:
        write_report(run.layout.root)
    except Exception as exc:  # matplotlib, a half-written file: the training matters more
        logger.warning(
            "report.html not written (%s: %s); fathom report %s draws it later",
            type(exc).__name__,
            exc,
            run.layout.root,
        )


def save(run: Run, phase: PhasePlan | None = None, final: str | None = None, rng=None) -> Path | None:
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
    _refuse_non_finite(run, adapter_state)
    record = run.rope_of(phase)
    if phase is not None:
        run.save_phase_folder(phase, adapter_state)
    if final is not None:
        layout.save_final(final, run.model, run.tokenizer, config, state, record, adapter_state)
    checkpoint = layout.save_checkpoint(
        run.model,
        optimizer_state,
        config,
        state,
        rng if rng is not None else capture_rng_state(),
        config.train.save_total_limit,
        record,
        adapter_state,
    )
    if run.status is not None:
        run.status.update(state, checkpoint=checkpoint)
    return checkpoint


def _refuse_non_finite(run: Run, adapter_state: dict | None) -> None:
    """Never write an adapter with a non-finite value: stop instead, naming the newest checkpoint."""
    tensors = adapter_state.values() if adapter_state is not None else run.model.parameters()
    if all(bool(torch.isfinite(t).all()) for t in tensors if adapter_state is not None or t.requires_grad):
        return
    newest = run.layout.latest_checkpoint()
    raise TrainingStopped(
        f"step {run.state.global_step}: the adapter's weights are not finite, so nothing was saved; lower "
        "train.learning_rate. " + (f"The newest checkpoint, {newest}, is finite" if newest else "No checkpoint exists")
    )


def _save_on_interrupt(run: Run, committed: tuple[int, dict]) -> None:
    """Ctrl-C / SIGTERM: save the state of the last completed step (its rows, its RNG, its weights)."""
    rows, rng = committed
    run.optimizer.zero_grad(set_to_none=True)
    run.state.phase_rows_consumed = rows
    if run.world.strategy == "fsdp":
        # gathering the shards needs every rank, and the others may already be gone
        logger.warning(
            "interrupted: under FSDP the last written checkpoint in %s stands; continue with --resume",
            run.layout.checkpoints_dir,
        )
    else:
        try:
            checkpoint = save(run, rng=rng)  # written by rank 0; under DDP nothing is gathered, so no rank waits
        except KeyboardInterrupt:  # a second Ctrl-C: the write is dropped whole (atomic), the older one stands
            logger.warning(
                "interrupted again while saving: that checkpoint was dropped; %s stands; continue with --resume",
                run.layout.latest_checkpoint() or "no checkpoint",
            )
            raise
        run.world.on_main(
            logger.warning,
            "interrupted: state of step %d saved to %s; continue with --resume",
            run.state.global_step,
            checkpoint,
        )


def _finish_run(run: Run, final_dirname: str) -> None:
    """Mark the run complete, write the final folder, and print how to load it."""
    run.state.run_complete = True
    run.result.final_dir = run.layout.final_dir(final_dirname)
    save(run, final=final_dirname)
    run.world.on_main(_log_done, run)
    if run.tracking is not None:
        run.tracking.file(run.layout.config_file)
        run.tracking.file(run.result.final_dir / "README.md")
    distributed.barrier(run.world)


def _log_done(run: Run) -> None:
    last = run.ropes[-1]
    logger.info("done: final model in %s", run.result.final_dir)
    logger.info("the run on one page, for a browser: %s (fathom report)", run.layout.root / "report.html")
    if not last.setting.same_as(last.base_setting):
        logger.info("it was trained with %s; the loading code below applies it", last.setting.describe())
    logger.info(
        "load it with plain transformers + peft (also in its README.md):\n%s",
        loading_code(
            _absolute_if_local(last.base_name), run.result.final_dir.resolve(), last.setting, last.base_setting
        ),
    )


def _absolute_if_local(name: str) -> str:
    """A local folder as an absolute path (the code works pasted anywhere); a Hub id as it is."""
    return str(Path(name).resolve()) if Path(name).exists() else name


def _announce_phase(run: Run, plan: PhasePlan, mix: PhaseMix, tb) -> None:
    """The phase-transition marks in TensorBoard and the phase's one-line summary in the log."""
    step = run.state.global_step
    tb.text(
        "phase_transition",
        f"step {step}: **{plan.name}** begins: max_seq_length {plan.max_seq_length:,}, "
        f"{plan.tokens:,} tokens, {plan.steps:,} optimizer steps",
        step,
    )
    tb.scalars(step, {"train/seq_len": plan.max_seq_length, "train/phase_index": plan.index})
    if plan.kind == "sft":
        announce_instructions(run, plan, mix)
        return
    logger.info(
        "%s: %s tokens at max_seq_length %s, %d steps (%.2g passes over the corpus); %.0f%% of tokens from "
        "documents of >= %s tokens%s",
        plan.name,
        f"{plan.tokens:,}",
        f"{plan.max_seq_length:,}",
        plan.steps,
        mix.passes(plan.trained_tokens),
        100 * mix.long_share,
        f"{mix.long_threshold:,}",
        f" (natural {100 * mix.natural_long_share:.0f}%)" if mix.weighted else "",
    )


def _final_dirname(config: FathomConfig) -> str:
    """The run's last folder: ``final_<len>_instruct_model`` after Phase 2, else ``final_<len>_model``."""
    if config.sft is not None:
        return final_model_dirname(config.sft.max_seq_length, instruct=True)
    return final_model_dirname(config.phases()[-1].max_seq_length)


def _prepare_instructions(config: FathomConfig, tokenizer) -> InstructionSet | None:
    """Phase 2's examples, rendered with the chat template (which the saved tokenizers then carry)."""
    if config.sft is None:
        return None
    ensure_chat_template(tokenizer)
    return prepare_instructions(config.sft, tokenizer, config.train.seed, len(config.phases()))


def _data_summary(corpus: dict, instructions: InstructionSet | None) -> dict:
    """What the run trained on, as counts (written to the output folder for model cards; no text)."""
    summary = {"corpus": corpus} if corpus else {}
    if instructions is not None:
        summary["instructions"] = {
            "examples": len(instructions.examples),
            "by_format": dict(instructions.report.by_format),
            "supervised_tokens": int(sum(e.supervised_tokens for e in instructions.examples)),
            "longest_tokens": int(instructions.lengths().max()) if instructions.examples else 0,
        }
    return summary


def _prepare_documents(config: FathomConfig, tokenizer) -> tuple[DocumentView, DocumentView, str, dict]:
    """Training and held-out documents from the token cache (built on first use, reused after), the
    cache's key (it changes with any document's content, the tokenizer or the cleaning settings) and
    its summary (counts and formats, for model cards)."""
    eod = resolve_eod_token_id(tokenizer, config.data.eod_token)
    cache = prepare_corpus(config, tokenizer, eod, verify=True)  # checksums once per run
    documents = require_training_documents(cache, config.data.paths)
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
    return documents, cache.eval_documents(), cache.folder.name, cache.summary()


def _end_of_phase_eval(run: Run, plan: PhasePlan, tb) -> None:
    """Needles and perplexity by position at this phase's lengths; a failure is logged, never fatal."""
    from fathom.eval.runner import evaluate_phase

    heatmap = run.layout.phase_dir(plan.name) / "needle_heatmap.png"
    heatmap.unlink(missing_ok=True)  # only this evaluation's picture is logged
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
                qa_prompt=QaPrompt.of(run.config.sft) if plan.kind == "sft" else None,
                heatmap=heatmap,
            )
        tb.scalars(run.state.global_step, scalars)
        if heatmap.is_file():
            tb.image("eval/needle_heatmap", heatmap, run.state.global_step)
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


def _plan_ropes(config: FathomConfig, plans: list[PhasePlan], native: RopeSetting) -> list[RopeSetting]:
    """Each phase's RoPE setting, logged; a phase past its window without scaling is warned about."""
    resolved = phase_ropes(native, config.model, config.phase_configs(), plans)
    for plan, (setting, why) in zip(plans, resolved, strict=True):
        logger.info("%s: RoPE %s (%s)", plan.name, setting.describe(), why)
        if not setting.covers(plan.max_seq_length):
            logger.warning(
                "%s: max_seq_length %s is beyond the window the model was trained on (%s tokens) and RoPE is not "
                "scaled for it; set model.rope_scaling: auto (or e.g. yarn:%g) so positions past it are not garbage",
                plan.name,
                f"{plan.max_seq_length:,}",
                f"{setting.window:,}",
                nice_factor(plan.max_seq_length / setting.window),
            )
    return [setting for setting, _ in resolved]
