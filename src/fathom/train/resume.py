"""Resuming a run from the checkpoint :func:`fathom.train.checkpoint.resume_point` chose: its adapter,
RNG and state loaded into the run, a checkpoint that does not fit this run passed over for the one
before it, and a changed corpus or global batch said plainly."""

from __future__ import annotations

import logging

import torch
from safetensors.torch import load_file

from fathom.config import ConfigError, FathomConfig
from fathom.model.adapter import ADAPTER_WEIGHTS
from fathom.schedule import pretrain_plans
from fathom.train.checkpoint import TRAINER_STATE, ResumePoint, TrainerState, newest_intact, restore_rng_state
from fathom.train.phase2 import phase2_on_merged
from fathom.train.run import Run

logger = logging.getLogger("fathom")


def restore(run: Run, start: ResumePoint, allow_changed=()) -> dict | None:
    """Load the checkpoint ``start`` names into the run (adapter, RNG, state); its optimizer state is returned."""
    if start.checkpoint is None:
        return None
    loaded = start.loaded
    on_merged = resumes_on_merged(run, loaded.state)
    if on_merged:  # the checkpoint's LoRA sits over the Phase-1-merged weights: make them again
        pretrain_final = run.layout.final_dir(run.pretrain_final())
        misfit = load_adapter(run.model, load_file(str(pretrain_final / ADAPTER_WEIGHTS)))
        if misfit:
            raise ConfigError(f"--resume: {pretrain_final} does not fit this model and LoRA ({misfit})")
        phase2_on_merged(run, run.plans[-1])
    misfit = checkpoint_misfit(run, loaded)
    if misfit:  # tensors of the wrong shape, a phase the plan does not have: damaged like a truncated file
        logger.warning("--resume: checkpoint %s: %s; trying the one before it", loaded.folder.name, misfit)
        fits = lambda candidate: checkpoint_misfit(run, candidate)  # noqa: E731
        loaded = newest_intact(run.layout, fits=fits, older_than=loaded.folder, why_older=misfit)
        if resumes_on_merged(run, loaded.state) != on_merged:
            raise ConfigError(
                f"--resume: the newest intact checkpoint, {loaded.folder.name}, is from before Phase 2's merge; "
                "remove the damaged ones after it and resume again"
            )
    state, optim_state = loaded.state, loaded.optimizer
    restore_rng_state(loaded.rng)
    check_same_data(state, run.state.data_key, allow_changed)
    logger.info(
        "resuming from %s: phase %s, step %d, %s tokens seen",
        loaded.folder.name,
        state.phase_name,
        state.phase_step,
        f"{state.tokens_seen:,}",
    )
    run.state = run.result.state = state
    if state.phase_complete:
        done = run.plans[[p.name for p in run.plans].index(state.phase_name)]
        if not (run.layout.phase_dir(done.name) / TRAINER_STATE).is_file():
            # stopped while the phase folder was being written: write it again from the checkpoint
            run.world.on_main(run.save_phase_folder, done, None)
        final = run.pretrain_final()
        if final and done.index == len(pretrain_plans(run.plans)) - 1 and not run.layout.final_dir(final).is_dir():
            run.world.on_main(
                run.layout.save_final, final, run.model, run.tokenizer, run.config, state, run.rope_of(done)
            )
        state.phase_index += 1
        state.reset_phase_progress()
    warn_if_global_batch_changed(start.saved_config, run.config, state.world_size, run.world.size)
    state.world_size = run.world.size  # rows are counted globally, so another world size resumes fine
    return optim_state


def checkpoint_misfit(run: Run, loaded) -> str | None:
    """Why a checkpoint that loads whole cannot be this run's: outside its plan, or an adapter of other shapes.

    The adapter is loaded into the model on the way (the caller wants it there when it fits).
    """
    state, plans = loaded.state, run.plans
    if state.phase_index >= len(plans):
        return f"phase {state.phase_index + 1} of a plan of {len(plans)}"
    plan = plans[state.phase_index]
    # rows, not steps: steps change with the world size a run resumes on; rows round to one micro-batch of it
    if state.phase_rows_consumed > plan.rows + run.config.train.micro_batch_size * max(state.world_size, 1):
        return f"row {state.phase_rows_consumed:,} of {plan.name}, which has {plan.rows:,}"
    if state.phase_name and state.phase_name != plan.name:
        return f"phase {state.phase_name!r} where the plan has {plan.name!r}"
    misfit = load_adapter(run.model, loaded.adapter)
    return f"does not fit this model and LoRA ({misfit})" if misfit else None


def resumes_on_merged(run: Run, state: TrainerState) -> bool:
    """Whether a checkpoint with ``state`` holds a LoRA over the Phase-1-merged weights (sft.lora_init merged)."""
    sft = run.config.sft
    return sft is not None and sft.lora_init == "merged" and state.phase_name == sft.name


def load_adapter(model, adapter: dict[str, torch.Tensor]) -> str | None:
    """Load a checkpoint's adapter tensors into ``model``; why they do not fit (None when they do)."""
    from peft import set_peft_model_state_dict

    try:
        result = set_peft_model_state_dict(model, adapter)
    except (RuntimeError, ValueError) as exc:  # shapes that do not fit
        return str(exc).splitlines()[-1].strip()[:160] or type(exc).__name__
    missing = [k for k in getattr(result, "missing_keys", []) if "lora_" in k]
    return f"{len(missing)} adapter tensors missing, e.g. {missing[0]}" if missing else None


def check_same_data(saved: TrainerState, data_key: str, allow_changed) -> None:
    """A resumed run continues at the same row of the same documents: a changed corpus stops it, unless allowed."""
    if not saved.data_key or saved.data_key == data_key:
        return
    change = (
        f"the documents, their cleaning settings or the tokenizer differ from the run being resumed "
        f"(token cache {saved.data_key} there, {data_key} now)"
    )
    if "data" not in allow_changed:
        raise ConfigError(
            f"data.paths: {change}; resume with --allow-changed data to go on with them deliberately, "
            "or start a new output_dir"
        )
    logger.warning("--resume --allow-changed data: %s; the data position is kept, on the new documents", change)
    saved.data_changes.append(f"step {saved.global_step}: {saved.data_key} -> {data_key}")
    saved.data_key = data_key


def warn_if_global_batch_changed(
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
