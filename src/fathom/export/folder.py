"""What a folder to publish or serve holds: a fathom adapter or a merged model, read without loading it.

Both kinds carry the RoPE setting the model was trained with (an adapter's ``fathom_rope.json``, a
merged folder's ``config.json`` and ``fathom_merge.json``); everything downstream (the model card,
the serving arguments, the GGUF check) reads it from here, so it cannot get lost on the way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from fathom.config import ConfigError
from fathom.fsutil import read_json
from fathom.model.adapter import (
    ADAPTER_CONFIG,
    CONFIG_FILE,
    MERGE_RECORD,
    read_adapter,
    read_run_config,
    trained_length,
)
from fathom.model.rope import RopeSetting
from fathom.model.sources import SMOLLM2_ALIAS

# Local aliases fathom loads that stand for a Hub model
HUB_IDS = {SMOLLM2_ALIAS: "HuggingFaceTB/SmolLM2-135M-Instruct"}


@dataclass(frozen=True)
class ModelFolder:
    """A fathom adapter folder or a merged model folder, as publishing and serving need it."""

    folder: Path
    kind: str  # adapter | merged
    base_model: str  # what training loaded: a Hub id, a local folder or an alias
    rope: RopeSetting | None  # what the model was trained with (None: the base's own, unknown)
    base_rope: RopeSetting | None  # the base's own
    trained_length: int | None  # the longest row it was trained on
    lora_rank: int | None = None
    whole_modules: tuple[str, ...] = ()  # modules trained whole beside the LoRA (embeddings, norms)
    run_config: dict | None = None  # the run's fathom_config.yaml as plain data

    @property
    def base_hub_id(self) -> str | None:
        """The base as a Hub id others can load, or None when training read a local folder."""
        name = HUB_IDS.get(self.base_model, self.base_model)
        return None if Path(name).exists() or name.count("/") != 1 else name

    @property
    def scaled_rope(self) -> bool:
        return self.rope is not None and self.base_rope is not None and not self.rope.same_as(self.base_rope)

    @property
    def serving_length(self) -> int:
        """The context to serve with: the trained length, within what the RoPE setting covers."""
        known = [x for x in (self.trained_length, self.rope and self.rope.max_position_embeddings) if x]
        return min(known) if known else 0


def read_model_folder(folder: str | Path, where: str = "folder") -> ModelFolder:
    """The adapter or merged model in ``folder``; one ConfigError line when it is neither."""
    folder = Path(folder)
    if (folder / ADAPTER_CONFIG).is_file():
        return _read_adapter_folder(folder, where)
    if (folder / "config.json").is_file():
        return _read_merged_folder(folder)
    raise ConfigError(
        f"{where}: {folder} holds neither an adapter ({ADAPTER_CONFIG}) nor a model (config.json); give a folder "
        "written by fathom train or fathom merge"
    )


def _read_adapter_folder(folder: Path, where: str) -> ModelFolder:
    info = read_adapter(folder, where)
    peft = json.loads((folder / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    record = read_json(folder / "fathom_rope.json")
    base_rope = RopeSetting.from_dict(record["base_model_rope"]) if "base_model_rope" in record else None
    run_config = read_run_config(folder) if (folder / CONFIG_FILE).is_file() else None
    base = record.get("base_model") or info.base_model or ""
    if run_config and isinstance(run_config.get("model"), dict):
        base = run_config["model"].get("name_or_path") or base  # the name the user gave, not the cache folder
    return ModelFolder(
        folder=folder,
        kind="adapter",
        base_model=base,
        rope=info.rope,
        base_rope=base_rope,
        trained_length=info.trained_length,
        lora_rank=peft.get("r"),
        whole_modules=tuple(peft.get("modules_to_save") or ()),
        run_config=run_config,
    )


def _read_merged_folder(folder: Path) -> ModelFolder:
    from transformers import AutoConfig

    from fathom.model.rope import model_rope

    record = read_json(folder / MERGE_RECORD)
    rope = model_rope(AutoConfig.from_pretrained(str(folder)))
    base_rope = RopeSetting.from_dict(record["base_rope"]) if "base_rope" in record else None
    adapter = Path(record["adapter"]) if record.get("adapter") else None
    trained = trained_length(adapter) if adapter is not None and adapter.is_dir() else None
    run_config = read_run_config(adapter) if adapter is not None and (adapter / CONFIG_FILE).is_file() else None
    return ModelFolder(
        folder=folder,
        kind="merged",
        base_model=record.get("base_model") or "",
        rope=rope,
        base_rope=base_rope,
        trained_length=trained,
        run_config=run_config,
    )
