from __future__ import annotations

import json

from transformers import AutoTokenizer

from fathom.data.eod import resolve_eod_token_id
from fathom.data.ingest import read_documents


def test_shared_tokenizer_is_really_qwen(qwen_tokenizer_dir):
    tokenizer = AutoTokenizer.from_pretrained(qwen_tokenizer_dir)
    golden = json.loads((qwen_tokenizer_dir / "golden_tokens.json").read_text(encoding="utf-8"))
    assert len(golden) == 13
    for case in golden:
        assert tokenizer(case["text"], add_special_tokens=False)["input_ids"] == case["ids"], case["text"]


def test_documents_end_with_endoftext_not_the_chat_eos(real_tokenizer):
    """Qwen2.5 (and SmolLM2) configure the chat <|im_end|> as eos; documents must end with <|endoftext|>."""
    tokenizer = real_tokenizer.load()
    assert tokenizer.eos_token == "<|im_end|>"
    assert resolve_eod_token_id(tokenizer) == real_tokenizer.endoftext_id


def test_explicit_eod_token_must_exist(real_tokenizer):
    import pytest

    tokenizer = real_tokenizer.load()
    assert resolve_eod_token_id(tokenizer, "<|im_end|>") == real_tokenizer.im_end_id
    with pytest.raises(ValueError, match=r"data\.eod_token: '<nope>' is not in the tokenizer's vocabulary"):
        resolve_eod_token_id(tokenizer, "<nope>")


def test_reader_handles_formats_and_skips_bad_files(tmp_path, caplog):
    (tmp_path / "a.txt").write_text("Rule 1. Application.", encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.md").write_text("# Rule 2\nResponsibility.", encoding="utf-8")
    (tmp_path / "c.jsonl").write_text(
        json.dumps({"text": "Rule 3."}) + "\n\n" + "not json\n" + json.dumps({"body": "x"}) + "\n",
        encoding="utf-8",
    )
    (tmp_path / "empty.txt").write_text("   ", encoding="utf-8")
    (tmp_path / "binary.txt").write_bytes(b"\x00\x01\x02garbage")
    (tmp_path / "latin1.txt").write_bytes("Caf\xe9 du port".encode("latin-1"))
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    (tmp_path / "broken.md").symlink_to(tmp_path / "missing-target.md")
    with caplog.at_level("WARNING", logger="fathom"):
        docs, report = read_documents([str(tmp_path)])
    texts = sorted(d.text for d in docs)
    assert texts == sorted(["Rule 1. Application.", "# Rule 2\nResponsibility.", "Rule 3.", "Café du port"])
    reasons = dict(report.skipped)
    assert reasons[str(tmp_path / "empty.txt")] == "empty"
    assert "binary" in reasons[str(tmp_path / "binary.txt")]
    assert "broken symlink" in reasons[str(tmp_path / "broken.md")]
    assert any("2 records" in path for path in reasons)
    assert "latin1.txt is not UTF-8; read as Windows-1252" in caplog.text
    assert not any("image.png" in path for path in reasons)  # unsupported suffixes in folders are not documents
