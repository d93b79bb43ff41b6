"""The forgetting gate: evaluate candidate and production, then a pure accept/reject rule."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
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


def verdict(metrics: GateMetrics, config: GateConfig, new_classes: Sequence[int] = ()) -> Verdict:
    """Accept iff the audit set shows forgetting within the limit (``audit_finding``) and
    acc_new(candidate) ≥ acc_new(production) + min_gain; an unresolved finding is refused, or
    accepted when the new-data gain is significant (``gate.unresolved``).

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

    needed_accuracy = metrics.acc_new_production + config.min_gain
    gain_ok = metrics.acc_new_candidate >= needed_accuracy - 1e-12
    gain_lower = -metrics.holdout.bounds(confidence)[1]
    gain_significant = gain_ok and gain_lower > config.min_gain
    reasons.append(
        f"new-batch accuracy {metrics.acc_new_candidate:.4f} {'>=' if gain_ok else '<'} "
        f"production {metrics.acc_new_production:.4f} + min gain {config.min_gain:.4f} "
        f"({confidence:.0%} lower bound on the gain {gain_lower:+.4f} over {metrics.holdout.n} held-out samples)"
    )
    accepted = gain_ok and finding is AuditFinding.WITHIN
    if finding is AuditFinding.UNRESOLVED:
        if config.unresolved is WhenUnresolved.ACCEPT_IF_GAIN_SIGNIFICANT:
            accepted = gain_significant
            reasons.append(f"unresolved forgetting accepted only with a significant gain "
                           f"(gate.unresolved = {config.unresolved}): the gain is "
                           f"{'significant' if gain_significant else 'not significant'}")
        else:
            reasons.append(f"unresolved forgetting is refused (gate.unresolved = {config.unresolved})")
    return Verdict(accepted=accepted, reasons=tuple(reasons), forgetting_limit=limit, finding=finding,
                   forgetting_bounds=(lower, upper), audit_samples=metrics.audit.n, samples_to_resolve=needed)


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
    rights = []  # (production right, candidate right) per audit sample, group by group
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
        rights.append((right["production"], right["candidate"]))
    production_right = torch.cat([p for p, _ in rights]) if rights else torch.empty(0, dtype=torch.bool)
    candidate_right = torch.cat([c for _, c in rights]) if rights else torch.empty(0, dtype=torch.bool)
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

