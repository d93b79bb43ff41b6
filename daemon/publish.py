"""Production, published where a model server looks: on every production move the version is
exported under ``<publish.dir>/<model>/<version>/`` and ``<model>/current`` repointed to it.

The layout is Triton Inference Server's model repository: a folder per model holding numbered
version folders with ``model.onnx`` (or ``model.pt``, TorchScript) and a ``config.pbtxt``, which
here pins the served version to production (``version_policy: { specific: ... }``), so a
rollback is served too, not only the highest number. ``current`` (a symbolic link to the
version's folder) is for servers and scripts that load one directory. A crash mid-publish
leaves the previous ``current`` and ``config.pbtxt`` as they were: the version's folder is
written whole before either is replaced, and each is replaced by a rename.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from pathlib import Path

from retain.daemon.config import Config
from retain.daemon.export import FILE_NAMES, ExportFormat, export_version, folder_mode
from retain.daemon.logs import fields
from retain.registry import ArtifactStore, ModelVersion, atomic_write

log = logging.getLogger("retain.publish")

CURRENT = "current"
TRITON_CONFIG = "config.pbtxt"
_PLATFORMS = {ExportFormat.ONNX: "onnxruntime_onnx", ExportFormat.TORCHSCRIPT: "pytorch_libtorch"}


def published_version(config: Config) -> int | None:
    """The version ``current`` points at for this config's model; None if nothing is."""
    folder = config.publish_dir
    if folder is None:
        return None
    target = folder / config.model_name / CURRENT
    try:
        name = os.readlink(target)
    except OSError:
        return None
    return int(name) if name.isdigit() else None


def triton_config(version: ModelVersion, card: dict, formats: list[ExportFormat]) -> str | None:
    """``config.pbtxt`` serving exactly ``version``; None without a format Triton runs."""
    form = next((f for f in (ExportFormat.ONNX, ExportFormat.TORCHSCRIPT) if f in formats), None)
    if form is None:
        return None
    dims = ", ".join(str(d) for d in card["input"]["shape"][1:])
    return (
        f'name: "{version.model}"\n'
        f'platform: "{_PLATFORMS[form]}"\n'
        "max_batch_size: 1024\n"
        f"version_policy: {{ specific: {{ versions: [{version.version}] }} }}\n"
        f'input [{{ name: "x", data_type: TYPE_FP32, dims: [{dims}] }}]\n'
        f'output [{{ name: "logits", data_type: TYPE_FP32, dims: [{card["num_classes"]}] }}]\n'
    )


def _repoint(link: Path, target: str) -> None:
    """Make ``link`` a symbolic link to ``target`` in one rename."""
    temporary = link.with_name(f".{link.name}.{uuid.uuid4().hex[:8]}.tmp")
    os.symlink(target, temporary)
    try:
        os.replace(temporary, link)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def publish(config: Config, version: ModelVersion, artifacts: ArtifactStore) -> Path | None:
    """Publish ``version`` as the model's production; returns its folder (None: publishing is
    off). Idempotent: a version already written is repointed to, not written again."""
    root = config.publish_dir
    if root is None:
        return None
    formats = list(dict.fromkeys(config.publish.formats))
    model_dir = root / version.model
    folder = model_dir / str(version.version)
    mode = config.publish.file_mode
    if not (folder / "model.json").exists():
        export_version(version, artifacts, formats, folder, replace=True, file_mode=mode)
    for published in (root, model_dir):
        published.chmod(folder_mode(mode))
    card = json.loads((folder / "model.json").read_text())
    pbtxt = triton_config(version, card, formats)
    if pbtxt is not None:
        atomic_write(model_dir / TRITON_CONFIG, lambda handle: handle.write(pbtxt.encode()))
        (model_dir / TRITON_CONFIG).chmod(mode)
    _repoint(model_dir / CURRENT, folder.name)
    log.info("production published", extra=fields(model=version.model, version=version.version, folder=str(folder),
                                                   files=[FILE_NAMES[f] for f in formats]))
    return folder
