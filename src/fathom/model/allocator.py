"""The CUDA caching allocator's settings, chosen before torch is imported (this module does not import it)."""

from __future__ import annotations

import os

ALLOCATOR_VARIABLES = ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF")
EXPANDABLE_SEGMENTS = "expandable_segments:True"


def prefer_expandable_segments(environ=os.environ) -> bool:
    """Give PyTorch's CUDA caching allocator expandable segments, unless the user configured it.

    Why: long rows allocate tensors of many sizes, and the default allocator's fixed segments leave
    gaps that count against the card. Measured on an H200 (bench/gpu.py, Qwen2.5-7B LoRA): it held
    24.3 GiB for a 4-bit 128K step whose live tensors peaked at 18.5 (27.5 for 24.8 at bf16 32K);
    with expandable segments 19.9 for 18.6 (25.3 for 24.8), which is what lets 128K fit a 24 GB
    card. torch reads either name (``PYTORCH_ALLOC_CONF`` is the newer one) once, at the first
    CUDA allocation: call this before anything touches CUDA.
    Returns whether it set the variable.
    """
    if any(name in environ for name in ALLOCATOR_VARIABLES):
        return False
    environ["PYTORCH_CUDA_ALLOC_CONF"] = EXPANDABLE_SEGMENTS
    return True


def allocator_settings() -> str:
    """The CUDA allocator settings this process runs with, for the log."""
    return next((f"{name}={os.environ[name]}" for name in ALLOCATOR_VARIABLES if name in os.environ), "default")
