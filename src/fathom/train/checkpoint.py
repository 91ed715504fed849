"""The output folder: the only code that knows the disk layout of a run.

::

    <output_dir>/fathom_config.yaml          the resolved config of the run
    <output_dir>/data_summary.json           documents, tokens, formats the run reads (counts only)
    <output_dir>/status.json, train.log      where the run is, and its log (fathom.train.progress)
    <output_dir>/<phase name>/               adapter_model.safetensors, adapter_config.json, tokenizer files,
                                             trainer_state.json, fathom_config.yaml, logs/ (TensorBoard)
    <output_dir>/final_<N>k_model/           adapter_model.safetensors, adapter_config.json, tokenizer files
    <output_dir>/checkpoints/step-<NNNNNNN>/ resumable state: adapter, optimizer.safetensors, rng.safetensors,
                                             trainer_state.json

Every folder is written under a temporary name and renamed into place, so a crash never leaves a
half-written checkpoint: a checkpoint folder either holds ``trainer_state.json`` or does not exist.
Phase folders also hold the live ``logs/``, so their files are moved in one by one, the
``trainer_state.json`` last. Everything is safetensors or JSON; nothing is unpickled.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from fathom.config import ConfigError, FathomConfig, config_from_dict, config_to_yaml, validate
from fathom.errors import RunExistsError
from fathom.fsutil import atomic_dir, atomic_write_text, is_leftover
from fathom.model.adapter import ADAPTER_WEIGHTS, CONFIG_FILE
from fathom.model.rope import RopeRecord

logger = logging.getLogger("fathom")

TRAINER_STATE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.safetensors"
OPTIMIZER_META = "optimizer.json"
RNG_FILE = "rng.safetensors"
DATA_SUMMARY = "data_summary.json"
_STEP_DIR = re.compile(r"^step-(\d+)$")


@dataclass
class TrainerState:
    """Where the run is: saved in every checkpoint, read back by ``--resume``."""

    global_step: int = 0
    tokens_seen: int = 0  # tokens trained over all phases
    phase_index: int = 0
    phase_name: str = ""
    phase_step: int = 0
    phase_tokens_seen: int = 0
    phase_rows_consumed: int = 0  # global data position inside the phase (rows over all ranks)
    supervised_tokens_seen: int = 0  # tokens that carried a label (Phase 2: assistant tokens), all phases
    skipped_steps: int = 0  # steps without an update (non-finite loss or gradients), whole run
    data_key: str = ""  # the token cache the run reads: changes with the documents, tokenizer, cleaning
    data_changes: list[str] = field(default_factory=list)  # resumes that went on with other data (--allow-changed)
    phase_complete: bool = False
    run_complete: bool = False
    world_size: int = 1
    memory: dict[str, dict[str, Any]] = field(default_factory=dict)  # per phase: what train.memory chose
    log_history: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    def phases_done(self) -> int:
        """How many phases (Phase 1's, then Phase 2) this state has finished."""
        return self.phase_index + (1 if self.phase_complete or self.run_complete else 0)

    def reset_phase_progress(self) -> None:
        """Zero the counters of the phase in progress: a phase begins (its index is set by the caller)."""
        self.phase_step = self.phase_tokens_seen = self.phase_rows_consumed = 0
        self.phase_complete = False
        self.log_history = []

    @classmethod
    def from_file(cls, path: Path) -> TrainerState:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
        except (OSError, ValueError, TypeError) as exc:
            raise ValueError(f"{path}: not a readable fathom trainer state ({exc})") from None


class RunLayout:
    """Paths of one run's output folder, and the writers and readers of its checkpoints."""

    def __init__(self, output_dir: str | Path) -> None:
        self.root = Path(output_dir)

    # paths -------------------------------------------------------------------------------------
    def phase_dir(self, name: str) -> Path:
        return self.root / name

    def phase_logs(self, name: str) -> Path:
        return self.root / name / "logs"

    def final_dir(self, dirname: str) -> Path:
        return self.root / dirname

    @property
    def checkpoints_dir(self) -> Path:
        return self.root / "checkpoints"

    @property
    def config_file(self) -> Path:
        return self.root / CONFIG_FILE

    # inspecting --------------------------------------------------------------------------------
    def checkpoints(self) -> list[Path]:
        """Complete resumable checkpoints, oldest first."""
        if not self.checkpoints_dir.is_dir():
            return []
        found = []
        for child in self.checkpoints_dir.iterdir():
            match = _STEP_DIR.match(child.name)
            if match and (child / TRAINER_STATE).is_file():
                found.append((int(match.group(1)), child))
        return [p for _, p in sorted(found)]

    def latest_checkpoint(self) -> Path | None:
        found = self.checkpoints()
        return found[-1] if found else None

    @contextlib.contextmanager
    def locked(self):
        """Hold the run's lock for the block: one ``fathom train`` per output folder at a time.

        An OS file lock (``filelock``): it dies with its process, so a killed run never leaves a stale
        one. Who holds it (pid, host, start) is written beside it for the message a second run gets.
        """
        from filelock import FileLock, Timeout

        created = not self.root.exists()
        self.root.mkdir(parents=True, exist_ok=True)
        holder = self.root / ".fathom.lock.json"
        lock = FileLock(str(self.root / ".fathom.lock"))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            try:
                who = json.loads(holder.read_text(encoding="utf-8"))
                detail = f" (pid {who['pid']} on {who['host']}, since {who['since']})"
            except (OSError, ValueError, KeyError, TypeError):
                detail = ""
            raise RunExistsError(
                f"output_dir: {self.root} is in use by another fathom train{detail}; wait for it to finish "
                "or choose another output_dir"
            ) from None
        try:
            info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
            atomic_write_text(holder, json.dumps(info))
            yield
        finally:
            lock.release()
            if created and {p.name for p in self.root.iterdir()} <= _FATHOM_FILES:
                shutil.rmtree(self.root, ignore_errors=True)  # a run that wrote nothing leaves no folder

    def remove_leftovers(self) -> int:
        """Temporary files and folders of writes a killed process never finished: removed (see ``is_leftover``)."""
        leftovers = [
            p
            for parent in (self.root, self.checkpoints_dir)
            if parent.is_dir()
            for p in parent.iterdir()
            if is_leftover(p)
        ]
        for path in leftovers:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        if leftovers:
            logger.info("removed %d unfinished temporary file(s) of an earlier run in %s", len(leftovers), self.root)
        return len(leftovers)

    def holds_a_run(self) -> bool:
        """True when the folder has anything a run wrote (config, checkpoints, phase folders)."""
        return self.config_file.exists() or bool(self.checkpoints())

    # writing -----------------------------------------------------------------------------------
    @property
    def data_summary_file(self) -> Path:
        return self.root / DATA_SUMMARY

    def write_run_config(self, config: FathomConfig, data_summary: dict | None = None) -> None:
        """The resolved config, and what the run reads as counts (``data_summary.json``, for model cards)."""
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.config_file, config_to_yaml(config))
        if data_summary:
            atomic_write_text(self.data_summary_file, json.dumps(data_summary, indent=1))

    @staticmethod
    def _write_adapter(
        folder: Path,
        model,
        tokenizer,
        config: FathomConfig,
        state: TrainerState | None,
        record: RopeRecord | None,
        final_path: Path,
        adapter_state: dict[str, torch.Tensor] | None = None,
    ) -> None:
        """An adapter folder's files into ``folder`` (to be renamed to ``final_path``, which the README names)."""
        # adapter_state: the gathered weights when the model is sharded (FSDP); else PEFT reads the model
        model.save_pretrained(folder, safe_serialization=True, state_dict=adapter_state)
        if record is not None:
            record.write(folder, final_path)
        if tokenizer is not None:
            tokenizer.save_pretrained(folder)
        (folder / CONFIG_FILE).write_text(config_to_yaml(config), encoding="utf-8")
        if state is not None:
            (folder / TRAINER_STATE).write_text(state.to_json(), encoding="utf-8")

    def save_phase(
        self, name: str, model, tokenizer, config: FathomConfig, state: TrainerState, record=None, adapter_state=None
    ) -> Path:
        """The user-facing checkpoint of a finished phase; its live logs/ folder is kept.

        The files are written to a temporary folder, then moved in one by one, ``trainer_state.json``
        last: a phase folder holding that file is complete.
        """
        target = self.phase_dir(name)
        target.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=self.root))
        try:
            self._write_adapter(tmp, model, tokenizer, config, state, record, target, adapter_state)
            files = sorted(tmp.iterdir(), key=lambda p: p.name == TRAINER_STATE)  # the state file last
            for item in files:
                dest = target / item.name
                if dest.is_dir():
                    shutil.rmtree(dest)
                os.replace(item, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return target

    def save_final(
        self, dirname: str, model, tokenizer, config: FathomConfig, state: TrainerState, record=None, adapter_state=None
    ) -> Path:
        target = self.final_dir(dirname)
        with atomic_dir(target) as tmp:
            self._write_adapter(tmp, model, tokenizer, config, state, record, target, adapter_state)
        return target

    def save_checkpoint(
        self,
        model,
        optimizer_state: dict,
        config: FathomConfig,
        state: TrainerState,
        rng_state: dict[str, torch.Tensor],
        keep: int,
        record: RopeRecord | None = None,
        adapter_state: dict[str, torch.Tensor] | None = None,
    ) -> Path:
        """A resumable checkpoint; older ones beyond ``keep`` are removed once this one is complete.

        ``optimizer_state`` is a consolidated ``optimizer.state_dict()`` (gathered under FSDP), so any
        world size and strategy can resume from it.
        """
        target = self.checkpoints_dir / f"step-{state.global_step:07d}"
        with atomic_dir(target) as tmp:
            self._write_adapter(tmp, model, None, config, None, record, target, adapter_state)
            tensors, meta = flatten_optimizer_state(optimizer_state)
            save_file(tensors, str(tmp / OPTIMIZER_FILE))
            (tmp / OPTIMIZER_META).write_text(json.dumps(meta), encoding="utf-8")
            save_file({k: v.contiguous() for k, v in rng_state.items()}, str(tmp / RNG_FILE))
            (tmp / TRAINER_STATE).write_text(state.to_json(), encoding="utf-8")
        for old in self.checkpoints()[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
        return target

    # reading -----------------------------------------------------------------------------------
    @staticmethod
    def load_checkpoint(folder: Path) -> LoadedCheckpoint:
        """Everything a resumable checkpoint holds, checked: :class:`DamagedCheckpoint` names what is wrong.

        Every file must parse (JSON, safetensors headers and data) and every tensor be finite, so a
        truncated, garbled or poisoned checkpoint is never resumed from.
        """
        try:
            state = TrainerState.from_file(folder / TRAINER_STATE)
            adapter = load_file(str(folder / ADAPTER_WEIGHTS))
            optim_tensors = load_file(str(folder / OPTIMIZER_FILE))
            meta = json.loads((folder / OPTIMIZER_META).read_text(encoding="utf-8"))
            rng = load_file(str(folder / RNG_FILE))
            optimizer = unflatten_optimizer_state(optim_tensors, meta)
        except Exception as exc:  # safetensors, json, OSError, KeyError: any unreadable part is damage
            reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
            raise DamagedCheckpoint(f"{folder.name}: {reason}") from None
        problem = nonfinite_problem(adapter | optim_tensors) or checkpoint_problem(
            folder.name, state, adapter, optimizer, rng
        )
        if problem:
            raise DamagedCheckpoint(f"{folder.name}: {problem}")
        return LoadedCheckpoint(folder, state, adapter, optimizer, rng)


# A LoRA weight past this is no trained adapter: AdamW moves each weight by about the learning rate per
# step, so reaching it would take millions of steps at lr 1e-3 (a finite 1e30 is poison, not training).
MAX_ADAPTER_MAGNITUDE = 1.0e4


def nonfinite_problem(tensors: dict[str, torch.Tensor]) -> str | None:
    bad = [name for name, t in tensors.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    return f"non-finite values in {', '.join(sorted(bad)[:3])}" if bad else None


def adapter_magnitude_problem(adapter: dict[str, torch.Tensor]) -> str | None:
    """Why ``adapter``'s values cannot come from training (above :data:`MAX_ADAPTER_MAGNITUDE`), or None."""
    for name, tensor in adapter.items():
        if tensor.is_floating_point() and tensor.numel() and tensor.abs().max() > MAX_ADAPTER_MAGNITUDE:
            return f"{name} holds values of {float(tensor.abs().max()):.3g}, beyond any trained LoRA"
    return None


def checkpoint_problem(name: str, state: TrainerState, adapter: dict, optimizer: dict, rng: dict) -> str | None:
    """What makes a checkpoint that parses still wrong (a short phrase), or None.

    The trainer state's counters must be whole, non-negative and agree with each other and the
    folder's step; the RNG state must be torch's byte tensors; every AdamW state must have the shape of
    an adapter tensor; the adapter's values must be ones training can reach.
    """
    return (
        _state_problem(name, state)
        or _rng_problem(rng)
        or _optimizer_problem(optimizer, adapter)
        or adapter_magnitude_problem(adapter)
    )


def _state_problem(name: str, state: TrainerState) -> str | None:
    counters = ("global_step", "tokens_seen", "phase_index", "phase_step", "phase_tokens_seen", "phase_rows_consumed")
    for field_name in (*counters, "supervised_tokens_seen", "skipped_steps", "world_size"):
        value = getattr(state, field_name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            return f"trainer_state.json: {field_name} is {value!r}, not a count"
    if not isinstance(state.phase_name, str) or not isinstance(state.log_history, list):
        return "trainer_state.json: phase_name or log_history has the wrong type"
    match = _STEP_DIR.match(name)
    if match and int(match.group(1)) != state.global_step:
        return f"trainer_state.json: global_step {state.global_step} in the folder of step {int(match.group(1))}"
    if state.phase_step > state.global_step or state.phase_tokens_seen > state.tokens_seen or state.world_size < 1:
        return "trainer_state.json: the phase's counters exceed the run's"
    return None


def _rng_problem(rng: dict) -> str | None:
    if "cpu" not in rng:
        return "rng.safetensors has no CPU generator state"
    for key, value in rng.items():
        if value.dtype != torch.uint8 or value.dim() != 1 or not (key == "cpu" or key.startswith("cuda.")):
            return f"rng.safetensors: {key} is not a generator state ({value.dtype}, {tuple(value.shape)})"
    return None


def _optimizer_problem(optimizer: dict, adapter: dict[str, torch.Tensor]) -> str | None:
    groups = optimizer.get("param_groups")
    if not isinstance(groups, list) or not all(
        isinstance(g, dict) and isinstance(g.get("params"), list) and isinstance(g.get("lr"), int | float)
        for g in groups
    ):
        return "optimizer.json: param_groups are not AdamW's"
    ids = [p for g in groups for p in g["params"]]
    shapes = sorted(tuple(t.shape) for t in adapter.values())
    if len(ids) != len(shapes) or set(optimizer["state"]) - set(ids):
        return f"optimizer state for {len(ids)} parameters, the adapter has {len(shapes)}"
    moments = []
    for pid, entry in optimizer["state"].items():
        avg, sq = entry.get("exp_avg"), entry.get("exp_avg_sq")
        if not isinstance(avg, torch.Tensor) or not isinstance(sq, torch.Tensor) or avg.shape != sq.shape:
            return f"optimizer state {pid} is not AdamW's (exp_avg and exp_avg_sq of one shape)"
        if (sq < 0).any():
            return f"optimizer state {pid}: negative second moments"
        moments.append(tuple(avg.shape))
    remaining = list(shapes)
    for shape in moments:
        if shape not in remaining:
            return f"optimizer state of shape {shape}, which no adapter tensor has"
        remaining.remove(shape)
    return None


class DamagedCheckpoint(ValueError):
    """A checkpoint that cannot be resumed from; the message names it and what is wrong."""


@dataclass
class LoadedCheckpoint:
    folder: Path
    state: TrainerState
    adapter: dict[str, torch.Tensor]
    optimizer: dict  # a torch optimizer state dict, consolidated
    rng: dict[str, torch.Tensor]


# Fields whose change makes a checkpoint meaningless for the run being resumed.
_RESUME_MUST_MATCH = (
    ("model", "name_or_path"),
    ("lora", None),
    ("data", "paths"),
    ("train", "total_tokens"),
    ("train", "progressive"),
    ("train", "schedule"),
    ("train", "seed"),
    ("sft", None),
)


@dataclass
class ResumePoint:
    """Where a run starts: from scratch, from its newest complete checkpoint, or nowhere (it is done)."""

    checkpoint: Path | None = None  # None: from the beginning
    saved_config: FathomConfig | None = None  # the config the run in the folder was started with
    state: TrainerState | None = None  # the checkpoint's trainer state
    loaded: LoadedCheckpoint | None = None  # its contents, checked

    @property
    def run_complete(self) -> bool:
        return self.state is not None and self.state.run_complete


def _check_resume_compatible(saved: FathomConfig, current: FathomConfig, state: TrainerState | None = None) -> None:
    """Refuse a config that changes what the checkpoint means; Phase 2 (``sft``) may be added or changed
    while the run has not begun it (a finished Phase-1 run continues into Phase 2 with --resume)."""
    a, b = saved.to_dict(), current.to_dict()
    phase2_not_begun = state is not None and state.phase_index < len(saved.phases())
    for section, key in _RESUME_MUST_MATCH:
        if section == "sft" and phase2_not_begun:
            continue
        left = a[section] if key is None else a[section][key]
        right = b[section] if key is None else b[section][key]
        if left != right:
            where = section if key is None else f"{section}.{key}"
            raise ConfigError(
                f"{where}: differs from the run being resumed ({left!r} there, {right!r} now); "
                "resume with the same value or start a new output_dir"
            )


def _load_saved_config(layout: RunLayout, loaded: LoadedCheckpoint | None) -> FathomConfig | None:
    """The config the run was started with; from the checkpoint's copy when the run's own is damaged."""
    import yaml

    for path in (layout.config_file, *([loaded.folder / CONFIG_FILE] if loaded else [])):
        if not path.is_file():
            continue
        try:
            saved = config_from_dict(yaml.safe_load(path.read_text(encoding="utf-8")))
            validate(saved, check_paths=False)
            return saved
        except (OSError, ValueError, yaml.YAMLError) as exc:  # ConfigError is a ValueError
            logger.warning("--resume: %s is damaged (%s)", path, str(exc).splitlines()[0][:160])
    return None


_FATHOM_FILES = {".fathom.lock", ".fathom.lock.json", "train.log", "status.json"}  # see train.progress


def check_output_dir(root: Path) -> None:
    """Refuse the file-system root, the home folder, and a folder of other things: fathom writes only its own."""
    resolved = root.expanduser().resolve()
    if resolved in (Path(resolved.anchor), Path.home().resolve()):
        what = "the file-system root" if resolved == Path(resolved.anchor) else "your home folder"
        raise ConfigError(f"output_dir: {root} is {what}; give a folder of its own, e.g. runs/maritime-32k")
    if root.is_dir():
        others = [p.name for p in root.iterdir() if p.name not in _FATHOM_FILES]
        if others and not RunLayout(root).holds_a_run() and not all(is_leftover(root / p) for p in others):
            raise ConfigError(
                f"output_dir: {root} already holds other files ({', '.join(sorted(others)[:3])}"
                f"{', ...' if len(others) > 3 else ''}) and no fathom run; choose a new or empty folder"
            )
    elif root.exists():
        raise ConfigError(f"output_dir: {root} is a file; give a folder")


def resume_point(layout: RunLayout, config: FathomConfig, resume: bool) -> ResumePoint:
    """Where the run in ``layout`` starts; refuses a folder holding a run without ``resume``, or a changed config.

    Every rank calls it; the folder itself is checked once, by rank 0, before it takes the lock
    (:func:`check_output_dir`): the other ranks would see the lock's own files appear.
    """
    if not layout.holds_a_run():
        if resume:
            logger.warning("--resume: %s holds no run yet; starting from the beginning", layout.root)
        return ResumePoint()
    if not resume:
        raise RunExistsError(
            f"output_dir: {layout.root} already holds a run; pass --resume to continue it (also to add Phase 2, "
            "sft, to a finished run), or choose another output_dir (nothing was changed)"
        )
    loaded = newest_intact(layout)
    saved = _load_saved_config(layout, loaded)
    if saved is not None:
        _check_resume_compatible(saved, config, loaded.state if loaded else None)
    if loaded is None:
        logger.warning("--resume: %s has no complete checkpoint yet; starting from the beginning", layout.root)
        return ResumePoint(saved_config=saved)
    return ResumePoint(loaded.folder, saved, loaded.state, loaded)


def newest_intact(
    layout: RunLayout,
    fits: Callable[[LoadedCheckpoint], str | None] | None = None,
    older_than: Path | None = None,
    why_older: str = "does not fit this model and LoRA",
) -> LoadedCheckpoint | None:
    """The newest checkpoint that loads whole; each damaged newer one is reported and passed over.

    ``fits(checkpoint)`` says why a checkpoint does not fit the run (tensors of the wrong shapes, a
    phase the plan does not have; None when it fits), so such a checkpoint counts as damaged too;
    ``older_than`` starts the search below a checkpoint already found wanting (``why_older``). All
    damaged: one line, no traceback.
    """
    found = [f for f in layout.checkpoints() if older_than is None or f.name < older_than.name]
    damaged = [f"{older_than.name}: {why_older}"] if older_than is not None else []
    for folder in reversed(found):
        try:
            loaded = RunLayout.load_checkpoint(folder)
            misfit = fits(loaded) if fits is not None else None
            if misfit:
                raise DamagedCheckpoint(f"{folder.name}: {misfit}")
        except DamagedCheckpoint as exc:
            damaged.append(str(exc))
            logger.warning("--resume: checkpoint %s is damaged; trying the one before it", exc)
            continue
        if damaged:
            logger.warning("--resume: continuing from %s, the newest intact checkpoint", folder.name)
        return loaded
    if found or damaged:
        raise ConfigError(
            f"output_dir: every checkpoint in {layout.checkpoints_dir} is damaged ({damaged[0]}); "
            "start again in a new output_dir"
        )
    return None


def flatten_optimizer_state(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split a torch optimizer state dict into safetensors-ready tensors and JSON metadata."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, entry in state_dict["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def unflatten_optimizer_state(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    for pid, entry in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(entry)
    return {"state": state, "param_groups": meta["param_groups"]}


def capture_rng_state() -> dict[str, torch.Tensor]:
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            rng[f"cuda.{i}"] = s
    return rng


def restore_rng_state(rng: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(rng["cpu"])
    if torch.cuda.is_available():
        states = [rng[k] for k in sorted(k for k in rng if k.startswith("cuda."))]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)
