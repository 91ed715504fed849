"""Word documents (.docx) read in order, furniture out; other office files named with their fix, not dropped."""

from __future__ import annotations

import zipfile

import docx

from fathom.cli import main
from fathom.data.ingest import IngestReport, documents_of, read_documents


def _procedure(path):
    """A .docx as a fleet office writes one: a running header and footer, a heading, a table whose first row
    has a cell merged across two columns, and a paragraph after the table."""
    document = docx.Document()
    section = document.sections[0]
    section.header.paragraphs[0].text = "ACME Shipping - Safety Management System - Rev. 4"
    section.footer.paragraphs[0].text = "Page 1 of 1"
    document.add_heading("3. Bunkering", level=1)
    document.add_paragraph("The chief engineer shall sound every tank before the transfer begins.")
    table = document.add_table(rows=3, cols=3)
    merged = table.cell(0, 0).merge(table.cell(0, 1))
    merged.text = "Tank"
    table.cell(0, 2).text = "Capacity"
    for row, (tank, kind, capacity) in enumerate([("No. 1", "DB", "120 m3"), ("No. 2", "Wing", "85 m3")], 1):
        table.cell(row, 0).text, table.cell(row, 1).text, table.cell(row, 2).text = tank, kind, capacity
    document.add_paragraph("")  # an empty paragraph: no blank block in the text
    document.add_paragraph("Report any overflow to the master at once.")
    document.save(path)


RELS = (
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Id="rId1" Target="word/document.xml" '
    'Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument"/></Relationships>'
)


def test_a_word_document_reads_in_order_with_its_table_and_without_its_furniture(tmp_path):
    folder = tmp_path / "procedures"
    folder.mkdir()
    _procedure(folder / "bunkering.docx")
    documents, report = read_documents([str(folder)])
    assert report.skipped == []
    assert [d.text for d in documents] == [
        "3. Bunkering\n\n"
        "The chief engineer shall sound every tank before the transfer begins.\n\n"
        "| Tank | Capacity |\n| No. 1 | DB | 120 m3 |\n| No. 2 | Wing | 85 m3 |\n\n"
        "Report any overflow to the master at once."
    ]


def test_a_report_form_reads_its_fields_text_boxes_and_tracked_insertions_once(tmp_path):
    from docx.oxml import parse_xml
    from docx.oxml.ns import nsdecls

    document = docx.Document()
    ship = document.add_paragraph("Vessel: ")
    ship._p.append(  # an inline content control: a form field filled in
        parse_xml(f"<w:sdt {nsdecls('w')}><w:sdtContent><w:r><w:t>MV Northern Star</w:t></w:r></w:sdtContent></w:sdt>")
    )
    document.element.body.insert(  # a block content control around a paragraph, and a tracked insertion
        1,
        parse_xml(
            f"<w:sdt {nsdecls('w')}><w:sdtPr/><w:sdtContent><w:p>"
            '<w:pPr><w:tabs><w:tab w:val="left" w:pos="720"/></w:tabs></w:pPr>'
            "<w:r><w:t>Findings:</w:t></w:r><w:r><w:tab/></w:r>"
            "<w:ins w:id='1' w:author='x' w:date='2026-01-01T00:00:00Z'><w:r><w:t>none</w:t></w:r></w:ins>"
            "<w:del w:id='2' w:author='x' w:date='2026-01-01T00:00:00Z'>"
            "<w:r><w:delText>two</w:delText></w:r></w:del></w:p></w:sdtContent></w:sdt>"
        ),
    )
    boxed = document.add_paragraph("See note:")
    note = "<w:p><w:r><w:t>Hold 3 sealed</w:t></w:r></w:p>"
    boxed._p.append(  # a text box, written twice as Word does: the drawing and its fallback
        parse_xml(
            f'<w:r {nsdecls("w")} xmlns:mc="http://schemas.openxmlformats.org/markup-compatibility/2006">'
            f"<mc:AlternateContent><mc:Choice Requires='wps'><w:txbxContent>{note}</w:txbxContent></mc:Choice>"
            f"<mc:Fallback><w:txbxContent>{note}</w:txbxContent></mc:Fallback></mc:AlternateContent></w:r>"
        )
    )
    document.save(tmp_path / "report.docx")
    (text,) = [d.text for d in read_documents([str(tmp_path / "report.docx")])[0]]
    assert text == "Vessel: MV Northern Star\n\nFindings: none\n\nSee note:\nHold 3 sealed"


