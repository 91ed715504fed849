"""Several processes through PyTorch's own engine: torch.distributed with DDP or FSDP2.

``torchrun`` and ``accelerate launch`` both start one process per GPU with ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` set; :func:`setup` joins them into one process
group (NCCL on CUDA, gloo on the CPU). Two strategies (``train.strategy``):

- ``ddp``: each rank holds the frozen base and the adapter; DistributedDataParallel all-reduces
  the adapter's gradients.
- ``fsdp``: PyTorch's FSDP2 (``fully_shard``) shards every decoder layer (the model's own
  ``_no_split_modules``) and, at the root, the embeddings, final norm and output layer, frozen
  base and adapter alike, so a base that does not fit one GPU still trains. Checkpoints stay one
  consolidated PEFT adapter: :func:`adapter_state_for_save` gathers the adapter's shards (never the
  base's) and :func:`optimizer_state_for_save` the optimizer's, so a run saved under FSDP resumes
  under DDP or one process, and the other way round.

Only rank 0 writes (logs, TensorBoard, checkpoints); barriers keep the others from racing ahead of
a save.

A rank that dies makes torchrun stop the others; a rank left waiting in a collective gives up
after ``FATHOM_DIST_TIMEOUT_MINUTES`` (default 10) instead of hanging for hours.
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

logger = logging.getLogger("fathom")


@dataclass(frozen=True)
class World:
    size: int = 1
    rank: int = 0
    local_rank: int = 0
    strategy: str = "single"  # single | ddp | fsdp

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def on_main(self, fn, *args, **kwargs):
        """``fn(*args, **kwargs)`` on rank 0 only, its result there; None on the other ranks.

        The one gate for a run's side effects (logs, TensorBoard, files), so they happen once.
        """
        return fn(*args, **kwargs) if self.is_main else None


def resolve_strategy(requested: str, world_size: int) -> str:
    """single for one process; auto means fsdp under an accelerate FSDP launch, else ddp."""
    if world_size <= 1:
        if requested == "fsdp":
            logger.info("train.strategy fsdp: one process, nothing to shard; training unsharded")
        return "single"
    if requested == "auto":
        if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true", "yes"):
            logger.info("train.strategy auto: fsdp (launched with an accelerate FSDP config)")
            return "fsdp"
        return "ddp"
    return requested


def setup(requested_strategy: str = "auto") -> World:
    """Join the process group when launched with several processes; one process needs nothing."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World(strategy=resolve_strategy(requested_strategy, 1))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        timeout = datetime.timedelta(minutes=float(os.environ.get("FATHOM_DIST_TIMEOUT_MINUTES", "10")))
        dist.init_process_group(backend=backend, timeout=timeout)
    if rank != 0:
        logging.getLogger("fathom").setLevel(logging.WARNING)  # one voice: rank 0's
    strategy = resolve_strategy(requested_strategy, size)
    logger.info("distributed: %d processes, %s, backend %s", size, strategy, dist.get_backend())
    return World(size, rank, local_rank, strategy)


def teardown(world: World, finished: bool) -> None:
    """Leave the process group while the interpreter is whole.

    The model and FSDP's state live in reference cycles until a garbage collection (measured: 188
    modules alive after ``train`` returned, 10 after a collection); left to the interpreter's exit,
    their tensors are freed while gloo's threads still run, which aborts the process ("terminate
    called without an active exception": one rank of a finished FSDP run, once in CI). So collect
    them here first; and after a run that finished, let every rank arrive before any closes its
    connections. After an error the other ranks may be gone, so no barrier then.
    """
    if not (world.distributed and dist.is_initialized()):
        return
    if finished:
        dist.barrier()
    gc.collect()
    dist.destroy_process_group()


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


@contextlib.contextmanager
def main_first(world: World):
    """Rank 0 runs the block first (it builds the token cache), the other ranks after it (they read it)."""
    if not world.is_main:
        barrier(world)
    yield
    if world.is_main:
        barrier(world)


def all_reduce_sum(world: World, values: list[float], device: torch.device) -> list[float]:
    """Sum numbers over the ranks (token counts, loss sums)."""
    if not world.distributed:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


class LossModule(torch.nn.Module):
    """The model plus fathom's loss in one forward, so DDP's hooks (or FSDP's root) see the whole step."""

    def __init__(self, model: torch.nn.Module, loss_fn, chunk_size: int, implementation: str) -> None:
        super().__init__()
        self.model = model
        self.loss_fn, self.chunk_size, self.implementation = loss_fn, chunk_size, implementation

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        loss_sum, _ = self.loss_fn(self.model, batch, self.chunk_size, self.implementation)
        return loss_sum


def wrap(world: World, module: LossModule, device: torch.device, cpu_offload: bool = False) -> torch.nn.Module:
    """The step module for the strategy: DDP over the adapter, FSDP2 shards, or the module itself.

    Under FSDP the module is wrapped before the optimizer is built: ``fully_shard`` replaces every
    parameter by its shard (a DTensor).
    """
    if world.strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)
    if world.strategy == "fsdp":
        if not cpu_offload and os.environ.get("FSDP_OFFLOAD_PARAMS", "false").lower() == "true":
            logger.info("FSDP: parameter offload to CPU on (fsdp_offload_params of the accelerate config)")
            cpu_offload = True
        return shard_step(module, device, cpu_offload)
    return module


