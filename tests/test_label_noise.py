"""Suspected label noise: the pure rule, and a noisy batch through the daemon."""

import json

import numpy as np
import torch

from retain.strategies.label_noise import suspect_labels
from retain.strategies.settings import ShiftThresholds


def confident(predicted: list[int], classes: int = 3, confidence: float = 0.95) -> torch.Tensor:
    """Probabilities that put ``confidence`` on each predicted class."""
    rest = (1 - confidence) / (classes - 1)
    probabilities = torch.full((len(predicted), classes), rest)
    probabilities[torch.arange(len(predicted)), torch.tensor(predicted)] = confidence
    return probabilities


# An audit set production gets right with confidence: 300 samples, 3 errors.
AUDIT_LABELS = torch.arange(300) % 3
AUDIT_PREDICTED = AUDIT_LABELS.clone()
AUDIT_PREDICTED[:3] = (AUDIT_LABELS[:3] + 1) % 3
AUDIT = (confident(AUDIT_PREDICTED.tolist()), AUDIT_LABELS)


def test_labels_a_confident_model_disagrees_with_far_beyond_its_audit_errors_are_suspected():
    predicted = torch.arange(200) % 3
    labels = predicted.clone()
    labels[::4] = (labels[::4] + 1) % 3  # a quarter of the labels wrong
    noise = suspect_labels(confident(predicted.tolist()), labels, *AUDIT, False, ShiftThresholds())
    assert noise.suspected
    assert noise.suspects == tuple(range(0, 200, 4))
    assert noise.expected_rate < 0.02 and noise.observed_rate == 0.25
    assert "suspected label noise: 50 of 200 labels production is confident about disagree" in noise.reason()


def test_a_batch_with_the_audit_sets_own_error_rate_is_not_suspected():
    predicted = torch.arange(200) % 3
    labels = predicted.clone()
    labels[:2] = (labels[:2] + 1) % 3
    assert not suspect_labels(confident(predicted.tolist()), labels, *AUDIT, False, ShiftThresholds()).suspected


def test_a_consistent_relabelling_is_a_concept_change_not_noise():
    predicted = torch.arange(200) % 3
    labels = torch.where(predicted == 0, 1, torch.where(predicted == 1, 0, predicted))  # classes 0 and 1 swapped
    noise = suspect_labels(confident(predicted.tolist()), labels, *AUDIT, False, ShiftThresholds())
    assert not noise.suspected and noise.disagreeing == 0


def test_labels_on_features_that_shifted_are_not_suspected():
    predicted = torch.arange(200) % 3
    labels = predicted.clone()
    labels[::4] = (labels[::4] + 1) % 3
    assert not suspect_labels(confident(predicted.tolist()), labels, *AUDIT, True, ShiftThresholds()).suspected


def test_predictions_below_the_confidence_threshold_are_not_judged():
    predicted = torch.arange(200) % 3
    labels = predicted.clone()
    labels[::4] = (labels[::4] + 1) % 3
    unsure = confident(predicted.tolist(), confidence=0.6)
    noise = suspect_labels(unsure, labels, *AUDIT, False, ShiftThresholds())
    assert noise.confident == 0 and not noise.suspected


def test_a_noisy_batch_is_trained_without_its_suspected_labels_and_every_report_says_so(workspace, digit_data):
    from prometheus_client import generate_latest
    from sqlmodel import Session, select

    from conftest import retain, save_npz, wait_for
    from daemon_process import DaemonThread
    from retain.registry.tables import OutboxEvent

    x, y = digit_data
    rng = np.random.default_rng(0)
    labels = y[500:800].copy()
    wrong = rng.random(len(labels)) < 0.4
    labels[wrong] = (labels[wrong] + rng.integers(1, 10, wrong.sum())) % 10
    with DaemonThread(workspace) as daemon:
        save_npz(workspace.parent / "inbox" / "noisy.npz", x[500:800], labels)
        processed = workspace.parent / "processed"
        wait_for(lambda: any(processed.glob("*noisy.npz")), timeout=120, message="the noisy batch processed")
        scraped = generate_latest(daemon.service.metrics.registry).decode()
        with Session(daemon.registry.engine) as session:
            events = [json.loads(e.payload) for e in session.exec(select(OutboxEvent))
                      if e.kind == "batch.label_noise"]
    shown = json.loads(retain(workspace, "show", "2", "--json").stdout)
    suspected = shown["details"]["shift"]["suspected_noisy_labels"]
    # Most suspects are labels the test made wrong; the candidates trained on none of them.
    assert suspected >= 30, shown["details"]["shift"]
    assert shown["details"]["n_train"] + shown["details"]["n_holdout"] == 300 - suspected
    assert f'retain_suspected_noisy_labels_total{{model="default"}} {float(suspected)}' in scraped
    assert len(events) == 1 and events[0]["suspected_labels"] == suspected and events[0]["versions"][0] == 2
    assert "label noise: " in retain(workspace, "show", "2").stdout
