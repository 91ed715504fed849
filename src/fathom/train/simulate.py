"""``fathom plan --simulate``: run fathom's real training step at the model's real shape on fake tensors
and count the bytes of the tensors alive at every operation.

No weights are read or allocated: the model is built from its config under PyTorch's
``FakeTensorMode`` (tensors with shapes, dtypes and storages' sizes, and no data), with the same
LoRA, gradient checkpointing, loss (chunked or plain), optimizer and micro-batch as ``fathom train``,
and two optimizer steps are run (the second holds the optimizer's state). A ``TorchDispatchMode``
sees every tensor an operation returns; each storage is counted once (rounded up to the CUDA
caching allocator's 512-byte blocks) from its first appearance until it is freed. The peak is the
most bytes alive at once, reported with the operation and module it happened in and what the live
bytes were at that moment (weights, adapter, gradients and optimizer state, activations saved by the
forward, temporaries of the backward).

Written by hand (torch's ``MemTracker`` needs every parameter to require a gradient, and LoRA freezes
the base). The tensors are fake *CPU* tensors (fake CUDA tensors fail on CPU-only builds), so two CUDA
kernel choices are substituted: dropout keeps CUDA's 1-byte mask (``native_dropout``) instead of the
CPU's fp32 one, and SDPA takes the flash-style CPU kernel (no T x T scores), as flash attention does.
An 8-/4-bit base has its decoder layers' linear weights held as bitsandbytes stores them (NF4 with
double quantization: 0.516 bytes a weight; LLM.int8: 1 byte and an fp32 scale per row) and
dequantized to the compute dtype for each matmul, forward and backward, as bitsandbytes' training
matmul does (:class:`QuantizedLinear`; bitsandbytes' own layers cannot be built on fake tensors).
``train.offload_activations`` is seen as on a GPU: what torch's ``save_on_cpu`` packs is counted as
host memory, and unpacked for the backward as a device copy. ``train.strategy: fsdp`` over N
processes is simulated for one rank: fathom's own FSDP2 wrapping over a fake process group of N
ranks (torch's test backend, whose collectives move nothing), so the rank holds its shards, the
layers it has gathered, and its sharded gradients and AdamW state; FSDP2 frees and refills the
gathered weights' storages in place, which the count follows. With ``train.fsdp_cpu_offload`` the
shards, their gradients and the optimizer step are counted as host memory. What it cannot see: the
CUDA context (0.6 GiB on an H200), the allocator's fragmentation and cached blocks (2-7% of the peak
with expandable segments on an H200), kernel workspaces (cuBLAS, flash attention), NCCL's buffers.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
import weakref
from dataclasses import dataclass, field

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from fathom.config import ConfigError, FathomConfig
from fathom.estimate import KNOWN_ROPE, KNOWN_SHAPES, known_entry, read_model_config
from fathom.schedule import PhasePlan

logger = logging.getLogger("fathom")

BLOCK = 512  # the CUDA caching allocator rounds every allocation up to this
CAVEAT = (
    "the simulation counts live tensors only: add the CUDA context (0.6 GiB on an H200), the allocator's cached "
    "and fragmented blocks (2-7% of the peak with expandable segments on an H200), kernel workspaces and NCCL's buffers"
)
KINDS = ("weights", "adapter", "gradients", "optimizer", "activations", "backward temporaries")
HOST = "offloaded to host"  # train.offload_activations: kept in CPU memory, not on the device


@dataclass
class SimulatedStep:
    """The tensor-level peak of one phase's optimizer step, and what was alive at it (bytes)."""

    phase: str
    max_seq_length: int
    peak_bytes: int = 0
    at_peak: dict[str, int] = field(default_factory=dict)  # kind -> bytes alive at the peak
    peak_op: str = ""  # the operation whose output set the peak
    peak_module: str = ""  # the innermost module it ran in
    peak_in_backward: bool = False
    shards: int = 1  # FSDP ranks the model is sharded over (1: not sharded); the peak is one rank's
    planner_bytes: float = 0.0  # estimate_memory for the same step, tensors only (0: not asked)
    seconds: float = 0.0
    square_bytes: int = 0  # the largest tensor of shape (..., T, T) any operation produced (a mask, scores)
    square_op: str = ""
    memory: dict | None = None  # the train.memory setup simulated (fathom.estimate.MemorySetup.to_dict)

    def as_dict(self) -> dict:
        gib = 2**30
        return {
            "simulated_peak_bytes": self.peak_bytes,
            "simulated_peak_gib": round(self.peak_bytes / gib, 2),
            "simulated_at_peak_gib": {k: round(v / gib, 2) for k, v in self.at_peak.items()},
            "simulated_peak_op": self.peak_op,
            "simulated_peak_module": self.peak_module,
            "simulated_peak_in_backward": self.peak_in_backward,
            "simulated_shards": self.shards,
            "planner_tensors_gib": round(self.planner_bytes / gib, 2),
            "simulated_t_by_t_bytes": self.square_bytes,
            "simulated_memory_setup": self.memory,
        }


