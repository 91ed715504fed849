"""The last check before anything is published: no path of this machine in the staged folder.

The staging code writes each known field without local paths (the base as its Hub id, the run's
config without data folders); this pass is the net under it, for fields nobody thought of (a
tokenizer config that records where it was loaded from, an evaluation's results naming its adapters).
Every text file of the staged folder has the machine's paths replaced (the base folder by the name
the card uses, any other by ``<local path>``); a binary file that still holds one, or a text file
that cannot be cleaned, stops the push with one line naming the file.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path

from fathom.errors import ConfigError

logger = logging.getLogger("fathom")

PLACEHOLDER = "<local path>"
_TEXT_SUFFIXES = {".json", ".yaml", ".yml", ".md", ".txt", ".jinja", ".py", ".csv", ".html"}


def private_paths(candidates: Iterable[str | Path | None]) -> list[str]:
    """The absolute forms (as given and resolved) of every candidate that is or lies in a real folder,
    longest first, so a run folder is replaced before the home folder that holds it."""
    found: set[str] = set()
    for candidate in candidates:
        if not candidate or str(candidate).startswith("hf:"):
            continue
        path = Path(str(candidate)).expanduser()
        if not path.is_absolute() and not path.exists():
            continue
        for form in (os.path.abspath(path), os.path.realpath(path)):
            if len(form) > 1 and form.count(os.sep) >= 1 and form != os.sep:
                found.add(form.rstrip(os.sep))
    return sorted(found, key=len, reverse=True)


def _pattern(paths: list[str]) -> re.Pattern | None:
    """One regex matching any of ``paths`` as a whole path (followed by a separator, a quote, space or the end)."""
    if not paths:
        return None
    alternatives = "|".join(re.escape(p) for p in paths)
    return re.compile(rf"(?:{alternatives})(?=[/\\\"'\s,;:)\]}}>]|$)")


def scrub_folder(folder: Path, paths: list[str], replacements: dict[str, str] | None = None) -> int:
    """Replace every ``paths`` occurrence in the text files under ``folder``; refuse on binary hits.

    ``replacements`` maps a path to what stands for it (e.g. the base folder to the base's Hub id);
    the others become :data:`PLACEHOLDER`. Returns how many occurrences were replaced.
    """
    pattern = _pattern(paths)
    if pattern is None:
        return 0
    replacements = replacements or {}
    replaced = 0
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        raw = path.read_bytes()
        text = _as_text(path, raw)
        if text is None:
            hit = next((p for p in paths if p.encode() in raw), None)
            if hit is not None:
                raise ConfigError(
                    f"push: {path.relative_to(folder)} holds a local path of this machine ({hit}) in binary data; "
                    "nothing was published: rewrite that file without it"
                )
            continue
        new, count = pattern.subn(lambda m: replacements.get(m.group(0), PLACEHOLDER), text)
        if count:
            path.write_text(new, encoding="utf-8")
            replaced += count
    if replaced:
        logger.info("push: %d local path(s) of this machine replaced in the staged files", replaced)
    return replaced


def _as_text(path: Path, raw: bytes) -> str | None:
    if path.suffix.lower() not in _TEXT_SUFFIXES:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
