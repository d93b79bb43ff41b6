"""Shift measurement on synthetic data with known shifts (pure, no files, no models)."""

import pytest
import torch

from retain.strategies.shift import (
    ShiftEvidence,
    ShiftThresholds,
    block_size,
    classify_severity,
    label_distance,
    measure_shift,
    mmd_permutation_test,
    novel_classes,
)


def gaussian(n: int, d: int = 8, mean: float = 0.0, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed)) + mean


def test_random_features_approximate_the_exact_kernel_mmd():
    x, y = gaussian(300, seed=1), gaussian(300, mean=0.3, seed=2)
    result = mmd_permutation_test(x, y, permutations=20, features=4096, seed=3)
    z = torch.cat([x, y]).double()
    kernel = torch.exp(-torch.cdist(z, z).square() / result.bandwidth)
    exact = float(kernel[:300, :300].mean() + kernel[300:, 300:].mean() - 2 * kernel[:300, 300:].mean())
    assert abs(result.statistic - exact) < 0.1 * exact


def test_no_shift_gives_roughly_uniform_p_values():
    p_values = torch.tensor(
        [mmd_permutation_test(gaussian(60, seed=2 * i), gaussian(60, seed=2 * i + 1), permutations=100, seed=i).p_value
         for i in range(60)]
    )
    assert 0.35 < float(p_values.mean()) < 0.65
    assert float((p_values < 0.05).double().mean()) <= 0.15
    assert float((p_values > 0.5).double().mean()) >= 0.3


def test_permuting_blocks_of_a_large_sample_keeps_p_values_uniform_under_no_shift():
    assert block_size(300, 20_000) > 1
    p_values = torch.tensor(
        [mmd_permutation_test(gaussian(300, seed=2 * i), gaussian(20_000, seed=2 * i + 1), permutations=100,
                              features=64, seed=i).p_value for i in range(40)]
    )
    assert 0.3 < float(p_values.mean()) < 0.7
    assert float((p_values < 0.05).double().mean()) <= 0.15


def test_clear_mean_shift_is_detected():
    result = mmd_permutation_test(gaussian(100, seed=1), gaussian(100, mean=0.8, seed=2), permutations=200)
    assert result.p_value < 0.01


def test_a_small_reference_against_a_large_batch_still_detects_a_shift():
    result = mmd_permutation_test(gaussian(200, seed=1), gaussian(50_000, mean=0.3, seed=2), permutations=200)
    assert (result.n_x, result.n_y) == (200, 50_000)
    assert result.p_value < 0.01


def test_every_sample_is_tested_unless_max_samples_caps_a_side():
    x, y = gaussian(3000, seed=1), gaussian(2000, seed=2)
    every = mmd_permutation_test(x, y, permutations=20)
    assert (every.n_x, every.n_y) == (3000, 2000)
    capped = mmd_permutation_test(x, y, permutations=20, max_samples=500)
    assert (capped.n_x, capped.n_y) == (500, 500)


def test_the_same_seed_gives_the_same_p_value():
    x, y = gaussian(500, seed=1), gaussian(700, mean=0.1, seed=2)
    assert mmd_permutation_test(x, y, seed=5) == mmd_permutation_test(x, y, seed=5)


def test_an_odd_number_of_random_features_is_refused():
    with pytest.raises(ValueError, match="even number of random features"):
        mmd_permutation_test(gaussian(10), gaussian(10), features=33)


def test_label_distance_is_zero_for_equal_histograms_and_one_for_disjoint():
    assert label_distance(torch.tensor([0, 1, 2, 0]), torch.tensor([2, 1, 0, 0]), 3) == 0.0
    assert label_distance(torch.tensor([0, 0, 1]), torch.tensor([2, 2]), 3) == 1.0


def test_novel_classes_lists_labels_absent_from_the_reference():
    assert novel_classes(torch.tensor([0, 1, 1]), torch.tensor([1, 3, 2, 3])) == (2, 3)


def test_severity_none_when_nothing_crosses_a_threshold():
    severity, reasons = classify_severity(0.4, 0.05, (), 0.0, ShiftThresholds())
    assert (severity, reasons) == ("none", ())


def test_significant_feature_shift_alone_is_mild():
    assert classify_severity(0.001, 0.05, (), 0.0, ShiftThresholds())[0] == "mild"


def test_accuracy_drop_sets_moderate_and_severe():
    thresholds = ShiftThresholds()
    assert classify_severity(0.5, 0.0, (), 0.12, thresholds)[0] == "moderate"
    assert classify_severity(0.5, 0.0, (), 0.30, thresholds)[0] == "severe"


def test_novel_classes_are_severe_and_named_in_the_reasons():
    severity, reasons = classify_severity(0.5, 0.0, (7,), 0.0, ShiftThresholds())
    assert severity == "severe"
    assert any("novel classes [7]" in r for r in reasons)


def test_measure_shift_reports_every_measurement():
    labels = torch.arange(100) % 4
    evidence = ShiftEvidence(
        gaussian(100, seed=1), labels, gaussian(80, mean=1.0, seed=2), torch.arange(80) % 5,
        accuracy_reference=0.9, accuracy_batch=0.7, num_classes=5,
    )
    report = measure_shift(evidence, ShiftThresholds(permutations=100))
    assert report.p_value < 0.01
    assert report.novel_classes == (4,)
    assert abs(report.accuracy_drop - 0.2) < 1e-9
    assert report.severity == "severe"
    assert (report.n_reference, report.n_batch) == (100, 80)
