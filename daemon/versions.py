"""Loading and saving what a version is made of: model weights, replay memory and meta's
initialisation."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

from retain.daemon.config import Config
from retain.registry import ArtifactStore, ModelVersion
from retain.strategies.job import MetaInit
from retain.strategies.models import build_model
from retain.strategies.replay import ReplayMemory


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
    model = spec_of(version).build()
    model.load_state_dict(artifacts.get_tensors(version.artifact_sha256))
    return model.eval()


def load_memory(version: ModelVersion, artifacts: ArtifactStore) -> ReplayMemory:
    return ReplayMemory.from_tensors(artifacts.get_tensors(version.replay_sha256))


def load_meta_init(version: ModelVersion, artifacts: ArtifactStore) -> MetaInit | None:
    """The lineage's Reptile initialisation as ``version`` keeps it (None before any meta)."""
    return None if version.meta_init_sha256 is None else artifacts.get_tensors(version.meta_init_sha256)


def save_meta_init(meta_init: MetaInit, artifacts: ArtifactStore) -> str:
    return artifacts.put_tensors(meta_init)


def save_model(model: nn.Module, artifacts: ArtifactStore) -> str:
    return artifacts.put_tensors({k: v.detach().cpu() for k, v in model.state_dict().items()})


def save_memory(memory: ReplayMemory, artifacts: ArtifactStore) -> str:
    return artifacts.put_tensors(memory.to_tensors())
