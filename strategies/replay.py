"""The replay memory: a class-balanced sample of every batch the model has learnt from.

It has two partitions. *Rehearsal* samples are mixed into training; *audit* samples are
never trained on and measure forgetting, grouped by the batch they came from. The memory is
plain tensors, so it is saved and loaded with ``weights_only=True``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

INIT_SOURCE = 0  # source id of the data the initial model was trained on

Data = tuple[torch.Tensor, torch.Tensor]  # (x, y)


@dataclass(frozen=True)
class ReplayMemory:
    x: torch.Tensor
    y: torch.Tensor  # int64 labels
    source: torch.Tensor  # int64 batch id each sample came from
    audit: torch.Tensor  # bool: True for the audit partition
    # Where each sample is stored: its row in its source's chunk (chunks[source], an artifact
    # digest), -1 for a sample not stored yet. A memory saved again stores only its new samples.
    chunk_row: torch.Tensor | None = None
    chunks: Mapping[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.x)
        if self.chunk_row is None:
            object.__setattr__(self, "chunk_row", torch.full((n,), -1, dtype=torch.long))
        if not (len(self.y) == len(self.source) == len(self.audit) == len(self.chunk_row) == n):
            raise ValueError("replay memory tensors differ in length")

    def __len__(self) -> int:
        return len(self.x)

    @classmethod
    def empty(cls, input_shape: tuple[int, ...]) -> "ReplayMemory":
        return cls(
            x=torch.empty(0, *input_shape),
            y=torch.empty(0, dtype=torch.long),
            source=torch.empty(0, dtype=torch.long),
            audit=torch.empty(0, dtype=torch.bool),
        )

    def rehearsal(self) -> tuple[torch.Tensor, torch.Tensor]:
        keep = ~self.audit
        return self.x[keep], self.y[keep]

    def audit_set(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[self.audit], self.y[self.audit]

    def audit_groups(self) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """Audit samples per source batch."""
        groups = {}
        for source in sorted(set(self.source[self.audit].tolist())):
            keep = self.audit & (self.source == source)
            groups[int(source)] = (self.x[keep], self.y[keep])
        return groups

    def without_source(self, source: int) -> "ReplayMemory":
        """This memory less every sample of batch ``source``."""
        return _select(self, self.source != source)

    def to_tensors(self) -> dict[str, torch.Tensor]:
        return {"x": self.x, "y": self.y, "source": self.source, "audit": self.audit}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> "ReplayMemory":
        missing = {"x", "y", "source", "audit"} - set(tensors)
        if missing:
            raise ValueError(f"replay memory lacks {sorted(missing)}")
        return cls(
            x=tensors["x"].float(),
            y=tensors["y"].long(),
            source=tensors["source"].long(),
            audit=tensors["audit"].bool(),
        )


def balanced_indices(labels: torch.Tensor, budget: int, generator: torch.Generator) -> torch.Tensor:
    """Indices of at most ``budget`` samples, spread as evenly over classes as they allow.

    Classes with fewer samples than their share give the rest to the others (water-filling).
    """
    if budget <= 0 or len(labels) == 0:
        return torch.empty(0, dtype=torch.long)
    by_class = {int(c): torch.nonzero(labels == c).flatten() for c in labels.unique()}
    order = sorted(by_class, key=lambda c: len(by_class[c]))
    chosen, remaining = [], budget
    for position, label in enumerate(order):
        share = remaining // (len(order) - position)
        members = by_class[label]
        take = min(len(members), share)
        chosen.append(members[torch.randperm(len(members), generator=generator)[:take]])
        remaining -= take
    return torch.cat(chosen).sort().values


def _select(memory: ReplayMemory, keep: torch.Tensor) -> ReplayMemory:
    return ReplayMemory(memory.x[keep], memory.y[keep], memory.source[keep], memory.audit[keep],
                        memory.chunk_row[keep], memory.chunks)


def concatenate(parts: list[ReplayMemory]) -> ReplayMemory:
    """The samples of ``parts``, in order, with where each is stored."""
    return ReplayMemory(
        x=torch.cat([p.x for p in parts]),
        y=torch.cat([p.y for p in parts]),
        source=torch.cat([p.source for p in parts]),
        audit=torch.cat([p.audit for p in parts]),
        chunk_row=torch.cat([p.chunk_row for p in parts]),
        chunks={source: digest for p in parts for source, digest in p.chunks.items()},
    )


def remember(
    memory: ReplayMemory,
    train: tuple[torch.Tensor, torch.Tensor],
    holdout: tuple[torch.Tensor, torch.Tensor],
    source: int,
    capacity: int,
    audit_fraction: float,
    seed: int = 0,
) -> ReplayMemory:
    """A new memory holding a class-balanced sample of the batch next to the old contents.

    Rehearsal slots are shared evenly between classes, over old and new samples alike.
    Audit slots are shared evenly between source batches (each group class-balanced), and
    are filled from the batch's held-out slice only, so audit data is never trained on.
    """
    generator = torch.Generator().manual_seed(seed)
    n_audit = int(round(capacity * audit_fraction))
    n_rehearsal = capacity - n_audit

    def partition(x: torch.Tensor, y: torch.Tensor, audit: bool) -> ReplayMemory:
        return ReplayMemory(
            x=x.float(),
            y=y.long(),
            source=torch.full((len(y),), source, dtype=torch.long),
            audit=torch.full((len(y),), audit, dtype=torch.bool),
        )

    old_rehearsal = _select(memory, ~memory.audit)
    pool = concatenate([old_rehearsal, partition(*train, audit=False)])
    rehearsal = _select(pool, balanced_indices(pool.y, n_rehearsal, generator))

    old_audit = _select(memory, memory.audit)
    new_audit = partition(*holdout, audit=True)
    sources = sorted(set(old_audit.source.tolist()) | ({source} if len(new_audit) else set()))
    audit_parts = []
    remaining = n_audit
    # Smallest groups first so that their unused share flows to the larger ones.
    groups = [
        _select(old_audit, old_audit.source == s) if s != source else new_audit for s in sources
    ]
    for position, group in enumerate(sorted(groups, key=len)):
        share = remaining // (len(groups) - position)
        picked = _select(group, balanced_indices(group.y, share, generator))
        audit_parts.append(picked)
        remaining -= len(picked)
    audit_memory = concatenate(audit_parts) if audit_parts else _select(old_audit, old_audit.audit)
    return concatenate([rehearsal, audit_memory])


def holdout_split(labels: torch.Tensor, fraction: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Stratified ``(train_indices, holdout_indices)``: about ``fraction`` of every class
    is held out, and at least one sample of each class with two or more stays in training."""
    generator = torch.Generator().manual_seed(seed)
    train, holdout = [], []
    for label in labels.unique():
        members = torch.nonzero(labels == label).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        n_holdout = int(round(len(members) * fraction))
        n_holdout = min(n_holdout, len(members) - 1) if len(members) > 1 else 0
        holdout.append(members[:n_holdout])
        train.append(members[n_holdout:])
    return torch.cat(train).sort().values, torch.cat(holdout).sort().values


def split_holdout(x: torch.Tensor, y: torch.Tensor, fraction: float, seed: int = 0) -> tuple[Data, Data]:
    """``(train, holdout)`` data pairs of ``x`` and ``y`` split by ``holdout_split``."""
    train_idx, holdout_idx = holdout_split(y, fraction, seed)
    return (x[train_idx], y[train_idx]), (x[holdout_idx], y[holdout_idx])
