"""Text cleaning: Unicode normalization, control characters out, whitespace folded, duplicates found.

Pure functions. ``clean_text`` keeps line structure (paragraphs matter to long documents): runs of
spaces and tabs become one space, trailing spaces go, three or more newlines become two.
Exact duplicates are found by a hash of the cleaned text; near duplicates (optional) by MinHash
with datasketch's LSH index, over word 5-gram shingles.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b\u200e\u200f\u2028\u2029\ufeff]")
_SPACES = re.compile(r"[ \t\xa0\u2000-\u200a\u202f\u205f\u3000]+")
_TRAILING = re.compile(r" +\n")
_BLANK_LINES = re.compile(r"\n{3,}")

NORMALIZATIONS = ("NFC", "NFKC", "none")


def clean_text(text: str, normalization: str = "NFC") -> str:
    """Normalized, control-free text with folded whitespace.

    >>> clean_text("Rule\\u00a05\\t\\tLook-out  \\r\\n\\n\\n\\nEvery vessel\\x07 shall")
    'Rule 5 Look-out\\n\\nEvery vessel shall'
    """
    if normalization != "none":
        text = unicodedata.normalize(normalization, text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text)
    text = _SPACES.sub(" ", text)
    text = _TRAILING.sub("\n", text)
    text = _BLANK_LINES.sub("\n\n", text)
    return text.strip()


def content_hash(text: str) -> bytes:
    """16-byte digest of the cleaned text (exact-duplicate key)."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


def minhash(text: str, num_perm: int = 128):
    """datasketch MinHash of word 5-gram shingles."""
    from datasketch import MinHash

    words = text.lower().split()
    shingles = {" ".join(words[i : i + 5]) for i in range(max(1, len(words) - 4))}
    signature = MinHash(num_perm=num_perm)
    signature.update_batch([s.encode("utf-8") for s in shingles])
    return signature


class NearDuplicateIndex:
    """Remembers the documents seen; ``seen_similar`` says whether one like this was kept before."""

    def __init__(self, threshold: float = 0.85, num_perm: int = 128) -> None:
        from datasketch import MinHashLSH

        self.lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self.count = 0

    def seen_similar(self, signature) -> bool:
        if self.lsh.query(signature):
            return True
        self.lsh.insert(str(self.count), signature)
        self.count += 1
        return False
