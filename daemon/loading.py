"""Loading and validating batch files. Untrusted input is never unpickled.

A file is read once, into memory, and everything after that works on those bytes: the sha256
that identifies the batch is the hash of exactly what is parsed, however the file changes on
disk afterwards. Before anything is allocated, the sizes a file declares (npz member headers,
the records of a ``.pt`` archive, parquet metadata, CSV line counts) are checked against
``data.max_samples`` and ``data.max_bytes_in_memory``, so a small file cannot make the daemon
allocate what it merely claims.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import math
import os
import pickle
import stat
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from retain.daemon.config import DataConfig
from retain.errors import RetainError

SUPPORTED_SUFFIXES = (".npz", ".pt", ".csv", ".parquet")
_ZIP_MAGIC = b"PK\x03\x04"


class BatchRejected(RetainError):
    """The file cannot be used as a batch. ``reason`` says why, for the operator; once the
    file is known, the message names it: ``"<file name>: <reason>"``."""

    def __init__(self, reason: str, file: str | None = None) -> None:
        super().__init__(f"{file}: {reason}" if file else reason)
        self.reason = reason
        self.file = file

    def naming(self, path: Path) -> BatchRejected:
        """This rejection, naming ``path``'s file (library errors quote the path they opened,
        the inbox's; by the time anyone reads the reason the file sits in rejected/, so the
        reason names the file alone)."""
        return BatchRejected(self.reason.replace(str(path), path.name), file=path.name)


@dataclass(frozen=True)
class DataSpec:
    """What a batch must look like."""

    input_shape: tuple[int, ...]
    num_classes: int
    min_samples: int = 1
    limits: DataConfig = field(default_factory=DataConfig)  # the [data] section


@dataclass(frozen=True)
class LoadedBatch:
    x: torch.Tensor  # float32, (n, *input_shape)
    y: torch.Tensor | None  # int64, (n,); None for unlabelled data (predict)
    sha256: str = ""  # of the bytes that were parsed

    def __len__(self) -> int:
        return len(self.x)


def format_bytes(count: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if count < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


# ------------------------------------------------------------------ the bytes


def open_regular_file(path: Path, limits: DataConfig) -> BinaryIO:
    """``path`` opened for reading through one descriptor that is checked to be a regular
    file within ``data.max_file_bytes``. A symbolic link is refused unless
    ``data.follow_symlinks``; a FIFO or device is never read from (it could block or never end)."""
    flags = os.O_RDONLY | os.O_NONBLOCK | (0 if limits.follow_symlinks else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP and path.is_symlink():
            raise BatchRejected(
                f"is a symbolic link (to {os.readlink(path)}); links are not followed unless "
                "data.follow_symlinks = true"
            ) from None
        raise
    handle = os.fdopen(fd, "rb")
    info = os.fstat(handle.fileno())
    refusal = None
    if not stat.S_ISREG(info.st_mode):
        refusal = "is not a regular file"
    elif info.st_size > limits.max_file_bytes:
        refusal = f"file is {info.st_size} bytes, over the limit of {limits.max_file_bytes} (data.max_file_bytes)"
    if refusal is not None:
        handle.close()
        raise BatchRejected(refusal)
    return handle


def file_sha256(path: Path, limits: DataConfig) -> str:
    """The sha256 of a regular file within the limits (``open_regular_file`` refuses the rest:
    a 16 GiB sparse file is refused by its size, never hashed in full)."""
    digest = hashlib.sha256()
    with open_regular_file(path, limits) as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_file(path: Path, limits: DataConfig) -> bytes:
    """The whole file, through ``open_regular_file``."""
    with open_regular_file(path, limits) as handle:
        info = os.fstat(handle.fileno())
        if info.st_size == 0:
            raise BatchRejected("file is empty")
        # Reading asks for the size fstat gave (a read of n bytes allocates n up front), plus
        # one byte to notice a file that grew past the limit meanwhile.
        data = handle.read(info.st_size + 1)
        while len(data) > info.st_size and len(data) <= limits.max_file_bytes:
            more = handle.read(1 << 20)
            if not more:
                break
            data += more
    if len(data) > limits.max_file_bytes:
        raise BatchRejected(f"file grew past the limit of {limits.max_file_bytes} bytes while it was read")
    if not data:
        raise BatchRejected("file is empty")
    return data


def _check_size(n_samples: int | None, in_memory: int, limits: DataConfig, detail: str) -> None:
    """Refuse what a file declares before it is allocated."""
    if n_samples is not None and n_samples > limits.max_samples:
        raise BatchRejected(
            f"batch declares {n_samples} samples, over the limit of {limits.max_samples} (data.max_samples)"
        )
    if in_memory > limits.max_bytes_in_memory:
        raise BatchRejected(
            f"loading it would take about {format_bytes(in_memory)} of memory ({detail}), over the limit of "
            f"{format_bytes(limits.max_bytes_in_memory)} (data.max_bytes_in_memory)"
        )


def _as_float32_bytes(shape: tuple[int, ...]) -> int:
    return math.prod(shape) * 4


# --------------------------------------------------------------------- formats


def _npy_header(member: io.BufferedIOBase, key: str) -> tuple[tuple[int, ...], np.dtype]:
    try:
        version = np.lib.format.read_magic(member)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(member)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(member)
        else:
            raise BatchRejected(f"array {key!r} uses .npy format version {version}; versions 1.0 and 2.0 are read")
    except BatchRejected:
        raise
    except (ValueError, EOFError, OSError, zipfile.BadZipFile) as exc:
        raise BatchRejected(f"array {key!r} is not a readable .npy array: {exc}") from None
    if dtype.hasobject:
        raise BatchRejected("archive holds pickled objects; only plain numeric arrays are accepted")
    if dtype.kind not in "fiub":
        raise BatchRejected(f"array {key!r} holds {dtype}, not numbers")
    return tuple(shape), dtype


def _read_npz(data: bytes, limits: DataConfig) -> tuple[np.ndarray, np.ndarray | None]:
    # np.load would try to unpickle anything that is not a zip or .npy file, and reads a member
    # without a .npy header as raw bytes of whatever size the archive claims: read it by hand.
    if not data.startswith(_ZIP_MAGIC):
        raise BatchRejected("not an .npz archive (no zip header): truncated or corrupt .npz archive")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise BatchRejected(f"truncated or corrupt .npz archive: {exc}") from None
    with archive:
        members = {info.filename.removesuffix(".npy"): info for info in archive.infolist()}
        if "x" not in members:
            raise BatchRejected(f"archive has no array 'x' (found: {sorted(members) or 'none'})")
        keys = [key for key in ("x", "y") if key in members]
        headers = {}
        for key in keys:
            with archive.open(members[key]) as member:
                headers[key] = _npy_header(member, key)
        x_shape = headers["x"][0]
        declared = sum(math.prod(shape) * dtype.itemsize for shape, dtype in headers.values())
        converted = _as_float32_bytes(x_shape) + (8 * math.prod(headers["y"][0]) if "y" in headers else 0)
        _check_size(
            x_shape[0] if x_shape else None,
            len(data) + declared + converted,
            limits,
            f"x {x_shape} {headers['x'][1]}, as stored and as float32",
        )
        arrays = {}
        for key in keys:
            try:
                with archive.open(members[key]) as member:
                    arrays[key] = np.lib.format.read_array(member, allow_pickle=False)
            except (ValueError, EOFError, OSError, zipfile.BadZipFile) as exc:
                raise BatchRejected(f"truncated or corrupt .npz archive: {exc}") from None
    return arrays["x"], arrays.get("y")


def _unpickler_detail(exc: Exception) -> str:
    """The useful line of torch's long weights-only error (what it refused)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for index, line in enumerate(lines):
        if "WeightsUnpickler error" in line:
            rest = line.split("WeightsUnpickler error:", 1)[1].strip()
            detail = rest or (lines[index + 1] if index + 1 < len(lines) else "")
            return detail.split(". ")[0][:200] or "unsupported content"
    return "unsupported content"


