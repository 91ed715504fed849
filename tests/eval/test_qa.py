"""Long-document QA: SQuAD-style scoring, and questions built from documents with the answer at a known depth."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import yaml

from fathom.data.qa import build_records, extract_facts
from fathom.demo.corpus import generate_documents
from fathom.errors import ConfigError
from fathom.eval.qa import (
    contains,
    depth_bucket,
    exact_match,
    length_bucket,
    normalize_answer,
    read_qa_records,
    score_answers,
    token_f1,
)


def test_squad_normalization_and_scores():
    assert normalize_answer("The  Port of Hamburg!") == "port of hamburg"
    # a statute's typographic quotes and dashes, a PDF's ligature and no-break space, against a model's ASCII
    assert contains("No court may review the Secretary's decision.", "the Secretary\u2019s decision")
    assert exact_match('a signal "MAYDAY"', "a signal \u201cMAYDAY\u201d") and exact_match("(b)-(f)", "(b)\u2013(f)")
    assert normalize_answer("of\ufb01cer\u00a0on watch") == "officer on watch"
    assert not contains("the Secretary decides", "the Secretary\u2019s decision")
    assert exact_match("the Hamburg.", "Hamburg") and not exact_match("Hamburg, Germany", "Hamburg")
    assert token_f1("3,280 t of soybeans", "3,280 t of soybeans") == 1.0
    assert token_f1("soybeans in hold 3", "3,280 t of soybeans") == pytest.approx(0.25)  # 1 common of 4 and 4
    assert token_f1("coal", "soybeans") == 0.0
    assert contains("Hold 3 holds 3,280 t of soybeans.", "3,280 t of soybeans") and not contains("", "x")
    assert [length_bucket(n) for n in (100, 256, 257, 1000, 2048)] == [256, 256, 512, 1024, 2048]
    assert [depth_bucket(d) for d in (0.0, 0.25, 0.5, 0.99, 1.0)] == ["0-20%", "20-40%", "40-60%", "80-100%", "80-100%"]


def test_scores_by_length_and_depth():
    records = [
        {"document": "d", "question": "q", "answer": "Hamburg", "context_tokens": 500, "depth": 0.1},
        {"document": "d", "question": "q", "answer": "coal", "context_tokens": 500, "depth": 0.9},
        {"document": "d", "question": "q", "answer": "Rule 13", "context_tokens": 2000, "depth": 0.1},
    ]
    scores = score_answers(records, ["Hamburg", "iron ore", "It is Rule 13."], None)
    assert scores["n"] == 3 and scores["exact_match"] == pytest.approx(1 / 3, abs=1e-3)
    assert scores["contains"] == pytest.approx(2 / 3, abs=1e-3)
    assert scores["grid_contains"] == {"512": {"0-20%": 1.0, "80-100%": 0.0}, "2048": {"0-20%": 1.0}}
    assert scores["contains_by_length"] == {"512": 0.5, "2048": 1.0}


def test_models_asked_the_same_questions_are_compared_question_by_question():
    """Each model minus the first and minus the one before it, paired; nothing for different questions."""
    from fathom.eval.qa import compare_models, qa_summary_lines

    records = [
        {"document": "d", "question": f"q{i}", "answer": "Hamburg", "context_tokens": 500, "depth": 0.5}
        for i in range(10)
    ]
    right = [score_answers(records, ["Hamburg"] * k + ["Bremen"] * (10 - k), None) for k in (2, 5, 9)]
    models = [{"name": name, "qa": qa} for name, qa in zip(("base", "phase-1", "phase-2"), right, strict=True)]
    paired = {(d["model"], d["against"]): d for d in compare_models(models)}
    assert list(paired) == [("phase-1", "base"), ("phase-2", "base"), ("phase-2", "phase-1")]
    assert paired[("phase-2", "base")]["difference"] == pytest.approx(0.7) and paired[("phase-2", "base")]["n"] == 10
    assert paired[("phase-2", "base")]["low"] > 0  # the same seven questions turned right: a clear gain
    assert right[0]["contains_interval"] == [pytest.approx(0.0567, abs=1e-3), pytest.approx(0.5098, abs=1e-3)]
    lines = qa_summary_lines({"models": models, "qa_paired": compare_models(models)})
    assert lines[0] == "QA base: answer contained 20% [6%, 51%] of 10, F1 0.20, exact 20%"
    assert lines[4].startswith("QA phase-2 minus base: +70.0 points [+") and "on the same 10 questions" in lines[4]
    other = score_answers([r | {"question": "other"} for r in records], ["Hamburg"] * 10, None)
    assert compare_models([models[0], {"name": "x", "qa": other}]) == [] and compare_models(models[:1]) == []


def test_reading_qa_records_names_the_bad_line(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text(json.dumps({"document": "d", "question": "q", "answer": "a"}) + "\n{oops\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"qa.jsonl line 2 is not valid JSON"):
        read_qa_records(path)
    path.write_text(json.dumps({"document": "d", "question": "q"}) + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="line 1 needs string fields document, question and answer"):
        read_qa_records(path)


def test_facts_from_key_value_lines_and_paragraphs():
    text = (
        "title: Overtaking\n\n"
        "(a) Any vessel overtaking any other shall keep out of the way of the vessel being overtaken.\n\n"
        "- Hold 3: 3,280 t of soybeans\nMaster: Capt. S. Tanaka. Voyage from Valencia.\n"
    )
    facts = {(f.kind, f.question): f.answer for f in extract_facts(text)}
    assert facts[("key_value", 'What does the document give for "Hold 3"?')] == "3,280 t of soybeans"
    assert facts[("key_value", 'What does the document give for "Master"?')] == "Capt. S. Tanaka"
    question = 'What does paragraph (a) of "Overtaking" say?'
    assert facts[("paragraph", question)].startswith("Any vessel overtaking any other shall keep out of the way")


def test_an_answer_never_stops_inside_brackets():
    text = (
        "Watch 10: exhaust 422 degrees C (within limits), lube oil 2.5 bar (below limit: standby pump started).\n"
        "Watch 11: exhaust 437 degrees C (above the alarm limit). Main engine slowed.\n"
    )
    facts = {f.question: f.answer for f in extract_facts(text)}
    assert facts['What does the document give for "Watch 10"?'].endswith("(below limit: standby pump started)")
    assert facts['What does the document give for "Watch 11"?'] == "exhaust 437 degrees C (above the alarm limit)"


def test_built_questions_have_one_answer_at_the_recorded_depth(real_tokenizer):
    tokenizer = real_tokenizer.load()
    texts = [text for _, text in generate_documents(12, seed=4)]
    records = build_records(texts, tokenizer, [256, 1024], per_document=2, seed=3)
    assert records == build_records(texts, tokenizer, [256, 1024], per_document=2, seed=3)  # seeded
    assert {"key_value", "paragraph"} <= {r["kind"] for r in records} <= {"key_value", "paragraph", "section"}
    assert len({r["context_tokens"] for r in records}) >= 2
    for record in records:
        context, key = record["document"], record["question"].split('"')[1]
        assert record["answer"] in context
        if record["kind"] == "key_value":
            assert context.count(f"{key}:") == 1  # no other document in the context states the same key
            ids = tokenizer(context, add_special_tokens=False)["input_ids"]
            assert abs(len(ids) - record["context_tokens"]) <= 0.05 * record["context_tokens"] + 4
            position = len(tokenizer(context[: context.index(f"{key}:")], add_special_tokens=False)["input_ids"])
            assert abs(position / len(ids) - record["depth"]) < 0.05, record["question"]


STATUTE = """# Title 46 - SHIPPING

