"""The training data path: minibatches cut from tensors by index.

Avalanche's loaders fetch every sample through its dataset's ``__getitem__`` (a stack of
subset, concat and transform lookups) and collate them one by one: on a 250-sample digits
batch that was half of the training time. A batch and a replay memory are tensors already,
so a minibatch is one index per tensor, on the training device.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch

NEW_DATA_TASK = 0
REHEARSAL_TASK = 1  # marks replayed samples inside a mixed minibatch; the model ignores it


@dataclass(frozen=True)
class Rehearsal:
    """Replayed samples joined to every minibatch: ``batch_size`` of them per step. With
    ``outputs`` (a fixed model's output on each sample), minibatches carry them too."""

    x: torch.Tensor
    y: torch.Tensor
    batch_size: int
    outputs: torch.Tensor | None = None

    def to(self, device: torch.device) -> Rehearsal:
        outputs = self.outputs.to(device) if self.outputs is not None else None
        return Rehearsal(self.x.to(device), self.y.to(device), self.batch_size, outputs)


class TensorMinibatches:
    """An epoch of shuffled ``[x, y, task_label]`` minibatches of ``batch_size`` new samples (the
    last one shorter, but not below ``fewest``), each followed by
    ``rehearsal.batch_size`` replayed ones where a rehearsal set is given. Replayed samples are
    drawn without replacement, reshuffling when the set runs out, so each is seen about equally
    often, as Avalanche's ``ReplayDataLoader`` draws them. Where the rehearsal has ``outputs``,
    minibatches are ``[x, y, outputs, task_label]`` (as Avalanche's DER passes stored logits)
    with ``outputs`` for the replayed rows alone, which are the last ``len(outputs)`` rows.
    Shuffles use torch's global generator: seeding it makes an epoch reproducible."""

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        rehearsal: Rehearsal | None = None,
        device: torch.device | str = "cpu",
        fewest: int = 1,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if len(x) != len(y):
            raise ValueError(f"{len(x)} samples but {len(y)} labels")
        self.device = torch.device(device)
        self.x, self.y = x.to(self.device), y.to(self.device)
        self.batch_size = batch_size
        # The fewest samples a step may hold: 2 for a model with BatchNorm, which cannot
        # normalise a single sample in training (225 samples in 32s end in one).
        self.fewest = max(1, min(fewest, batch_size))
        self.rehearsal = None
        if rehearsal is not None and len(rehearsal.y) and rehearsal.batch_size > 0:
            self.rehearsal = rehearsal.to(self.device)

    def with_rehearsal(self, rehearsal: Rehearsal) -> TensorMinibatches:
        """The same new samples, each minibatch joined by draws from ``rehearsal``."""
        return TensorMinibatches(self.x, self.y, self.batch_size, rehearsal, self.device, self.fewest)

    def _bounds(self) -> list[tuple[int, int]]:
        """Each step's slice of the shuffled samples. A last step holding fewer than ``fewest``
        (replayed samples included) takes the rest from the step before it; the number of steps
        stays what it was."""
        n, size = len(self.y), self.batch_size
        bounds = [(start, min(start + size, n)) for start in range(0, n, size)]
        replayed = self.rehearsal.batch_size if self.rehearsal is not None else 0
        short = self.fewest - (bounds[-1][1] - bounds[-1][0] + replayed) if bounds else 0
        if len(bounds) > 1 and short > 0:
            (start, end), _ = bounds[-2:]
            bounds[-2:] = [(start, end - short), (end - short, n)]
        return bounds

    def __len__(self) -> int:
        return len(self._bounds())

    def __iter__(self) -> Iterator[list[torch.Tensor]]:
        order = torch.randperm(len(self.y)).to(self.device)
        bounds = self._bounds()
        replayed = self._replay_order(len(bounds))
        memory = self.rehearsal
        replayed_per_step = memory.batch_size if memory is not None else 0
        # Every step but the last has the same task labels.
        full_task = self._task_labels(self.batch_size, replayed_per_step)
        for step, (start, end) in enumerate(bounds):
            picked = order[start:end]
            task = full_task if len(picked) == self.batch_size else self._task_labels(len(picked), replayed_per_step)
            x, y = self.x[picked], self.y[picked]
            if replayed is None or memory is None:
                yield [x, y, task]
                continue
            drawn = replayed[step * replayed_per_step : (step + 1) * replayed_per_step]
            x, y = torch.cat([x, memory.x[drawn]]), torch.cat([y, memory.y[drawn]])
            yield [x, y, task] if memory.outputs is None else [x, y, memory.outputs[drawn], task]

    def _task_labels(self, new: int, replayed: int) -> torch.Tensor:
        labels = torch.full((new + replayed,), NEW_DATA_TASK, device=self.device)
        labels[new:] = REHEARSAL_TASK
        return labels

    def _replay_order(self, steps: int) -> torch.Tensor | None:
        if self.rehearsal is None:
            return None
        needed = steps * self.rehearsal.batch_size
        size = len(self.rehearsal.y)
        passes = [torch.randperm(size) for _ in range(math.ceil(needed / size))]
        return torch.cat(passes)[:needed].to(self.device)


def class_balanced_indices(y: torch.Tensor, capacity: int) -> torch.Tensor:
    """Indices of at most ``capacity`` samples, equally divided over the classes of ``y`` (the
    first ``capacity % classes`` classes get one more) and drawn at random within a class where
    it has more than its share: what Avalanche's adaptive ``ClassBalancedBuffer`` keeps when
    filled with ``y``'s dataset at once."""
    classes = y.unique().tolist()
    if not classes or capacity < 1:
        return torch.empty(0, dtype=torch.long)
    share, extra = divmod(capacity, len(classes))
    kept = []
    for rank, label in enumerate(classes):
        members = torch.nonzero(y == label).flatten()
        limit = share + (1 if rank < extra else 0)
        if len(members) > limit:
            members = members[torch.randperm(len(members))[:limit]]
        kept.append(members)
    return torch.cat(kept).sort().values
