"""Distribution-shift measurement: pure functions over arrays, no files, no models.

The pipeline hands in penultimate-layer features of the production model for the replay
reference and for the new batch, the label vectors and two accuracies; this module turns them
into a ``ShiftReport`` with a severity.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from retain.strategies.kinds import SEVERITIES, Severity
from retain.strategies.label_noise import REASON_PREFIX
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
    probe_accuracy: float | None = None  # a linear probe on the frozen features (strategies.probe)


@dataclass(frozen=True)
class MMDResult:
    statistic: float  # MMD² of the random-Fourier-feature kernel (the squared distance of the mean features)
    p_value: float
    bandwidth: float  # h of the Gaussian kernel exp(-|a - b|² / h): the median pairwise squared distance
    n_x: int  # samples tested per side, after any max_samples cap
    n_y: int
    features: int  # random Fourier features


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
    # Batch rows whose labels a confident production model disagrees with far more often than
    # its audit set predicts (strategies/label_noise.py): left out of training, gate and memory.
    suspected_labels: tuple[int, ...] = field(default=())

    @property
    def accuracy_drop(self) -> float:
        return self.accuracy_reference - self.accuracy_batch

    @property
    def noise_reason(self) -> str | None:
        """The reason that says why labels were suspected noise, if any were."""
        return next((r for r in self.reasons if r.startswith(REASON_PREFIX)), None)

    @property
    def significant(self) -> bool:
        return self.severity != Severity.NONE


def _subsample(x: torch.Tensor, n: int | None, generator: torch.Generator) -> torch.Tensor:
    if n is None or len(x) <= n:
        return x
    return x[torch.randperm(len(x), generator=generator)[:n]]


# Rows whose Fourier features are held at once: bounds the test's memory at
# ``_ROW_CHUNK * features`` floats, whatever the sample sizes.
_ROW_CHUNK = 8192
# Samples the median heuristic looks at: the median of their 125,000 pairwise distances is
# within a fraction of a percent of the full sample's, closer than the bandwidth needs to be.
_BANDWIDTH_SAMPLES = 500
# Permutations move blocks of samples, about this many blocks in all (one sample per block
# below it): on the benchmark's shifts 128 blocks detect as often as 2,000 single samples
# (at 1,000 and at 20,000 a side), and the permutations' cost no longer grows with the sample.
_MAX_BLOCKS = 128
# ... and never fewer than this many blocks on the smaller side, so a small reference
# against a large batch still has enough ways to be rearranged.
_MIN_BLOCKS_PER_SIDE = 64


def median_bandwidth(z: torch.Tensor) -> float:
    """The median pairwise squared distance of the samples (their mean where the median is 0)."""
    sq_dists = torch.pdist(z.float()).square()
    bandwidth = float(sq_dists.median()) if sq_dists.numel() else 1.0
    if bandwidth <= 0.0:
        bandwidth = float(sq_dists.mean()) if sq_dists.numel() else 1.0
    return bandwidth or 1.0


def gaussian_frequencies(dim: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` frequency vectors (columns) with N(0, I) marginals, orthogonal in blocks of
    ``dim``: orthogonal random features approximate the kernel with less variance than
    independent ones (Yu et al., 2016) at the same cost."""
    blocks = []
    for _ in range(-(-count // dim)):
        q, r = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=torch.float64))
        q = q * torch.sign(torch.diagonal(r))  # Haar-distributed, not QR's biased signs
        lengths = torch.randn(dim, dim, generator=generator, dtype=torch.float64).norm(dim=0)
        blocks.append(q * lengths)
    return torch.cat(blocks, dim=1)[:, :count]


# The features of the pooled sample stay within this many values (N·D), between 256 and
# 2048 features: the kernel's approximation costs power where samples are few (at 1,000
# a side, 256 features detect a 0.2 mean shift in 56 % of trials, 2048 in 61 %, the exact
# kernel in 62 %), and where they are many the sample carries the power and the features
# the cost.
_FEATURE_BUDGET = 1 << 22
_FEATURES_RANGE = (256, 2048)


def kernel_features_for(total: int) -> int:
    """Random features for a pooled sample of ``total``: a power of two in ``_FEATURES_RANGE``."""
    low, high = _FEATURES_RANGE
    fitting = _FEATURE_BUDGET // max(total, 1)
    return max(low, min(high, 1 << max(fitting, 1).bit_length() - 1))


