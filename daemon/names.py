"""File names the daemon writes: each fits the file system's 255 bytes."""

from __future__ import annotations

from pathlib import Path


# A name must fit the file system's 255 bytes with room for atomic_write's temporary name
# (a dot, a dot, eight random characters and ".tmp") around it.
MAX_NAME_BYTES = 255 - 14


def fitted_name(name: str, max_bytes: int = MAX_NAME_BYTES) -> str:
    """``name`` shortened to ``max_bytes`` of UTF-8, keeping its suffix (the file type)."""
    if len(name.encode()) <= max_bytes:
        return name
    suffix = Path(name).suffix if len(Path(name).suffix.encode()) <= 16 else ""
    stem = name[: len(name) - len(suffix)]
    budget = max_bytes - len(suffix.encode()) - 1
    stem = stem.encode()[:budget].decode("utf-8", "ignore")
    return f"{stem}~{suffix}"


def unique_destination(directory: Path, batch_id: int, name: str) -> Path:
    prefix = f"{batch_id:06d}-"
    return directory / (prefix + fitted_name(name, MAX_NAME_BYTES - len(prefix)))
