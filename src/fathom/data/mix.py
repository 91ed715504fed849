"""Length-aware mixing per phase (pure): how often each document is drawn in one pass.

Long phases need long documents (ProLong; Fu et al., "Data Engineering for Scaling Language Models
to 128K Context"), while short documents keep short-context skill. A document is *long* for a phase
when it has at least half the phase's ``max_seq_length`` tokens. Per pass over the corpus each
document is drawn ``w`` times in expectation (``floor(w)``, plus one more with probability
``w - floor(w)``, seeded), with ``w`` the weight of its class:

- ``long_doc_upsample: k``: long documents weigh ``k``, short ones 1;
- ``long_fraction: f`` (or ``short_replay_fraction: 1 - f``): weights chosen so that a share ``f``
  of the phase's tokens comes from long documents, upsampling the long ones when they are rarer
  than that, downsampling the short ones otherwise.

Worked example: 1M tokens in long documents, 9M in short ones, ``long_fraction: 0.5`` -> long
weight 9.0, short weight 1.0 (9M long tokens per pass against 9M short).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from fathom.config import PhaseConfig


@dataclass(frozen=True)
class PhaseMix:
    long_threshold: int  # documents of at least this many tokens are long in this phase
    long_weight: float
    short_weight: float
    long_documents: int
    long_tokens: int
    short_tokens: int

    @property
    def natural_long_share(self) -> float:
        return self.long_tokens / max(self.long_tokens + self.short_tokens, 1)

    @property
    def long_share(self) -> float:
        """Expected share of the phase's tokens that come from long documents."""
        long_ = self.long_tokens * self.long_weight
        return long_ / max(long_ + self.short_tokens * self.short_weight, 1e-12)

    @property
    def weighted(self) -> bool:
        return self.long_weight != 1.0 or self.short_weight != 1.0

    def to_dict(self) -> dict:
        return asdict(self) | {"natural_long_share": self.natural_long_share, "long_share": self.long_share}

    def passes(self, trained_tokens: int) -> float:
        """How many weighted passes over the corpus ``trained_tokens`` make."""
        return trained_tokens / max(self.long_tokens * self.long_weight + self.short_tokens * self.short_weight, 1)

    def most_draws(self, trained_tokens: int) -> float:
        """How many times the most-drawn document is seen in ``trained_tokens``: the passes times the
        larger weight of the classes the corpus has (an upsampled long document repeats more)."""
        weights = [
            w for w, tokens in ((self.long_weight, self.long_tokens), (self.short_weight, self.short_tokens)) if tokens
        ]
        return self.passes(trained_tokens) * max(weights, default=0.0)


def phase_mix(
    lengths: np.ndarray,
    max_seq_length: int,
    long_doc_upsample: float = 1.0,
    long_fraction: float | None = None,
) -> PhaseMix:
    """The weights of long and short documents for one phase (see the module docstring)."""
    threshold = max(1, max_seq_length // 2)
    lengths = np.asarray(lengths, dtype=np.int64)
    is_long = lengths >= threshold
    long_tokens, short_tokens = int(lengths[is_long].sum()), int(lengths[~is_long].sum())
    long_w, short_w = float(long_doc_upsample), 1.0
    if long_fraction is not None and long_tokens and short_tokens:
        natural = long_tokens / (long_tokens + short_tokens)
        if long_fraction >= natural:
            long_w = long_fraction / (1 - long_fraction) * short_tokens / long_tokens if long_fraction < 1 else 1.0
            short_w = 0.0 if long_fraction >= 1 else 1.0
        else:
            long_w, short_w = 1.0, (1 - long_fraction) / long_fraction * long_tokens / short_tokens
    return PhaseMix(threshold, long_w, short_w, int(is_long.sum()), long_tokens, short_tokens)


def mix_for(phase: PhaseConfig, lengths: np.ndarray) -> PhaseMix:
    """:func:`phase_mix` with the phase's own settings (``long_doc_upsample``, ``long_fraction``)."""
    return phase_mix(lengths, phase.max_seq_length, phase.long_doc_upsample, phase.target_long_fraction())


def document_weights(lengths: np.ndarray, mix: PhaseMix) -> np.ndarray | None:
    """Per-document expected draws per pass, or None when every document is drawn once."""
    if not mix.weighted:
        return None
    return np.where(np.asarray(lengths) >= mix.long_threshold, mix.long_weight, mix.short_weight)


def draw_counts(weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """How many times each document appears in one pass: floor(w) plus a seeded Bernoulli(frac(w))."""
    base = np.floor(weights)
    counts = base + (rng.random(len(weights)) < (weights - base))
    return counts.astype(np.int64)
