"""retain: a continual-learning daemon with a model registry.

``retain.daemon`` (the process: config, watcher, pipeline, service), ``retain.registry``
(tables, registry, artifacts) and ``retain.strategies`` (the adaptation step: shift, policy,
training, gate) are its parts, and ``retain.cli`` the command line over them. The names a user
needs are here. Importing ``retain`` does not import torch.
"""

from importlib.metadata import PackageNotFoundError, version

from retain.api import Client, ModelSummary, Predictions, VersionInfo, connect
from retain.daemon.config import Config, ConfigError, load_config
from retain.errors import RetainError
from retain.registry import (
    PRODUCTION,
    ArtifactError,
    ArtifactStore,
    Batch,
    ModelVersion,
    Registry,
    RegistryError,
    UnknownVersion,
)

try:
    __version__ = version("retain")
except PackageNotFoundError:  # running from a checkout that is not installed
    __version__ = "0+unknown"

__all__ = [
    "PRODUCTION",
    "ArtifactError",
    "ArtifactStore",
    "Batch",
    "Client",
    "Config",
    "ConfigError",
    "ModelSummary",
    "ModelVersion",
    "Predictions",
    "Registry",
    "RegistryError",
    "RetainError",
    "UnknownVersion",
    "VersionInfo",
    "__version__",
    "connect",
    "load_config",
]