#### § 101. Agency

In this title, the term "agency" means a department, agency, or instrumentality of the United States Government.

#### § 109. Foreign commerce or trade
###### (a) In General .

FOREIGN_TRADE

###### (b) Capital Construction Funds .

CAPITAL_FUNDS

#### § 105. Vessel
###### (a)

The term "vessel" includes every description of watercraft used as a means of transportation on water.

#### § 110. Pilot rules
(a) Every pilot shall hold a license issued by the Secretary under this chapter.
(b) The first of two paragraphs labelled (b) under one heading, which makes the label ambiguous.
(b) The second paragraph labelled (b) under the same heading: neither is asked about.
""".replace(
    "FOREIGN_TRADE",
    'In this title, the terms "foreign commerce" and "foreign trade" mean commerce or trade between a place in the '
    "United States and a place in a foreign country, and the words run on well past the length of an answer.",
).replace(
    "CAPITAL_FUNDS",
    "In the context of capital construction funds under chapter 535 of this title, the terms mean trade between the "
    "United States and foreign countries.",
)


def test_questions_about_one_long_document_name_their_section_and_have_one_answer():
    facts = extract_facts(STATUTE)
    questions = {f.question: f for f in facts}
    assert questions['What does the section "§ 101. Agency" say?'].answer.startswith('In this title, the term "agency"')
    part_a = questions['What does paragraph (a) of "§ 109. Foreign commerce or trade" say?']
    assert part_a.answer.startswith('In this title, the terms "foreign commerce"') and part_a.anchor.endswith("trade")
    assert 'What does paragraph (b) of "§ 109. Foreign commerce or trade" say?' in questions
    assert 'What does paragraph (a) of "§ 110. Pilot rules" say?' in questions
    bare = questions['What does paragraph (a) of "§ 105. Vessel" say?']  # a label heading with no words of its own
    assert bare.answer.startswith('The term "vessel" includes') and not any('"(a)"' in q for q in questions)
    assert not any('(b) of "§ 110' in q for q in questions)  # (b) twice under § 110: ambiguous, not asked
    assert len(questions) == len(facts)  # no question asked twice
    for fact in facts:  # answers are cut at a word boundary, never inside a word
        assert len(fact.answer) <= 100
        following = STATUTE[STATUTE.index(fact.answer) + len(fact.answer)]
        assert not following.isalnum(), (fact.answer, following)


def test_records_from_one_long_document_hold_the_named_heading(real_tokenizer):
    tokenizer = real_tokenizer.load()
    text = "\n".join(STATUTE.replace("§ 1", f"§ {n}").replace("§ 10", f"§ {n}") for n in range(2, 9))
    records = build_records([text], tokenizer, [128], per_document=50, seed=0)
    assert len(records) >= 10 and {r["kind"] for r in records} >= {"paragraph", "section"}
    for record in records:
        name = record["question"].split('"')[1]
        context = record["document"]
        assert name in context and record["answer"] in context
        assert context.index(name) < context.index(record["answer"])


def test_batched_answers_equal_one_question_at_a_time(local_model_dir):
    """Left-padded batches of similar length give each question the answer it gets alone (greedy)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from fathom.data.instruct import QaPrompt
    from fathom.eval.qa import answer_questions

    tokenizer = AutoTokenizer.from_pretrained(local_model_dir)
    model = AutoModelForCausalLM.from_pretrained(local_model_dir, dtype=torch.float32).eval()
    texts = [text for _, text in generate_documents(6, seed=9)]
    records = build_records(texts, tokenizer, [96, 160], per_document=2, seed=1)[:10]
    assert len({len(r["document"]) for r in records}) > 3  # prompts of different lengths share batches
    batched = answer_questions(model, tokenizer, "cpu", records, QaPrompt(), max_new_tokens=6)
    alone = [answer_questions(model, tokenizer, "cpu", [r], QaPrompt(), max_new_tokens=6)[0] for r in records]
    assert batched == alone and any(batched)


