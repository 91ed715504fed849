"""The memory and time of one phase's training step, from the model's shape and the training options.

Pure arithmetic on the model's shape (read from its config) and the training options; no model is
built. The formula, per GPU (bytes; T = micro_batch_size x max_seq_length tokens, b = bytes of the
compute dtype, H hidden, I MLP width, L layers, V vocabulary, q/kv = query/key-value widths):

    weights      = quantized linear weights (2 B/param bf16, 1.0 B 8-bit, 0.52 B 4-bit NF4 + double
                   quantization) + embeddings and output layer in b bytes
    adapter      = LoRA params r x (in + out) per targeted linear x 16 B (fp32 param, grad, Adam m, v)
                   + modules trained whole (embeddings, norms) x 4 copies in their dtype
    checkpoints  = (L + 2) x T x H x b              (checkpointing keeps one input per layer; with
                                                     offload_activations 4 x T x H x b: final hidden states,
                                                     their grad, one unpacked layer input and its grad)
    layer        = (T x (10 H + q + 3 kv + H + q) + Tm x (5 I + H + I)) x b  (one layer's activations
                   and backward temporaries while it is recomputed; Tm = min(T, train.mlp_tile_tokens);
                   12 H with train.lean_norms off, whose RMSNorms keep fp32 copies;
                   the dropout terms H + q and H + I only with LoRA dropout; fitted to fathom plan
                   --simulate. With lora.lean_forward off: PEFT's fp32 copies, T x (4 H + q + I) x b
                   for dropout instead.) x L instead of x 1 without checkpointing
    attention    = auto / flash / varlen / sdpa_packed: 0 beyond the above (per-document kernels);
                   an explicit sdpa: the block mask of a packed row, T x seq x (1 + 4 per layer kept);
                   eager: + heads x T x seq x (b + 4)
    loss         = chunked/liger: chunk x V x (4 + b);  plain: T x V x (b + 12)
    overhead     = 1 GiB (CUDA context, allocator) + 10% of the rest, on GPUs (measured on an H200 with
                   bench/gpu.py: context 0.6 GiB; the allocator with expandable segments, which fathom
                   sets, held 2-7% above the tensor peak from 4K to 128K)

    peak = weights + adapter + checkpoints + max(loss, layer + attention) + overhead
    (with checkpointing the loss's buffers are freed before backward recomputes the layers;
    without it, or with the plain loss, everything is summed)

Time: FLOPs per trained token = 2 N (forward) + 2 N (backward through the frozen base to the
adapter) + 2 N x the share of layers checkpointing recomputes, + attention 6 x L x seq x q (causal,
the same share again) and the output layer (4 V H); at a stated hardware FLOPs utilization (HFU:
recompute counted) of the hardware's dense bf16 peak. train.memory: auto (MemorySetup) picks per phase
the setup with the least recompute whose estimate fits. The CPU test in tests/test_estimate.py keeps
the activation + loss part within 30% of a measured peak.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from fathom.config import FathomConfig
from fathom.estimate.hardware import GIB, Hardware
from fathom.estimate.shapes import ModelShape

# The terms of MemoryEstimate, in the order they are shown.
MEMORY_PARTS = ("weights", "adapter", "checkpoints", "layer", "attention", "loss", "overhead")


@dataclass(frozen=True)
class Options:
    """The training options that change memory (a flat view of the config)."""

    compute_bytes: int = 2
    quant_bits: int = 16  # 16 (none), 8 or 4
    lora_r: int = 16
    lora_targets: tuple[str, ...] = ("all-linear",)
    lora_dropout: float = 0.05
    train_embeddings: bool = False
    train_norms: bool = False
    gradient_checkpointing: bool = True
    checkpoint_every: int = 1  # with checkpointing: layers i % k == 0 recomputed, the rest keep their activations
    offload_activations: bool = False
    loss: str = "chunked"  # chunked | liger | plain
    loss_chunk: int = 1024
    micro_batch: int = 1
    attention: str = "flash"  # flash (no mask: any per-document path) | sdpa (explicit block mask) | eager
    shards: int = 1  # FSDP: base and adapter split over this many devices
    lean_lora: bool = True  # lora.lean_forward (with lora.share_dropout): no fp32 copies of layer inputs
    mlp_tile: int = 8192  # train.mlp_tile_tokens: MLP intermediates for this many tokens at a time (0: all)
    lean_norms: bool = True  # train.lean_norms: RMSNorm keeps no fp32 copies for the backward

    @classmethod
    def from_config(cls, config: FathomConfig, hardware: Hardware | None = None) -> Options:
        m, t, lo = config.model, config.train, config.lora
        compute = {"float32": 4}.get(m.dtype, 2)
        if hardware is not None and hardware.kind == "cpu" and m.dtype == "auto":
            compute = 4  # fathom trains in fp32 on the CPU
        # auto / varlen / sdpa_packed / flash_attention_2 attend per document with no mask anywhere
        # (fathom.model.attention); only an explicit sdpa or eager builds the packed row's T x T mask
        attention = {"eager": "eager", "sdpa": "sdpa"}.get(m.attn_implementation, "flash")
        targets = (lo.target_modules,) if isinstance(lo.target_modules, str) else tuple(lo.target_modules)
        loss = t.loss_implementation if t.loss_implementation in ("plain", "liger") else "chunked"
        shards = hardware.devices if hardware is not None and t.strategy == "fsdp" else 1
        return cls(
            shards=shards,
            compute_bytes=compute,
            quant_bits=8 if m.load_in_8bit else 4 if m.load_in_4bit else 16,
            lora_r=lo.r,
            lora_targets=targets,
            lora_dropout=lo.dropout,
            train_embeddings=lo.train_embeddings,
            train_norms=lo.train_norms,
            gradient_checkpointing=m.gradient_checkpointing is not False,  # None: all-on until chosen
            offload_activations=bool(t.offload_activations),
            loss=loss,
            loss_chunk=t.loss_chunk_size,
            micro_batch=t.micro_batch_size,
            attention=attention,
            lean_lora=lo.lean_forward and lo.share_dropout,
            mlp_tile=t.mlp_tile_tokens,
            lean_norms=t.lean_norms,
        )


@dataclass
class MemoryEstimate:
    """Bytes per component; ``total`` is what one device needs at the peak."""

    weights: float
    adapter: float
    checkpoints: float  # layer inputs kept by checkpointing (and the kept layers' activations), final hidden states
    layer: float  # activations alive while a layer is recomputed and back-propagated (all layers without ckpt)
    attention: float  # block mask (and scores for eager)
    loss: float
    recompute: bool = True  # with checkpointing the loss and the layer activations are never alive together
    overhead: float = 0.0

    @property
    def activations_and_loss(self) -> float:
        """Peak of the step beyond weights and adapter.

        With checkpointing and a loss whose gradient is computed in its forward, the loss buffers are
        freed before backward starts recomputing layers: the peak is the larger of the two phases.
        """
        if self.recompute:
            return self.checkpoints + max(self.loss, self.layer + self.attention)
        return self.checkpoints + self.layer + self.attention + self.loss

    @property
    def total(self) -> float:
        return self.weights + self.adapter + self.activations_and_loss + self.overhead


def _targeted(shape: ModelShape, targets: tuple[str, ...]) -> list[tuple[int, int]]:
    linears = shape.linear_shapes()
    if "all-linear" in targets:
        return list(linears.values())
    return [io for name, io in linears.items() if any(name == t or name.endswith(t) for t in targets)]


def estimate_memory(shape: ModelShape, opts: Options, seq_len: int, gpu_overhead: bool = True) -> MemoryEstimate:
    """Peak bytes of one training step at ``seq_len`` (see the module docstring for the formula)."""
    b = opts.compute_bytes
    per_param = {16: b, 8: 1.0, 4: 0.52}[opts.quant_bits]
    weights = shape.num_layers * shape.layer_linear_params * per_param + shape.embedding_params * b
    weights += (2 * shape.num_layers + 1) * shape.hidden * b

    lora_params = shape.num_layers * sum(opts.lora_r * (i + o) for i, o in _targeted(shape, opts.lora_targets))
    adapter = lora_params * 16.0
    if opts.train_embeddings:
        adapter += shape.vocab * shape.hidden * b * 4
    if opts.train_norms:
        adapter += (2 * shape.num_layers + 1) * shape.hidden * b * 4
    if opts.shards > 1:
        # FSDP2 keeps 1/N of everything; the root (embeddings, output layer, final norm) stays gathered
        # from its forward to the end of the backward, beside its shard; and the layer being computed
        # is gathered whole, with the next one where CUDA's all-gather stream prefetches it (the
        # simulation, with no CUDA streams, holds one: within a layer of this)
        root = shape.embedding_params * b + shape.hidden * b
        weights = weights / opts.shards + root + 2 * shape.layer_linear_params * per_param
        adapter = adapter / opts.shards

    tokens = opts.micro_batch * seq_len
    # The MLP runs in checkpointed tiles wherever the row is longer than a tile, whatever the layers do:
    # a layer kept whole then holds its attention's activations and only one tile's MLP intermediates,
    # while that tile is recomputed in the backward.
    tiled = bool(opts.mlp_tile) and tokens > opts.mlp_tile
    mlp_tile_tokens = min(tokens, opts.mlp_tile) if opts.mlp_tile else tokens
    layer = _layer_bytes(shape, opts, tokens, b, mlp_tile_tokens)  # a layer recomputed and back-propagated
    kept = _layer_bytes(shape, opts, tokens, b, 0 if tiled else tokens)  # a layer's, kept to its backward
    one_tile = _layer_bytes(shape, opts, 0, b, mlp_tile_tokens) if tiled else 0.0
    h = shape.hidden
    if opts.gradient_checkpointing and opts.offload_activations:
        checkpoints = tokens * h * b  # the input of the layer in progress stays on the device
        layer += tokens * h * b  # and the one unpacked back from the host for its backward
    elif opts.gradient_checkpointing:
        recomputed = checkpointed_layers(shape.num_layers, opts.checkpoint_every)
        checkpoints = recomputed * tokens * h * b  # one input per recomputed layer
        checkpoints += (shape.num_layers - recomputed) * kept  # the others keep theirs to the backward
    else:
        checkpoints, layer = 0.0, kept * shape.num_layers + one_tile

    # Without flash-attn, a packed row needs an explicit (seq x seq) block mask: boolean, and an
    # additive float copy inside each attention call; eager also keeps the scores and softmax.
    attention = 0.0
    if opts.attention in ("sdpa", "eager"):
        per_layer = opts.micro_batch * seq_len * seq_len * 4
        if opts.attention == "eager":
            per_layer += opts.micro_batch * shape.num_heads * seq_len * seq_len * (b + 4)
        layers = 1 if opts.gradient_checkpointing else shape.num_layers
        attention = opts.micro_batch * seq_len * seq_len + per_layer * layers

    if opts.loss == "plain":
        loss = tokens * shape.vocab * (b + 12)
    else:
        loss = min(opts.loss_chunk, tokens) * shape.vocab * (4 + (b if b < 4 else 0))
    loss += 3 * tokens * h * b  # the final norm's input and output, and the gradient of its output
    # The plain loss keeps its logits' gradient until backward reaches the last layer.
    recompute = opts.gradient_checkpointing and opts.loss != "plain"
    est = MemoryEstimate(weights, adapter, checkpoints, layer, attention, loss, recompute)
    if gpu_overhead:
        est.overhead = GIB + 0.10 * (est.total - est.overhead)
    return est


def _layer_bytes(shape: ModelShape, opts: Options, tokens: int, b: int, mlp_tokens: int) -> float:
    """One layer's activations and backward temporaries while it is recomputed and back-propagated.

    Lean LoRA (the default) was fitted to ``fathom plan --simulate`` on Qwen2.5-7B (4K / 16K / 32K
    within 1%): attention T x (10 H + q + 3 kv; 12 H without lean norms) plus the shared dropout copies
    of its two inputs T x (H + q); the MLP 5 I for the tokens of one tile, plus dropout copies of its
    two inputs (H + I).
    PEFT's path (lean_forward off) keeps its fp32 copies: the older formula, fitted on an fp32 CPU.
    """
    h, i, q, kv = shape.hidden, shape.intermediate, shape.q_width, shape.kv_width
    dropout = opts.lora_dropout > 0
    if opts.lean_lora:
        norms = 0 if opts.lean_norms else 2 * h  # transformers' RMSNorm keeps fp32 copies of its input
        dropped = 1.5 * dropout  # a dropped copy of an input (b bytes) and its 1-byte mask
        attention = tokens * ((4.5 + dropped) * h + norms + (2 + dropped) * q + 3 * kv)
        return (attention + mlp_tokens * (4.5 + dropped) * i) * b
    layer = tokens * (12 * h + q + 3 * kv) + mlp_tokens * 5 * i
    if dropout:
        layer += tokens * (4 * h + q) + mlp_tokens * i
    return layer * b


def attention_span(lengths, seq_len: int, weights=None) -> float:
    """The row length whose causal attention costs what a row packed from documents of ``lengths`` tokens
    costs (document-masked kernels attend within a document only): sum of chunk^2 / sum of chunk, a
    document cut into chunks of at most ``seq_len``; ``weights``: each document's draws per pass.

    >>> attention_span([1000, 3000], 4096)
    2500.0

    A row of one document spans the row; packing's cuts at row ends are not counted (they only shorten it).
    """
    import numpy as np

    lengths = np.asarray(lengths, dtype=np.float64)
    weights = np.ones_like(lengths) if weights is None else np.asarray(weights, dtype=np.float64)
    whole, rest = np.floor_divide(lengths, seq_len), np.mod(lengths, seq_len)
    squares = whole * float(seq_len) ** 2 + rest**2
    total = float((weights * lengths).sum())
    return float((weights * squares).sum()) / total if total else float(seq_len)


def checkpointed_layers(num_layers: int, every: int) -> int:
    """Layers recomputed when every ``every``-th is (transformers' ``every_n_layers``: index % every == 0)."""
    return -(-num_layers // max(1, every))


def flops_per_token(shape: ModelShape, seq_len: int, recomputed: float, span: float | None = None) -> float:
    """Training FLOPs per token with a frozen base and a LoRA adapter (see the module docstring).

    ``recomputed``: the share of layers gradient checkpointing runs twice (True / 1.0 all, 0 none). With
    0 this counts model FLOPs (what MFU divides); with the run's share, hardware FLOPs (HFU). ``span``:
    the attention's effective row length on packed rows (:func:`attention_span`); None: whole rows.
    """
    n = shape.num_layers * shape.layer_linear_params
    passes = 2 + float(recomputed)  # forward, backward to inputs, the recompute
    attention = 2 * shape.num_layers * (span or seq_len) * shape.q_width  # causal: half of 4 x seq x q per layer
    head = 2 * shape.vocab * shape.hidden
    return 2 * n * passes + attention * passes + head * 2


@dataclass(frozen=True)
class MemorySetup:
    """How one phase keeps its activations: what ``train.memory: auto`` chose for it, or the flags as set.

    ``checkpoint_every``: 0 no gradient checkpointing; k: the layers whose index % k == 0 are
    recomputed in the backward and the others keep their activations (1: every layer).
    """

    checkpoint_every: int
    offload: bool
    recomputed_layers: int
    num_layers: int
    estimated_bytes: float
    fits: bool
    speed_vs_all_on: float  # tokens/s against every layer checkpointed (the FLOPs of the recompute)
    chosen: bool = True  # False: the flags as the config sets them (train.memory: manual, or both set)

    def describe(self) -> str:
        if not self.checkpoint_every:
            what = "no gradient checkpointing"
        elif self.recomputed_layers == self.num_layers:
            what = "gradient checkpointing on every layer"
        else:
            what = (
                f"gradient checkpointing on {self.recomputed_layers} of {self.num_layers} layers "
                f"(every {self.checkpoint_every})"
            )
        return what + (", its activations offloaded to host memory" if self.offload else "")

    def short(self) -> str:
        """For a table cell: which layers are recomputed, and the speed against all of them."""
        layers = {0: "none", self.num_layers: "all"}.get(
            self.recomputed_layers, f"{self.recomputed_layers}/{self.num_layers}"
        )
        return f"recompute {layers}{' + offload' if self.offload else ''} ({self.speed_vs_all_on:.2f}x)"

    def to_dict(self) -> dict:
        return {
            "short": self.short(),
            "checkpoint_every": self.checkpoint_every,
            "offload_activations": self.offload,
            "recomputed_layers": self.recomputed_layers,
            "estimated_gib": round(self.estimated_bytes / GIB, 2),
            "fits": self.fits,
            "speed_vs_all_on": round(self.speed_vs_all_on, 3),
            "chosen": self.chosen,
            "describe": self.describe(),
        }


def memory_candidates(num_layers: int, checkpointing: bool | None, offload: bool | None) -> list[tuple[int, bool]]:
    """(checkpoint_every, offload) from the fastest to the most frugal, within what the config fixes
    (``None``: free to choose; ``True``: every layer, as the flag always meant): none; then fewer
    recomputed layers before more (one setting per count); then every layer with its activations
    offloaded. Never a quantized base: that costs accuracy."""
    if checkpointing is False:
        return [(0, False)]
    out = []
    if offload is not True:
        everies = [1] if checkpointing else range(num_layers, 0, -1)
        counts: set[int] = set()
        out = [] if checkpointing else [(0, False)]
        for every in everies:
            if checkpointed_layers(num_layers, every) not in counts:
                counts.add(checkpointed_layers(num_layers, every))
                out.append((every, False))
    if offload is not False:
        out.append((1, True))
    return out


def choose_memory(
    shape: ModelShape, opts: Options, seq_len: int, limit_bytes: float, gpu: bool, config: FathomConfig
) -> MemorySetup:
    """The fastest setup of :func:`memory_candidates` whose planner estimate fits ``limit_bytes`` (else the
    most frugal, marked as not fitting). ``train.memory: manual`` keeps the flags (unset: all-on)."""
    m, t = config.model, config.train
    if t.memory == "manual" or (m.gradient_checkpointing is not None and t.offload_activations is not None):
        every = opts.checkpoint_every if opts.gradient_checkpointing else 0
        return memory_setup(shape, opts, seq_len, limit_bytes, gpu, every, opts.offload_activations, chosen=False)
    setup = None
    for every, offload in memory_candidates(shape.num_layers, m.gradient_checkpointing, t.offload_activations):
        setup = memory_setup(shape, opts, seq_len, limit_bytes, gpu, every, offload, chosen=True)
        if setup.fits:
            break
    assert setup is not None
    return setup


def memory_setup(
    shape: ModelShape, opts: Options, seq_len: int, limit: float, gpu: bool, every: int, offload: bool, chosen: bool
) -> MemorySetup:
    """``opts`` with checkpointing every ``every``-th layer (0: none) and ``offload``, as the planner sees it."""
    options = with_memory(opts, every, offload)
    recomputed = checkpointed_layers(shape.num_layers, every) if every else 0
    total = estimate_memory(shape, options, seq_len, gpu_overhead=gpu).total
    speed = flops_per_token(shape, seq_len, 1.0) / flops_per_token(shape, seq_len, recomputed / shape.num_layers)
    return MemorySetup(every, offload, recomputed, shape.num_layers, total, total <= limit, speed, chosen)


def with_memory(opts: Options, every: int, offload: bool) -> Options:
    """``opts`` with checkpointing every ``every``-th layer (0: none) and the offload as given."""
    on = every > 0
    return dataclasses.replace(
        opts, gradient_checkpointing=on, checkpoint_every=max(1, every), offload_activations=offload and on
    )
