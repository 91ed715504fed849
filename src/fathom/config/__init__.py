"""Typed configuration: the dataclasses a YAML file and ``key=value`` overrides map onto.

Every field has a default and a help text, so ``fathom config`` can print the whole configuration
documented. Validation raises :class:`ConfigError` (a ``ValueError``) whose message starts with the
dotted field name and says how to fix it, e.g. ``train.schedule: token_fraction values sum to 0.9,
they must sum to 1.0 ...``.

Where each part lives: :mod:`~fathom.config.sections` (the sections and their own checks),
:mod:`~fathom.config.rope` (``rope_scaling``), :mod:`~fathom.config.load` (YAML and overrides onto the
sections, the checks across them, YAML back out), :mod:`~fathom.config.base` (documented fields and the
one-line checks). Callers import from ``fathom.config``.
"""

from fathom.config.load import (
    check_strategy_fits_model,
    config_from_data,
    config_from_dict,
    config_to_yaml,
    load_config,
    parse_overrides,
    sft_merge_problems,
    strategy_problems,
    validate,
)
from fathom.config.rope import ROPE_TYPES, RopeScalingConfig, parse_rope_scaling
from fathom.config.sections import (
    DEFAULT_PROMPT_TEMPLATE,
    DataConfig,
    EvalConfig,
    FathomConfig,
    LoraConfig,
    ModelConfig,
    PhaseConfig,
    SftConfig,
    TrainConfig,
)
from fathom.errors import ConfigError  # its home is fathom.errors; many callers import it from here

__all__ = [
    "DEFAULT_PROMPT_TEMPLATE",
    "ROPE_TYPES",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "FathomConfig",
    "LoraConfig",
    "ModelConfig",
    "PhaseConfig",
    "RopeScalingConfig",
    "SftConfig",
    "TrainConfig",
    "check_strategy_fits_model",
    "config_from_data",
    "config_from_dict",
    "config_to_yaml",
    "load_config",
    "parse_overrides",
    "parse_rope_scaling",
    "sft_merge_problems",
    "strategy_problems",
    "validate",
]
