"""fathom.data.pdf reads a PDF as a reader sees it, scored on the project's own PDF test set
(bench/pdf_testset.py): furniture out, line-end hyphens joined where they break a word, columns and
table rows in order, sentences whole across page breaks; and a PDF's cache key follows the reader."""

from __future__ import annotations

from collections import Counter

import pytest

from fathom.data import pdf
from fathom.data.pdf import read_pdf


@pytest.mark.parametrize("name", ["furniture", "hyphenation", "columns", "table", "rotated", "ligatures"])
def test_text_layer_pdfs_read_as_a_reader_sees_them(testset, name):
    """Issue 23's goals on the text-layer files: >= 99% of characters, no furniture line, every row in order."""
    module, out, cases = testset
    result = read_pdf(out / f"{name}.pdf")
    score = module.score(result.text, cases[name])
    assert score["char_accuracy"] >= 0.99, score
    assert score["furniture_left"] == 0, score
    if cases[name].table:
        assert score["table_rows_in_order"] == "7/7"
        assert result.table_rows == 7
    if name in ("furniture", "columns"):
        assert result.furniture_lines >= 4  # header and footer line on each page
    if name == "hyphenation":
        assert result.hyphens_joined >= 10


def test_a_scanned_page_without_ocr_has_no_text_and_says_which(testset):
    _, out, _ = testset
    result = read_pdf(out / "scanned.pdf", ocr="off")
    assert result.text == "" and result.pages_without_text == [1] and result.pages_ocr == 0


@pytest.mark.skipif(pdf.ocr_engine("auto") is None, reason="needs tesseract (apt-get install tesseract-ocr)")
def test_a_scanned_page_is_read_by_ocr(testset):
    """Issue 23's goal on image-only pages: >= 95% of the characters of a clean 300-dpi page."""
    module, out, cases = testset
    result = read_pdf(out / "scanned.pdf", ocr="auto")
    assert result.pages_ocr == 1 and result.pages_without_text == []
    assert module.score(result.text, cases["scanned"])["char_accuracy"] >= 0.95


def test_a_garbage_text_layer_is_not_trained_on_without_ocr(testset, monkeypatch):
    """A page whose text layer is symbols (a broken font encoding, a bad OCR layer) is left out and counted;
    a file of only such pages is skipped saying so, with the install line of the OCR that would read it."""
    from fathom.data.ingest import IngestReport, documents_of

    _, out, _ = testset
    result = read_pdf(out / "garbled.pdf", ocr="off")
    assert result.text == "" and result.pages_garbled == [1] and result.pages_ocr == 0
    monkeypatch.setattr(pdf, "ocr_engine", lambda setting: None)
    report = IngestReport()
    assert list(documents_of(str(out / "garbled.pdf"), "text", report, ocr="auto")) == []
    ((_, reason),) = report.skipped
    assert reason.startswith("PDF whose text layer does not read as words") and "tesseract-ocr" in reason
    assert read_pdf(out / "furniture.pdf").pages_garbled == []  # real text is never taken for garbage


@pytest.mark.skipif(pdf.ocr_engine("auto") is None, reason="needs tesseract (apt-get install tesseract-ocr)")
def test_a_garbage_text_layer_is_read_again_by_ocr(testset):
    module, out, cases = testset
    result = read_pdf(out / "garbled.pdf", ocr="auto")
    assert result.pages_garbled == [1] and result.pages_ocr == 1
    assert module.score(result.text, cases["garbled"])["char_accuracy"] >= 0.95


def test_without_tesseract_a_scan_is_skipped_with_the_install_line(testset, monkeypatch):
    from fathom.data.ingest import IngestReport, documents_of

    _, out, _ = testset
    monkeypatch.setattr(pdf, "ocr_engine", lambda setting: None)
    report = IngestReport()
    assert list(documents_of(str(out / "scanned.pdf"), "text", report, ocr="auto")) == []
    ((_, reason),) = report.skipped
    assert reason.startswith("PDF without a text layer") and "apt-get install tesseract-ocr" in reason


def test_line_end_hyphens_follow_the_document():
    vocabulary = Counter({"power-driven": 3, "lookout": 1})
    assert pdf._join_lines(["every power-", "driven vessel"], vocabulary) == ("every power-driven vessel", 0)
    assert pdf._join_lines(["keep a look-", "out at all times"], vocabulary) == ("keep a lookout at all times", 1)
    assert pdf._join_lines(["an appro-", "priate authority"], vocabulary) == ("an appropriate authority", 1)
    assert pdf._join_lines(["Rule 9-", "Narrow channels"], vocabulary)[0] == "Rule 9- Narrow channels"


@pytest.mark.parametrize("line", ["7", "Page 7", "- 7 -", "page 7 of 12", "xiv", "Seite 3"])
def test_page_numbers_are_furniture(line):
    assert pdf.PAGE_NUMBER.match(line)


