"""The linear probe is scikit-learn's logistic regression, refitted without its overhead."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from retain.strategies.probe import fit_logistic_regression, linear_probe_accuracy


def separable_blobs(n: int, classes: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    centres = torch.randn(classes, dim, generator=g) * 1.5
    return centres[y] + torch.randn(n, dim, generator=g), y


def sklearn_probe(features: torch.Tensor, labels: torch.Tensor, seed: int) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    x, y = features.double().numpy(), labels.numpy()
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.3, random_state=seed, stratify=y)
    scaler = StandardScaler().fit(x_train)
    probe = LogisticRegression(max_iter=500).fit(scaler.transform(x_train), y_train)
    return float(probe.score(scaler.transform(x_test), y_test))


@pytest.mark.parametrize("seed", range(6))
def test_the_probe_scores_what_scikit_learns_logistic_regression_scores(seed):
    features, labels = separable_blobs(120 + 40 * seed, classes=2 + seed, dim=16, seed=seed)
    assert linear_probe_accuracy(features, labels, seed) == sklearn_probe(features, labels, seed)


def test_the_fit_reaches_scikit_learns_weights():
    from sklearn.linear_model import LogisticRegression

    features, labels = separable_blobs(200, classes=4, dim=8, seed=3)
    x, y = features.double().numpy(), labels.numpy()
    weights = fit_logistic_regression(x, y, classes=4)
    reference = LogisticRegression(max_iter=500).fit(x, y)  # the same objective, optimiser and tolerance
    np.testing.assert_allclose(weights[:, :-1], reference.coef_, atol=1e-6)
    np.testing.assert_allclose(weights[:, -1], reference.intercept_, atol=1e-6)


def test_a_constant_feature_does_not_break_the_probe():
    features, labels = separable_blobs(100, classes=3, dim=5, seed=1)
    features[:, 2] = 7.0
    assert linear_probe_accuracy(features, labels) == sklearn_probe(features, labels, 0)


def test_too_few_samples_or_a_single_class_give_no_probe():
    features, labels = separable_blobs(100, classes=3, dim=5, seed=1)
    assert linear_probe_accuracy(features[:10], labels[:10]) is None
    assert linear_probe_accuracy(features, torch.zeros(100, dtype=torch.long)) is None
