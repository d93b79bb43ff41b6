"""What a strategy trains a candidate from: one object instead of a long argument list."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from retain.strategies.kinds import MetaStart
from retain.strategies.replay import Data, ReplayMemory
from retain.strategies.settings import ReptileSettings, TrainingSettings
from retain.strategies.training import TrainingHooks

# Reptile's initialisation for a lineage: parameter name -> tensor on the CPU. ``meta`` learns
# it, the version carries it, and the next ``meta`` candidate continues from it.
MetaInit = dict[str, torch.Tensor]


@dataclass(frozen=True)
class TrainingJob:
    """The production model (never modified), the new batch's training split, what to rehearse,
    and how to train. ``rehearsal_source`` is the batch each rehearsal sample came from: meta
    makes one task per past batch (all one batch when it is not given). ``meta_init`` is the
    lineage's last Reptile initialisation, which ``meta`` continues instead of starting over."""

    production: nn.Module
    train: Data
    rehearsal: Data
    settings: TrainingSettings
    head: str = "head"
    hooks: TrainingHooks = field(default_factory=TrainingHooks)
    rehearsal_source: torch.Tensor | None = None
    reptile: ReptileSettings = field(default_factory=ReptileSettings)
    meta_init: MetaInit | None = None

    @classmethod
    def from_memory(
        cls,
        production: nn.Module,
        train: Data,
        memory: ReplayMemory,
        settings: TrainingSettings,
        head: str = "head",
        hooks: TrainingHooks | None = None,
        reptile: ReptileSettings | None = None,
        meta_init: MetaInit | None = None,
    ) -> TrainingJob:
        """A job that rehearses ``memory``'s rehearsal partition."""
        return cls(
            production, train, memory.rehearsal(), settings, head=head,
            hooks=hooks or TrainingHooks(), rehearsal_source=memory.source[~memory.audit],
            reptile=reptile or ReptileSettings(), meta_init=meta_init,
        )

    @property
    def sources(self) -> torch.Tensor:
        if self.rehearsal_source is not None:
            return self.rehearsal_source
        return torch.zeros(len(self.rehearsal[1]), dtype=torch.long)

    def labels(self) -> torch.Tensor:
        """Every label the candidate trains on: its head must cover them."""
        return torch.cat([self.train[1], self.rehearsal[1]])


@dataclass(frozen=True)
class TrainedCandidate:
    """What a strategy returns: the candidate, and from ``meta`` the Reptile initialisation it
    adapted from (for the version to carry forward)."""

    model: nn.Module
    meta_init: MetaInit | None = None
    meta_start: MetaStart | None = None
