"""``finetune``: the whole model trained from the production weights at a reduced learning
rate, with rehearsal from a class-balanced replay buffer."""

from __future__ import annotations

from retain.strategies.job import TrainedCandidate, TrainingJob
from retain.strategies.models import prepare_candidate
from retain.strategies.training import rehearsal_plugins, run_template


def finetune(job: TrainingJob, lr: float) -> TrainedCandidate:
    """A candidate fine-tuned from a copy of ``job.production``, which is untouched."""
    candidate = prepare_candidate(job.production, job.head, job.labels())
    plugins = rehearsal_plugins(job.production, job.rehearsal, job.train[1], job.settings)
    return TrainedCandidate(run_template(candidate, *job.train, job.settings, lr, plugins=plugins, hooks=job.hooks))