class _LiveBytes(TorchDispatchMode):
    """Counts the bytes of live storages by kind; remembers the peak and what set it."""

    def __init__(self, result: SimulatedStep, modules) -> None:
        super().__init__()
        self.result, self.modules = result, modules
        self.live = dict.fromkeys((*KINDS, HOST), 0)
        self.kind = "activations"
        self._entries: dict[int, tuple[str, int]] = {}  # id of a live storage -> (kind, bytes)

    def add(self, tensor: torch.Tensor, kind: str) -> None:
        storage = _storage(tensor)
        key = id(storage)
        if key in self._entries:
            return
        size = -(-storage.nbytes() // BLOCK) * BLOCK
        self._entries[key] = (kind, size)
        self.live[kind] += size
        weakref.finalize(storage, self._free, key)

    def relabel(self, tensor: torch.Tensor, kind: str) -> None:
        """A storage counted as one kind is another (the gradients a backward leaves behind)."""
        key = id(_storage(tensor))
        if key in self._entries:
            old, size = self._entries[key]
            self.live[old] -= size
            self.live[kind] += size
            self._entries[key] = (kind, size)

    def resized(self, tensor: torch.Tensor, kind: str) -> None:
        """A storage was resized in place (FSDP2 frees a gathered weight's storage to 0 bytes after use
        and refills it for the next all-gather): count its new size, as ``kind`` when it grew."""
        storage = _storage(tensor)
        key, size = id(storage), -(-storage.nbytes() // BLOCK) * BLOCK
        if key not in self._entries:
            if size:
                self.add(tensor, kind)
            return
        old_kind, old_size = self._entries[key]
        new_kind = kind if size else old_kind
        self.live[old_kind] -= old_size
        self.live[new_kind] += size
        self._entries[key] = (new_kind, size)

    def _free(self, key: int) -> None:
        kind, size = self._entries.pop(key)
        self.live[kind] -= size

    def _note_square(self, tensor: torch.Tensor, func) -> None:
        """Remember the largest (..., T, T) tensor: what a packed row must never need."""
        t = self.result.max_seq_length
        if tensor.dim() >= 2 and tuple(tensor.shape[-2:]) == (t, t):
            size = _storage(tensor).nbytes()
            if size > self.result.square_bytes:
                self.result.square_bytes, self.result.square_op = size, str(func.overloadpacket.__name__)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            return _scalar(func, args[0])
        out = func(*args, **(kwargs or {}))
        for tensor in torch.utils._pytree.tree_leaves(out):
            if isinstance(tensor, torch.Tensor):
                self.add(tensor, self.kind)
                self._note_square(tensor, func)
        total = sum(self.live.values()) - self.live[HOST]
        if total > self.result.peak_bytes:
            self.result.peak_bytes, self.result.at_peak = total, dict(self.live)
            self.result.peak_op = str(func.overloadpacket.__name__)
            self.result.peak_module = self.modules.current
            self.result.peak_in_backward = self.modules.in_backward
        return out


def _storage(tensor: torch.Tensor):
    """The storage that holds ``tensor``'s bytes on this rank (a DTensor's local shard)."""
    return getattr(tensor, "_local_tensor", tensor).untyped_storage()


def _scalar(func, tensor: torch.Tensor):
    """``.item()``: a real tensor's value; a fake one has none, and gets a stand-in."""
    from torch._subclasses.fake_tensor import DataDependentOutputException, FakeTensor

    if isinstance(tensor, FakeTensor):
        return _stand_in_scalar(tensor)
    try:
        return func(tensor)
    except DataDependentOutputException:  # a real tensor made fake on its way in (allow_non_fake_inputs)
        return _stand_in_scalar(tensor)


def _stand_in_scalar(tensor: torch.Tensor):
    """What ``.item()`` of a fake tensor gives: True, 1, or 1.0 (a finite loss or norm): no memory depends on it."""
    if tensor.dtype == torch.bool:
        return True
    if not tensor.is_floating_point():
        return 1
    return 1.0


def transformers_config(config: FathomConfig):
    """The base's transformers config: the built-in table offline (a Qwen2 / Llama config of that shape
    and RoPE), else its config.json (local folder or Hub cache)."""
    from transformers import LlamaConfig, Qwen2Config

    m = config.model
    shape, rope = known_entry(KNOWN_SHAPES, m.name_or_path), known_entry(KNOWN_ROPE, m.name_or_path)
    if shape is None or rope is None:
        try:  # a copy: the simulation sets its attention kernel, and the read is cached for the process
            return copy.deepcopy(read_model_config(m.name_or_path, m.revision, m.trust_remote_code))
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    parameters, window, model_type = rope
    kind = Qwen2Config if model_type == "qwen2" else LlamaConfig
    return kind(
        num_hidden_layers=shape.num_layers,
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_attention_heads=shape.num_heads,
        num_key_value_heads=shape.num_kv_heads,
        head_dim=shape.head_dim,
        vocab_size=shape.vocab,
        tie_word_embeddings=shape.tied_embeddings,
        max_position_embeddings=window,
        rope_parameters=dict(parameters),
        use_cache=False,
    )


@contextlib.contextmanager
def _cuda_like_kernels():
    """Inside: dropout keeps a 1-byte mask as on CUDA; Module.to() works on fake parameters (torch's
    swap of fake parameters fails on the weak references FakeTensorMode keeps); and transformers'
    mask code does not take fake tensors for a torch.compile trace, in which case it would build a
    full T x T mask where a real run (and flash attention) uses none."""
    import transformers.masking_utils as masking

    real_dropout, real_apply, real_tracing = torch.nn.functional.dropout, torch.nn.Module._apply, masking.is_tracing

    def dropout(x, p=0.5, training=True, inplace=False):
        return torch.native_dropout(x, p, True)[0] if training and p > 0 else x

    def apply(self, fn, recurse=True):
        if recurse:
            for child in self.children():
                child._apply(fn)
        for key, param in self._parameters.items():
            if param is not None:
                with torch.no_grad():
                    new = fn(param)
                if new is not param:
                    self._parameters[key] = torch.nn.Parameter(new, requires_grad=param.requires_grad)
        for key, buffer in self._buffers.items():
            if buffer is not None:
                self._buffers[key] = fn(buffer)
        return self

    torch.nn.functional.dropout, torch.nn.Module._apply = dropout, apply
    masking.is_tracing = lambda *args, **kwargs: False
    try:
        yield
    finally:
        torch.nn.functional.dropout, torch.nn.Module._apply = real_dropout, real_apply
        masking.is_tracing = real_tracing


def simulate_phase(
    config: FathomConfig,
    plan: PhasePlan,
    hf_config=None,
    fake: bool = True,
    shards: int = 1,
    documents: list[int] | None = None,
    memory: tuple[int, bool] | None = None,
) -> SimulatedStep:
    """Two optimizer steps of ``plan`` (micro-batches of ``micro_batch_size`` rows of its length), counted.

    ``shards`` > 1 simulates one rank of an FSDP run over that many processes. ``fake=False`` runs
    the very same on real CPU tensors: how the tests check that the fake run counts what a real one
    allocates (at a tiny shape). ``documents``: every row packed from documents of these token
    counts (positions restarting), run through the attention the config picks for a CUDA GPU without
    flash-attn (see :func:`packed_positions`); None: whole rows, one document each. ``memory``: the
    (checkpoint_every, offload) train.memory chose (see fathom.estimate.MemorySetup); None: the flags
    as set (unset: checkpointing every layer).
    """
    from torch._subclasses.fake_tensor import FakeTensorMode

    from fathom.model.attention import document_bounds

    started = time.perf_counter()
    result = SimulatedStep(plan.name, plan.max_seq_length, shards=shards)
    hf_config = hf_config or transformers_config(config)
    hf_config._attn_implementation = "sdpa"  # on (fake) CPU tensors: the flash-style kernel
    t = config.train
    packed = None
    if documents is not None:
        hf_config._attn_implementation = _packed_attention(config.model.attn_implementation)
        packed = packed_positions(documents, plan.max_seq_length, t.micro_batch_size)
        bounds = document_bounds(packed, t.micro_batch_size)  # on the host, before any tensor is fake
    # transformers' sdpa / eager find packed documents by reading the position ids' values: they get real ones
    masked = packed is not None and hf_config._attn_implementation in ("sdpa", "eager")
    fake_mode = FakeTensorMode(allow_non_fake_inputs=masked) if fake else contextlib.nullcontext()
    seen = _packing_seen(packed) if masked and fake else contextlib.nullcontext()
    with seen, _fake_world(shards) as mesh, _cuda_like_kernels(), fake_mode:
        model, step, optimizer = _build(config, hf_config, mesh, memory)
        ids = torch.zeros(t.micro_batch_size, plan.max_seq_length, dtype=torch.long)
        positions = torch.arange(plan.max_seq_length).repeat(t.micro_batch_size, 1)  # (B, T), as the loader gives
        if packed is not None:
            positions = _with_bounds_of(packed, bounds) if fake and not masked else packed
        batch = {"input_ids": ids, "labels": ids.clone(), "position_ids": positions}
        host_shards = mesh is not None and t.fsdp_cpu_offload
        _count_steps(result, model, step, optimizer, batch, min(t.gradient_accumulation_steps, 2), host_shards)
    result.seconds = time.perf_counter() - started
    return result


def packed_positions(documents: list[int], seq_len: int, rows: int) -> torch.Tensor:
    """(rows, seq_len) position ids of rows filled with documents of ``documents`` token counts in turn
    (positions restarting per document, as fathom's packer lays them); the last one is cut at the row's end.

    A real tensor: the packed attention paths read the bounds on the host, which a fake tensor cannot
    give, so the fake run is handed them beside a fake stand-in (:func:`_with_bounds_of`).
    """
    out, queue = [], [n for n in documents if n > 0] or [seq_len]
    i = 0
    for _ in range(rows):
        row: list[torch.Tensor] = []
        filled = 0
        while filled < seq_len:
            take = min(queue[i % len(queue)], seq_len - filled)
            row.append(torch.arange(take))
            filled += take
            i += 1
        out.append(torch.cat(row))
    return torch.stack(out)


@contextlib.contextmanager
def _packing_seen(packed: torch.Tensor):
    """transformers decides whether rows are packed from the position ids' values (``.all()`` of a fake
    tensor has none): inside, it gets the answer computed from the real ones, so it builds its mask."""
    import transformers.masking_utils as masking

    real = masking.find_packed_sequence_indices
    answer = real(packed)
    masking.find_packed_sequence_indices = lambda position_ids: answer
    try:
        yield
    finally:
        masking.find_packed_sequence_indices = real


def _with_bounds_of(packed: torch.Tensor, bounds: list[list[int]]) -> torch.Tensor:
    """A fake tensor of ``packed``'s shape that carries its document bounds (a fake tensor has no values)."""
    from fathom.model.attention import remember_bounds

    positions = torch.zeros(packed.shape, dtype=packed.dtype)
    remember_bounds(positions, bounds)
    return positions


def _packed_attention(requested: str) -> str:
    """What a packed row runs through on a CUDA GPU without flash-attn: ``auto`` is fathom's varlen
    path, simulated by per-document SDPA (the same tensors: no mask, flash-style kernels per document)."""
    from fathom.model.attention import SDPA_PACKED, register

    register()
    return requested if requested in ("sdpa", "eager") else SDPA_PACKED


@contextlib.contextmanager
def _fake_world(shards: int):
    """A process group of ``shards`` ranks whose collectives move nothing (torch's ``fake`` test
    backend), this process rank 0, and a 1-d device mesh over it, made before fake-tensor mode starts
    (a mesh cannot be built from fake tensors); None for one rank. Inside a launch of ``shards``
    processes the launch's own group is used instead (how the tests check the fake group against
    gloo's real collectives)."""
    if shards <= 1:
        yield None
        return
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    if dist.is_initialized():
        if dist.get_world_size() != shards:
            raise ConfigError(
                f"fathom plan --simulate: {shards} FSDP ranks asked for inside a launch of {dist.get_world_size()}"
            )
        yield init_device_mesh("cpu", (shards,))
        return
    try:
        from torch.testing._internal.distributed.fake_pg import FakeStore
    except ImportError as exc:
        raise ConfigError(
            f"fathom plan --simulate: simulating FSDP needs torch's fake process group, which this torch lacks ({exc})"
        ) from exc

    dist.init_process_group("fake", rank=0, world_size=shards, store=FakeStore())
    try:
        yield init_device_mesh("cpu", (shards,))
    finally:
        dist.destroy_process_group()


def _build(config: FathomConfig, hf_config, mesh=None, memory: tuple[int, bool] | None = None):
    """(model, step module, optimizer) as ``fathom train`` builds them, from a config instead of weights;
    with ``mesh``, the step module sharded by fathom's own FSDP2 wrapping before the optimizer is built."""
    from transformers import AutoModelForCausalLM

    from fathom.model.load import lean_norms, set_checkpointing, tile_mlps
    from fathom.model.lora import apply_lora
    from fathom.model.loss import causal_lm_loss_sum
    from fathom.train.distributed import LossModule, shard_step
    from fathom.train.optim import build_optimizer

    m, t = config.model, config.train
    dtype = {"float32": torch.float32, "float16": torch.float16}.get(m.dtype, torch.bfloat16)
    model = AutoModelForCausalLM.from_config(hf_config, dtype=dtype)
    if m.load_in_4bit or m.load_in_8bit:
        quantize_layers(model, 4 if m.load_in_4bit else 8)
    model.train()
    every, offload = memory or (0 if m.gradient_checkpointing is False else 1, bool(t.offload_activations))
    if every:
        set_checkpointing(model, every, offload)
    model = apply_lora(model, config.lora, t.seed)
    tile_mlps(model, t.mlp_tile_tokens)
    if t.lean_norms:
        lean_norms(model)
    step = LossModule(model, causal_lm_loss_sum, t.loss_chunk_size, _loss(t.loss_implementation))
    if mesh is not None:
        step = shard_step(step, torch.device("cpu"), cpu_offload=False, mesh=mesh)
    return model, step, build_optimizer(model, t)


def _count_steps(
    result: SimulatedStep, model, step, optimizer, batch: dict, micro_batches: int, host_shards: bool = False
) -> None:
    """Two optimizer steps of ``micro_batches`` forward + backward each, every storage counted by kind;
    with ``host_shards`` (FSDP's CPU offload) the shards, their gradients and the optimizer in host memory."""
    import transformers.modeling_utils as modeling

    real_offload = modeling.save_on_cpu
    with _Modules(step) as modules, _LiveBytes(result, modules) as live, _fsdp_storage_counted(live):
        modeling.save_on_cpu = _offload_counted_as_host(live)
        try:
            for p in model.parameters():
                live.add(p, HOST if host_shards else "adapter" if p.requires_grad else "weights")
            for _ in range(2):  # the second step holds the optimizer's state
                _one_step(live, model, step, optimizer, batch, micro_batches, host_shards)
        finally:
            modeling.save_on_cpu = real_offload


@contextlib.contextmanager
def _fsdp_storage_counted(live: _LiveBytes):
    """FSDP2 frees a gathered layer's weights by resizing their storages to 0 bytes, and refills them
    for the next all-gather, outside any tensor operation the dispatch mode sees: follow both."""
    try:
        from torch.distributed.fsdp._fully_shard import _fsdp_param, _fsdp_param_group
    except ImportError:  # a torch without FSDP2: nothing is sharded
        yield
        return
    real_alloc, real_free = _fsdp_param.alloc_storage, _fsdp_param.free_storage

    def alloc(tensor: torch.Tensor) -> None:
        real_alloc(tensor)
        live.resized(tensor, "weights")

    def free(tensor: torch.Tensor) -> None:
        real_free(tensor)
        live.resized(tensor, "weights")

    patched = [(_fsdp_param, "alloc_storage", alloc), (_fsdp_param, "free_storage", free)]
    patched.append((_fsdp_param_group, "alloc_storage", alloc))
    originals = [(module, name, getattr(module, name)) for module, name, _ in patched]
    for module, name, fn in patched:
        setattr(module, name, fn)
    try:
        yield
    finally:
        for module, name, fn in originals:
            setattr(module, name, fn)


class _Modules:
    """The module running now, by name, from global forward hooks (the recomputations of the backward
    included); ``in_backward`` is set around ``backward()``.

    Written by hand: torch's ModTracker also tracks backward modules, but its gradient hooks keep
    every micro-batch's embedding output and its gradient alive, which would count as memory the
    training step does not hold.
    """

    def __init__(self, root: torch.nn.Module) -> None:
        self.names = {id(m): name for name, m in root.named_modules()}
        self.stack: list[str] = []
        self.current = ""
        self.in_backward = False

    def _enter(self, module, args) -> None:
        name = self.names.get(id(module))
        if name is not None:
            self.stack.append(name)
            self.current = name

    def _leave(self, module, args, output) -> None:
        if self.names.get(id(module)) is not None and self.stack:
            self.stack.pop()
            if self.stack:  # back in the parent; outside every module the last one run stays named
                self.current = self.stack[-1]

    def __enter__(self) -> _Modules:
        from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

        self.handles = [register_module_forward_pre_hook(self._enter), register_module_forward_hook(self._leave)]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()


def _one_step(
    live: _LiveBytes, model, step, optimizer, batch: dict, micro_batches: int, host_shards: bool = False
) -> None:
    trainable = [p for p in model.parameters() if p.requires_grad]
    for _ in range(micro_batches):  # a second micro-batch adds to the gradients held
        live.kind = "activations"
        loss = step(batch)
        live.kind = "backward temporaries"
        live.modules.in_backward = True
        loss.backward()
        live.modules.in_backward = False
        del loss
        for p in trainable:
            live.relabel(p.grad, HOST if host_shards else "gradients")
    live.kind = "backward temporaries"
    torch.nn.utils.clip_grad_norm_(trainable, 1.0)
    live.kind = HOST if host_shards else "optimizer"
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _offload_counted_as_host(live: _LiveBytes):
    """torch's ``save_on_cpu`` as seen from a device: what it packs is a host copy (counted apart), and
    unpacking makes a device copy again (counted) for the backward that needs it."""

    class SaveOnHost(torch.autograd.graph.saved_tensors_hooks):
        def __init__(self, pin_memory: bool = False, device_type: str = "cuda") -> None:
            def pack(tensor: torch.Tensor) -> torch.Tensor:
                kind, live.kind = live.kind, HOST
                try:
                    return tensor.detach().clone()
                finally:
                    live.kind = kind

            super().__init__(pack, lambda packed: packed.clone())

    return SaveOnHost


# ----------------------------------------------------------------------------------------------------
# 8-/4-bit bases


def quantized_bytes(in_features: int, out_features: int, bits: int) -> int:
    """The bytes bitsandbytes stores for a frozen ``out x in`` linear weight.

    NF4 with double quantization: two weights a byte, one absmax byte per block of 64 weights, an fp32
    absmax per 256 of those, and its small tables (16 + 256 fp32 codes, one fp32 offset). LLM.int8:
    a byte a weight and an fp32 scale per output row. (tests/train/test_simulate.py checks both
    against bitsandbytes' own layers.)
    """
    n = in_features * out_features
    if bits == 8:
        return n + 4 * out_features
    blocks = -(-n // 64)
    return -(-n // 2) + blocks + 4 * -(-blocks // 256) + 4 * (16 + 256 + 1)


class _DequantizedMatmul(torch.autograd.Function):
    """bitsandbytes' training matmul over a frozen quantized weight (``MatMul4Bit``): the weight is
    dequantized to the activation dtype for the forward and again for the backward, a temporary of
    ``out x in`` each time, and nothing of the input is saved (the weight takes no gradient)."""

    @staticmethod
    def forward(ctx, x, packed, out_features, bias):
        ctx.shape = (out_features, x.shape[-1])
        weight = torch.zeros(ctx.shape, dtype=x.dtype, device=x.device)  # the dequantized copy
        return torch.nn.functional.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        weight = torch.zeros(ctx.shape, dtype=grad.dtype, device=grad.device)
        return grad @ weight, None, None, None


class QuantizedLinear(torch.nn.Linear):
    """A frozen linear layer held as bitsandbytes holds it (packed bytes, :func:`quantized_bytes`), for
    the simulation: bitsandbytes' own layers cannot be built on fake tensors. PEFT wraps it like the
    ``nn.Linear`` it is."""

    def __init__(self, linear: torch.nn.Linear, bits: int) -> None:
        torch.nn.Module.__init__(self)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        size = quantized_bytes(self.in_features, self.out_features, bits)
        self.weight = torch.nn.Parameter(
            torch.empty(size, dtype=torch.uint8, device=linear.weight.device), requires_grad=False
        )
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _DequantizedMatmul.apply(x, self.weight, self.out_features, self.bias)


def quantize_layers(model: torch.nn.Module, bits: int) -> int:
    """Every linear layer inside the decoder layers as bitsandbytes quantizes it (embeddings and the output
    layer stay in bf16, as transformers' bitsandbytes integration leaves them); returns how many."""
    count = 0
    for layer in model.model.layers:
        for name, module in list(layer.named_modules()):
            if type(module) is torch.nn.Linear:
                parent_name, _, child = name.rpartition(".")
                parent = layer.get_submodule(parent_name) if parent_name else layer
                setattr(parent, child, QuantizedLinear(module, bits))
                count += 1
    return count


def _loss(implementation: str) -> str:
    return "chunked" if implementation in ("auto", "liger") else implementation


def simulate_plan(
    config: FathomConfig, plans: list[PhasePlan], shards: int = 1, hardware_key: str = "h100-80gb"
) -> list[SimulatedStep]:
    """Every phase simulated with the memory setup the planner picks for it on ``hardware_key`` (a CUDA GPU
    with flash attention; train.memory), beside the planner's tensor estimate for the same step (no
    allowance for the context); ``shards`` > 1: one rank of FSDP over that many."""
    import dataclasses

    from fathom.estimate import ModelShape, Options, estimate_memory, hardware_by_key, judge, with_memory

    hf_config = transformers_config(config)
    shape = ModelShape.from_config(hf_config)
    hardware = hardware_by_key(hardware_key)
    options = dataclasses.replace(Options.from_config(config, hardware), attention="flash", shards=shards)
    out = []
    for plan in plans:
        setup = judge(shape, config, hardware, plan).memory
        ranks = f", one rank of FSDP over {shards}" if shards > 1 else ""
        logger.info(
            "simulating %s at %s tokens on fake tensors (%s)%s...",
            plan.name,
            f"{plan.max_seq_length:,}",
            setup.describe(),
            ranks,
        )
        step = simulate_phase(config, plan, hf_config, shards=shards, memory=(setup.checkpoint_every, setup.offload))
        step.memory = setup.to_dict()
        planned = with_memory(options, setup.checkpoint_every, setup.offload)
        step.planner_bytes = estimate_memory(shape, planned, plan.max_seq_length, gpu_overhead=False).total
        out.append(step)
    return out


def add_simulation(config: FathomConfig, summary: dict, world_size: int, gpu: str | None) -> None:
    """``plan --simulate``: each phase's step run on fake tensors at the real shape (:func:`simulate_plan`),
    its peak and where it happens added to the summary's phases."""
    from fathom.reports.plan import sft_rows_per_epoch
    from fathom.schedule import plan_phases
    from fathom.train.distributed import resolve_strategy

    plans = plan_phases(config, world_size, sft_rows_per_epoch(config)[0])
    shards = world_size if resolve_strategy(config.train.strategy, world_size) == "fsdp" else 1
    steps = simulate_plan(config, plans, shards, gpu or "h100-80gb")
    for phase, simulated in zip(summary["phases"], steps, strict=True):
        phase.update(simulated.as_dict())
    summary["simulation_note"] = CAVEAT + (f"; one rank of FSDP over {shards} processes" if shards > 1 else "")