def test_qa_build_keeps_whole_sentences_for_training_and_short_references_held_out(tmp_path, local_model_dir, capsys):
    """Training questions default to answers cut past 300 characters (whole sentences trained better in
    bench/quality.py's probe); held-out ones to 100 (short references, scored by containment)."""
    from helpers import small_run_config, write_config

    from fathom.cli import main

    docs = tmp_path / "docs"
    docs.mkdir()
    clause = "the master shall record in the official log the time, position and nature of every drill held aboard"
    for i in range(12):
        paragraphs = "\n\n".join(
            f"({c}) Rule {i}{c}: {clause}, and sign it before noon on day {n}." for n, c in enumerate("abcd")
        )
        (docs / f"rule_{i:02d}.md").write_text(f"# Rule {i}\n\n{paragraphs}\n", encoding="utf-8")
    run = small_run_config(local_model_dir, [docs], tmp_path / "run")
    run["data"]["eval_fraction"] = 0.25
    config = write_config(tmp_path / "c.yaml", run)
    answers = {}
    for name, extra in (("train", []), ("held-out", ["--held-out"])):
        out = tmp_path / f"{name}.jsonl"
        assert main(["qa", "build", "--config", str(config), "--out", str(out), "--lengths", "200", *extra]) == 0
        answers[name] = [json.loads(line)["answer"] for line in out.read_text(encoding="utf-8").splitlines()]
    assert answers["train"] and answers["held-out"]
    assert all(100 < len(a) <= 300 and re.search(r"noon on day \d$", a) for a in answers["train"])  # whole
    assert all(len(a) <= 100 and "noon" not in a for a in answers["held-out"])  # cut at a word boundary
    capsys.readouterr()


