"""The text reports turn their JSON-ready objects into what the commands print, with no CLI involved."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from fathom.demo import demo_config
from fathom.reports.corpus import print_data_show, print_data_stats
from fathom.reports.plan import format_hours, plan_report, print_plan
from fathom.reports.qa import qa_summary_lines
from fathom.reports.runs import describe
from fathom.train.progress import RunStatus


def _text(render, *args, **kwargs) -> str:
    out = io.StringIO()
    render(Console(file=out, width=220), *args, **kwargs)
    return out.getvalue()


@pytest.fixture(scope="module")
def demo_plan() -> dict:
    return plan_report(demo_config([], False))


def test_plan_text_holds_every_phase_the_total_and_the_hardware(demo_plan):
    text = _text(print_plan, demo_plan)
    for phase in demo_plan["phases"]:
        assert phase["name"] in text and f"{phase['steps']:,}" in text
    assert f"{demo_plan['total_steps']:,}" in text
    assert f"micro_batch_size {demo_plan['micro_batch_size']}" in text
    first = demo_plan["hardware"][0]
    assert f"{first['label']} ({first['key']})" in text  # the table of all hardware
    detail = _text(print_plan, demo_plan | {"hardware": [first]}, detail_gpu=True)
    assert "weights" in detail and "verdict" in detail and f"{first['memory_gib']:.0f} GiB" in detail


def test_plan_text_says_why_estimates_are_missing():
    summary = plan_report(demo_config([], False))
    summary.pop("hardware")
    summary["hardware_note"] = "the model's config cannot be read (offline)"
    assert "memory and time estimates unavailable: the model's config cannot be read (offline)" in _text(
        print_plan, summary
    )


@pytest.mark.parametrize(
    "hours, shown", [(0.0001, "~1 s"), (0.01, "~36 s"), (0.5, "~30 min"), (7.25, "~7.2 h"), (100, "~4.2 days")]
)
def test_hours_read_as_people_say_them(hours, shown):
    assert format_hours(hours) == shown


def _stats(**more) -> dict:
    phase = {
        "name": "Phase_1a_Short",
        "max_seq_length": 256,
        "rows": 12,
        "tokens": 3072,
        "padding_fraction": 0.0,
        "long_threshold": 128,
        "long_documents": 5,
        "natural_long_share": 0.4,
        "long_share": 0.5,
        "passes_over_corpus": 1.25,
    }
    return {
        "documents": 9,
        "tokens": 2400,
        "files_read": 3,
        "sources": 4,
        "held_out_documents": 1,
        "duplicates_removed": {"exact": 1, "near": 0},
        "pdf": {},
        "lowest_confidence": [],
        "skipped": 1,
        "skipped_by_reason": {"empty": 1},
        "skipped_files": [["notes/[blank].txt", "empty"]],
        "length_histogram": {"<1K": 9},
        "phases": [phase],
        "concerns": [],
    } | more


def test_data_stats_text_shows_the_corpus_skips_and_phases():
    text = _text(print_data_stats, _stats())
    assert "9 documents, 2,400 tokens from 3 of 4 sources; 1 held out" in text
    assert "notes/[blank].txt: empty" in text  # a file name is never read as rich markup
    assert "Phase_1a_Short" in text and "40% -> 50%" in text and "1.25" in text
    assert "PDFs" not in text and "Phase 2" not in text
    assert "warning" not in text
    concern = "Phase_1c_Long: no training document has [16,384] tokens"  # printed as written, never as markup
    assert f"warning: {concern}" in _text(print_data_stats, _stats(concerns=[concern]))
    pdf = _text(print_data_stats, _stats(pdf={"ocr_pages": 2}, lowest_confidence=[["scan.pdf", 0.42]]))
    assert "ocr pages 2" in pdf and "scan.pdf (42%)" in pdf


def test_data_show_prints_each_document_and_fails_when_nothing_is_kept(capsys):
    shown = {
        "documents": [{"where": "rules.pdf", "tokens": 7, "text": "Rule 5. Look-out."}],
        "pdf": {"furniture_lines": 3},
        "skipped": [],
    }
    assert print_data_show(shown) == 0
    out = capsys.readouterr().out
    assert "=== rules.pdf: 7 tokens" in out and "Rule 5. Look-out." in out and "furniture lines 3" in out
    assert print_data_show({"documents": [], "pdf": {}, "skipped": [["scan.pdf", "no text layer"]]}) == 1
    assert "skipped scan.pdf: no text layer" in capsys.readouterr().out


def test_qa_summary_names_the_teacher_only_when_one_was_asked():
    summary = {"out": "qa.jsonl", "records": 6, "documents": 3, "by_kind": {"fact": 6}, "by_length": {512: 6}}
    assert qa_summary_lines(summary | {"teacher": None}, None, held_out=True) == [
        "wrote 6 questions from 3 held-out documents to qa.jsonl (6 fact; context tokens: 512: 6)"
    ]
    teacher = {"passages": 4, "requests_failed": 1, "proposed": 9, "kept": 5, "rejected": {"not in passage": 4}}
    lines = qa_summary_lines(summary | {"teacher": teacher}, "qwen", held_out=False)
    assert lines[0] == "teacher qwen: 4 passages asked (1 failed), 9 pairs proposed, 5 kept; rejected: 4 not in passage"


def test_runs_text_of_a_killed_run_says_how_to_go_on(tmp_path):
    run = RunStatus(tmp_path, "killed", {"global_step": 3, "tokens_seen": 300, "last_checkpoint": "step_00000003"})
    lines = describe(run, now=0.0)
    assert "fathom train --resume" in lines[0] and "step 3" in lines[1] and "checkpoints/step_00000003" in lines[2]
