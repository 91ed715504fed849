from __future__ import annotations

import re

from fathom.demo.corpus import LABEL, generate_documents, write_corpus


def test_documents_are_labelled_synthetic_and_deterministic():
    docs = generate_documents(30, seed=4)
    assert docs == generate_documents(30, seed=4)
    assert docs != generate_documents(30, seed=5)
    assert all(text.startswith(LABEL) for _, text in docs)
    assert {name.split("_")[1] for name, _ in docs} == {"voyage", "inspection", "engine"}


def test_voyage_logs_refer_back_to_their_manifest():
    for name, text in generate_documents(30, seed=0):
        if "voyage" not in name:
            continue
        manifest = re.findall(r"- Hold (\d): ([\d,]+) (\w+) of (.+)", text)
        assert manifest
        arrival = text[text.index("## Arrival") :]
        for hold, qty, unit, cargo in manifest:
            assert f"Discharged hold {hold}: {qty} {unit} of {cargo}" in arrival


def test_lengths_span_the_demo_phases():
    lengths = sorted(len(text.split()) for _, text in generate_documents(60))
    assert lengths[0] < 256 and lengths[-1] > 1024


def test_write_corpus(tmp_path):
    paths = write_corpus(tmp_path / "c", documents=5)
    assert len(paths) == 5 and all(p.suffix == ".md" for p in paths)
    assert "SYNTHETIC" in (tmp_path / "c" / "SYNTHETIC_README").read_text()
