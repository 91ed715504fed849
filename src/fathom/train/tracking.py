"""TensorBoard logging: one run folder per phase (``<phase>/logs``) on a shared global-step axis.

``tensorboard --logdir <output_dir>`` then shows the phases side by side in one chart, each in its
own colour, one after the other along the x axis. A phase transition shows as a step change of
``train/seq_len`` and ``train/phase_index`` and as a text entry under ``phase_transition``.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

import torch


def peak_memory_gb(device: torch.device) -> float:
    """Peak memory of this process on ``device``: CUDA allocator peak, MPS driver memory, else peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    if device.type == "mps":
        return torch.mps.driver_allocated_memory() / 2**30
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (2**30 if sys.platform == "darwin" else 2**20)


class PhaseLogger:
    """Scalars and text of one phase, written with torch's SummaryWriter."""

    def __init__(self, log_dir: Path, purge_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        log_dir.mkdir(parents=True, exist_ok=True)
        # purge_step drops events a crashed run wrote after its last checkpoint, so a resumed run
        # does not draw two curves over the same steps.
        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)

    def text(self, tag: str, text: str, step: int) -> None:
        self.writer.add_text(tag, text, step)

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()


class NullLogger:
    """What ranks other than 0 log to: nothing."""

    def scalars(self, step: int, values: dict[str, float]) -> None:
        pass

    def text(self, tag: str, text: str, step: int) -> None:
        pass

    def close(self) -> None:
        pass
