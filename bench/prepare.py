"""Corpus preparation throughput and peak memory: fathom versus datasets.map + concatenate-and-chunk.

Input: every document under ../shared/corpus (COLREGs, US Code Title 46, Moby-Dick), tokenized with
the real Qwen2.5 tokenizer and packed into 4,096-token rows. Reference: Hugging Face ``datasets``
(``load_dataset("text", sample_by="document")``, ``map`` with the batched fast tokenizer, then the
usual ``group_texts`` concatenate-and-chunk ``map``), its cache in a fresh folder. fathom:
``prepare_corpus`` into a fresh cache (reading, cleaning, dedup, tokenizing with ``data.num_proc``
workers), then packing every row of one pass. Each side runs in a fresh process, twice, alternating;
the faster run of each counts. Memory is the peak resident set of the process plus its workers
(the largest worker times the number of workers, an upper bound).

Target: fathom at least 1.5x the reference's tokens/s, with peak memory no higher.

PDFs: the same ``prepare_corpus`` over the PDF test set (bench/pdf_testset.py, drawn from the COLREGs),
each in a fresh process: the text-layer files with ``data.ocr: off``, and the scanned and garbled pages
with ``data.ocr: auto`` (tesseract, where installed), reported in pages/s.

Run: python bench/prepare.py [--shared ../shared] [--num-proc 2] [--no-pdf]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROW = 4096


def _files(shared: Path) -> list[str]:
    return sorted(str(p) for p in (shared / "corpus").rglob("*") if p.suffix in (".md", ".txt"))


def run_reference(shared: Path, tmp: str) -> dict:
    from itertools import chain

    import datasets
    from transformers import AutoTokenizer

    datasets.disable_progress_bars()
    tokenizer = AutoTokenizer.from_pretrained(shared / "tokenizers" / "qwen2.5")
    start = time.perf_counter()
    ds = datasets.load_dataset("text", data_files=_files(shared), sample_by="document", split="train", cache_dir=tmp)
    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    ds = ds.map(
        lambda b: {"input_ids": [[*ids, eos] for ids in tokenizer(b["text"])["input_ids"]]},
        batched=True,
        remove_columns=["text"],
        load_from_cache_file=False,
    )
    tokens = sum(len(x) for x in ds["input_ids"])

    def group_texts(batch):
        concatenated = list(chain(*batch["input_ids"]))
        total = (len(concatenated) // ROW) * ROW
        return {"input_ids": [concatenated[i : i + ROW] for i in range(0, total, ROW)]}

    packed = ds.map(group_texts, batched=True, batch_size=1000, load_from_cache_file=False)
    rows = len(packed)
    return {"seconds": time.perf_counter() - start, "tokens": tokens, "rows": rows}


def run_fathom(shared: Path, tmp: str, num_proc: int) -> dict:
    from transformers import AutoTokenizer

    from fathom.config import load_config
    from fathom.data.cache import prepare_corpus
    from fathom.data.pack import epoch_order, pack_rows

    tokenizer = AutoTokenizer.from_pretrained(shared / "tokenizers" / "qwen2.5")
    config = load_config(
        None, [f"data.paths=[{shared / 'corpus'}]", f"data.cache_dir={tmp}", f"data.num_proc={num_proc}"]
    )
    start = time.perf_counter()
    cache = prepare_corpus(config, tokenizer, 151643, progress=False)
    docs = cache.train_documents()
    rows = sum(1 for _ in pack_rows((docs[i] for i in epoch_order(len(docs), 0, 0, 0)), ROW))
    return {"seconds": time.perf_counter() - start, "tokens": int(docs.lengths.sum()), "rows": rows}


def run_pdf(shared: Path, tmp: str, num_proc: int, ocr: bool) -> dict:
    """``prepare_corpus`` over the PDF test set's text-layer files (``ocr`` False) or its pages that only OCR
    reads; the test set is drawn before the clock starts."""
    import pdf_testset
    from transformers import AutoTokenizer

    from fathom.config import load_config
    from fathom.data.cache import prepare_corpus

    cases = pdf_testset.build(Path(tmp) / "pdfs", shared)
    files = [str(Path(tmp) / "pdfs" / f"{case.name}.pdf") for case in cases if case.scanned == ocr]
    tokenizer = AutoTokenizer.from_pretrained(shared / "tokenizers" / "qwen2.5")
    overrides = [f"data.paths=[{', '.join(files)}]", f"data.cache_dir={tmp}/cache", f"data.num_proc={num_proc}"]
    config = load_config(None, [*overrides, f"data.ocr={'auto' if ocr else 'off'}"])
    start = time.perf_counter()
    cache = prepare_corpus(config, tokenizer, 151643, progress=False)
    seconds = time.perf_counter() - start
    read = cache.meta.get("pdf") or {}
    return {"seconds": seconds, "files": len(files), "pages": read.get("pdf_pages", 0), **read}


def _child(which: str, shared: str, num_proc: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        if which.startswith("pdf"):
            result = run_pdf(Path(shared), tmp, num_proc, ocr=which == "pdf-ocr")
        elif which == "reference":
            result = run_reference(Path(shared), tmp)
        else:
            result = run_fathom(Path(shared), tmp, num_proc)
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    result["peak_mib"] = own + (workers * num_proc if which == "fathom" and num_proc > 1 else 0)
    print(json.dumps(result))


def _measure(which: str, shared: Path, num_proc: int) -> dict:
    code = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import prepare; "
        f"prepare._child({which!r}, {str(shared)!r}, {num_proc})"
    )
    env = dict(os.environ, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", MALLOC_MMAP_THRESHOLD_="131072")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{which} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--shared",
        type=Path,
        default=Path(os.environ.get("FATHOM_SHARED", Path(__file__).resolve().parents[2] / "shared")),
    )
    parser.add_argument("--num-proc", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-pdf", action="store_true", help="leave out the PDF pages/s measurement")
    args = parser.parse_args()
    if not (args.shared / "corpus").is_dir():
        print(f"needs the shared corpus at {args.shared} (set --shared or FATHOM_SHARED)")
        return 1
    runs: dict[str, list[dict]] = {"reference": [], "fathom": []}
    for _ in range(args.repeats):
        for which in runs:
            runs[which].append(_measure(which, args.shared, args.num_proc))
    best = {which: min(r, key=lambda x: x["seconds"]) for which, r in runs.items()}
    tps = {which: b["tokens"] / b["seconds"] for which, b in best.items()}
    ratio = tps["fathom"] / tps["reference"]
    memory_ratio = best["fathom"]["peak_mib"] / best["reference"]["peak_mib"]
    for which, b in best.items():
        print(
            f"{which:>9}: {b['tokens']:,} tokens, {b['rows']:,} rows of {ROW} in {b['seconds']:.2f} s = "
            f"{tps[which]:,.0f} tokens/s, peak {b['peak_mib']:,.0f} MiB"
        )
    met = ratio >= 1.5 and memory_ratio <= 1.0
    print(
        f"speed ratio {ratio:.2f} (target >= 1.5), memory ratio {memory_ratio:.2f} (target <= 1.0): "
        f"{'met' if met else 'NOT met'}"
    )
    pdf = {} if args.no_pdf else measure_pdfs(args.shared, args.num_proc)
    print(
        json.dumps(
            {
                "benchmark": "prepare",
                "num_proc": args.num_proc,
                "reference": best["reference"],
                "fathom": best["fathom"],
                "speed_ratio": round(ratio, 3),
                "memory_ratio": round(memory_ratio, 3),
                "target_met": met,
                "pdf": pdf,
            }
        )
    )
    return 0


def measure_pdfs(shared: Path, num_proc: int) -> dict:
    """Pages/s of text-layer PDFs and of pages read by OCR, each through prepare_corpus in a fresh process."""
    from fathom.data.pdf import ocr_engine

    out = {"text_layer": _measure("pdf-text", shared, num_proc)}
    engine = ocr_engine("auto")
    if engine is not None:
        out["ocr"] = _measure("pdf-ocr", shared, num_proc) | {"engine": engine}
    for kind, r in out.items():
        pages = r.get("pages_ocr", 0) if kind == "ocr" else r["pages"]
        r["pages_per_s"] = round(pages / r["seconds"], 3)
        print(f"PDF {kind.replace('_', '-')}: {pages} pages of {r['files']} files in {r['seconds']:.2f} s = "
              f"{r['pages_per_s']:,.2f} pages/s" + (f" ({r['engine']})" if kind == "ocr" else ""))  # fmt: skip
    if engine is None:
        print("PDF OCR: not measured (no tesseract here: apt-get install tesseract-ocr)")
    return out


if __name__ == "__main__":
    sys.exit(main())
