"""``meta``: learn an initialisation that adapts fast (first-order, Reptile) over the tasks
at hand — the past batches held in the replay buffer and the new batch's support split —
then adapt from it on the new batch.

With ``continue_steps`` set, the initialisation is carried along the lineage: the version
keeps it as an artifact and the next ``meta`` candidate continues it for ``continue_steps``
outer updates, with the new batch as one more task, instead of ``meta_steps`` from the
production weights.

Reptile runs inside Avalanche as a plugin at the start of the experience, so the ordinary
training that follows (with replay) and the forgetting gate apply unchanged. First-order, in
plain PyTorch: no ``higher`` or ``learn2learn``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn
from torch.func import replace_all_batch_norm_modules_
from torch.nn import functional as F

from retain.strategies.job import MetaInit, TrainedCandidate, TrainingJob
from retain.strategies.kinds import MetaStart
from retain.strategies.models import prepare_candidate
from retain.strategies.settings import ReptileSettings
from retain.strategies.training import rehearsal_plugins, run_template

Task = tuple[torch.Tensor, torch.Tensor]


def reptile(model: nn.Module, tasks: list[Task], settings: ReptileSettings, seed: int = 0,
            on_step: Callable[[int], None] | None = None, steps: int | None = None) -> nn.Module:
    """Move ``model``'s parameters, in place, to a Reptile initialisation for ``tasks`` in
    ``steps`` outer updates (default ``settings.meta_steps``); ``on_step`` is told of each
    inner gradient step and its samples."""
    steps = settings.meta_steps if steps is None else steps
    tasks = [task for task in tasks if len(task[1])]
    if not tasks:
        return model
    generator = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    # The inner loops train a copy whose BatchNorm layers use batch statistics only: Reptile
    # moves the parameters; the training that follows updates the model's own statistics.
    # Plain autograd on that copy, not ``torch.func``: on a small model ``grad`` over
    # ``functional_call`` costs several times a step's arithmetic in Python overhead.
    scratch = replace_all_batch_norm_modules_(copy.deepcopy(model)).train()
    fast = [p.requires_grad_(True) for p in scratch.parameters()]
    initial = [p.detach().clone() for p in fast]
    for step in range(steps):
        x, y = tasks[int(torch.randint(len(tasks), (1,), generator=generator))]
        with torch.no_grad():
            for weight, start_at in zip(fast, initial, strict=True):
                weight.copy_(start_at)
        for _ in range(settings.inner_steps):
            idx = torch.randint(len(y), (min(settings.batch_size, len(y)),), generator=generator)
            loss = F.cross_entropy(scratch(x[idx].to(device)), y[idx].to(device))
            gradients = torch.autograd.grad(loss, fast)
            with torch.no_grad():
                for weight, gradient in zip(fast, gradients, strict=True):
                    weight.sub_(settings.inner_lr * gradient)
            if on_step is not None:
                on_step(len(idx))
        step_size = settings.meta_lr * (1.0 - step / steps)
        with torch.no_grad():
            for start_at, weight in zip(initial, fast, strict=True):
                start_at.add_(step_size * (weight - start_at))
    with torch.no_grad():
        for parameter, learned in zip(model.parameters(), initial, strict=True):
            parameter.copy_(learned)
    return model


def meta_plugin(tasks: list[Task], settings: ReptileSettings, seed: int, steps: int,
                on_step: Callable[[int], None] | None = None):
    """Runs Reptile on the strategy's model when the experience starts and keeps the
    initialisation it reached (``.initialisation``, on the CPU)."""
    from retain.strategies.avalanche_api import SupervisedPlugin

    class MetaInitialisation(SupervisedPlugin):
        initialisation: MetaInit | None = None

        def before_training_exp(self, strategy, **kwargs):
            reptile(strategy.model, tasks, settings, seed, on_step, steps)
            self.initialisation = {name: p.detach().cpu().clone() for name, p in strategy.model.named_parameters()}

    return MetaInitialisation()


def continue_from(candidate: nn.Module, head: str, stored: MetaInit) -> bool:
    """Set ``candidate``'s parameters to a stored initialisation, in place, and say whether it
    fitted: the same parameters and shapes, except a head that has since gained classes (the
    stored rows are copied, the new ones keep the candidate's). Otherwise the candidate is left
    as it was: the architecture changed, and meta starts over."""
    parameters = dict(candidate.named_parameters())
    if set(parameters) != set(stored):
        return False
    for name, parameter in parameters.items():
        shape = stored[name].shape
        widened_head = (name.startswith(head + ".") and len(shape) == parameter.dim() > 0
                        and shape[1:] == parameter.shape[1:] and shape[0] < parameter.shape[0])
        if shape != parameter.shape and not widened_head:
            return False
    with torch.no_grad():
        for name, parameter in parameters.items():
            value = stored[name]
            (parameter[: value.shape[0]] if value.shape != parameter.shape else parameter).copy_(value)
    return True


def meta_tasks(
    rehearsal: tuple[torch.Tensor, torch.Tensor], rehearsal_source: torch.Tensor, support: Task
) -> list[Task]:
    """One task per past batch in the replay buffer, plus the new batch's support split."""
    x, y = rehearsal
    tasks = [(x[rehearsal_source == s], y[rehearsal_source == s]) for s in rehearsal_source.unique().tolist()]
    return [*tasks, support]


def meta(job: TrainingJob, lr: float) -> TrainedCandidate:
    """A candidate adapted on the new batch from a meta-learned initialisation: with
    ``continue_steps`` set, the lineage's (``job.meta_init``) continued where it fits and the new
    one returned; otherwise, or when none fits, one learned from the production weights."""
    candidate = prepare_candidate(job.production, job.head, job.labels())
    carried = job.reptile.continue_steps is not None
    continued = carried and job.meta_init is not None and continue_from(candidate, job.head, job.meta_init)
    steps = job.reptile.continue_steps if continued else job.reptile.meta_steps
    tasks = meta_tasks(job.rehearsal, job.sources, job.train)
    initialisation = meta_plugin(tasks, job.reptile, job.settings.seed, steps, job.hooks.on_step)
    model = run_template(
        candidate, *job.train, job.settings, lr,
        plugins=[initialisation, *rehearsal_plugins(job.production, job.rehearsal, job.train[1], job.settings)],
        hooks=job.hooks,
    )
    start = MetaStart.CONTINUED if continued else MetaStart.LEARNED
    return TrainedCandidate(model, initialisation.initialisation if carried else None, start)
