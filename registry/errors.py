"""What the registry raises; every message says what is wrong."""

from __future__ import annotations

from retain.errors import RetainError


class RegistryError(RetainError):
    """A registry operation cannot be done; the message says why."""


class UnknownVersion(RegistryError):
    def __init__(self, version: int, model: str) -> None:
        super().__init__(f"version {version} of model {model!r} does not exist")
        self.version = version
        self.model = model


class AliasConflict(RegistryError):
    """The alias moved between reading it and writing it."""


class SchemaError(RegistryError):
    """The database's schema is not one this retain can use."""


class BatchNotHeld(RegistryError):
    """A worker acted on a batch that is no longer its own (finished, or claimed by another
    worker after its lease ran out)."""
