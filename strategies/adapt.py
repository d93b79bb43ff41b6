"""One entry point for every adaptation strategy: ``train_candidate(choice, ...)``."""

from __future__ import annotations

import torch
from torch import nn

from strategies.finetune import finetune
from strategies.policy import Choice
from strategies.replay import ReplayMemory
from strategies.training import TrainingHooks, TrainingSettings


def train_candidate(
    choice: Choice,
    production: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    memory: ReplayMemory,
    settings: TrainingSettings,
    hooks: TrainingHooks = TrainingHooks(),
) -> nn.Module:
    """Train a candidate from ``production`` with the chosen strategy; production is untouched."""
    if choice.strategy == "finetune":
        return finetune(
            production, train, memory.rehearsal(), settings, lr=choice.hyperparameters["lr"], hooks=hooks
        )
    raise NotImplementedError(f"strategy {choice.strategy!r} is not implemented yet")
