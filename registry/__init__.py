"""The model registry: SQL tables for batches, versions and aliases (with schema migrations),
and an artifact store."""

from retain.registry.artifacts import (
    ArtifactError,
    ArtifactStore,
    ObjectTooLarge,
    S3Objects,
    atomic_copy,
    atomic_write,
    stale_temp_files,
)
from retain.registry.details import BatchForgetting, ChoiceDetails, ShiftDetails, VersionDetails
from retain.registry.errors import AliasConflict, RegistryError, SchemaError, UnknownVersion
from retain.registry.migrations import Migration, upgrade
from retain.registry.refs import BadVersionRef, VersionRef
from retain.registry.store import PRODUCTION, UNREAD_PREFIX, NewVersion, Registry, require_database
from retain.registry.tables import (
    DEFAULT_MODEL,
    FINISHED,
    MODEL_NAME_PATTERN,
    IN_FLIGHT,
    Alias,
    AliasAction,
    AliasEvent,
    Batch,
    BatchState,
    ModelVersion,
    Review,
    VersionFields,
    VersionStatus,
    as_utc,
)

__all__ = [
    "DEFAULT_MODEL",
    "FINISHED",
    "IN_FLIGHT",
    "MODEL_NAME_PATTERN",
    "PRODUCTION",
    "UNREAD_PREFIX",
    "Alias",
    "AliasAction",
    "AliasConflict",
    "AliasEvent",
    "BadVersionRef",
    "ArtifactError",
    "ArtifactStore",
    "Batch",
    "BatchForgetting",
    "BatchState",
    "ChoiceDetails",
    "Migration",
    "ObjectTooLarge",
    "ModelVersion",
    "NewVersion",
    "Registry",
    "Review",
    "RegistryError",
    "S3Objects",
    "SchemaError",
    "ShiftDetails",
    "UnknownVersion",
    "VersionDetails",
    "VersionRef",
    "VersionFields",
    "VersionStatus",
    "as_utc",
    "require_database",
    "atomic_copy",
    "atomic_write",
    "stale_temp_files",
    "upgrade",
]
