"""The registry's tables: four for batches, versions and aliases, one for the schema version."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import Index, text
from sqlmodel import Field, SQLModel

from retain.registry.details import VersionDetails

DEFAULT_MODEL = "default"  # the one model of a config with a lone [model] table, and of older registries
# A model's name appears in paths (inbox/NAME/), in NAME@VERSION and in metric labels.
MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """Timestamps read back from SQLite have no zone; every stored timestamp is UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class BatchState(StrEnum):
    """Where a batch is. An invalid file is a batch ``rejected`` (its JSON value), which is not
    a version the gate refused."""

    PENDING = "pending"
    PROCESSING = "processing"
    DONE = "done"
    INVALID = "rejected"
    FAILED = "failed"
    ERASED = "erased"  # done, then ``retain forget``: its samples leave the replay memory


IN_FLIGHT = (BatchState.PENDING, BatchState.PROCESSING)
FINISHED = (BatchState.DONE, BatchState.INVALID, BatchState.FAILED, BatchState.ERASED)


class VersionStatus(StrEnum):
    """The forgetting gate's verdict on a version."""

    ACCEPTED = "accepted"
    REFUSED = "rejected"


class Review(StrEnum):
    """An accepted candidate's way to production when ``registry.auto_promote`` is off."""

    PENDING = "pending"  # awaiting ``retain approve`` or ``retain reject``
    APPROVED = "approved"
    DECLINED = "declined"


class AliasAction(StrEnum):
    CREATE = "create"
    APPROVE = "approve"  # production moved to an approved candidate
    SET = "set"  # an alias other than production set by hand
    REMOVE = "remove"
    PROMOTE = "promote"
    AUTO_PROMOTE = "auto_promote"
    ROLLBACK = "rollback"
    ERASE = "erase"  # production moved to a version without an erased batch's samples


def _model_column(**kwargs):
    """The lineage a row belongs to; rows written before there were several are ``default``'s."""
    return Field(default=DEFAULT_MODEL, sa_column_kwargs={"server_default": text(f"'{DEFAULT_MODEL}'")}, **kwargs)


class Batch(SQLModel, table=True):
    __tablename__ = "batch"
    # A file's content is one batch per model: the same file sent to two models is two batches.
    # By content; a model's queue (claims read only its in-flight rows); a model's batches newest first.
    __table_args__ = (Index("ix_batch_model_sha256", "model", "sha256", unique=True),
                      Index("ix_batch_model_state", "model", "state"),
                      Index("ix_batch_model_id", "model", "id"))

    id: int | None = Field(default=None, primary_key=True)
    # None: a file refused before it could be given to a model (directly in an inbox of several).
    model: str | None = None
    sha256: str = Field(max_length=64)  # or unread-<uuid>: refused unread
    path: str  # where the file is now: inbox, processed/ or rejected/
    name: str  # file name as it arrived
    state: str = Field(default=BatchState.PENDING, index=True)  # a BatchState
    attempts: int = 0
    reason: str | None = None  # why rejected or failed
    n_samples: int | None = None
    version: int | None = None  # the candidate registered from this batch
    lease_owner: str | None = None
    lease_expires: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class VersionFields(SQLModel):
    """The columns of a version that a caller supplies; the registry adds its number and time.
    ``NewVersion`` is these plus the JSON columns as Python values."""

    parent: int | None = None
    batch_id: int | None = Field(default=None, foreign_key="batch.id", index=True)
    status: str  # a VersionStatus
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
    artifact_sha256: str = Field(max_length=64)
    replay_sha256: str = Field(max_length=64)
    # meta's Reptile initialisation for the lineage: a meta candidate stores the one it adapted
    # from, every other version keeps its parent's; the next meta candidate continues it.
    meta_init_sha256: str | None = Field(default=None, max_length=64)
    review: str | None = None  # a Review, for a candidate registered without auto-promotion
    review_note: str | None = None  # who approved or rejected it, when and why


