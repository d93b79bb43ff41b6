"""``feature_extraction``: the production backbone frozen, the head retrained (and widened for
classes the model has never seen), with rehearsal from the replay buffer."""

from __future__ import annotations

from torch import nn

from retain.strategies.job import TrainedCandidate, TrainingJob
from retain.strategies.models import head_module, prepare_candidate
from retain.strategies.training import rehearsal_plugins, run_template


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


def feature_extraction(job: TrainingJob, lr: float) -> TrainedCandidate:
    """A candidate whose backbone is bit-identical to ``job.production``'s; only the head learns."""
    candidate = prepare_candidate(job.production, job.head, job.labels())
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
    return TrainedCandidate(candidate)
