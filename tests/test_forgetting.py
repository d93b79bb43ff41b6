"""The forgetting gate: the pure verdict, and the evaluation on real models."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from retain.strategies.forgetting import GateConfig, GateMetrics, GroupAccuracy, evaluate_gate, groups_above, verdict
from retain.strategies.kinds import AuditFinding, WhenUnresolved
from retain.strategies.paired import PairedCounts, one_sided_z, paired_bounds, samples_to_resolve


def metrics(audit: PairedCounts, holdout: PairedCounts = PairedCounts(both=60, only_candidate=20, neither=20)
            ) -> GateMetrics:
    """Gate metrics as evaluate_gate makes them, from the paired counts alone."""
    def accuracies(counts: PairedCounts) -> tuple[float, float]:
        return (counts.both + counts.only_production) / counts.n, (counts.both + counts.only_candidate) / counts.n

    old, new = accuracies(audit), accuracies(holdout)
    return GateMetrics(acc_old_production=old[0], acc_old_candidate=old[1], acc_new_production=new[0],
                       acc_new_candidate=new[1], audit=audit, holdout=holdout)


# 2000 audit samples; the candidate gets 20 right that production misses, and loses ``lost``.
def audit(lost: int) -> PairedCounts:
    return PairedCounts(both=1780, only_production=lost, only_candidate=20, neither=200 - lost)


def test_accepts_when_the_audit_set_shows_forgetting_within_the_limit():
    result = verdict(metrics(audit(lost=30)), GateConfig(max_forgetting=0.02))
    assert result.accepted
    assert result.finding is AuditFinding.WITHIN
    assert "forgetting +0.0050 on 2000 audit samples, 80% bounds [" in result.reasons[0]
    assert "within max 0.0200 + tolerance 0.0100" in result.reasons[0]


def test_refuses_when_the_audit_set_shows_forgetting_above_the_limit():
    result = verdict(metrics(audit(lost=120)), GateConfig(max_forgetting=0.02))
    assert not result.accepted
    assert result.finding is AuditFinding.ABOVE
    lower, upper = result.forgetting_bounds
    assert 0.02 < lower < 0.05 < upper
    assert "forgetting +0.0500 on 2000 audit samples" in result.reasons[0]
    assert "above max 0.0200" in result.reasons[0]


# The wine case: one audit sample of 26 lost, a gain of one held-out sample of 19.
WINE_AUDIT = PairedCounts(both=24, only_production=1, neither=1)
WINE_HOLDOUT = PairedCounts(both=17, only_candidate=1, neither=1)


def test_one_sample_of_26_cannot_resolve_a_two_point_limit_and_a_gain_of_one_of_19_does_not_outweigh_it():
    result = verdict(metrics(WINE_AUDIT, WINE_HOLDOUT), GateConfig(max_forgetting=0.02))
    assert result.finding is AuditFinding.UNRESOLVED
    assert not result.accepted
    assert result.audit_samples == 26
    assert "forgetting +0.0385 on 26 audit samples" in result.reasons[0]
    assert "cannot resolve max 0.0200 + tolerance 0.0100 at this size" in result.reasons[0]
    assert f"about {result.samples_to_resolve} audit samples would" in result.reasons[0]
    assert result.samples_to_resolve > 26
    assert "better on the mix with probability 0.56 < 0.80" in result.reasons[2]


def test_an_unresolved_finding_is_weighed_against_what_production_gets_wrong_on_the_new_data():
    # One audit sample of 34 lost; production right on 6 of 12 held-out samples, the candidate on all.
    lost_one = PairedCounts(both=31, only_production=1, neither=2)
    far_behind = PairedCounts(both=6, only_candidate=6)
    result = verdict(metrics(lost_one, far_behind), GateConfig())
    assert result.finding is AuditFinding.UNRESOLVED and result.accepted
    assert "unresolved forgetting weighed against the gain (gate.unresolved = weigh): better on the mix with " \
           "probability 1.00 >= 0.80" in result.reasons[2]
    assert not verdict(metrics(lost_one, far_behind), GateConfig(unresolved=WhenUnresolved.REFUSE)).accepted
    one_more = PairedCounts(both=10, only_candidate=1, neither=1)  # a gain of 1 of 12 does not outweigh it
    assert not verdict(metrics(lost_one, one_more), GateConfig()).accepted


def test_an_unresolved_finding_is_accepted_with_a_significant_gain_when_configured():
    config = GateConfig(max_forgetting=0.02, confidence=0.95, unresolved=WhenUnresolved.ACCEPT_IF_GAIN_SIGNIFICANT)
    assert not verdict(metrics(WINE_AUDIT, WINE_HOLDOUT), config).accepted  # a gain of 1 of 19 is not significant
    big_gain = PairedCounts(both=40, only_candidate=40, neither=20)
    result = verdict(metrics(WINE_AUDIT, big_gain), config)
    assert result.accepted
    assert "the gain is significant" in result.reasons[2]


def test_a_significant_gain_does_not_accept_a_finding_above_the_limit():
    config = GateConfig(unresolved=WhenUnresolved.ACCEPT_IF_GAIN_SIGNIFICANT)
    big_gain = PairedCounts(both=40, only_candidate=40, neither=20)
    assert not verdict(metrics(audit(lost=200), big_gain), config).accepted


def test_a_batch_with_new_classes_is_held_to_the_new_classes_limit():
    config = GateConfig(max_forgetting=0.02, max_forgetting_new_classes=0.06)
    assert verdict(metrics(audit(lost=120)), config).finding is AuditFinding.ABOVE
    result = verdict(metrics(audit(lost=120)), config, new_classes=(8, 9))
    assert result.accepted
    assert "within max for new classes [8, 9] 0.0600" in result.reasons[0]
    assert result.forgetting_limit == 0.06
    assert not verdict(metrics(audit(lost=200)), config, new_classes=(8, 9)).accepted


def test_the_new_classes_limit_is_never_stricter_than_the_everyday_one():
    config = GateConfig(max_forgetting=0.5, max_forgetting_new_classes=0.06)
    assert verdict(metrics(audit(lost=200)), config, new_classes=(8, 9)).accepted


def test_rejects_when_new_accuracy_gain_is_below_min_gain():
    small_gain = PairedCounts(both=70, only_candidate=2, neither=28)
    result = verdict(metrics(audit(lost=20), small_gain), GateConfig(min_gain=0.05))
    assert not result.accepted
    assert "new-batch accuracy 0.7200 against production 0.7000 over 100 held-out samples" in result.reasons[1]
    assert "min gain 0.0500): better on the mix (50% new data) with probability 0." in result.reasons[1]


def test_a_candidate_that_forgets_nothing_on_25_audit_samples_and_gains_is_accepted_at_the_defaults():
    result = verdict(metrics(PairedCounts(both=23, neither=2), PairedCounts(both=8, only_candidate=3, neither=1)),
                     GateConfig())
    assert result.finding is AuditFinding.WITHIN
    assert result.accepted and result.better_probability > 0.9


def test_an_equal_candidate_is_not_promoted_for_nothing_at_a_higher_better_probability():
    equal = metrics(PairedCounts(both=23, neither=2), PairedCounts(both=10, neither=2))
    assert verdict(equal, GateConfig()).better_probability == 0.5
    assert not verdict(equal, GateConfig(better_probability=0.6)).accepted


def test_the_mix_weighs_a_small_loss_on_new_data_against_a_larger_gain_on_old():
    # The candidate wins 100 audit samples and loses 10; on the new batch it loses 2 of 100.
    old_gain = PairedCounts(both=1700, only_production=10, only_candidate=100, neither=190)
    new_loss = PairedCounts(both=80, only_production=2, neither=18)
    assert verdict(metrics(old_gain, new_loss), GateConfig()).accepted
    assert not verdict(metrics(old_gain, new_loss), GateConfig(new_data_weight=0.99)).accepted


def group(source: int, counts: PairedCounts) -> GroupAccuracy:
    production = (counts.both + counts.only_production) / counts.n
    candidate = (counts.both + counts.only_candidate) / counts.n
    return GroupAccuracy(source, counts.n, production, candidate, production - candidate, counts)


def test_one_forgotten_audit_batch_is_refused_while_the_pooled_forgetting_is_within():
    kept = PairedCounts(both=380, only_production=2, only_candidate=10, neither=8)
    forgotten = PairedCounts(both=150, only_production=40, neither=10)  # 20 points lost on batch 3
    pooled = PairedCounts(*(4 * getattr(kept, f) + getattr(forgotten, f)
                            for f in ("both", "only_production", "only_candidate", "neither")))
    groups = (group(1, kept), group(2, kept), group(3, forgotten), group(4, kept), group(5, kept))
    gate = replace(metrics(pooled), groups=groups)
    result = verdict(gate, GateConfig())
    assert verdict(replace(gate, groups=()), GateConfig()).accepted  # the pooled figure alone passes
    assert result.finding is AuditFinding.WITHIN and not result.accepted
    assert result.groups_above == (3,)
    assert "batch 3 +0.200 on 200" in result.reasons[1] and "each of 5 batches at 96.0%" in result.reasons[1]


def test_a_batch_a_few_points_down_on_a_few_samples_is_not_refused_for_noise():
    noisy = PairedCounts(both=36, only_production=2, neither=2)  # 5 points on 40 samples
    kept = PairedCounts(both=36, only_production=1, only_candidate=1, neither=2)
    gate = replace(metrics(PairedCounts(both=72, only_production=3, only_candidate=1, neither=4)),
                   groups=(group(1, kept), group(2, noisy)))
    assert groups_above(gate.groups, 0.02, 0.8) == ()


def test_the_bounds_hold_their_confidence_on_small_paired_samples():
    # Production right on 90 %, the candidate on 88 %, disagreeing on 8 %: true forgetting +2 points.
    rng = np.random.default_rng(0)
    outcome = rng.choice(4, p=[0.85, 0.05, 0.03, 0.07], size=(4000, 50))  # both, only p, only c, neither
    counts = [(outcome == k).sum(1) for k in range(4)]
    lower, upper = paired_bounds(*counts, 0.95)
    assert (upper >= 0.02).mean() >= 0.94
    assert (lower <= 0.02).mean() >= 0.94


def test_more_audit_samples_narrow_the_bounds():
    small, large = PairedCounts(180, 6, 4, 10).bounds(0.95), PairedCounts(1800, 60, 40, 100).bounds(0.95)
    assert small[0] < large[0] < 0.01 < large[1] < small[1]


def test_samples_to_resolve_is_the_smallest_audit_set_that_shows_no_forgetting_within_the_threshold():
    needed = samples_to_resolve(0.03, 0.95, accuracy=0.95, discordance=0.05)
    z = one_sided_z(0.95)
    assert 0.7 < needed / (z * z * 0.05 / 0.03**2) < 1.3  # the normal approximation's figure

    def upper(n: int) -> float:
        flips = 0.05 * n / 2
        return float(paired_bounds(0.95 * n - flips, flips, flips, 0.05 * n - flips, 0.95)[1])

    assert upper(needed) < 0.03 <= upper(needed - 1)
    assert samples_to_resolve(0.03, 0.95, 0.95, 0.10) > needed


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
    assert by_source[0].paired == PairedCounts(both=0, only_production=3, only_candidate=1, neither=0)
    assert result.audit == PairedCounts(both=0, only_production=3, only_candidate=3, neither=0)
    assert result.holdout == PairedCounts(both=0, only_production=1, only_candidate=3, neither=0)


def test_evaluation_reports_the_standard_error_of_forgetting_and_the_verdict_shows_it():
    groups = {0: (torch.zeros(4, 2), torch.tensor([0, 0, 0, 1])), 5: (torch.zeros(2, 2), torch.tensor([1, 1]))}
    result = evaluate_gate(Constant(0), Constant(1), groups, (torch.zeros(2, 2), torch.tensor([1, 1])))
    # Per sample, production right − candidate right: +1 three times, −1 three times.
    assert result.forgetting_stderr == pytest.approx((1.2 / 6) ** 0.5)
    assert verdict(result, GateConfig()).audit_samples == 6


def test_the_wine_case_is_decided_at_its_audit_size_and_show_states_the_rule(tmp_path):
    """13 features, 100 known rows, a batch of 78 with three features rescaled: an audit set of
    about 26 samples; at the defaults a candidate that forgets none of them and gains on the
    batch becomes production (the gate refused every such candidate at 95 % confidence)."""
    from sklearn.datasets import load_wine

    from conftest import retain, save_npz, write_config

    x, y = load_wine(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))
    x, y = x[order].astype(np.float32), y[order]
    x = (x - x[:100].mean(0)) / x[:100].std(0)  # standardised with the known rows' statistics
    batch = x[100:].copy()
    batch[:, :3] *= 1.5
    config = write_config(tmp_path, gate={"tolerance": GateConfig().tolerance})
    save_npz(tmp_path / "known.npz", x[:100], y[:100])
    init = retain(config, "init", "--data", str(tmp_path / "known.npz"), "--train")
    assert "too few to show a candidate's forgetting below" in init.stderr
    assert "weighed by the gain they bring (gate.unresolved)" in init.stderr
    save_npz(tmp_path / "inbox" / "wine.npz", batch, y[100:])
    retain(config, "run", "--once")

    candidates = [v for v in json.loads(retain(config, "versions", "--json").stdout) if v["version"] > 1]
    assert len(candidates) == 1 and candidates[0]["gate_finding"] == "within", candidates
    assert 20 <= candidates[0]["audit_samples"] <= 30
    shown = json.loads(retain(config, "show", "2", "--json").stdout)
    assert shown["is_production"], shown
    assert shown["decision_reasons"][-1].startswith("rule: accepted when the audit set shows forgetting within")