class ModelVersion(VersionFields, table=True):
    __tablename__ = "model_version"
    __table_args__ = (Index("ix_model_version_model_version", "model", "version", unique=True),
                      Index("ix_model_version_model_review", "model", "review"))

    id: int | None = Field(default=None, primary_key=True)
    model: str = _model_column()
    version: int  # numbered per model, from 1
    decision_reasons: str = "[]"  # JSON list of the gate's reasons
    details: str = "{}"  # JSON of a VersionDetails: shift report, per-batch forgetting, hyperparameters
    model_spec: str  # JSON: factory, kwargs, input_shape, num_classes, head
    created_at: datetime = Field(default_factory=utcnow)

    def version_details(self) -> VersionDetails:
        return VersionDetails.from_dict(json.loads(self.details))

    def reasons(self) -> list[str]:
        """The gate's reasons."""
        return json.loads(self.decision_reasons)


class Alias(SQLModel, table=True):
    __tablename__ = "alias"

    model: str = _model_column(primary_key=True)
    name: str = Field(primary_key=True)
    version: int
    updated_at: datetime = Field(default_factory=utcnow)


class AliasEvent(SQLModel, table=True):
    __tablename__ = "alias_event"
    # An alias's top frame; a model's moves newest first.
    __table_args__ = (Index("ix_alias_event_model_alias", "model", "alias", "id"),
                      Index("ix_alias_event_model_id", "model", "id"))

    id: int | None = Field(default=None, primary_key=True)
    model: str = _model_column()
    alias: str
    action: str  # an AliasAction
    from_version: int | None = None
    to_version: int
    actor: str
    reason: str = ""
    at: datetime = Field(default_factory=utcnow)
    # The move whose version lies under this one on the alias's stack (promotions push,
    # rollbacks pop): where a rollback from here goes. None at the bottom.
    below_event: int | None = None


class EventKind(StrEnum):
    """What a webhook can be told of."""

    VERSION_REGISTERED = "version.registered"  # a candidate the gate accepted
    VERSION_REJECTED = "version.rejected"  # a candidate the gate refused
    VERSION_PROMOTED = "version.promoted"  # production moved forward (auto, promote, approve)
    VERSION_ROLLED_BACK = "version.rolled_back"
    BATCH_REJECTED = "batch.rejected"  # the file was refused
    BATCH_FAILED = "batch.failed"  # out of attempts
    BATCH_LABEL_NOISE = "batch.label_noise"  # labels left out as suspected noise (its candidates' registration)


class OutboxEvent(SQLModel, table=True):
    """An event, written in the transaction that made it happen; fanned out to the webhooks
    configured when a daemon reads it (``dispatched``)."""

    __tablename__ = "outbox_event"

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(max_length=36)  # the idempotency key every delivery of it carries
    kind: str  # an EventKind
    model: str | None = None
    payload: str  # JSON
    dispatched: bool = Field(default=False, index=True)
    created_at: datetime = Field(default_factory=utcnow)


class DeliveryState(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    DELIVERED = "delivered"
    FAILED = "failed"  # out of attempts


class WebhookDelivery(SQLModel, table=True):
    """One event to one webhook: tried until it is answered 2xx or runs out of attempts."""

    __tablename__ = "webhook_delivery"
    __table_args__ = (Index("ix_webhook_delivery_state_due", "state", "next_attempt_at"),)

    id: int | None = Field(default=None, primary_key=True)
    event_id: int = Field(foreign_key="outbox_event.id")
    url: str
    state: str = DeliveryState.PENDING  # a DeliveryState
    attempts: int = 0
    next_attempt_at: datetime = Field(default_factory=utcnow)
    last_error: str | None = None
    delivered_at: datetime | None = None


class SchemaVersion(SQLModel, table=True):
    """One row: the version of the schema these tables are at (``registry.migrations``)."""

    __tablename__ = "retain_schema"

    id: int = Field(default=1, primary_key=True)
    version: int
