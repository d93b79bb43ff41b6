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
    # Samples of the initial training set: a fresh draw of 300 would do as well, but its
    # accuracy beside the 90-sample audit set's is within the noise of the accuracy-drop rule.
    np.savez(tmp_path / "same.npz", x=x[100:400], y=y[100:400])
    before = registry_snapshot(workspace)
    report = json.loads(retain(workspace, "check", str(tmp_path / "same.npz"), "--json").stdout)
    assert report["labelled"] and report["severity"] == "none" and report["production_version"] == 1
    assert report["accuracy_batch"] > 0.7 and report["novel_classes"] == []
    assert registry_snapshot(workspace) == before
    assert not [p for p in (workspace.parent / "inbox").iterdir() if p.is_file()]


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


def test_the_daemon_checks_files_dropped_into_unlabelled_and_exports_the_result(workspace, digit_data):
    from prometheus_client import generate_latest

    from conftest import wait_for
    from daemon_process import DaemonThread

    x, _ = digit_data
    unlabelled = workspace.parent / "inbox" / "unlabelled"
    with DaemonThread(workspace) as daemon:
        np.savez(unlabelled / "camera-7.npz", x=np.clip(1.0 - x[500:800], 0, 1))
        (unlabelled / "broken.npz").write_bytes(b"not an archive")
        checked = workspace.parent / "checked" / "default"
        wait_for(lambda: len(list(checked.glob("*.json"))) == 2, timeout=60, message="two checked files")
        scraped = generate_latest(daemon.service.metrics.registry).decode()
    reports = {json.loads(p.read_text())["file"]: json.loads(p.read_text()) for p in checked.glob("*.json")}
    good, bad = reports["camera-7.npz"], reports["broken.npz"]
    assert good["severity"] != "none" and good["production_version"] == 1 and good["prediction_distance"] > 0.1
    assert "truncated or corrupt" in bad["error"]
    assert f'retain_check_pvalue{{model="default"}} {good["p_value"]}' in scraped
    assert f'retain_checks_total{{model="default",severity="{good["severity"]}"}} 1.0' in scraped
    assert not list(unlabelled.iterdir()) and registry_snapshot(workspace) == (1, 0)  # no batch, no version
