"""Loading and saving what a version is made of: model weights, replay memory and meta's
initialisation."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from retain.registry import ArtifactError, ArtifactStore, ModelVersion
from retain.strategies.job import MetaInit
from retain.strategies.models import build_model
from retain.strategies.replay import ReplayMemory, concatenate


@dataclass(frozen=True)
class ModelSpec:
    """How to rebuild a version's architecture; stored on the version so that a later
    config change cannot make old versions unloadable."""

    factory: str
    input_shape: tuple[int, ...]
    num_classes: int
    head: str = "head"
    kwargs: dict[str, Any] = field(default_factory=dict)

    def build(self) -> nn.Module:
        return build_model(self.factory, self.input_shape, self.num_classes, self.kwargs)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"input_shape": list(self.input_shape)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelSpec":
        return cls(
            factory=data["factory"],
            input_shape=tuple(data["input_shape"]),
            num_classes=int(data["num_classes"]),
            head=data.get("head", "head"),
            kwargs=dict(data.get("kwargs", {})),
        )


def spec_of(version: ModelVersion) -> ModelSpec:
    return ModelSpec.from_dict(json.loads(version.model_spec))


def load_model(version: ModelVersion, artifacts: ArtifactStore) -> nn.Module:
    """The version's model in eval mode on the CPU, weights verified and loaded safely."""
    try:
        model = spec_of(version).build()
    except (ValueError, TypeError) as exc:
        raise ArtifactError(f"{version.model}@{version.version}: its model cannot be built: {exc}") from None
    model.load_state_dict(artifacts.get_tensors(version.artifact_sha256))
    return model.eval()


# A replay memory is stored as a manifest: per source batch, the digest of the chunk holding
# that batch's samples (x and y, written once, when the batch is first saved in a memory) and
# which rows of it the memory keeps, with their audit flags. A new version so stores its new
# batch's samples and a manifest of a few bytes per sample, not the whole memory again.
MANIFEST_MARK = "retain.replay_manifest"  # its value: the samples' shape


def load_memory(version: ModelVersion, artifacts: ArtifactStore) -> ReplayMemory:
    return read_memory(version.replay_sha256, artifacts)


def read_memory(digest: str, artifacts: ArtifactStore) -> ReplayMemory:
    """The memory a manifest (or, before chunks, one whole-memory artifact) describes."""
    tensors = artifacts.get_tensors(digest)
    if MANIFEST_MARK not in tensors:
        return ReplayMemory.from_tensors(tensors)
    parts = []
    for source, chunk in manifest_chunks(tensors):
        rows, audit = tensors[f"{source}/{chunk}/rows"].long(), tensors[f"{source}/{chunk}/audit"].bool()
        stored = artifacts.get_tensors(chunk)
        if len(audit) != len(rows) or (len(rows) and (int(rows.min()) < 0 or int(rows.max()) >= len(stored["y"]))):
            raise ArtifactError(f"replay manifest {digest}: its rows of chunk {chunk} are not in it")
        parts.append(ReplayMemory(
            x=stored["x"][rows].float(), y=stored["y"][rows].long(),
            source=torch.full((len(rows),), source, dtype=torch.long), audit=audit,
            chunk_row=rows, chunks={source: chunk},
        ))
    if not parts:
        return ReplayMemory.empty(tuple(tensors[MANIFEST_MARK].tolist()))
    return concatenate(parts)


def manifest_chunks(tensors: dict[str, torch.Tensor]) -> list[tuple[int, str]]:
    """``(source, chunk digest)`` of every chunk a manifest names, by source."""
    named = {tuple(name.split("/")[:2]) for name in tensors if name.endswith("/rows")}
    return sorted((int(source), chunk) for source, chunk in named)


def memory_parts(digest: str, artifacts: ArtifactStore) -> dict[int, set[str]]:
    """Per source batch of a stored memory, the artifacts holding its samples: its chunk, or
    the memory itself where it was stored whole (before chunks)."""
    tensors = artifacts.get_tensors(digest)
    if MANIFEST_MARK not in tensors:
        return {int(source): {digest} for source in tensors["source"].unique().tolist()}
    parts: dict[int, set[str]] = {}
    for source, chunk in manifest_chunks(tensors):
        parts.setdefault(source, set()).add(chunk)
    return parts


def memory_artifacts(digest: str, artifacts: ArtifactStore) -> set[str]:
    """The artifacts a stored memory consists of: its manifest and chunks (or its one file)."""
    return {digest}.union(*memory_parts(digest, artifacts).values())


def load_meta_init(version: ModelVersion, artifacts: ArtifactStore) -> MetaInit | None:
    """The lineage's Reptile initialisation as ``version`` keeps it (None before any meta)."""
    return None if version.meta_init_sha256 is None else artifacts.get_tensors(version.meta_init_sha256)


def save_meta_init(meta_init: MetaInit, artifacts: ArtifactStore) -> str:
    return artifacts.put_tensors(meta_init)


def save_model(model: nn.Module, artifacts: ArtifactStore) -> str:
    return artifacts.put_tensors({k: v.detach().cpu() for k, v in model.state_dict().items()})


def save_memory(memory: ReplayMemory, artifacts: ArtifactStore) -> str:
    """Store ``memory``: a chunk for each source batch not stored yet, then its manifest."""
    entries = {MANIFEST_MARK: torch.tensor(list(memory.x.shape[1:]), dtype=torch.long)}
    for source in sorted(set(memory.source.tolist())):
        selected = memory.source == source
        rows, chunk = memory.chunk_row[selected], memory.chunks.get(source)
        if chunk is None or bool((rows < 0).any()):
            chunk = artifacts.put_tensors({"x": memory.x[selected], "y": memory.y[selected]})
            rows = torch.arange(int(selected.sum()))
        entries[f"{source}/{chunk}/rows"] = rows.int()
        entries[f"{source}/{chunk}/audit"] = memory.audit[selected]
    return artifacts.put_tensors(entries)
