#!/usr/bin/env python
"""The training guide's entry point: ``python continual_pretraining_longcontext.py``.

The constants below are the ones the guide (Long-Context Training Guide, 32K target) tells you to
edit. They are mapped onto fathom's config and run through the same code as ``fathom train``;
there is no second implementation. Anything else can be set as ``section.field=value`` arguments,
e.g. ``python continual_pretraining_longcontext.py data.paths=[my_docs] train.learning_rate=1e-4``,
and ``--resume`` continues an interrupted run.
"""

from __future__ import annotations

import sys

# --- the guide's settings ------------------------------------------------------------------------
MODEL_NAME = "Qwen/Qwen2.5-7B"
DATA_PATHS = ["data/maritime"]  # files or folders of .txt / .md / .jsonl documents
OUTPUT_DIR = "qwen-maritime-longcontext-cpt"
TOTAL_TOKENS = 500_000_000

# Progressive vs Direct Training
PROGRESSIVE_TRAINING = True  # RECOMMENDED: Keep as True

# Memory Optimization
USE_FLASH_ATTENTION_2 = True  # falls back to PyTorch SDPA where flash-attn or CUDA is missing
USE_8BIT = False  # Set True if OOM, reduces memory by 50%

# Adjust Context Schedule (if needed)
CONTEXT_SCHEDULE = [
    {"name": "Phase_1a_Short", "max_seq_length": 4096, "token_fraction": 0.60},
    {"name": "Phase_1b_Medium", "max_seq_length": 16384, "token_fraction": 0.30},
    {"name": "Phase_1c_Long", "max_seq_length": 32768, "token_fraction": 0.10},
]

# To skip Phase 1c (stop at 16K), just remove the last item:
# CONTEXT_SCHEDULE = CONTEXT_SCHEDULE[:2]
# ------------------------------------------------------------------------------------------------


def guide_settings_as_config_data() -> dict:
    """The constants above as fathom config data.

    Removing phases from CONTEXT_SCHEDULE skips them: the phases kept train the tokens the guide
    gave them (300M at 4K and 150M at 16K when 1c is removed), so the budget shrinks with them.
    """
    kept = sum(phase["token_fraction"] for phase in CONTEXT_SCHEDULE)
    schedule = [dict(phase, token_fraction=phase["token_fraction"] / kept) for phase in CONTEXT_SCHEDULE]
    return {
        "model": {
            "name_or_path": MODEL_NAME,
            "attn_implementation": "auto" if USE_FLASH_ATTENTION_2 else "sdpa",
            "load_in_8bit": USE_8BIT,
        },
        "data": {"paths": list(DATA_PATHS)},
        "train": {
            "total_tokens": round(TOTAL_TOKENS * kept),
            "progressive": PROGRESSIVE_TRAINING,
            "schedule": schedule,
        },
        "output_dir": OUTPUT_DIR,
    }


def main(argv: list[str]) -> int:
    from fathom.cli import run_guarded, setup_logging, train_and_report
    from fathom.config import config_from_data

    resume = "--resume" in argv
    overrides = [arg for arg in argv if arg != "--resume"]
    setup_logging()
    return run_guarded(lambda: train_and_report(config_from_data(guide_settings_as_config_data(), overrides), resume))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
