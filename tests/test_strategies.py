"""The three adaptation strategies on small streams."""

import copy
import math
from dataclasses import replace

import torch
from torch import nn
from torch.nn import functional as F

from retain.strategies.feature_extraction import (
    feature_extraction,
    head_features,
    train_head_on_features,
    train_with_frozen_backbone,
)
from retain.strategies.finetune import finetune
from retain.strategies.job import TrainingJob
from retain.strategies.meta import ReptileSettings, reptile
from retain.strategies.models import mlp, small_cnn, widen_head
from retain.strategies.training import TrainingHooks, TrainingSettings

SETTINGS = TrainingSettings(epochs=2, batch_size=16, lr=0.01, device="cpu")


def blobs(n: int, classes: int, dim: int, seed: int, shift: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    centres = torch.randn(classes, dim, generator=torch.Generator().manual_seed(123)) * 3
    return centres[y] + torch.randn(n, dim, generator=g) + shift, y


def test_finetune_changes_the_weights_and_leaves_production_untouched():
    production = mlp((4,), 3, hidden=(8,))
    before = copy.deepcopy(production.state_dict())
    candidate = finetune(TrainingJob(production, blobs(60, 3, 4, 1), blobs(20, 3, 4, 2), SETTINGS), lr=0.01).model
    assert all(torch.equal(before[k], v) for k, v in production.state_dict().items())
    assert any(not torch.equal(before[k], v) for k, v in candidate.state_dict().items())


def cnn_with_images():
    """A small CNN (with BatchNorm), a batch of 8x8 images and a shifted rehearsal set."""
    torch.manual_seed(0)
    production = small_cnn((1, 8, 8), 3, channels=(4,), features=8)
    x, y = blobs(48, 3, 64, 3)
    x = x.reshape(-1, 1, 8, 8)
    return production, (x, y), (x[:12] + 0.5, y[:12])


def test_feature_extraction_leaves_every_backbone_parameter_and_statistic_bit_identical():
    production, (x, y), rehearsal = cnn_with_images()
    candidate = feature_extraction(TrainingJob(production, (x, y), rehearsal, SETTINGS), lr=0.05).model
    for name, tensor in production.backbone.state_dict().items():  # weights and BatchNorm buffers
        assert torch.equal(tensor, candidate.backbone.state_dict()[name]), name
    assert not torch.equal(production.head.weight, candidate.head.weight)
    assert all(p.requires_grad for p in candidate.parameters())  # saved model is a normal model


class HalvedLogits(nn.Module):
    """A user's model whose output is not its head's: the head's input cannot stand in for it."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.backbone, self.head = inner.backbone, inner.head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x)) / 2


def test_feature_extraction_of_a_model_whose_output_is_not_its_heads_keeps_the_backbone_bit_identical():
    production, (x, y), rehearsal = cnn_with_images()
    production = HalvedLogits(production)
    assert head_features(production, "head", x, rehearsal[0]) is None
    candidate = feature_extraction(TrainingJob(production, (x, y), rehearsal, SETTINGS), lr=0.05).model
    for name, tensor in production.backbone.state_dict().items():
        assert torch.equal(tensor, candidate.backbone.state_dict()[name]), name
    assert not torch.equal(production.head.weight, candidate.head.weight)


def test_training_the_head_on_cached_features_matches_training_it_through_the_frozen_backbone():
    production, (x, y), rehearsal = cnn_with_images()
    job = TrainingJob(production, (x, y), rehearsal, SETTINGS)
    through, cached = copy.deepcopy(production), copy.deepcopy(production)
    torch.manual_seed(0)
    train_with_frozen_backbone(through, job, lr=0.05)
    torch.manual_seed(0)
    train_head_on_features(cached, job, 0.05, *head_features(cached, "head", x, rehearsal[0]))
    torch.testing.assert_close(cached.head.weight, through.head.weight, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(cached.head.bias, through.head.bias, rtol=1e-4, atol=1e-5)
    assert not torch.equal(cached.head.weight, production.head.weight)


def test_feature_extraction_widens_the_head_for_new_classes():
    production = mlp((4,), 3, hidden=(8,))
    x, y = blobs(60, 5, 4, 1)
    candidate = feature_extraction(TrainingJob(production, (x, y), blobs(20, 3, 4, 2), SETTINGS), lr=0.05).model
    assert candidate.head.out_features == 5
    assert torch.equal(production.backbone[1].weight, candidate.backbone[1].weight)


def test_widening_the_head_keeps_old_class_logits_unchanged():
    model = mlp((4,), 3, hidden=(8,))
    x = torch.randn(10, 4)
    before = model(x).detach()
    old_weight, old_bias = model.head.weight.detach().clone(), model.head.bias.detach().clone()
    widen_head(model, "head", 5)
    after = model(x).detach()
    assert after.shape == (10, 5)
    # Same weights and bias; a wider matmul may only round differently in the last bit.
    torch.testing.assert_close(after[:, :3], before, rtol=0, atol=1e-6)
    assert torch.equal(model.head.weight[:3], old_weight) and torch.equal(model.head.bias[:3], old_bias)


def hyperplane(angle: float, seed: int, n: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=g) * 2
    return x, (x @ torch.tensor([math.cos(angle), math.sin(angle)]) > 0).long()


def steps_to_loss(model, x, y, target: float, lr: float = 0.05, limit: int = 500) -> int:
    model = copy.deepcopy(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    for step in range(limit):
        loss = F.cross_entropy(model(x), y)
        if loss.item() <= target:
            return step
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return limit


def test_meta_initialisation_adapts_faster_than_the_production_start_on_a_held_out_task():
    torch.manual_seed(0)
    production = mlp((2,), 2, hidden=(32,))
    optimizer = torch.optim.Adam(production.parameters(), 1e-2)
    x0, y0 = hyperplane(0.0, seed=1)
    for _ in range(300):
        loss = F.cross_entropy(production(x0), y0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    tasks = [hyperplane(angle, seed=10 + i) for i, angle in enumerate((0.0, 0.8, 1.6, 2.4))]
    learned = reptile(copy.deepcopy(production), tasks, ReptileSettings(meta_steps=300), seed=0)
    held_out = hyperplane(2.0, seed=99)
    plain_steps = steps_to_loss(production, *held_out, target=0.3)
    meta_steps = steps_to_loss(learned, *held_out, target=0.3)
    assert meta_steps < plain_steps / 2, (meta_steps, plain_steps)


def test_reptile_without_tasks_leaves_the_model_unchanged():
    model = mlp((2,), 2, hidden=(4,))
    before = copy.deepcopy(model.state_dict())
    reptile(model, [], ReptileSettings())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_distillation_keeps_replayed_outputs_closer_to_production():
    torch.manual_seed(0)
    production = mlp((4,), 3, hidden=(16,))
    rehearsal = blobs(60, 3, 4, 2)
    shifted = blobs(90, 3, 4, 5, shift=2.0)
    settings = replace(SETTINGS, epochs=5)

    def drift(weight: float) -> float:
        job = TrainingJob(production, shifted, rehearsal, replace(settings, distillation=weight))
        candidate = finetune(job, lr=0.02).model
        with torch.no_grad():
            return float(F.kl_div(F.log_softmax(candidate(rehearsal[0]), 1), F.softmax(production(rehearsal[0]), 1),
                                  reduction="batchmean"))

    assert drift(5.0) < drift(0.0)


def test_replayed_samples_per_step_balance_class_rates():
    from retain.strategies.training import memory_batch_size

    eight_old, two_new = torch.arange(80) % 8, torch.arange(20) % 2 + 8
    assert memory_batch_size(32, eight_old, two_new) == 128  # 4 per class either way
    assert memory_batch_size(32, torch.arange(50) % 10, torch.arange(50) % 10) == 32
    assert memory_batch_size(32, torch.arange(100) % 10, torch.zeros(5, dtype=torch.long)) == 128  # capped
    assert memory_batch_size(32, torch.empty(0, dtype=torch.long), two_new) == 1


def test_a_candidate_depends_on_its_seed_not_on_earlier_draws_from_the_global_generator():
    from retain.strategies.adapt import train_candidate
    from retain.strategies.kinds import STRATEGIES
    from retain.strategies.policy import Choice
    from retain.strategies.replay import ReplayMemory, remember

    production = mlp((4,), 3, hidden=(8,))
    memory = remember(ReplayMemory.empty((4,)), blobs(40, 3, 4, 2), blobs(12, 3, 4, 3), 0, 50, 0.3)
    train = blobs(60, 4, 4, 1)  # brings class 3: the widened head row is drawn too
    for strategy in STRATEGIES:
        weights = []
        for draws in (1, 7):
            torch.rand(draws)
            choice = Choice(strategy, {"lr": 0.01, "lr_scale": 1.0}, "", strategy)
            job = TrainingJob.from_memory(production, train, memory, SETTINGS, reptile=ReptileSettings(meta_steps=3))
            candidate = train_candidate(choice, job).model
            weights.append(torch.cat([p.flatten() for p in candidate.parameters()]))
        assert torch.equal(*weights), strategy


def test_meta_trains_a_model_with_batchnorm_and_reptile_leaves_its_running_statistics():
    from retain.strategies.meta import meta

    production, (x, y), rehearsal = cnn_with_images()
    source = torch.zeros(12, dtype=torch.long)
    statistics = {k: v.clone() for k, v in production.state_dict().items() if "running" in k}
    initialised = reptile(copy.deepcopy(production), [rehearsal, (x, y)], ReptileSettings(meta_steps=5), seed=0)
    assert all(torch.equal(v, initialised.state_dict()[k]) for k, v in statistics.items())
    assert not torch.equal(production.head.weight, initialised.head.weight)
    job = TrainingJob(production, (x, y), rehearsal, SETTINGS, rehearsal_source=source,
                      reptile=ReptileSettings(meta_steps=5))
    candidate = meta(job, lr=0.01).model
    assert any(not torch.equal(v, candidate.state_dict()[k]) for k, v in statistics.items())  # training updates them


def test_the_thread_setting_bounds_every_blas_and_openmp_pool_not_only_torchs():
    from threadpoolctl import threadpool_info

    from retain.strategies.training import limit_threads

    try:
        limit_threads(2)
        assert torch.get_num_threads() == 2
        pools = threadpool_info()
        assert {pool["internal_api"] for pool in pools} >= {"openblas", "openmp"}
        assert {pool["num_threads"] for pool in pools} == {2}
    finally:
        limit_threads(1)
    assert {pool["num_threads"] for pool in threadpool_info()} == {1}


def test_meta_continues_a_stored_initialisation_for_continue_steps_and_returns_the_new_one():
    from retain.strategies.meta import meta

    production = mlp((4,), 3, hidden=(8,))
    settings = ReptileSettings(meta_steps=12, continue_steps=2)
    job = TrainingJob(production, blobs(60, 3, 4, 1), blobs(20, 3, 4, 2), SETTINGS, reptile=settings)
    steps = []
    first = meta(replace(job, hooks=TrainingHooks(on_step=steps.append)), lr=0.01)
    fresh_steps, steps[:] = len(steps), []
    again = meta(replace(job, meta_init=first.meta_init, hooks=TrainingHooks(on_step=steps.append)), lr=0.01)
    assert (first.meta_start, again.meta_start) == ("learned", "continued")
    assert fresh_steps - len(steps) == (12 - 2) * settings.inner_steps
    assert set(again.meta_init) == {name for name, _ in production.named_parameters()}
    assert not torch.equal(again.meta_init["head.weight"], first.meta_init["head.weight"])


def test_a_stored_initialisation_fills_the_old_rows_of_a_head_widened_since():
    from retain.strategies.meta import continue_from

    stored = {name: p.detach() + 1.0 for name, p in mlp((4,), 3, hidden=(8,)).named_parameters()}
    candidate = mlp((4,), 5, hidden=(8,))
    new_rows = candidate.head.weight[3:].detach().clone()
    assert continue_from(candidate, "head", stored)
    assert torch.equal(candidate.head.weight[:3], stored["head.weight"])
    assert torch.equal(candidate.head.weight[3:], new_rows)
    assert torch.equal(candidate.backbone[1].weight, stored["backbone.1.weight"])


def test_an_initialisation_from_another_architecture_is_ignored():
    from retain.strategies.meta import continue_from

    stored = dict(mlp((4,), 3, hidden=(16,)).named_parameters())
    candidate = mlp((4,), 3, hidden=(8,))
    before = copy.deepcopy(candidate.state_dict())
    assert not continue_from(candidate, "head", stored)
    assert not continue_from(candidate, "head", {"head.weight": candidate.head.weight})
    assert all(torch.equal(before[k], v) for k, v in candidate.state_dict().items())


def test_by_default_meta_learns_its_initialisation_from_production_and_keeps_none():
    from retain.strategies.meta import meta

    production = mlp((4,), 3, hidden=(8,))
    stored = {name: p.detach() + 1.0 for name, p in production.named_parameters()}
    job = TrainingJob(production, blobs(60, 3, 4, 1), blobs(20, 3, 4, 2), SETTINGS,
                      reptile=ReptileSettings(meta_steps=3), meta_init=stored)
    trained = meta(job, lr=0.01)
    assert (trained.meta_start, trained.meta_init) == ("learned", None)


def test_reptile_with_the_same_seed_reaches_the_same_parameters_and_moves_no_buffer():
    model = small_cnn((1, 8, 8), 3, channels=(4,), features=8)
    tasks = [(torch.randn(40, 1, 8, 8, generator=torch.Generator().manual_seed(i)), torch.arange(40) % 3)
             for i in range(3)]
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    moved = reptile(copy.deepcopy(model), tasks, ReptileSettings(meta_steps=4), seed=1)
    again = reptile(copy.deepcopy(model), tasks, ReptileSettings(meta_steps=4), seed=1)
    assert all(torch.equal(a, b) for a, b in zip(moved.parameters(), again.parameters(), strict=True))
    assert all(torch.equal(v, dict(moved.named_buffers())[k]) for k, v in buffers.items())
    assert any(not torch.equal(a, b) for a, b in zip(moved.parameters(), model.parameters(), strict=True))
