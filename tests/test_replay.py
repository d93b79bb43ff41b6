"""The replay memory: class balance, partitions, per-source audit groups, round trip."""

import torch

from retain.strategies.replay import ReplayMemory, balanced_indices, holdout_split, remember


def labelled(counts: dict[int, int], dim: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.cat([torch.full((n,), c) for c, n in counts.items()])
    return torch.randn(len(y), dim), y


def test_balanced_indices_share_budget_evenly_and_pass_unused_share_on():
    y = torch.tensor([0] * 100 + [1] * 100 + [2] * 5)
    picked = y[balanced_indices(y, 65, torch.Generator().manual_seed(0))]
    counts = torch.bincount(picked, minlength=3).tolist()
    assert counts == [30, 30, 5]


def test_holdout_split_is_stratified_and_disjoint():
    y = torch.tensor([0] * 40 + [1] * 20 + [2] * 1)
    train, holdout = holdout_split(y, 0.25, seed=1)
    assert set(train.tolist()).isdisjoint(holdout.tolist())
    assert len(train) + len(holdout) == len(y)
    assert torch.bincount(y[holdout], minlength=3).tolist() == [10, 5, 0]


def test_remember_respects_capacity_and_takes_audit_only_from_the_holdout():
    x, y = labelled({0: 200, 1: 200})
    hx, hy = labelled({0: 50, 1: 50})
    hx += 100.0  # marks held-out samples
    memory = remember(ReplayMemory.empty((3,)), (x, y), (hx, hy), source=1, capacity=100, audit_fraction=0.3)
    assert len(memory) == 100
    audit_x, _ = memory.audit_set()
    rehearsal_x, rehearsal_y = memory.rehearsal()
    assert len(audit_x) == 30 and bool((audit_x > 50).all())
    assert bool((rehearsal_x < 50).all())
    assert torch.bincount(rehearsal_y).tolist() == [35, 35]


def test_audit_slots_are_shared_between_source_batches():
    memory = ReplayMemory.empty((3,))
    for source in (1, 2, 3):
        train, holdout = labelled({0: 100, 1: 100}), labelled({0: 40, 1: 40})
        memory = remember(memory, train, holdout, source=source, capacity=200, audit_fraction=0.3)
    groups = memory.audit_groups()
    assert sorted(groups) == [1, 2, 3]
    assert [len(g[1]) for g in groups.values()] == [20, 20, 20]


def test_new_classes_get_rehearsal_slots_next_to_old_ones():
    memory = remember(ReplayMemory.empty((3,)), labelled({0: 200, 1: 200}), labelled({0: 20, 1: 20}), 1, 100, 0.2)
    memory = remember(memory, labelled({2: 200}), labelled({2: 20}), 2, 100, 0.2)
    _, rehearsal_y = memory.rehearsal()
    assert sorted(torch.bincount(rehearsal_y).tolist()) == [26, 27, 27]


def test_memory_round_trips_through_plain_tensors():
    memory = remember(ReplayMemory.empty((3,)), labelled({0: 30, 1: 30}), labelled({0: 10, 1: 10}), 4, 50, 0.3)
    restored = ReplayMemory.from_tensors(memory.to_tensors())
    for name, value in memory.to_tensors().items():
        assert torch.equal(value, restored.to_tensors()[name])
