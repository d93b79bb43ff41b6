"""Confidence bounds on the accuracy difference of two models judged on the same samples.

Production and candidate are scored on one audit set, so their errors are paired: what the
data can say about ``production accuracy − candidate accuracy`` depends on the samples where
they disagree, not on each accuracy's own spread. The bounds are Newcombe's hybrid score
interval for a paired difference of proportions (Newcombe 1998, method 10), which keeps its
coverage at the small counts and the accuracies near 1 that audit sets have, where the
normal approximation does not. No torch here: the rule is arithmetic over four counts, and the
functions take numpy arrays as well (``benchmarks/gate_errors.py`` decides thousands of draws
at once with them).
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from retain.strategies.settings import GateConfig


def one_sided_z(confidence: float) -> float:
    """The standard normal quantile at ``confidence``."""
    return NormalDist().inv_cdf(confidence)


def _wilson(successes, n, z: float):
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def paired_bounds(both, only_first, only_second, neither, confidence: float):
    """``(lower, upper)``: one-sided bounds, each at ``confidence``, on the first model's
    accuracy minus the second's, from the counts of samples both, only the first, only the
    second and neither got right. Scalars or arrays of counts alike."""
    both, only_first, only_second, neither = (np.asarray(c, dtype=float) for c in
                                              (both, only_first, only_second, neither))
    n = both + only_first + only_second + neither
    z = one_sided_z(confidence)
    right_first, right_second = both + only_first, both + only_second
    p1, p2 = right_first / n, right_second / n
    l1, u1 = _wilson(right_first, n, z)
    l2, u2 = _wilson(right_second, n, z)
    denominator = np.sqrt(right_first * (only_second + neither) * right_second * (only_first + neither))
    phi = np.divide(both * neither - only_first * only_second, denominator,
                    out=np.zeros_like(denominator), where=denominator > 0)
    below = (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2
    above = (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2
    difference = p1 - p2
    return difference - np.sqrt(np.maximum(below, 0)), difference + np.sqrt(np.maximum(above, 0))


@dataclass(frozen=True)
class PairedCounts:
    """How production and candidate did on the same samples."""

    both: int = 0
    only_production: int = 0
    only_candidate: int = 0
    neither: int = 0

    @property
    def n(self) -> int:
        return self.both + self.only_production + self.only_candidate + self.neither

    @property
    def difference(self) -> float:
        """Production accuracy − candidate accuracy (forgetting, on an audit set)."""
        return (self.only_production - self.only_candidate) / self.n if self.n else 0.0

    @property
    def discordance(self) -> float:
        """Share of samples exactly one of the two models gets right."""
        return (self.only_production + self.only_candidate) / self.n if self.n else 0.0

    def bounds(self, confidence: float) -> tuple[float, float]:
        """One-sided ``confidence`` bounds on ``difference``; (−1, 1) with no samples."""
        if not self.n:
            return -1.0, 1.0
        lower, upper = paired_bounds(self.both, self.only_production, self.only_candidate, self.neither, confidence)
        return max(float(lower), -1.0), min(float(upper), 1.0)

    def to_dict(self) -> dict[str, int]:
        return {"both": self.both, "only_production": self.only_production,
                "only_candidate": self.only_candidate, "neither": self.neither}


# A candidate and its production disagree on at least this share of samples, however good
# production is: training moves a few borderline predictions either way.
MIN_DISCORDANCE = 0.02
_MOST_SAMPLES = 10_000_000


def samples_to_resolve(threshold: float, confidence: float, accuracy: float, discordance: float) -> int:
    """How many audit samples it takes for a candidate that forgets nothing (its disagreements
    with production split evenly) to be shown below ``threshold`` at ``confidence``, when
    production gets ``accuracy`` of them right and the two disagree on ``discordance``."""
    if threshold <= 0:
        return _MOST_SAMPLES
    discordance = min(max(discordance, MIN_DISCORDANCE), 1.0)
    accuracy = min(max(accuracy, discordance / 2), 1 - discordance / 2)

    def resolved(n: int) -> bool:
        flips = discordance * n / 2
        both = accuracy * n - flips
        return float(paired_bounds(both, flips, flips, n - both - 2 * flips, confidence)[1]) < threshold

    high = 8
    while not resolved(high):
        if high >= _MOST_SAMPLES:
            return _MOST_SAMPLES
        high *= 2
    low = high // 2
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if resolved(middle) else (middle, high)
    return high


@dataclass(frozen=True)
class AuditSizing:
    """Whether an audit set of ``samples`` can resolve the gate's limit: ``needed`` is how many
    it takes for a candidate that forgets nothing to be shown within it."""

    samples: int
    needed: int
    threshold: float  # max_forgetting + tolerance
    confidence: float

    @property
    def sufficient(self) -> bool:
        return self.samples >= self.needed

    def warning(self) -> str:
        return (f"the audit set holds {self.samples} samples, too few to show a candidate's forgetting below "
                f"gate.max_forgetting + gate.tolerance = {self.threshold:.4f} at confidence {self.confidence}: "
                f"that takes about {self.needed}; candidates that forget nothing will be judged unresolved and "
                f"weighed by the gain they bring (gate.unresolved), not shown within the limit "
                f"(raise replay.capacity × replay.audit_fraction, and label enough data to fill it)")


def audit_sizing(samples: int, accuracy: float, config: "GateConfig") -> AuditSizing:
    """How an audit set of ``samples`` on which production scores ``accuracy`` fares against
    ``config``'s everyday limit. A candidate typically disagrees with production on about as
    many samples as production gets wrong (``1 − accuracy``): that is the discordance assumed."""
    threshold = config.max_forgetting + config.tolerance
    needed = samples_to_resolve(threshold, config.confidence, accuracy, discordance=1 - accuracy)
    return AuditSizing(samples, needed, threshold, config.confidence)


__all__ = ["MIN_DISCORDANCE", "AuditSizing", "PairedCounts", "audit_sizing", "one_sided_z", "paired_bounds",
           "samples_to_resolve"]
