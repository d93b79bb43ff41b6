"""The outbox: events recorded in the transaction that caused them, and their deliveries to
webhooks, claimed and retried from the same database (at least once, never lost with the
process that was sending them)."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session, select

from retain.registry.details import ShiftDetails
from retain.registry.tables import (
    AliasEvent,
    Batch,
    DeliveryState,
    EventKind,
    ModelVersion,
    OutboxEvent,
    WebhookDelivery,
    utcnow,
)


def version_payload(row: ModelVersion) -> dict[str, Any]:
    return {
        "model": row.model, "version": row.version, "parent": row.parent, "batch": row.batch_id,
        "status": row.status, "strategy": row.strategy, "severity": row.severity, "p_value": row.p_value,
        "forgetting": row.forgetting, "acc_old_candidate": row.acc_old_candidate,
        "acc_new_candidate": row.acc_new_candidate, "acc_new_production": row.acc_new_production,
        "rationale": row.rationale, "artifact_sha256": row.artifact_sha256,
    }


def move_payload(move: AliasEvent, target: ModelVersion | None) -> dict[str, Any]:
    return {
        "model": move.model, "version": move.to_version, "alias": move.alias, "action": move.action,
        "from_version": move.from_version, "actor": move.actor, "reason": move.reason,
        **({"target": version_payload(target)} if target is not None else {}),
    }


def label_noise_payload(rows: list[ModelVersion], shift: ShiftDetails) -> dict[str, Any]:
    """A batch whose labels were partly suspected noise: how many, why, and the versions trained without them."""
    return {"model": rows[0].model, "batch": rows[0].batch_id, "versions": [row.version for row in rows],
            "suspected_labels": shift.suspected_noisy_labels,
            "reason": shift.noise_reason}


def batch_payload(batch: Batch) -> dict[str, Any]:
    return {"model": batch.model, "batch": batch.id, "name": batch.name, "state": batch.state,
            "reason": batch.reason, "attempts": batch.attempts}


def emit(session: Session, kind: EventKind, payload: dict[str, Any]) -> None:
    """Record an event in the caller's transaction."""
    session.add(OutboxEvent(key=str(uuid.uuid4()), kind=kind, model=payload.get("model"),
                            payload=json.dumps(payload, default=str)))


def backoff(attempts: int, base_seconds: float, cap_seconds: float = 3600) -> timedelta:
    """How long after its ``attempts``-th failure a delivery is tried again: doubling from
    ``base_seconds``, at most ``cap_seconds``."""
    return timedelta(seconds=min(cap_seconds, base_seconds * 2 ** (attempts - 1)))


def deliveries_for(event: OutboxEvent, targets: list[tuple[str, frozenset[str]]]) -> list[WebhookDelivery]:
    """A delivery per webhook (url, events it wants) that wants this event's kind."""
    return [WebhookDelivery(event_id=event.id, url=url, next_attempt_at=utcnow())
            for url, kinds in targets if event.kind in kinds]


def lease_until(now: datetime, seconds: float) -> datetime:
    return now + timedelta(seconds=seconds)


def due(now: datetime):
    """The deliveries to try now: pending and due, or sending under a lease that ran out
    (its sender died mid-request: at least once means it is sent again)."""
    return select(WebhookDelivery).where(
        WebhookDelivery.state.in_([DeliveryState.PENDING, DeliveryState.SENDING]),
        WebhookDelivery.next_attempt_at <= now,
    ).order_by(WebhookDelivery.next_attempt_at)
