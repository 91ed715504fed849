"""Tokenize the corpus once into a cache of token shards and a document index; reuse it afterwards.

Layout of one cache entry (``<data.cache_dir>/<key>/``)::

    tokens-00000.bin ...   uint32 token ids, documents end to end (each ends with the end-of-document
                           token); read back as numpy memmaps, so RAM does not grow with the corpus
    shard.npy offset.npy length.npy   per document: shard number, start in the shard, token count
    source.npy             per document: index into sources.json (the file or record it came from)
    split.npy              per document: 0 train, 1 held out for evaluation (data.eval_fraction)
    sources.json, meta.json

The key hashes the tokenizer (its full JSON and the end-of-document id), the cleaning settings,
the hold-out settings and the content of every input file, so any change makes a new entry and
an unchanged corpus is never tokenized twice. An entry is built under a temporary name and
renamed when complete, by one process at a time (a lock file beside it; others wait, then reuse it).
Before reuse an entry is checked whole (:mod:`fathom.data.cache_check`); a damaged one is built again.

Preparation streams: the main process walks the sources in order; PDF and HTML files, whose text
extraction is slow Python, go to ``data.num_proc`` worker processes (at most ``2 x num_proc`` in
flight), records of JSONL/parquet/datasets are read in batches. Cleaned documents are deduplicated,
then tokenized in batches of at most ~32 MB of text by the tokenizer's own multi-threaded batch
encoder, and written in input order. Memory is bounded by a few batches, not by the corpus, and
the cache is identical whatever ``num_proc`` is.
"""

from __future__ import annotations

import array
import contextlib
import hashlib
import importlib.util
import json
import logging
import multiprocessing
import os
import shutil
import sys
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fathom.data.cache_check import entry_problem, file_manifest
from fathom.data.clean import NearDuplicateIndex, clean_text, content_hash, minhash
from fathom.data.formats import JSON_SUFFIXES, PARQUET_SUFFIXES
from fathom.data.ingest import MAX_DOCUMENT_CHARS, Document, IngestReport, documents_of, log_skips
from fathom.data.sources import HUB_PREFIX, expand_paths
from fathom.errors import ConfigError
from fathom.fsutil import atomic_dir

logger = logging.getLogger("fathom")

CACHE_VERSION = 1
SHARD_TOKENS = 1 << 28  # 1 GiB of uint32 per shard
RECORD_BATCH = 256
LENGTH_BUCKETS = ((4096, "<=4K"), (16384, "4K-16K"), (32768, "16K-32K"), (None, ">32K"))


@dataclass(frozen=True)
class CleaningSettings:
    text_field: str = "text"
    normalization: str = "NFC"
    min_chars: int = 1
    dedup: bool = True
    near_dedup: bool = False
    near_dedup_threshold: float = 0.85
    eval_fraction: float = 0.0
    seed: int = 42
    max_document_chars: int = MAX_DOCUMENT_CHARS
    ocr: str = "off"  # data.ocr: in the key of PDFs only (see _hash_reader)

    def key_fields(self) -> dict:
        """What the cache key covers; the size cap only when it is not the default (older keys stay valid);
        the OCR setting never here: it changes only PDFs' text, so it joins only their key."""
        fields = dict(self.__dict__)
        del fields["ocr"]
        if fields["max_document_chars"] == MAX_DOCUMENT_CHARS:
            del fields["max_document_chars"]
        return fields

    @classmethod
    def from_config(cls, config) -> CleaningSettings:
        d = config.data
        return cls(
            d.text_field,
            d.unicode_normalization,
            d.min_chars,
            d.dedup,
            d.near_dedup,
            d.near_dedup_threshold,
            d.eval_fraction,
            config.train.seed,
            d.max_document_chars,
            d.ocr,
        )


# ----------------------------------------------------------------------------------------------------
# Workers (no torch, no transformers: spawned processes start fast)

_WORKER: dict = {}
HEAVY_SUFFIXES = {".pdf", ".html", ".htm"}  # text extraction in Python: worth a worker process
TOKENIZE_BATCH_CHARS = 32 << 20  # tokenize in batches of at most ~32 MB of text


def _init_worker(settings: CleaningSettings) -> None:
    _WORKER["settings"] = settings


