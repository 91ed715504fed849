"""RoPE settings: choose one per phase, apply it to a live model, and record it with every adapter.

transformers 5 keeps a model's rotary settings in ``config.rope_parameters`` (``rope_type``,
``rope_theta``, ``factor``, ``original_max_position_embeddings``, ...) and computes the inverse
frequencies once, in each ``*RotaryEmbedding`` module's constructor. So changing RoPE between
phases means: set the config, then rebuild those modules (they hold no weights, only buffers),
which is what :func:`apply_rope` does. The LoRA weights are untouched.

The setting trained with is written next to every adapter (``fathom_rope.json`` plus a section in
the adapter's README.md with the exact ``from_pretrained`` arguments), because an adapter trained
with YaRN x4 loaded into a base without it reads positions past the native window as garbage, and
PEFT's adapter_config.json has no place for it. fathom's own loaders (generate, eval, merge) read
the record and apply it; a mismatch between a loaded model and an adapter's record is a warning.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from fathom.config import ConfigError, RopeScalingConfig, parse_rope_scaling

logger = logging.getLogger("fathom")

ROPE_RECORD = "fathom_rope.json"
_DEFAULTS = {"llama3": {"low_freq_factor": 1.0, "high_freq_factor": 4.0}}
_TUNING = {
    "linear": (),
    "dynamic": (),
    "yarn": ("beta_fast", "beta_slow", "attention_factor"),
    "llama3": ("low_freq_factor", "high_freq_factor"),
}


# Families whose config.json states a longer window than they were pretrained on, without any RoPE
# scaling in it: (model_type, config's max_position_embeddings) -> the pretrained window. Past it,
# their makers ask for YaRN over that window. model.native_context overrides this table.
TRAINED_WINDOWS = {
    # Qwen2 / Qwen2.5 7B and up ship 131,072; their model cards ("Processing Long Texts"): the config
    # is meant for 32,768, beyond it add YaRN factor 4 with original_max_position_embeddings 32,768.
    ("qwen2", 131_072): 32_768,
    # Qwen3 ships 40,960 (32,768 + room for output); its cards: natively 32,768, YaRN up to 131,072.
    ("qwen3", 40_960): 32_768,
    ("qwen3_moe", 40_960): 32_768,
}


def trained_window(model_type: str | None, max_position_embeddings: int, override: int | None = None) -> int | None:
    """The window a base was pretrained on when it is shorter than its config says, else None."""
    if override:
        return int(override)
    return TRAINED_WINDOWS.get((model_type, max_position_embeddings))


@dataclass(frozen=True)
class RopeSetting:
    """transformers' ``rope_parameters`` plus the ``max_position_embeddings`` that goes with them.

    ``trained_window``: for an unscaled setting, the window the base was really pretrained on when
    its config overstates it (see :data:`TRAINED_WINDOWS`); it decides ``auto`` and the warnings,
    and is never written into a config or a record.
    """

    parameters: dict
    max_position_embeddings: int
    trained_window: int | None = field(default=None, compare=False)

    @property
    def window(self) -> int:
        """Positions this setting reads well: the trained window when unscaled and known, else the config's."""
        if self.trained_window and not self.scaled:
            return min(self.trained_window, self.max_position_embeddings or self.trained_window)
        return self.max_position_embeddings

    @property
    def rope_type(self) -> str:
        return self.parameters.get("rope_type", "default")

    @property
    def theta(self) -> float | None:
        return self.parameters.get("rope_theta")

    @property
    def scaled(self) -> bool:
        return self.rope_type != "default"

    def covers(self, length: int) -> bool:
        """Whether positions up to ``length`` are within this setting's window (dynamic rescales itself)."""
        return not self.window or length <= self.window or self.rope_type == "dynamic"

    def same_as(self, other: RopeSetting | None) -> bool:
        return (
            other is not None
            and _normalized(self.parameters) == _normalized(other.parameters)
            and (self.max_position_embeddings == other.max_position_embeddings)
        )

    def describe(self) -> str:
        theta = f"theta {self.theta:,.0f}" if self.theta is not None else "theta (model default)"
        if not self.scaled:
            return f"default RoPE, {theta}"
        p = self.parameters
        original = p.get("original_max_position_embeddings")
        span = f" ({original:,} -> {int(original * p['factor']):,})" if original and self.rope_type != "dynamic" else ""
        return f"{self.rope_type} x{p.get('factor', 1):g}{span}, {theta}"

    def scaling_kwargs(self) -> dict:
        """The ``from_pretrained`` keyword arguments that reproduce this setting on the base model.

        transformers 5 takes the whole ``rope_parameters`` (type, theta, factor, ...); 4.x took
        ``rope_scaling`` (without the theta) and ``rope_theta``, see :meth:`legacy_scaling_kwargs`.
        """
        return {"rope_parameters": dict(self.parameters), "max_position_embeddings": self.max_position_embeddings}

    def legacy_scaling_kwargs(self) -> dict:
        scaling = {k: v for k, v in self.parameters.items() if k != "rope_theta"} if self.scaled else None
        kwargs = {"rope_scaling": scaling, "max_position_embeddings": self.max_position_embeddings}
        if self.theta is not None:
            kwargs["rope_theta"] = self.theta
        return kwargs

    def loading_snippet(self, base: str) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.scaling_kwargs().items())
        return f'AutoModelForCausalLM.from_pretrained("{base}", {args})'

    def to_dict(self) -> dict:
        return {"rope_parameters": self.parameters, "max_position_embeddings": self.max_position_embeddings}

    @classmethod
    def from_dict(cls, data: dict) -> RopeSetting:
        return cls(dict(data["rope_parameters"]), int(data["max_position_embeddings"]))