def test_other_office_files_are_named_with_their_fix_and_hidden_ones_pass(tmp_path):
    folder = tmp_path / "fleet"
    (folder / ".git").mkdir(parents=True)
    (folder / ".git" / "config").write_text("[core]\n")
    (folder / ".DS_Store").write_bytes(b"\0\1")
    (folder / "~$bunkering.docx").write_bytes(b"owner")  # Word's lock file while the document is open
    (folder / "old_manual.doc").write_bytes(b"\xd0\xcf\x11\xe0 legacy")
    (folder / "tanks.xlsx").write_bytes(b"PK")
    (folder / "readme.txt").write_text("Fleet procedures, revision 4.\n")
    (folder / "LICENSE").write_text("all rights reserved\n")  # no suffix, an image: not documents, not named
    (folder / "logo.png").write_bytes(b"\x89PNG")
    documents, report = read_documents([str(folder)])
    assert [d.source for d in documents] == [str(folder / "readme.txt")]
    assert sorted(report.skipped) == [
        (str(folder / "old_manual.doc"), "unsupported file type '.doc' (save it as .docx or PDF)"),
        (
            str(folder / "tanks.xlsx"),
            "unsupported file type '.xlsx' (export its sheets as text, as .txt or .jsonl)",
        ),
    ]


