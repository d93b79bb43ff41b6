"""The forgetting gate: the pure verdict, and the evaluation on real models."""

import pytest
import torch
from torch import nn

from retain.strategies.forgetting import GateConfig, GateMetrics, evaluate_gate, verdict


def metrics(old_prod=0.9, old_cand=0.9, new_prod=0.7, new_cand=0.8) -> GateMetrics:
    return GateMetrics(acc_old_production=old_prod, acc_old_candidate=old_cand,
                       acc_new_production=new_prod, acc_new_candidate=new_cand)


def test_accepts_when_forgetting_within_limit_and_new_accuracy_gains():
    assert verdict(metrics(old_cand=0.89), GateConfig(max_forgetting=0.02, min_gain=0.05)).accepted


def test_forgetting_exactly_at_the_limit_is_accepted():
    assert verdict(metrics(old_prod=0.90, old_cand=0.88), GateConfig(max_forgetting=0.02)).accepted


def test_rejects_when_forgetting_exceeds_the_limit():
    result = verdict(metrics(old_cand=0.85), GateConfig(max_forgetting=0.02))
    assert not result.accepted
    assert "forgetting +0.0500 > max 0.0200" in result.reasons[0]


def test_a_batch_with_new_classes_is_held_to_the_new_classes_limit():
    config = GateConfig(max_forgetting=0.02, max_forgetting_new_classes=0.06)
    assert not verdict(metrics(old_cand=0.85), config).accepted
    result = verdict(metrics(old_cand=0.85), config, new_classes=(8, 9))
    assert result.accepted
    assert "forgetting +0.0500 <= max for new classes [8, 9] 0.0600" in result.reasons[0]
    assert result.forgetting_limit == 0.06
    assert not verdict(metrics(old_cand=0.83), config, new_classes=(8, 9)).accepted


def test_the_new_classes_limit_is_never_stricter_than_the_everyday_one():
    config = GateConfig(max_forgetting=0.5, max_forgetting_new_classes=0.06)
    assert verdict(metrics(old_cand=0.85), config, new_classes=(8, 9)).accepted


def test_rejects_when_new_accuracy_gain_is_below_min_gain():
    result = verdict(metrics(new_prod=0.70, new_cand=0.72), GateConfig(min_gain=0.05))
    assert not result.accepted
    assert "<" in result.reasons[1]


class Constant(nn.Module):
    """Predicts one class whatever the input."""

    def __init__(self, label: int, classes: int = 3) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.nn.functional.one_hot(torch.tensor(label), classes).float())

    def forward(self, x):
        return self.logits.expand(len(x), -1)


def test_evaluation_reports_accuracy_and_forgetting_per_source_batch():
    groups = {0: (torch.zeros(4, 2), torch.tensor([0, 0, 0, 1])), 5: (torch.zeros(2, 2), torch.tensor([1, 1]))}
    holdout = (torch.zeros(4, 2), torch.tensor([1, 1, 1, 0]))
    result = evaluate_gate(Constant(0), Constant(1), groups, holdout)
    assert result.acc_old_production == 0.5  # 3 of 6 audit samples are class 0
    assert result.acc_old_candidate == 0.5
    assert (result.acc_new_production, result.acc_new_candidate) == (0.25, 0.75)
    by_source = {g.source: g for g in result.groups}
    assert by_source[0].forgetting == 0.75 - 0.25
    assert by_source[5].forgetting == -1.0


def test_evaluation_reports_the_standard_error_of_forgetting_and_the_verdict_shows_it():
    groups = {0: (torch.zeros(4, 2), torch.tensor([0, 0, 0, 1])), 5: (torch.zeros(2, 2), torch.tensor([1, 1]))}
    result = evaluate_gate(Constant(0), Constant(1), groups, (torch.zeros(2, 2), torch.tensor([1, 1])))
    # Per sample, production right − candidate right: +1 three times, −1 three times.
    assert result.forgetting_stderr == pytest.approx((1.2 / 6) ** 0.5)
    assert "(± 0.4472 over 6 audit samples)" in verdict(result, GateConfig()).reasons[0]
