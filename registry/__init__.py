"""The model registry: SQL tables for batches, versions and aliases (with schema migrations),
and an artifact store."""

from registry.artifacts import ArtifactError, ArtifactStore, atomic_copy, atomic_write, stale_temp_files
from registry.errors import AliasConflict, RegistryError, SchemaError, UnknownVersion
from registry.migrations import Migration, upgrade
from registry.store import PRODUCTION, UNREAD_PREFIX, NewVersion, Registry
from registry.tables import Alias, AliasEvent, Batch, ModelVersion, as_utc

__all__ = [
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