def block_size(n: int, m: int) -> int:
    """Samples per permuted block for sides of ``n`` and ``m``."""
    size = -(-(n + m) // _MAX_BLOCKS)
    return max(1, min(size, min(n, m) // _MIN_BLOCKS_PER_SIDE))


def mmd_permutation_test(
    x: torch.Tensor,
    y: torch.Tensor,
    permutations: int = 200,
    features: int | None = None,
    max_samples: int | None = None,
    seed: int = 0,
) -> MMDResult:
    """Kernel two-sample test on every sample, in time linear in the sample sizes.

    The Gaussian kernel ``exp(-|a - b|² / h)`` (``h`` by the median heuristic on the pooled
    sample) is approximated by ``features`` random Fourier features φ (``None``: by the
    sample size, ``kernel_features_for``), so MMD² is the squared
    distance between the two sides' mean φ, and a permuted statistic needs only sums of φ.
    Each side is shuffled and cut into equal blocks (one sample each up to a few thousand
    samples); a permutation reassigns whole blocks, which under no shift are exchangeable,
    so the p-value is exact for the approximated kernel however few the features or blocks.
    ``max_samples`` caps each side by random subsampling (``None``: all samples).
    """
    if len(x) < 2 or len(y) < 2:
        raise ValueError("MMD test needs at least two samples on each side")
    if features is not None and (features < 2 or features % 2):
        raise ValueError(f"the MMD test needs an even number of random features, not {features}")
    generator = torch.Generator().manual_seed(seed)
    x = _subsample(x.flatten(1), max_samples, generator)
    y = _subsample(y.flatten(1), max_samples, generator)
    n, m = len(x), len(y)
    features = features or kernel_features_for(n + m)
    # From a random subset of the pooled sample, blind to which side a sample came from: a
    # bandwidth that depended on the sides would break the permutations' exchangeability.
    picked = torch.randperm(n + m, generator=generator)[:_BANDWIDTH_SAMPLES]
    bandwidth = median_bandwidth(torch.cat([x[picked[picked < n]], y[picked[picked >= n] - n]]))
    # exp(-|δ|²/h) is the characteristic function of N(0, 2/h · I) at δ.
    frequencies = (gaussian_frequencies(x.shape[1], features // 2, generator) * (2.0 / bandwidth) ** 0.5).float()

    size = block_size(n, m)
    x_blocks, y_blocks = n // size, m // size
    x_sums, x_rest = _block_sums(x, x_blocks, size, frequencies, generator)
    y_sums, y_rest = _block_sums(y, y_blocks, size, frequencies, generator)
    # Centred on the pooled mean, the sums keep their precision through a float32 product.
    mean_phi = (x_sums.sum(0) + x_rest + y_sums.sum(0) + y_rest) / (n + m)
    blocks = (torch.cat([x_sums, y_sums]) - size * mean_phi).float()
    x_rest = x_rest - (n - x_blocks * size) * mean_phi
    # Row 0 is the observed assignment (the x blocks first); each further row a random one.
    # The samples left over from whole blocks stay on their side in every row.
    on_x_side = torch.zeros(permutations + 1, len(blocks))
    on_x_side[0, :x_blocks] = 1.0
    chosen = torch.stack([torch.randperm(len(blocks), generator=generator)[:x_blocks] for _ in range(permutations)])
    on_x_side[1:].scatter_(1, chosen, 1.0)
    # With T the pooled sum, x/n - (T - x)/m = (x - n·mean)(1/n + 1/m).
    x_excess = (on_x_side @ blocks).double() + x_rest
    statistics = (x_excess * (1.0 / n + 1.0 / m)).square().sum(1)
    observed = float(statistics[0])
    # A relative tolerance: the observed and a permuted statistic that are equal in exact
    # arithmetic must count as exceeding, whatever float rounding did to either.
    exceed = int((statistics[1:] >= observed * (1 - 1e-9) - 1e-15).sum())
    return MMDResult(statistic=observed, p_value=(exceed + 1) / (permutations + 1), bandwidth=bandwidth,
                     n_x=n, n_y=m, features=features)


def _block_sums(
    side: torch.Tensor, blocks: int, size: int, frequencies: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sums of φ over ``blocks`` random disjoint blocks of ``size`` samples of one side, and
    over the samples left over; a chunk of rows at a time."""
    order = torch.randperm(len(side), generator=generator)
    count = frequencies.shape[1]
    # float32 is exact enough within a block (a few hundred samples at most); the sums over
    # blocks are taken in float64 by the caller.
    cos_sums = torch.zeros(blocks + 1, count)  # the last row: leftovers
    sin_sums = torch.zeros(blocks + 1, count)
    block_of = torch.clamp(torch.arange(len(side)) // size, max=blocks)
    for start in range(0, len(side), _ROW_CHUNK):
        stop = min(start + _ROW_CHUNK, len(side))
        projected = side[order[start:stop]].float() @ frequencies
        cos_sums.index_add_(0, block_of[start:stop], projected.cos())
        sin_sums.index_add_(0, block_of[start:stop], projected.sin_())
    sums = torch.cat([cos_sums, sin_sums], dim=1).double() * (1.0 / count) ** 0.5
    return sums[:blocks], sums[blocks]


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


def measure_shift(
    evidence: ShiftEvidence, thresholds: ShiftThresholds = ShiftThresholds(), seed: int = 0
) -> ShiftReport:
    """Measure how far a batch has moved from the reference, and how badly."""
    e = evidence
    mmd = mmd_permutation_test(
        e.reference_features, e.batch_features, permutations=thresholds.permutations,
        features=thresholds.kernel_features, max_samples=thresholds.max_samples, seed=seed,
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
