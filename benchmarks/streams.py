"""The evaluation streams: six sequences of experiences (init data, then batches), each with a
test set nobody trains on. Digits streams come from scikit-learn's bundled digits; synthetic
ones are drawn afresh from a seed."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from retain.strategies.datasets import digits
from retain.strategies.replay import Data


@dataclass(frozen=True)
class Experience:
    name: str
    train: Data  # what arrives in the inbox
    test: Data  # never seen by anyone; scores every method


@dataclass(frozen=True)
class Stream:
    name: str
    dim: int
    max_classes: int
    experiences: list[Experience]  # the first is the init data


def _experience(name: str, x: np.ndarray, y: np.ndarray, test_fraction: float = 0.3) -> Experience:
    cut = int(len(y) * (1 - test_fraction))
    tx, ty = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), torch.from_numpy(y.astype(np.int64))
    return Experience(name, (tx[:cut], ty[:cut]), (tx[cut:], ty[cut:]))


def class_incremental(seed: int) -> Stream:
    x, y = digits(shuffle_seed=seed)
    groups = [(0, 1, 2, 3), (4, 5), (6, 7), (8, 9)]
    experiences = [_experience(f"classes {g}", x[np.isin(y, g)], y[np.isin(y, g)]) for g in groups]
    return Stream("digits class-incremental", 64, 10, experiences)


def rotating_domains(seed: int) -> Stream:
    from scipy.ndimage import rotate

    x, y = digits(shuffle_seed=seed)
    chunks = np.array_split(np.arange(len(y)), 6)
    experiences = []
    for step, index in enumerate(chunks):
        angle = 15 * step
        images = rotate(x[index].reshape(-1, 8, 8), angle, axes=(1, 2), reshape=False, order=1, mode="constant")
        experiences.append(_experience(f"rotated {angle} deg", images.reshape(-1, 64), y[index]))
    return Stream("digits rotating domains", 64, 10, experiences)


def steady_with_small_noisy_batches(seed: int) -> Stream:
    """What production mostly sees: batches like the init data, and now and then a small one
    from a noisier sensor."""
    x, y = digits(shuffle_seed=seed)
    rng = np.random.default_rng(seed + 7)
    sizes = [500, 300, 120, 300, 120, 300]
    bounds = np.cumsum([0, *sizes])
    experiences = []
    for step, n in enumerate(sizes):
        part = slice(bounds[step], bounds[step + 1])
        images = x[part]
        if n < 200:
            images = np.clip(images + rng.normal(0, 0.25, images.shape), 0, 1)
        experiences.append(_experience(f"{'small noisy' if n < 200 else 'steady'} n={n}", images, y[part]))
    return Stream("digits steady + small noisy", 64, 10, experiences)


def noise_contrast(seed: int) -> Stream:
    x, y = digits(shuffle_seed=seed)
    rng = np.random.default_rng(seed + 1)
    chunks = np.array_split(np.arange(len(y)), 5)
    experiences = []
    for step, index in enumerate(chunks):
        contrast, noise = 1.0 - 0.15 * step, 0.1 * step
        drifted = np.clip(0.5 + contrast * (x[index] - 0.5) + rng.normal(0, noise, x[index].shape), 0, 1)
        experiences.append(_experience(f"contrast {contrast:.2f} noise {noise:.1f}", drifted, y[index]))
    return Stream("digits noise/contrast drift", 64, 10, experiences)


# A generator has data to spare: each synthetic experience brings N_TRAIN samples to the
# inbox and is scored on N_TEST fresh ones, so that strategies a point apart are told apart
# by more than test-set noise (a 150-sample test set has a standard error of ~3 points).
N_TRAIN, N_TEST = 500, 5000


def _tensors(x: np.ndarray, y: np.ndarray) -> Data:
    return torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.astype(np.int64))


def _generated(name: str, sample: Callable[[int], tuple[np.ndarray, np.ndarray]]) -> Experience:
    return Experience(name, _tensors(*sample(N_TRAIN)), _tensors(*sample(N_TEST)))


def rotating_hyperplane(seed: int, dim: int = 10, steps: int = 5) -> Stream:
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(dim, 2)))[0].T  # the plane the normal rotates in
    experiences = []
    for step in range(steps + 1):
        angle = math.radians(25 * step)
        normal = math.cos(angle) * basis[0] + math.sin(angle) * basis[1]

        def sample(n: int, normal: np.ndarray = normal) -> tuple[np.ndarray, np.ndarray]:
            x = rng.normal(size=(n, dim))
            return x, (x @ normal > 0)

        experiences.append(_generated(f"normal at {25 * step} deg", sample))
    return Stream("synthetic rotating hyperplane", dim, 2, experiences)


def concept_swaps(seed: int, dim: int = 8, classes: int = 4) -> Stream:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 2.5, size=(classes, dim))
    swapped = np.array([1, 0, 3, 2])  # concept B: the same clusters, pairs of labels swapped
    experiences = []
    for concept in "AABABA":

        def sample(n: int, concept: str = concept) -> tuple[np.ndarray, np.ndarray]:
            cluster = rng.integers(0, classes, n)
            x = centres[cluster] + rng.normal(size=(n, dim))
            return x, (cluster if concept == "A" else swapped[cluster])

        experiences.append(_generated(f"concept {concept}", sample))
    return Stream("synthetic abrupt concept swaps", dim, classes, experiences)


STREAMS: dict[str, Callable[[int], Stream]] = {
    "class-incremental": class_incremental,
    "rotating-domains": rotating_domains,
    "noise-contrast": noise_contrast,
    "steady-small-noisy": steady_with_small_noisy_batches,
    "rotating-hyperplane": rotating_hyperplane,
    "concept-swaps": concept_swaps,
}
