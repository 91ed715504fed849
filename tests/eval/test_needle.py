from __future__ import annotations

import pytest

from fathom.eval.needle import build_prompt, default_depths, default_lengths, score


@pytest.fixture(scope="module")
def qwen(real_tokenizer):
    """Qwen2.5's tokenizer where ../shared exists, else SmolLM2's."""
    return real_tokenizer.load()


@pytest.mark.parametrize("kind", ["passkey", "maritime"])
@pytest.mark.parametrize("length", [1024, 4096])
def test_prompts_have_the_target_length_depth_and_one_answer(qwen, real_corpus, kind, length):
    colregs = real_corpus / "colregs" / "international"
    haystack = [p.read_text() for p in sorted((colregs if colregs.is_dir() else real_corpus).glob("*.md"))]
    for depth in (0.0, 0.25, 0.5, 1.0):
        prompt = build_prompt(qwen, kind, length, depth, seed=3, haystack=haystack)
        text = qwen.decode(prompt.input_ids)
        assert abs(len(qwen(text, add_special_tokens=False)["input_ids"]) - length) <= 0.01 * length
        assert prompt.length == length
        assert text.count(prompt.answer) == 1
        assert abs(prompt.actual_depth - depth) < 0.05, (depth, prompt.actual_depth)
        if kind == "maritime":  # the haystack is the real documents: runs of their words fill the prompt
            documents = " | ".join(" ".join(doc.split()) for doc in haystack)
            words = text.split()
            windows = [" ".join(words[i : i + 8]) for i in range(40, len(words) - 60, 50)]
            assert sum(w in documents for w in windows) >= len(windows) // 2


def test_prompts_are_seeded(qwen):
    a = build_prompt(qwen, "passkey", 512, 0.5, seed=1)
    assert a == build_prompt(qwen, "passkey", 512, 0.5, seed=1)
    assert a.answer != build_prompt(qwen, "passkey", 512, 0.5, seed=2).answer


def test_scoring():
    assert score("  68203. Remember", "68203")
    assert not score("6820 3", "68203")
    assert score("54 degrees  12 minutes north, 7 degrees east.", "54 degrees 12 minutes north, 7 degrees east")
    assert not score("The pass key is 68203", "68203")


def test_grid_defaults():
    assert default_lengths(32768) == [1024, 2048, 4096, 8192, 16384, 32768]
    assert default_lengths(1000) == [1000]
    assert default_depths(5) == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_too_short_a_prompt_is_an_error(qwen):
    with pytest.raises(ValueError, match="too short"):
        build_prompt(qwen, "passkey", 20, 0.5, seed=0)
