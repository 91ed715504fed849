"""bench/gpu.py, the script that checks the planner and the simulation on real hardware, runs end to
end on a tiny shape (on the CPU here), so it works when a GPU is lent."""

import json
import subprocess
import sys
from pathlib import Path

from helpers import hang_guard

REPO = Path(__file__).resolve().parents[1]


def test_gpu_bench_runs_each_variant_from_a_fresh_adapter(tmp_path):
    out = tmp_path / "rows.jsonl"
    runs = "none:128,64;none+offload:64;none+packed:64;none+packed+mask:64;none+auto:64"
    cmd = [sys.executable, str(REPO / "bench" / "gpu.py"), "--shape", "tiny", "--runs", runs, "--steps", "1"]
    done = subprocess.run([*cmd, "--out", str(out)], capture_output=True, text=True, timeout=hang_guard())
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["variant"], r["seq_len"]) for r in rows] == [
        ("none", 128),
        ("none", 64),
        ("none+offload", 64),
        ("none+packed", 64),
        ("none+packed+mask", 64),
        ("none+auto", 64),
    ]
    assert all(r["tokens_per_s"] > 0 and r["planner_total_gib"] >= 1.0 for r in rows)
    by = {(r["variant"], r["seq_len"]): r for r in rows}
    # every length starts from the fresh adapter: the same batch gives the same first loss whatever ran before
    assert by[("none", 64)]["first_loss"] == by[("none+offload", 64)]["first_loss"]
    assert by[("none+packed", 64)]["first_loss"] != by[("none", 64)]["first_loss"]  # other rows, other loss
    # the masked path and fathom's per-document one train the same function on the same packed rows
    assert abs(by[("none+packed+mask", 64)]["first_loss"] - by[("none+packed", 64)]["first_loss"]) < 1e-4
    assert by[("none+packed+mask", 64)]["attention"] == "sdpa" and by[("none+packed", 64)]["attention"] != "sdpa"
    # train.memory auto: nothing recomputed where everything fits; MFU leaves the recompute out, HFU counts it
    assert by[("none+auto", 64)]["memory"].startswith("recompute none")
    assert by[("none+auto", 64)]["mfu"] == by[("none+auto", 64)]["hfu"]
    assert by[("none", 64)]["memory"].startswith("recompute all") and by[("none", 64)]["hfu"] > by[("none", 64)]["mfu"]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["benchmark"] == "gpu" and len(summary["rows"]) == 6 and summary["packed_from"]


def test_gpu_bench_refuses_an_unknown_variant(monkeypatch):
    import importlib.util

    import pytest

    spec = importlib.util.spec_from_file_location("bench_gpu", REPO / "bench" / "gpu.py")
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_gpu", bench)  # its dataclasses look their module up
    spec.loader.exec_module(bench)
    assert [(v.name, v.offload, n) for v, n in bench.parse_runs("4bit+offload:64,128")] == [
        ("4bit+offload", True, [64, 128])
    ]
    with pytest.raises(SystemExit, match="--runs: 'none\\+fast' is not QUANT"):
        bench.parse_runs("none+fast:64")
