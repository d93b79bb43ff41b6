"""Step 3 on a model: the batch against the replay memory in the model's feature space."""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from retain.errors import RetainError
from retain.strategies.kinds import Phase
from retain.strategies.label_noise import suspect_labels
from retain.strategies.models import features_and_logits
from retain.strategies.phases import PhaseTimes
from retain.strategies.probe import linear_probe_accuracy
from retain.strategies.replay import ReplayMemory
from retain.strategies.shift import (
    ShiftEvidence,
    ShiftReport,
    ShiftThresholds,
    classify_severity,
    label_distance,
    measure_shift,
    mmd_permutation_test,
)


class UnusableBatch(RetainError, ValueError):
    """The batch's data cannot be measured or trained on (a property of the data, not of the
    system): the daemon rejects it rather than retrying."""


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(1) == labels).double().mean()) if len(labels) else 0.0


def measure_batch(
    model: nn.Module,
    head: str,
    memory: ReplayMemory,
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    thresholds: ShiftThresholds,
    seed: int = 0,
    phases: PhaseTimes | None = None,
) -> ShiftReport:
    """MMD on penultimate features, label distance, novel classes, the production model's
    accuracy drop (audit set vs batch) and a linear probe on frozen features.

    The probe is fitted on the batch and the replay memory together, so "the features
    separate the classes" means new classes apart from old ones too, not just each other.
    """
    phases = phases or PhaseTimes()
    with phases.timed(Phase.SHIFT):
        reference_features, _ = features_and_logits(model, head, memory.x)
        audit_x, audit_y = memory.audit_set()
        _, audit_logits = features_and_logits(model, head, audit_x)
        batch_features, batch_logits = features_and_logits(model, head, x)
        if not (torch.isfinite(batch_features).all() and torch.isfinite(batch_logits).all()):
            raise UnusableBatch(
                "the production model's features overflow on this batch (values beyond float32's range): "
                "scale the features"
            )
    with phases.timed(Phase.PROBE):
        probe = linear_probe_accuracy(
            torch.cat([batch_features, reference_features]), torch.cat([y, memory.y]), seed=seed % (2**31)
        )
    evidence = ShiftEvidence(
        reference_features=reference_features,
        reference_labels=memory.y,
        batch_features=batch_features,
        batch_labels=y,
        accuracy_reference=accuracy(audit_logits, audit_y),
        accuracy_batch=accuracy(batch_logits, y),
        num_classes=max(num_classes, int(y.max()) + 1),
        probe_accuracy=probe,
    )
    with phases.timed(Phase.SHIFT):
        report = measure_shift(evidence, thresholds, seed)
    noise = suspect_labels(batch_logits.softmax(1), y, audit_logits.softmax(1), audit_y,
                           features_shifted=report.p_value < thresholds.alpha, thresholds=thresholds)
    if not noise.suspected:
        return report
    return replace(report, suspected_labels=noise.suspects, reasons=(*report.reasons, noise.reason()))


def measure_unlabelled(
    model: nn.Module,
    head: str,
    memory: ReplayMemory,
    x: torch.Tensor,
    num_classes: int,
    thresholds: ShiftThresholds,
    seed: int = 0,
) -> ShiftReport:
    """The shift of a batch without labels: MMD on penultimate features, and in place of the
    label distance the distance between the production model's prediction histograms on the
    batch and on the replay memory (a drift in what it predicts). No novel classes and no
    accuracy drop can be seen without labels; the report's accuracies are production's on
    the audit set, on both sides."""
    reference_features, reference_logits = features_and_logits(model, head, memory.x)
    audit_x, audit_y = memory.audit_set()
    _, audit_logits = features_and_logits(model, head, audit_x)
    batch_features, batch_logits = features_and_logits(model, head, x)
    if not (torch.isfinite(batch_features).all() and torch.isfinite(batch_logits).all()):
        raise UnusableBatch("the production model's features overflow on this batch: scale the features")
    audit_accuracy = accuracy(audit_logits, audit_y)
    mmd = mmd_permutation_test(reference_features, batch_features, permutations=thresholds.permutations,
                               features=thresholds.kernel_features, max_samples=thresholds.max_samples, seed=seed)
    distance = label_distance(reference_logits.argmax(1), batch_logits.argmax(1), num_classes)
    severity, reasons = classify_severity(mmd.p_value, distance, (), 0.0, thresholds)
    return ShiftReport(mmd2=mmd.statistic, p_value=mmd.p_value, label_distance=distance, novel_classes=(),
                       accuracy_reference=audit_accuracy, accuracy_batch=audit_accuracy,
                       n_reference=len(reference_features), n_batch=len(batch_features), severity=severity,
                       reasons=reasons)