def _extract(unit: tuple[str, object], settings: CleaningSettings | None = None) -> tuple[list[Document], IngestReport]:
    """Read (for a file) and clean one unit: ("file", path) or ("docs", [Document, ...])."""
    settings = settings or _WORKER["settings"]
    report = IngestReport()
    kind, payload = unit
    docs = (
        list(documents_of(payload, settings.text_field, report, settings.max_document_chars, settings.ocr))
        if kind == "file"
        else payload
    )
    kept: list[Document] = []
    for doc in docs:
        text = clean_text(doc.text, settings.normalization)
        if len(text) < max(settings.min_chars, 1):
            reason = f"shorter than data.min_chars={settings.min_chars}" if text else "empty after cleaning"
            report.skip(doc.where, reason)
            continue
        kept.append(Document(text, doc.source, doc.record))
    return kept, report


def document_as_cached(path: str | Path, settings: CleaningSettings, tokenizer) -> dict:
    """One file as it enters the token cache (``fathom data show``): every document's cleaned text and
    its token count (the end-of-document token included), the skips with their reasons, and what
    reading a PDF removed and joined. The cache's own path: the same extraction, cleaning and tokenizer."""
    docs, report = _extract(("file", str(path)), settings)
    encoder = _main_tokenizer(tokenizer_fingerprint(tokenizer)[0])
    count = lambda text: len(encoder.encode(text, add_special_tokens=False).ids) + 1  # noqa: E731  (+ end token)
    return {
        "file": str(path),
        "documents": [{"where": doc.where, "tokens": count(doc.text), "text": doc.text} for doc in docs],
        "skipped": report.skipped,
        "pdf": dict(report.pdf),
    }


def _main_tokenizer(tokenizer_json: str):
    """A private copy of the tokenizer that reads special-token text as text.

    A document that quotes "<|endoftext|>" must not get a real end-of-document token in its middle.
    Its batch encoder runs on all cores (the tokenizers library's own thread pool).
    """
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(tokenizer_json)
    if hasattr(tokenizer, "encode_special_tokens"):
        tokenizer.encode_special_tokens = True
    return tokenizer


def _units(sources: list[str], settings: CleaningSettings, report: IngestReport) -> Iterator[tuple[str, object]]:
    """Work units in input order: whole files, or batches of records streamed by this process."""
    for source in sources:
        suffix = Path(source).suffix.lower()
        is_records = (
            source.startswith(HUB_PREFIX) or Path(source).is_dir() or suffix in JSON_SUFFIXES | PARQUET_SUFFIXES
        )
        if not is_records:
            yield "file", source
            continue
        batch: list[Document] = []
        for doc in documents_of(source, settings.text_field, report, settings.max_document_chars):
            batch.append(doc)
            if len(batch) >= RECORD_BATCH:
                yield "docs", batch
                batch = []
        if batch:
            yield "docs", batch


# ----------------------------------------------------------------------------------------------------
# The cache key


def tokenizer_fingerprint(tokenizer) -> tuple[str, str]:
    """(the tokenizer's full JSON, its hash): what tokenization depends on."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ValueError("the token cache needs a fast (Rust) tokenizer; this model only has a slow one")
    text = backend.to_str()
    return text, hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def _hash_file(path: Path, h) -> None:
    if not path.is_file():  # a device, FIFO or socket is never read (it may never end): only named
        h.update(b"not a regular file")
        return
    try:
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                h.update(block)
    except OSError as exc:  # unreadable: the key still changes when it becomes readable
        h.update(f"unreadable:{exc.errno}".encode())


def cache_key(sources: list[str], tokenizer_hash: str, eod_id: int, settings: CleaningSettings) -> str:
    h = hashlib.blake2b(digest_size=12)
    h.update(json.dumps([CACHE_VERSION, tokenizer_hash, eod_id, settings.key_fields()], sort_keys=True).encode())
    for source in sources:
        h.update(b"\0" + source.encode())
        path = Path(source)
        if source.startswith(HUB_PREFIX):
            continue  # a Hub dataset is named by its id (and :split); pin a revision by its id
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                if child.is_file() or (child.exists() and not child.is_dir()):
                    h.update(str(child.relative_to(path)).encode())
                    _hash_file(child, h)
                    _hash_reader(child, h, settings)
        else:
            _hash_file(path, h)
            _hash_reader(path, h, settings)
    return h.hexdigest()


def _hash_reader(path: Path, h, settings: CleaningSettings) -> None:
    """A PDF's text depends on how fathom reads it: its reader's version and the OCR it would use join the
    key, for PDFs only (every other format's key, and so its cache, stays as it was)."""
    if path.suffix.lower() == ".pdf":
        from fathom.data.pdf import READER_VERSION, ocr_engine

        h.update(f"{READER_VERSION}|{ocr_engine(settings.ocr) or 'no-ocr'}".encode())


# ----------------------------------------------------------------------------------------------------
# Reading a cache


class DocumentView(Sequence):
    """A sequence of documents (uint32 token arrays, memmapped) chosen by index from a cache."""

    def __init__(self, cache: CorpusCache, indices: np.ndarray) -> None:
        self.cache, self.indices = cache, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i):
        return self.cache.document(int(self.indices[i]))

    @property
    def lengths(self) -> np.ndarray:
        return self.cache.length[self.indices]


