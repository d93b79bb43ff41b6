"""The forgetting gate: evaluate candidate and production, then a pure accept/reject rule."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from retain.strategies.kinds import GateDecision
from retain.strategies.models import predict
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
    # Standard error of ``forgetting`` from the paired per-sample differences: how finely the
    # audit set can resolve the limit (one sample of 100 is already a point).
    forgetting_stderr: float = 0.0

    @property
    def forgetting(self) -> float:
        return self.acc_old_production - self.acc_old_candidate


@dataclass(frozen=True)
class Verdict:
    accepted: bool
    reasons: tuple[str, ...]
    forgetting_limit: float  # the limit this candidate was held to

    @property
    def decision(self) -> GateDecision:
        return GateDecision.ACCEPTED if self.accepted else GateDecision.REFUSED


def verdict(metrics: GateMetrics, config: GateConfig, new_classes: Sequence[int] = ()) -> Verdict:
    """Accept iff forgetting ≤ the limit and acc_new(candidate) ≥ acc_new(production) + min_gain.

    The limit is ``max_forgetting``, or ``max_forgetting_new_classes`` when the batch brings
    classes production has never seen (``new_classes``).
    """
    reasons = []
    limit = config.forgetting_limit(new_classes)
    forgetting_ok = metrics.forgetting <= limit + 1e-12
    which = f"max for new classes {list(new_classes)}" if new_classes else "max"
    audit = sum(group.n for group in metrics.groups)
    spread = f" (± {metrics.forgetting_stderr:.4f} over {audit} audit samples)" if audit else ""
    reasons.append(
        f"forgetting {metrics.forgetting:+.4f}{spread} {'<=' if forgetting_ok else '>'} {which} {limit:.4f}"
    )
    needed = metrics.acc_new_production + config.min_gain
    gain_ok = metrics.acc_new_candidate >= needed - 1e-12
    reasons.append(
        f"new-batch accuracy {metrics.acc_new_candidate:.4f} {'>=' if gain_ok else '<'} "
        f"production {metrics.acc_new_production:.4f} + min gain {config.min_gain:.4f}"
    )
    return Verdict(accepted=forgetting_ok and gain_ok, reasons=tuple(reasons), forgetting_limit=limit)


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
    differences = []  # production right − candidate right, per audit sample
    for source, (x, y) in audit_groups.items():
        sizes[source] = len(y)
        right = {}
        for name, model in (("production", production), ("candidate", candidate)):
            predicted = predict(model, x)
            right[name] = (predicted == y).double()
            group = Accuracy()
            group.update(predicted, y)
            old[name].update(predicted, y)
            per_group.setdefault(source, {})[name] = group.result()
            forgetting.update(source, group.result(), initial=name == "production")
        differences.append(right["production"] - right["candidate"])
    paired = torch.cat(differences) if differences else torch.empty(0)
    stderr = float(paired.std() / len(paired) ** 0.5) if len(paired) > 1 else 0.0

    new = {}
    for name, model in (("production", production), ("candidate", candidate)):
        metric = Accuracy()
        metric.update(predict(model, holdout[0]), holdout[1])
        new[name] = metric.result()

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
    )
