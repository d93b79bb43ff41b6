"""An inbox in the artifact bucket, for hosts that share no folder: ``retain ingest --remote``
uploads a file under ``<prefix>/inbox/<sha256>/<name>`` and queues it in the registry; any
worker that claims the batch downloads it, checks its size and digest, and processes it."""

from __future__ import annotations

from pathlib import Path

from retain.daemon.config import Config
from retain.daemon.loading import BatchRejected, file_sha256
from retain.daemon.names import unique_destination
from retain.errors import RetainError
from retain.registry import ArtifactError, ArtifactStore, Batch, ObjectTooLarge, Registry
from retain.registry.store import REMOTE_BATCH_PREFIX


class RemoteInboxError(RetainError):
    """A file cannot be ingested remotely (no bucket configured, or not a readable file)."""


def is_remote(batch: Batch) -> bool:
    return batch.path.startswith(REMOTE_BATCH_PREFIX)


def upload_batch(config: Config, registry: Registry, artifacts: ArtifactStore, path: Path) -> tuple[Batch, bool]:
    """Upload ``path`` to the bucket's inbox and queue it; ``(batch, False)`` if its content
    was queued before (nothing is uploaded again)."""
    if artifacts.remote is None:
        raise RemoteInboxError("--remote needs artifacts.url (an s3:// bucket the workers share)")
    try:
        path.name.encode("utf-8")
    except UnicodeEncodeError:
        raise RemoteInboxError(f"{path}: file name is not valid UTF-8; rename it") from None
    try:
        digest = file_sha256(path, config.data)  # the daemon's own limits, checked here first
    except BatchRejected as exc:
        raise RemoteInboxError(f"{path}: {exc.reason}") from None
    except FileNotFoundError:
        raise RemoteInboxError(f"{path}: no such file") from None
    url = artifacts.remote.url_of("inbox", digest, path.name)
    known = registry.batch_by_sha256(digest)
    if known is not None:
        return known, False
    artifacts.remote.upload_file(url, path, digest)
    return registry.add_batch(digest, url, path.name)


def incoming_path(batch: Batch, folder: Path) -> Path:
    """Where a worker keeps its download of the batch's file (its name fitted, as the local
    inbox's are: an object name may be longer than a file name can)."""
    return unique_destination(folder, batch.id, Path(batch.path).name)


def fetch_batch(batch: Batch, artifacts: ArtifactStore, folder: Path, max_bytes: int) -> Path:
    """The batch's file, downloaded into ``folder`` (once: a retry finds it there).
    ``BatchRejected`` when the object is over ``max_bytes``."""
    if artifacts.remote is None:
        raise ArtifactError(f"batch {batch.id} is in a bucket ({batch.path}) but this worker has no artifacts.url")
    target = incoming_path(batch, folder)
    if not target.exists():
        try:
            artifacts.remote.download_file(batch.path, target, max_bytes)
        except ObjectTooLarge as exc:
            raise BatchRejected(str(exc)) from None
    return target
