"""The model registry: SQL tables for batches, versions and aliases, and an artifact store."""

from registry.artifacts import ArtifactError, ArtifactStore, atomic_write
from registry.store import (
    PRODUCTION,
    AliasConflict,
    NewVersion,
    Registry,
    RegistryError,
    UnknownVersion,
)
from registry.tables import Alias, AliasEvent, Batch, ModelVersion, as_utc

__all__ = [
    "PRODUCTION",
    "Alias",
    "as_utc",
    "atomic_write",
    "AliasConflict",
    "AliasEvent",
    "ArtifactError",
    "ArtifactStore",
    "Batch",
    "ModelVersion",
    "NewVersion",
    "Registry",
    "RegistryError",
    "UnknownVersion",
]
