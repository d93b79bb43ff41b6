"""The adaptation step, in-process: what it returns and what it leaves alone."""

import copy
from dataclasses import replace

import torch

from conftest import digits
from retain.strategies.adapt import train_candidate
from retain.strategies.models import mlp
from retain.strategies.policy import ShiftHistoryEntry
from retain.strategies.replay import ReplayMemory, remember, split_holdout
from retain.strategies.settings import GateConfig, PolicyConfig, ReptileSettings, ShiftThresholds, TrainingSettings
from retain.strategies.step import NewBatch, StepSettings, adapt_step
from retain.strategies.training import train_initial

TRAINING = TrainingSettings(epochs=1, batch_size=32, lr=0.003, device="cpu", seed=3)


def production_and_memory():
    x, y = (torch.from_numpy(a) for a in digits())
    train, holdout = split_holdout(x[:300], y[:300], 0.25, 0)
    torch.manual_seed(0)
    model = train_initial(mlp((64,), 10, hidden=[16]), *train, TRAINING)
    memory = remember(ReplayMemory.empty((64,)), train, holdout, source=0, capacity=200, audit_fraction=0.3, seed=0)
    return model, memory, NewBatch(x[300:420], y[300:420], source=7, num_classes=10)


def settings(gate: GateConfig) -> StepSettings:
    return StepSettings(policy=PolicyConfig(), thresholds=ShiftThresholds(permutations=20), training=TRAINING,
                        reptile=ReptileSettings(meta_steps=3), gate=gate, replay_capacity=200, audit_fraction=0.3)


def test_refused_candidates_are_followed_by_each_fallback_in_turn_and_production_and_memory_are_untouched():
    production, memory, batch = production_and_memory()
    before = copy.deepcopy(production.state_dict())
    chosen, gated = [], []
    result = adapt_step(production, memory, batch, (), settings(GateConfig(min_gain=1.0)),
                        on_choice=chosen.append, on_candidate=gated.append)
    first, second, third = result.candidates
    assert [c.strategy for c in chosen] == [c.choice.strategy for c in result.candidates]
    assert len({c.strategy for c in chosen}) == 3 and gated == list(result.candidates)
    assert second.choice.strategy == first.choice.fallback and third.choice.strategy == second.choice.fallback
    assert third.choice.fallback is None
    assert result.accepted is None and result.final is third
    assert all(torch.equal(before[k], v) for k, v in production.state_dict().items())
    assert 7 not in memory.source.tolist() and 7 in result.memory.source.tolist()
    assert len(result.train[1]) + len(result.holdout[1]) == len(batch.y)


def test_an_accepted_first_candidate_is_the_final_pick_and_no_fallback_is_trained():
    production, memory, batch = production_and_memory()
    history = (ShiftHistoryEntry(batch_id=1, severity="none", p_value=0.5, novel_classes=()),)
    result = adapt_step(production, memory, batch, history, settings(GateConfig(max_forgetting=1.0, min_gain=-1.0)))
    assert len(result.candidates) == 1 and result.accepted is result.final is result.candidates[0]


def test_each_candidate_counts_its_optimizer_steps_and_the_samples_they_saw():
    production, memory, batch = production_and_memory()
    counted = {}
    for strategy in ("finetune", "meta"):
        def forced(choice, job, strategy=strategy):  # the same batch through each strategy
            return train_candidate(replace(choice, strategy=strategy, hyperparameters={"lr": 0.001}), job)

        result = adapt_step(production, memory, batch, (), settings(GateConfig(max_forgetting=1.0, min_gain=-1.0)),
                            train=forced)
        counted[strategy] = (result.candidates[0].optimizer_steps, result.candidates[0].samples_seen)
    steps, samples = counted["finetune"]
    n_train = len(split_holdout(batch.x, batch.y, 0.25, TRAINING.seed)[0][1])
    assert steps >= -(-n_train // TRAINING.batch_size) and samples >= n_train  # one epoch, rehearsal on top
    # Reptile's inner steps (meta_steps=3) come on top of the same epoch.
    assert counted["meta"][0] == steps + 3 * ReptileSettings().inner_steps
