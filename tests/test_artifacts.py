"""Content-addressed artifacts: digests verified, tensors only, atomic files."""

import torch
import pytest

from retain.registry import ArtifactError, ArtifactStore


def test_put_is_content_addressed_and_idempotent(tmp_path):
    store = ArtifactStore(tmp_path)
    digest = store.put(b"hello")
    assert store.put(b"hello") == digest
    assert store.path(digest) == tmp_path / "sha256" / digest[:2] / digest
    assert store.get(digest) == b"hello"
    assert not [p for p in store.path(digest).parent.iterdir() if p.name.startswith(".tmp")]


def test_state_dict_round_trips(tmp_path):
    store = ArtifactStore(tmp_path)
    state = torch.nn.Linear(3, 2).state_dict()
    loaded = store.get_tensors(store.put_tensors(state))
    assert all(torch.equal(state[k], loaded[k]) for k in state)


def test_corrupted_artifact_is_detected(tmp_path):
    store = ArtifactStore(tmp_path)
    digest = store.put(b"weights")
    store.path(digest).write_bytes(b"weightz")
    with pytest.raises(ArtifactError, match="corrupt"):
        store.get(digest)


def test_missing_artifact_is_named(tmp_path):
    with pytest.raises(ArtifactError, match="missing"):
        ArtifactStore(tmp_path).get("0" * 64)


class Payload:
    def __reduce__(self):
        return (print, ("pwned",))


def test_artifact_holding_objects_is_not_unpickled(tmp_path):
    import io
    import pickle

    buffer = io.BytesIO()
    torch.save({"w": Payload()}, buffer)
    store = ArtifactStore(tmp_path)
    with pytest.raises(pickle.UnpicklingError):
        store.get_tensors(store.put(buffer.getvalue()))


def test_tensors_are_stored_as_safetensors_without_pickle(tmp_path):
    from safetensors.torch import load

    store = ArtifactStore(tmp_path)
    tensors = {"weight": torch.randn(3, 2), "labels": torch.arange(5), "audit": torch.tensor([True, False])}
    data = store.get(store.put_tensors(tensors))
    assert b"pickle" not in data and not data.startswith(b"PK")
    assert all(torch.equal(load(data)[name], tensor) for name, tensor in tensors.items())


@pytest.mark.parametrize("zip_format", [True, False])
def test_artifacts_written_with_torch_save_before_safetensors_still_load(tmp_path, zip_format):
    import io

    tensors = {"weight": torch.randn(4, 4), "y": torch.arange(3)}
    buffer = io.BytesIO()
    torch.save(tensors, buffer, _use_new_zipfile_serialization=zip_format)  # as retain 0.2 wrote them
    store = ArtifactStore(tmp_path)
    loaded = store.get_tensors(store.put(buffer.getvalue()))
    assert all(torch.equal(loaded[name], tensor) for name, tensor in tensors.items())


@pytest.mark.parametrize("header_length", [0x80, 0x4B50])
def test_a_safetensors_header_whose_length_looks_like_a_torch_file_is_still_safetensors(tmp_path, header_length):
    import json
    import struct

    header = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    header += b" " * (header_length - len(header))
    data = struct.pack("<Q", header_length) + header + struct.pack("<f", 1.5)
    store = ArtifactStore(tmp_path)
    assert store.get_tensors(store.put(data))["w"].tolist() == [1.5]
