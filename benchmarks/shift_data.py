"""The Gaussian two-sample problems of benchmarks/shift_mmd.py, shared with its alibi-detect
runner (benchmarks/alibi_mmd.py), which runs in an environment of its own: torch only here."""

from __future__ import annotations

import torch


def gaussian_pair(n: int, dim: int, shift: float, trial: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference and batch of ``n`` standard normal samples each; the batch's mean moved by
    ``shift`` along the first axis. The same arguments give the same samples in any process."""
    generator = torch.Generator().manual_seed(1_000_003 * trial + n)
    x = torch.randn(n, dim, generator=generator)
    y = torch.randn(n, dim, generator=generator)
    y[:, 0] += shift
    return x, y
