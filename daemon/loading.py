"""Loading and validating batch files. Untrusted input is never unpickled."""

from __future__ import annotations

import csv
import io
import math
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

SUPPORTED_SUFFIXES = (".npz", ".pt", ".csv", ".parquet")


class BatchRejected(Exception):
    """The file cannot be used as a batch; the message is the reason, for the operator."""


@dataclass(frozen=True)
class DataSpec:
    """What a batch must look like."""

    input_shape: tuple[int, ...]
    num_classes: int
    label_column: str = "label"
    min_samples: int = 1
    max_samples: int = 1_000_000
    max_file_bytes: int = 1 << 30


@dataclass(frozen=True)
class LoadedBatch:
    x: torch.Tensor  # float32, (n, *input_shape)
    y: torch.Tensor | None  # int64, (n,); None for unlabelled data (predict)

    def __len__(self) -> int:
        return len(self.x)


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    with path.open("rb") as handle:
        if handle.read(4) != b"PK\x03\x04":
            # np.load would try to unpickle anything that is not a zip or .npy file.
            raise BatchRejected("not an .npz archive (no zip header): truncated or corrupt .npz archive")
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = set(archive.files)
            if "x" not in names:
                raise BatchRejected(f"archive has no array 'x' (found: {sorted(names) or 'none'})")
            x = archive["x"]
            y = archive["y"] if "y" in names else None
    except BatchRejected:
        raise
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise BatchRejected("archive holds pickled objects; only plain numeric arrays are accepted") from None
        raise BatchRejected(f"unreadable .npz archive: {exc}") from None
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise BatchRejected(f"truncated or corrupt .npz archive: {exc}") from None
    return x, y