class CorpusCache:
    """A prepared corpus: token shards, the document index and what preparation reported."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        load = lambda name: np.load(folder / f"{name}.npy", allow_pickle=False)  # noqa: E731
        self.shard, self.offset, self.length = load("shard"), load("offset"), load("length")
        self.source, self.split = load("source"), load("split")
        self.sources = json.loads((folder / "sources.json").read_text(encoding="utf-8"))
        self._shards = [
            np.memmap(folder / f"tokens-{i:05d}.bin", dtype=np.uint32, mode="r") if size else np.zeros(0, np.uint32)
            for i, size in enumerate(self.meta["shard_tokens"])
        ]

    def __len__(self) -> int:
        return len(self.length)

    def document(self, i: int) -> np.ndarray:
        start = int(self.offset[i])
        return self._shards[int(self.shard[i])][start : start + int(self.length[i])]

    def train_documents(self) -> DocumentView:
        return DocumentView(self, np.flatnonzero(self.split == 0))

    def eval_documents(self) -> DocumentView:
        return DocumentView(self, np.flatnonzero(self.split == 1))

    def length_histogram(self, which: str = "train") -> dict[str, int]:
        return length_histogram(self.length[self.split == (0 if which == "train" else 1)])

    def summary(self) -> dict:
        """What a model card may say about the corpus: counts, lengths and formats; never text or file names."""
        train = self.length[self.split == 0]
        suffixes = [_format_of(s) for s in self.sources]
        formats: dict[str, int] = {}
        for index, count in enumerate(np.bincount(self.source, minlength=len(self.sources))):
            if count:
                formats[suffixes[index]] = formats.get(suffixes[index], 0) + int(count)
        return {
            "documents": len(self),
            "tokens": int(self.length.sum()),
            "training_documents": len(train),
            "held_out_documents": int((self.split == 1).sum()),
            "median_tokens": int(np.median(train)) if len(train) else 0,
            "longest_tokens": int(train.max()) if len(train) else 0,
            "length_histogram": length_histogram(train),
            "formats": dict(sorted(formats.items(), key=lambda kv: -kv[1])),
            "skipped_by_reason": self.meta.get("skipped_by_reason") or {},
        }


def _format_of(source: str) -> str:
    """``.pdf`` for a file and the records of one; a Hub dataset or a datasets folder: ``dataset``."""
    return Path(source).suffix.lower() or "dataset"


def length_histogram(lengths: np.ndarray) -> dict[str, int]:
    """How many lengths fall in each of the buckets <=4K, 4-16K, 16-32K, >32K tokens."""
    out, lower = {}, 0
    for upper, label in LENGTH_BUCKETS:
        mask = lengths > lower if upper is None else (lengths > lower) & (lengths <= upper)
        out[label] = int(mask.sum())
        lower = upper or lower
    return out


# ----------------------------------------------------------------------------------------------------
# Building a cache


def _held_out(digest: bytes, seed: int, fraction: float) -> bool:
    """A document is held out by a seeded hash of its content: stable under reordering and additions."""
    if fraction <= 0:
        return False
    h = hashlib.blake2b(digest + seed.to_bytes(8, "little", signed=True), digest_size=8).digest()
    return int.from_bytes(h, "little") / 2**64 < fraction


class _Writer:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.shard_tokens: list[int] = []
        self.handle = None
        self.shard, self.offset, self.length = array.array("q"), array.array("q"), array.array("q")
        self.source, self.split = array.array("q"), array.array("b")
        self.sources: dict[str, int] = {}

    def add(self, tokens: np.ndarray, source: str, split: int) -> None:
        shard_full = bool(self.shard_tokens) and self.shard_tokens[-1] + len(tokens) > SHARD_TOKENS > 0
        if self.handle is None or (shard_full and self.shard_tokens[-1] > 0):
            if self.handle is not None:
                self.handle.close()
            self.handle = (self.folder / f"tokens-{len(self.shard_tokens):05d}.bin").open("wb")
            self.shard_tokens.append(0)
        self.handle.write(tokens.tobytes())
        self.shard.append(len(self.shard_tokens) - 1)
        self.offset.append(self.shard_tokens[-1])
        self.length.append(len(tokens))
        self.source.append(self.sources.setdefault(source, len(self.sources)))
        self.split.append(split)
        self.shard_tokens[-1] += len(tokens)

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
        for name in ("shard", "offset", "length", "source"):
            np.save(self.folder / f"{name}.npy", np.frombuffer(getattr(self, name), dtype=np.int64))
        np.save(self.folder / "split.npy", np.frombuffer(self.split, dtype=np.int8))
        (self.folder / "sources.json").write_text(json.dumps(list(self.sources)), encoding="utf-8")


def require_training_documents(cache: CorpusCache, paths: list[str]) -> DocumentView:
    """The cache's training documents; ConfigError (one line, the skips by reason) when there are none."""
    documents = cache.train_documents()
    if not len(documents):
        skipped = cache.meta.get("skipped_by_reason") or {}
        detail = f" (skipped: {', '.join(f'{n} {r}' for r, n in skipped.items())})" if skipped else ""
        raise ConfigError(f"data.paths: no usable training documents in {', '.join(paths)}{detail}")
    return documents


