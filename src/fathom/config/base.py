"""What every config section is made of: fields that carry their help text (``fathom config`` prints
it), and the checks that say in one line which field is wrong and how to fix it."""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterator
from dataclasses import field
from pathlib import Path
from typing import Any

from fathom.errors import raise_problems


def documented(text: str, **kwargs: Any) -> Any:
    """A dataclass field with its help text (what ``fathom config`` prints beside it); ``kwargs`` as ``field``."""
    return field(metadata={"help": text}, **kwargs)


def choice_problems(where: str, value: str, choices: tuple[str, ...]) -> Iterator[str]:
    """The line for a ``value`` outside ``choices``, with the closest one when it looks like a typo."""
    if value not in choices:
        close = difflib.get_close_matches(str(value), list(choices), n=1, cutoff=0.6)
        yield f"{where}: '{value}' is not one of {', '.join(choices)}" + (
            f" (did you mean '{close[0]}'?)" if close else ""
        )


def check_choice(where: str, value: str, choices: tuple[str, ...]) -> None:
    raise_problems(choice_problems(where, value, choices))


def positive_problems(where: str, value: float, allow_zero: bool = False, most: float | None = None) -> Iterator[str]:
    """The line for a number that is not finite, not above zero (or at least zero), or beyond ``most``."""
    if not math.isfinite(value):
        yield f"{where}: must be a finite number, got {value}"
    elif value < 0 or (value == 0 and not allow_zero):
        yield f"{where}: must be {'>= 0' if allow_zero else '> 0'}, got {value}"
    elif most is not None and value > most:
        yield f"{where}: {value:g} is beyond any sensible value; at most {most:g}"


def data_path_problems(paths: list[str]) -> list[str]:
    """One line per entry of ``data.paths`` that names nothing (Hub datasets are not checked offline)."""
    import glob as _glob

    problems = []
    for i, p in enumerate(paths):
        if p.startswith("hf:"):
            continue
        if any(ch in p for ch in "*?["):
            if not _glob.glob(p, recursive=True):
                problems.append(f"data.paths[{i}]: the pattern {p} matches nothing")
        elif not Path(p).exists():
            problems.append(f"data.paths[{i}]: {p} does not exist")
    return problems