@pytest.mark.parametrize("line", ["Rule 7", "7 knots", "Section 3 applies", "Lookout"])
def test_text_is_not_a_page_number(line):
    assert not pdf.PAGE_NUMBER.match(line)


def test_a_sentence_cut_by_a_page_break_stays_one():
    def page(*texts, top=800.0):
        return [(56.0, top - 14 * i - 10, 400.0, top - 14 * i, text) for i, text in enumerate(texts)]

    header = "Rules for Ships, July 2024"
    pages = [
        page(header, "The vessel shall keep a proper", "look-out by sight and", "Page 1"),
        page(header, "hearing at all times. A new sentence.", "Page 2"),
    ]
    result = pdf.assemble(pages)
    assert result.text == "The vessel shall keep a proper look-out by sight and hearing at all times. A new sentence."
    assert result.furniture_lines == 4


def test_a_pdfs_cache_key_follows_the_reader_and_no_other_format_does(tmp_path, monkeypatch):
    from fathom.data.cache import CleaningSettings, cache_key

    (tmp_path / "a.txt").write_text("text", encoding="utf-8")
    (tmp_path / "b.pdf").write_bytes(b"%PDF-1.4")
    keys = lambda: [cache_key([str(tmp_path / n)], "tok", 0, CleaningSettings()) for n in ("a.txt", "b.pdf")]  # noqa: E731
    before = keys()
    monkeypatch.setattr(pdf, "READER_VERSION", "fathom-pdf-next")
    after = keys()
    assert after[0] == before[0] and after[1] != before[1]


def test_data_stats_counts_what_reading_the_pdfs_did(testset, local_model_dir, tmp_path, capsys):
    import json

    from helpers import small_run_config, write_config

    from fathom.cli import main

    _, out, _ = testset
    cfg = small_run_config(local_model_dir, [*sorted(out.glob("*.pdf"))], tmp_path / "run")
    cfg["data"]["ocr"] = "off"  # the same on machines with and without tesseract
    cfg["data"]["cache_dir"] = str(tmp_path / "cache")
    config = write_config(tmp_path / "run.yaml", cfg)
    assert main(["data", "stats", "--config", str(config), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["pdf"]["header_footer_lines_removed"] >= 8 and stats["pdf"]["line_end_hyphens_joined"] >= 10
    assert stats["pdf"]["table_rows"] == 7
    garbled = "PDF whose text layer does not read as words"
    assert stats["skipped_by_reason"] == {"PDF without a text layer": 1, garbled: 1}
    assert stats["pdf"]["pdf_pages"] >= 8
    lowest = stats["lowest_confidence"]  # the files to look at first, the least readable first
    assert len(lowest) == 6 and [share for _, share in lowest] == sorted(share for _, share in lowest)
    assert all(0.9 <= share <= 1.0 for _, share in lowest)  # clean text layers read as words


def test_a_garbled_text_layer_scores_low_confidence():
    assert pdf.PdfText("The vessel shall keep 12.5 knots (power-driven).", 1).confidence == 1.0
    assert pdf.PdfText("Th\x01e v§§el ˆˆ¨ ¬¬¬ ØØØ1 §¶", 1).confidence < 0.3


def test_data_show_prints_one_file_as_the_cache_gets_it(testset, local_model_dir, tmp_path, capsys, monkeypatch):
    """fathom data show FILE: the cleaned text and its token count, what reading the PDF did; a scanned
    file says why it gives nothing; a path that is no file is one line; nothing is written anywhere."""
    import json

    from helpers import small_run_config, write_config

    from fathom.cli import main

    _, out, _ = testset
    cfg = small_run_config(local_model_dir, [out], tmp_path / "run")
    cfg["data"]["ocr"] = "off"  # the same on machines with and without tesseract
    config = write_config(tmp_path / "run.yaml", cfg)
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["data", "show", str(out / "table.pdf"), "--config", str(config), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    (document,) = shown["documents"]
    assert "| Tug | 480 | 32 | 6 |" in document["text"] and document["tokens"] > 100
    assert shown["pdf"]["table_rows"] == 7 and shown["skipped"] == []
    assert main(["data", "show", str(out / "furniture.pdf"), "--config", str(config)]) == 0
    text = capsys.readouterr().out
    assert "tokens (with the end-of-document token) ===" in text and "header footer lines removed 4" in text
    assert "Page 1" not in text
    assert main(["data", "show", str(out / "scanned.pdf"), "--config", str(config)]) == 1
    assert "PDF without a text layer" in capsys.readouterr().out
    assert main(["data", "show", str(tmp_path / "missing.pdf"), "--config", str(config)]) == 2
    assert "is not a file" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no run folder, no cache, no demo data
