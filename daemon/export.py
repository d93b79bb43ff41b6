"""A version in the forms model servers load: safetensors weights, a TorchScript module or an
ONNX graph, each beside a ``model.json`` that says what it is and what it takes.

A scripted or ONNX export is checked against the eager model on the version's replay audit
set before it is written: the largest absolute difference of their logits is reported, and
one over ``PARITY_TOLERANCE`` refuses the export. Files are written into a temporary folder
beside the target and renamed into place, so a reader sees the whole export or none.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
import warnings
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from retain.errors import RetainError
from retain.registry import ArtifactStore, ModelVersion

if TYPE_CHECKING:  # torch is imported by the calls that export, not by the config that names formats
    import torch
    from torch import nn

PARITY_TOLERANCE = 1e-4  # float32 logits of a reordered but equal computation differ by ~1e-6
PARITY_SAMPLES = 512


class ExportFormat(StrEnum):
    SAFETENSORS = "safetensors"
    TORCHSCRIPT = "torchscript"
    ONNX = "onnx"


FILE_NAMES = {ExportFormat.SAFETENSORS: "model.safetensors", ExportFormat.TORCHSCRIPT: "model.pt",
              ExportFormat.ONNX: "model.onnx"}


class ExportError(RetainError):
    """The version cannot be exported in that form; the message says why."""


@dataclass(frozen=True)
class Parity:
    """How far an exported form's logits are from the eager model's on the audit samples."""

    samples: int
    max_abs_diff: float


@dataclass(frozen=True)
class Exported:
    folder: Path
    files: dict[str, str]  # format -> file name
    parity: dict[str, Parity]


def model_card(version: ModelVersion, formats: dict[str, str], parity: dict[str, Parity]) -> dict:
    """``model.json``: which version this is and what the files take and give."""
    from retain.daemon.versions import spec_of

    spec = spec_of(version)
    return {
        "model": version.model,
        "version": version.version,
        "ref": f"{version.model}@{version.version}",
        "artifact_sha256": version.artifact_sha256,
        "num_classes": spec.num_classes,
        "classes": list(range(spec.num_classes)),
        "input": {"name": "x", "shape": ["batch", *spec.input_shape], "dtype": "float32"},
        "output": {"name": "logits", "shape": ["batch", spec.num_classes], "dtype": "float32"},
        # retain trains on the features as the batch files hold them: a server must apply the
        # same preprocessing the producers applied before writing batches, and nothing more.
        "preprocessing": "none: float32 features exactly as in the batch files retain was given",
        "factory": spec.factory,
        "kwargs": spec.kwargs,
        "head": spec.head,
        "files": formats,
        "parity": {name: asdict(check) for name, check in parity.items()},
        "forgetting": version.forgetting,
        "status": version.status,
    }


def _audit_samples(version: ModelVersion, artifacts: ArtifactStore) -> torch.Tensor:
    from retain.daemon.versions import load_memory

    memory = load_memory(version, artifacts)
    x = memory.x[memory.audit] if memory.audit.any() else memory.x
    return x[:PARITY_SAMPLES].float()


def _check(form: str, expected: torch.Tensor, actual: torch.Tensor) -> Parity:
    diff = float((expected - actual).abs().max()) if len(expected) else 0.0
    if not diff <= PARITY_TOLERANCE:
        raise ExportError(f"{form} export differs from the model by {diff:.3g} on the audit samples "
                          f"(tolerance {PARITY_TOLERANCE:g}); not exported")
    return Parity(samples=len(expected), max_abs_diff=diff)


def _write_torchscript(model: nn.Module, x: torch.Tensor, target: Path) -> Parity:
    import torch

    from retain.strategies.models import without_logits_hook

    # torch deprecates TorchScript in favour of torch.export, but TorchServe and Triton's
    # PyTorch backend load it: the format is asked for by name, the warning tells no one anything.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        try:
            scripted = torch.jit.script(without_logits_hook(model))
        except Exception:  # noqa: BLE001 - a model TorchScript cannot compile may still trace
            scripted = torch.jit.trace(model, x[:1])
        scripted.save(str(target))
        reloaded = torch.jit.load(str(target), map_location="cpu")
    with torch.no_grad():
        return _check("torchscript", model(x), reloaded(x))


def _write_onnx(model: nn.Module, x: torch.Tensor, target: Path) -> Parity:
    import torch

    try:
        import onnxruntime
    except ImportError:
        raise ExportError("onnx export needs onnxruntime, onnx and onnxscript: pip install 'retain[onnx]'") from None
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the exporter reports its steps on stdout
            program = torch.onnx.export(model, (x[:2],), dynamo=True, input_names=["x"], output_names=["logits"],
                                        dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)
        program.save(str(target))
    except Exception as exc:  # noqa: BLE001 - whatever the exporter raises, the export is refused
        raise ExportError(f"onnx export failed: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None
    session = onnxruntime.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = model(x)
    return _check("onnx", expected, torch.from_numpy(session.run(None, {"x": x.numpy()})[0]))


def write_export(version: ModelVersion, artifacts: ArtifactStore, formats: list[ExportFormat],
                 folder: Path) -> tuple[dict[str, str], dict[str, Parity]]:
    """The files of ``formats`` and ``model.json`` into an existing, empty ``folder``; returns
    the file of each format and each checked format's parity."""
    from retain.daemon.versions import load_model

    model = load_model(version, artifacts)
    x = _audit_samples(version, artifacts)
    written: dict[str, str] = {}
    parity: dict[str, Parity] = {}
    for form in dict.fromkeys(formats):
        target = folder / FILE_NAMES[form]
        if form == ExportFormat.SAFETENSORS:
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(target),
                      metadata={"retain_ref": f"{version.model}@{version.version}"})
        elif form == ExportFormat.TORCHSCRIPT:
            parity[form] = _write_torchscript(model, x, target)
        else:
            parity[form] = _write_onnx(model, x, target)
        written[form] = target.name
    (folder / "model.json").write_text(json.dumps(model_card(version, written, parity), indent=2) + "\n")
    return written, parity


def folder_mode(file_mode: int) -> int:
    """A folder's mode for files of ``file_mode``: searchable by whoever may read them."""
    return file_mode | ((file_mode & 0o444) >> 2)


def umask_file_mode() -> int:
    """The mode a plain ``open`` would give a new file under the process's umask."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def export_version(version: ModelVersion, artifacts: ArtifactStore, formats: list[ExportFormat],
                   out: Path, replace: bool = False, file_mode: int | None = None) -> Exported:
    """Export into ``out``, whole or not at all: written beside it, then renamed into place.
    Its files get ``file_mode`` (default: what the umask gives), the folder the matching mode."""
    file_mode = umask_file_mode() if file_mode is None else file_mode
    out = Path(out)
    if out.exists() and not replace and any(out.iterdir()):
        raise ExportError(f"{out} exists and is not empty (pass --force to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        files, parity = write_export(version, artifacts, formats, staging)
        for path in staging.iterdir():
            path.chmod(file_mode)
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
        staging.chmod(folder_mode(file_mode))
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
            os.replace(staging, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Exported(out, files, parity)
