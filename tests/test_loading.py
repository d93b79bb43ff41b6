"""Batch files: each format loads, and each kind of bad file is refused with its reason."""

import io
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from retain.daemon.config import DataConfig
from retain.daemon.loading import BatchRejected, DataSpec, load_batch

SPEC = DataSpec(input_shape=(4,), num_classes=3, min_samples=2)


def good(n: int = 6) -> tuple[np.ndarray, np.ndarray]:
    return np.arange(n * 4, dtype=np.float32).reshape(n, 4), np.arange(n) % 3


def rejected(path: Path, match: str, spec: DataSpec = SPEC) -> None:
    with pytest.raises(BatchRejected, match=match):
        load_batch(path, spec)


def test_npz_loads_as_float32_and_int64(tmp_path):
    x, y = good()
    np.savez(tmp_path / "b.npz", x=x.astype(np.float64), y=y.astype(np.int32))
    batch = load_batch(tmp_path / "b.npz", SPEC)
    assert batch.x.dtype == torch.float32 and batch.y.dtype == torch.int64
    assert torch.equal(batch.y, torch.from_numpy(y))


def test_pt_dict_of_tensors_loads(tmp_path):
    x, y = good()
    torch.save({"x": torch.from_numpy(x), "y": torch.from_numpy(y)}, tmp_path / "b.pt")
    assert len(load_batch(tmp_path / "b.pt", SPEC)) == 6


def test_csv_uses_the_label_column_wherever_it_is(tmp_path):
    path = tmp_path / "b.csv"
    path.write_text("f0,label,f1,f2,f3\n" + "".join(f"{i},{i % 3},{i},{i},{i}\n" for i in range(5)))
    batch = load_batch(path, SPEC)
    assert batch.y.tolist() == [0, 1, 2, 0, 1]
    assert batch.x.shape == (5, 4)


def test_csv_without_the_label_column_is_refused_naming_the_column(tmp_path):
    path = tmp_path / "b.csv"
    path.write_text("f0,f1,f2,f3,target\n" + "".join(f"{i},{i},{i},{i},{i % 3}\n" for i in range(5)))
    rejected(path, "no labels: no column named 'label'")


def test_flat_rows_are_reshaped_to_an_image_input(tmp_path):
    x, y = good()
    np.savez(tmp_path / "b.npz", x=x, y=y)
    batch = load_batch(tmp_path / "b.npz", DataSpec(input_shape=(1, 2, 2), num_classes=3, min_samples=2))
    assert batch.x.shape == (6, 1, 2, 2)


def test_truncated_archive_is_refused(tmp_path):
    x, y = good()
    np.savez(tmp_path / "full.npz", x=x, y=y)
    (tmp_path / "b.npz").write_bytes((tmp_path / "full.npz").read_bytes()[:200])
    rejected(tmp_path / "b.npz", "truncated or corrupt .npz")


def test_wrong_shape_is_refused(tmp_path):
    np.savez(tmp_path / "b.npz", x=np.zeros((6, 5), np.float32), y=np.zeros(6, np.int64))
    rejected(tmp_path / "b.npz", r"shape \(5,\), the model expects \(4,\)")


def test_nan_and_inf_are_refused(tmp_path):
    x, y = good()
    x[0, 0], x[1, 1] = np.nan, np.inf
    np.savez(tmp_path / "b.npz", x=x, y=y)
    rejected(tmp_path / "b.npz", "2 NaN or infinite values")


def test_labels_out_of_range_are_refused(tmp_path):
    x, y = good()
    y[2] = 7
    np.savez(tmp_path / "b.npz", x=x, y=y)
    rejected(tmp_path / "b.npz", r"labels out of range: \[7\]")


def test_negative_and_fractional_labels_are_refused(tmp_path):
    x, y = good()
    np.savez(tmp_path / "neg.npz", x=x, y=y - 1)
    rejected(tmp_path / "neg.npz", r"labels out of range: \[-1\]")
    np.savez(tmp_path / "frac.npz", x=x, y=y + 0.5)
    rejected(tmp_path / "frac.npz", "labels 'y' must be integers")