def _unpickler_detail(exc: Exception) -> str:
    """The useful line of torch's long weights-only error (what it refused)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for index, line in enumerate(lines):
        if "WeightsUnpickler error" in line:
            rest = line.split("WeightsUnpickler error:", 1)[1].strip()
            detail = rest or (lines[index + 1] if index + 1 < len(lines) else "")
            return detail.split(". ")[0][:200] or "unsupported content"
    return "unsupported content"


def _read_pt(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        data = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        raise BatchRejected(
            f"refused to unpickle: the file holds objects other than tensors ({_unpickler_detail(exc)})"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BatchRejected(f"truncated or corrupt .pt file: {first}") from None
    if not isinstance(data, dict):
        raise BatchRejected(f".pt file must hold a dict with tensors 'x' and 'y', not a {type(data).__name__}")
    if "x" not in data:
        raise BatchRejected(f".pt dict has no tensor 'x' (found keys: {sorted(map(str, data)) or 'none'})")
    arrays = []
    for key in ("x", "y"):
        value = data.get(key)
        if value is None:
            arrays.append(None)
        elif isinstance(value, torch.Tensor):
            arrays.append(value.detach().cpu().numpy())
        else:
            raise BatchRejected(f".pt entry {key!r} must be a tensor, not a {type(value).__name__}")
    return arrays[0], arrays[1]


def _read_csv(path: Path, label_column: str) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise BatchRejected("CSV file is not UTF-8 text") from None
    rows = list(csv.reader(io.StringIO(text)))
    rows = [row for row in rows if row]
    if not rows:
        raise BatchRejected("CSV file is empty")
    header, body = rows[0], rows[1:]
    if label_column in header:
        label_index = header.index(label_column)
    else:
        label_index = None
    values = []
    for number, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise BatchRejected(f"CSV line {number} has {len(row)} fields, the header has {len(header)}")
        try:
            values.append([float(v) for v in row])
        except ValueError:
            raise BatchRejected(f"CSV line {number} has a value that is not a number") from None
    table = np.asarray(values, dtype=np.float64).reshape(len(values), len(header))
    if label_index is None:
        return table, None
    y = table[:, label_index]
    x = np.delete(table, label_index, axis=1)
    return x, y


def _read_parquet(path: Path, label_column: str) -> tuple[np.ndarray, np.ndarray | None]:
    # Imported here: most commands never read parquet, and importing pyarrow takes ~0.1 s.
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise BatchRejected(f"unreadable parquet file: {exc}") from None
    for name, kind in zip(table.column_names, table.schema.types, strict=True):
        if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)):
            raise BatchRejected(f"parquet column {name!r} holds {kind}, not numbers")
        missing = table.column(name).null_count
        if missing:
            raise BatchRejected(f"parquet column {name!r} has {missing} missing value{'s' * (missing > 1)}")
    features = [name for name in table.column_names if name != label_column]
    if not features:
        raise BatchRejected("parquet file has no feature columns")
    x = np.column_stack([table.column(name).to_numpy() for name in features]).astype(np.float64)
    y = table.column(label_column).to_numpy() if label_column in table.column_names else None
    return x, y


def _labels(y: np.ndarray, n: int, spec: DataSpec) -> torch.Tensor:
    if y.ndim != 1:
        raise BatchRejected(f"labels 'y' must be one-dimensional, got shape {tuple(y.shape)}")
    if len(y) != n:
        raise BatchRejected(f"'x' has {n} samples but 'y' has {len(y)} labels")
    if y.dtype.kind == "f":
        if not np.isfinite(y).all() or not np.all(y == np.round(y)):
            raise BatchRejected("labels 'y' must be integers")
        y = y.astype(np.int64)
    elif y.dtype.kind not in "iub":
        raise BatchRejected(f"labels 'y' must be integers, not {y.dtype}")
    y = y.astype(np.int64)
    bad = (y < 0) | (y >= spec.num_classes)
    if bad.any():
        values = sorted(set(y[bad].tolist()))[:5]
        raise BatchRejected(
            f"labels out of range: {values} (the model has classes 0..{spec.num_classes - 1})"
        )
    return torch.from_numpy(y)


def _missing_labels(path: Path, label_column: str) -> str:
    if path.suffix.lower() in (".csv", ".parquet"):
        return f"batch has no labels: no column named {label_column!r} (data.label_column names the label column)"
    return f"batch has no labels: no {'entry' if path.suffix.lower() == '.pt' else 'array'} 'y'"


def _read_by_suffix(path: Path, suffix: str, label_column: str) -> tuple[np.ndarray, np.ndarray | None]:
    if suffix == ".npz":
        return _read_npz(path)
    if suffix == ".pt":
        return _read_pt(path)
    if suffix == ".csv":
        return _read_csv(path, label_column)
    return _read_parquet(path, label_column)


def read_arrays(
    path: Path, label_column: str = "label", max_file_bytes: int = 1 << 30
) -> tuple[np.ndarray, np.ndarray | None]:
    """Raw ``(x, y)`` arrays from a batch file, before any check against the model."""
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise BatchRejected(f"unsupported file type {suffix or '(none)'}; use one of {', '.join(SUPPORTED_SUFFIXES)}")
    size = path.stat().st_size
    if size == 0:
        raise BatchRejected("file is empty")
    if size > max_file_bytes:
        raise BatchRejected(f"file is {size} bytes, over the limit of {max_file_bytes}")
    try:
        return _read_by_suffix(path, suffix, label_column)
    except BatchRejected as exc:
        # Library errors quote the path they opened, the inbox's; by the time anyone reads the
        # reason the file sits in rejected/, so the reason names the file alone.
        raise BatchRejected(str(exc).replace(str(path), path.name)) from None


def load_batch(path: Path, spec: DataSpec, require_labels: bool = True) -> LoadedBatch:
    """Read and validate a batch file, or raise ``BatchRejected`` with the reason."""
    x, y = read_arrays(path, spec.label_column, spec.max_file_bytes)
    if y is None and require_labels:
        # Before the shape check: a table whose label column has another name would otherwise
        # be refused for having one feature too many.
        raise BatchRejected(_missing_labels(path, spec.label_column))

    if x.dtype.kind not in "fiub":
        raise BatchRejected(f"features 'x' must be numeric, not {x.dtype}")
    n = len(x) if x.ndim else 0
    if n == 0:
        raise BatchRejected("batch has no samples")
    if n > spec.max_samples:
        raise BatchRejected(f"batch has {n} samples, over the limit of {spec.max_samples}")
    expected = tuple(spec.input_shape)
    if tuple(x.shape[1:]) != expected:
        if x.ndim == 2 and x.shape[1] == math.prod(expected):
            x = x.reshape(n, *expected)  # flat rows (CSV, parquet, or flattened arrays)
        else:
            raise BatchRejected(
                f"each sample has shape {tuple(x.shape[1:])}, the model expects {expected}"
            )
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        count = int((~np.isfinite(x)).sum())
        raise BatchRejected(f"features contain {count} NaN or infinite values")

    labels = None if y is None else _labels(np.asarray(y), n, spec)
    if require_labels and n < spec.min_samples:
        raise BatchRejected(f"batch has {n} samples, fewer than the minimum of {spec.min_samples}")
    return LoadedBatch(x=torch.from_numpy(x), y=labels)