def test_a_damaged_or_bomb_docx_is_skipped_with_its_reason(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "renamed.docx").write_text("this was never a Word document")
    with zipfile.ZipFile(folder / "bomb.docx", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("_rels/.rels", RELS)
        archive.writestr("word/document.xml", b"\0" * 5_000_000)  # 5 MB of zeros: a few kilobytes compressed
    _procedure(folder / "good.docx")
    documents, report = read_documents([str(folder)])
    assert [d.source for d in documents] == [str(folder / "good.docx")]
    reasons = dict(report.skipped)
    assert reasons[str(folder / "renamed.docx")].startswith("not a Word document (.docx is a zip archive")
    assert reasons[str(folder / "bomb.docx")].startswith("not a readable Word document")  # under the cap: parsed
    report = IngestReport()  # data.max_document_chars 1M: 4 MB of XML at most, checked before decompressing
    assert list(documents_of(str(folder / "bomb.docx"), "text", report, max_chars=1_000_000)) == []
    assert report.skipped[0][1].startswith("word/document.xml decompresses to 5,000,000 bytes: above 4,000,000")


def test_data_show_prints_a_word_document_as_it_enters_the_cache(tmp_path, capsys):
    _procedure(tmp_path / "bunkering.docx")
    assert main(["data", "show", str(tmp_path / "bunkering.docx")]) == 0
    out = capsys.readouterr().out
    assert "| No. 2 | Wing | 85 m3 |" in out and "Report any overflow" in out
    assert "Safety Management System" not in out and "Page 1 of 1" not in out


def _numbered(path):
    """A procedure whose clause numbers Word draws: a three-level list (1. / 1.1 / (a)) on headings and
    paragraphs, a heading style linked to level 2, a cell in the list, a second list of the same definition
    restarting at 7 (which the first list then continues), a legal-numbered part (I. / 1.1), a symbol-font
    bullet, steps that never restart (lvlRestart 0) and a list with a level of its own (annexes A, B)."""
    from docx.oxml import parse_xml
    from docx.oxml.ns import nsdecls

    document = docx.Document()

    def lvl(ilvl, fmt, text, start=1, extra=""):
        return (
            f'<w:lvl w:ilvl="{ilvl}"><w:start w:val="{start}"/><w:numFmt w:val="{fmt}"/>'
            f'<w:lvlText w:val="{text}"/>{extra}</w:lvl>'
        )

    definitions = [
        f'<w:abstractNum {nsdecls("w")} w:abstractNumId="90">'
        + lvl(0, "decimal", "%1.")
        + lvl(1, "decimal", "%1.%2", extra='<w:pStyle w:val="Heading2"/>')
        + lvl(2, "lowerLetter", "(%3)")
        + lvl(3, "lowerRoman", "%4)", extra='<w:suff w:val="nothing"/>')
        + "</w:abstractNum>",
        f'<w:abstractNum {nsdecls("w")} w:abstractNumId="92">'
        + lvl(0, "upperRoman", "%1.")
        + lvl(1, "decimal", "%1.%2", extra="<w:isLgl/>")
        + "</w:abstractNum>",
        f'<w:abstractNum {nsdecls("w")} w:abstractNumId="93">' + lvl(0, "bullet", "\uf0b7") + "</w:abstractNum>",
        f'<w:abstractNum {nsdecls("w")} w:abstractNumId="94">'
        + lvl(0, "decimal", "%1.")
        + lvl(1, "decimal", "Step %2", extra='<w:lvlRestart w:val="0"/>')  # steps count on through the list
        + "</w:abstractNum>",
        f'<w:num {nsdecls("w")} w:numId="90"><w:abstractNumId w:val="90"/></w:num>',
        f'<w:num {nsdecls("w")} w:numId="91"><w:abstractNumId w:val="90"/>'
        '<w:lvlOverride w:ilvl="0"><w:startOverride w:val="7"/></w:lvlOverride></w:num>',
        f'<w:num {nsdecls("w")} w:numId="92"><w:abstractNumId w:val="92"/></w:num>',
        f'<w:num {nsdecls("w")} w:numId="93"><w:abstractNumId w:val="93"/></w:num>',
        f'<w:num {nsdecls("w")} w:numId="94"><w:abstractNumId w:val="94"/></w:num>',
        f'<w:num {nsdecls("w")} w:numId="95"><w:abstractNumId w:val="90"/>'  # a list's own level 0: annexes
        '<w:lvlOverride w:ilvl="0"><w:startOverride w:val="1"/>'
        + lvl(0, "upperLetter", "Annex %1")
        + "</w:lvlOverride></w:num>",
    ]
    numbering = document.part.numbering_part.element
    for xml in definitions:
        numbering.append(parse_xml(xml))
    heading2 = document.styles["Heading 2"].element  # linked to level 2 of list 90 by the level's w:pStyle
    heading2.get_or_add_pPr().append(parse_xml(f'<w:numPr {nsdecls("w")}><w:numId w:val="90"/></w:numPr>'))

    def numbered(text, num, ilvl, style=None):
        paragraph = document.add_paragraph(text, style=style)
        paragraph._p.get_or_add_pPr().append(
            parse_xml(f'<w:numPr {nsdecls("w")}><w:ilvl w:val="{ilvl}"/><w:numId w:val="{num}"/></w:numPr>')
        )

    numbered("General", 90, 0)
    numbered("Scope", 90, 1)
    document.add_heading("Definitions", level=2)  # numbered by its style: 1.2
    numbered("Vessel means any watercraft.", 90, 2)
    numbered("", 90, 2)  # an empty item: counted, not written
    numbered("Barge means a non-self-propelled vessel.", 90, 2)
    numbered("which is manned", 90, 3)
    numbered("Bunkering", 90, 0)
    numbered("Before the transfer", 90, 1)
    numbered("Annex", 0, 0, style="Heading 2")  # numId 0: the style's numbering switched off
    table = document.add_table(rows=1, cols=2)
    table.cell(0, 0).text = "Step"
    cell = table.cell(0, 1).paragraphs[0]
    cell.text = "Sound every tank"
    cell._p.get_or_add_pPr().append(
        parse_xml(f'<w:numPr {nsdecls("w")}><w:ilvl w:val="1"/><w:numId w:val="90"/></w:numPr>')
    )
    numbered("Restarted", 91, 0)
    numbered("Continued", 90, 0)  # lists of one definition share its counters (Word: 8, not 3)
    numbered("Part", 92, 0)
    numbered("Legal", 92, 1)
    numbered("Lifejackets", 93, 0)
    numbered("Start", 94, 0)
    numbered("Open the valve", 94, 1)
    numbered("Transfer", 94, 0)
    numbered("Close the valve", 94, 1)
    numbered("Forms", 95, 0)
    numbered("Checklists", 95, 0)
    document.add_paragraph("One", style="List Number")  # python-docx's own template: a style-linked list
    document.add_paragraph("Two", style="List Number")
    document.save(path)


def test_automatic_list_numbers_are_written_before_their_paragraphs(tmp_path):
    _numbered(tmp_path / "procedure.docx")
    documents, report = read_documents([str(tmp_path / "procedure.docx")])
    assert report.skipped == []
    assert documents[0].text.split("\n\n") == [
        "1. General",
        "1.1 Scope",
        "1.2 Definitions",
        "(a) Vessel means any watercraft.",
        "(c) Barge means a non-self-propelled vessel.",
        "i)which is manned",
        "2. Bunkering",
        "2.1 Before the transfer",
        "Annex",
        "| Step | 2.2 Sound every tank |",
        "7. Restarted",
        "8. Continued",
        "I. Part",
        "1.1 Legal",
        "• Lifejackets",
        "1. Start",
        "Step 1 Open the valve",
        "2. Transfer",
        "Step 2 Close the valve",
        "Annex A Forms",
        "Annex B Checklists",
        "1. One",
        "2. Two",
    ]


def test_list_number_formats():
    from fathom.data.word_numbering import format_number

    assert [format_number(n, "lowerLetter") for n in (1, 26, 27, 28)] == ["a", "z", "aa", "bb"]
    assert [format_number(n, "upperRoman") for n in (4, 9, 14, 40, 1994)] == ["IV", "IX", "XIV", "XL", "MCMXCIV"]
    assert format_number(3, "decimalZero") == "03" and format_number(3, "ordinalText") == "3"
    # a hostile count cannot make a label grow with it: letters and roman numerals past their bounds in decimal
    assert format_number(79, "lowerLetter") == "79" and format_number(4000, "upperRoman") == "4000"
    from lxml import etree

    from fathom.data.word_numbering import W, _level

    level = etree.fromstring(
        f'<w:lvl xmlns:w="{W[1:-1]}"><w:start w:val="999999999"/><w:lvlText w:val="{"%1" * 10_000}"/></w:lvl>'
    )
    assert _level(level).start == 32767 and len(_level(level).text) == 64


def test_a_damaged_or_oversized_numbering_part_costs_the_numbers_not_the_document(tmp_path, caplog):
    """The list definitions are a side part: a broken or bomb one is not read, the body still is."""
    document = docx.Document()
    document.add_paragraph("Sound every tank.", style="List Number")
    document.save(tmp_path / "good.docx")
    for name, numbering in (("broken", b"<w:numbering"), ("bomb", b"\0" * 9_000_000)):
        with (
            zipfile.ZipFile(tmp_path / "good.docx") as source,
            zipfile.ZipFile(tmp_path / f"{name}.docx", "w", zipfile.ZIP_DEFLATED) as target,
        ):
            for item in source.infolist():
                data = numbering if item.filename == "word/numbering.xml" else source.read(item)
                target.writestr(item.filename, data)
    documents, report = read_documents([str(tmp_path)])
    assert report.skipped == []
    assert {d.source.rsplit("/", 1)[-1]: d.text for d in documents} == {
        "good.docx": "1. Sound every tank.",
        "broken.docx": "Sound every tank.",
        "bomb.docx": "Sound every tank.",
    }
    warned = [r.getMessage() for r in caplog.records if "read without its list numbers" in r.getMessage()]
    assert len(warned) == 2 and any("numbering.xml decompresses to 9,000,000 bytes" in w for w in warned)