def _tensor_to_numpy(key: str, value: torch.Tensor) -> np.ndarray:
    if value.layout != torch.strided:
        raise BatchRejected(
            f".pt entry {key!r} is a sparse tensor ({value.layout}); save it dense (tensor.to_dense())"
        )
    if value.is_quantized or value.is_complex():
        raise BatchRejected(f".pt entry {key!r} holds {value.dtype}, not real numbers")
    value = value.detach().cpu()
    if value.dtype in (torch.float16, torch.bfloat16):
        value = value.float()  # exact: both widen to float32 without rounding
    try:
        return value.numpy()
    except (TypeError, RuntimeError):
        raise BatchRejected(f".pt entry {key!r} holds {value.dtype}, which is not a supported number type") from None


def _read_pt(data: bytes, limits: DataConfig) -> tuple[np.ndarray, np.ndarray | None]:
    if not data.startswith(_ZIP_MAGIC):
        # The legacy (pre-1.6) format reads storages of whatever size its pickle declares.
        raise BatchRejected(
            "not a zip-format .pt file (what torch.save writes since PyTorch 1.6); legacy .pt files and raw "
            "pickles are refused"
        )
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            stored = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise BatchRejected(f"truncated or corrupt .pt file: {exc}") from None
    _check_size(None, len(data) + stored, limits, "its tensors as stored")
    try:
        with warnings.catch_warnings():
            # Said when a sparse tensor is loaded; it is refused just below, with a reason.
            warnings.filterwarnings("ignore", message="Validating sparse tensor invariants")
            loaded = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        raise BatchRejected(
            f"refused to unpickle: the file holds objects other than tensors ({_unpickler_detail(exc)})"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BatchRejected(f"truncated or corrupt .pt file: {first}") from None
    if not isinstance(loaded, dict):
        raise BatchRejected(f".pt file must hold a dict with tensors 'x' and 'y', not a {type(loaded).__name__}")
    if "x" not in loaded:
        raise BatchRejected(f".pt dict has no tensor 'x' (found keys: {sorted(map(str, loaded)) or 'none'})")
    arrays: list[np.ndarray | None] = []
    for key in ("x", "y"):
        value = loaded.get(key)
        if value is None:
            arrays.append(None)
        elif isinstance(value, torch.Tensor):
            arrays.append(_tensor_to_numpy(key, value))
        else:
            raise BatchRejected(f".pt entry {key!r} must be a tensor, not a {type(value).__name__}")
    x = arrays[0]
    assert x is not None
    _check_size(len(x) if x.ndim else None, len(data) + stored + _as_float32_bytes(x.shape), limits,
                f"x {tuple(x.shape)} {x.dtype}, as stored and as float32")
    return x, arrays[1]


def _read_csv(data: bytes, limits: DataConfig) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise BatchRejected("CSV file is not UTF-8 text") from None
    reader = csv.reader(io.StringIO(text))
    header = next((row for row in reader if row), None)
    if header is None:
        raise BatchRejected("CSV file is empty")
    lines = text.count("\n") + 1  # an upper bound on the rows, known before any is parsed
    _check_size(lines - 1, len(data) + lines * len(header) * (8 + 4), limits,
                f"up to {lines - 1} rows of {len(header)} columns")
    table = np.empty((lines, len(header)), dtype=np.float64)
    count = 0
    for row in reader:
        if not row:
            continue
        number = reader.line_num
        if len(row) != len(header):
            raise BatchRejected(f"CSV line {number} has {len(row)} fields, the header has {len(header)}")
        try:
            table[count] = [float(v) for v in row]
        except ValueError:
            raise BatchRejected(f"CSV line {number} has a value that is not a number") from None
        count += 1
    table = table[:count]
    if limits.label_column not in header:
        return table, None
    label_index = header.index(limits.label_column)
    return np.delete(table, label_index, axis=1), table[:, label_index]


def _read_parquet(data: bytes, limits: DataConfig) -> tuple[np.ndarray, np.ndarray | None]:
    # Imported here: most commands never read parquet, and importing pyarrow takes ~0.1 s.
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(pa.BufferReader(data))
        schema = parquet.schema_arrow
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise BatchRejected(f"unreadable parquet file: {exc}") from None
    for name, kind in zip(schema.names, schema.types, strict=True):
        if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)):
            raise BatchRejected(f"parquet column {name!r} holds {kind}, not numbers")
    rows, columns = parquet.metadata.num_rows, len(schema.names)
    _check_size(rows, len(data) + rows * columns * (8 + 8 + 4), limits, f"{rows} rows of {columns} columns")
    try:
        table = parquet.read()
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise BatchRejected(f"unreadable parquet file: {exc}") from None
    for name in table.column_names:
        missing = table.column(name).null_count
        if missing:
            raise BatchRejected(f"parquet column {name!r} has {missing} missing value{'s' * (missing > 1)}")
    features = [name for name in table.column_names if name != limits.label_column]
    if not features:
        raise BatchRejected("parquet file has no feature columns")
    x = np.column_stack([table.column(name).to_numpy() for name in features]).astype(np.float64)
    y = table.column(limits.label_column).to_numpy() if limits.label_column in table.column_names else None
    return x, y


