"""Strategy selection is a pure function of the shift report, the history and the config."""

from dataclasses import replace

import pytest
from pydantic import ValidationError

from retain.strategies.policy import (
    PolicyConfig,
    ShiftHistoryEntry,
    choose,
    fallback_choice,
    hyperparameters,
    recurring_shifts,
)
from retain.strategies.shift import ShiftReport

# Every rule switched on, with the reduced fine-tuning rates a user may configure: the rules
# themselves are pinned here; what the defaults pick, in the tests that say so.
CONFIG = PolicyConfig(lr_scale_none=0.1, lr_scale_mild=0.2, small_batch=200, probe_transfers=0.98)


def report(severity="moderate", n_batch=500, probe=0.99, novel=(), reasons=("accuracy drop 0.120 >= 0.1",)):
    return ShiftReport(
        mmd2=0.05, p_value=0.004, label_distance=0.1, novel_classes=tuple(novel), accuracy_reference=0.9,
        accuracy_batch=0.78, n_reference=300, n_batch=n_batch, severity=severity, reasons=tuple(reasons),
        probe_accuracy=probe,
    )


def history(*severities: str) -> tuple[ShiftHistoryEntry, ...]:
    return tuple(ShiftHistoryEntry(batch_id=i + 1, severity=s, p_value=0.01) for i, s in enumerate(severities))


def test_little_shift_picks_finetune_at_a_reduced_learning_rate():
    choice = choose(report("none", reasons=()), (), CONFIG, base_lr=0.01)
    assert (choice.strategy, choice.rule) == ("finetune", "little-shift")
    assert choice.hyperparameters["lr"] < 0.01


def test_finetune_learning_rate_grows_with_severity_and_comes_from_config():
    rates = [CONFIG.finetune_lr_scale(s) for s in ("none", "mild", "moderate", "severe")]
    assert rates == sorted(rates)
    assert choose(report("none"), (), replace(CONFIG, lr_scale_none=0.25), 0.004).hyperparameters["lr"] == 0.001


def test_a_mild_shift_is_significant():
    assert choose(report("mild", n_batch=100), (), CONFIG, 0.01).strategy == "feature_extraction"


def test_significant_shift_on_a_small_batch_picks_feature_extraction():
    choice = choose(report("moderate", n_batch=120), (), CONFIG, 0.01)
    assert (choice.strategy, choice.rule) == ("feature_extraction", "significant-shift-small-batch")


def test_new_classes_that_frozen_features_separate_pick_feature_extraction():
    choice = choose(report("severe", novel=(8, 9), probe=0.99), (), CONFIG, 0.01)
    assert (choice.strategy, choice.rule) == ("feature_extraction", "novel-classes-separable")
    assert "linear probe accuracy 0.990 >= 0.98" in choice.rationale


def test_new_classes_that_frozen_features_do_not_separate_pick_meta():
    assert choose(report("severe", novel=(8,), probe=0.5), (), CONFIG, 0.01).strategy == "meta"


def test_meta_for_new_classes_takes_its_own_learning_rate_scale():
    config = replace(CONFIG, meta_lr_scale=0.2, meta_lr_scale_new_classes=1.0)
    assert choose(report("severe", novel=(8,), probe=0.5), (), config, 0.01).hyperparameters["lr"] == 0.01
    assert choose(report("severe", probe=0.4), (), config, 0.01).hyperparameters["lr"] == 0.002


def test_significant_shifts_recurring_across_earlier_batches_pick_meta_when_the_rule_is_on():
    config = replace(CONFIG, recurring_batches=2)
    choice = choose(report("moderate"), history("severe", "none", "mild"), config, 0.01)
    assert (choice.strategy, choice.rule) == ("meta", "recurring-shift")
    assert choose(report("moderate"), history("severe", "none"), config, 0.01).strategy == "finetune"


def test_by_default_a_recurring_shift_is_met_by_the_cheap_strategy_first():
    choice = choose(report("moderate"), history("severe", "mild", "severe", "mild"), PolicyConfig(), 0.01)
    assert (choice.strategy, choice.fallback) == ("finetune", "meta")


def test_at_the_defaults_a_shifted_batch_without_new_classes_is_fine_tuned_first_at_the_full_rate():
    for shifted in (report("severe", n_batch=60, probe=0.4), report("mild", probe=0.9), report("none", reasons=())):
        choice = choose(shifted, history("severe", "mild", "severe"), PolicyConfig(), 0.01)
        assert (choice.strategy, choice.fallback, choice.hyperparameters["lr"]) == ("finetune", "meta", 0.01)


