"""fathom's own exceptions: light (no torch), so the command line can catch them without loading anything.

Each one's message is what the user reads after ``fathom: error:``: the field or option at fault,
what is wrong and the fix. Several problems found at once go in one exception, a line each.
"""

from __future__ import annotations

import errno
import re
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


_NO_ROOM = "; then rerun with --resume: the checkpoints already written are intact"
_SYSTEM_FIXES = {
    errno.ENOSPC: "no room to write: the disk is full; free space (or point output_dir / data.cache_dir elsewhere)"
    + _NO_ROOM,
    errno.EDQUOT: "no room to write: your disk quota is used up; free space or point output_dir elsewhere" + _NO_ROOM,
    errno.EFBIG: "no room to write: a file would pass the file-size limit (ulimit -f) or the file system's "
    "largest file; raise the limit or choose another output_dir" + _NO_ROOM,
    errno.EACCES: "permission denied: make the folder writable or choose another one",
    errno.EROFS: "the file system is read-only: choose a writable output_dir / data.cache_dir",
}


def system_failure(exc: Exception) -> str | None:
    """The one-line message of an operating-system failure, or None when ``exc`` is not one.

    Libraries written in Rust (safetensors, tokenizers) report OS errors as their own exception
    types with ``(os error N)`` in the text; those count as the OSError they wrap.
    """
    if isinstance(exc, OSError):
        number, where = exc.errno, f"{exc.filename}: " if exc.filename else ""
        detail = exc.strerror or str(exc)
    else:
        found = re.search(r"\(os error (\d+)\)", str(exc))
        if found is None:
            return None
        number, where, detail = int(found.group(1)), "", str(exc).splitlines()[0]
    return f"{where}{_SYSTEM_FIXES.get(number, detail)}"
