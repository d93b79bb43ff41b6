"""Schema versions: the registry records which schema it holds and is brought up to date,
step by step, when it is opened.

A fresh database gets the current tables and is stamped with the current version. An older
one gets the steps it lacks, in order, each in its own transaction with the version row, so a
failing step leaves the database at the last good version. A database from a newer retain is
refused instead of misread: a downgrade must not write rows the newer code cannot read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine
from sqlmodel import SQLModel

from retain.registry.errors import SchemaError
from retain.registry.tables import SchemaVersion

_SCHEMA_LOCK_KEY = 0x72657462  # PostgreSQL advisory lock: one process migrates at a time


@dataclass(frozen=True)
class Migration:
    """The SQL that takes the schema from ``version - 1`` to ``version``, and what must be
    computed for the rows already there (``backfill``, in the same transaction)."""

    version: int
    description: str
    statements: tuple[str, ...]
    backfill: Callable[[Connection], None] | None = None


def _stack_frames(connection: Connection) -> None:
    """``alias_event.below_event`` for the existing rows, by replaying each alias's history as
    the stack ``rollback`` reads (promotions push a frame, a rollback replaces the frame it
    pops down to); from now on each move writes its own."""
    rows = connection.execute(text("SELECT id, alias, action, to_version FROM alias_event ORDER BY id")).all()
    stacks: dict[str, list[tuple[int, int]]] = {}  # alias -> [(event id, version)], bottom first
    below: dict[int, int | None] = {}
    for event, alias, action, to_version in rows:
        stack = stacks.setdefault(alias, [])
        if action == "rollback":
            while stack and stack[-1][1] != to_version:
                stack.pop()
            below[event] = below[stack.pop()[0]] if stack else None  # it replaces the frame it popped to
        else:
            below[event] = stack[-1][0] if stack else None
        stack.append((event, to_version))
    for event, frame in below.items():
        if frame is not None:
            connection.execute(text("UPDATE alias_event SET below_event = :below WHERE id = :id"),
                               {"below": frame, "id": event})


def _alias_key_per_model(connection: Connection) -> None:
    """``alias``'s primary key becomes (model, name). SQLite cannot change a primary key in
    place: the table is rebuilt (it holds a row per alias, so this is instant)."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("ALTER TABLE alias ADD COLUMN model VARCHAR NOT NULL DEFAULT 'default'"))
        connection.execute(text("ALTER TABLE alias DROP CONSTRAINT alias_pkey"))
        connection.execute(text("ALTER TABLE alias ADD PRIMARY KEY (model, name)"))
        return
    connection.execute(text(
        "CREATE TABLE alias_by_model (model VARCHAR DEFAULT 'default' NOT NULL, name VARCHAR NOT NULL, "
        "version INTEGER NOT NULL, updated_at DATETIME NOT NULL, PRIMARY KEY (model, name))"))
    connection.execute(text("INSERT INTO alias_by_model (model, name, version, updated_at) "
                            "SELECT 'default', name, version, updated_at FROM alias"))
    connection.execute(text("DROP TABLE alias"))
    connection.execute(text("ALTER TABLE alias_by_model RENAME TO alias"))


def _create_outbox(connection: Connection) -> None:
    from retain.registry.tables import OutboxEvent, WebhookDelivery

    OutboxEvent.__table__.create(connection, checkfirst=True)
    WebhookDelivery.__table__.create(connection, checkfirst=True)


