"""Rows for the CLI: the stable JSON fields of DESIGN.md and their table rendering."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from rich.table import Table
from rich.text import Text

from retain.registry import DEFAULT_MODEL, AliasEvent, Batch, ModelVersion, as_utc
from retain.strategies.paired import AuditSizing, audit_sizing
from retain.strategies.settings import GateConfig


def iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return as_utc(moment).astimezone(UTC).isoformat().replace("+00:00", "Z")


def version_row(version: ModelVersion, production: int | None) -> dict[str, Any]:
    return {
        "model": version.model,
        "version": version.version,
        "parent": version.parent,
        "batch": version.batch_id,
        "status": version.status,
        "strategy": version.strategy,
        "severity": version.severity,
        "p_value": version.p_value,
        "acc_old_candidate": version.acc_old_candidate,
        "acc_old_production": version.acc_old_production,
        "acc_new_candidate": version.acc_new_candidate,
        "acc_new_production": version.acc_new_production,
        "forgetting": version.forgetting,
        "rationale": version.rationale,
        "artifact_sha256": version.artifact_sha256,
        "created_at": iso(version.created_at),
        "is_production": version.version == production,
        "review": version.review,
        **_gate_and_compute(version),
    }


def _gate_and_compute(version: ModelVersion) -> dict[str, Any]:
    details = version.version_details()
    bounds = details.forgetting_bounds
    return {"gate_finding": details.gate_finding,
            "forgetting_lower": None if bounds is None else bounds[0],
            "forgetting_upper": None if bounds is None else bounds[1],
            "audit_samples": details.audit_samples,
            "training_seconds": details.training_seconds, "optimizer_steps": details.optimizer_steps,
            "samples_seen": details.samples_seen, "device": details.device, "meta_start": details.meta_start}


def audit_sizing_of(version: ModelVersion, gate: GateConfig) -> AuditSizing | None:
    """Whether the audit set ``version``'s successors are judged on can resolve ``gate``'s limit
    (None for a version registered before retain recorded its audit size)."""
    samples = version.version_details().memory_audit_samples
    if samples is None or version.acc_old_candidate is None:
        return None
    return audit_sizing(samples, version.acc_old_candidate, gate)


def version_detail(version: ModelVersion, production: int | None, lineage: list[int]) -> dict[str, Any]:
    return version_row(version, production) | {
        "shift_score": version.shift_score,
        "decision_reasons": version.reasons(),
        "details": version.version_details().to_dict(),
        "model_spec": json.loads(version.model_spec),
        "replay_sha256": version.replay_sha256,
        "meta_init_sha256": version.meta_init_sha256,
        "lineage": lineage,
    }


def batch_row(batch: Batch, version: ModelVersion | None) -> dict[str, Any]:
    return {
        "id": batch.id,
        "model": batch.model,
        "sha256": batch.sha256,
        "path": batch.path,
        "name": batch.name,
        "state": batch.state,
        "reason": batch.reason,
        "n_samples": batch.n_samples,
        "version": batch.version,
        "attempts": batch.attempts,
        "severity": version.severity if version else None,
        "p_value": version.p_value if version else None,
        "strategy": version.strategy if version else None,
        "decision": version.status if version else None,
        "created_at": iso(batch.created_at),
    }


def event_row(item: AliasEvent) -> dict[str, Any]:
    return {
        "model": item.model,
        "alias": item.alias,
        "action": item.action,
        "from_version": item.from_version,
        "to_version": item.to_version,
        "actor": item.actor,
        "reason": item.reason,
        "at": iso(item.at),
    }


def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _p(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def _or_dash(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


def versions_table(rows: list[dict[str, Any]], title: str | None = None) -> Table:
    models = sorted({row["model"] for row in rows})
    named = len(models) == 1 and models[0] != DEFAULT_MODEL
    table = Table(title=title or ("Model versions" + (f" of {models[0]}" if named else "")))
    for column, justify in (
        ("version", "right"), ("parent", "right"), ("batch", "right"), ("strategy", "left"),
        ("shift", "left"), ("p-value", "right"), ("old acc cand/prod", "right"),
        ("new acc cand/prod", "right"), ("forgetting", "right"), ("decision", "left"),
    ):
        table.add_column(column, justify=justify)
    for row in rows:
        decision = row["status"] + (" (production)" if row["is_production"] else "")
        if row["review"] == "pending":
            decision += " (awaiting approval)"
        elif row["review"] == "declined":
            decision += " (declined)"
        table.add_row(
            str(row["version"]),
            _or_dash(row["parent"]),
            _or_dash(row["batch"]),
            row["strategy"],
            _or_dash(row["severity"]),
            _p(row["p_value"]),
            f"{_num(row['acc_old_candidate'])} / {_num(row['acc_old_production'])}",
            f"{_num(row['acc_new_candidate'])} / {_num(row['acc_new_production'])}",
            _num(row["forgetting"]) if row["forgetting"] is not None else "-",
            Text(decision, style="green" if row["status"] == "accepted" else "red"),
        )
    return table


def batches_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="Batches")
    several = len({row["model"] for row in rows}) > 1
    for column in ("id", *(["model"] if several else []), "file", "state", "samples", "shift", "strategy", "version",
                   "outcome / reason"):
        table.add_column(column)
    for row in rows:
        outcome = row["decision"] or row["reason"] or ""
        table.add_row(
            str(row["id"]),
            *([_or_dash(row["model"])] if several else []),
            row["path"].rsplit("/", 1)[-1],
            row["state"],
            _or_dash(row["n_samples"]),
            _or_dash(row["severity"]),
            _or_dash(row["strategy"]),
            _or_dash(row["version"]),
            outcome,
        )
    return table


def model_row(summary, config) -> dict[str, Any]:
    """A ``ModelSummary`` as ``retain models`` lists it, with its inbox when the config names it."""
    last = summary.last_batch
    configured = summary.name in config.model_names
    return {
        "model": summary.name,
        "configured": configured,
        "production_version": summary.production_version,
        "versions": summary.versions,
        "queue_depth": summary.queue_depth,
        "last_batch": {"id": last.id, "state": last.state, "updated_at": iso(last.updated_at)} if last else None,
        "forgetting": summary.forgetting,
        "inbox": str(config.for_model(summary.name).inbox) if configured else None,
    }


def models_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="Models")
    for column, justify in (("model", "left"), ("production", "right"), ("versions", "right"), ("queued", "right"),
                            ("last batch", "left"), ("forgetting", "right"), ("inbox", "left")):
        table.add_column(column, justify=justify)
    for row in rows:
        last = row["last_batch"]
        table.add_row(
            row["model"], _or_dash(row["production_version"]), str(row["versions"]), str(row["queue_depth"]),
            "-" if last is None else f"{last['id']} {last['state']} {last['updated_at']}",
            _num(row["forgetting"], 4), _or_dash(row["inbox"]),
        )
    return table


def delivery_row(delivery, event) -> dict[str, Any]:
    return {
        "id": delivery.id, "url": delivery.url, "event": event.kind, "key": event.key, "model": event.model,
        "state": delivery.state, "attempts": delivery.attempts, "next_attempt_at": iso(delivery.next_attempt_at),
        "last_error": delivery.last_error, "created_at": iso(event.created_at),
        "delivered_at": iso(delivery.delivered_at),
    }


def deliveries_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="Webhook deliveries")
    for column in ("id", "event", "model", "url", "state", "attempts", "next try", "last error"):
        table.add_column(column)
    for row in rows:
        table.add_row(str(row["id"]), row["event"], _or_dash(row["model"]), row["url"], row["state"],
                      str(row["attempts"]), _or_dash(row["next_attempt_at"]), _or_dash(row["last_error"]))
    return table


def history_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="Alias history")
    for column in ("at", "alias", "action", "from", "to", "actor", "reason"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["at"], row["alias"], row["action"], _or_dash(row["from_version"]),
            str(row["to_version"]), row["actor"], row["reason"],
        )
    return table
