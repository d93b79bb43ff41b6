"""The model registry: SQL tables for batches, versions and aliases (with schema migrations),
and an artifact store."""

from retain.registry.artifacts import ArtifactError, ArtifactStore, atomic_copy, atomic_write, stale_temp_files
from retain.registry.errors import AliasConflict, RegistryError, SchemaError, UnknownVersion
from retain.registry.migrations import Migration, upgrade
from retain.registry.store import PRODUCTION, UNREAD_PREFIX, NewVersion, Registry
from retain.registry.tables import (
    FINISHED,
    IN_FLIGHT,
    Alias,
    AliasAction,
    AliasEvent,
    Batch,
    BatchState,
    ModelVersion,
    VersionStatus,
    as_utc,
)

__all__ = [
    "FINISHED",
    "IN_FLIGHT",
    "AliasAction",
    "BatchState",
    "VersionStatus",
    "PRODUCTION",
    "UNREAD_PREFIX",
    "Alias",
    "as_utc",
    "atomic_copy",
    "atomic_write",
    "stale_temp_files",
    "AliasConflict",
    "AliasEvent",
    "ArtifactError",
    "ArtifactStore",
    "Batch",
    "Migration",
    "ModelVersion",
    "NewVersion",
    "Registry",
    "RegistryError",
    "SchemaError",
    "UnknownVersion",
    "upgrade",
]
