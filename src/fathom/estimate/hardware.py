"""The hardware a plan is judged against: the known GPUs (memory, dense bf16 peak, the utilization a run
reaches) and this machine, measured once (its matmul speed, its free memory)."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

GIB = 2**30


@dataclass(frozen=True)
class Hardware:
    key: str
    label: str
    memory_gib: float  # usable by one process on one device
    bf16_tflops: float  # dense peak per device
    devices: int = 1
    # FLOPs utilization assumed for the time estimate, counting the FLOPs the device runs (the recompute
    # of checkpointed layers included: hardware FLOPs, HFU): measured 34-39% of the datasheet peak for
    # Qwen2.5-7B LoRA from 4K to 128K on an H200 with every layer checkpointed (bench/gpu.py, PyTorch's
    # SDPA flash kernels). Model FLOPs utilization (MFU) leaves the recompute out: there, 2/3 of it.
    mfu: float = 0.35
    kind: str = "cuda"  # cuda | mps | cpu
    flash: bool = True  # FlashAttention-2 available
    rate_note: str = ""  # where bf16_tflops came from, when it was measured here


HARDWARE = {
    h.key: h
    for h in (
        # Apple GPUs share memory with the OS: about 2/3 of it is usable by one process.
        Hardware("mac-16gb", "Mac M1/M2 16 GB", 10.5, 7, mfu=0.30, kind="mps", flash=False),
        Hardware("mac-ultra-64gb", "Mac Ultra 64 GB+", 48, 27, mfu=0.30, kind="mps", flash=False),
        Hardware("rtx3090", "RTX 3090 24 GB", 24, 71),
        Hardware("rtx4090", "RTX 4090 24 GB", 24, 165),
        Hardware("a100-40gb", "A100 40 GB", 40, 312),
        Hardware("a100-80gb", "A100 80 GB", 80, 312),
        Hardware("h100-80gb", "H100 80 GB", 80, 989),
        Hardware("h200-141gb", "H200 141 GB", 141, 989),
        Hardware("2x3090-ddp", "2x RTX 3090 24 GB (DDP)", 24, 71, devices=2),
    )
}


THIS_MACHINE = "this-machine"
# Training throughput as a share of the matmul rate measured by this_machine(). Measured on the
# 2-core x86 CPU of this project: the demo (SmolLM2-135M-Instruct, fp32, no checkpointing) trains at
# ~240 tokens/s at 256-token rows and ~200 at 1024, i.e. 133 and 122 GFLOP/s by flops_per_token,
# against an idle fp32 1024x1024 matmul rate of 242-262 GFLOP/s: about half. GPUs too: Qwen2.5-7B LoRA
# trained at 43-49% of an H200's measured 8192^3 bf16 matmul rate (788 TFLOP/s) from 4K to 128K.
_TRAINING_SHARE = {"cpu": 0.5, "mps": 0.5, "cuda": 0.5}


def _matmul_tflops(device, dtype, seconds: float = 0.3) -> float:
    """Dense matmul TFLOP/s measured on ``device`` for about ``seconds`` (1024 x 1024 operands)."""
    import time

    import torch

    a = torch.randn(1024, 1024, dtype=dtype, device=device)
    b = torch.randn(1024, 1024, dtype=dtype, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else torch.mps.synchronize if device.type == "mps" else None
    a @ b  # warm-up
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
        if sync is not None and count % 8 == 0:
            sync()
    if sync is not None:
        sync()
    return count * 2 * 1024**3 / (time.perf_counter() - start) / 1e12


def usable_memory_gib(device) -> float:
    """Memory one training process may use on ``device`` (a torch.device): a CUDA GPU's total; an Apple
    GPU 2/3 of the system memory (shared with the OS); the CPU 80% of it (the rest for the OS)."""
    import os

    if device.type == "cuda":
        import torch

        return torch.cuda.get_device_properties(device).total_memory / GIB
    system = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB
    return system * (2 / 3 if device.type == "mps" else 0.8)


@functools.cache
def this_machine() -> Hardware:
    """The device fathom would train on here (CUDA, then MPS, then CPU), its memory, and a speed measured now.

    The time estimate uses a short matmul calibration in the dtype training would use (bf16 on GPUs,
    fp32 on the CPU) times the share of it that training reaches (``_TRAINING_SHARE``); it reads
    lower on a machine that is busy at that moment.
    """
    import os

    import torch

    if torch.cuda.is_available():
        device = torch.device("cuda", torch.cuda.current_device())
        name, kind, dtype = torch.cuda.get_device_properties(device).name, "cuda", torch.bfloat16
        from fathom.model.load import flash_attn_available

        flash = flash_attn_available()
    elif torch.backends.mps.is_available():
        device, kind, dtype, flash = torch.device("mps"), "mps", torch.bfloat16, False
        name = "Apple GPU (MPS)"
    else:
        device, kind, dtype, flash = torch.device("cpu"), "cpu", torch.float32, False
        name = f"CPU, {os.cpu_count()} cores"
    memory = usable_memory_gib(device)
    tflops = _matmul_tflops(device, dtype)
    return Hardware(
        THIS_MACHINE,
        f"this machine: {name}, {memory:.0f} GiB usable",
        memory,
        tflops,
        mfu=_TRAINING_SHARE[kind],
        kind=kind,
        flash=flash,
        rate_note=f"{str(dtype).replace('torch.', '')} matmul measured at {tflops * 1000:,.0f} GFLOP/s just now",
    )


def hardware_by_key(key: str) -> Hardware:
    return this_machine() if key == THIS_MACHINE else HARDWARE[key]


def hardware_choices() -> list[str]:
    """What ``fathom plan --gpu`` accepts: this machine, then the table."""
    return [THIS_MACHINE, *HARDWARE]


def on_devices(hardware: Hardware, world_size: int) -> Hardware:
    """``hardware`` as a machine of ``world_size`` such GPUs (``fathom plan --world-size N``): the same
    memory per device, with FSDP's shards and the speed over N. Entries that already name several
    devices, Apple GPUs and the CPU stay as they are."""
    if world_size <= 1 or hardware.devices > 1 or hardware.kind != "cuda":
        return hardware
    return dataclasses.replace(hardware, label=f"{world_size}x {hardware.label}", devices=world_size)
