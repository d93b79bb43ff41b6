"""Content-addressed artifact files: ``<root>/sha256/ab/<digest>``.

Writes go to a temporary name in the same directory, are fsynced and renamed, so a crash
never leaves a partial artifact under its final name. Reads verify the digest.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import tempfile
from pathlib import Path
from collections.abc import Callable
from typing import Any, BinaryIO

from retain.errors import RetainError

_TEMP_PREFIX = "."
_TEMP_SUFFIX = ".tmp"
# mkstemp's names: the prefix, eight random characters, the suffix.
_TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


def stale_temp_files(directory: Path, before: float, target: str = "*") -> list[Path]:
    """Temporary files ``atomic_write`` left in ``directory`` (for targets matching the glob
    ``target``) when a process died mid-write, last modified before ``before`` (a time)."""
    found = []
    for path in directory.glob(f"{_TEMP_PREFIX}{target}.*{_TEMP_SUFFIX}"):
        try:
            info = path.lstat()
        except FileNotFoundError:
            continue
        if _TEMP_NAME.match(path.name) and path.is_file() and info.st_mtime < before:
            found.append(path)
    return found


def atomic_write(target: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write ``target`` through a temporary dot-file in the same directory, fsync it, then
    rename it into place: readers see the old file or the whole new one, never a part."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f"{_TEMP_PREFIX}{target.name}.", suffix=_TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a power cut
    finally:
        os.close(dir_fd)


def atomic_copy(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` with ``atomic_write``: never a partial file under ``target``."""
    with source.open("rb") as reader:
        atomic_write(target, lambda handle: shutil.copyfileobj(reader, handle))


class ArtifactError(RetainError):
    """An artifact is missing or does not match its digest."""


class ArtifactStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, digest: str) -> Path:
        return self.root / "sha256" / digest[:2] / digest

    def put(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        target = self.path(digest)
        if target.exists():
            return digest
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, lambda handle: handle.write(data))
        return digest

    def get(self, digest: str) -> bytes:
        target = self.path(digest)
        try:
            data = target.read_bytes()
        except FileNotFoundError as exc:
            raise ArtifactError(f"artifact {digest} is missing ({target})") from exc
        actual = hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise ArtifactError(f"artifact {digest} is corrupt: its content hashes to {actual}")
        return data

    def put_tensors(self, tensors: dict[str, Any]) -> str:
        """Store a dict of tensors (a ``state_dict`` or replay memory)."""
        import torch  # imported here: read-only registry commands never load tensors

        buffer = io.BytesIO()
        torch.save(tensors, buffer)
        return self.put(buffer.getvalue())

    def sweep_temp_files(self, before: float) -> list[Path]:
        """Delete the temporary files of writes that died before ``before``; returns them."""
        swept = []
        for folder in sorted((self.root / "sha256").glob("??")):
            for path in stale_temp_files(folder, before, target="[0-9a-f]" * 64):
                path.unlink(missing_ok=True)
                swept.append(path)
        return swept

    def get_tensors(self, digest: str) -> dict[str, Any]:
        """Load a dict of tensors, verified, without unpickling arbitrary objects."""
        import torch

        return torch.load(io.BytesIO(self.get(digest)), weights_only=True, map_location="cpu")
