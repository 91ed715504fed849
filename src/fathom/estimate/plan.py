"""Each phase judged on each hardware: the memory setup that fits (or the config overrides that would make
it fit), the hours it takes, and the advice an out-of-memory stop gives."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from fathom.config import FathomConfig
from fathom.estimate.hardware import GIB, Hardware, hardware_by_key, hardware_choices, on_devices
from fathom.estimate.memory import (
    MEMORY_PARTS,
    MemoryEstimate,
    MemorySetup,
    Options,
    attention_span,
    choose_memory,
    estimate_memory,
    flops_per_token,
    with_memory,
)
from fathom.estimate.shapes import ModelShape, model_shape
from fathom.schedule import PhasePlan, plan_phases

# Fixes tried in this order when a phase does not fit; each is a config override.
_FIXES = (
    ("model.gradient_checkpointing=true", {"gradient_checkpointing": True}),
    ("train.loss_implementation=auto", {"loss": "chunked"}),
    ("train.micro_batch_size=1", {"micro_batch": 1}),
    ("train.strategy=fsdp", {"shards": "devices"}),  # several devices only; never with a quantized base
    # lossless before quantizing: host memory for the checkpointed layer inputs costs time, not accuracy
    ("train.offload_activations=true", {"offload_activations": True, "gradient_checkpointing": True}),
    ("model.load_in_8bit=true", {"quant_bits": 8}),
    ("model.load_in_4bit=true", {"quant_bits": 4}),
    ("lora.dropout=0", {"lora_dropout": 0.0}),
)


@dataclass
class Verdict:
    hardware: Hardware
    phase: PhasePlan
    estimate: MemoryEstimate
    fits: bool
    fix: list[str]  # overrides that make it fit (empty when it fits as configured)
    fixed_estimate: MemoryEstimate | None
    hours: float
    memory: MemorySetup | None = None  # how the phase keeps its activations (train.memory)

    @property
    def label(self) -> str:
        if self.fits:
            return "fits"
        if self.fixed_estimate is not None:
            return "fits with " + " ".join(self.fix)
        return "does not fit"


def judge(
    shape: ModelShape, config: FathomConfig, hardware: Hardware, phase: PhasePlan, span: float | None = None
) -> Verdict:
    """Does ``phase`` fit on ``hardware``, and if not, which overrides (cumulative) make it fit? ``span``:
    the attention's effective length on the corpus's packed rows (:func:`attention_span`), for the time."""
    limit = hardware.memory_gib * GIB
    gpu = hardware.kind != "cpu"
    configured = Options.from_config(config, hardware)
    memory = choose_memory(shape, configured, phase.max_seq_length, limit, gpu, config)
    opts = with_memory(configured, memory.checkpoint_every, memory.offload)
    est = estimate_memory(shape, opts, phase.max_seq_length, gpu_overhead=gpu)
    fixes: list[str] = []
    fixed = None
    if est.total > limit:
        current = opts
        for override, change in _FIXES:
            if change.get("shards") == "devices":
                if hardware.devices < 2 or current.quant_bits < 16:
                    continue
                change = {"shards": hardware.devices}
            if all(getattr(current, k) == v for k, v in change.items()):
                continue
            if change.get("quant_bits") and current.quant_bits < change["quant_bits"]:
                continue
            current = dataclasses.replace(current, **change)
            if "quant_bits" in change:  # 4-bit replaces 8-bit rather than adding to it; FSDP does not shard them
                fixes = [f for f in fixes if "load_in_" not in f and f != "train.strategy=fsdp"]
                current = dataclasses.replace(current, shards=1)
            fixes.append(override)
            candidate = estimate_memory(shape, current, phase.max_seq_length, gpu_overhead=gpu)
            if candidate.total <= limit:
                fixed = candidate
                break
    if opts.attention != "flash":
        span = None  # a T x T mask: the kernel computes every block of the row, masked or not
    hours = phase_hours(shape, hardware, phase, memory.recomputed_layers / shape.num_layers, span)
    return Verdict(hardware, phase, est, est.total <= limit, fixes if fixed else [], fixed, hours, memory)


def phase_hours(
    shape: ModelShape, hardware: Hardware, phase: PhasePlan, recomputed: float, span: float | None = None
) -> float:
    """Hours of ``phase`` at the hardware's stated utilization, counting the FLOPs the device really runs
    (the recompute of ``recomputed`` of the layers included; the attention over ``span`` tokens)."""
    flops = flops_per_token(shape, phase.max_seq_length, recomputed, span)
    tokens_per_s = hardware.devices * hardware.bf16_tflops * 1e12 * hardware.mfu / flops
    if hardware.devices > 1:
        tokens_per_s *= 0.9  # gradient all-reduce and stragglers
    return phase.trained_tokens / tokens_per_s / 3600


def phase_spans(config: FathomConfig, lengths) -> dict[str, float]:
    """Per Phase-1 phase, the attention span of its packed rows (:func:`attention_span`), documents drawn
    as the phase's length mix draws them; empty without the corpus's lengths."""
    from fathom.data.mix import document_weights, mix_for

    if lengths is None or not len(lengths):
        return {}
    spans = {}
    for phase in config.phases():
        weights = document_weights(lengths, mix_for(phase, lengths))
        spans[phase.name] = attention_span(lengths, phase.max_seq_length, weights)
    return spans


def plan_hardware(
    config: FathomConfig,
    keys: list[str] | None = None,
    sft_rows_per_epoch: int | None = None,
    world_size: int = 1,
    lengths=None,
) -> dict:
    """Verdicts of every phase on the chosen hardware (this machine, then the whole table, by default),
    each GPU as ``world_size`` of them; ``lengths``: the corpus's document lengths, whose packed rows
    set each phase's attention cost (else whole rows); JSON-ready."""
    shape = model_shape(config.model.name_or_path, config.model.revision, config.model.trust_remote_code)
    spans = phase_spans(config, lengths)
    out = {"model_shape": shape.__dict__ | {"parameters": shape.parameters}, "hardware": []}
    for key in keys or hardware_choices():
        hw = on_devices(hardware_by_key(key), world_size)
        phases = plan_phases(config, hw.devices, sft_rows_per_epoch)
        rows = []
        for phase in phases:
            v = judge(shape, config, hw, phase, spans.get(phase.name))
            rows.append(
                {
                    "phase": phase.name,
                    "max_seq_length": phase.max_seq_length,
                    "estimated_gib": round(v.estimate.total / GIB, 1),
                    "verdict": v.label,
                    "fix": v.fix,
                    "estimated_gib_with_fix": round(v.fixed_estimate.total / GIB, 1) if v.fixed_estimate else None,
                    "hours": round(v.hours, 3),
                    "memory": v.memory.to_dict() if v.memory else None,
                    "attention_span": round(spans[phase.name]) if phase.name in spans else None,
                    "parts_gib": {k: round(getattr(v.estimate, k) / GIB, 2) for k in MEMORY_PARTS},
                }
            )
        out["hardware"].append(
            {
                "key": hw.key,
                "label": hw.label,
                "memory_gib": round(hw.memory_gib, 1),
                "mfu": hw.mfu,
                "rate_note": hw.rate_note,
                "phases": rows,
            }
        )
    return out


def oom_advice(config: FathomConfig, phase: PhasePlan, memory_gib: float | None) -> str:
    """What the planner would change for ``phase`` on a device with ``memory_gib`` of memory."""
    try:
        shape = model_shape(config.model.name_or_path, config.model.revision, config.model.trust_remote_code)
    except ValueError:
        return ""
    hw = Hardware("this-gpu", "this GPU", memory_gib or 24, 100)
    v = judge(shape, config, hw, phase)
    need = v.estimate.total / GIB
    if v.fix:
        return f"the planner estimates {need:.1f} GiB for this phase; it would fit with: {' '.join(v.fix)}"
    return f"the planner estimates {need:.1f} GiB for this phase; none of its fixes fit {hw.memory_gib:.0f} GiB"
