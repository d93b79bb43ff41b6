"""One entry point for every adaptation strategy: ``train_candidate(choice, job)``."""

from __future__ import annotations

import torch

from retain.strategies.feature_extraction import feature_extraction
from retain.strategies.finetune import finetune
from retain.strategies.job import TrainedCandidate, TrainingJob
from retain.strategies.kinds import Strategy
from retain.strategies.meta import meta
from retain.strategies.policy import Choice
from retain.strategies.training import resolve_device

_STRATEGIES = {Strategy.FINETUNE: finetune, Strategy.FEATURE_EXTRACTION: feature_extraction, Strategy.META: meta}


def train_candidate(choice: Choice, job: TrainingJob) -> TrainedCandidate:
    """Train a candidate from ``job.production`` with the chosen strategy; production is untouched.

    Every strategy rehearses the job's rehearsal samples and widens the head when the batch
    brings classes beyond it. The result depends on ``job.settings.seed`` alone, not on what the
    process drew from torch's global generator before (which it leaves as it was); on the CPU bit
    for bit, on a GPU up to its kernels' nondeterminism (cuDNN's convolutions, say).
    """
    strategy = _STRATEGIES.get(choice.strategy)
    if strategy is None:
        raise ValueError(f"unknown strategy {choice.strategy!r}")
    device = torch.device(resolve_device(job.settings.device))
    gpus = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=gpus):  # manual_seed seeds the GPU generators too
        torch.manual_seed(job.settings.seed)
        return strategy(job, choice.hyperparameters["lr"])
