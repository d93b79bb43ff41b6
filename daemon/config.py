"""``retain.toml``: one file, validated by pydantic, with errors that name the key.

Relative paths are resolved against the directory that holds the config file.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tomllib
import urllib.parse
from pathlib import Path
from dataclasses import asdict
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.dataclasses import dataclass

from retain.daemon.export import ExportFormat
from retain.errors import RetainError
from retain.registry.artifacts import ArtifactStore, S3Objects
from retain.registry.tables import DEFAULT_MODEL, MODEL_NAME_PATTERN, EventKind
from retain.strategies.settings import GateConfig, PolicyConfig, ReptileSettings, ShiftThresholds, TrainingSettings

CONFIG_ENV = "RETAIN_CONFIG"
DEFAULT_CONFIG = "retain.toml"


class ConfigError(RetainError):
    """The config file is missing or invalid; the message names the file and key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PathsConfig(_Section):
    workdir: Path = Path(".")
    inbox: Path = Path("inbox")  # relative to workdir


class RegistryConfig(_Section):
    url: str = "sqlite:///registry.db"  # a relative SQLite path is inside workdir
    auto_promote: bool = True


class ArtifactsConfig(_Section):
    # "" keeps artifacts in <workdir>/artifacts only; s3://bucket/prefix shares them between
    # workers on several machines, the local folder then being each one's cache.
    url: str = Field(default="", pattern=r"^(s3://[^/]+(/.*)?)?$")
    endpoint_url: str = ""  # an S3-compatible server (SeaweedFS, MinIO, …); "" is AWS
    region: str = ""


class PublishConfig(_Section):
    # "": nothing published. Otherwise, on every production move, the version is written under
    # <dir>/<model>/<version>/ and <dir>/<model>/current repointed (relative to workdir).
    dir: Path | None = None
    formats: list[ExportFormat] = Field(default_factory=lambda: [ExportFormat.SAFETENSORS], min_length=1)
    # Published files are for a model server that may run as another user (Triton's usual set-up):
    # readable by others by default; folders get the matching search bits. "0640" for a group.
    mode: str = Field(default="0644", pattern=r"^0?[0-7]{3}$")

    @property
    def file_mode(self) -> int:
        return int(self.mode, 8)


class WebhookConfig(_Section):
    """One ``[[webhooks]]`` table: where to POST which events, signed with ``secret``."""

    url: str = Field(pattern=r"^https?://")
    events: list[EventKind] = Field(default_factory=lambda: list(EventKind), min_length=1)
    # The HMAC-SHA256 key of X-Retain-Signature; secret_env names an environment variable
    # holding it instead, to keep it out of the file.
    secret: str = ""
    secret_env: str = ""
    max_attempts: int = Field(default=10, ge=1)
    backoff_seconds: float = Field(default=5.0, gt=0)  # doubles after each failure, at most an hour
    timeout_seconds: float = Field(default=10.0, gt=0)

    @field_validator("url")
    @classmethod
    def _no_credentials(cls, url: str) -> str:
        # urllib would not send them (the delivery fails every time) and the URL is logged and
        # listed: a password in it would be printed everywhere.
        netloc = urllib.parse.urlsplit(url).netloc
        if "@" in netloc:
            host = netloc.rpartition("@")[2]
            raise ValueError(f"a webhook URL may not hold credentials (…@{host}): they would be printed in logs and "
                             "listings; the receiver checks X-Retain-Signature (secret or secret_env) instead")
        return url

    def signing_key(self) -> bytes:
        if self.secret_env:
            value = os.environ.get(self.secret_env)
            if value is None:
                raise ConfigError(f"webhook {self.url}: secret_env {self.secret_env} is not set")
            return value.encode()
        return self.secret.encode()


