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
