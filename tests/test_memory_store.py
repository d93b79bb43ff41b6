"""The replay memory in the artifact store: chunks per source batch and a manifest per version."""

import pytest
import torch

from retain.daemon.versions import memory_artifacts, read_memory, save_memory
from retain.registry import ArtifactError, ArtifactStore
from retain.strategies.replay import ReplayMemory, remember


def batch(seed: int, n: int = 60) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, 5, generator=generator), torch.randint(0, 3, (n,), generator=generator)
    return (x[:40], y[:40]), (x[40:], y[40:])


def grown(memory: ReplayMemory, source: int) -> ReplayMemory:
    return remember(memory, *batch(source), source=source, capacity=100, audit_fraction=0.3, seed=source)


def same_samples(a: ReplayMemory, b: ReplayMemory) -> bool:
    def rows(m: ReplayMemory) -> list:
        return sorted(zip(m.source.tolist(), m.y.tolist(), m.audit.tolist(), m.x.tolist(), strict=True))
    return rows(a) == rows(b)


def test_a_saved_memory_reads_back_with_every_sample(tmp_path):
    store = ArtifactStore(tmp_path)
    memory = grown(grown(ReplayMemory.empty((5,)), 0), 1)
    assert same_samples(read_memory(save_memory(memory, store), store), memory)


def test_saving_the_next_version_stores_the_new_batch_and_a_manifest_only(tmp_path):
    store = ArtifactStore(tmp_path)
    first = save_memory(grown(ReplayMemory.empty((5,)), 0), store)
    before = set(memory_artifacts(first, store))
    nxt = grown(read_memory(first, store), 1)
    second = save_memory(nxt, store)
    after = memory_artifacts(second, store)
    assert before - {first} <= after  # source 0's chunk is shared
    assert len(after - before) == 2  # source 1's chunk and the manifest
    assert same_samples(read_memory(second, store), nxt)


def test_an_evicted_sample_leaves_the_manifest_not_the_shared_chunk(tmp_path):
    store = ArtifactStore(tmp_path)
    memory = read_memory(save_memory(grown(ReplayMemory.empty((5,)), 0), store), store)
    first_chunk = memory.chunks[0]
    for source in range(1, 6):  # capacity 100: later batches push source 0's samples out
        memory = read_memory(save_memory(grown(memory, source), store), store)
    assert int((memory.source == 0).sum()) < 40 and memory.chunks[0] == first_chunk
    assert same_samples(memory, read_memory(save_memory(memory, store), store))


def test_a_manifest_whose_rows_are_not_in_its_chunk_is_an_artifact_error(tmp_path):
    store = ArtifactStore(tmp_path)
    chunk = store.put_tensors({"x": torch.zeros(2, 5), "y": torch.zeros(2, dtype=torch.long)})
    manifest = store.put_tensors({"retain.replay_manifest": torch.tensor([5]), f"0/{chunk}/rows": torch.tensor([0, 7]),
                                  f"0/{chunk}/audit": torch.tensor([True, False])})
    with pytest.raises(ArtifactError, match="rows of chunk"):
        read_memory(manifest, store)


def test_a_memory_stored_whole_before_chunks_still_reads(tmp_path):
    store = ArtifactStore(tmp_path)
    memory = grown(ReplayMemory.empty((5,)), 0)
    legacy = store.put_tensors(memory.to_tensors())
    assert same_samples(read_memory(legacy, store), memory)
    assert memory_artifacts(legacy, store) == {legacy}
