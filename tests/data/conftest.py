"""The PDF test set (bench/pdf_testset.py), drawn once per session for the tests that read it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "pdf_testset.py"


@pytest.fixture(scope="session")
def testset(tmp_path_factory):
    """(the bench module, the folder of PDFs, {case name: Case}); skips visibly without the dev extra."""
    for package in ("reportlab", "pypdfium2", "rapidfuzz"):
        pytest.importorskip(package, reason=f"the PDF test set needs {package} (the dev extra installs it)")
    spec = importlib.util.spec_from_file_location("bench_pdf_testset", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_pdf_testset"] = module
    spec.loader.exec_module(module)
    out = tmp_path_factory.mktemp("pdf-testset")
    return module, out, {case.name: case for case in module.build(out)}