def _normalized(parameters: dict) -> dict:
    return {
        k: (round(float(v), 6) if isinstance(v, (int, float)) and not isinstance(v, bool) else v)
        for k, v in parameters.items()
        if v is not None
    }


def model_rope(config, native_context: int | None = None) -> RopeSetting:
    """The RoPE setting a transformers config holds now, with the window the base was trained on when
    it is shorter than the config says (:func:`trained_window`; ``native_context`` overrides)."""
    parameters = getattr(config, "rope_parameters", None)
    if parameters is None:  # configs that predate rope_parameters
        parameters = dict(getattr(config, "rope_scaling", None) or {"rope_type": "default"})
        if getattr(config, "rope_theta", None) is not None:
            parameters["rope_theta"] = config.rope_theta
    parameters = dict(parameters)
    if "type" in parameters and "rope_type" not in parameters:
        parameters["rope_type"] = parameters.pop("type")
    parameters.setdefault("rope_type", "default")
    window = int(getattr(config, "max_position_embeddings", 0) or 0)
    return RopeSetting(parameters, window, trained_window(getattr(config, "model_type", None), window, native_context))


def resolve_rope(
    native: RopeSetting,
    theta: float | None,
    scaling: RopeScalingConfig | str | None,
    max_seq_length: int,
    where: str = "model.rope_scaling",
) -> tuple[RopeSetting, str]:
    """The setting for one phase of ``max_seq_length`` tokens, and a few words on why."""
    scaling = parse_rope_scaling(scaling, where)
    parameters = copy.deepcopy(native.parameters)
    window, trained = native.max_position_embeddings, native.window
    why = "the model's own"
    if theta is not None:
        parameters["rope_theta"] = float(theta)
        why = f"rope_theta {theta:,.0f}"
    if scaling == "none":
        original = native.parameters.get("original_max_position_embeddings") if native.scaled else None
        plain = {"rope_type": "default", "rope_theta": parameters.get("rope_theta")}
        return RopeSetting(_compact(plain), int(original or window), native.trained_window), "scaling removed (none)"
    if scaling == "auto":
        said = f"native {trained:,}" + (f" (trained; its config says {window:,})" if trained != window else "")
        if max_seq_length <= trained:
            return RopeSetting(
                parameters, window, native.trained_window
            ), f"{why}; auto: {max_seq_length:,} fits the {said}"
        kind, original, tuning = "yarn", trained, {}
        if native.scaled and native.rope_type in ("linear", "dynamic", "yarn", "llama3"):
            # keep the model's method (and its tuning) over the same original window, with a larger factor
            kind = native.rope_type
            original = native.parameters.get("original_max_position_embeddings") or window
            tuning = {k: native.parameters[k] for k in _TUNING[kind] if native.parameters.get(k) is not None}
        factor = nice_factor(max_seq_length / original)
        scaling = RopeScalingConfig(type=kind, factor=factor, original_max_position_embeddings=original, **tuning)
        why = f"auto: {max_seq_length:,} > {said}, so {kind} x{factor:g}"
    if isinstance(scaling, RopeScalingConfig):
        original = (
            scaling.original_max_position_embeddings
            or (native.parameters.get("original_max_position_embeddings") if native.scaled else None)
            or trained  # the window it was pretrained on, not a longer one its config claims
        )
        new = {
            "rope_type": scaling.type,
            "factor": float(scaling.factor),
            "rope_theta": parameters.get("rope_theta"),
        }
        if scaling.type != "dynamic":
            new["original_max_position_embeddings"] = int(original)
        for name, default in _DEFAULTS.get(scaling.type, {}).items():
            new[name] = getattr(scaling, name) if getattr(scaling, name) is not None else default
        for name in ("beta_fast", "beta_slow", "attention_factor"):
            if scaling.type == "yarn" and getattr(scaling, name) is not None:
                new[name] = float(getattr(scaling, name))
        # dynamic rescales itself past max_position_embeddings, so that stays the original window
        window = int(original) if scaling.type == "dynamic" else round(original * scaling.factor)
        if not why.startswith("auto"):
            why = f"{scaling.type} x{scaling.factor:g} as configured"
        return RopeSetting(_compact(new), window), why
    return RopeSetting(parameters, window, native.trained_window), why


