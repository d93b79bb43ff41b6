"""``retain init``: the workdir, the registry, and version 1 with its replay memory."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from safetensors import SafetensorError

from retain.errors import RetainError
from retain.daemon.config import Config
from retain.daemon.loading import BatchRejected, DataSpec, load_batch, read_arrays
from retain.daemon.logs import fields
from retain.daemon.service import ensure_workdir
from retain.daemon.config import open_artifacts
from retain.daemon.versions import ModelSpec, save_memory, save_model
from retain.registry import (
    ModelVersion,
    NewVersion,
    Registry,
    RegistryError,
    SchemaError,
    VersionDetails,
    VersionStatus,
)
from retain.strategies.forgetting import evaluate_gate
from retain.strategies.models import head_width
from retain.strategies.paired import audit_sizing
from retain.strategies.replay import INIT_SOURCE, ReplayMemory, remember, split_holdout
from retain.strategies.sources import MissingLibrary, find_head
from retain.strategies.training import TrainingHooks, TrainingProgress, train_initial

log = logging.getLogger("retain.init")


class InitError(RetainError):
    """``retain init`` cannot go on; the message says why."""


def source_name(config: Config) -> str:
    """The config key that names the model's source, with its value, for messages."""
    key = next((k for k in ("torchvision", "timm") if getattr(config.model, k) is not None), "factory")
    return f"model.{key} {getattr(config.model, key)!r}"


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """A state_dict from a ``.safetensors`` file or a ``torch.save`` one (``weights_only``)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, weights_only=True, map_location="cpu")


def infer_model_spec(config: Config, data: Path) -> ModelSpec:
    """The model's shape from config, or from the init data where config leaves it out."""
    try:
        x, y = read_arrays(data, config.data)
    except BatchRejected as exc:
        raise InitError(f"{data}: {exc.reason}") from None
    if y is None:
        raise InitError(f"{data}: init data needs labels ('y' or column {config.data.label_column!r})")
    input_shape = tuple(config.model.input_shape or x.shape[1:])
    if not input_shape:
        raise InitError(f"{data}: 'x' must have one row per sample")
    num_classes = config.model.num_classes
    if num_classes is None:
        if len(y) == 0 or y.dtype.kind not in "iuf":
            raise InitError(f"{data}: cannot infer the number of classes from its labels")
        num_classes = max(int(y.max()) + 1, 2)
    if config.model.input_shape is None and x.ndim == 2 and len(input_shape) == 1:
        input_shape = (math.prod(input_shape),)
    factory, kwargs = config.model.source()
    return ModelSpec(
        factory=factory,
        input_shape=input_shape,
        num_classes=num_classes,
        head=config.model.head or "",  # found on the built model when unset
        kwargs=kwargs,
    )


def init_workspace(
    config: Config,
    data: Path,
    train: bool,
    actor: str,
    on_progress: Callable[[TrainingProgress], None] | None = None,
) -> ModelVersion:
    """Register version 1 as production, with a replay memory seeded from ``data``."""
    ensure_workdir(config)
    try:
        registry = Registry(config.registry_url, model=config.model_name)
    except SchemaError as exc:
        raise InitError(f"{config.registry_url}: {exc}") from exc
    try:
        if registry.alias() is not None:
            what = config.workdir if len(config.model_names) == 1 else f"model {config.model_name!r}"
            raise InitError(f"{what} is already initialised: production is version {registry.alias()}")
        spec = infer_model_spec(config, data)
        torch.manual_seed(config.training.seed)  # the initial weights are reproducible too
        try:
            model = spec.build()
        except MissingLibrary as exc:
            raise InitError(str(exc)) from None
        except (ValueError, TypeError) as exc:
            raise InitError(f"{source_name(config)}: {exc}") from None
        try:
            if not spec.head:
                spec = replace(spec, head=find_head(model))
            head_width(model, spec.head)
        except ValueError as exc:
            raise InitError(f"model.head: {exc}") from None

        data_spec = DataSpec(spec.input_shape, spec.num_classes, config.data.min_samples,
                             config.data)
        try:
            loaded = load_batch(data, data_spec)
        except BatchRejected as exc:
            raise InitError(f"{data}: {exc.reason}") from None
        assert loaded.y is not None
        train_part, holdout = split_holdout(loaded.x, loaded.y, config.gate.holdout_fraction, config.training.seed)

        if train:
            model = train_initial(
                model, *train_part, config.training.settings(), TrainingHooks(on_progress=on_progress)
            )
        elif config.model.weights is not None:
            weights = config.model.weights
            weights = weights if weights.is_absolute() else config.base_dir / weights
            try:
                model.load_state_dict(read_weights(weights))
            except (OSError, RuntimeError, SafetensorError) as exc:
                raise InitError(f"model.weights {weights}: {str(exc).splitlines()[0]}") from None
        else:
            raise InitError("no initial weights: pass --train, or set model.weights in the config")

        memory = remember(
            ReplayMemory.empty(spec.input_shape),
            train_part,
            holdout,
            source=INIT_SOURCE,
            capacity=config.replay.capacity,
            audit_fraction=config.replay.audit_fraction,
            seed=config.training.seed,
        )
        if not memory.audit.any():
            raise InitError(f"{data}: too few samples to hold any out for the forgetting audit")
        gate = evaluate_gate(model, model, memory.audit_groups(), holdout)
        artifacts = open_artifacts(config)
        version, _ = registry.register_version(
            NewVersion(
                status=VersionStatus.ACCEPTED,
                strategy="initial" if train else "imported",
                model_spec=spec.to_dict(),
                artifact_sha256=save_model(model, artifacts),
                replay_sha256=save_memory(memory, artifacts),
                acc_old_candidate=gate.acc_old_candidate,
                acc_new_candidate=gate.acc_new_candidate,
                rationale=f"initial model {'trained on' if train else 'imported with'} {data.name}",
                details=VersionDetails(init_data=str(data), n_train=len(train_part[1]), n_holdout=len(holdout[1]),
                                       memory_audit_samples=int(memory.audit.sum())),
            ),
            promote=True,
            actor=actor,
        )
        log.info(
            "workspace initialised",
            extra=fields(model=config.model_name, version=version.version, workdir=str(config.workdir),
                         accuracy=round(gate.acc_new_candidate, 4)),
        )
        sizing = audit_sizing(int(memory.audit.sum()), gate.acc_old_production, config.gate)
        if not sizing.sufficient:
            log.warning("audit set too small", extra=fields(model=config.model_name, audit_samples=sizing.samples,
                                                             needed=sizing.needed))
        return version
    except RegistryError as exc:
        raise InitError(str(exc)) from None
    finally:
        registry.close()
