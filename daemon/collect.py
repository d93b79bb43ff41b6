"""``retain gc``: delete the artifacts that no kept version references.

Kept, per model collected: the versions any alias points at or a rollback could return to,
candidates awaiting approval, and the last ``keep_last``; every version of a model not
collected. An artifact is deleted when no kept version of any model references it (weights,
replay manifest and chunks, meta initialisation) and it is older than ``grace_seconds``: a
running daemon writes a candidate's artifacts before it registers the version. The data of
batches ``retain forget`` erased goes whatever references it: their stored files and the
chunks holding their samples.
"""

from __future__ import annotations

import glob
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from retain.daemon.config import DataConfig
from retain.daemon.loading import BatchRejected, file_sha256
from retain.daemon.logs import fields
from retain.daemon.remote_inbox import is_remote
from retain.daemon.versions import memory_parts
from retain.registry import ArtifactError, ArtifactStore, Batch, ModelVersion, Registry

log = logging.getLogger("retain.gc")

# A file in an inbox is hashed only to tell whether it is the erased batch's: no size limit.
_NO_LIMIT = DataConfig(max_file_bytes=2**62)


@dataclass(frozen=True)
class ErasedFile:
    batch: int
    path: Path  # where it is; for one not found, where the registry says it is


@dataclass(frozen=True)
class BatchFolders:
    """Where the daemon puts batch files: each model's inbox, and the folders files move to
    under their batch's ``NNNNNN-`` prefix."""

    inboxes: dict[str, Path]
    moved_to: tuple[Path, ...]  # processed/, rejected/, incoming/

    @classmethod
    def of(cls, config) -> BatchFolders:
        return cls({name: config.for_model(name).inbox for name in config.model_names},
                   (config.processed_dir, config.rejected_dir, config.incoming_dir))

    def files_of(self, batch: Batch) -> list[Path]:
        """Every file that holds ``batch``'s content where the daemon may have left it: at its
        recorded path, under its number's prefix (a crash between the move and the registry's
        update, in a version before 0.3, left the path naming the inbox), or still in the
        inbox under its name with its sha256."""
        prefix = f"{batch.id:06d}-"
        found = {Path(batch.path)} if batch.path and os.path.lexists(batch.path) else set()
        for folder in self.moved_to:
            if folder.is_dir():
                found |= {path for path in folder.glob(glob.escape(prefix) + "*") if not path.name.endswith(".tmp")}
        inbox = self.inboxes.get(batch.model or "")
        if inbox is not None and (inbox / batch.name).is_file():
            try:
                if file_sha256(inbox / batch.name, _NO_LIMIT) == batch.sha256:
                    found.add(inbox / batch.name)
            except (OSError, BatchRejected):
                pass
        return sorted(found)


@dataclass(frozen=True)
class CollectionPlan:
    kept: dict[str, tuple[int, ...]]  # per collected model, the versions whose artifacts stay
    released: dict[str, tuple[int, ...]]  # per collected model, the versions no longer kept
    garbage: dict[str, int]  # artifact digest -> bytes, to delete
    spared: int  # unreferenced artifacts younger than the grace period
    erased_files: tuple[ErasedFile, ...] = ()  # stored files of erased batches, to delete
    erased_unfound: tuple[ErasedFile, ...] = ()  # erased batches whose file is nowhere retain puts one

    @property
    def freed_bytes(self) -> int:
        return sum(self.garbage.values())


def kept_versions(registry: Registry, keep_last: int) -> set[int]:
    """The versions of ``registry``'s model whose artifacts must stay."""
    kept = registry.stacked_versions() | {v.version for v in registry.awaiting_approval()}
    if keep_last > 0:
        kept |= {v.version for v in registry.versions(limit=keep_last)}
    return kept


class StoredMemories:
    """The stored replay memories as gc reads them: each manifest once however many versions
    name it, and presence from the store's listing where it has one (a bucket answers each
    ``has`` with a request)."""

    def __init__(self, artifacts: ArtifactStore, listed: Iterable[str] = ()) -> None:
        self.artifacts = artifacts
        self.listed = set(listed)
        self._parts: dict[str, dict[int, set[str]]] = {}

    def has(self, digest: str) -> bool:
        # Not in the listing may mean written since: ask the store.
        return digest in self.listed or self.artifacts.has(digest)

    def parts(self, digest: str) -> dict[int, set[str]]:
        """``memory_parts``, read once."""
        if digest not in self._parts:
            self._parts[digest] = memory_parts(digest, self.artifacts)
        return self._parts[digest]

    def consisting_of(self, digest: str) -> set[str]:
        """The memory's manifest and chunks (or its one file)."""
        return {digest}.union(*self.parts(digest).values())

    def holding(self, digest: str, sources: set[int]) -> set[str]:
        """The memory's artifacts that hold samples of batches ``sources``."""
        parts = self.parts(digest)
        return set().union(*(parts[source] for source in sources if source in parts))


