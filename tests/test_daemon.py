"""The daemon on real files in its inbox, with the registry, artifacts and CLI: as a subprocess
where the process matters (start-up, logs, signals), else its service loop in a thread."""

import hashlib
import json
import signal
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from conftest import fresh_postgres_database, retain, save_npz, wait_for, write_config
from daemon_process import DaemonProcess, DaemonThread, drop_atomically, npz_bytes, wait_for_batches


def inbox(config: Path) -> Path:
    return config.parent / "inbox"


def versions(config: Path) -> list[dict]:
    return json.loads(retain(config, "versions", "--json").stdout)


def batches(config: Path) -> list[dict]:
    return json.loads(retain(config, "batches", "--json").stdout)


def always_accept(config: Path, **sections) -> None:
    write_config(config.parent, gate={"max_forgetting": 1.0, "min_gain": -1.0}, **sections)


def test_files_dropped_into_the_inbox_become_registered_versions(workspace, digit_data):
    x, y = digit_data
    with DaemonProcess(workspace) as daemon:
        drop_atomically(npz_bytes(x[500:700], y[500:700]), inbox(workspace), "renamed.npz")
        (inbox(workspace) / "written.npz").write_bytes(npz_bytes(x[700:900], y[700:900]))  # close-write
        rows = wait_for_batches(workspace, 2)
        assert daemon.alive()
        assert daemon.stop() == 0

    assert [r["state"] for r in rows] == ["done", "done"]
    assert all(Path(r["path"]).parent.name == "processed" and Path(r["path"]).exists() for r in rows)
    assert not [p for p in inbox(workspace).iterdir() if not p.is_dir()]  # the unlabelled/ folder stays
    listed = versions(workspace)
    assert [v["version"] for v in listed] == [1, 2, 3]
    assert {v["batch"] for v in listed[1:]} == {r["id"] for r in rows}
    for row in listed:
        artifact = workspace.parent / "artifacts" / "sha256" / row["artifact_sha256"][:2] / row["artifact_sha256"]
        assert hashlib.sha256(artifact.read_bytes()).hexdigest() == row["artifact_sha256"]
        assert load_file(artifact)  # a state dict, in safetensors
    shown = json.loads(retain(workspace, "show", "3", "--json").stdout)
    assert shown["lineage"][-1] == 1
    assert shown["details"]["per_batch"] and shown["replay_sha256"]
    assert shown["severity"] in ("none", "mild", "moderate", "severe")
    assert shown["rationale"].startswith(f"{shown['strategy']} because")
    log = daemon.output()
    assert "candidate registered" in log and "daemon stopped" in log
    assert "no QP solver found" not in log  # qpsolvers' warning at Avalanche's import says nothing to an operator


def test_an_inbox_on_another_file_system_is_emptied_into_processed_and_rejected(
    workspace, digit_data, other_file_system
):
    x, y = digit_data
    write_config(workspace.parent, paths={"workdir": ".", "inbox": str(other_file_system)})
    good, bad = npz_bytes(x[500:700], y[500:700]), b"not an archive"
    (other_file_system / "good.npz").write_bytes(good)
    (other_file_system / "bad.npz").write_bytes(bad)
    retain(workspace, "run", "--once")

    # Both arrived at once: which is batch 1 is up to their modification times.
    rows = {Path(r["path"]).name.partition("-")[2]: r for r in batches(workspace)}
    assert {name: r["state"] for name, r in rows.items()} == {"bad.npz": "rejected", "good.npz": "done"}
    assert Path(rows["good.npz"]["path"]).read_bytes() == good
    assert Path(rows["bad.npz"]["path"]).read_bytes() == bad
    assert not [p for p in other_file_system.iterdir() if not p.is_dir()]


