"""RULER's synthetic tasks through lm-eval (optional: ``pip install 'fathom[ruler]'``).

lm-eval 0.4.x generates RULER's needle, variable-tracking and word-extraction tasks offline from a
local tokenizer; its essay-based tasks need downloads and are not used. Each model (the base, then
base + adapter) runs through lm-eval's own Hugging Face model class at the chosen lengths.
"""

from __future__ import annotations

import importlib.util
import logging

logger = logging.getLogger("fathom")

RULER_TASKS = ("niah_single_1", "niah_multikey_2", "niah_multikey_3", "ruler_vt", "ruler_cwe", "ruler_fwe")
INSTALL = "pip install 'fathom[ruler]' (lm-eval, wonderwords, nltk)"


def ruler_available() -> str | None:
    """None when RULER can run, else why not (with the install command)."""
    missing = [m for m in ("lm_eval", "wonderwords", "nltk") if importlib.util.find_spec(m) is None]
    return f"--ruler needs {', '.join(missing)}: {INSTALL}" if missing else None


def run_ruler(
    base_source: str,
    adapter: str | None,
    lengths: list[int],
    samples: int,
    tasks: tuple[str, ...] = RULER_TASKS,
    rope=None,
) -> dict[str, dict[str, float]]:
    """{task: {length: score}} for one model; ``samples`` prompts per task and length.

    ``rope`` (a RopeSetting: the one the adapter was trained with) reaches ``from_pretrained``
    through HFLM's extra keyword arguments.
    """
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from fathom.model.load import pick_device

    kwargs = {"pretrained": base_source, "max_length": max(lengths), "batch_size": 1, "device": str(pick_device())}
    if adapter:
        kwargs["peft"] = adapter
    if rope is not None:
        kwargs.update(rope.scaling_kwargs())
    model = HFLM(**kwargs)
    manager = TaskManager(metadata={"max_seq_lengths": list(lengths), "tokenizer": base_source})
    results = lm_eval.simple_evaluate(model=model, tasks=list(tasks), task_manager=manager, limit=samples)["results"]
    return {
        task: {str(n): float(results[task][f"{n},none"]) for n in lengths if f"{n},none" in results.get(task, {})}
        for task in tasks
    }
