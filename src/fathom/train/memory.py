"""``train.memory``: how each phase keeps its activations on the device it runs on, chosen at its start.

The planner (:func:`fathom.estimate.choose_memory`) ranks the setups from fastest to most frugal (no
gradient checkpointing; checkpointing fewer layers before more; every layer with the activations
offloaded) and takes the first whose estimate fits the device; this module reads the device, applies
the setup to the model (:func:`fathom.model.load.set_checkpointing`), says what it chose and why, and
keeps the choice in the run's state so that ``--resume`` trains the phase the same way even where the
device or its free memory changed. Checkpointing changes no value the step computes (non-reentrant
recompute with the RNG state kept), only its time and memory.
"""

from __future__ import annotations

import dataclasses
import logging

import torch

from fathom.config import FathomConfig
from fathom.estimate import (
    GIB,
    Hardware,
    MemorySetup,
    ModelShape,
    Options,
    choose_memory,
    memory_candidates,
    memory_setup,
    usable_memory_gib,
)
from fathom.model.load import set_checkpointing
from fathom.schedule import PhasePlan

logger = logging.getLogger("fathom")


def device_memory_gib(device: torch.device) -> float:
    """Memory one training process may use on ``device`` (the planner's rule: fathom.estimate)."""
    return usable_memory_gib(device)


def choose_for_phase(
    config: FathomConfig,
    plan: PhasePlan,
    model_config,
    device: torch.device,
    shards: int = 1,
    kept: tuple[int, bool] | None = None,
) -> MemorySetup:
    """The setup ``plan`` trains with on ``device`` (``shards``: ranks of FSDP sharing the base); ``kept``:
    the (checkpoint_every, offload) to use instead of choosing, as the planner sees it."""
    kind = {"cuda": "cuda", "mps": "mps"}.get(device.type, "cpu")
    hardware = Hardware("this-device", str(device), device_memory_gib(device), 1.0, kind=kind)
    opts = dataclasses.replace(Options.from_config(config, hardware), shards=shards)
    if kind == "cpu":  # activations already live in host memory: there is nothing to offload to
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, offload_activations=False))
        opts = dataclasses.replace(opts, offload_activations=False)
    shape, limit, gpu = ModelShape.from_config(model_config), hardware.memory_gib * GIB, kind != "cpu"
    if kept is not None:
        return memory_setup(shape, opts, plan.max_seq_length, limit, gpu, kept[0], kept[1], chosen=False)
    return choose_memory(shape, opts, plan.max_seq_length, limit, gpu, config)


def recorded(state_memory: dict, plan: PhasePlan) -> tuple[int, bool] | None:
    """The (checkpoint_every, offload) a run recorded for ``plan``, when it holds a valid one."""
    entry = state_memory.get(plan.name)
    if not isinstance(entry, dict):
        return None
    every, offload = entry.get("checkpoint_every"), entry.get("offload_activations")
    if isinstance(every, int) and not isinstance(every, bool) and every >= 0 and isinstance(offload, bool):
        return every, offload
    logger.warning("%s: the run's recorded memory setup %r is not valid; choosing again", plan.name, entry)
    return None


def apply_for_phase(run_model, config: FathomConfig, plan: PhasePlan, device, state_memory: dict, shards=1) -> dict:
    """Choose (or, resuming, take the recorded) setup for ``plan``, apply it, log it; the record to keep."""
    kept = recorded(state_memory, plan)
    setup = choose_for_phase(config, plan, _base_config(run_model), device, shards, kept)
    recomputed = set_checkpointing(run_model, setup.checkpoint_every, setup.offload)
    setup = dataclasses.replace(setup, recomputed_layers=recomputed)
    if kept is not None:
        logger.info("%s: memory: %s (as the run recorded it when the phase began)", plan.name, setup.describe())
    elif setup.chosen:
        logger.info(
            "%s: memory: %s (train.memory: auto; planner: %.1f of %.0f GiB%s; "
            "about %.2fx the speed of checkpointing every layer)",
            plan.name,
            setup.describe(),
            setup.estimated_bytes / GIB,
            device_memory_gib(device),
            "" if setup.fits else ", does NOT fit: see fathom plan",
            setup.speed_vs_all_on,
        )
    else:
        logger.info("%s: memory: %s (as configured)", plan.name, setup.describe())
    return setup.to_dict()


def step_down_after_oom(run_model, config: FathomConfig, plan: PhasePlan, device, state_memory: dict) -> bool:
    """After a CUDA out-of-memory error in ``plan``: move to the next more frugal setup that train.memory auto
    may use and say so; False where there is none (or auto did not choose this phase's), so the caller stops.

    The planner's estimate is within a few percent of the real step, but a card shared with another
    process, or the allocator's fragmentation late in a long run, can leave less than it counted on.
    """
    entry = state_memory.get(plan.name) or {}
    if config.train.memory != "auto" or not entry.get("chosen"):
        return False
    offload = False if device.type != "cuda" else config.train.offload_activations
    layers = _base_config(run_model).num_hidden_layers
    candidates = memory_candidates(layers, config.model.gradient_checkpointing, offload)
    current = (entry["checkpoint_every"], entry["offload_activations"])
    if current not in candidates or current == candidates[-1]:
        return False
    every, offload = candidates[candidates.index(current) + 1]
    if device.type == "cuda":
        torch.cuda.empty_cache()
    recomputed = set_checkpointing(run_model, every, offload)
    before = entry.get("describe", str(current))
    setup = choose_for_phase(config, plan, _base_config(run_model), device, kept=(every, offload))
    state_memory[plan.name] = dataclasses.replace(setup, recomputed_layers=recomputed, chosen=True).to_dict() | {
        "after_out_of_memory": True
    }
    logger.warning(
        "%s: out of GPU memory with %s; retrying the step with %s (train.memory: auto)",
        plan.name,
        before,
        state_memory[plan.name]["describe"],
    )
    return True


def _base_config(model):
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.config