def _adapter_files(folder: Path) -> Path:
    """The files that make a folder an adapter for read_adapter (empty tensors: nothing here loads them)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "tiny"}), encoding="utf-8")
    save_file({}, str(folder / "adapter_model.safetensors"))
    return folder


def _phase_2_adapter(folder: Path, template: str, system: str | None) -> Path:
    """An adapter folder as Phase 2 leaves it, as far as read_adapter looks: its run config and trainer state."""
    _adapter_files(folder)
    sft = {"name": "Phase_2_Instruct", "max_seq_length": 512, "prompt_template": template, "system": system}
    (folder / "fathom_config.yaml").write_text(yaml.safe_dump({"sft": sft}), encoding="utf-8")
    (folder / "trainer_state.json").write_text(json.dumps({"phase_name": "Phase_2_Instruct"}), encoding="utf-8")
    return folder


def test_a_question_is_asked_in_the_turns_phase_2_trained_on(tmp_path):
    """Training, fathom eval and fathom generate build the question's turns in one place (QaPrompt): the
    template's user turn after sft.system. Before, eval and generate dropped the system prompt and eval
    asked in the default template whatever the adapter was taught."""
    from fathom.data.instruct import QaPrompt, to_conversation
    from fathom.eval.command import EvalRequest, qa_prompt
    from fathom.model.adapter import read_adapter

    template, system = "Q: {question}\n\n{document}\n\nQ: {question}", "You answer from the manual."
    prompt = QaPrompt(template, system)
    record = {"document": "(a) Keep a look-out.", "question": "What does (a) say?", "answer": "Keep a look-out."}
    trained = to_conversation(record, "qa.jsonl", template, system)
    assert list(trained.messages[:-1]) == prompt.messages(record["document"], record["question"])
    assert trained.messages[0] == {"role": "system", "content": system}
    assert trained.messages[1]["content"].count("What does (a) say?") == 2
    assert prompt.messages("d", "q", "its own")[0]["content"] == "its own"  # a record's system wins, as in training
    assert QaPrompt().messages("d", "q") == [{"role": "user", "content": "d\n\nQuestion: q"}]

    taught = _phase_2_adapter(tmp_path / "taught", template, system)
    assert (read_adapter(taught).prompt_template, read_adapter(taught).system) == (template, system)
    phase_1 = _adapter_files(tmp_path / "phase_1")
    asked = EvalRequest(base="tiny", adapters=[str(phase_1), str(taught)])
    assert qa_prompt(asked) == prompt  # the Phase-1 adapter beside it is asked the same way
    assert qa_prompt(EvalRequest(base="tiny", adapters=[str(phase_1)])) == QaPrompt()
    assert qa_prompt(EvalRequest(base="tiny", adapters=[str(taught)], qa_template="{document} {question}")) == (
        QaPrompt("{document} {question}")
    )
    other = _phase_2_adapter(tmp_path / "other", "{document}\n\nQuestion: {question}", None)
    with pytest.raises(ConfigError, match=r"^--adapter: .*taught.* were taught different prompts"):
        qa_prompt(EvalRequest(base="tiny", adapters=[str(taught), str(other)]))
