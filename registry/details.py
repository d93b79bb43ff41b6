"""The typed ``details`` of a version: what the registry stores beside its columns.

Written by the pipeline (and by ``retain init``), read by the CLI, the metrics and the policy's
history. ``to_dict`` gives the stored JSON (the ``details`` field of ``retain show --json``);
``from_dict`` reads it back, including rows written before a field existed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(frozen=True)
class ShiftDetails:
    """The shift report the strategy was chosen from."""

    mmd2: float
    p_value: float
    label_distance: float
    novel_classes: tuple[int, ...]
    accuracy_reference: float
    accuracy_batch: float
    probe_accuracy: float | None
    reasons: tuple[str, ...]
    # Labels left out of training, gate and memory as suspected noise (strategies/label_noise.py).
    suspected_noisy_labels: int = 0

    @property
    def noise_reason(self) -> str | None:
        """The reason that says why labels were suspected noise, if any were (the registry keeps
        the shift report's reasons as text; retain.strategies.label_noise.REASON_PREFIX begins it)."""
        return next((r for r in self.reasons if r.startswith("suspected label noise: ")), None)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ShiftDetails:
        return cls(
            mmd2=float(data.get("mmd2", 0.0)),
            p_value=float(data.get("p_value", 1.0)),
            label_distance=float(data.get("label_distance", 0.0)),
            novel_classes=tuple(int(c) for c in data.get("novel_classes", ())),
            accuracy_reference=float(data.get("accuracy_reference", 0.0)),
            accuracy_batch=float(data.get("accuracy_batch", 0.0)),
            probe_accuracy=data.get("probe_accuracy"),
            reasons=tuple(data.get("reasons", ())),
            suspected_noisy_labels=int(data.get("suspected_noisy_labels", 0)),
        )


@dataclass(frozen=True)
class ChoiceDetails:
    """Which policy rule picked the strategy, with what it measured."""

    rule: str
    hyperparameters: dict[str, Any]
    measurements: dict[str, Any]
    fallback: bool

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChoiceDetails:
        return cls(
            rule=str(data.get("rule", "")),
            hyperparameters=dict(data.get("hyperparameters", {})),
            measurements=dict(data.get("measurements", {})),
            fallback=bool(data.get("fallback", False)),
        )


@dataclass(frozen=True)
class BatchForgetting:
    """The gate's accuracies on one earlier batch's share of the audit set."""

    batch: int
    n: int
    production: float
    candidate: float
    forgetting: float

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BatchForgetting:
        return cls(**{f.name: data[f.name] for f in fields(cls)})


@dataclass(frozen=True)
class VersionDetails:
    """Everything about a version beyond its columns. A field that does not apply is ``None``
    and is left out of the stored JSON (an initial version has no shift, choice or audit)."""

    shift: ShiftDetails | None = None
    choice: ChoiceDetails | None = None
    per_batch: tuple[BatchForgetting, ...] | None = None
    forgetting_limit: float | None = None
    forgetting_stderr: float | None = None
    # The gate's paired finding: within / above / unresolved, the one-sided bounds on forgetting
    # at ``gate_confidence``, the audit samples they came from, and how many the limit takes.
    gate_finding: str | None = None
    forgetting_bounds: tuple[float, float] | None = None
    gate_confidence: float | None = None
    audit_samples: int | None = None
    samples_to_resolve: int | None = None
    # Audit samples in this version's own replay memory: what its successors are judged on.
    memory_audit_samples: int | None = None
    training_seconds: float | None = None
    # The candidate's compute: optimizer steps taken, samples in them (rehearsal included), where.
    optimizer_steps: int | None = None
    samples_seen: int | None = None
    device: str | None = None
    meta_start: str | None = None  # a MetaStart: a meta candidate's initialisation continued or learned afresh
    n_train: int | None = None
    n_holdout: int | None = None
    is_fallback: bool | None = None
    init_data: str | None = None  # the file ``retain init`` built the version from
    # From ``retain forget``: the batch whose samples this version's memory no longer holds,
    # why, and what happened to the weights (WeightsAfterErasure).
    erased_batch: int | None = None
    erasure_reason: str | None = None
    weights: str | None = None

    def to_dict(self) -> dict[str, Any]:
        stored = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if value is None:
                continue
            if item.name == "per_batch":
                value = [asdict(group) for group in value]
            elif item.name == "forgetting_bounds":
                value = list(value)
            elif item.name in ("shift", "choice"):
                value = asdict(value)
                if "novel_classes" in value:
                    value |= {"novel_classes": list(value["novel_classes"]), "reasons": list(value["reasons"])}
            stored[item.name] = value
        return stored

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VersionDetails:
        per_batch = data.get("per_batch")
        return cls(
            shift=ShiftDetails.from_dict(data["shift"]) if "shift" in data else None,
            choice=ChoiceDetails.from_dict(data["choice"]) if "choice" in data else None,
            per_batch=None if per_batch is None else tuple(BatchForgetting.from_dict(g) for g in per_batch),
            forgetting_limit=data.get("forgetting_limit"),
            forgetting_stderr=data.get("forgetting_stderr"),
            gate_finding=data.get("gate_finding"),
            forgetting_bounds=None if data.get("forgetting_bounds") is None else tuple(data["forgetting_bounds"]),
            gate_confidence=data.get("gate_confidence"),
            audit_samples=data.get("audit_samples"),
            samples_to_resolve=data.get("samples_to_resolve"),
            memory_audit_samples=data.get("memory_audit_samples"),
            training_seconds=data.get("training_seconds"),
            optimizer_steps=data.get("optimizer_steps"),
            samples_seen=data.get("samples_seen"),
            device=data.get("device"),
            meta_start=data.get("meta_start"),
            n_train=data.get("n_train"),
            n_holdout=data.get("n_holdout"),
            is_fallback=data.get("is_fallback"),
            init_data=data.get("init_data"),
            erased_batch=data.get("erased_batch"),
            erasure_reason=data.get("erasure_reason"),
            weights=data.get("weights"),
        )
