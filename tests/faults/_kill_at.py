"""Run the fathom CLI and kill -9 itself at one chosen point of a write: fault injection from outside.

``python tests/faults/_kill_at.py WHEN PATTERN N fathom-args...``

- ``before-replace``: at the N-th ``os.replace`` whose destination matches ``PATTERN`` (fnmatch),
  before it: the write is complete under its temporary name and never renamed into place;
- ``after-replace``: just after that rename (a phase folder with one file moved in, the rest not);
- ``mid-file``: at the N-th safetensors ``save_file`` whose path matches: half of the file is
  written, then the kill.

Nothing in fathom knows about this: the functions are wrapped before fathom is imported, and the
kill is a real SIGKILL (no handler, no cleanup, no flush), as a power cut or the OOM killer would be.
"""

from __future__ import annotations

import fnmatch
import os
import signal
import sys


def _kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _counter(pattern: str, nth: int):
    seen = {"n": 0}

    def hit(path) -> bool:
        if not fnmatch.fnmatch(os.fspath(path), pattern):
            return False
        seen["n"] += 1
        return seen["n"] == nth

    return hit


def _install(when: str, pattern: str, nth: int) -> None:
    hit = _counter(pattern, nth)
    if when in ("before-replace", "after-replace"):
        real_replace = os.replace

        def replace(src, dst, *args, **kwargs):
            matched = hit(dst)
            if matched and when == "before-replace":
                _kill()
            real_replace(src, dst, *args, **kwargs)
            if matched:
                _kill()

        os.replace = replace
    elif when == "mid-file":
        import safetensors.torch

        real_save = safetensors.torch.save_file

        def save_file(tensors, filename, *args, **kwargs):
            real_save(tensors, filename, *args, **kwargs)
            if hit(filename):
                with open(filename, "r+b") as handle:
                    handle.truncate(os.path.getsize(filename) // 2)
                _kill()

        safetensors.torch.save_file = save_file
    else:
        raise SystemExit(f"unknown WHEN {when!r}")


if __name__ == "__main__":
    _install(sys.argv[1], sys.argv[2], int(sys.argv[3]))
    from fathom.cli import main

    sys.exit(main(sys.argv[4:]))
