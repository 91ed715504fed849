"""Needle-in-a-haystack prompts of an exact token length, and their scoring.

A prompt is built from token ids, not from text, so its length is exact in the evaluated model's
tokenizer: an instruction, haystack tokens, the needle sentence inserted at a sentence boundary
near the requested depth (0.0 = start of the haystack, 1.0 = end), more haystack, and a question
that ends where the answer should begin. The answer appears in the prompt exactly once, in the
needle. Two kinds:

- ``passkey``: a five-digit pass key hidden in repeated filler sentences (Mohtashami & Jaggi 2023);
- ``maritime``: "The pilot boarding position for <port> is <position>." hidden in real documents
  (the run's held-out documents, or any text given as the haystack).

Scoring is exact match: the generated continuation, with leading whitespace removed, starts with
the answer.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

# Pieces start with a space and end without one, so that token ids laid end to end are also the
# canonical tokenization of the text they spell (no merges across the joins).
FILLER = " The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
PASSKEY_INTRO = (
    "There is an important piece of information hidden inside a lot of irrelevant text. "
    "Find it and memorize it. I will quiz you about it."
)
MARITIME_INTRO = (
    "Below are maritime documents. One sentence among them gives a pilot boarding position. "
    "Read everything, then answer the question at the end."
)
PORTS = [
    "Halden",
    "Skagen",
    "Brunsbuttel",
    "Vlissingen",
    "Gijon",
    "Setubal",
    "Ravenna",
    "Koper",
    "Constanta",
    "Mersin",
    "Aqaba",
    "Salalah",
    "Cochin",
    "Chittagong",
    "Belawan",
    "Cebu",
    "Keelung",
    "Muroran",
    "Nakhodka",
    "Lyttelton",
    "Geraldton",
    "Walvis Bay",
    "Lobito",
    "Takoradi",
    "Nouadhibou",
    "Paranagua",
    "Iquique",
]


@dataclass(frozen=True)
class NeedlePrompt:
    kind: str
    input_ids: list[int]  # the whole prompt; the answer should follow it
    answer: str
    target_length: int
    depth: float  # requested depth
    needle_position: int  # index of the needle's first token in input_ids
    haystack_start: int
    haystack_length: int  # tokens of haystack around the needle

    @property
    def length(self) -> int:
        return len(self.input_ids)

    @property
    def actual_depth(self) -> float:
        """Where the needle sits in the haystack: 0 before all of it, 1 after all of it."""
        return (self.needle_position - self.haystack_start) / max(self.haystack_length, 1)


def _needle(kind: str, rng: random.Random) -> tuple[str, str, str]:
    """(needle sentence, question that the answer completes, answer)."""
    if kind == "passkey":
        key = str(rng.randint(10000, 99999))
        return f" The pass key is {key}. Remember it.", "\n\nWhat is the pass key? The pass key is", key
    port = rng.choice(PORTS)
    answer = f"{rng.randint(10, 69)} degrees {rng.randint(0, 59)} minutes north, {rng.randint(1, 179)} degrees east"
    return (
        f" The pilot boarding position for {port} is {answer}.",
        f"\n\nQuestion: what is the pilot boarding position for {port}?\nAnswer: The pilot boarding position for "
        f"{port} is",
        answer,
    )


def _sentence_starts(ids: list[int], tokenizer) -> list[int]:
    """Token indices right after a sentence end (., ! or ? followed by a space or newline), plus 0."""
    starts = [0]
    pieces = tokenizer.convert_ids_to_tokens(ids)
    for i, piece in enumerate(pieces[:-1]):
        text = tokenizer.convert_tokens_to_string([piece]).rstrip()
        if text.endswith((".", "!", "?")):
            starts.append(i + 1)
    return starts


def fixed_prompt_tokens(tokenizer, kind: str) -> int:
    """Tokens of a ``kind`` prompt's fixed text (instruction, needle, question): a prompt must be longer."""
    needle, question, _ = _needle(kind, random.Random(0))
    intro = PASSKEY_INTRO if kind == "passkey" else MARITIME_INTRO
    return sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in (intro, needle, question))


def shortest_needle_prompt(tokenizer, kind: str) -> int:
    """The shortest length worth a ``kind`` prompt: its fixed text plus haystack of at least half that."""
    return -(-3 * fixed_prompt_tokens(tokenizer, kind) // 2)


def build_prompt(
    tokenizer,
    kind: str,
    target_length: int,
    depth: float,
    seed: int,
    haystack: Sequence[str] | None = None,
) -> NeedlePrompt:
    """One prompt of exactly ``target_length`` tokens (when the haystack is long enough)."""
    if kind not in ("passkey", "maritime"):
        raise ValueError(f"kind: 'passkey' or 'maritime', got {kind!r}")
    if not 0.0 <= depth <= 1.0:
        raise ValueError(f"depth: must be in [0, 1], got {depth}")
    rng = random.Random(f"{seed}-{kind}-{target_length}-{depth}")
    needle, question, answer = _needle(kind, rng)
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    intro_ids = encode(PASSKEY_INTRO if kind == "passkey" else MARITIME_INTRO)
    needle_ids, question_ids = encode(needle), encode(question)
    room = target_length - len(intro_ids) - len(needle_ids) - len(question_ids)
    if room <= 0:
        raise ValueError(f"target_length {target_length} is too short for the instruction, needle and question")
    if kind == "passkey" or not haystack:
        unit = encode(FILLER)
        filler = (unit * (room // len(unit) + 1))[:room]
    else:
        texts = list(haystack)
        rng.shuffle(texts)
        filler: list[int] = []
        for text in texts * (room // max(1, sum(len(t) for t in texts) // 4) + 2):
            filler += encode(" " + " ".join(text.split()))
            if len(filler) >= room:
                break
        filler = filler[:room]
        if answer in tokenizer.decode(filler):
            raise ValueError("the haystack already contains the answer; choose another seed")
    starts = _sentence_starts(filler, tokenizer)
    cut = min(starts, key=lambda s: abs(s - depth * len(filler)))
    ids = intro_ids + filler[:cut] + needle_ids + filler[cut:] + question_ids
    return NeedlePrompt(kind, ids, answer, target_length, depth, len(intro_ids) + cut, len(intro_ids), len(filler))


def score(generated: str, answer: str) -> bool:
    """Exact match: the continuation starts with the answer (whitespace-normalized)."""
    normalize = lambda s: " ".join(s.split())  # noqa: E731
    return normalize(generated).startswith(normalize(answer))


def default_lengths(trained_length: int, start: int = 1024) -> list[int]:
    """1K, 2K, 4K, ... up to the trained length (which is always included)."""
    lengths, n = [], start
    while n < trained_length:
        lengths.append(n)
        n *= 2
    return [*lengths, trained_length]


def default_depths(count: int = 10) -> list[float]:
    """``count`` depths from 0 to 1 inclusive."""
    return [round(i / (count - 1), 3) for i in range(count)] if count > 1 else [0.5]
