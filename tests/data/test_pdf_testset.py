"""bench/pdf_testset.py, the PDF test set drawn from real maritime text: its ground truth and its scores.

Not a test of fathom's PDF reading (issue 23 builds that against this set): a test that the yardstick
measures what it says, so a better extraction scores higher and furniture left behind is counted.
"""

from __future__ import annotations

import json


def test_every_case_is_a_pdf_with_its_truth(testset):
    module, out, cases = testset
    names = {"furniture", "hyphenation", "columns", "table", "rotated", "ligatures", "scanned", "garbled"}
    assert set(cases) == names
    for name, case in cases.items():
        assert (out / f"{name}.pdf").read_bytes().startswith(b"%PDF")
        truth = json.loads((out / f"{name}.truth.json").read_text(encoding="utf-8"))
        assert truth["truth"] == case.truth and len(case.truth.split()) >= 30
        assert module.HEADER not in case.truth and "Page 1" not in case.truth  # the truth holds no furniture
    assert module.COMPOUND in cases["hyphenation"].truth  # a compound whose own hyphen a reader keeps
    assert cases["scanned"].scanned and cases["scanned"].truth == cases["furniture"].first_page
    assert len(cases["table"].table) == 7 and "ﬁ" in cases["ligatures"].truth


def test_the_truth_itself_scores_perfectly_and_furniture_is_counted(testset):
    module, _, cases = testset
    table = cases["table"]
    perfect = module.score(table.truth, table)
    assert perfect["char_accuracy"] == 1.0 and perfect["table_rows_in_order"] == "7/7"
    cell_per_line = table.truth.replace("Bulk carrier | 43,500", "Bulk carrier\n43,500")
    assert module.score(cell_per_line, table)["table_rows_in_order"] == "6/7"  # a row cut across lines
    furniture = cases["furniture"]
    assert module.score(furniture.truth, furniture) == {
        "file": "furniture.pdf",
        "characters": len(module.normalized(furniture.truth)),
        "char_accuracy": 1.0,
        "furniture_left": 0,
        "table_rows_in_order": "-",
    }
    spliced = f"{module.HEADER}\n{furniture.truth}\nPage 1"
    assert module.score(spliced, furniture)["furniture_left"] == 2
    ligatures = cases["ligatures"]  # NFKC on both sides: a ligature read as its letters is right
    assert module.score(module.normalized(ligatures.truth), ligatures)["char_accuracy"] == 1.0


def test_pypdfs_reading_is_measured_not_assumed(testset):
    """pypdf's text layer (fathom's reading before fathom.data.pdf) keeps the running header and footer
    and the hyphens, and gives each table cell its own line; the scanned page has no text at all."""
    module, out, cases = testset
    read = {name: module.score(module.extract(out / f"{name}.pdf", "pypdf"), case) for name, case in cases.items()}
    assert read["furniture"]["furniture_left"] > 0 and read["columns"]["furniture_left"] > 0
    assert read["hyphenation"]["char_accuracy"] < read["rotated"]["char_accuracy"]
    assert read["scanned"]["char_accuracy"] == 0.0
    assert read["garbled"]["char_accuracy"] < 0.2  # the garbage layer read as it is
    assert read["table"]["table_rows_in_order"] == "0/7"  # pypdf gives each cell its own line
