"""Which sources ``data.paths`` names: files, folders searched recursively, glob patterns, ``datasets``
folders and ``hf:`` ids, with the symlink policy that keeps a data folder's links inside it.

The trust boundary of reading: a path from the user's config is read as named; what a folder or a
pattern finds is read only where ``data.follow_symlinks`` allows it, and a document type fathom does
not read is named with its fix (:mod:`fathom.data.formats`) instead of dropped in silence. Reading the
sources is :mod:`fathom.data.ingest`'s.
"""

from __future__ import annotations

import glob
import os
import stat
from pathlib import Path

from fathom.data.formats import CONVERT_HINTS, SUPPORTED_SUFFIXES, unsupported_reason

HUB_PREFIX = "hf:"  # data.paths: "hf:<id>[:split]", a dataset loaded with datasets.load_dataset


def is_dataset_folder(path: Path) -> bool:
    return (
        (path / "dataset_info.json").is_file()
        or (path / "dataset_dict.json").is_file()
        or (path / "state.json").is_file()
    )


FOLLOW_SYMLINKS_CHOICES = ("inside", "all", "none")


def expand_paths(
    paths: list[str], follow_symlinks: str = "inside", refused: list[tuple[str, str]] | None = None
) -> list[str]:
    """Files, dataset folders and ``hf:`` ids named by ``paths``, in a stable order.

    A folder is searched recursively for supported files (a ``datasets`` folder is one source);
    a glob pattern is expanded; a path that does not exist raises FileNotFoundError naming it.
    Links met inside a folder or a glob follow ``follow_symlinks``: ``inside`` keeps those that stay
    in the folder being read (a link to ``/etc/passwd`` in a data folder is not read), ``none`` keeps
    no link, ``all`` every one; a path named itself is always read. The links left out go to
    ``refused`` as (path, reason), for the caller's report.
    """
    out: list[str] = []
    for raw in paths:
        if raw.startswith(HUB_PREFIX):
            out.append(raw)
            continue
        if any(ch in raw for ch in "*?["):
            matches = sorted(glob.glob(raw, recursive=True))
            if not matches:
                raise FileNotFoundError(f"data.paths: the pattern {raw} matches nothing")
            root = _glob_root(raw)
            kept = [m for m in matches if _link_allowed(Path(m), root, follow_symlinks, refused)]
            out.extend(expand_paths(kept, follow_symlinks, refused))
            continue
        path = Path(raw)
        if path.is_dir():
            out.extend(_folder_sources(path, follow_symlinks, refused))
        elif path.exists() or path.is_symlink():
            out.append(str(path))
        else:
            raise FileNotFoundError(f"data.paths: {raw} does not exist")
    return list(dict.fromkeys(out))


def _folder_sources(folder: Path, follow_symlinks: str, refused: list | None) -> list[str]:
    """The supported files and dataset folders under ``folder`` (itself, when it is a dataset folder); its
    documents of types fathom does not read go to ``refused`` with their fix (:func:`_refuse_unsupported`:
    a .doc among .docx files is named, not silently left out)."""
    if is_dataset_folder(folder):
        return [str(folder)]
    out = []
    for child in sorted(folder.rglob("*")):
        if child.name.startswith("~$"):  # an office program's lock file beside a document it has open
            continue
        if child.suffix.lower() in SUPPORTED_SUFFIXES and (
            child.is_file() or child.is_symlink() or special_file(child)  # the last two: a skip reason
        ):
            if any(is_dataset_folder(parent) for parent in child.parents if parent != folder.parent):
                continue  # read as part of its dataset folder
        elif not (child.is_dir() and is_dataset_folder(child)):
            _refuse_unsupported(child, folder, refused)
            continue
        if _link_allowed(child, folder, follow_symlinks, refused):
            out.append(str(child))
    return out


def _refuse_unsupported(child: Path, folder: Path, refused: list | None) -> None:
    """Record a visible regular file of a document type fathom does not read (:data:`CONVERT_HINTS`); hidden
    files and folders (.git, .DS_Store) and the insides of dataset folders pass unmentioned."""
    if refused is None or child.suffix.lower() not in CONVERT_HINTS or not child.is_file() or child.is_symlink():
        return
    relative = child.relative_to(folder)
    if any(part.startswith(".") for part in relative.parts):
        return
    if any(is_dataset_folder(parent) for parent in child.parents if parent != folder.parent):
        return
    refused.append((str(child), unsupported_reason(child.suffix.lower())))


def _glob_root(pattern: str) -> Path:
    """The folder a glob pattern reads: its path up to the first part with a wildcard."""
    parts = Path(pattern).parts
    fixed = [p for p in parts[: next(i for i, p in enumerate(parts) if any(c in p for c in "*?["))]]
    return Path(*fixed) if fixed else Path(".")


def _link_allowed(path: Path, root: Path, policy: str, refused: list | None) -> bool:
    """Whether ``path``, found under ``root``, may be read under the symlink policy (a refusal is recorded).

    It is a link when it, or a folder between it and ``root``, is a symlink; broken links stay in
    (the readers skip them as broken).
    """
    if policy == "all" or not _links_between(path, root) or (path.is_symlink() and not path.exists()):
        return True
    if policy == "inside" and Path(os.path.realpath(path)).is_relative_to(os.path.realpath(root)):
        return True
    where = "any folder" if policy == "none" else str(root)
    reason = f"symlink to a file outside {where} (data.follow_symlinks: {policy}; 'all' follows it)"
    if refused is not None:
        refused.append((str(path), reason))
    return False


def _links_between(path: Path, root: Path) -> bool:
    while path != root and path != path.parent:
        if path.is_symlink():
            return True
        path = path.parent
    return False


def special_file(path: Path) -> str | None:
    """What ``path`` is when it is not a regular file (it could block or never end), or None."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None  # missing or unreadable: the readers say so
    for test, name in ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket")):  # fmt: skip
        if test(mode):
            return name
    return None
