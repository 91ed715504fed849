"""Phase 2's start: the adapter it continues (Phase 1's, or ``sft.init_adapter``'s), a fresh LoRA over
the Phase-1-merged weights (``sft.lora_init: merged``), and the line that says what it trains on."""

from __future__ import annotations

import logging

from safetensors.torch import load_file

from fathom.config import ConfigError
from fathom.data.mix import PhaseMix
from fathom.model.adapter import ADAPTER_WEIGHTS
from fathom.model.lora import fresh_lora_on_merged
from fathom.model.rope import RopeRecord
from fathom.schedule import PhasePlan, merged_model_dirname, pretrain_plans, sft_passes
from fathom.train.checkpoint import adapter_magnitude_problem, nonfinite_problem
from fathom.train.run import Run

logger = logging.getLogger("fathom")


def load_init_adapter(run: Run, folder: str) -> None:
    """sft.init_adapter: Phase 2 starts from that adapter's weights (same LoRA settings) instead of Phase 1's."""
    from peft import set_peft_model_state_dict

    from fathom.model.adapter import read_adapter

    info = read_adapter(folder, "sft.init_adapter")
    try:
        weights = load_file(str(info.folder / ADAPTER_WEIGHTS))
        problem = adapter_magnitude_problem(weights) or nonfinite_problem(weights)
        if problem:
            raise ConfigError(f"sft.init_adapter: {folder}: {problem}; give an adapter fathom train wrote")
        result = set_peft_model_state_dict(run.model, weights)
    except (OSError, RuntimeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"sft.init_adapter: {folder} does not fit this LoRA ({str(exc).splitlines()[0]})") from None
    if getattr(result, "unexpected_keys", None):
        raise ConfigError(
            f"sft.init_adapter: {folder} holds weights this LoRA does not have; use the same lora: settings"
        )
    logger.info("Phase 2 starts from the adapter in %s", folder)


def phase2_on_merged(run: Run, plan: PhasePlan) -> None:
    """sft.lora_init merged: the Phase-1 LoRA (in ``run.model`` now) is folded into the weights, written as
    ``merged_<len>_model`` by rank 0, and Phase 2 gets a fresh LoRA over them, whose adapters name it."""
    merged_dir = run.layout.root / merged_model_dirname(pretrain_plans(run.plans)[-1].max_seq_length)
    setting = run.rope_of(plan).setting
    record = {
        "base_model": run.config.model.name_or_path,
        "base_source": run.rope_of(plan).base_name,
        "adapter": str(run.layout.final_dir(run.pretrain_final())),
        "base_rope": run.rope_of(plan).base_setting.to_dict(),
    }
    run.model = fresh_lora_on_merged(
        run.model, run.config.lora, run.config.train.seed + plan.index, setting, merged_dir,
        run.tokenizer if run.world.is_main else None, record,
    )  # fmt: skip
    run.ropes[plan.index] = RopeRecord(setting, setting, str(merged_dir.resolve()))
    logger.info("%s: a fresh LoRA over the Phase-1-merged weights in %s", plan.name, merged_dir)


def announce_instructions(run: Run, plan: PhasePlan, mix: PhaseMix) -> None:
    """Phase 2's line in the log: its examples, the passes its budget makes over them and the replay share,
    so that a budget too small for the questions (a fraction of one pass) shows before the run does."""
    examples, sft = run.instructions, run.config.sft
    logger.info(
        "%s: %s instruction examples (%s), %s supervised tokens per pass; %s tokens at max_seq_length %s, "
        "%d steps (%.2g passes), %.0f%% of rows replayed from the Phase-1 corpus, %.0f%% of example tokens "
        "from examples of >= %s tokens",
        plan.name,
        f"{len(examples.examples):,}",
        ", ".join(f"{n} {kind}" for kind, n in examples.report.by_format.items()),
        f"{sum(e.supervised_tokens for e in examples.examples):,}",
        f"{plan.tokens:,}",
        f"{plan.max_seq_length:,}",
        plan.steps,
        sft_passes(plan.rows, examples.rows_per_epoch, sft.replay_fraction),
        100 * sft.replay_fraction,
        100 * mix.long_share,
        f"{mix.long_threshold:,}",
    )