_READERS = {".npz": _read_npz, ".pt": _read_pt, ".csv": _read_csv, ".parquet": _read_parquet}


# ------------------------------------------------------------------ validation


def _labels(y: np.ndarray, n: int, spec: DataSpec) -> torch.Tensor:
    if y.ndim != 1:
        raise BatchRejected(f"labels 'y' must be one-dimensional, got shape {tuple(y.shape)}")
    if len(y) != n:
        raise BatchRejected(f"'x' has {n} samples but 'y' has {len(y)} labels")
    if y.dtype.kind == "f":
        if not np.isfinite(y).all() or not np.all(y == np.round(y)):
            raise BatchRejected("labels 'y' must be integers")
    elif y.dtype.kind not in "iub":
        raise BatchRejected(f"labels 'y' must be integers, not {y.dtype}")
    if y.dtype.kind == "f" and np.abs(y).max(initial=0) > 2**62:
        raise BatchRejected("labels out of range: beyond 2**62")
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


def _reader_for(path: Path):
    suffix = path.suffix.lower()
    if suffix not in _READERS:
        raise BatchRejected(f"unsupported file type {suffix or '(none)'}; use one of {', '.join(SUPPORTED_SUFFIXES)}")
    return _READERS[suffix]


def parse_arrays(path: Path, data: bytes, limits: DataConfig) -> tuple[np.ndarray, np.ndarray | None]:
    """Raw ``(x, y)`` arrays from a file's bytes; ``path`` gives the format. The bytes are in
    memory: whatever a parser raises on them is the file's fault, a rejection, never a system
    error to retry."""
    reader = _reader_for(path)
    try:
        return reader(data, limits)
    except BatchRejected:
        raise
    except Exception as exc:  # noqa: BLE001 - any parser's error on bytes in memory
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        kind = path.suffix.lower().lstrip(".")
        raise BatchRejected(f"cannot be parsed as {kind}: {type(exc).__name__}"
                            + (f": {detail}" if detail else "")) from None


