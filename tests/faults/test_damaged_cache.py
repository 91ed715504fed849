"""A damaged token cache is never reused as good: sizes are checked on every reuse, checksums once per run."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest

from fathom.config import load_config
from fathom.data.cache import find_corpus, prepare_corpus
from fathom.data.cache_check import entry_problem

pytestmark = pytest.mark.faults


@pytest.fixture(scope="module")
def template(tmp_path_factory, real_tokenizer, synthetic_corpus):
    """One cache, built once; each test damages its own copy."""
    root = tmp_path_factory.mktemp("cache_template")
    tokenizer = real_tokenizer.load()
    config = _config(synthetic_corpus, root)
    cache = prepare_corpus(config, tokenizer, real_tokenizer.endoftext_id, progress=False)
    return root, synthetic_corpus, [cache.document(i).copy() for i in range(len(cache))]


def _config(corpus, cache_root):
    overrides = [f"data.paths=[{corpus}]", f"data.cache_dir={cache_root}", "data.num_proc=1"]
    return load_config(None, overrides, check_paths=False)


@pytest.fixture
def built(template, tmp_path, real_tokenizer):
    root, corpus, tokens = template
    shutil.copytree(root, tmp_path / "cache")
    config = _config(corpus, tmp_path / "cache")
    folder = next(p for p in (tmp_path / "cache").iterdir() if p.is_dir())
    return config, real_tokenizer.load(), real_tokenizer.endoftext_id, folder, tokens


def _same_garbage(path):
    path.write_bytes(bytes(reversed(path.read_bytes())))  # same size, other bytes


DAMAGE = {
    "truncated shard": lambda f: f.joinpath("tokens-00000.bin").write_bytes(
        f.joinpath("tokens-00000.bin").read_bytes()[:1000]
    ),
    "same-size garbage shard": lambda f: _same_garbage(f / "tokens-00000.bin"),
    "garbage meta.json": lambda f: f.joinpath("meta.json").write_bytes(b"\x89PNG not json"),
    "meta.json of another shape": lambda f: f.joinpath("meta.json").write_text('["a", "list"]'),
    "garbage index": lambda f: f.joinpath("offset.npy").write_bytes(b"garbage" * 20),
    "missing length.npy": lambda f: f.joinpath("length.npy").unlink(),
    "index past the shard": lambda f: np.save(f / "offset.npy", np.load(f / "offset.npy") + 10**9),
    "garbage sources.json": lambda f: f.joinpath("sources.json").write_text("{oops"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_cache_is_rebuilt_with_one_line(built, damage, caplog):
    config, tokenizer, eod, folder, tokens = built
    DAMAGE[damage](folder)
    checksum_only = damage == "same-size garbage shard"
    assert (entry_problem(folder) is None) == checksum_only  # sizes and structure catch the rest
    assert entry_problem(folder, checksums=True) is not None
    if not checksum_only:
        assert find_corpus(config, tokenizer, eod) is None  # eval / plan never read a damaged entry
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="fathom"):
        cache = prepare_corpus(config, tokenizer, eod, progress=False, verify=True)
    warnings = [r.getMessage() for r in caplog.records if "is damaged" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].endswith("building it again"), warnings
    assert cache.folder == folder and entry_problem(folder, checksums=True) is None
    assert all(np.array_equal(cache.document(i), t) for i, t in enumerate(tokens))


def test_a_whole_cache_is_reused_and_verified(built, caplog):
    config, tokenizer, eod, folder, _ = built
    meta = json.loads((folder / "meta.json").read_text())
    assert set(meta["files"]) >= {"tokens-00000.bin", "offset.npy", "sources.json"}
    mtime = (folder / "tokens-00000.bin").stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="fathom"):
        prepare_corpus(config, tokenizer, eod, progress=False, verify=True)
    assert any("checksums verified" in r.getMessage() for r in caplog.records)
    assert (folder / "tokens-00000.bin").stat().st_mtime_ns == mtime  # reused, not rebuilt


def test_an_entry_from_before_manifests_is_still_checked(built):
    folder = built[3]
    meta = json.loads((folder / "meta.json").read_text())
    del meta["files"]
    (folder / "meta.json").write_text(json.dumps(meta))
    assert entry_problem(folder, checksums=True) is None
    shard = folder / "tokens-00000.bin"
    shard.write_bytes(shard.read_bytes()[:-4])
    assert entry_problem(folder) == f"tokens-00000.bin holds {shard.stat().st_size:,} bytes, " + (
        f"{shard.stat().st_size + 4:,} expected"
    )