def default_cache_dir() -> Path:
    from fathom.fsutil import fathom_cache_dir

    return fathom_cache_dir() / "data"


@dataclass(frozen=True)
class _Entry:
    """Where the cache of one (config, tokenizer) lives, and what its key was made of."""

    folder: Path
    sources: list[str]
    settings: CleaningSettings
    tokenizer_json: str
    tokenizer_hash: str
    refused: list[tuple[str, str]]  # links data.follow_symlinks leaves out: skips of the build's report

    @classmethod
    def locate(cls, config, tokenizer, eod_id: int) -> _Entry:
        settings = CleaningSettings.from_config(config)
        refused: list[tuple[str, str]] = []
        sources = expand_paths(config.data.paths, config.data.follow_symlinks, refused)
        tokenizer_json, tokenizer_hash = tokenizer_fingerprint(tokenizer)
        root = Path(config.data.cache_dir) if config.data.cache_dir else default_cache_dir()
        folder = root / cache_key(sources, tokenizer_hash, eod_id, settings)
        return cls(folder, sources, settings, tokenizer_json, tokenizer_hash, refused)


def find_corpus(config, tokenizer, eod_id: int) -> CorpusCache | None:
    """The existing cache for ``config``'s data and ``tokenizer``, or None (nothing is built; a damaged
    entry counts as none)."""
    folder = _Entry.locate(config, tokenizer, eod_id).folder
    return CorpusCache(folder) if _whole(folder, False, "`fathom prepare` rebuilds it") else None


