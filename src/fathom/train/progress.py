"""Where a run is, readable without loading a model: ``status.json`` and ``train.log`` in the output folder.

``status.json`` is rewritten (atomically) by rank 0 at every logged step, at every checkpoint and
when the run ends, so ``fathom runs OUTPUT_DIR`` on a login node can tell a cluster user the phase,
step, tokens, last loss, the rate and the time left at that rate, and the last checkpoint, without
TensorBoard. ``train.log`` holds every line fathom logged, the one-line summary per phase included,
appended across resumes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from fathom.fsutil import atomic_write_text

logger = logging.getLogger("fathom")

STATUS_FILE = "status.json"
TRAIN_LOG = "train.log"
LOCK_HOLDER = ".fathom.lock.json"


@contextlib.contextmanager
def train_log(output_dir: Path):
    """Copy fathom's log lines into ``<output_dir>/train.log`` (appended; timestamps with the date) for the block."""
    handler = logging.FileHandler(output_dir / TRAIN_LOG, encoding="utf-8", delay=True)
    handler.setFormatter(logging.Formatter("[%(asctime)s] %(levelname)s: %(message)s", "%Y-%m-%d %H:%M:%S"))
    handler.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        handler.close()


class StatusFile:
    """Rank 0's writer of ``status.json``; the rate is measured between two updates of this process."""

    def __init__(self, output_dir: Path, plans: list[dict]) -> None:
        self.path = output_dir / STATUS_FILE
        self.plans = [{k: p[k] for k in ("name", "kind", "max_seq_length", "steps", "trained_tokens")} for p in plans]
        self.started = time.time()
        self.last: tuple[float, int] | None = None  # (time, tokens seen) at the last update
        self.rate = 0.0
        self.loss: float | None = None
        self.checkpoint: str | None = None

    def update(self, state, status: str = "running", loss: float | None = None, checkpoint: Path | None = None) -> None:
        """Record ``state`` (a TrainerState); ``status`` is running, stopped, failed or complete."""
        now = time.time()
        if self.last is not None and state.tokens_seen > self.last[1] and now > self.last[0]:
            self.rate = (state.tokens_seen - self.last[1]) / (now - self.last[0])
        if self.last is None or state.tokens_seen != self.last[1]:
            self.last = (now, state.tokens_seen)
        if loss is not None:
            self.loss = loss
        if checkpoint is not None:
            self.checkpoint = checkpoint.name
        record = {
            "status": status,
            "updated": now,
            "started": self.started,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "phase_index": state.phase_index,
            "phase_name": state.phase_name,
            "phase_step": state.phase_step,
            "phase_tokens_seen": state.phase_tokens_seen,
            "global_step": state.global_step,
            "tokens_seen": state.tokens_seen,
            "loss": self.loss,
            "tokens_per_second": self.rate,
            "last_checkpoint": self.checkpoint,
            "phases": self.plans,
        }
        try:
            atomic_write_text(self.path, json.dumps(record, indent=1))
        except OSError as exc:  # a status file must never stop a run (a full disk stops it elsewhere)
            logger.debug("could not write %s: %s", self.path, exc)


@dataclass
class RunStatus:
    """A run as ``fathom runs`` shows it."""

    folder: Path
    status: str  # running | stopped | failed | complete | killed (the process is gone) | unknown
    record: dict

    def to_dict(self) -> dict:
        return {"folder": str(self.folder), "status": self.status, **self.record}


def read_status(folder: Path) -> RunStatus | None:
    """The run in ``folder`` from its ``status.json`` (or, for runs older than it, its newest checkpoint);
    None when the folder holds no run."""
    from fathom.train.checkpoint import RunLayout, TrainerState

    layout = RunLayout(folder)
    try:
        record = json.loads((folder / STATUS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        record = None
    if record is None:
        if not layout.holds_a_run():
            return None
        newest = layout.latest_checkpoint()
        if newest is None:
            return RunStatus(folder, "unknown", {})
        state = TrainerState.from_file(newest / "trainer_state.json")
        keys = ("phase_index", "phase_name", "phase_step", "global_step", "tokens_seen")
        record = {k: getattr(state, k) for k in keys}
        record |= {"last_checkpoint": newest.name, "updated": newest.stat().st_mtime}
        return RunStatus(folder, "complete" if state.run_complete else "stopped", record)
    record = _well_typed(record)
    status = record.get("status", "unknown")
    if status == "running" and _holder_is_gone(folder, record):
        status = "killed"
    return RunStatus(folder, status, record)


_STATUS_TYPES = {
    "status": str, "host": str, "phase_name": str, "last_checkpoint": str, "pid": int, "phase_index": int,
    "phase_step": int, "global_step": int, "tokens_seen": int, "phase_tokens_seen": int,
    "loss": float, "tokens_per_second": float, "updated": float, "phases": list,
}  # fmt: skip
_PHASE_TYPES = {"name": str, "steps": int, "max_seq_length": int, "trained_tokens": int}


def _well_typed(record) -> dict:
    """The fields of a status.json that have the types ``describe`` expects (another tool, an old fathom or
    a damaged write may have left others); a field missing or of another type is left out, not guessed."""
    if not isinstance(record, dict):
        return {}
    out = {}
    for key, kind in _STATUS_TYPES.items():
        value = record.get(key)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, kind) and not isinstance(value, bool) and (kind is not int or value >= 0):
            out[key] = value
    phases = out.get("phases", [])
    if not all(isinstance(p, dict) and all(isinstance(p.get(k), t) for k, t in _PHASE_TYPES.items()) for p in phases):
        out["phases"] = []
    return {**{k: v for k, v in record.items() if k not in _STATUS_TYPES}, **out}


def _holder_is_gone(folder: Path, record: dict) -> bool:
    """Whether the process that wrote a 'running' status has ended without saying so (kill -9, a node lost).

    On the same host its pid is checked; from another host only the run's lock file can tell, so
    the run is taken to be alive.
    """
    if record.get("host") != socket.gethostname():
        return False
    try:
        holder = json.loads((folder / LOCK_HOLDER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        holder = {}
    pid = holder.get("pid", record.get("pid"))
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's process: alive
        return False
    return False


def find_runs(paths: list[Path]) -> list[RunStatus]:
    """Each path that holds a run, else the runs in its subfolders (``fathom runs runs/``)."""
    found = []
    for path in paths:
        status = read_status(path) if path.is_dir() else None
        if status is not None:
            found.append(status)
        elif path.is_dir():
            found.extend(s for child in sorted(path.iterdir()) if child.is_dir() for s in [read_status(child)] if s)
    return found