def test_features_that_do_not_transfer_pick_meta():
    choice = choose(report("severe", probe=0.4), (), CONFIG, 0.01)
    assert (choice.strategy, choice.rule) == ("meta", "features-do-not-transfer")


def test_little_shift_picks_finetune_first_even_where_features_do_not_transfer():
    choice = choose(report("none", probe=0.9, reasons=()), (), CONFIG, 0.01)
    assert (choice.strategy, choice.rule) == ("finetune", "little-shift")
    assert choice.fallback == "meta"  # escalated to if this candidate fails the gate


def test_a_batch_production_predicts_far_better_than_its_audit_set_picks_finetune_despite_a_low_probe():
    known = replace(report("none", probe=0.7, reasons=()), accuracy_reference=0.6, accuracy_batch=0.95)
    choice = choose(known, (), CONFIG, 0.01)
    assert (choice.strategy, choice.rule) == ("finetune", "known-batch")
    assert choice.hyperparameters["lr_scale"] == CONFIG.lr_scale_none
    assert "accuracy 0.950 against 0.600" in choice.rationale


def test_a_batch_production_predicts_only_a_little_better_is_not_a_known_batch():
    within_margin = replace(report("none", probe=0.7, reasons=()), accuracy_reference=0.6, accuracy_batch=0.75)
    assert choose(within_margin, (), CONFIG, 0.01).rule == "little-shift"


def test_a_significant_shift_is_never_a_known_batch():
    shifted = replace(report("mild", probe=0.7), accuracy_reference=0.6, accuracy_batch=0.95)
    assert choose(shifted, (), CONFIG, 0.01).rule == "features-do-not-transfer"


def test_significant_shift_on_a_large_batch_with_transferable_features_picks_finetune():
    choice = choose(report("severe", n_batch=800, probe=0.99), (), CONFIG, 0.01)
    assert (choice.strategy, choice.rule) == ("finetune", "significant-shift-severe")


def test_recurrence_counts_distinct_batches_within_the_window():
    entries = history("severe", "moderate", "none", "mild") + (ShiftHistoryEntry(4, "severe", 0.01),)
    assert recurring_shifts(entries, window=10) == 3
    assert recurring_shifts(entries, window=2) == 1


def test_rationale_names_the_measurements_and_the_rule():
    choice = choose(report("moderate"), history("mild"), CONFIG, base_lr=0.01)
    assert "accuracy drop 0.120" in choice.rationale
    assert f"[{choice.rule}]" in choice.rationale
    assert choice.measurements["p_value"] == 0.004 and choice.measurements["probe_accuracy"] == 0.99


def test_a_candidate_refused_for_too_little_gain_escalates_to_the_strongest_strategy_not_yet_tried():
    shifted = report("moderate", n_batch=800)
    first = choose(shifted, (), CONFIG, 0.01)
    second = fallback_choice([first], shifted, CONFIG, 0.01)
    third = fallback_choice([first, second], shifted, CONFIG, 0.01)
    assert [c.strategy for c in (first, second, third)] == ["finetune", "meta", "feature_extraction"]
    assert third.rule == "fallback-after-significant-shift-moderate"
    assert "after the meta candidate did not gain enough to pass" in third.rationale
    assert fallback_choice([first, second, third], shifted, CONFIG, 0.01) is None


def test_a_candidate_refused_for_forgetting_falls_back_to_the_safest_strategy_not_yet_tried():
    shifted = report("moderate", n_batch=800)
    first = choose(shifted, (), CONFIG, 0.01)
    second = fallback_choice([first], shifted, CONFIG, 0.01, forgot=True)
    third = fallback_choice([first, second], shifted, CONFIG, 0.01, forgot=True)
    assert [c.strategy for c in (first, second, third)] == ["finetune", "feature_extraction", "meta"]
    assert "after the finetune candidate forgot beyond the limit" in second.rationale


def test_fallbacks_can_be_switched_off():
    first = choose(report(), (), replace(CONFIG, fallback=False), 0.01)
    assert first.fallback is None and fallback_choice([first], report(), CONFIG, 0.01) is None


def test_a_pinned_strategy_is_chosen_whatever_the_shift_and_keeps_its_learning_rate():
    pinned = replace(CONFIG, strategy="meta")
    for shift in (report("none", reasons=()), report("severe", novel=(8,), probe=0.99), report("moderate", n_batch=50)):
        choice = choose(shift, history("mild", "mild"), pinned, 0.01)
        assert (choice.strategy, choice.rule) == ("meta", "pinned")
        assert choice.hyperparameters == hyperparameters("meta", shift, CONFIG, 0.01)


def test_a_pinned_strategy_not_in_the_closed_set_is_refused():
    with pytest.raises(ValidationError, match="strategy"):
        PolicyConfig(strategy="bagging")
