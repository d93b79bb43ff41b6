"""The forgetting gate: evaluate candidate and production, then a pure accept/reject rule."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.special import ndtr
from torch import nn

from retain.strategies.kinds import AuditFinding, GateDecision, WhenUnresolved
from retain.strategies.models import predict
from retain.strategies.paired import PairedCounts, samples_to_resolve
from retain.strategies.settings import GateConfig
from retain.strategies.training import quiet_avalanche


@dataclass(frozen=True)
class GroupAccuracy:
    source: int
    n: int
    production: float
    candidate: float
    forgetting: float  # production − candidate on this source batch's audit samples
    paired: PairedCounts = PairedCounts()  # which of the two got each of its samples right


@dataclass(frozen=True)
class GateMetrics:
    acc_old_production: float
    acc_old_candidate: float
    acc_new_production: float
    acc_new_candidate: float
    groups: tuple[GroupAccuracy, ...] = field(default=())
    # Standard error of ``forgetting`` from the paired per-sample differences (shown beside
    # the bounds; the verdict decides on ``audit``'s counts).
    forgetting_stderr: float = 0.0
    audit: PairedCounts = PairedCounts()  # per audit sample: which of the two got it right
    holdout: PairedCounts = PairedCounts()  # the same on the new batch's held-out slice

    @property
    def forgetting(self) -> float:
        return self.acc_old_production - self.acc_old_candidate


@dataclass(frozen=True)
class Verdict:
    accepted: bool
    reasons: tuple[str, ...]
    forgetting_limit: float  # the limit this candidate was held to
    finding: AuditFinding = AuditFinding.UNRESOLVED
    forgetting_bounds: tuple[float, float] = (-1.0, 1.0)  # one-sided, each at the gate's confidence
    audit_samples: int = 0
    samples_to_resolve: int = 0  # audit samples the limit takes at this candidate's discordance
    better_probability: float = 0.5  # that the candidate is the better model on the mix it will serve
    groups_above: tuple[int, ...] = ()  # source batches whose own audit samples show forgetting above the limit

    @property
    def decision(self) -> GateDecision:
        return GateDecision.ACCEPTED if self.accepted else GateDecision.REFUSED


def audit_finding(lower, upper, limit: float, tolerance: float):
    """ABOVE when the lower bound exceeds ``limit``, WITHIN when the upper bound is below
    ``limit + tolerance``, UNRESOLVED otherwise; bounds may be arrays (then so is the answer)."""
    found = np.where(np.asarray(lower) > limit + 1e-12, AuditFinding.ABOVE.value,
                     np.where(np.asarray(upper) < limit + tolerance, AuditFinding.WITHIN.value,
                              AuditFinding.UNRESOLVED.value))
    return AuditFinding(str(found)) if found.ndim == 0 else found


def better_probability(audit: PairedCounts, holdout: PairedCounts, new_data_weight: float,
                       min_gain: float = 0.0) -> float:
    """The probability that the candidate is the better model on a mix of old and new data
    (new data weighted ``new_data_weight``): its gain on the held-out slice, less ``min_gain``,
    against its forgetting on the audit set (``mix_probability`` on the two sets' counts)."""
    return float(mix_probability(
        (audit.both, audit.only_production, audit.only_candidate, audit.neither),
        (holdout.both, holdout.only_candidate, holdout.only_production, holdout.neither),
        new_data_weight, min_gain))


def mix_probability(audit, holdout, new_data_weight: float, min_gain: float = 0.0):
    """``better_probability`` from count tuples (both, only the first, only the second, neither):
    ``audit`` with production first, ``holdout`` with the candidate first; scalars or arrays.

    Each side is a paired difference with its own uncertainty (normal approximation; half a
    disagreement is added on either side, so that a few samples on which the two agree
    everywhere still leave doubt); a side with no samples says nothing (variance 1).
    """

    def mean_and_variance(counts):
        both, first, second, neither = (np.asarray(c, dtype=float) for c in counts)
        n = both + first + second + neither
        safe = np.maximum(n, 1)
        difference = (first - second) / safe
        variance = np.maximum((first + second + 1) / safe - difference**2, 1 / safe) / safe
        return np.where(n > 0, difference, 0.0), np.where(n > 0, variance, 1.0)

    gain, gain_variance = mean_and_variance(holdout)
    forgetting, forgetting_variance = mean_and_variance(audit)
    w = new_data_weight
    benefit = w * (gain - min_gain) - (1 - w) * forgetting
    return ndtr(benefit / np.sqrt(w * w * gain_variance + (1 - w) ** 2 * forgetting_variance))


def groups_above(groups: Sequence[GroupAccuracy], limit: float, confidence: float) -> tuple[int, ...]:
    """Source batches whose own audit samples show forgetting above ``limit``: each group's lower
    bound at ``1 − (1 − confidence) / groups`` (Bonferroni: all groups together are wrong no more
    often than the pooled finding). One group is the pooled finding itself."""
    if len(groups) < 2:
        return ()
    corrected = 1 - (1 - confidence) / len(groups)
    return tuple(g.source for g in groups if g.paired.n and g.paired.bounds(corrected)[0] > limit + 1e-12)


def rule_text(config: GateConfig) -> str:
    """The gate's rule in words, as ``show`` states it."""
    unresolved = {
        WhenUnresolved.WEIGH: f"accepted when the candidate is better on the mix with probability >= "
                              f"{config.confidence:.0%}",
        WhenUnresolved.REFUSE: "refused",
        WhenUnresolved.ACCEPT_IF_GAIN_SIGNIFICANT: "accepted only with a significant gain on the new batch",
    }[config.unresolved]
    return (f"accepted when the audit set shows forgetting within the limit + tolerance at {config.confidence:.0%}, "
            f"no audit batch shows its own above the limit, and the candidate is better on a mix of old and new "
            f"data ({config.new_data_weight:.0%} new) with probability >= {config.better_probability:.0%}; "
            f"forgetting the audit set cannot resolve is {unresolved} (gate.unresolved = {config.unresolved})")


def verdict(metrics: GateMetrics, config: GateConfig, new_classes: Sequence[int] = ()) -> Verdict:
    """Accept iff the audit set shows forgetting within the limit (``audit_finding``), no source
    batch's share of it shows forgetting above the limit (``groups_above``), and the candidate
    is better on the mix of old and new data it will serve with at least
    ``gate.better_probability`` (``better_probability``). An unresolved finding is weighed (the
    candidate better on the mix with probability ``gate.confidence``), refused, or accepted when
    the new-data gain is significant (``gate.unresolved``).

    The limit is ``max_forgetting``, or ``max_forgetting_new_classes`` when the batch brings
    classes production has never seen (``new_classes``).
    """
    confidence = config.confidence
    limit = config.forgetting_limit(new_classes)
    lower, upper = metrics.audit.bounds(confidence)
    finding = audit_finding(lower, upper, limit, config.tolerance)
    needed = samples_to_resolve(limit + config.tolerance, confidence, metrics.acc_old_production,
                                metrics.audit.discordance)
    which = f"max for new classes {list(new_classes)}" if new_classes else "max"
    measured = (f"forgetting {metrics.forgetting:+.4f} on {metrics.audit.n} audit samples, "
                f"{confidence:.0%} bounds [{lower:+.4f}, {upper:+.4f}]")
    if finding is AuditFinding.ABOVE:
        reasons = [f"{measured}: above {which} {limit:.4f}"]
    elif finding is AuditFinding.WITHIN:
        reasons = [f"{measured}: within {which} {limit:.4f} + tolerance {config.tolerance:.4f}"]
    else:
        reasons = [f"{measured}: cannot resolve {which} {limit:.4f} + tolerance {config.tolerance:.4f} "
                   f"at this size (about {needed} audit samples would)"]

    above = groups_above(metrics.groups, limit, confidence)
    if above:
        shown = ", ".join(f"batch {g.source} {g.forgetting:+.3f} on {g.n}" for g in metrics.groups
                          if g.source in above)
        reasons.append(f"forgetting on its own audit samples above {which} {limit:.4f} "
                       f"(each of {len(metrics.groups)} batches at {1 - (1 - confidence) / len(metrics.groups):.1%}): "
                       f"{shown}")
    elif len(metrics.groups) > 1:
        reasons.append(f"no audit batch of {len(metrics.groups)} shows forgetting above {which} {limit:.4f} on its own")

    probability = better_probability(metrics.audit, metrics.holdout, config.new_data_weight, config.min_gain)
    better = probability >= config.better_probability
    gain_lower = -metrics.holdout.bounds(confidence)[1]
    gain_significant = gain_lower > config.min_gain
    reasons.append(
        f"new-batch accuracy {metrics.acc_new_candidate:.4f} against production {metrics.acc_new_production:.4f} "
        f"over {metrics.holdout.n} held-out samples ({confidence:.0%} lower bound on the gain {gain_lower:+.4f}, "
        f"min gain {config.min_gain:.4f}): better on the mix ({config.new_data_weight:.0%} new data) with "
        f"probability {probability:.2f} {'>=' if better else '<'} {config.better_probability:.2f}"
    )
    accepted = better and finding is AuditFinding.WITHIN and not above
    if finding is AuditFinding.UNRESOLVED:
        if config.unresolved is WhenUnresolved.WEIGH:
            accepted = probability >= config.confidence and not above
            reasons.append(f"unresolved forgetting weighed against the gain (gate.unresolved = {config.unresolved}): "
                           f"better on the mix with probability {probability:.2f} "
                           f"{'>=' if accepted else '<'} {config.confidence:.2f}")
        elif config.unresolved is WhenUnresolved.ACCEPT_IF_GAIN_SIGNIFICANT:
            accepted = gain_significant and not above
            reasons.append(f"unresolved forgetting accepted only with a significant gain "
                           f"(gate.unresolved = {config.unresolved}): the gain is "
                           f"{'significant' if gain_significant else 'not significant'}")
        else:
            reasons.append(f"unresolved forgetting is refused (gate.unresolved = {config.unresolved})")
    reasons.append(f"rule: {rule_text(config)}")
    return Verdict(accepted=accepted, reasons=tuple(reasons), forgetting_limit=limit, finding=finding,
                   forgetting_bounds=(lower, upper), audit_samples=metrics.audit.n, samples_to_resolve=needed,
                   better_probability=probability, groups_above=above)


def paired_counts(production_right: torch.Tensor, candidate_right: torch.Tensor) -> PairedCounts:
    """The four counts of which model got each sample right (boolean tensors, one per sample)."""
    p, c = production_right.bool(), candidate_right.bool()
    return PairedCounts(both=int((p & c).sum()), only_production=int((p & ~c).sum()),
                        only_candidate=int((~p & c).sum()), neither=int((~p & ~c).sum()))


def evaluate_gate(
    production: nn.Module,
    candidate: nn.Module,
    audit_groups: dict[int, tuple[torch.Tensor, torch.Tensor]],
    holdout: tuple[torch.Tensor, torch.Tensor],
) -> GateMetrics:
    """Accuracy of both models on the audit set (per source batch) and the held-out slice.

    Accuracy and forgetting come from Avalanche's standalone metrics: ``Accuracy`` per model
    and group, ``Forgetting`` keyed by source batch with production as the initial value.
    """
    with quiet_avalanche():
        from retain.strategies.avalanche_api import Accuracy, Forgetting

    old = {"production": Accuracy(), "candidate": Accuracy()}
    per_group: dict[int, dict[str, float]] = {}
    sizes: dict[int, int] = {}
    forgetting = Forgetting()
    rights: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # per group: (production right, candidate right)
    for source, (x, y) in audit_groups.items():
        sizes[source] = len(y)
        right = {}
        for name, model in (("production", production), ("candidate", candidate)):
            predicted = predict(model, x)
            right[name] = predicted == y
            group = Accuracy()
            group.update(predicted, y)
            old[name].update(predicted, y)
            per_group.setdefault(source, {})[name] = group.result()
            forgetting.update(source, group.result(), initial=name == "production")
        rights[source] = (right["production"], right["candidate"])
    production_right = torch.cat([p for p, _ in rights.values()]) if rights else torch.empty(0, dtype=torch.bool)
    candidate_right = torch.cat([c for _, c in rights.values()]) if rights else torch.empty(0, dtype=torch.bool)
    paired = production_right.double() - candidate_right.double()
    stderr = float(paired.std() / len(paired) ** 0.5) if len(paired) > 1 else 0.0

    new, new_right = {}, {}
    for name, model in (("production", production), ("candidate", candidate)):
        metric = Accuracy()
        predicted = predict(model, holdout[0])
        metric.update(predicted, holdout[1])
        new[name] = metric.result()
        new_right[name] = predicted == holdout[1]

    groups = tuple(
        GroupAccuracy(
            source=source,
            n=sizes[source],
            production=per_group[source]["production"],
            candidate=per_group[source]["candidate"],
            forgetting=forgetting.result_key(source),
            paired=paired_counts(*rights[source]),
        )
        for source in sorted(per_group)
    )
    return GateMetrics(
        acc_old_production=old["production"].result(),
        acc_old_candidate=old["candidate"].result(),
        acc_new_production=new["production"],
        acc_new_candidate=new["candidate"],
        groups=groups,
        forgetting_stderr=stderr,
        audit=paired_counts(production_right, candidate_right),
        holdout=paired_counts(new_right["production"], new_right["candidate"]),
    )

