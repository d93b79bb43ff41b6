"""``finetune``: the whole model trained from the production weights at a reduced learning
rate, with rehearsal from a class-balanced replay buffer."""

from __future__ import annotations

import copy

import torch
from torch import nn

from strategies.training import TrainingHooks, TrainingSettings, quiet_avalanche, run_template, tensor_dataset


def replay_plugin(rehearsal_x: torch.Tensor, rehearsal_y: torch.Tensor):
    """A ``ReplayPlugin`` whose class-balanced buffer already holds the rehearsal samples.

    The buffer is not updated after training: what the memory keeps from a batch is decided
    once, by ``strategies.replay.remember``, and saved with the version.
    """
    with quiet_avalanche():
        from avalanche.training.plugins import ReplayPlugin
        from avalanche.training.storage_policy import ClassBalancedBuffer

    class FixedReplayPlugin(ReplayPlugin):
        def after_training_exp(self, strategy, **kwargs):
            pass

    size = max(len(rehearsal_y), 1)
    buffer = ClassBalancedBuffer(max_size=size, adaptive_size=True)
    if len(rehearsal_y):
        buffer.update_from_dataset(tensor_dataset(rehearsal_x, rehearsal_y))
    return FixedReplayPlugin(mem_size=size, storage_policy=buffer)


def finetune(
    production: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    rehearsal: tuple[torch.Tensor, torch.Tensor],
    settings: TrainingSettings,
    lr: float,
    hooks: TrainingHooks = TrainingHooks(),
) -> nn.Module:
    """A candidate fine-tuned from a copy of ``production``; ``production`` is untouched."""
    candidate = copy.deepcopy(production)
    return run_template(
        candidate, *train, settings, lr, plugins=[replay_plugin(*rehearsal)], hooks=hooks
    )
