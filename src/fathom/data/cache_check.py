"""Whether a token-cache entry is whole: its manifest (every file with its size and SHA-256, written
when the entry is built) and its index arrays checked against each other and the shards, so a damaged
or truncated entry is said in one line and built again, never read as good."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np


def file_manifest(folder: Path) -> dict[str, dict]:
    """Size and SHA-256 of every file of an entry but meta.json (which holds this manifest)."""
    return {
        p.name: {"bytes": p.stat().st_size, "sha256": _sha256(p)}
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name != "meta.json"
    }


def _sha256(path: Path) -> str:
    """The file's SHA-256, read in blocks of 4 MiB (shards are up to 1 GiB)."""
    h = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def entry_problem(folder: Path, checksums: bool = False) -> str | None:
    """What is wrong with the cache entry at ``folder`` (a short phrase), or None when it is whole.

    Always: meta.json parses, every file its build recorded is there with its size, the index arrays
    load without pickle and agree with each other and with the shards' sizes. With ``checksums``: every
    file's SHA-256 too (the one check that catches same-size damage; it reads the whole entry).
    """
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        shard_tokens = [int(n) for n in meta["shard_tokens"]]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        return "meta.json is not a cache manifest"
    for name, want in (meta.get("files") or {}).items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != want.get("bytes"):
            return f"{name} holds {path.stat().st_size:,} bytes, its build wrote {want.get('bytes'):,}"
        if checksums and _sha256(path) != want.get("sha256"):
            return f"{name} does not match its checksum"
    return _index_problem(folder, shard_tokens)


def _index_problem(folder: Path, shard_tokens: list[int]) -> str | None:
    """The index arrays against each other and the shards (also for entries built before manifests)."""
    arrays = {}
    for name in ("shard", "offset", "length", "source", "split"):
        try:
            arrays[name] = np.load(folder / f"{name}.npy", allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return f"{name}.npy cannot be read"
    if len({len(a) for a in arrays.values()}) != 1:
        return "the index arrays differ in length"
    for i, tokens in enumerate(shard_tokens):
        path = folder / f"tokens-{i:05d}.bin"
        size = path.stat().st_size if path.is_file() else -1
        if tokens and size != 4 * tokens:
            return f"{path.name} holds {max(size, 0):,} bytes, {4 * tokens:,} expected"
    shard, ends = arrays["shard"], arrays["offset"] + arrays["length"]
    if len(shard) and (shard.min() < 0 or shard.max() >= len(shard_tokens)):
        return "the index names a shard that does not exist"
    if len(shard) and (ends > np.asarray(shard_tokens, dtype=np.int64)[shard]).any():
        return "the index points past the end of a shard"
    try:
        sources = json.loads((folder / "sources.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return "sources.json cannot be read"
    if len(shard) and (arrays["source"].min() < 0 or arrays["source"].max() >= len(sources)):
        return "the index names a source that does not exist"
    return None
