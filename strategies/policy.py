"""Strategy selection: a pure function of the measured shift, the history and the config."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from retain.strategies.kinds import Severity, Strategy
from retain.strategies.settings import PolicyConfig
from retain.strategies.shift import ShiftReport

# "Significant" is the statistical sense: any severity above none means at least one
# measurement (the MMD test, label distance, accuracy drop) crossed its threshold.
SIGNIFICANT: tuple[Severity, ...] = (Severity.MILD, Severity.MODERATE, Severity.SEVERE)


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
    fallback: Strategy | None = None  # next-best strategy if the candidate fails the gate


def _measurements(report: ShiftReport, recurring: int) -> dict[str, Any]:
    return {
        "severity": report.severity,
        "mmd2": round(report.mmd2, 6),
        "p_value": round(report.p_value, 6),
        "label_distance": round(report.label_distance, 4),
        "novel_classes": list(report.novel_classes),
        "accuracy_drop": round(report.accuracy_drop, 4),
        "probe_accuracy": None if report.probe_accuracy is None else round(report.probe_accuracy, 4),
        "n_batch": report.n_batch,
        "recurring_shifts": recurring,
    }


def recurring_shifts(history: tuple[ShiftHistoryEntry, ...], window: int) -> int:
    """Distinct earlier batches (within the last ``window``) with a significant shift."""
    recent = sorted(history, key=lambda entry: entry.batch_id)[-window:] if window else ()
    return len({entry.batch_id for entry in recent if entry.severity in SIGNIFICANT})


def _rule(report: ShiftReport, recurring: int, config: PolicyConfig) -> tuple[Strategy, str, str]:
    """The first rule that fires: (strategy, rule name, why in words)."""
    if config.strategy is not None:
        return config.strategy, "pinned", "policy.strategy pins it"
    probe = report.probe_accuracy
    probe_text = "n/a" if probe is None else f"{probe:.3f}"
    if report.novel_classes:
        if probe is not None and probe >= config.probe_separates:
            return (Strategy.FEATURE_EXTRACTION, "novel-classes-separable",
                    f"new classes {list(report.novel_classes)} and frozen features separate them "
                    f"(linear probe accuracy {probe_text} >= {config.probe_separates})")
        return (Strategy.META, "novel-classes-entangled",
                f"new classes {list(report.novel_classes)} that frozen features do not separate "
                f"(linear probe accuracy {probe_text} < {config.probe_separates})")
    # A batch the model already predicts far better than its audit set holds nothing it lacks;
    # the probe, fitted on the batch and the memory together, is then low because their labels
    # conflict (a concept that returns after a swap), not because the features fail to transfer,
    # and meta's multi-task start buys nothing at several times finetune's training time
    # (the README gives benchmarks/policy_regret.py's figures for this rule).
    if report.severity not in SIGNIFICANT and report.accuracy_drop <= -config.known_batch_margin:
        return (Strategy.FINETUNE, "known-batch",
                (f"no significant shift and production predicts the batch better than its audit set "
                 f"(accuracy {report.accuracy_batch:.3f} against {report.accuracy_reference:.3f}, "
                 f"margin >= {config.known_batch_margin})"))
    if report.severity not in SIGNIFICANT:
        return (Strategy.FINETUNE, "little-shift", "no measurement shows a significant shift")
    if probe is not None and probe < config.probe_transfers:
        return (Strategy.META, "features-do-not-transfer",
                f"a significant shift that frozen features do not absorb (linear probe accuracy {probe_text} "
                f"< {config.probe_transfers})")
    if config.recurring_batches is not None and recurring >= config.recurring_batches:
        return (Strategy.META, "recurring-shift",
                f"significant shifts recur: {recurring} distinct earlier batches >= {config.recurring_batches}")
    if report.n_batch < config.small_batch:
        return (Strategy.FEATURE_EXTRACTION, "significant-shift-small-batch",
                f"{report.severity} shift on a small batch ({report.n_batch} < {config.small_batch})")
    return (Strategy.FINETUNE, f"significant-shift-{report.severity}",
            f"{report.severity} shift on a large batch whose features transfer (linear probe accuracy {probe_text})")


# What a candidate that fails the gate is followed by, decided by why it failed: one shown to
# forget beyond the limit by the safest strategy not yet tried (a new head on frozen features
# first), one that did not gain enough by the strongest (meta first, which learns what a
# fine-tune could not). On benchmarks/defaults.py's rotated digits a new head tried after
# every refused fine-tune was accepted, cheap and weak (0.937), and meta after every one cost
# 2.8x as much (0.942).
SAFER: tuple[Strategy, ...] = (Strategy.FEATURE_EXTRACTION, Strategy.FINETUNE, Strategy.META)
STRONGER: tuple[Strategy, ...] = (Strategy.META, Strategy.FINETUNE, Strategy.FEATURE_EXTRACTION)


def next_strategy(tried: Sequence[Strategy], forgot: bool = False) -> Strategy | None:
    """The first strategy not in ``tried``, the safest when the last candidate forgot beyond
    the limit, the strongest otherwise."""
    return next((s for s in (SAFER if forgot else STRONGER) if s not in tried), None)


def hyperparameters(strategy: Strategy, report: ShiftReport, config: PolicyConfig, base_lr: float) -> dict[str, Any]:
    if strategy == Strategy.FINETUNE:
        scale = config.finetune_lr_scale(report.severity)
    elif strategy == Strategy.FEATURE_EXTRACTION:
        scale = config.feature_extraction_lr_scale
    elif report.novel_classes:
        scale = config.meta_lr_scale_new_classes
    else:
        scale = config.meta_lr_scale
    return {"lr": base_lr * scale, "lr_scale": scale}


def choose(
    report: ShiftReport,
    history: tuple[ShiftHistoryEntry, ...],
    config: PolicyConfig,
    base_lr: float,
) -> Choice:
    """Pick the adaptation for this batch: ``config.strategy`` when it is set, else the rules
    in order, first match wins:

    1. new classes: ``feature_extraction`` if a linear probe on the frozen features separates
       the batch's classes, else ``meta``;
    2. a batch production already knows (no significant shift, and far more accurate on it than
       on the audit set): ``finetune``;
    3. little shift (severity none): ``finetune``;
    4. a significant shift that frozen features do not absorb (probe below
       ``probe_transfers``; off by default): ``meta``;
    5. significant shifts recurring across ``recurring_batches`` earlier batches (off by
       default): ``meta``;
    6. a significant shift on a batch smaller than ``small_batch`` (off by default):
       ``feature_extraction``;
    7. otherwise ``finetune``.

    ``Choice.fallback`` is the strategy a refused candidate escalates to; ``fallback_choice``
    picks the safest one instead when the candidate forgot beyond the limit.
    """
    recurring = recurring_shifts(history, config.history_window)
    strategy, rule, why = _rule(report, recurring, config)
    params = hyperparameters(strategy, report, config, base_lr)
    measured = "; ".join(report.reasons) or "no measurement crossed a threshold"
    rationale = (
        f"{strategy} because {why} [{rule}]; measured: {measured}; "
        f"lr {params['lr']:g} ({params['lr_scale']:g} x base)"
    )
    return Choice(
        strategy=strategy,
        hyperparameters=params,
        rationale=rationale,
        rule=rule,
        measurements=_measurements(report, recurring),
        fallback=next_strategy([strategy]) if config.fallback else None,
    )


def fallback_choice(tried: Sequence[Choice], report: ShiftReport, config: PolicyConfig,
                    base_lr: float, forgot: bool = False) -> Choice | None:
    """The next candidate to train when every one in ``tried`` (the first choice, then its
    fallbacks) failed the gate, or None when there is none left or fallbacks are off.
    ``forgot``: the last one was refused for forgetting shown above the limit (pooled or on
    one batch's audit samples), not for too little gain."""
    if tried[-1].fallback is None:
        return None
    done = [c.strategy for c in tried]
    strategy = next_strategy(done, forgot)
    if strategy is None:
        return None
    params = hyperparameters(strategy, report, config, base_lr)
    first = tried[0]
    why = "forgot beyond the limit" if forgot else "did not gain enough to pass"
    return Choice(
        strategy=strategy,
        hyperparameters=params,
        rationale=f"{strategy} as fallback after the {tried[-1].strategy} candidate {why} "
                  f"[fallback-after-{first.rule}]; lr {params['lr']:g} ({params['lr_scale']:g} x base)",
        rule=f"fallback-after-{first.rule}",
        measurements=first.measurements,
        fallback=next_strategy([*done, strategy]),
    )
