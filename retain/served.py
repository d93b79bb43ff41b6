"""A loaded version: the module with what it is (``ModelCard``), for ``Client.load_model``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from retain.errors import RetainError


@dataclass(frozen=True)
class ModelCard:
    """Which version a module is and what it takes: samples of ``input_shape``, float32;
    it returns ``num_classes`` logits per sample."""

    model: str
    version: int
    artifact_sha256: str
    input_shape: tuple[int, ...]
    num_classes: int
    factory: str

    @property
    def ref(self) -> str:
        return f"{self.model}@{self.version}"


class VersionedModel(nn.Module):
    """A version's module (``module``), in eval mode, and its ``card``. Calling it calls the module."""

    def __init__(self, module: nn.Module, card: ModelCard) -> None:
        super().__init__()
        self.module = module.eval()
        self.card = card
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)

    def extra_repr(self) -> str:
        return f"{self.card.ref}, sha256 {self.card.artifact_sha256[:12]}"


def as_samples(x: Any, card: ModelCard) -> torch.Tensor:
    """``x`` as a float32 tensor of samples of the card's input shape (a flat row is reshaped)."""
    tensor = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).float()
    if tensor.ndim == 1:
        tensor = tensor.unsqueeze(0)
    expected = int(np.prod(card.input_shape))
    if tensor[0].numel() != expected:
        raise RetainError(f"{card.ref} takes samples of shape {list(card.input_shape)} ({expected} values), "
                          f"not {list(tensor.shape[1:])}")
    if not torch.isfinite(tensor).all():
        raise RetainError("the samples hold NaN or infinite values")
    return tensor.reshape(len(tensor), *card.input_shape)