def _compact(parameters: dict) -> dict:
    return {k: v for k, v in parameters.items() if v is not None}


def nice_factor(ratio: float) -> float:
    """Round a needed factor up to a quarter, so 16K over 8K is 2.0 and 20K over 8K is 2.5."""
    return math.ceil(ratio * 4 - 1e-9) / 4


def phase_ropes(native: RopeSetting, model_cfg, phases: list, plans: list) -> list[tuple[RopeSetting, str]]:
    """The setting of every planned phase: the phase's own rope_theta / rope_scaling, else the model's."""
    out = []
    for plan in plans:
        phase = phases[plan.index]
        theta = phase.rope_theta if phase.rope_theta is not None else model_cfg.rope_theta
        scaling = phase.rope_scaling if phase.rope_scaling is not None else model_cfg.rope_scaling
        where = f"train.schedule[{plan.index}].rope_scaling" if phase.rope_scaling is not None else "model.rope_scaling"
        out.append(resolve_rope(native, theta, scaling, plan.max_seq_length, where))
    return out


def _rotary_modules(model: torch.nn.Module) -> list[tuple[torch.nn.Module, str, torch.nn.Module]]:
    found = []
    for parent in model.modules():
        for name, child in parent.named_children():
            if type(child).__name__.endswith("RotaryEmbedding") and hasattr(child, "inv_freq"):
                found.append((parent, name, child))
    return found


def apply_rope(model: torch.nn.Module, setting: RopeSetting) -> bool:
    """Set ``setting`` on the model's config and rebuild its rotary modules; False when nothing changed."""
    config = model.config
    if model_rope(config).same_as(setting):
        return False
    rotary = _rotary_modules(model)
    if not rotary:
        raise ConfigError(
            f"model.rope_scaling: {type(model).__name__} has no *RotaryEmbedding module fathom can rebuild; "
            "leave rope_theta / rope_scaling unset for this model"
        )
    config.rope_parameters = copy.deepcopy(setting.parameters)
    config.max_position_embeddings = setting.max_position_embeddings
    for parent, name, old in rotary:
        module_config = getattr(old, "config", config)
        if module_config is not config:
            module_config.rope_parameters = copy.deepcopy(setting.parameters)
            module_config.max_position_embeddings = setting.max_position_embeddings
        new = type(old)(config=module_config)
        setattr(parent, name, new.to(old.inv_freq.device))
    return True


