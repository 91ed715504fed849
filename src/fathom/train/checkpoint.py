"""The output folder: the only code that knows the disk layout of a run.

::

    <output_dir>/fathom_config.yaml          the resolved config of the run
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

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from fathom.config import FathomConfig, config_to_yaml

ADAPTER_WEIGHTS = "adapter_model.safetensors"
TRAINER_STATE = "trainer_state.json"
CONFIG_FILE = "fathom_config.yaml"
OPTIMIZER_FILE = "optimizer.safetensors"
OPTIMIZER_META = "optimizer.json"
RNG_FILE = "rng.safetensors"
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
    phase_complete: bool = False
    run_complete: bool = False
    world_size: int = 1
    log_history: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_file(cls, path: Path) -> TrainerState:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
        except (OSError, ValueError, TypeError) as exc:
            raise ValueError(f"{path}: not a readable fathom trainer state ({exc})") from None


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


class RunLayout:
    """Paths of one run's output folder, and the writers and readers of its checkpoints."""

    def __init__(self, output_dir: str | Path) -> None:
        self.root = Path(output_dir)
        # Called with every adapter folder before it is moved into place, and the path it will have
        # (the loop writes the RoPE record there).
        self.describe_adapter: Callable[[Path, Path], None] | None = None

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

    def holds_a_run(self) -> bool:
        """True when the folder has anything a run wrote (config, checkpoints, phase folders)."""
        return self.config_file.exists() or bool(self.checkpoints())

    # writing -----------------------------------------------------------------------------------
    def write_run_config(self, config: FathomConfig) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        _atomic_write_text(self.config_file, config_to_yaml(config))

    def _tmp_dir(self, parent: Path, name: str) -> Path:
        parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=parent))

    def _write_adapter(
        self,
        folder: Path,
        model,
        tokenizer,
        config: FathomConfig,
        state: TrainerState | None,
        adapter_state: dict[str, torch.Tensor] | None = None,
        final_path: Path | None = None,
    ) -> None:
        # adapter_state: the gathered weights when the model is sharded (FSDP); else PEFT reads the model
        model.save_pretrained(folder, safe_serialization=True, state_dict=adapter_state)
        if self.describe_adapter is not None:
            self.describe_adapter(folder, final_path or folder)
        if tokenizer is not None:
            tokenizer.save_pretrained(folder)
        (folder / CONFIG_FILE).write_text(config_to_yaml(config), encoding="utf-8")
        if state is not None:
            (folder / TRAINER_STATE).write_text(state.to_json(), encoding="utf-8")

    def save_phase(
        self, name: str, model, tokenizer, config: FathomConfig, state: TrainerState, adapter_state=None
    ) -> Path:
        """The user-facing checkpoint of a finished phase; its live logs/ folder is kept."""
        target = self.phase_dir(name)
        target.mkdir(parents=True, exist_ok=True)
        tmp = self._tmp_dir(self.root, name)
        try:
            self._write_adapter(tmp, model, tokenizer, config, state, adapter_state, target)
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
        self, dirname: str, model, tokenizer, config: FathomConfig, state: TrainerState, adapter_state=None
    ) -> Path:
        target = self.final_dir(dirname)
        tmp = self._tmp_dir(self.root, dirname)
        try:
            self._write_adapter(tmp, model, tokenizer, config, state, adapter_state, target)
            self._replace_dir(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return target

    def save_checkpoint(
        self,
        model,
        optimizer_state: dict,
        config: FathomConfig,
        state: TrainerState,
        rng_state: dict[str, torch.Tensor],
        keep: int,
        adapter_state: dict[str, torch.Tensor] | None = None,
    ) -> Path:
        """A resumable checkpoint; older ones beyond ``keep`` are removed once this one is complete.

        ``optimizer_state`` is a consolidated ``optimizer.state_dict()`` (gathered under FSDP), so any
        world size and strategy can resume from it.
        """
        target = self.checkpoints_dir / f"step-{state.global_step:07d}"
        tmp = self._tmp_dir(self.checkpoints_dir, target.name)
        try:
            model.save_pretrained(tmp, safe_serialization=True, state_dict=adapter_state)
            if self.describe_adapter is not None:
                self.describe_adapter(tmp, target)
            tensors, meta = flatten_optimizer_state(optimizer_state)
            save_file(tensors, str(tmp / OPTIMIZER_FILE))
            (tmp / OPTIMIZER_META).write_text(json.dumps(meta), encoding="utf-8")
            save_file({k: v.contiguous() for k, v in rng_state.items()}, str(tmp / RNG_FILE))
            (tmp / CONFIG_FILE).write_text(config_to_yaml(config), encoding="utf-8")
            (tmp / TRAINER_STATE).write_text(state.to_json(), encoding="utf-8")
            self._replace_dir(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        for old in self.checkpoints()[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
        return target

    @staticmethod
    def _replace_dir(tmp: Path, target: Path) -> None:
        if target.exists():
            old = target.with_name(f".old-{target.name}")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)

    # reading -----------------------------------------------------------------------------------
    @staticmethod
    def load_checkpoint(
        folder: Path,
    ) -> tuple[TrainerState, dict[str, torch.Tensor], dict, dict[str, torch.Tensor]]:
        """(trainer state, adapter weights, optimizer state dict, rng tensors) of a resumable checkpoint."""
        state = TrainerState.from_file(folder / TRAINER_STATE)
        try:
            adapter = load_file(str(folder / ADAPTER_WEIGHTS))
            optim_tensors = load_file(str(folder / OPTIMIZER_FILE))
            meta = json.loads((folder / OPTIMIZER_META).read_text(encoding="utf-8"))
            rng = load_file(str(folder / RNG_FILE))
        except (OSError, ValueError) as exc:
            raise ValueError(
                f"{folder}: checkpoint is damaged ({exc}); remove it to resume from an older one"
            ) from None
        return state, adapter, unflatten_optimizer_state(optim_tensors, meta), rng


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
