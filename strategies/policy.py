"""Strategy selection: a pure function of the measured shift, the history and the config."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from strategies.shift import Severity, ShiftReport

Strategy = Literal["finetune", "feature_extraction", "meta"]
STRATEGIES: tuple[Strategy, ...] = ("finetune", "feature_extraction", "meta")


@dataclass(frozen=True)
class PolicyConfig:
    """Config ``[policy]``: how much of the base learning rate each severity gets.

    Fine-tuning always runs below the base rate: the production weights are a good start
    and a full-rate update is what erases old knowledge.
    """

    lr_scale_none: float = 0.1
    lr_scale_mild: float = 0.2
    lr_scale_moderate: float = 0.5
    lr_scale_severe: float = 0.5

    def lr_scale(self, severity: Severity) -> float:
        return {
            "none": self.lr_scale_none,
            "mild": self.lr_scale_mild,
            "moderate": self.lr_scale_moderate,
            "severe": self.lr_scale_severe,
        }[severity]


@dataclass(frozen=True)
class ShiftHistoryEntry:
    """One earlier batch's measured shift, as the registry remembers it."""

    batch_id: int
    severity: Severity
    p_value: float
    novel_classes: tuple[int, ...] = ()


@dataclass(frozen=True)
class Choice:
    strategy: Strategy
    hyperparameters: dict[str, Any]
    rationale: str
    rule: str
    measurements: dict[str, Any] = field(default_factory=dict)


def _measurements(report: ShiftReport) -> dict[str, Any]:
    return {
        "severity": report.severity,
        "mmd2": round(report.mmd2, 6),
        "p_value": round(report.p_value, 6),
        "label_distance": round(report.label_distance, 4),
        "novel_classes": list(report.novel_classes),
        "accuracy_drop": round(report.accuracy_drop, 4),
        "n_batch": report.n_batch,
    }


def choose(
    report: ShiftReport,
    history: tuple[ShiftHistoryEntry, ...],
    config: PolicyConfig,
    base_lr: float,
) -> Choice:
    """Pick the adaptation for this batch.

    Only ``finetune`` is implemented so far; the learning rate grows with severity but stays
    reduced. ``feature_extraction`` and ``meta`` plug in here as further rules.
    """
    scale = config.lr_scale(report.severity)
    lr = base_lr * scale
    measured = "; ".join(report.reasons) or "no measurement crossed a threshold"
    rule = f"finetune-{report.severity}"
    rationale = (
        f"severity {report.severity} ({measured}); "
        f"finetune at {scale:g} x base lr = {lr:g} [{rule}]"
    )
    return Choice(
        strategy="finetune",
        hyperparameters={"lr": lr, "lr_scale": scale},
        rationale=rationale,
        rule=rule,
        measurements=_measurements(report) | {"earlier_batches": len(history)},
    )