# Version 1 is the schema of registry.tables as first released (before the schema was
# versioned). A change to the tables appends its step here.
MIGRATIONS: tuple[Migration, ...] = (
    # A batch's versions are looked up at every claim and registration: without an index that
    # is a scan of every version (20 ms at 100,000).
    Migration(2, "index versions by batch",
              ("CREATE INDEX IF NOT EXISTS ix_model_version_batch_id ON model_version (batch_id)",)),
    # A rollback read every alias move to rebuild the stack it pops (2 s at 100,000 moves);
    # each move now points at the frame below it.
    Migration(3, "alias moves point at the frame below", ("ALTER TABLE alias_event ADD COLUMN below_event INTEGER",),
              backfill=_stack_frames),
    # Named models: every batch, version and alias belongs to a lineage; what was there is
    # the lineage "default". Versions are numbered per model, a file is one batch per model.
    Migration(4, "named models", (
        "ALTER TABLE batch ADD COLUMN model VARCHAR",
        "UPDATE batch SET model = 'default'",
        "DROP INDEX ix_batch_sha256",
        "CREATE UNIQUE INDEX ix_batch_model_sha256 ON batch (model, sha256)",
        "CREATE INDEX ix_batch_model_state ON batch (model, state)",
        "CREATE INDEX ix_batch_model_id ON batch (model, id)",
        "ALTER TABLE model_version ADD COLUMN model VARCHAR NOT NULL DEFAULT 'default'",
        "DROP INDEX ix_model_version_version",
        "CREATE UNIQUE INDEX ix_model_version_model_version ON model_version (model, version)",
        "ALTER TABLE alias_event ADD COLUMN model VARCHAR NOT NULL DEFAULT 'default'",
        "DROP INDEX ix_alias_event_alias",
        "CREATE INDEX ix_alias_event_model_alias ON alias_event (model, alias, id)",
        "CREATE INDEX ix_alias_event_model_id ON alias_event (model, id)",
    ), backfill=_alias_key_per_model),
    # Approval: with auto-promotion off, an accepted candidate waits for `retain approve`.
    Migration(5, "candidates awaiting approval", (
        "ALTER TABLE model_version ADD COLUMN review VARCHAR",
        "ALTER TABLE model_version ADD COLUMN review_note VARCHAR",
        "CREATE INDEX ix_model_version_model_review ON model_version (model, review)",
    )),
    # Webhooks: events written with what caused them, delivered from here.
    Migration(6, "an outbox of events for webhooks", (), backfill=_create_outbox),
    # meta carries its Reptile initialisation forward with the version instead of relearning it.
    Migration(7, "versions keep meta's initialisation",
              ("ALTER TABLE model_version ADD COLUMN meta_init_sha256 VARCHAR(64)",)),
)


def latest_version(migrations: Sequence[Migration]) -> int:
    """The schema version ``migrations`` lead to; 1 without any."""
    return migrations[-1].version if migrations else 1


def _lock(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK_KEY})


def _stored_version(connection: Connection) -> int | None:
    row = connection.execute(text("SELECT version FROM retain_schema WHERE id = 1")).first()
    return None if row is None else int(row[0])


def _set_version(connection: Connection, version: int) -> None:
    connection.execute(text("UPDATE retain_schema SET version = :v WHERE id = 1"), {"v": version})


def _stamp(connection: Connection, target: int) -> int:
    """Create or stamp the schema; the version the database is at afterwards."""
    tables = set(inspect(connection).get_table_names())
    if SchemaVersion.__tablename__ in tables:
        stored = _stored_version(connection)
        if stored is not None:
            return stored
    retain_tables = {table.name for table in SQLModel.metadata.sorted_tables} - {SchemaVersion.__tablename__}
    if tables & retain_tables:
        version = 1  # written by a retain from before the schema was versioned
        SchemaVersion.__table__.create(connection, checkfirst=True)
    else:
        version = target
        SQLModel.metadata.create_all(connection)
    connection.execute(text("INSERT INTO retain_schema (id, version) VALUES (1, :v)"), {"v": version})
    return version


def upgrade(engine: Engine, migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """Bring the database to the latest schema; returns that version.

    Raises ``SchemaError`` if the database is at a version newer than ``migrations`` know,
    or a step fails (the database then stays at the version before that step).
    """
    target = latest_version(migrations)
    with engine.begin() as connection:
        _lock(connection)
        version = _stamp(connection, target)
    if version > target:
        raise SchemaError(
            f"the registry's schema is at version {version}, newer than this retain knows ({target}): "
            "upgrade retain (or restore the registry from a backup made before the upgrade)"
        )
    for step in migrations:
        if step.version <= version:
            continue
        with engine.begin() as connection:
            _lock(connection)
            if _stored_version(connection) != step.version - 1:  # another process got here first
                continue
            try:
                for statement in step.statements:
                    connection.execute(text(statement))
                if step.backfill is not None:
                    step.backfill(connection)
            except Exception as exc:
                raise SchemaError(
                    f"migrating the registry to schema version {step.version} ({step.description}) "
                    f"failed, it stays at version {step.version - 1}: {exc}"
                ) from exc
            _set_version(connection, step.version)
        version = step.version
    return version
