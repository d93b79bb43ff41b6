"""``finetune``: the whole model trained from the production weights at a reduced learning
rate, with rehearsal from a class-balanced replay buffer."""

from __future__ import annotations

from torch import nn

from retain.strategies.job import TrainingJob
from retain.strategies.models import prepare_candidate
from retain.strategies.training import rehearsal_plugins, run_template


def finetune(job: TrainingJob, lr: float) -> nn.Module:
    """A candidate fine-tuned from a copy of ``job.production``, which is untouched."""
    candidate = prepare_candidate(job.production, job.head, job.labels())
    plugins = rehearsal_plugins(job.production, job.rehearsal, job.train[1], job.settings)
    return run_template(candidate, *job.train, job.settings, lr, plugins=plugins, hooks=job.hooks)
