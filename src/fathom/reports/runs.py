"""``fathom runs``: the lines that say where a run is (phase, step, tokens, loss, time left, last checkpoint),
from the status record a run keeps (:class:`fathom.train.progress.RunStatus`, read without loading a model)."""

from __future__ import annotations

import time


def describe(run, now: float | None = None) -> list[str]:
    """The lines ``fathom runs`` prints for one run (a ``RunStatus``: ``folder``, ``status``, ``record``)."""
    now = time.time() if now is None else now
    r = run.record
    where = f" (pid {r['pid']} on {r['host']})" if run.status == "running" and "pid" in r else ""
    lines = [f"{run.folder}: {run.status}{where}"]
    if run.status == "killed":
        lines[0] += " - the process ended without a word (killed?); continue with fathom train --resume"
    phases = r.get("phases") or []
    index = r.get("phase_index", 0)
    if run.status == "complete" and phases:
        lines.append(f"  all {len(phases)} phases done: {', '.join(p['name'] for p in phases)}")
    elif "phase_name" in r:
        phase = phases[index] if index < len(phases) else None
        of = f"/{phase['steps']:,}" if phase else ""
        length = f", rows of {phase['max_seq_length']:,} tokens" if phase else ""
        count = f" {index + 1}/{len(phases)}" if phases else ""
        lines.append(f"  phase{count} {r['phase_name'] or '-'}{length}: step {r.get('phase_step', 0):,}{of}")
    total_steps = sum(p["steps"] for p in phases)
    total_tokens = sum(p["trained_tokens"] for p in phases)
    run_line = f"  run: step {r.get('global_step', 0):,}" + (f"/{total_steps:,}" if total_steps else "")
    run_line += f", {r.get('tokens_seen', 0):,}" + (f" / {total_tokens:,}" if total_tokens else "") + " tokens"
    if total_tokens:
        run_line += f" ({100 * r.get('tokens_seen', 0) / total_tokens:.0f}%)"
    if r.get("loss") is not None:
        run_line += f", loss {r['loss']:.4f}"
    lines.append(run_line)
    rate = r.get("tokens_per_second") or 0.0
    if run.status == "running" and rate > 0 and phases:
        left_phase = max(phases[min(index, len(phases) - 1)]["trained_tokens"] - r.get("phase_tokens_seen", 0), 0)
        left_run = max(total_tokens - r.get("tokens_seen", 0), 0)
        lines.append(
            f"  {rate:,.0f} tokens/s; at that rate the phase ends in {format_duration(left_phase / rate)}, "
            f"the run in {format_duration(left_run / rate)}"
        )
    if r.get("last_checkpoint"):
        lines.append(f"  last checkpoint: checkpoints/{r['last_checkpoint']}")
    if r.get("updated"):
        lines.append(f"  last update: {format_duration(max(now - r['updated'], 0))} ago")
    return lines


def format_duration(seconds: float) -> str:
    """``45s``, ``12m05s``, ``3h07m``, ``2d04h``."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"
