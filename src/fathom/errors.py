"""fathom's own exceptions: light (no torch), so the command line can catch them without loading anything.

Each one's message is what the user reads after ``fathom: error:``: the field or option at fault,
what is wrong and the fix. Several problems found at once go in one exception, a line each.
"""

from __future__ import annotations

from collections.abc import Iterable


class ConfigError(ValueError):
    """A configuration value or command-line input is wrong; the message names it and the fix."""


class RunExistsError(RuntimeError):
    """The output folder already holds a run and --resume was not given."""


class TrainingStopped(RuntimeError):
    """Training cannot go on (non-finite loss, out of memory); the last checkpoint is intact."""


class ExportFailed(RuntimeError):
    """Publishing or exporting stopped (the Hub refused, a converter failed); the user's folders are untouched."""


def raise_problems(problems: Iterable[str | None]) -> None:
    """Raise one :class:`ConfigError` listing every problem found (a line each); None entries are fine."""
    found = [p for p in problems if p]
    if found:
        raise ConfigError("\n".join(found))
