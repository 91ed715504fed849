"""Several processes through PyTorch's own engine: torch.distributed + DistributedDataParallel.

``torchrun`` and ``accelerate launch`` both start one process per GPU with ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` set; :func:`setup` joins them into one process
group (NCCL on CUDA, gloo on the CPU). Each rank holds the frozen base and the adapter; DDP
all-reduces the adapter's gradients. Only rank 0 writes (logs, TensorBoard, checkpoints) through
:func:`on_main`; barriers keep the others from racing ahead of a save.

A rank that dies makes torchrun stop the others; a rank left waiting in a collective gives up
after ``FATHOM_DIST_TIMEOUT_MINUTES`` (default 10) instead of hanging for hours.
"""

from __future__ import annotations

import datetime
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

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def setup() -> World:
    """Join the process group when launched with several processes; one process needs nothing."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        timeout = datetime.timedelta(minutes=float(os.environ.get("FATHOM_DIST_TIMEOUT_MINUTES", "10")))
        dist.init_process_group(backend=backend, timeout=timeout)
    if rank != 0:
        logging.getLogger("fathom").setLevel(logging.WARNING)  # one voice: rank 0's
    return World(size, rank, local_rank)


def teardown(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def all_reduce_sum(world: World, values: list[float], device: torch.device) -> list[float]:
    """Sum numbers over the ranks (token counts, loss sums)."""
    if not world.distributed:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


class LossModule(torch.nn.Module):
    """The model plus fathom's loss in one forward, so DDP's hooks see the whole step."""

    def __init__(self, model: torch.nn.Module, loss_fn, chunk_size: int, implementation: str) -> None:
        super().__init__()
        self.model = model
        self.loss_fn, self.chunk_size, self.implementation = loss_fn, chunk_size, implementation

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        loss_sum, _ = self.loss_fn(self.model, batch, self.chunk_size, self.implementation)
        return loss_sum


def wrap(world: World, module: LossModule, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel over the adapter when there are several ranks; the module itself otherwise."""
    if not world.distributed:
        return module
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)
