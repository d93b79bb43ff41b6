"""The training data path: minibatches cut from tensors, and the replay plugin that feeds them."""

from __future__ import annotations

import torch
from torch import nn

from retain.strategies.minibatches import (
    NEW_DATA_TASK,
    REHEARSAL_TASK,
    Rehearsal,
    TensorMinibatches,
    class_balanced_indices,
)
from retain.strategies.training import TrainingSettings, replay_plugin, run_template, tensor_dataset


def numbered(n: int, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Samples whose single feature is their own number, so a minibatch says which it holds."""
    x = torch.arange(offset, offset + n, dtype=torch.float32).unsqueeze(1)
    return x, torch.arange(n) % 3


def test_an_epoch_holds_every_new_sample_once_in_minibatches_of_the_batch_size():
    x, y = numbered(70)
    torch.manual_seed(0)
    batches = list(TensorMinibatches(x, y, batch_size=32))
    assert [len(b[0]) for b in batches] == [32, 32, 6]
    seen = torch.cat([b[0] for b in batches]).flatten()
    assert sorted(seen.long().tolist()) == list(range(70))
    assert all(bool((b[2] == NEW_DATA_TASK).all()) for b in batches)
    assert all(torch.equal(b[1], y[b[0].flatten().long()]) for b in batches)


def test_for_batchnorm_a_lone_sample_left_over_takes_one_more_from_the_minibatch_before_it():
    x, y = numbered(225)  # 7 x 32 + 1: a last minibatch of one cannot pass through BatchNorm
    loader = TensorMinibatches(x, y, batch_size=32, fewest=2)
    batches = list(loader)
    assert len(loader) == 8 and [len(b[0]) for b in batches] == [32] * 6 + [31, 2]
    assert [len(b[0]) for b in TensorMinibatches(x, y, batch_size=32)][-1] == 1  # other models: as before
    with_replay = TensorMinibatches(x, y, 32, Rehearsal(x[:10], y[:10], batch_size=4), fewest=2)
    assert [len(b[0]) for b in with_replay][-1] == 1 + 4  # replayed samples fill the step
    assert sorted(torch.cat([b[0] for b in batches]).flatten().long().tolist()) == list(range(225))


def test_each_minibatch_is_followed_by_replayed_samples_marked_as_rehearsal():
    x, y = numbered(64)
    memory_x, memory_y = numbered(10, offset=1000)
    torch.manual_seed(0)
    loader = TensorMinibatches(x, y, batch_size=16).with_rehearsal(Rehearsal(memory_x, memory_y, batch_size=6))
    batches = list(loader)
    assert len(batches) == len(loader) == 4
    for inputs, labels, task in batches:
        assert task.tolist() == [NEW_DATA_TASK] * 16 + [REHEARSAL_TASK] * 6
        assert bool((inputs[16:] >= 1000).all()) and bool((inputs[:16] < 1000).all())
        assert torch.equal(labels[16:], memory_y[inputs[16:].flatten().long() - 1000])


def test_replayed_samples_are_drawn_about_equally_often():
    x, y = numbered(200)
    memory_x, memory_y = numbered(30, offset=1000)
    torch.manual_seed(0)
    loader = TensorMinibatches(x, y, batch_size=10).with_rehearsal(Rehearsal(memory_x, memory_y, batch_size=7))
    drawn = torch.cat([b[0][10:] for b in loader]).flatten().long() - 1000
    counts = torch.bincount(drawn, minlength=30)
    assert int(counts.sum()) == 20 * 7
    assert int(counts.max() - counts.min()) <= 1  # 140 draws over 30 samples: 4 or 5 each


def test_the_same_seed_gives_the_same_epoch():
    x, y = numbered(50)
    memory = Rehearsal(*numbered(9, offset=100), batch_size=4)

    def epoch() -> list[torch.Tensor]:
        torch.manual_seed(7)
        return [b[0] for b in TensorMinibatches(x, y, 8, memory)]

    first, second = epoch(), epoch()
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


def test_class_balanced_indices_keep_what_avalanches_class_balanced_buffer_keeps():
    from retain.strategies.avalanche_api import ClassBalancedBuffer

    y = torch.tensor([0] * 50 + [1] * 7 + [2] * 30 + [3] * 13)
    x = torch.arange(len(y), dtype=torch.float32).unsqueeze(1)
    capacity = 42
    kept = class_balanced_indices(y, capacity)
    buffer = ClassBalancedBuffer(max_size=capacity, adaptive_size=True)
    buffer.update_from_dataset(tensor_dataset(x, y))
    in_buffer = {label: len(group.buffer) for label, group in buffer.buffer_groups.items()}
    assert {label: int((y[kept] == label).sum()) for label in range(4)} == in_buffer == {0: 11, 1: 7, 2: 10, 3: 10}
    assert len(set(kept.tolist())) == len(kept)


def test_the_replay_plugin_still_rehearses_under_a_plain_avalanche_template():
    from retain.strategies.avalanche_api import Naive, SupervisedPlugin
    from retain.strategies.training import single_experience, silent_evaluator

    torch.manual_seed(0)
    new_x, new_y = torch.randn(40, 4), torch.zeros(40, dtype=torch.long)
    old_x, old_y = torch.randn(40, 4) + 3, torch.ones(40, dtype=torch.long)
    seen_tasks: list[int] = []

    model = nn.Linear(4, 2)
    plugin = replay_plugin(old_x, old_y, batch_size_mem=8)

    class RecordTasks(SupervisedPlugin):
        def after_training_iteration(self, strategy, **kwargs):
            seen_tasks.extend(torch.as_tensor(strategy.mb_task_id).tolist())

    strategy = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), train_mb_size=8,
                     train_epochs=1, plugins=[plugin, RecordTasks()], evaluator=silent_evaluator())
    strategy.train(single_experience(new_x, new_y), num_workers=0)
    assert seen_tasks.count(1) == 5 * 8  # five steps, each with eight replayed samples from the filled buffer
    assert len(plugin.storage_policy.buffer) == 40


def test_run_template_trains_on_new_and_replayed_samples():
    torch.manual_seed(0)
    # Both classes share the first feature; only rehearsal can teach that the second marks class 1.
    new_x, new_y = 0.1 * torch.randn(60, 4) + torch.tensor([1.0, 0, 0, 0]), torch.zeros(60, dtype=torch.long)
    old_x, old_y = 0.1 * torch.randn(60, 4) + torch.tensor([1.0, 3, 0, 0]), torch.ones(60, dtype=torch.long)
    model = nn.Linear(4, 2)
    settings = TrainingSettings(epochs=20, batch_size=10, lr=0.05, seed=0, threads=1)
    run_template(model, new_x, new_y, settings, settings.lr, plugins=[replay_plugin(old_x, old_y, batch_size_mem=10)])
    with torch.no_grad():
        assert bool((model(old_x).argmax(1) == 1).all()), "replayed class forgotten: the rehearsal rows never arrived"
        assert bool((model(new_x).argmax(1) == 0).all())


def test_rehearsal_outputs_travel_with_their_samples():
    x, y = numbered(20)
    memory_x, memory_y = numbered(6, offset=100)
    outputs = torch.stack([memory_x.flatten() * 10, -memory_x.flatten()], dim=1)
    torch.manual_seed(0)
    for inputs, _, carried, task in TensorMinibatches(x, y, 8, Rehearsal(memory_x, memory_y, 3, outputs)):
        assert len(carried) == 3 and task[-3:].tolist() == [REHEARSAL_TASK] * 3  # the last rows' outputs
        assert torch.equal(carried[:, 0], inputs[-3:].flatten() * 10)


def test_distilling_from_outputs_computed_once_trains_what_distilling_at_every_step_trains():
    from retain.strategies.training import anchor_plugin

    torch.manual_seed(0)
    production = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
    new_x, new_y = torch.randn(50, 4), torch.randint(0, 3, (50,))
    old_x, old_y = torch.randn(30, 4) + 1, torch.randint(0, 3, (30,))
    settings = TrainingSettings(epochs=3, batch_size=8, lr=0.01, seed=0, threads=1)

    def trained(anchor_first: bool) -> nn.Module:
        import copy

        torch.manual_seed(1)
        replay, anchor = replay_plugin(old_x, old_y, batch_size_mem=8), anchor_plugin(copy.deepcopy(production), 1.0)
        # The anchor finds the rehearsal in the loader only once the replay plugin has put it there.
        plugins = [anchor, replay] if anchor_first else [replay, anchor]
        return run_template(copy.deepcopy(production), new_x, new_y, settings, settings.lr, plugins=plugins)

    once, every_step = trained(anchor_first=False), trained(anchor_first=True)
    for a, b in zip(once.parameters(), every_step.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert any(not torch.equal(a, b) for a, b in zip(once.parameters(), production.parameters(), strict=True))
