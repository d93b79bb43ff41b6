"""The registry's tables: four for batches, versions and aliases, one for the schema version."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """Timestamps read back from SQLite have no zone; every stored timestamp is UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class Batch(SQLModel, table=True):
    __tablename__ = "batch"

    id: int | None = Field(default=None, primary_key=True)
    sha256: str = Field(unique=True, index=True, max_length=64)  # or unread-<uuid>: refused unread
    path: str  # where the file is now: inbox, processed/ or rejected/
    name: str  # file name as it arrived
    state: str = Field(default="pending", index=True)  # pending|processing|done|rejected|failed
    attempts: int = 0
    reason: str | None = None  # why rejected or failed
    n_samples: int | None = None
    version: int | None = None  # the candidate registered from this batch
    lease_owner: str | None = None
    lease_expires: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class ModelVersion(SQLModel, table=True):
    __tablename__ = "model_version"

    id: int | None = Field(default=None, primary_key=True)
    version: int = Field(unique=True, index=True)
    parent: int | None = None
    batch_id: int | None = Field(default=None, foreign_key="batch.id")
    status: str  # accepted|rejected
    strategy: str
    severity: str | None = None
    shift_score: float | None = None  # MMD² in the production model's feature space
    p_value: float | None = None
    acc_old_candidate: float | None = None
    acc_old_production: float | None = None
    acc_new_candidate: float | None = None
    acc_new_production: float | None = None
    forgetting: float | None = None
    rationale: str = ""
    decision_reasons: str = "[]"  # JSON list of the gate's reasons
    details: str = "{}"  # JSON: shift report, per-batch forgetting, hyperparameters
    model_spec: str  # JSON: factory, kwargs, input_shape, num_classes, head
    artifact_sha256: str = Field(max_length=64)
    replay_sha256: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow)


class Alias(SQLModel, table=True):
    __tablename__ = "alias"

    name: str = Field(primary_key=True)
    version: int
    updated_at: datetime = Field(default_factory=utcnow)


class AliasEvent(SQLModel, table=True):
    __tablename__ = "alias_event"

    id: int | None = Field(default=None, primary_key=True)
    alias: str = Field(index=True)
    action: str  # create|promote|auto_promote|rollback
    from_version: int | None = None
    to_version: int
    actor: str
    reason: str = ""
    at: datetime = Field(default_factory=utcnow)


class SchemaVersion(SQLModel, table=True):
    """One row: the version of the schema these tables are at (``registry.migrations``)."""

    __tablename__ = "retain_schema"

    id: int = Field(default=1, primary_key=True)
    version: int
