"""Instruction records: every format renders to the chat template's exact ids, labels on assistant tokens only."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, Qwen2Config

from fathom.data.instruct import read_examples, render, to_conversation
from fathom.data.pack import IGNORE_INDEX, pack_examples


@pytest.fixture(scope="module")
def tokenizer(real_tokenizer):
    return real_tokenizer.load()


def _supervised_text(tokenizer, example) -> str:
    return tokenizer.decode(example.input_ids[example.labels != IGNORE_INDEX])


def _chat_template_ids(tokenizer, messages) -> list[int]:
    ids = tokenizer.apply_chat_template(list(messages), tokenize=True)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


RECORDS = [
    ({"instruction": "Name the port.", "output": "Hamburg"}, "alpaca", ["Hamburg<|im_end|>"]),
    (
        {"instruction": "Convert to knots.", "input": "10 m/s", "output": "19.4 knots"},
        "alpaca",
        ["19.4 knots<|im_end|>"],
    ),
    (
        {
            "messages": [
                {"role": "system", "content": "You answer from the log."},
                {"role": "user", "content": "Draft on departure?"},
                {"role": "assistant", "content": "14.41 m"},
                {"role": "user", "content": "And on arrival?"},
                {"role": "assistant", "content": "14.15 m"},
            ]
        },
        "chat",
        ["14.41 m<|im_end|>", "14.15 m<|im_end|>"],
    ),
    (
        {"conversations": [{"from": "human", "value": "Flag?"}, {"from": "gpt", "value": "Norway"}]},
        "sharegpt",
        ["Norway<|im_end|>"],
    ),
    (
        {
            "document": "Hold 3: 3,280 t of soybeans.\nHold 4: coal.",
            "question": "What is in hold 3?",
            "answer": "3,280 t of soybeans",
            "system": "Answer from the document.",
        },
        "document_qa",
        ["3,280 t of soybeans<|im_end|>"],
    ),
]


@pytest.mark.parametrize(("record", "kind", "answers"), RECORDS, ids=[r[1] + str(i) for i, r in enumerate(RECORDS)])
def test_each_format_renders_the_chat_templates_ids_and_supervises_only_the_answers(tokenizer, record, kind, answers):
    conversation = to_conversation(record, "data.jsonl")
    assert conversation.format == kind
    example = render(conversation, tokenizer, 4096)
    assert list(example.input_ids) == _chat_template_ids(tokenizer, conversation.messages)
    assert _supervised_text(tokenizer, example) == "".join(answers)
    # each supervised run of tokens is one assistant turn ending with the end-of-turn token
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    supervised = example.labels != IGNORE_INDEX
    assert int((example.labels == im_end).sum()) == len(answers)
    assert np.array_equal(example.labels[supervised], example.input_ids[supervised])
    assert example.supervised_tokens + example.prompt_tokens == len(example)
    if kind == "document_qa":
        text = tokenizer.decode(example.input_ids)
        assert "Hold 3: 3,280 t of soybeans." in text and "Question: What is in hold 3?" in text
        assert "Answer from the document." in text


def test_a_long_document_is_cut_in_its_middle_never_in_question_or_answer(tokenizer):
    document = " ".join(f"Entry {i}: noon position logged." for i in range(400))
    record = {"document": "START " + document + " END", "question": "Which entry is last?", "answer": "Entry 399"}
    example = render(to_conversation(record, "x.jsonl"), tokenizer, 256)
    text = tokenizer.decode(example.input_ids)
    assert len(example) == 256 and example.truncated_tokens > 0
    assert "START Entry 0" in text and "END" in text and "Entry 200:" not in text
    assert "Question: Which entry is last?" in text and _supervised_text(tokenizer, example) == "Entry 399<|im_end|>"
    full = render(to_conversation(record, "x.jsonl"), tokenizer, 100_000)
    assert len(full) - example.truncated_tokens == 256


def test_bad_records_are_skipped_and_counted_by_reason(tmp_path, tokenizer, caplog):
    (tmp_path / "doc.txt").write_text("Rule 13. Overtaking.", encoding="utf-8")
    (tmp_path / "latin1.txt").write_bytes("Caf\xe9".encode("latin-1"))
    records = [
        {"document_path": "doc.txt", "question": "Which rule?", "answer": "Rule 13"},
        {"document_path": "latin1.txt", "question": "q", "answer": "a"},
        {"document_path": "missing.txt", "question": "q", "answer": "a"},
        {"document": "text", "question": "q", "answer": "  "},
        {"messages": [{"role": "user", "content": "hi"}, {"role": "captain", "content": "aye"}]},
        {"messages": [{"role": "user", "content": "hi"}]},
        {"question": "q"},
        [1, 2],
    ]
    data = tmp_path / "qa.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in records) + "\nnot json\n", encoding="utf-8")
    with caplog.at_level("WARNING", logger="fathom"):
        examples, report = read_examples([str(data)], tokenizer, 512)
    assert len(examples) == 1 and report.by_format == {"document_qa": 1}
    assert "Rule 13. Overtaking." in tokenizer.decode(examples[0].input_ids)
    reasons = report.skipped_by_reason
    assert reasons["empty answer"] == 1 and reasons["unknown role 'captain'"] == 1
    assert reasons["no assistant turn"] == 1 and reasons["not a JSON object"] == 2
    assert any("is not valid UTF-8" in r for r in reasons) and any("cannot be read" in r for r in reasons)
    assert any(r.startswith("unknown format") for r in reasons)
    assert "skipped: empty answer" in caplog.text


def test_pack_examples_keeps_examples_whole_and_pads_the_rest():
    examples = [(np.arange(1, n + 1), np.arange(1, n + 1)) for n in (3, 4, 5)]
    rows = list(pack_examples(examples, 8, pad_id=0))
    assert [r.input_ids.tolist() for r in rows] == [[1, 2, 3, 1, 2, 3, 4, 0], [1, 2, 3, 4, 5, 0, 0, 0]]
    assert [r.position_ids.tolist() for r in rows] == [[0, 1, 2, 0, 1, 2, 3, 0], [0, 1, 2, 3, 4, 0, 1, 2]]
    assert rows[1].labels.tolist() == [1, 2, 3, 4, 5, -100, -100, -100]
    with pytest.raises(ValueError, match="does not fit"):
        list(pack_examples([(np.arange(9), np.arange(9))], 8, 0))


@torch.no_grad()
def test_packed_instruction_rows_train_like_each_example_alone(tokenizer):
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        attn_implementation="sdpa",
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    examples = [render(to_conversation(r, "x"), tokenizer, 4096) for r, _, _ in RECORDS]
    pairs = [(e.input_ids, e.labels) for e in examples]
    seq_len = sum(len(e) for e in examples) + 5
    (row,) = list(pack_examples(pairs, seq_len, pad_id=0))

    def losses(ids, labels, positions):
        positions = None if positions is None else positions[None]
        # use_cache=False as in training: with a cache transformers does not detect packed rows
        logits = model(input_ids=ids[None], position_ids=positions, use_cache=False).logits[0]
        return F.cross_entropy(logits[:-1], labels[1:], ignore_index=IGNORE_INDEX, reduction="none")

    packed = losses(torch.from_numpy(row.input_ids), torch.from_numpy(row.labels), torch.from_numpy(row.position_ids))
    offset = 0
    for example in examples:
        alone = losses(torch.from_numpy(example.input_ids), torch.from_numpy(example.labels), None)
        assert torch.allclose(packed[offset : offset + len(example) - 1], alone, atol=1e-4)
        offset += len(example)
    assert int((torch.from_numpy(row.labels) != IGNORE_INDEX).sum()) == sum(e.supervised_tokens for e in examples)


def test_the_cut_goes_around_the_passage_that_states_the_answer(tokenizer):
    entries = [f"Entry {i}: noon position logged." for i in range(300)]
    entries[150] = "Entry 150: the pilot boarded at Brunsbuettel."
    record = {"document": " ".join(entries), "question": "Where did the pilot board?", "answer": "Brunsbuettel"}
    example = render(to_conversation(record, "x.jsonl"), tokenizer, 400)
    text = tokenizer.decode(example.input_ids)
    assert len(example) == 400 and example.truncated_tokens > 0
    assert "the pilot boarded at Brunsbuettel" in text  # the evidence survived the cut
    assert "Entry 0:" in text and "Entry 299:" in text  # the cut stayed inside the document


def test_instruction_records_from_json_parquet_and_a_datasets_folder(tmp_path, tokenizer):
    import datasets

    rows = [
        {"instruction": "Name the port.", "input": "", "output": "Hamburg"},
        {"instruction": "Name the flag.", "input": "", "output": "Norway"},
    ]
    (tmp_path / "a.json").write_text(json.dumps(rows), encoding="utf-8")
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "b.parquet"))
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "c_dataset"))
    for source in ("a.json", "b.parquet", "c_dataset"):
        examples, report = read_examples([str(tmp_path / source)], tokenizer, 512)
        assert report.by_format == {"alpaca": 2}, source
        assert [_supervised_text(tokenizer, e) for e in examples] == ["Hamburg<|im_end|>", "Norway<|im_end|>"]
