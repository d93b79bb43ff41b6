"""``retain check``: a batch's shift against production, without training or writing."""

import json

import numpy as np

from conftest import retain


def registry_snapshot(workspace) -> tuple:
    versions = json.loads(retain(workspace, "versions", "--json").stdout)
    batches = json.loads(retain(workspace, "batches", "--json").stdout)
    return len(versions), len(batches)


def test_a_labelled_file_like_the_known_data_shows_no_shift_and_nothing_is_written(workspace, digit_data, tmp_path):
    x, y = digit_data
    np.savez(tmp_path / "same.npz", x=x[500:800], y=y[500:800])
    before = registry_snapshot(workspace)
    report = json.loads(retain(workspace, "check", str(tmp_path / "same.npz"), "--json").stdout)
    assert report["labelled"] and report["severity"] == "none" and report["production_version"] == 1
    assert report["accuracy_batch"] > 0.7 and report["novel_classes"] == []
    assert registry_snapshot(workspace) == before and not list((workspace.parent / "inbox").iterdir())


def test_an_unlabelled_file_that_drifted_is_flagged_from_features_and_predictions(workspace, digit_data, tmp_path):
    x, y = digit_data
    drifted = np.clip(1.0 - x[500:800], 0, 1)  # inverted images: the features move, predictions skew
    np.savez(tmp_path / "drifted.npz", x=drifted)
    report = json.loads(retain(workspace, "check", str(tmp_path / "drifted.npz"), "--json").stdout)
    assert not report["labelled"] and report["accuracy_batch"] is None
    assert report["severity"] != "none" and report["p_value"] < 0.05 and report["prediction_distance"] > 0.1
    text = retain(workspace, "check", str(tmp_path / "drifted.npz")).stdout
    assert "prediction distance" in text and "(no labels)" in text


def test_new_classes_in_a_labelled_file_are_named(workspace, digit_data, tmp_path):
    x, y = digit_data
    np.savez(tmp_path / "new.npz", x=x[500:700], y=np.where(y[500:700] == 3, 12, y[500:700]))
    report = json.loads(retain(workspace, "check", str(tmp_path / "new.npz"), "--json").stdout)
    assert report["novel_classes"] == [12]
