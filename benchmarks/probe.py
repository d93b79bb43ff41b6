"""The linear probe beside scikit-learn's LogisticRegression, on the same splits, in the same
run: how often their held-out accuracies agree, and milliseconds per probe.

    .venv/bin/python benchmarks/probe.py [--cases 40]

Cases are digits batches of 60-700 samples, alternately raw pixels and the penultimate
features of an untrained MLP (64-128-64), every third one restricted to five classes.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from retain.strategies.datasets import digits
from retain.strategies.models import features_and_logits, mlp
from retain.strategies.probe import linear_probe_accuracy
from retain.strategies.training import limit_threads


def sklearn_probe(features: torch.Tensor, labels: torch.Tensor, seed: int) -> float:
    """The probe as it was: scikit-learn's scaler and logistic regression."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    x, y = features.double().flatten(1).numpy(), labels.long().numpy()
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.3, random_state=seed, stratify=y)
    scaler = StandardScaler().fit(x_train)
    probe = LogisticRegression(max_iter=500).fit(scaler.transform(x_train), y_train)
    return float(probe.score(scaler.transform(x_test), y_test))


def cases(count: int) -> list[tuple[torch.Tensor, torch.Tensor, int]]:
    x, y = digits()
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    rng = np.random.default_rng(0)
    made = []
    for case in range(count):
        picked = torch.from_numpy(rng.permutation(len(y))[: int(rng.integers(60, 700))])
        features = x[picked]
        if case % 2:
            torch.manual_seed(case)
            features, _ = features_and_logits(mlp((64,), 10, hidden=(128, 64)), "head", features)
        keep = y[picked] < (5 if case % 3 == 0 else 10)
        made.append((features[keep], y[picked][keep], case))
    return made


def timed(probe, features: torch.Tensor, labels: torch.Tensor, seed: int) -> tuple[float, float]:
    started = time.perf_counter()
    accuracy = probe(features, labels, seed)
    return accuracy, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=40)
    args = parser.parse_args()
    limit_threads(1)
    made = cases(args.cases)
    timed(sklearn_probe, *made[0]), timed(linear_probe_accuracy, *made[0])  # imports, first calls
    agree, gaps, theirs, ours = 0, [], [], []
    for features, labels, seed in made:
        reference, reference_seconds = timed(sklearn_probe, features, labels, seed)
        accuracy, seconds = timed(linear_probe_accuracy, features, labels, seed)
        agree += accuracy == reference
        gaps.append(abs(accuracy - reference))
        theirs.append(reference_seconds)
        ours.append(seconds)
    print(f"{args.cases} probes, one thread: the same held-out accuracy in {agree}/{args.cases} "
          f"(largest difference {max(gaps):.4f}); median ms per probe: retain {statistics.median(ours) * 1e3:.1f}, "
          f"scikit-learn {statistics.median(theirs) * 1e3:.1f}")


if __name__ == "__main__":
    main()
