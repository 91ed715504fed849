"""``model.rope_scaling`` and its per-phase overrides: the mapping, the ``TYPE:FACTOR`` short form, and
the checks of both (which fields apply to which method)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from fathom.config.base import check_choice, documented
from fathom.errors import ConfigError

ROPE_TYPES = ("linear", "dynamic", "yarn", "llama3")


@dataclass
class RopeScalingConfig:
    """A RoPE scaling method, mapped onto transformers' rope parameters (``config.rope_parameters``)."""

    type: str = documented(
        "Method: linear (position interpolation), dynamic (NTK-aware), yarn, or llama3.", default="yarn"
    )
    factor: float = documented(
        "Context extension factor: the new window / original_max_position_embeddings.", default=2.0
    )
    original_max_position_embeddings: int | None = documented(
        "The window the model was pretrained with; null: model.native_context, fathom's table of known families, "
        "else the model config's max_position_embeddings.",
        default=None,
    )
    low_freq_factor: float | None = documented("llama3 only: low-frequency factor (null: 1.0).", default=None)
    high_freq_factor: float | None = documented("llama3 only: high-frequency factor (null: 4.0).", default=None)
    beta_fast: float | None = documented("yarn only: extrapolation boundary in rotations (null: 32).", default=None)
    beta_slow: float | None = documented("yarn only: interpolation boundary in rotations (null: 1).", default=None)
    attention_factor: float | None = documented(
        "yarn only: attention temperature (null: 0.1 * ln(factor) + 1, the paper's).", default=None
    )


ROPE_SCALING_HELP = (
    "RoPE scaling: null keeps the model's own; auto picks yarn with factor max_seq_length / native window for a "
    "phase longer than the model's native window (and logs it); none removes any scaling; 'TYPE:FACTOR' (e.g. "
    "yarn:4) or a mapping {type, factor, original_max_position_embeddings, ...}."
)


def parse_rope_scaling(value: RopeScalingConfig | str | None, where: str) -> RopeScalingConfig | str | None:
    """A rope_scaling value as a RopeScalingConfig, or 'auto' / 'none' / None; 'TYPE:FACTOR' is expanded."""
    if value is None or isinstance(value, RopeScalingConfig):
        scaling = value
    else:
        text = str(value).strip().lower()
        if text in ("auto", "none"):
            return text
        kind, sep, factor = text.partition(":")
        if not sep:
            raise ConfigError(
                f"{where}: {value!r} is not auto, none, 'TYPE:FACTOR' (e.g. yarn:4) or a mapping "
                "{type, factor, original_max_position_embeddings}"
            )
        try:
            scaling = RopeScalingConfig(type=kind.strip(), factor=float(factor))
        except ValueError:
            raise ConfigError(f"{where}: factor {factor!r} in {value!r} is not a number") from None
    if scaling is not None:
        check_choice(f"{where}.type", scaling.type, ROPE_TYPES)
        if not scaling.factor >= 1:
            raise ConfigError(f"{where}.factor: must be >= 1 (the window grows by it), got {scaling.factor}")
        if scaling.original_max_position_embeddings is not None and scaling.original_max_position_embeddings <= 0:
            raise ConfigError(
                f"{where}.original_max_position_embeddings: must be > 0, got {scaling.original_max_position_embeddings}"
            )
        llama3_only = ("low_freq_factor", "high_freq_factor")
        yarn_only = ("beta_fast", "beta_slow", "attention_factor")
        for name in llama3_only + yarn_only:
            wrong_type = (name in llama3_only and scaling.type != "llama3") or (
                name in yarn_only and scaling.type != "yarn"
            )
            if getattr(scaling, name) is not None and wrong_type:
                raise ConfigError(f"{where}.{name}: does not apply to type {scaling.type}")
    return scaling


def rope_problems(prefix: str, theta: float | None, scaling: RopeScalingConfig | str | None) -> Iterator[str]:
    if theta is not None and not theta > 0:
        yield f"{prefix}.rope_theta: must be > 0, got {theta}"
    try:
        parse_rope_scaling(scaling, f"{prefix}.rope_scaling")
    except ConfigError as exc:
        yield str(exc)
