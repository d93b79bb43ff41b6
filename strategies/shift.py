"""Distribution-shift measurement: pure functions over arrays, no files, no models.

The pipeline hands in penultimate-layer features of the production model for the replay
reference and for the new batch, the label vectors and two accuracies; this module turns them
into a ``ShiftReport`` with a severity.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from retain.strategies.kinds import SEVERITIES, Severity
from retain.strategies.settings import ShiftThresholds


@dataclass(frozen=True)
class ShiftEvidence:
    """What the production model makes of the reference (the replay memory) and of the batch:
    penultimate features, labels and accuracies."""

    reference_features: torch.Tensor
    reference_labels: torch.Tensor
    batch_features: torch.Tensor
    batch_labels: torch.Tensor
    accuracy_reference: float  # on the replay audit set
    accuracy_batch: float
    num_classes: int
    probe_accuracy: float | None = None  # a linear probe on the frozen features (linear_probe_accuracy)


@dataclass(frozen=True)
class MMDResult:
    statistic: float  # biased MMD² estimate with a Gaussian kernel
    p_value: float
    bandwidth: float


@dataclass(frozen=True)
class ShiftReport:
    """Everything measured about one batch against what the production model knows."""

    mmd2: float
    p_value: float
    label_distance: float  # total variation between label histograms, 0–1
    novel_classes: tuple[int, ...]
    accuracy_reference: float  # production accuracy on the replay audit set
    accuracy_batch: float  # production accuracy on the new batch
    n_reference: int
    n_batch: int
    severity: Severity
    reasons: tuple[str, ...] = field(default=())
    # Held-out accuracy of a linear probe on the production features of the new batch: how
    # well the frozen features separate its classes (None when too small to measure).
    probe_accuracy: float | None = None

    @property
    def accuracy_drop(self) -> float:
        return self.accuracy_reference - self.accuracy_batch

    @property
    def significant(self) -> bool:
        return self.severity != Severity.NONE


def _subsample(x: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    if len(x) <= n:
        return x
    return x[torch.randperm(len(x), generator=generator)[:n]]


def mmd_permutation_test(
    x: torch.Tensor,
    y: torch.Tensor,
    permutations: int = 200,
    max_samples: int = 500,
    seed: int = 0,
) -> MMDResult:
    """Kernel two-sample test: biased MMD² with a median-heuristic Gaussian kernel.

    Every permutation's statistic is the quadratic form ``aᵀKa`` of one fixed kernel matrix
    with a signed weight vector ``a`` (1/n for one side, −1/m for the other), so all
    permutations are evaluated together as one matrix product instead of P kernel rebuilds.
    """
    if len(x) < 2 or len(y) < 2:
        raise ValueError("MMD test needs at least two samples on each side")
    generator = torch.Generator().manual_seed(seed)
    x = _subsample(x.double().flatten(1), max_samples, generator)
    y = _subsample(y.double().flatten(1), max_samples, generator)
    z = torch.cat([x, y])
    n, m = len(x), len(y)
    sq_dists = torch.cdist(z, z).square()
    off_diagonal = sq_dists[~torch.eye(n + m, dtype=torch.bool)]
    bandwidth = float(off_diagonal.median()) if off_diagonal.numel() else 1.0
    if bandwidth <= 0.0:
        bandwidth = float(off_diagonal.mean()) or 1.0
    kernel = torch.exp(-sq_dists / bandwidth)

    signs = torch.cat([torch.full((n,), 1.0 / n), torch.full((m,), -1.0 / m)]).double()
    observed = float(signs @ kernel @ signs)
    order = torch.argsort(torch.rand(permutations, n + m, generator=generator), dim=1)
    weights = signs[order].T  # (n+m, P): one permuted sign vector per column
    permuted = (weights * (kernel @ weights)).sum(0)
    exceed = int((permuted >= observed - 1e-12).sum())
    return MMDResult(statistic=observed, p_value=(exceed + 1) / (permutations + 1), bandwidth=bandwidth)


def label_distance(reference: torch.Tensor, batch: torch.Tensor, num_classes: int) -> float:
    """Total-variation distance between two label histograms (0 = same, 1 = disjoint)."""
    ref = torch.bincount(reference.long(), minlength=num_classes).double()
    new = torch.bincount(batch.long(), minlength=num_classes).double()
    width = max(len(ref), len(new))
    ref = torch.nn.functional.pad(ref, (0, width - len(ref))) / max(ref.sum(), 1.0)
    new = torch.nn.functional.pad(new, (0, width - len(new))) / max(new.sum(), 1.0)
    return float(0.5 * (ref - new).abs().sum())


def novel_classes(known: torch.Tensor, batch: torch.Tensor) -> tuple[int, ...]:
    """Labels in the batch that the reference never had."""
    return tuple(sorted(set(batch.long().tolist()) - set(known.long().tolist())))


def classify_severity(
    p_value: float,
    distance: float,
    novel: tuple[int, ...],
    accuracy_drop: float,
    thresholds: ShiftThresholds,
) -> tuple[Severity, tuple[str, ...]]:
    """Combine the measurements into a severity and the rules that fired."""
    reasons: list[str] = []
    level = 0

    def raise_to(new_level: int, reason: str) -> None:
        nonlocal level
        level = max(level, new_level)
        reasons.append(reason)

    if novel:
        raise_to(3, f"novel classes {list(novel)}")
    if accuracy_drop >= thresholds.severe_accuracy_drop:
        raise_to(3, f"accuracy drop {accuracy_drop:.3f} >= {thresholds.severe_accuracy_drop}")
    elif accuracy_drop >= thresholds.moderate_accuracy_drop:
        raise_to(2, f"accuracy drop {accuracy_drop:.3f} >= {thresholds.moderate_accuracy_drop}")
    elif accuracy_drop >= thresholds.mild_accuracy_drop:
        raise_to(1, f"accuracy drop {accuracy_drop:.3f} >= {thresholds.mild_accuracy_drop}")
    if distance >= thresholds.moderate_label_distance:
        raise_to(2, f"label distance {distance:.3f} >= {thresholds.moderate_label_distance}")
    elif distance >= thresholds.mild_label_distance:
        raise_to(1, f"label distance {distance:.3f} >= {thresholds.mild_label_distance}")
    if p_value < thresholds.alpha:
        raise_to(1, f"feature MMD p-value {p_value:.4f} < {thresholds.alpha}")
    return SEVERITIES[level], tuple(reasons)


def linear_probe_accuracy(features: torch.Tensor, labels: torch.Tensor, seed: int = 0) -> float | None:
    """Held-out accuracy of a logistic regression on frozen features (70/30 split).

    ``None`` when there are too few samples or a single class: nothing to separate.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    x = features.double().flatten(1).numpy()
    y = labels.long().numpy()
    counts = torch.bincount(labels.long())
    if len(y) < 20 or int((counts > 0).sum()) < 2 or int(counts[counts > 0].min()) < 2:
        return None
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.3, random_state=seed, stratify=y)
    scaler = StandardScaler().fit(x_train)
    probe = LogisticRegression(max_iter=500).fit(scaler.transform(x_train), y_train)
    return float(probe.score(scaler.transform(x_test), y_test))


def measure_shift(
    evidence: ShiftEvidence, thresholds: ShiftThresholds = ShiftThresholds(), seed: int = 0
) -> ShiftReport:
    """Measure how far a batch has moved from the reference, and how badly."""
    e = evidence
    mmd = mmd_permutation_test(
        e.reference_features, e.batch_features, permutations=thresholds.permutations,
        max_samples=thresholds.max_samples, seed=seed,
    )
    distance = label_distance(e.reference_labels, e.batch_labels, e.num_classes)
    novel = novel_classes(e.reference_labels, e.batch_labels)
    severity, reasons = classify_severity(
        mmd.p_value, distance, novel, e.accuracy_reference - e.accuracy_batch, thresholds
    )
    return ShiftReport(
        mmd2=mmd.statistic,
        p_value=mmd.p_value,
        label_distance=distance,
        novel_classes=novel,
        accuracy_reference=e.accuracy_reference,
        accuracy_batch=e.accuracy_batch,
        n_reference=len(e.reference_features),
        n_batch=len(e.batch_features),
        severity=severity,
        reasons=reasons,
        probe_accuracy=e.probe_accuracy,
    )