def test_missing_arrays_are_named(tmp_path):
    x, y = good()
    np.savez(tmp_path / "nox.npz", features=x, y=y)
    rejected(tmp_path / "nox.npz", r"no array 'x' \(found: \['features', 'y'\]\)")
    np.savez(tmp_path / "noy.npz", x=x)
    rejected(tmp_path / "noy.npz", "no labels")


def test_mismatched_lengths_are_refused(tmp_path):
    x, y = good()
    np.savez(tmp_path / "b.npz", x=x, y=y[:-1])
    rejected(tmp_path / "b.npz", "'x' has 6 samples but 'y' has 5 labels")


def test_empty_file_and_empty_arrays_are_refused(tmp_path):
    (tmp_path / "a.npz").write_bytes(b"")
    rejected(tmp_path / "a.npz", "file is empty")
    np.savez(tmp_path / "b.npz", x=np.zeros((0, 4), np.float32), y=np.zeros(0, np.int64))
    rejected(tmp_path / "b.npz", "no samples")


def test_too_few_samples_are_refused(tmp_path):
    x, y = good(1)
    np.savez(tmp_path / "b.npz", x=x, y=y)
    rejected(tmp_path / "b.npz", "fewer than the minimum of 2")


def test_file_over_the_size_limit_is_refused_before_reading(tmp_path):
    x, y = good()
    np.savez(tmp_path / "b.npz", x=x, y=y)
    rejected(tmp_path / "b.npz", "over the limit of 10", DataSpec((4,), 3, limits=DataConfig(max_file_bytes=10)))


class Payload:
    """Unpickling this would run code: the loader must refuse it."""

    def __reduce__(self):
        return (Path("/tmp/retain-test-pwned").touch, ())


def test_pt_with_a_pickled_object_is_refused_without_running_it(tmp_path):
    marker = Path("/tmp/retain-test-pwned")
    marker.unlink(missing_ok=True)
    torch.save({"x": Payload(), "y": torch.zeros(3)}, tmp_path / "b.pt")
    rejected(tmp_path / "b.pt", "refused to unpickle")
    assert not marker.exists()


def test_pt_holding_a_list_is_refused(tmp_path):
    torch.save([torch.zeros(3, 4), torch.zeros(3)], tmp_path / "b.pt")
    rejected(tmp_path / "b.pt", "must hold a dict")


def test_npz_with_an_object_array_is_refused_without_unpickling(tmp_path):
    buffer = io.BytesIO()
    np.save(buffer, np.array([Payload()], dtype=object), allow_pickle=True)
    with zipfile.ZipFile(tmp_path / "b.npz", "w") as archive:
        archive.writestr("x.npy", buffer.getvalue())
        archive.writestr("y.npy", buffer.getvalue())
    rejected(tmp_path / "b.npz", "pickled objects")
    assert not Path("/tmp/retain-test-pwned").exists()


def test_raw_pickle_renamed_to_pt_is_refused(tmp_path):
    (tmp_path / "b.pt").write_bytes(pickle.dumps({"x": [1, 2]}))
    rejected(tmp_path / "b.pt", "not a zip-format .pt file .* raw pickles are refused")


def test_unsupported_suffix_is_refused(tmp_path):
    (tmp_path / "b.json").write_text("{}")
    rejected(tmp_path / "b.json", "unsupported file type .json")


def test_csv_with_text_values_names_the_line(tmp_path):
    path = tmp_path / "b.csv"
    path.write_text("a,b,c,d,label\n1,2,3,4,0\n1,x,3,4,1\n")
    rejected(path, "CSV line 3 has a value that is not a number")


def write_parquet(path: Path, columns: dict[str, list]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table(columns), path)
    return path


def test_parquet_uses_the_label_column_wherever_it_is(tmp_path):
    columns = {"f0": [0.5, 1.5, 2.5], "label": [2, 0, 1], "f1": [1, 2, 3], "f2": [True, False, True], "f3": [0.0] * 3}
    batch = load_batch(write_parquet(tmp_path / "b.parquet", columns), SPEC)
    assert batch.y.tolist() == [2, 0, 1]
    assert batch.x[:, :3].tolist() == [[0.5, 1, 1], [1.5, 2, 0], [2.5, 3, 1]]