def shard_step(module: LossModule, device: torch.device, cpu_offload: bool, mesh=None) -> torch.nn.Module:
    """FSDP2 over the process group: every decoder layer its own unit, then the root.

    ``mesh`` defaults to a 1-d mesh over the whole group; ``fathom plan --simulate`` passes one it
    made before entering fake-tensor mode (a mesh cannot be built from fake tensors).
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, OffloadPolicy, fully_shard

    base = module.model.get_base_model() if hasattr(module.model, "get_base_model") else module.model
    block_names = set(getattr(base, "_no_split_modules", None) or [])
    blocks = [m for m in module.modules() if type(m).__name__ in block_names]
    if not blocks:
        raise RuntimeError(
            f"train.strategy fsdp: {type(base).__name__} names no decoder layer class (_no_split_modules); "
            "use train.strategy ddp"
        )
    if cpu_offload and device.type != "cuda":
        logger.info("train.fsdp_cpu_offload: nothing to do on %s, the shards already live in host memory", device)
        cpu_offload = False
    mesh = mesh or init_device_mesh(device.type, (dist.get_world_size(),))
    offload = CPUOffloadPolicy() if cpu_offload else OffloadPolicy()
    for block in blocks:
        fully_shard(block, mesh=mesh, offload_policy=offload)
    fully_shard(module, mesh=mesh, offload_policy=offload)  # the root: embeddings, final norm, output layer
    logger.info(
        "FSDP2: %d %s layers and the root sharded over %d ranks%s",
        len(blocks),
        type(blocks[0]).__name__,
        dist.get_world_size(),
        " (shards offloaded to CPU)" if cpu_offload else "",
    )
    return module


@contextlib.contextmanager
def accumulating(world: World, step_module: torch.nn.Module, last_micro_batch: bool):
    """Skip the gradient all-reduce / reduce-scatter on accumulation micro-steps; sync on the last."""
    if last_micro_batch or not world.distributed:
        yield
    elif world.strategy == "ddp":
        with step_module.no_sync():
            yield
    else:
        step_module.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            step_module.set_requires_gradient_sync(True)


@contextlib.contextmanager
def whole_model(world: World, step_module: torch.nn.Module):
    """Let code call the PEFT model directly (evaluation, generation) while it is sharded.

    Under FSDP the root's own parameters (embeddings, output layer) are gathered for the duration;
    the layers gather theirs as they run. Every rank must run the same forwards inside.
    """
    if world.strategy != "fsdp":
        yield
        return
    step_module.unshard()
    try:
        yield
    finally:
        step_module.reshard()


def evaluates_on_every_rank(world: World) -> bool:
    """FSDP's forwards are collectives, so evaluation runs on every rank; otherwise on rank 0 alone."""
    return world.strategy == "fsdp"


def _full(value):
    from torch.distributed.tensor import DTensor

    return value.full_tensor() if isinstance(value, DTensor) else value


def as_float(value) -> float:
    """A number from a tensor that may be a DTensor (a gradient norm under FSDP)."""
    return float(_full(value).detach()) if isinstance(value, torch.Tensor) else float(value)


def adapter_state_for_save(world: World, peft_model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
    """Under FSDP, the full (gathered) adapter weights for ``save_pretrained(state_dict=...)``; else None.

    Collective: every rank calls it, in the same order; only the adapter's entries (LoRA weights,
    modules trained whole) are gathered, never the frozen base.
    """
    if world.strategy != "fsdp":
        return None
    gathered = {}
    for name, value in peft_model.state_dict().items():
        if "lora_" in name or "modules_to_save" in name:
            gathered[name] = _full(value).detach().cpu()
    return gathered


def optimizer_state_for_save(world: World, optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer's state dict with every sharded tensor gathered (collective under FSDP)."""
    state_dict = optimizer.state_dict()
    if world.strategy != "fsdp":
        return state_dict
    state = {pid: {k: _full(v) for k, v in entry.items()} for pid, entry in state_dict["state"].items()}
    return {"state": state, "param_groups": state_dict["param_groups"]}


def load_optimizer_state(optimizer: torch.optim.Optimizer, state_dict: dict) -> None:
    """Load a consolidated optimizer state, sharding each tensor like its parameter where that is a DTensor."""
    from torch.distributed.tensor import DTensor

    params = [p for group in optimizer.param_groups for p in group["params"]]
    state = {}
    for pid, entry in state_dict["state"].items():
        param = params[int(pid)]
        if isinstance(param, DTensor):
            entry = {
                k: _shard_like(v, param) if isinstance(v, torch.Tensor) and v.shape == param.shape else v
                for k, v in entry.items()
            }
        state[pid] = entry
    optimizer.load_state_dict({"state": state, "param_groups": state_dict["param_groups"]})


def _shard_like(full: torch.Tensor, param) -> torch.Tensor:
    """``full`` cut into this rank's shard the way ``param`` is, on the device its shard lives on."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    mesh, placements = param.device_mesh, param.placements
    sharded = distribute_tensor(full.to(mesh.device_type), mesh, placements)
    local_device = param.to_local().device
    if sharded.to_local().device != local_device:  # shards offloaded to the CPU
        sharded = DTensor.from_local(
            sharded.to_local().to(local_device),
            mesh,
            placements,
            run_check=False,
            shape=param.shape,
            stride=param.stride(),
        )
    return sharded