def loading_code(base_source: str, adapter_path: str | Path, setting=None, base_setting=None) -> str:
    """Python that loads the adapter with plain transformers + peft, as it is to be pasted.

    ``base_source`` is what ``from_pretrained`` received in training (a local folder or a Hub id);
    when the adapter was trained with another RoPE than the base's own (``setting`` vs
    ``base_setting``, :class:`fathom.model.rope.RopeSetting`), the base is loaded with it.
    """
    kwargs = ""
    if setting is not None and not setting.same_as(base_setting):
        kwargs = "".join(f", {k}={v!r}" for k, v in setting.scaling_kwargs().items())
    return (
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        "from peft import PeftModel\n\n"
        f'base = AutoModelForCausalLM.from_pretrained("{base_source}", dtype="auto"{kwargs})\n'
        f'model = PeftModel.from_pretrained(base, "{adapter_path}")\n'
        f'tokenizer = AutoTokenizer.from_pretrained("{adapter_path}")\n'
    )


def write_rope_record(
    folder: Path, final_path: Path, setting: RopeSetting, base_setting: RopeSetting, base_name: str
) -> None:
    """``fathom_rope.json`` and a README.md section saying how to load the adapter with its RoPE.

    ``folder`` is where the files go now (a temporary folder), ``final_path`` the name the loading
    code should use (the folder it is renamed to).
    """
    record = {
        "trained_with": setting.to_dict(),
        "base_model": base_name,
        "base_model_rope": base_setting.to_dict(),
        "from_pretrained_kwargs": setting.scaling_kwargs(),
        "from_pretrained_kwargs_transformers_4": setting.legacy_scaling_kwargs(),
    }
    (folder / ROPE_RECORD).write_text(json.dumps(record, indent=2), encoding="utf-8")
    readme = folder / "README.md"
    existing = readme.read_text(encoding="utf-8") if readme.is_file() else ""
    if setting.same_as(base_setting):
        note = (
            f"Trained with the base model's own RoPE ({setting.describe()}); load the base as it is:\n\n"
            f"```python\n{loading_code(base_name, final_path)}```\n"
        )
    else:
        note = (
            f"Trained with **{setting.describe()}**; the base model's own is {base_setting.describe()}. "
            "Load the base with the same RoPE, or positions past its native window read as garbage:\n\n"
            f"```python\n{loading_code(base_name, final_path, setting, base_setting)}```\n\n"
            "(transformers 4.x: "
            + ", ".join(f"{k}={v!r}" for k, v in setting.legacy_scaling_kwargs().items() if v is not None)
            + ".) `fathom generate`, `fathom eval` and `fathom merge` apply it by themselves.\n"
        )
    readme.write_text(existing.rstrip() + "\n\n## RoPE (fathom)\n\n" + note, encoding="utf-8")


@dataclass(frozen=True)
class RopeRecord:
    """What every adapter folder of a run records about RoPE: the setting trained with, the base's own."""

    setting: RopeSetting
    base_setting: RopeSetting
    base_name: str  # what from_pretrained loaded: named in the loading code

    def write(self, folder: Path, final_path: Path) -> None:
        write_rope_record(folder, final_path, self.setting, self.base_setting, self.base_name)


def read_rope_record(folder: str | Path) -> RopeSetting | None:
    """The RoPE setting an adapter folder was trained with, or None (no record: trained before this existed)."""
    path = Path(folder) / ROPE_RECORD
    if not path.is_file():
        return None
    try:
        return RopeSetting.from_dict(json.loads(path.read_text(encoding="utf-8"))["trained_with"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: not a readable RoPE record ({exc})") from None


def warn_if_mismatch(model: torch.nn.Module, adapter_dir: str | Path) -> bool:
    """Warn when the loaded model's RoPE differs from the one the adapter was trained with; True when it does."""
    trained = read_rope_record(adapter_dir)
    if trained is None:
        return False
    current = model_rope(model.config)
    if current.same_as(trained):
        return False
    logger.warning(
        "%s was trained with %s, but the model runs with %s: long inputs may be read wrongly (to match: %s)",
        adapter_dir,
        trained.describe(),
        current.describe(),
        trained.loading_snippet("<base>"),
    )
    return True