def version_artifacts(version: ModelVersion, memories: StoredMemories) -> set[str]:
    """Every artifact ``version`` needs to be loaded, promoted or continued. A memory manifest
    that is gone (an erasure's gc deleted it, say) names only itself: the version cannot be
    loaded whatever else stays."""
    digest = version.replay_sha256
    needed = {version.artifact_sha256} | (memories.consisting_of(digest) if memories.has(digest) else {digest})
    if version.meta_init_sha256 is not None:
        needed.add(version.meta_init_sha256)
    return needed


def unusable_artifacts(version: ModelVersion, artifacts: ArtifactStore) -> dict[str, str]:
    """The artifacts ``version`` needs (weights, replay manifest and chunks, meta
    initialisation) that are gone (``retain gc`` deleted them, or someone did) or corrupt (their
    bytes no longer hash to their digest), each with why: such a version cannot become
    production. Every one is read and its digest checked."""
    try:
        needed = version_artifacts(version, StoredMemories(artifacts))
    except ArtifactError as exc:  # a manifest there but unreadable
        return {version.replay_sha256: str(exc)}
    problems = {}
    for digest in sorted(needed):
        if not artifacts.has(digest):
            problems[digest] = "gone"
            continue
        try:
            artifacts.get(digest)
        except ArtifactError as exc:
            problems[digest] = "corrupt" if "corrupt" in str(exc) else str(exc)
    return problems


def plan_collection(
    registry: Registry, artifacts: ArtifactStore, collected: Iterable[str], keep_last: int, grace_seconds: float,
    folders: BatchFolders, now: float | None = None,
) -> CollectionPlan:
    """What ``collect`` would delete. ``ArtifactError`` if a kept version's memory manifest is
    there but cannot be read (corrupt, the bucket unreachable): its chunks would be unknown,
    so nothing is deleted."""
    now = time.time() if now is None else now
    collected = set(collected)
    # Listed first: whatever is written after the listing is not deleted, and an artifact listed
    # but named by a version registered after the versions were read is younger than the grace.
    listed = artifacts.listed()
    memories = StoredMemories(artifacts, listed)
    referenced: set[str] = set()
    kept: dict[str, tuple[int, ...]] = {}
    released: dict[str, tuple[int, ...]] = {}
    for model in registry.models():
        lineage = registry.for_model(model)
        versions = lineage.versions()
        keep = kept_versions(lineage, keep_last) if model in collected else {v.version for v in versions}
        if model in collected:
            kept[model] = tuple(sorted(keep))
            released[model] = tuple(v.version for v in versions if v.version not in keep)
        for version in versions:
            if version.version in keep:
                referenced |= version_artifacts(version, memories)
    unreferenced = {d: (size, modified) for d, (size, modified) in listed.items() if d not in referenced}
    garbage = {d: size for d, (size, modified) in unreferenced.items() if now - modified >= grace_seconds}
    spared = len(unreferenced) - len(garbage)
    erased_chunks, erased_files, unfound = erased_data(registry, memories, collected, folders)
    garbage |= {d: listed[d][0] for d in erased_chunks if d in listed}
    return CollectionPlan(kept, released, garbage, spared, erased_files, unfound)


def erased_data(
    registry: Registry, memories: StoredMemories, models: set[str], folders: BatchFolders,
) -> tuple[set[str], tuple[ErasedFile, ...], tuple[ErasedFile, ...]]:
    """The chunks holding erased batches' samples, whichever versions name them; the erased
    batches' files that are still there; and those whose file is nowhere to be found (an
    erased batch whose file gc deleted has no path any more)."""
    chunks: set[str] = set()
    files: list[ErasedFile] = []
    unfound: list[ErasedFile] = []
    for model in sorted(models):
        lineage = registry.for_model(model)
        erased = {batch.id: batch for batch in lineage.erased_batches()}
        if not erased:
            continue
        for batch in erased.values():
            if not batch.path or is_remote(batch):
                continue
            there = folders.files_of(batch)
            files += [ErasedFile(batch.id, path) for path in there]
            if not there:
                unfound.append(ErasedFile(batch.id, Path(batch.path)))
        for manifest in {v.replay_sha256 for v in lineage.versions()}:
            if memories.has(manifest):
                chunks |= memories.holding(manifest, set(erased))
    return chunks, tuple(files), tuple(unfound)


def collect(plan: CollectionPlan, artifacts: ArtifactStore, registry: Registry) -> list[tuple[ErasedFile, str]]:
    """Delete the plan's garbage and erased files; an erased batch whose files are all gone
    has its path cleared. Returns the erased files that could not be deleted, with why."""
    for digest in sorted(plan.garbage):
        artifacts.delete(digest)
    failed: list[tuple[ErasedFile, str]] = []
    for erased in plan.erased_files:
        try:
            erased.path.unlink(missing_ok=True)
        except OSError as exc:
            failed.append((erased, exc.strerror or str(exc)))
    for batch_id in {e.batch for e in plan.erased_files} - {e.batch for e, _ in failed}:
        registry.move_batch(batch_id, "")
    log.info("artifacts collected",
             extra=fields(artifacts=len(plan.garbage), bytes=plan.freed_bytes, spared=plan.spared,
                          erased_files=len(plan.erased_files) - len(failed)))
    for erased, why in failed:
        log.error("erased batch file not deleted", extra=fields(batch=erased.batch, file=str(erased.path), reason=why))
    return failed