def read_arrays(path: Path, limits: DataConfig = DataConfig()) -> tuple[np.ndarray, np.ndarray | None]:
    """Raw ``(x, y)`` arrays from a batch file, before any check against the model."""
    try:
        _reader_for(path)  # an unsupported type is refused before the file is read
        return parse_arrays(path, read_file(path, limits), limits)
    except BatchRejected as exc:
        raise exc.naming(path) from None


def load_batch(path: Path, spec: DataSpec, require_labels: bool = True) -> LoadedBatch:
    """Read and validate a batch file, or raise ``BatchRejected`` naming the file and the reason.
    Without ``require_labels`` the labels are optional, and ones the model has no class for
    are dropped (``y`` None) instead of refusing the file."""
    try:
        return _load_batch(path, spec, require_labels)
    except BatchRejected as exc:
        raise exc.naming(path) from None


def _load_batch(path: Path, spec: DataSpec, require_labels: bool) -> LoadedBatch:
    limits = spec.limits
    _reader_for(path)
    data = read_file(path, limits)
    digest = hashlib.sha256(data).hexdigest()
    x, y = parse_arrays(path, data, limits)
    del data
    if y is None and require_labels:
        # Before the shape check: a table whose label column has another name would otherwise
        # be refused for having one feature too many.
        raise BatchRejected(_missing_labels(path, limits.label_column))

    if x.dtype.kind not in "fiub":
        raise BatchRejected(f"features 'x' must be numeric, not {x.dtype}")
    n = len(x) if x.ndim else 0
    if n == 0:
        raise BatchRejected("batch has no samples")
    if n > limits.max_samples:
        raise BatchRejected(f"batch has {n} samples, over the limit of {limits.max_samples} (data.max_samples)")
    expected = tuple(spec.input_shape)
    if tuple(x.shape[1:]) != expected:
        if x.ndim == 2 and x.shape[1] == math.prod(expected):
            x = x.reshape(n, *expected)  # flat rows (CSV, parquet, or flattened arrays)
        else:
            raise BatchRejected(
                f"each sample has shape {tuple(x.shape[1:])}, the model expects {expected}"
            )
    x = x.astype(np.float32)
    finite = np.isfinite(x)
    if not finite.all():
        count = int((~finite).sum())
        raise BatchRejected(f"features contain {count} NaN or infinite values (or values beyond float32's range)")
    del finite
    largest = float(np.abs(x).max())
    if largest > limits.max_abs_value:
        raise BatchRejected(
            f"features reach {largest:.3g}, beyond the limit of {limits.max_abs_value:.3g} (data.max_abs_value): "
            "scale them, or raise the limit"
        )

    labels = None
    if y is not None:
        try:
            labels = _labels(np.asarray(y), n, spec)
        except BatchRejected:
            if require_labels:
                raise
            # Only for reporting (predict's accuracy): labels the model cannot score are left out.
    if require_labels and n < spec.min_samples:
        raise BatchRejected(f"batch has {n} samples, fewer than the minimum of {spec.min_samples}")
    return LoadedBatch(x=torch.from_numpy(x), y=labels, sha256=digest)
