"""``retain forget``: a batch's samples out of the lineage's replay memory.

The new version keeps production's weights: retraining from production cannot take out
what it learnt from the batch, and retraining from the version before the batch would throw
away every batch since. So the weights still carry the batch, and ``retain show`` says so on
every version descending from it; what is erased is the data: the samples leave the replay
memory now, and ``retain gc`` deletes the batch's stored file and the chunks that hold its
samples, even where older versions still name them (those can then no longer be promoted).
"""

from __future__ import annotations

import json
import logging
from enum import StrEnum

from retain.daemon.logs import fields
from retain.daemon.versions import load_memory, save_memory
from retain.errors import RetainError
from retain.registry import ArtifactStore, BatchState, ModelVersion, NewVersion, Registry, VersionDetails, VersionStatus

log = logging.getLogger("retain.forget")


class WeightsAfterErasure(StrEnum):
    UNCHANGED = "unchanged"


WEIGHTS_UNCHANGED_WHY = ("weights unchanged: retraining from production would not remove what it learnt from the "
                         "batch, and retraining from before it would discard every later batch")


class ErasureError(RetainError):
    pass


def forget_batch(registry: Registry, artifacts: ArtifactStore, batch_id: int, reason: str, actor: str) -> ModelVersion:
    """Register and promote production's successor whose memory holds none of ``batch_id``'s samples."""
    if not reason.strip():
        raise ErasureError("say why the batch is erased (--reason): it is kept in the audit log")
    batch = registry.batch(batch_id)
    if batch is None or batch.model != registry.model:
        raise ErasureError(f"model {registry.model!r} has no batch {batch_id}")
    if batch.state != BatchState.DONE:  # checked again as the version is registered
        raise ErasureError(f"batch {batch_id} is {batch.state}: only a done batch's samples can be erased")
    production = registry.production()
    if production is None:
        raise ErasureError(f"model {registry.model!r} has no production version")
    memory = load_memory(production, artifacts)
    remaining = memory.without_source(batch_id)
    removed = len(memory) - len(remaining)
    new = NewVersion(
        status=VersionStatus.ACCEPTED, strategy="erasure", model_spec=json.loads(production.model_spec),
        artifact_sha256=production.artifact_sha256, replay_sha256=save_memory(remaining, artifacts),
        meta_init_sha256=production.meta_init_sha256, parent=production.version,
        rationale=(f"batch {batch_id} erased ({reason}): {removed} of its samples left the replay memory; "
                   f"{WEIGHTS_UNCHANGED_WHY}"),
        details=VersionDetails(erased_batch=batch_id, erasure_reason=reason, weights=WeightsAfterErasure.UNCHANGED,
                               memory_audit_samples=int(remaining.audit.sum())),
    )
    row, _ = registry.register_erasure(new, batch_id, actor, reason)
    log.info("batch erased", extra=fields(model=registry.model, batch=batch_id, version=row.version,
                                          samples_removed=removed, actor=actor))
    return row