def test_bad_files_are_rejected_with_reasons_and_the_daemon_keeps_running(workspace, digit_data):
    x, y = digit_data
    good = npz_bytes(x[500:700], y[500:700])
    nan_x = x[700:760].copy()
    nan_x[3, 3] = np.nan
    with DaemonThread(workspace) as daemon:
        drop_atomically(good[:300], inbox(workspace), "truncated.npz")
        drop_atomically(npz_bytes(nan_x, y[700:760]), inbox(workspace), "nan.npz")
        drop_atomically(npz_bytes(x[700:760, :10], y[700:760]), inbox(workspace), "shape.npz")
        drop_atomically(npz_bytes(x[700:760], y[700:760] - 10), inbox(workspace), "labels.npz")
        pickled = workspace.parent / "pickled.pt"
        torch.save({"x": torch.zeros(3), "y": [object()]}, pickled)
        drop_atomically(pickled.read_bytes(), inbox(workspace), "pickled.pt")
        drop_atomically(good, inbox(workspace), "good.npz")
        rows = wait_for_batches(workspace, 6)
        assert daemon.alive()
        daemon.stop()

    by_name = {Path(r["path"]).name.split("-", 1)[1]: r for r in rows}
    expected = {
        "truncated.npz": "truncated or corrupt",
        "nan.npz": "NaN or infinite",
        "shape.npz": "the model expects (64,)",
        "labels.npz": "labels out of range",
        "pickled.pt": "refused to unpickle",
    }
    for name, reason in expected.items():
        assert by_name[name]["state"] == "rejected", name
        assert reason in by_name[name]["reason"], (name, by_name[name]["reason"])
        assert (workspace.parent / "rejected" / Path(by_name[name]["path"]).name).exists()
    assert by_name["good.npz"]["state"] == "done"
    table = retain(workspace, "batches").stdout
    assert "labels out of range" in table and "rejected" in table
    assert len(versions(workspace)) == 2


def test_the_same_content_twice_is_processed_once(workspace, digit_data):
    x, y = digit_data
    data = npz_bytes(x[500:700], y[500:700])
    drop_atomically(data, inbox(workspace), "first.npz")
    drop_atomically(data, inbox(workspace), "again.npz")
    retain(workspace, "run", "--once")
    rows = batches(workspace)
    assert len(rows) == 1 and rows[0]["state"] == "done"
    assert len(versions(workspace)) == 2
    kept = {p.name for p in (workspace.parent / "processed").iterdir()}
    assert kept in ({"000001-first.npz", "000001-duplicate-again.npz"},
                    {"000001-again.npz", "000001-duplicate-first.npz"})


def test_run_once_processes_files_that_arrived_while_the_daemon_was_down(workspace, digit_data):
    x, y = digit_data
    save_npz(inbox(workspace) / "a.npz", x[500:650], y[500:650])
    save_npz(inbox(workspace) / "b.npz", x[650:800], y[650:800])
    (inbox(workspace) / ".hidden.npz").write_bytes(b"ignored")
    (inbox(workspace) / "partial.npz.part").write_bytes(b"ignored")
    result = retain(workspace, "run", "--once")
    assert result.returncode == 0
    assert [r["state"] for r in batches(workspace)] == ["done", "done"]
    assert sorted(p.name for p in inbox(workspace).iterdir() if not p.is_dir()) == [".hidden.npz", "partial.npz.part"]


def test_sigterm_during_training_requeues_the_batch_for_the_next_start(workspace, digit_data):
    x, y = digit_data
    write_config(workspace.parent, training={"epochs": 2000})
    with DaemonProcess(workspace) as daemon:
        drop_atomically(npz_bytes(x[500:800], y[500:800]), inbox(workspace), "slow.npz")
        wait_for(lambda: daemon.status().get("state") == "processing", timeout=60, message="training to start")
        assert daemon.stop(signal.SIGTERM) == 0
    assert "batch interrupted" in daemon.output()
    [row] = batches(workspace)
    assert (row["state"], row["attempts"], row["version"]) == ("pending", 0, None)
    assert len(versions(workspace)) == 1

    write_config(workspace.parent)
    retain(workspace, "run", "--once")
    [row] = batches(workspace)
    assert (row["state"], row["attempts"], row["version"]) == ("done", 1, 2)


