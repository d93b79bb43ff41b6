"""``feature_extraction``: the production backbone frozen, the head retrained (and widened for
classes the model has never seen), with rehearsal from the replay buffer.

A frozen backbone in eval mode maps each sample to the same features every epoch, so they are
computed once and the head trains on them alone, wherever the model's output is its head's
output (checked on the batch); otherwise the whole model runs with the backbone frozen.
"""

from __future__ import annotations

import torch
from torch import nn

from retain.strategies.job import TrainedCandidate, TrainingJob
from retain.strategies.models import features_and_logits, head_module, prepare_candidate
from retain.strategies.training import rehearsal_plugins, resolve_device, run_template


def backbone_parameters(model: nn.Module, head: str) -> list[tuple[str, nn.Parameter]]:
    """Every parameter outside the head: for a built-in model, ``backbone``'s; for a user's
    model, everything but the named head module."""
    prefix = head + "."
    return [(name, p) for name, p in model.named_parameters() if not name.startswith(prefix)]


def frozen_backbone_plugin(model: nn.Module, head: str):
    """Keeps everything but the head in eval mode: the template calls ``model.train()`` when
    training starts, which would let BatchNorm statistics move."""
    from retain.strategies.avalanche_api import SupervisedPlugin

    target = head_module(model, head)
    inside_head = set(map(id, target.modules()))
    # Modules that neither are part of the head nor contain it (the root model contains it).
    backbone_modules = [
        m for m in model.modules() if id(m) not in inside_head and not any(c is target for c in m.modules())
    ]

    def freeze_modes() -> None:
        for module in backbone_modules:
            module.eval()

    class FrozenBackbone(SupervisedPlugin):
        def before_training_epoch(self, strategy, **kwargs):
            freeze_modes()

    return FrozenBackbone()


def head_features(
    model: nn.Module, head: str, train_x: torch.Tensor, rehearsal_x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The head's inputs for the training and the rehearsal samples, or None where the head's
    output on them is not the model's output (a model that transforms its logits further)."""
    features, logits = features_and_logits(model, head, torch.cat([train_x, rehearsal_x]))
    if not len(features):
        return None
    linear = head_module(model, head)
    probe = slice(0, min(len(features), 64))
    with torch.no_grad():
        try:
            reproduced = linear(features[probe].to(next(linear.parameters()).device)).cpu()
        except RuntimeError:  # the head's input is not a flat feature vector
            return None
    if reproduced.shape != logits[probe].shape or not torch.allclose(reproduced, logits[probe], rtol=1e-4, atol=1e-5):
        return None
    return features[: len(train_x)], features[len(train_x) :]


def feature_extraction(job: TrainingJob, lr: float) -> TrainedCandidate:
    """A candidate whose backbone is bit-identical to ``job.production``'s; only the head learns."""
    candidate = prepare_candidate(job.production, job.head, job.labels())
    candidate.to(resolve_device(job.settings.device))
    cached = head_features(candidate, job.head, job.train[0], job.rehearsal[0])
    if cached is None:
        train_with_frozen_backbone(candidate, job, lr)
    else:
        train_head_on_features(candidate, job, lr, *cached)
    return TrainedCandidate(candidate.cpu().eval())


def train_head_on_features(
    candidate: nn.Module, job: TrainingJob, lr: float, train_features: torch.Tensor, rehearsal_features: torch.Tensor
) -> None:
    """Train ``candidate``'s head in place on its backbone's features, distilling production's
    head on the rehearsal features."""
    teacher = head_module(job.production, job.head)
    plugins = rehearsal_plugins(teacher, (rehearsal_features, job.rehearsal[1]), job.train[1], job.settings)
    head = head_module(candidate, job.head)
    run_template(head, train_features, job.train[1], job.settings, lr, plugins=plugins, hooks=job.hooks)


def train_with_frozen_backbone(candidate: nn.Module, job: TrainingJob, lr: float) -> None:
    """Train ``candidate`` in place through the whole model, every parameter outside the head frozen."""
    # The template's optimizer covers every parameter: without requires_grad=False the
    # backbone would still move (weight decay, momentum).
    frozen = backbone_parameters(candidate, job.head)
    for _, parameter in frozen:
        parameter.requires_grad_(False)
    try:
        run_template(
            candidate, *job.train, job.settings, lr,
            plugins=[*rehearsal_plugins(job.production, job.rehearsal, job.train[1], job.settings),
                     frozen_backbone_plugin(candidate, job.head)],
            hooks=job.hooks,
        )
    finally:
        for _, parameter in frozen:
            parameter.requires_grad_(True)