class ModelConfig(_Section):
    # Where the architecture comes from, one of: a factory of one's own (module:function or
    # file.py:function), a torchvision model by name, a timm model by name. The last two are
    # built with their library's own class-count keyword and no download.
    factory: str = "retain.strategies.models:mlp"
    torchvision: str | None = None  # e.g. "resnet18"
    timm: str | None = None  # e.g. "resnet18"; needs retain[vision]
    kwargs: dict[str, Any] = Field(default_factory=dict)
    input_shape: list[int] | None = None  # inferred from the init data when absent
    num_classes: int | None = Field(default=None, ge=2)
    # The final Linear layer (a dotted module name); unset: the last Linear under the first of
    # head, fc, classifier, score the model has (retain.strategies.sources.find_head).
    head: str | None = None
    # Initial weights for `retain init` without --train: a state_dict saved with torch.save
    # (loaded with weights_only=True) or a .safetensors file.
    weights: Path | None = None
    # Labels up to max_classes - 1 are accepted; a batch with classes beyond the head's width
    # widens it (class-incremental streams). A label past the cap is refused.
    max_classes: int = Field(default=1000, ge=2)
    # Where this model's files arrive, relative to workdir: by default inbox/NAME/ when the
    # config has several models, the inbox itself when it has one.
    inbox: Path | None = None
    # This model's own values for keys of the top-level sections; the rest come from those.
    policy: dict[str, Any] = Field(default_factory=dict)
    training: dict[str, Any] = Field(default_factory=dict)
    gate: dict[str, Any] = Field(default_factory=dict)
    replay: dict[str, Any] = Field(default_factory=dict)

    @field_validator("input_shape")
    @classmethod
    def _positive(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and (not value or any(d <= 0 for d in value)):
            raise ValueError("every dimension must be a positive integer")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> "ModelConfig":
        named = [key for key in ("factory", "torchvision", "timm")
                 if key in self.model_fields_set and getattr(self, key) is not None]
        if len(named) > 1:
            raise ValueError(f"set one model source, not {' and '.join(named)}")
        return self

    def source(self) -> tuple[str, dict[str, Any]]:
        """The factory spec and keywords that build this model, whichever source names it."""
        if self.torchvision is not None:
            return "retain.strategies.sources:torchvision_model", {"name": self.torchvision, **self.kwargs}
        if self.timm is not None:
            return "retain.strategies.sources:timm_model", {"name": self.timm, **self.kwargs}
        return self.factory, dict(self.kwargs)


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class TrainingConfig(TrainingSettings):
    """``[training]`` with the device resolved here, where a bad one is a config error."""

    def resolved_device(self) -> str:
        """The device training runs on: ``auto`` is ``cuda`` where torch sees a GPU.

        Asking for ``cuda`` where there is none is a config error here, at start-up, rather
        than a torch error from inside the first training run.
        """
        from retain.strategies.training import resolve_device

        try:
            return resolve_device(self.device)
        except ValueError as exc:
            raise ConfigError(f'{exc}; set it to "auto" or "cpu"') from None

    def settings(self, seed: int | None = None) -> TrainingSettings:
        """What the strategies take: this section with the device resolved (and a batch's seed)."""
        return TrainingSettings(**{
            **asdict(self), "device": self.resolved_device(), "seed": self.seed if seed is None else seed})


class ReplayConfig(_Section):
    capacity: int = Field(default=1000, ge=10)
    audit_fraction: float = Field(default=0.3, gt=0, lt=1)


class MetricsConfig(_Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=9464, ge=0, le=65535)
    recent_batches: int = Field(default=10, ge=0)  # per-batch forgetting series kept


class DataConfig(_Section):
    label_column: str = "label"  # for .csv/.parquet
    min_samples: int = Field(default=20, ge=4)
    max_samples: int = Field(default=1_000_000, ge=1)
    max_file_bytes: int = Field(default=1 << 30, ge=1)
    # Checked against what a file declares (array headers, row counts) before anything is
    # allocated: the file, its arrays as stored and as float32 tensors, together.
    max_bytes_in_memory: int = Field(default=2 << 30, ge=1)
    # Larger features overflow float32 inside the model and the shift test.
    max_abs_value: float = Field(default=1e12, gt=0)
    follow_symlinks: bool = False  # a link in the inbox is refused, not read, by default


class DaemonConfig(_Section):
    lease_seconds: float = Field(default=300, gt=0)
    max_attempts: int = Field(default=3, ge=1)
    settle_seconds: float = Field(default=1.0, ge=0)  # files without a close event
    # A file that is not whole (a zip without its directory, parquet without its footer, a CSV
    # cut mid-line) waits for its writer up to this long after its last change.
    incomplete_wait_seconds: float = Field(default=120, ge=0)
    rescan_seconds: float = Field(default=60, gt=0)  # catch events inotify dropped
    stuck_seconds: float = Field(default=900, gt=0)  # no progress this long: stop watchdog pings
    stall_alert_seconds: float = Field(default=3600, gt=0)  # exported for the queue-stalled alert


OVERRIDABLE = ("policy", "training", "gate", "replay")  # sections a [models.NAME] table may override


class Config(_Section):
    """The whole file. With several models, ``for_model(name)`` is the config one model's
    pipeline reads: its ``[models.NAME]`` table as ``model``, its overrides merged in."""

    paths: PathsConfig = Field(default_factory=PathsConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    artifacts: ArtifactsConfig = Field(default_factory=ArtifactsConfig)
    publish: PublishConfig = Field(default_factory=PublishConfig)
    webhooks: list[WebhookConfig] = Field(default_factory=list)
    model: ModelConfig = Field(default_factory=ModelConfig)  # a lone model: the model "default"
    models: dict[str, ModelConfig] = Field(default_factory=dict)
    shift: ShiftThresholds = Field(default_factory=ShiftThresholds)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    meta: ReptileSettings = Field(default_factory=ReptileSettings)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    replay: ReplayConfig = Field(default_factory=ReplayConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    daemon: DaemonConfig = Field(default_factory=DaemonConfig)

    source: Path | None = Field(default=None, exclude=True)
    selected: str | None = Field(default=None, exclude=True)  # the model for_model() chose

    @model_validator(mode="after")
    def _check_models(self) -> "Config":
        if self.models and "model" in self.model_fields_set:
            raise ValueError("[model] and [models.NAME] tables: use [model] for one model, [models.NAME] for several")
        for name in self.models:
            if not re.match(MODEL_NAME_PATTERN, name):
                raise ValueError(f"models.{name}: a model's name is letters, digits, '_', '.' and '-' "
                                 "(up to 64, starting with a letter or digit)")
        for name in self.model_names:
            self.for_model(name)  # its overrides must make valid sections
        return self

    @property
    def model_names(self) -> list[str]:
        """The models this config serves, in the file's order."""
        return list(self.models) or [DEFAULT_MODEL]

    @property
    def model_name(self) -> str:
        """The model this config is for: the one chosen, or the only one."""
        if self.selected is not None:
            return self.selected
        if len(self.model_names) > 1:
            raise ConfigError(f"{self.source or 'config'} has several models ({', '.join(self.model_names)}): "
                              "choose one with --model NAME")
        return self.model_names[0]

    def for_model(self, name: str | None) -> "Config":
        """The config of model ``name`` (``None``: the only one, an error if there are several)."""
        if name is None:
            name = self.model_name
        if name not in self.model_names:
            raise ConfigError(f"{self.source or 'config'} has no model {name!r}; its models: "
                              f"{', '.join(self.model_names)}")
        model = self.models.get(name, self.model)
        merged: dict[str, Any] = {"model": model, "selected": name}
        for section in OVERRIDABLE:
            if getattr(model, section):
                current = getattr(self, section)
                values = asdict(current) if hasattr(current, "__dataclass_fields__") else current.model_dump()
                try:
                    merged[section] = type(current)(**{**values, **getattr(model, section)})
                except ValidationError as exc:
                    raise ValueError(f"models.{name}.{section}: {_describe(exc)}") from None
        return self.model_copy(update=merged)

    @property
    def base_dir(self) -> Path:
        return self.source.parent if self.source else Path.cwd()

    @property
    def workdir(self) -> Path:
        return (self.base_dir / self.paths.workdir).resolve()

    @property
    def inbox_root(self) -> Path:
        """``paths.inbox``: the inbox, or with several models the folder of their inboxes."""
        return self.workdir / self.paths.inbox

    @property
    def inbox(self) -> Path:
        """Where this config's model takes its files (the root inbox for a config of several
        models before ``for_model``)."""
        if self.selected is None and len(self.model_names) > 1:
            return self.inbox_root
        name = self.model_name
        own = self.models.get(name, self.model).inbox
        if own is not None:
            return self.workdir / own
        return self.inbox_root / name if len(self.model_names) > 1 else self.inbox_root

    @property
    def unlabelled_inbox(self) -> Path:
        """Files dropped here are checked for shift against production, not trained on."""
        return self.inbox / "unlabelled"

    @property
    def checked_dir(self) -> Path:
        """Where checked unlabelled files go, each with its report beside it."""
        return self.workdir / "checked"

    @property
    def processed_dir(self) -> Path:
        return self.workdir / "processed"

    @property
    def rejected_dir(self) -> Path:
        return self.workdir / "rejected"

    @property
    def incoming_dir(self) -> Path:
        """Where a worker downloads the batches ingested into the bucket."""
        return self.workdir / "incoming"

    @property
    def publish_dir(self) -> Path | None:
        """Where production is published for model servers; None when it is not."""
        return None if self.publish.dir is None else self.workdir / self.publish.dir

    @property
    def artifacts_dir(self) -> Path:
        return self.workdir / "artifacts"

    @property
    def registry_url(self) -> str:
        url = self.registry.url
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/") and ":memory:" not in url:
            return prefix + str(self.workdir / url[len(prefix) :])
        return url


def find_config(explicit: Path | None) -> Path:
    """``--config``, then ``$RETAIN_CONFIG``, then ``./retain.toml``."""
    if explicit is not None:
        return explicit
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    return Path(DEFAULT_CONFIG)


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        key = ".".join(str(p) for p in item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        if not item["loc"] and item["type"] == "value_error":
            parts.append(message)
            continue
        if item["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
            message = "unknown key"
        parts.append(f"{key}: {message}")
    return "; ".join(parts)


def parse_config(data: dict[str, Any], source: Path | None = None) -> Config:
    where = str(source) if source else "config"
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{where}: {_describe(exc)}") from None
    config.source = source.resolve() if source else None
    return config


def load_config(path: Path) -> Config:
    """Read and validate a config file."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"config file {path} not found (pass --config, set {CONFIG_ENV}, "
            "or run `retain init` / `retain demo` to create one)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_config(data, path)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (str, Path)):
        return json.dumps(str(value))
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def dump_config(sections: dict[str, dict[str, Any] | list[dict[str, Any]]]) -> str:
    """TOML text for a config given as ``{section: {key: value}}`` (a list of those: an array
    of tables, ``[[section]]``; None values omitted)."""
    lines = ["# retain configuration; every key is described in deploy/retain.example.toml"]
    for section, values in sections.items():
        for table in values if isinstance(values, list) else [values]:
            lines.append(f"\n[[{section}]]" if isinstance(values, list) else f"\n[{section}]")
            lines += [f"{key} = {_toml_value(value)}" for key, value in table.items() if value is not None]
    text = "\n".join(lines) + "\n"
    tomllib.loads(text)  # what we write must read back
    return text


def add_factory_folder(folder: Path) -> None:
    """Let factories be imported from ``folder`` (a config's): a module beside ``retain.toml``
    needs no ``PYTHONPATH``. Appended, so it never shadows an installed module. Here, not
    beside the factories, so the commands that never build a model need not import torch."""
    entry = str(Path(folder).resolve())
    if entry not in sys.path:
        sys.path.append(entry)


def open_artifacts(config: Config) -> ArtifactStore:
    """The workspace's artifact store: its folder, in front of the bucket when there is one."""
    section = config.artifacts
    remote = S3Objects(section.url, section.endpoint_url, section.region) if section.url else None
    return ArtifactStore(config.artifacts_dir, remote)