def test_a_batch_left_by_a_killed_daemon_is_retried_on_restart(workspace, digit_data):
    x, y = digit_data
    write_config(workspace.parent, training={"epochs": 2000})
    with DaemonProcess(workspace) as daemon:
        drop_atomically(npz_bytes(x[500:800], y[500:800]), inbox(workspace), "slow.npz")
        wait_for(lambda: daemon.status().get("state") == "processing", timeout=60, message="training to start")
        daemon.stop(signal.SIGKILL)
    [row] = batches(workspace)
    assert row["state"] == "processing"

    write_config(workspace.parent)
    retain(workspace, "run", "--once")
    [row] = batches(workspace)
    assert (row["state"], row["version"]) == ("done", 2)
    assert len(versions(workspace)) == 2


def test_a_rollback_from_the_cli_is_used_for_the_next_batch(workspace, digit_data):
    x, y = digit_data
    always_accept(workspace)
    with DaemonThread(workspace) as daemon:
        drop_atomically(npz_bytes(x[500:650], y[500:650]), inbox(workspace), "one.npz")
        wait_for_batches(workspace, 1)
        assert json.loads(retain(workspace, "status", "--json").stdout)["production_version"] == 2
        retain(workspace, "rollback", "--reason", "bad metrics")
        drop_atomically(npz_bytes(x[650:800], y[650:800]), inbox(workspace), "two.npz")
        wait_for_batches(workspace, 2)
        daemon.stop()
    listed = versions(workspace)
    assert listed[2]["parent"] == 1  # trained from the rolled-back-to production model
    assert listed[2]["is_production"]
    history = json.loads(retain(workspace, "history", "--json").stdout)
    assert [(h["action"], h["from_version"], h["to_version"]) for h in history] == [
        ("create", None, 1), ("auto_promote", 1, 2), ("rollback", 2, 1), ("auto_promote", 1, 3)]
    assert history[2]["reason"] == "bad metrics" and history[2]["actor"].startswith("cli:")


def test_status_reports_a_running_daemon_and_its_queue(workspace):
    with DaemonProcess(workspace) as daemon:
        running = json.loads(retain(workspace, "status", "--json").stdout)
        assert running["daemon"]["running"] and running["daemon"]["pid"] == daemon.process.pid
        assert running["production_version"] == 1 and running["queue_depth"] == 0
        daemon.stop()
    stopped = retain(workspace, "status", "--json")
    assert not json.loads(stopped.stdout)["daemon"]["running"] and stopped.returncode == 0


def test_status_tells_a_killed_daemon_from_a_stopped_one_and_exits_non_zero(workspace, digit_data):
    with DaemonProcess(workspace) as daemon:
        daemon.process.send_signal(signal.SIGKILL)
        daemon.process.wait()
    dead = retain(workspace, "status", check=False)
    assert dead.returncode == 1 and "daemon: dead (pid" in dead.stdout
    assert json.loads(retain(workspace, "status", "--json", check=False).stdout)["daemon"]["state"] == "dead"


def test_status_counts_inbox_files_the_daemon_has_not_scanned(workspace, digit_data):
    x, y = digit_data
    for i in range(5):
        save_npz(inbox(workspace) / f"b{i}.npz", x[500 + 10 * i:510 + 10 * i], y[500 + 10 * i:510 + 10 * i])
    report = retain(workspace, "status")
    assert "queue depth: 0 (and 5 files in the inbox not yet scanned)" in report.stdout
    assert json.loads(retain(workspace, "status", "--json").stdout)["unscanned_files"] == 5


def test_the_daemon_runs_on_a_postgresql_registry(tmp_path, digit_data, postgres_url):
    x, y = digit_data
    config = write_config(tmp_path, registry={"url": fresh_postgres_database(postgres_url, "daemon")})
    save_npz(tmp_path / "init.npz", x[:400], y[:400])
    retain(config, "init", "--data", str(tmp_path / "init.npz"), "--train")
    save_npz(inbox(config) / "a.npz", x[400:600], y[400:600])
    drop_atomically(b"junk", inbox(config), "bad.npz")
    retain(config, "run", "--once")
    states = sorted(r["state"] for r in batches(config))
    assert states == ["done", "rejected"]
    assert [v["version"] for v in versions(config)] == [1, 2]
    assert not (tmp_path / "registry.db").exists()  # everything went to PostgreSQL
