"""One entry point for every adaptation strategy: ``train_candidate(choice, ...)``."""

from __future__ import annotations

import torch
from torch import nn

from retain.strategies.feature_extraction import feature_extraction
from retain.strategies.finetune import finetune
from retain.strategies.meta import ReptileSettings, meta
from retain.strategies.kinds import Strategy
from retain.strategies.policy import Choice
from retain.strategies.replay import ReplayMemory
from retain.strategies.training import TrainingHooks, TrainingSettings, resolve_device


def train_candidate(
    choice: Choice,
    production: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    memory: ReplayMemory,
    settings: TrainingSettings,
    head: str = "head",
    reptile: ReptileSettings = ReptileSettings(),
    hooks: TrainingHooks = TrainingHooks(),
) -> nn.Module:
    """Train a candidate from ``production`` with the chosen strategy; production is untouched.

    Every strategy rehearses the replay memory's rehearsal partition and widens the head when
    the batch brings classes beyond it. The result depends on ``settings.seed`` alone, not on
    what the process drew from torch's global generator before (which it leaves as it was); on
    the CPU bit for bit, on a GPU up to its kernels' nondeterminism (cuDNN's convolutions, say).
    """
    device = torch.device(resolve_device(settings.device))
    gpus = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=gpus):  # manual_seed seeds the GPU generators too
        torch.manual_seed(settings.seed)
        return _train(choice, production, train, memory, settings, head, reptile, hooks)


def _train(
    choice: Choice,
    production: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    memory: ReplayMemory,
    settings: TrainingSettings,
    head: str,
    reptile: ReptileSettings,
    hooks: TrainingHooks,
) -> nn.Module:
    lr = choice.hyperparameters["lr"]
    rehearsal = memory.rehearsal()
    if choice.strategy == Strategy.FINETUNE:
        candidate = finetune(production, train, rehearsal, settings, lr, head=head, hooks=hooks)
    elif choice.strategy == Strategy.FEATURE_EXTRACTION:
        candidate = feature_extraction(production, train, rehearsal, settings, lr, head=head, hooks=hooks)
    elif choice.strategy == Strategy.META:
        sources = memory.source[~memory.audit]
        candidate = meta(production, train, rehearsal, sources, settings, lr, reptile, head=head, hooks=hooks)
    else:
        raise ValueError(f"unknown strategy {choice.strategy!r}")
    return candidate
