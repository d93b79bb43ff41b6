"""Suspected label noise: labels a confident production model disagrees with far more often
than its audit set says it errs.

A batch whose features look like what production knows (no significant MMD shift) and on
which production is confident is one it should get about as right as its audit set. When
far more of those confident predictions disagree with the labels, and within each predicted
class most labels still agree with production (a consistent relabelling, as when a concept
changes, is not noise), the disagreeing labels are suspected wrong: training on them, judging
the candidate on them and keeping them in the rehearsal memory would each spread the damage.
Pure arithmetic over probabilities and labels; ``measure_batch`` feeds it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from scipy.stats import binom

from retain.strategies.settings import ShiftThresholds


# How a shift report's reason about suspected label noise begins (``ShiftReport.noise_reason``).
REASON_PREFIX = "suspected label noise: "


@dataclass(frozen=True)
class LabelNoise:
    suspects: tuple[int, ...]  # batch rows whose labels are suspected wrong (empty unless ``suspected``)
    confident: int  # batch rows production is as sure of as of the surest part of its audit set
    disagreeing: int  # of those, rows whose label differs from the prediction in a class whose majority agrees
    expected_rate: float  # production's error rate on the confident audit samples (smoothed)
    p_value: float  # of seeing ``disagreeing`` or more at ``expected_rate``

    @property
    def suspected(self) -> bool:
        return bool(self.suspects)

    @property
    def observed_rate(self) -> float:
        return self.disagreeing / self.confident if self.confident else 0.0

    def reason(self) -> str:
        return (f"{REASON_PREFIX}{self.disagreeing} of {self.confident} labels production is confident "
                f"about disagree with it ({self.observed_rate:.1%}; its confident audit predictions err "
                f"{self.expected_rate:.1%}, p {self.p_value:.2g}): left out of training, the gate and the memory")


def suspect_labels(
    batch_probabilities: torch.Tensor,
    batch_labels: torch.Tensor,
    audit_probabilities: torch.Tensor,
    audit_labels: torch.Tensor,
    features_shifted: bool,
    thresholds: ShiftThresholds,
) -> LabelNoise:
    """Which of the batch's labels are suspected noise (``LabelNoise.suspects``).

    "Confident" is relative to the model: at least the ``noise_confidence_quantile`` of
    production's top probabilities on the audit set (a model trained for a few epochs may never
    reach 0.9 and still be right on nearly every sample it is surest of).
    """
    if not len(audit_labels):
        return LabelNoise((), 0, 0, 0.0, 1.0)
    audit_confidence, audit_predicted = audit_probabilities.max(1)
    threshold = float(torch.quantile(audit_confidence.double(), thresholds.noise_confidence_quantile))
    confidence, predicted = batch_probabilities.max(1)
    confident = confidence >= threshold
    sure = audit_confidence >= threshold
    audit_confident = int(sure.sum())
    audit_errors = int((audit_predicted[sure] != audit_labels[sure]).sum())
    # Smoothed (one error in two samples added): an audit set production gets all right still
    # leaves it a small error rate, not zero.
    expected = (audit_errors + 1) / (audit_confident + 2)
    disagreeing = confident & (predicted != batch_labels)
    for label in predicted[confident].unique():
        rows = confident & (predicted == label)
        if (batch_labels[rows] == label).sum() * 2 <= rows.sum():  # most of this class relabelled: a concept change
            disagreeing &= ~rows
    n, k = int(confident.sum()), int(disagreeing.sum())
    p_value = float(binom.sf(k - 1, n, expected)) if n else 1.0
    suspected = (not features_shifted and n > 0 and k / n - expected >= thresholds.noise_excess
                 and p_value < thresholds.noise_alpha)
    suspects = tuple(int(i) for i in torch.nonzero(disagreeing).flatten()) if suspected else ()
    return LabelNoise(suspects, n, k, expected, p_value)


__all__ = ["REASON_PREFIX", "LabelNoise", "suspect_labels"]
