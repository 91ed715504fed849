"""Plain data (YAML, ``section.field=value`` overrides) mapped onto the typed sections with one-line
errors (an unknown key gets a did-you-mean), the checks across sections, and the config written back
as YAML.

The mapping is written here rather than taken from a library (dacite, pydantic) because its errors are
fathom's interface: each names the dotted field and what it expects, and overrides address fields of
optional sections (``sft.epochs=2``) that do not exist yet."""

from __future__ import annotations

import copy
import dataclasses
import difflib
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from fathom.config.sections import FathomConfig, ModelConfig
from fathom.errors import ConfigError, raise_problems


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _did_you_mean(key: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(key, choices, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else f" (known keys: {', '.join(sorted(choices))})"


_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def _to_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in _TRUE + _FALSE:
        return value.lower() in _TRUE
    return None


def _to_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(float(value.replace("_", ""))) if value.strip() else 0
        except ValueError:
            return None
    return None


def _to_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _to_str(value: Any) -> str | None:
    return None if isinstance(value, (dict, list)) or value is None else str(value)


# scalar type -> (converter returning None when the value does not fit, what the message expects)
_SCALARS = {
    bool: (_to_bool, "true or false"),
    int: (_to_int, "an integer"),
    float: (_to_float, "a number"),
    str: (_to_str, "a string"),
}


def _coerce_union(value: Any, tp: Any, where: str) -> Any:
    args = typing.get_args(tp)
    if value is None and type(None) in args:
        return None
    errors = []
    for arg in (a for a in args if a is not type(None)):
        try:
            return _coerce(value, arg, where)
        except ConfigError as exc:
            errors.append(str(exc))
    raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")


def _coerce_list(value: Any, tp: Any, where: str) -> list:
    (item_tp,) = typing.get_args(tp)
    if isinstance(value, (str, int, float)) and not _is_dataclass_type(item_tp):
        value = [value]
    if not isinstance(value, list):
        raise ConfigError(f"{where}: expected a list, got {value!r}")
    return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert a YAML value to the annotated type, raising ConfigError naming ``where``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(value, tp, where)
    if origin is list:
        return _coerce_list(value, tp, where)
    if _is_dataclass_type(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return _dataclass_from(tp, value, where)
    if tp in _SCALARS:
        convert, expected = _SCALARS[tp]
        converted = convert(value)
        if converted is None:
            raise ConfigError(f"{where}: expected {expected}, got {value!r}")
        return converted
    return value


def _dataclass_from(cls: type, data: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        where = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            raise ConfigError(f"{where}: unknown key{_did_you_mean(str(key), names)}")
        kwargs[key] = _coerce(value, hints[key], where)
    return cls(**kwargs)


def config_from_dict(data: dict[str, Any] | None) -> FathomConfig:
    """Build a FathomConfig from plain data; unknown keys raise ConfigError with a did-you-mean."""
    return _dataclass_from(FathomConfig, data or {}, "")


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``a.b.c`` in nested dicts, checking every key against the dataclasses for a clear error."""
    parts = dotted.split(".")
    cls: Any = FathomConfig
    node = data
    for depth, part in enumerate(parts):
        names = [f.name for f in dataclasses.fields(cls)]
        where = ".".join(parts[: depth + 1])
        if part not in names:
            raise ConfigError(f"{where}: unknown key{_did_you_mean(part, names)}")
        tp = typing.get_type_hints(cls)[part]
        if depth == len(parts) - 1:
            node[part] = value
            return
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and _is_dataclass_type(args[0]):  # an optional section (sft): set its fields
            tp = args[0]
            if node.get(part) is None:
                node[part] = {}
        if not _is_dataclass_type(tp):
            raise ConfigError(f"{where}: is a {getattr(tp, '__name__', tp)}, it has no field '{parts[depth + 1]}'")
        node = node.setdefault(part, {})
        cls = tp


def _path_hint(item: str) -> str:
    """The fix for a corpus folder typed where an override goes (``fathom qa build docs/``): commands
    read the corpus from ``data.paths``, as ``fathom train`` does, so the hint names that field."""
    if not Path(item).exists():
        return ""
    return f"; to read this {'folder' if Path(item).is_dir() else 'file'}, pass data.paths=[{item}]"


def parse_overrides(overrides: list[str]) -> list[tuple[str, Any]]:
    """Parse ``key=value`` strings; values are read as YAML (``true``, ``1e-4``, ``[a, b]``)."""
    parsed = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip().lstrip("-")
        if not sep or not key:
            raise ConfigError(
                f"{item}: an override must look like section.field=value, e.g. train.learning_rate=1e-4"
                + _path_hint(item)
            )
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        parsed.append((key, value))
    return parsed


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None, check_paths: bool = True
) -> FathomConfig:
    """Read a YAML config (or the defaults when ``path`` is None), apply overrides, validate.

    ``check_paths=False`` skips the check that ``data.paths`` exist (for ``fathom plan``, and for
    the demo, whose corpus is written after the config is read).
    """
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"--config: file {path} does not exist")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except UnicodeDecodeError as exc:
            raise ConfigError(f"--config: {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
        except RecursionError:
            raise ConfigError(f"--config: {path} is nested too deeply to be a fathom config") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = f" line {mark.line + 1}" if mark else ""
            raise ConfigError(f"--config: {path}{line} is not valid YAML: {getattr(exc, 'problem', exc)}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"--config: {path} must hold a mapping (model:, lora:, data:, train:, output_dir:)")
    return config_from_data(data, overrides, check_paths)


def config_from_data(
    data: dict[str, Any], overrides: list[str] | None = None, check_paths: bool = True
) -> FathomConfig:
    """Plain nested data (as read from YAML) plus ``key=value`` overrides, mapped and validated."""
    data = copy.deepcopy(data)
    for key, value in parse_overrides(overrides or []):
        _set_dotted(data, key, value)
    config = config_from_dict(data)
    validate(config, check_paths=check_paths)
    return config


def strategy_problems(strategy: str, m: ModelConfig) -> Iterator[str]:
    """FSDP is not combined with a bitsandbytes base; checked on the config and again on the strategy a
    launch resolves to (``auto`` becomes fsdp under an accelerate FSDP config)."""
    if strategy == "fsdp" and (m.load_in_8bit or m.load_in_4bit):
        yield (
            "train.strategy: fsdp shards full-precision weights; bitsandbytes 8-/4-bit bases are not sharded by "
            "fathom: use strategy ddp with the quantized base, or fsdp without load_in_8bit/load_in_4bit"
        )


def sft_merge_problems(config: FathomConfig, strategy: str | None = None) -> Iterator[str]:
    """sft.lora_init merged needs whole, unquantized weights in each process: not a bitsandbytes base, not FSDP."""
    if config.sft is None or config.sft.lora_init != "merged":
        return
    m = config.model
    if m.load_in_8bit or m.load_in_4bit:
        yield (
            "sft.lora_init: merged would fold the LoRA into 8-/4-bit weights (lossy); use lora_init continue, "
            "or a base without load_in_8bit/load_in_4bit"
        )
    if (strategy or config.train.strategy) == "fsdp":
        yield "sft.lora_init: merged needs whole weights, and fsdp shards them; use strategy ddp or lora_init continue"


def check_strategy_fits_model(strategy: str, m: ModelConfig) -> None:
    raise_problems(strategy_problems(strategy, m))


def validate(config: FathomConfig, check_paths: bool = True) -> None:
    """Raise one ConfigError listing every wrong value (a line each, naming its field and the fix)."""
    m, t = config.model, config.train
    raise_problems(
        [
            *m.problems(),
            *config.lora.problems(),
            *config.data.problems(check_paths and config.needs_corpus()),
            *t.problems(),
            *strategy_problems(t.strategy, m),
            *(
                [
                    "train.offload_activations: offloads the activations that gradient checkpointing keeps; "
                    "set model.gradient_checkpointing=true too"
                ]
                if t.offload_activations and m.gradient_checkpointing is False
                else []
            ),
            *([] if config.output_dir else ["output_dir: must name a folder"]),
            *config.eval.problems(),
            *(config.sft.problems([p.name for p in t.schedule]) if config.sft is not None else []),
            *sft_merge_problems(config),
            *(
                ["train.schedule: needs at least one phase (or an sft section for Phase 2 alone)"]
                if not t.schedule and config.sft is None
                else []
            ),
        ]
    )


# ----------------------------------------------------------------------------------------------------
# Writing configs back out


def config_to_yaml(config: FathomConfig, with_help: bool = False) -> str:
    """The config as YAML; with ``with_help`` every field carries its help text as a comment."""
    if not with_help:
        return yaml.safe_dump(config.to_dict(), sort_keys=False)
    lines: list[str] = []

    def emit(obj: Any, indent: int) -> None:
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            pad = "  " * indent
            lines.append(f"{pad}# {f.metadata.get('help', '')}")
            if dataclasses.is_dataclass(value):
                lines.append(f"{pad}{f.name}:")
                emit(value, indent + 1)
            elif isinstance(value, list) and value and dataclasses.is_dataclass(value[0]):
                lines.append(f"{pad}{f.name}:")
                for item in value:
                    flow = yaml.safe_dump(dataclasses.asdict(item), default_flow_style=True, sort_keys=False).strip()
                    lines.append(f"{pad}  - {flow}")
            else:
                dumped = yaml.safe_dump({f.name: value}, default_flow_style=True, sort_keys=False).strip()
                lines.append(f"{pad}{dumped[1:-1]}")

    emit(config, 0)
    return "\n".join(lines) + "\n"