def test_parquet_without_the_label_column_is_refused_naming_the_column(tmp_path):
    path = write_parquet(tmp_path / "b.parquet", {f"f{i}": [0.0, 1.0] for i in range(4)} | {"target": [0, 1]})
    rejected(path, "no labels: no column named 'label'")


def test_parquet_with_a_text_column_names_the_column(tmp_path):
    path = write_parquet(tmp_path / "b.parquet", {"f0": [1.0, 2.0], "colour": ["red", "blue"], "label": [0, 1]})
    rejected(path, "parquet column 'colour' holds string, not numbers")


def test_parquet_with_missing_values_names_the_column(tmp_path):
    path = write_parquet(tmp_path / "b.parquet", {f"f{i}": [0.0, 1.0] for i in range(4)} | {"label": [0, None]})
    rejected(path, "parquet column 'label' has 1 missing value")


def test_corrupt_parquet_is_refused(tmp_path):
    whole = write_parquet(tmp_path / "whole.parquet", {f"f{i}": [0.0, 1.0] for i in range(4)} | {"label": [0, 1]})
    (tmp_path / "cut.parquet").write_bytes(whole.read_bytes()[:40])
    (tmp_path / "text.parquet").write_text("not parquet at all")
    rejected(tmp_path / "cut.parquet", "unreadable parquet file")
    rejected(tmp_path / "text.parquet", "unreadable parquet file")


def test_corrupt_parquet_reason_names_the_file_without_its_inbox_folder(tmp_path):
    (tmp_path / "text.parquet").write_text("not parquet at all")
    with pytest.raises(BatchRejected) as refused:
        load_batch(tmp_path / "text.parquet", SPEC)
    assert str(refused.value).startswith("text.parquet: unreadable parquet file")
    assert str(tmp_path) not in str(refused.value)


# ------------------------------------------------- hostile files: refused on the first try


