"""Schema versions: the registry records which schema it holds and is brought up to date,
step by step, when it is opened.

A fresh database gets the current tables and is stamped with the current version. An older
one gets the steps it lacks, in order, each in its own transaction with the version row, so a
failing step leaves the database at the last good version. A database from a newer retain is
refused instead of misread: a downgrade must not write rows the newer code cannot read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine
from sqlmodel import SQLModel

from retain.registry.errors import SchemaError
from retain.registry.tables import SchemaVersion

_SCHEMA_LOCK_KEY = 0x72657462  # PostgreSQL advisory lock: one process migrates at a time


@dataclass(frozen=True)
class Migration:
    """The SQL that takes the schema from ``version - 1`` to ``version``."""

    version: int
    description: str
    statements: tuple[str, ...]


# Version 1 is the schema of registry.tables as first released (before the schema was
# versioned). A change to the tables appends its step here.
MIGRATIONS: tuple[Migration, ...] = ()


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
            except Exception as exc:
                raise SchemaError(
                    f"migrating the registry to schema version {step.version} ({step.description}) "
                    f"failed, it stays at version {step.version - 1}: {exc}"
                ) from exc
            _set_version(connection, step.version)
        version = step.version
    return version
