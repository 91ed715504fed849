"""Where a run's numbers go: TensorBoard (one folder per phase) and the trackers in ``train.report_to``.

TensorBoard logs go to ``<phase>/logs`` on a shared global-step axis: ``tensorboard --logdir
<output_dir>`` shows the phases side by side in one chart, each in its own colour, one after the
other along the x axis. A phase transition shows as a step change of ``train/seq_len`` and
``train/phase_index`` and as a text entry under ``phase_transition``. W&B, MLflow and Trackio
(:mod:`fathom.train.trackers`) receive the same scalars, texts and images at the same steps, from
this one place; only rank 0 writes any of it.
"""

from __future__ import annotations

import logging
import resource
import sys
from pathlib import Path

import torch

from fathom.config import ConfigError, FathomConfig

logger = logging.getLogger("fathom")


def peak_memory_gb(device: torch.device) -> float:
    """Peak memory of this process on ``device``: CUDA allocator peak, MPS driver memory, else peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    if device.type == "mps":
        return torch.mps.driver_allocated_memory() / 2**30
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (2**30 if sys.platform == "darwin" else 2**20)


def reset_peak_memory(device: torch.device) -> None:
    """Start a phase's peak afresh where the device can (CUDA's allocator); a CPU process's peak RSS cannot
    be reset, so there each phase's peak is the process's so far."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


class PhaseLogger:
    """Scalars, text and images of one phase, written with torch's SummaryWriter."""

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

    def image(self, tag: str, path: Path, step: int) -> None:
        import numpy as np
        from PIL import Image

        with Image.open(path) as picture:
            self.writer.add_image(tag, np.asarray(picture.convert("RGB")), step, dataformats="HWC")

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()


class NullLogger:
    """What ranks other than 0 log to: nothing."""

    def scalars(self, step: int, values: dict[str, float]) -> None:
        pass

    def text(self, tag: str, text: str, step: int) -> None:
        pass

    def image(self, tag: str, path: Path, step: int) -> None:
        pass

    def close(self) -> None:
        pass


class Tracking:
    """Rank 0's trackers for the whole run; :meth:`phase` gives the logger one phase writes to.

    A tracker that fails while logging is reported once and dropped: a dashboard must never cost
    the user the run (TensorBoard included).
    """

    def __init__(self, config: FathomConfig, output_dir: Path, plans: list[dict]) -> None:
        from fathom.train.trackers import TRACKERS, RunIds, check_trackers_installed, flat_params

        t = config.train
        check_trackers_installed(t.report_to)
        self.tensorboard = "tensorboard" in t.report_to
        params = flat_params(config, plans)
        run_name = t.run_name or Path(config.output_dir).resolve().name
        ids = RunIds(output_dir)
        self.trackers = []
        for name in (n for n in t.report_to if n in TRACKERS):
            try:
                self.trackers.append(TRACKERS[name](t.project, run_name, output_dir, params, ids))
            except Exception as exc:  # not logged in, server unreachable, a bad project name
                self.close("failed")
                raise ConfigError(
                    f"train.report_to: {name} could not start a run ({type(exc).__name__}: "
                    f"{str(exc).splitlines()[0][:200] if str(exc) else ''}); fix that, or log offline "
                    "(WANDB_MODE=offline for wandb), or remove it from train.report_to"
                ) from None

    def phase(self, log_dir: Path, purge_step: int | None) -> _PhaseLog:
        return _PhaseLog(self, PhaseLogger(log_dir, purge_step) if self.tensorboard else NullLogger())

    def each(self, method: str, *args) -> None:
        """Call ``method`` on every tracker; one that raises is reported and dropped."""
        for tracker in list(self.trackers):
            try:
                getattr(tracker, method)(*args)
            except Exception as exc:  # a tracker's own failure (network, disk, API change)
                reason = f"{type(exc).__name__}: {str(exc)[:200]}"
                logger.warning("%s: %s failed (%s); no longer reporting to it", tracker.name, method, reason)
                self.trackers.remove(tracker)

    def file(self, path: Path) -> None:
        """A file of the run (the config, a final README) as an artifact where the tracker keeps files."""
        if path.is_file():
            self.each("file", path)

    def close(self, ending: str = "complete") -> None:
        """``ending``: complete, stopped (max_steps, Ctrl-C: resumable) or failed."""
        self.each("close", ending)
        self.trackers = []


class _PhaseLog:
    """One phase's view of the run's logging: TensorBoard's phase folder plus every tracker."""

    def __init__(self, tracking: Tracking, board) -> None:
        self.tracking, self.board = tracking, board

    def scalars(self, step: int, values: dict[str, float]) -> None:
        self.board.scalars(step, values)
        self.tracking.each("scalars", step, values)

    def text(self, tag: str, text: str, step: int) -> None:
        self.board.text(tag, text, step)
        self.tracking.each("text", tag, text, step)

    def image(self, tag: str, path: Path, step: int) -> None:
        self.board.image(tag, path, step)
        self.tracking.each("image", tag, path, step)

    def close(self) -> None:
        self.board.close()
