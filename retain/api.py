"""The Python API: ``retain.connect`` opens a registry; its ``Client`` lists models and
versions, loads a version as a module and predicts with it.

    import retain
    with retain.connect("retain.toml") as registry:
        model = registry.load_model("digits@production")
        labels = registry.predict("digits@production", x)

Every error is a ``retain.RetainError``. Nothing here imports Avalanche, and torch is imported
only by the calls that load tensors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from retain.daemon.config import Config, load_config
from retain.errors import RetainError, as_retain_errors
from retain.registry import ArtifactStore, Batch, ModelVersion, Registry, VersionRef, as_utc, require_database

if TYPE_CHECKING:
    from retain.served import VersionedModel


@dataclass(frozen=True)
class ModelSummary:
    """One model of the registry: its production version and the forgetting measured when
    that was a candidate, its versions, its queue, and its latest batch."""

    name: str
    production_version: int | None
    versions: int
    queue_depth: int
    forgetting: float | None = None
    last_batch: Batch | None = None


@dataclass(frozen=True)
class VersionInfo:
    """One registered version and what the gate measured of it."""

    model: str
    version: int
    parent: int | None
    status: str  # "accepted" or "rejected" by the forgetting gate
    strategy: str
    forgetting: float | None
    acc_new_candidate: float | None
    rationale: str
    artifact_sha256: str
    created_at: datetime
    is_production: bool

    @classmethod
    def of(cls, row: ModelVersion, production: int | None) -> VersionInfo:
        return cls(model=row.model, version=row.version, parent=row.parent, status=row.status, strategy=row.strategy,
                   forgetting=row.forgetting, acc_new_candidate=row.acc_new_candidate, rationale=row.rationale,
                   artifact_sha256=row.artifact_sha256, created_at=as_utc(row.created_at),
                   is_production=row.version == production)


@dataclass(frozen=True)
class Predictions:
    """Predicted class ids, each sample's most probable classes, and the version that made them."""

    model: str
    version: int
    labels: list[int]
    # Per sample, (class, probability) for its ``top_k`` most probable classes, most probable first.
    probabilities: list[list[tuple[int, float]]] = field(default_factory=list)


class Client:
    """A registry and its artifacts. Use ``retain.connect`` to make one; close it (or use it
    as a context manager) to release the database connections."""

    def __init__(self, registry: Registry, artifacts: ArtifactStore, models: list[str] | None = None) -> None:
        self._registry = registry
        self._artifacts = artifacts
        self._configured = models or []

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._registry.close()

    def models(self) -> list[ModelSummary]:
        """Every model the config names or the registry holds."""
        with as_retain_errors():
            depths = self._registry.queue_depths()
            summaries = []
            for name in dict.fromkeys([*self._configured, *self._registry.models()]):
                lineage = self._registry.for_model(name)
                production = lineage.production()
                last = lineage.batches(limit=1)
                summaries.append(ModelSummary(
                    name, production.version if production else None, lineage.count_versions(), depths.get(name, 0),
                    production.forgetting if production else None, last[0] if last else None))
            return summaries

    def versions(self, model: str | None = None, limit: int | None = None) -> list[VersionInfo]:
        """A model's versions, oldest first (the last ``limit`` of them)."""
        with as_retain_errors():
            lineage = self._lineage(model)
            production = lineage.alias()
            return [VersionInfo.of(row, production) for row in lineage.versions(limit=limit)]

    def version(self, ref: str) -> VersionInfo:
        """The version ``ref`` names: ``7``, ``production``, ``NAME@7`` or ``NAME@production``."""
        with as_retain_errors():
            lineage, row = self._row(ref)
            return VersionInfo.of(row, lineage.alias())

    def load_model(self, ref: str) -> VersionedModel:
        """The version's model, weights verified, in eval mode on the CPU."""
        with as_retain_errors():
            from retain.daemon.versions import load_model, spec_of
            from retain.served import ModelCard, VersionedModel

            _, row = self._row(ref)
            spec = spec_of(row)
            card = ModelCard(model=row.model, version=row.version, artifact_sha256=row.artifact_sha256,
                             input_shape=spec.input_shape, num_classes=spec.num_classes, factory=spec.factory)
            return VersionedModel(load_model(row, self._artifacts), card)

    def predict(self, ref: str, x: Any, top_k: int = 3) -> Predictions:
        """Class ids for ``x`` (an array or tensor of samples, one per row), with each sample's
        ``top_k`` most probable classes."""
        if top_k < 1:
            raise RetainError(f"top_k must be at least 1, not {top_k}")
        with as_retain_errors():
            from retain.served import as_samples
            from retain.strategies.models import probabilities, top_classes

            model = self.load_model(ref)
            probable = probabilities(model.module, as_samples(x, model.card))
            labels = probable.argmax(1).tolist() if len(probable) else []
            return Predictions(model.card.model, model.card.version, labels, top_classes(probable, top_k))

    def _lineage(self, model: str | None) -> Registry:
        if model is None:
            if len(self._configured) > 1:
                raise RetainError(f"several models ({', '.join(self._configured)}): name one")
            model = self._configured[0] if self._configured else self._registry.model
        return self._registry.for_model(model)

    def _row(self, ref: str) -> tuple[Registry, ModelVersion]:
        parsed = VersionRef.parse(ref)
        lineage = self._lineage(parsed.model)
        return lineage, lineage.version(lineage.number_of(parsed))


def connect(target: str | Path | Config = "retain.toml", artifacts: str | Path | None = None) -> Client:
    """Open a registry: from a config file (or a loaded ``Config``), or from a database URL.

    With a URL, ``artifacts`` is the artifact folder (default: ``artifacts/`` beside a SQLite
    file, as ``retain init`` lays a workspace out) or an ``s3://`` URL.
    """
    with as_retain_errors():
        return _connect(target, artifacts)


def _connect(target: str | Path | Config, artifacts: str | Path | None) -> Client:
    from retain.daemon.config import open_artifacts

    if isinstance(target, Config) or not str(target).partition("://")[1]:
        from retain.daemon.config import add_factory_folder

        config = target if isinstance(target, Config) else load_config(Path(target))
        add_factory_folder(config.base_dir)
        require_database(config.registry_url)
        registry = Registry(config.registry_url, model=config.model_names[0])
        return Client(registry, open_artifacts(config), config.model_names)
    url = str(target)
    require_database(url)
    if artifacts is None:
        if not url.startswith("sqlite:///"):
            raise RetainError(f"{url}: pass artifacts= (a folder or an s3:// URL) with a registry URL")
        artifacts = Path(url.removeprefix("sqlite:///")).parent / "artifacts"
    from retain.registry import S3Objects

    store = (ArtifactStore(Path.home() / ".cache" / "retain" / "artifacts", S3Objects(str(artifacts)))
             if str(artifacts).startswith("s3://") else ArtifactStore(Path(artifacts)))
    return Client(Registry(url), store)
