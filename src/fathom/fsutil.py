"""File-system helpers every layer may use: write a folder whole or not at all.

fathom never leaves a half-written folder behind (a crash, Ctrl-C or a full disk mid-write): each
folder is written under a temporary name beside its target and renamed into place, since a rename
within one file system is atomic.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_dir(target: str | Path, replace: bool = True) -> Iterator[Path]:
    """Yield a new empty temporary folder beside ``target``; on a clean exit it becomes ``target``.

    ``replace``: an existing ``target`` is swapped out (moved aside, then removed), else
    :class:`FileExistsError`. On an exception the temporary folder is removed and ``target`` is
    untouched. The temporary name starts with ``.tmp-<name>-`` so leftovers of a killed process are
    recognisable.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the folder it becomes should not be
    try:
        yield tmp
        if target.exists():
            if not replace:
                raise FileExistsError(f"{target} already exists")
            old = target.with_name(f".old-{target.name}")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a text file through a temporary sibling (``.tmp-<name>``, like :func:`atomic_dir`'s) and a rename."""
    path = Path(path)
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def is_leftover(path: Path) -> bool:
    """A temporary file or folder of a write that a killed process never finished.

    ``.tmp-*`` and ``.old-*`` (this module's), and ``.<name>.tmp`` (files of earlier fathom versions).
    """
    name = path.name
    return name.startswith((".tmp-", ".old-")) or (name.startswith(".") and name.endswith(".tmp"))


def is_empty_dir(folder: Path) -> bool:
    return folder.is_dir() and not any(folder.iterdir())


def fathom_cache_dir() -> Path:
    """fathom's cache (converted models, token caches).

    ``$FATHOM_CACHE``, else ``$XDG_CACHE_HOME/fathom``, else ``~/.cache/fathom``.
    """
    if os.environ.get("FATHOM_CACHE"):
        return Path(os.environ["FATHOM_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fathom"


_CONTROL = {c: f"\\x{c:02x}" for c in [*range(0x20), 0x7F]} | {ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"}


def printable(text: object) -> str:
    """``text`` with control characters escaped (``\\n``, ``\\x1b``): a file name in a log line stays one
    line, and cannot move the cursor or forge a line of its own.

    >>> printable("a\\nfathom INFO: done\\x1b[2K.txt")
    'a\\\\nfathom INFO: done\\\\x1b[2K.txt'
    """
    return str(text).translate(_CONTROL)


def read_json(path: Path) -> dict:
    """A JSON object file, or {} when it is missing, unreadable or not an object (files a run or a
    tool wrote, read back for reports: damage shows as missing, never as a crash)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
