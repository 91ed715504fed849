"""Intervals for accuracies: how far a score measured on n questions can be from the model's true rate.

Wilson's score interval (not the normal one, which goes below 0 and above 1 near 0% and 100%, where
small models often sit) for one model; a paired bootstrap for the difference of two models asked
the same questions, which is much tighter than comparing their two intervals.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Z_95 = 1.959963984540054


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """The 95% Wilson score interval of a rate ``successes / n``; (0, 1) when n is 0.

    >>> [round(x, 3) for x in wilson_interval(30, 100)]
    [0.219, 0.396]
    >>> wilson_interval(0, 0)
    (0.0, 1.0)
    """
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    low = 0.0 if successes <= 0 else max(0.0, centre - half)  # exact ends: no rounding residue at 0% or 100%
    return low, 1.0 if successes >= n else min(1.0, centre + half)


def paired_difference(a: Sequence[bool], b: Sequence[bool], samples: int = 10_000, seed: int = 0) -> dict:
    """Mean of ``a`` minus mean of ``b`` over the same questions, with a 95% paired-bootstrap interval.

    >>> d = paired_difference([True] * 60 + [False] * 40, [True] * 20 + [False] * 80)
    >>> round(d["difference"], 2), d["low"] > 0.25
    (0.4, True)
    """
    if len(a) != len(b):
        raise ValueError(f"paired_difference: {len(a)} and {len(b)} answers; ask both the same questions")
    if not a:
        return {"difference": 0.0, "low": -1.0, "high": 1.0, "n": 0}
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(samples, len(diff)))].mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    return {"difference": float(diff.mean()), "low": float(low), "high": float(high), "n": len(diff)}
