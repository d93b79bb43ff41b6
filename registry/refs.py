"""Naming a version: ``7``, ``production``, ``NAME@7``, ``NAME@production``."""

from __future__ import annotations

import re
from dataclasses import dataclass

from retain.registry.errors import RegistryError
from retain.registry.tables import MODEL_NAME_PATTERN

ALIAS_PATTERN = r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$"  # starts with a letter: never a version number


class BadVersionRef(RegistryError):
    """Text that names no version; the message says what the forms are."""


@dataclass(frozen=True)
class VersionRef:
    """A version by number or by alias, of a named model or (``model`` None) of the one in use."""

    model: str | None
    number: int | None = None
    alias: str | None = None

    @classmethod
    def parse(cls, text: str) -> VersionRef:
        model, at, rest = text.strip().rpartition("@")
        if at and not re.match(MODEL_NAME_PATTERN, model):
            raise BadVersionRef(f"{text!r}: {model!r} is not a model name")
        if rest.isdigit() and int(rest) >= 1:
            return cls(model or None, number=int(rest))
        if re.match(ALIAS_PATTERN, rest):
            return cls(model or None, alias=rest)
        raise BadVersionRef(f"{text!r} names no version: use a number (7), an alias (production), "
                            "or either after a model's name (cameras@7, cameras@production)")

    def __str__(self) -> str:
        what = str(self.number) if self.number is not None else self.alias
        return what if self.model is None else f"{self.model}@{what}"