def npy_with_header(shape: tuple[int, ...], dtype: str = "<f8", payload: bytes = b"\0" * 64) -> bytes:
    """A .npy member whose header claims ``shape`` but holds only ``payload``."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buffer.getvalue() + payload


def test_an_npz_header_claiming_238_gib_is_refused_with_the_numbers_before_allocating(tmp_path):
    with zipfile.ZipFile(tmp_path / "huge.npz", "w") as archive:
        archive.writestr("x.npy", npy_with_header((1000, 32_000_000)))
        archive.writestr("y.npy", npy_with_header((1000,), "<i8"))
    rejected(tmp_path / "huge.npz",
             r"about 3\d\d\.\d GiB of memory .* over the limit of 2\.0 GiB \(data.max_bytes_in_memory\)")


def test_an_npz_header_claiming_too_many_samples_is_refused_before_allocating(tmp_path):
    with zipfile.ZipFile(tmp_path / "many.npz", "w") as archive:
        archive.writestr("x.npy", npy_with_header((50_000_000, 4)))
    rejected(tmp_path / "many.npz", r"declares 50000000 samples, over the limit of 1000000 \(data.max_samples\)")


def test_a_zip_bomb_is_refused_without_inflating_it(tmp_path):
    import tracemalloc

    bomb = tmp_path / "bomb.npz"
    np.savez_compressed(bomb, x=np.zeros((1 << 20, 8), np.float64), y=np.zeros(1 << 20, np.int64))
    assert bomb.stat().st_size < 1 << 20  # 72 MiB of arrays in well under 1 MiB
    limits = DataConfig(max_bytes_in_memory=16 << 20, max_samples=10 << 20)
    tracemalloc.start()
    try:
        rejected(bomb, "over the limit of 16.0 MiB", DataSpec((8,), 3, limits=limits))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20


def test_a_pt_file_whose_tensors_exceed_the_memory_limit_is_refused_before_loading(tmp_path):
    torch.save({"x": torch.zeros(1 << 18, 4), "y": torch.zeros(1 << 18, dtype=torch.long)}, tmp_path / "big.pt")
    rejected(tmp_path / "big.pt", "its tensors as stored\\), over the limit of 1.0 MiB",
             DataSpec((4,), 3, limits=DataConfig(max_bytes_in_memory=1 << 20)))


def test_parquet_and_csv_row_counts_are_checked_before_parsing(tmp_path):
    limits = DataConfig(max_samples=10)
    parquet = write_parquet(tmp_path / "b.parquet", {f"f{i}": [0.0] * 50 for i in range(4)} | {"label": [0] * 50})
    rejected(parquet, "declares 50 samples, over the limit of 10", DataSpec((4,), 3, limits=limits))
    csv_path = tmp_path / "b.csv"
    csv_path.write_text("a,b,c,d,label\n" + "1,2,3,4,0\n" * 50)
    rejected(csv_path, "declares 5\\d samples, over the limit of 10", DataSpec((4,), 3, limits=limits))


def test_extreme_finite_features_are_refused_naming_the_limit(tmp_path):
    x, y = good()
    x[2, 1] = 1e38
    np.savez(tmp_path / "b.npz", x=x, y=y)
    rejected(tmp_path / "b.npz", r"^b.npz: features reach 1e\+38, beyond the limit of 1e\+12 \(data.max_abs_value\)")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_pt_features_load_exactly_as_float32(tmp_path, dtype):
    x, y = good()
    half = torch.from_numpy(x).to(dtype)
    torch.save({"x": half, "y": torch.from_numpy(y)}, tmp_path / "b.pt")
    batch = load_batch(tmp_path / "b.pt", SPEC)
    assert batch.x.dtype == torch.float32 and torch.equal(batch.x, half.float())


def test_sparse_pt_features_are_refused_with_a_reason(tmp_path):
    x, y = good()
    torch.save({"x": torch.from_numpy(x).to_sparse(), "y": torch.from_numpy(y)}, tmp_path / "b.pt")
    rejected(tmp_path / "b.pt", r"entry 'x' is a sparse tensor \(torch.sparse_coo\); save it dense")


def test_a_legacy_format_pt_file_is_refused(tmp_path):
    x, y = good()
    torch.save({"x": torch.from_numpy(x), "y": torch.from_numpy(y)}, tmp_path / "b.pt",
               _use_new_zipfile_serialization=False)
    rejected(tmp_path / "b.pt", "not a zip-format .pt file")


def test_a_symbolic_link_is_refused_unless_links_are_followed(tmp_path):
    x, y = good()
    np.savez(tmp_path / "outside.npz", x=x, y=y)
    (tmp_path / "inbox").mkdir()
    (tmp_path / "inbox" / "link.npz").symlink_to(tmp_path / "outside.npz")
    rejected(tmp_path / "inbox" / "link.npz", "is a symbolic link .*data.follow_symlinks = true")
    followed = DataSpec((4,), 3, min_samples=2, limits=DataConfig(follow_symlinks=True))
    assert len(load_batch(tmp_path / "inbox" / "link.npz", followed)) == 6


def test_a_fifo_is_refused_without_blocking_on_it(tmp_path):
    import os

    os.mkfifo(tmp_path / "pipe.npz")
    rejected(tmp_path / "pipe.npz", "is not a regular file")


def test_the_batch_carries_the_sha256_of_the_bytes_it_parsed(tmp_path):
    import hashlib

    x, y = good()
    np.savez(tmp_path / "b.npz", x=x, y=y)
    assert load_batch(tmp_path / "b.npz", SPEC).sha256 == hashlib.sha256((tmp_path / "b.npz").read_bytes()).hexdigest()


def test_an_npz_whose_member_header_was_edited_is_refused_as_the_files_fault(tmp_path):
    # The edit lengthens the x member, so every offset after it is wrong: zipfile's BadZipFile
    # comes from the bytes, not the system, and is a rejection on the first try.
    buffer = io.BytesIO()
    np.savez(buffer, x=np.zeros((2, 4), np.float32), y=np.zeros(2, np.int64))
    edited = buffer.getvalue().replace(b"(2, 4)", b"(900000000, 4)", 1)
    (tmp_path / "edited.npz").write_bytes(edited)
    rejected(tmp_path / "edited.npz", r"^edited\.npz: (cannot be parsed as npz: BadZipFile|.*truncated or corrupt)")