def prepare_corpus(config, tokenizer, eod_id: int, progress: bool = True, verify: bool = False) -> CorpusCache:
    """The cache for ``config``'s data and ``tokenizer``: reused when it exists and is whole, else built now.

    Reuse checks every file's size, and with ``verify`` (a training run, once) its checksum: an entry
    that does not match what its build wrote is removed and built again, with one line saying why.
    """
    if config.data.near_dedup and importlib.util.find_spec("datasketch") is None:
        from fathom.config import ConfigError

        raise ConfigError("data.near_dedup: needs datasketch: pip install 'fathom[dedup]' (or pip install datasketch)")
    entry = _Entry.locate(config, tokenizer, eod_id)
    folder, settings, sources = entry.folder, entry.settings, entry.sources
    key = folder.name
    cache = _reusable(folder, verify)
    if cache is not None:
        return cache
    with _entry_lock(folder):
        if (folder / "meta.json").is_file() and entry_problem(folder, checksums=verify):  # damaged: build anew
            shutil.rmtree(folder)
        if not (folder / "meta.json").is_file():  # another process may have built it while we waited
            with atomic_dir(folder, replace=False) as tmp:
                meta = _tokenize_into(
                    tmp, sources, settings, entry.tokenizer_json, eod_id, config.data.num_proc, progress, entry.refused
                )
                meta |= {
                    "key": key,
                    "paths": list(config.data.paths),
                    "tokenizer_hash": entry.tokenizer_hash,
                    "eod_id": eod_id,
                    "settings": settings.__dict__,
                    "version": CACHE_VERSION,
                    "files": file_manifest(tmp),
                }
                (tmp / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    return CorpusCache(folder)


def _reusable(folder: Path, verify: bool) -> CorpusCache | None:
    """The entry at ``folder`` when it exists and passes :func:`entry_problem`; None (and one line) otherwise."""
    if not _whole(folder, verify, "building it again"):
        return None
    cache = CorpusCache(folder)
    logger.info(
        "data: reusing the token cache %s (%s documents, %s tokens%s)",
        folder,
        f"{len(cache):,}",
        f"{int(cache.length.sum()):,}",
        ", checksums verified" if verify and "files" in cache.meta else "",
    )
    return cache


def _whole(folder: Path, checksums: bool, then: str) -> bool:
    """Whether an entry exists at ``folder`` and passes :func:`entry_problem`; a damaged one is said in one line."""
    if not (folder / "meta.json").is_file():
        return False
    problem = entry_problem(folder, checksums)
    if problem:
        logger.warning("data: the token cache %s is damaged (%s); %s", folder, problem, then)
    return problem is None


@contextlib.contextmanager
def _entry_lock(folder: Path) -> Iterator[None]:
    """Hold the lock of one cache entry: one process builds it, others wait and then reuse it.

    The lock (``filelock``, an OS lock that dies with its process) sits beside the entry as
    ``.<key>.lock``. Whoever holds it also removes what a killed build of the same entry left
    (``.tmp-<key>-*``), which no other process can be writing.
    """
    from filelock import FileLock, Timeout

    folder.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(folder.parent / f".{folder.name}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        logger.info("data: another fathom is building the token cache %s; waiting for it", folder)
        lock.acquire()
    try:
        for leftover in folder.parent.glob(f".tmp-{folder.name}-*"):
            logger.info("data: removing %s, left by a build that was stopped", leftover.name)
            shutil.rmtree(leftover, ignore_errors=True)
        yield
    finally:
        lock.release()


class _DocumentSink:
    """Extracted documents, in input order, to the token shards: exact and near duplicates dropped,
    text tokenized in batches of ``TOKENIZE_BATCH_CHARS``, each document ended by ``eod_id`` and
    assigned to training or held out by its content hash."""

    def __init__(self, writer: _Writer, settings: CleaningSettings, tokenizer, eod_id: int, bar) -> None:
        self.writer, self.settings, self.eod_id, self.bar = writer, settings, eod_id, bar
        self.encode = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)
        self.report = IngestReport()
        self.seen: set[bytes] = set()
        self.near = NearDuplicateIndex(settings.near_dedup_threshold) if settings.near_dedup else None
        self.removed = {"exact": 0, "near": 0}
        self.held_out = self.skips_logged = 0
        self.batch: list[tuple[Document, bytes]] = []
        self.batch_chars = 0

    def consume(self, docs: list[Document], unit_report: IngestReport, unit: tuple[str, object]) -> None:
        self.report.merge(unit_report)
        self.skips_logged = log_skips(self.report.skipped[self.skips_logged :], self.skips_logged)
        for doc in docs:
            digest = content_hash(doc.text)
            if self.settings.dedup and digest in self.seen:
                self.removed["exact"] += 1
                continue
            self.seen.add(digest)
            if self.near is not None and self.near.seen_similar(minhash(doc.text)):
                self.removed["near"] += 1
                continue
            self.batch.append((doc, digest))
            self.batch_chars += len(doc.text)
            if self.batch_chars >= TOKENIZE_BATCH_CHARS:
                self.flush()
        if unit[0] == "file":
            self.bar.update(1)

    def flush(self) -> None:
        if not self.batch:
            return
        texts = [doc.text for doc, _ in self.batch]
        for (doc, digest), encoding in zip(self.batch, self.encode(texts, add_special_tokens=False), strict=True):
            ids = encoding.ids
            tokens = np.empty(len(ids) + 1, dtype=np.uint32)
            tokens[:-1] = ids
            tokens[-1] = self.eod_id
            split = int(_held_out(digest, self.settings.seed, self.settings.eval_fraction))
            self.held_out += split
            self.writer.add(tokens, doc.source, split)
        self.batch, self.batch_chars = [], 0
        self.bar.set_postfix(tokens=f"{sum(self.writer.shard_tokens):,}", refresh=False)


def _extracted_in_order(sources: list[str], settings: CleaningSettings, report: IngestReport, num_proc: int):
    """``(documents, unit report, unit)`` for every unit of ``sources``, in input order; PDF and HTML
    files are extracted in ``num_proc`` worker processes, at most ``2 x num_proc`` of them ahead."""
    pool = None
    if num_proc > 1 and any(Path(s).suffix.lower() in HEAVY_SUFFIXES for s in sources):
        # fork on Linux: workers start at once and callers need no `if __name__ == "__main__"` guard
        # (workers use no torch); elsewhere (macOS, Windows) spawn, the safe default there.
        method = "fork" if sys.platform.startswith("linux") else "spawn"
        pool = multiprocessing.get_context(method).Pool(num_proc, initializer=_init_worker, initargs=(settings,))
    try:
        pending: deque = deque()
        for unit in _units(sources, settings, report):
            heavy = unit[0] == "file" and Path(str(unit[1])).suffix.lower() in HEAVY_SUFFIXES
            pending.append((pool.apply_async(_extract, (unit,)) if pool is not None and heavy else None, unit))
            while len(pending) > 2 * num_proc or (pending and pending[0][0] is None):
                future, done = pending.popleft()
                yield (*(future.get() if future is not None else _extract(done, settings)), done)
        while pending:
            future, done = pending.popleft()
            yield (*(future.get() if future is not None else _extract(done, settings)), done)
    finally:
        if pool is not None:
            pool.close()
            pool.join()


def _tokenize_into(
    folder: Path,
    sources: list[str],
    settings: CleaningSettings,
    tokenizer_json: str,
    eod_id: int,
    num_proc: int,
    progress: bool,
    refused: list[tuple[str, str]] = (),
) -> dict:
    """Walk the sources in order: extract and clean (PDF/HTML files in worker processes), drop duplicates,
    tokenize in batches, write. Everything is consumed in input order, so the result does not depend on
    ``num_proc``."""
    from tqdm.auto import tqdm

    num_proc = num_proc or min(8, os.cpu_count() or 1)
    writer = _Writer(folder)
    start = time.perf_counter()
    bar = tqdm(total=len(sources), unit="src", desc="prepare", disable=not progress, dynamic_ncols=True)
    sink = _DocumentSink(writer, settings, _main_tokenizer(tokenizer_json), eod_id, bar)
    sink.report.skipped.extend(refused)
    sink.skips_logged = log_skips(sink.report.skipped)
    with contextlib.closing(_extracted_in_order(sources, settings, sink.report, num_proc)) as extracted:
        for docs, unit_report, unit in extracted:
            sink.consume(docs, unit_report, unit)
    sink.flush()
    bar.update(len(sources) - bar.n)  # record sources are counted here, once streamed
    bar.close()
    writer.close()
    return _build_summary(sink, len(sources), time.perf_counter() - start)


def _build_summary(sink: _DocumentSink, sources: int, seconds: float) -> dict:
    """What one build made and skipped: logged in one line, returned for the cache's manifest."""
    report, writer = sink.report, sink.writer
    documents, tokens = len(writer.length), int(sum(writer.shard_tokens))
    logger.info(
        "data: %s documents, %s tokens from %d sources in %.1f s (%s tokens/s); skipped %d (%s); "
        "removed %d exact and %d near duplicates; %d documents held out for evaluation",
        f"{documents:,}",
        f"{tokens:,}",
        sources,
        seconds,
        f"{tokens / max(seconds, 1e-9):,.0f}",
        len(report.skipped),
        ", ".join(f"{n} {r}" for r, n in report.reasons().items()) or "none",
        sink.removed["exact"],
        sink.removed["near"],
        sink.held_out,
    )
    return {
        "documents": documents,
        "tokens": tokens,
        "held_out_documents": sink.held_out,
        "sources": sources,
        "files_read": report.files_read,
        "skipped": report.skipped,
        "skipped_by_reason": report.reasons(),
        "pdf": dict(report.pdf),  # what reading the PDFs removed and joined (fathom.data.pdf)
        "lowest_confidence": sorted(report.confidence, key=lambda item: item[1])[:10],
        "duplicates_removed": sink.removed,
        "shard_tokens": writer.shard_tokens,
        "seconds": round(seconds, 3),
    }
