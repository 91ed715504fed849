"""Peak resident memory that ``fathom prepare`` adds for each hostile input, in one fresh process.

Run as ``python tests/faults/_prepare_memory.py SPEC.json``; SPEC holds ``config`` (a config file),
``good`` (a folder of ordinary documents), ``cases`` ({name: path}), ``case_overrides`` ({name: config
overrides of that case alone}) and ``max_parquet_group_bytes``.
For each case the kernel's peak (VmHWM) is reset through /proc/self/clear_refs, ``prepare`` runs
on the good folder plus the case, and the rise of the peak over the resident size before it is
recorded. The good folder alone is measured twice first, and a small parquet file read, so that
imports (pyarrow's libraries are ~100 MB) are paid before any case. Prints
``{name: {"rc": exit code, "rise_mb": float}}``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def _measure(config: str, paths: list[str], cache: str, more: list[str]) -> dict:
    from fathom.cli import main

    Path("/proc/self/clear_refs").write_text("5")  # the peak starts again from the current size
    before = _status_kb("VmRSS")
    overrides = [f"data.paths={json.dumps(paths)}", f"data.cache_dir={cache}", "data.num_proc=1", *more]
    rc = main(["prepare", "--config", config, *overrides])
    return {"rc": rc, "rise_mb": (_status_kb("VmHWM") - before) / 1024}


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    import fathom.data.ingest as ingest

    ingest.MAX_PARQUET_GROUP_BYTES = spec["max_parquet_group_bytes"]
    import pyarrow as pa
    import pyarrow.parquet as pq

    warm = Path(spec["cache"]) / "warm.parquet"
    warm.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"text": ["warm"] * 4}), warm, compression="zstd")
    list(ingest.documents_of(str(warm), "text", ingest.IngestReport()))
    results = {}
    for i, (name, path) in enumerate([("warm-up", None), ("ordinary", None), *spec["cases"].items()]):
        paths = [spec["good"]] + ([path] if path else [])
        more = spec.get("case_overrides", {}).get(name, [])
        results[name] = _measure(spec["config"], paths, f"{spec['cache']}/{i}", more)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
