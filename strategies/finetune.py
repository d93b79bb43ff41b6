"""``finetune``: the whole model trained from the production weights at a reduced learning
rate, with rehearsal from a class-balanced replay buffer."""

from __future__ import annotations

import torch
from torch import nn

from retain.strategies.models import prepare_candidate
from retain.strategies.training import TrainingHooks, TrainingSettings, rehearsal_plugins, run_template


def finetune(
    production: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    rehearsal: tuple[torch.Tensor, torch.Tensor],
    settings: TrainingSettings,
    lr: float,
    head: str = "head",
    hooks: TrainingHooks = TrainingHooks(),
) -> nn.Module:
    """A candidate fine-tuned from a copy of ``production``; ``production`` is untouched."""
    candidate = prepare_candidate(production, head, torch.cat([train[1], rehearsal[1]]))
    plugins = rehearsal_plugins(production, rehearsal, train[1], settings)
    return run_template(candidate, *train, settings, lr, plugins=plugins, hooks=hooks)
