"""Memory and time estimates per phase and per hardware: will it fit, and how long will it take?

Where each part lives: :mod:`~fathom.estimate.memory` (the formula, in its docstring, and the memory
setup ``train.memory: auto`` picks), :mod:`~fathom.estimate.shapes` (the model's shape and native RoPE),
:mod:`~fathom.estimate.hardware` (the known GPUs and this machine), :mod:`~fathom.estimate.plan` (each
phase judged on each hardware: what ``fathom plan`` prints). Callers import from ``fathom.estimate``.
"""

from fathom.estimate.hardware import (
    GIB,
    HARDWARE,
    THIS_MACHINE,
    Hardware,
    hardware_by_key,
    hardware_choices,
    on_devices,
    this_machine,
    usable_memory_gib,
)
from fathom.estimate.memory import (
    MEMORY_PARTS,
    MemoryEstimate,
    MemorySetup,
    Options,
    attention_span,
    checkpointed_layers,
    choose_memory,
    estimate_memory,
    flops_per_token,
    memory_candidates,
    memory_setup,
    with_memory,
)
from fathom.estimate.plan import Verdict, judge, oom_advice, phase_hours, phase_spans, plan_hardware
from fathom.estimate.shapes import (
    KNOWN_ROPE,
    KNOWN_SHAPES,
    ModelShape,
    known_entry,
    model_shape,
    native_rope,
    read_model_config,
)

__all__ = [
    "GIB",
    "HARDWARE",
    "KNOWN_ROPE",
    "KNOWN_SHAPES",
    "MEMORY_PARTS",
    "THIS_MACHINE",
    "Hardware",
    "MemoryEstimate",
    "MemorySetup",
    "ModelShape",
    "Options",
    "Verdict",
    "attention_span",
    "checkpointed_layers",
    "choose_memory",
    "estimate_memory",
    "flops_per_token",
    "hardware_by_key",
    "hardware_choices",
    "judge",
    "known_entry",
    "memory_candidates",
    "memory_setup",
    "model_shape",
    "native_rope",
    "on_devices",
    "oom_advice",
    "phase_hours",
    "phase_spans",
    "plan_hardware",
    "read_model_config",
    "this_machine",
    "usable_memory_gib",
    "with_memory",
]
