"""Data bundled with the dependencies, for the demo, the tests and the benchmarks: nothing
is downloaded."""

from __future__ import annotations

import numpy as np


def digits(shuffle_seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits, scaled to [0, 1]; shuffled when given a seed."""
    from sklearn.datasets import load_digits

    data = load_digits()
    n = len(data.target)
    order = np.arange(n) if shuffle_seed is None else np.random.default_rng(shuffle_seed).permutation(n)
    return (data.data[order] / 16.0).astype(np.float32), data.target[order].astype(np.int64)
