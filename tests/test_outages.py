"""Outages of the system under the daemon: a full disk, a registry that cannot be reached.
The daemon stays up, says so once, waits, and carries on; no batch is charged a try for them.
Real parts: a tmpfs that fills up, a PostgreSQL server stopped mid-batch."""

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import postgres_server, retain, save_npz, wait_for, write_config
from daemon_process import DaemonProcess, DaemonThread, wait_for_batches
from test_notify import NotifySocket
from retain.daemon.outage import OutageKind


@pytest.fixture
def small_disk(tmp_path):
    """A 48 MiB tmpfs: a file system that can really be filled."""
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mount)], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def fill(folder: Path) -> Path:
    filler = folder / "filler"
    with filler.open("wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * (1 << 20))
        except OSError:
            pass
        try:
            while True:  # the last partial blocks
                handle.write(b"\0" * 4096)
        except OSError:
            pass
    return filler


def test_a_full_disk_is_waited_out_said_once_and_exported_and_the_batch_runs_after(
    small_disk, initialised_template, digit_data, caplog,
):
    x, y = digit_data
    workdir = small_disk / "ws"
    shutil.copytree(initialised_template, workdir)
    config = write_config(workdir, daemon={"rescan_seconds": 0.5}, training={"epochs": 1}, policy={"fallback": False})
    staged = save_npz(workdir / "b.npz", x[500:700], y[500:700])
    caplog.set_level("INFO", logger="retain")
    with DaemonThread(config) as daemon:  # running when the disk fills up
        filler = fill(small_disk)
        staged.rename(workdir / "inbox" / "b.npz")  # a rename takes no space
        metric = daemon.service.metrics.outage.labels(kind=OutageKind.DISK_FULL)
        wait_for(lambda: metric._value.get() == 1, timeout=30, message="the disk-full metric")
        time.sleep(2)  # several loops, each of which meets the full disk
        assert daemon.alive() and daemon.registry.batches() == []
        said = [r for r in caplog.records if r.getMessage() == "system outage; waiting"]
        assert len(said) == 1 and said[0].fields["outage"] == OutageKind.DISK_FULL
        filler.unlink()
        wait_for(lambda: [b.state for b in daemon.registry.batches()] == ["done"], timeout=60,
                 message="the batch done once space freed")
        assert daemon.registry.batches()[0].attempts == 1 and metric._value.get() == 0
    assert any(r.getMessage() == "system outage over" for r in caplog.records)


def test_a_registry_outage_mid_batch_is_waited_out_and_charges_the_batch_no_try(tmp_path, digit_data):
    server = postgres_server()
    try:
        x, y = digit_data
        # Training long enough to outlast the outage's start.
        config = write_config(tmp_path, registry={"url": server.url}, training={"epochs": 1500, "threads": 1},
                              policy={"strategy": "finetune", "fallback": False})
        save_npz(tmp_path / "init.npz", x[:300], y[:300])
        retain(config, "init", "--data", str(tmp_path / "init.npz"), "--train")
        notify = NotifySocket(tmp_path / "notify.sock")
        env = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "2000000"}  # a ping a second
        with DaemonProcess(config, "--log-format", "json", env=env) as daemon:
            save_npz(tmp_path / "inbox" / "a.npz", x[400:700], y[400:700])
            wait_for(lambda: "strategy chosen" in daemon.output(), timeout=60, message="training started")
            server.stop(mode="immediate")
            down = time.monotonic()
            time.sleep(8)  # the daemon died 6.6 s into such an outage
            assert daemon.alive(), daemon.output()[-3000:]
            # Alive but degraded, as systemd hears it: the watchdog is still fed.
            assert "STATUS=degraded: registry unreachable; waiting" in notify.lines()
            assert notify.pings_between(down, time.monotonic()) >= 4
            status = retain(config, "status", check=False)
            assert status.returncode == 1 and status.stderr.startswith("error: the registry's database")
            assert len(status.stderr.strip().splitlines()) == 1
            server.start()
            [batch] = wait_for_batches(config, 1, timeout=120)
            assert (batch["state"], batch["attempts"]) == ("done", 1)
            assert daemon.alive()
            events = [json.loads(line) for line in daemon.output().splitlines() if line.startswith("{")]
            outages = [e for e in events if e["event"] == "system outage; waiting"]
            assert len(outages) == 1 and outages[0]["outage"] == "registry_unreachable"
            assert any(e["event"] == "system outage over" for e in events)
            # Trained once: the outage neither ended the training nor cost it a retry.
            assert sum(e["event"] == "strategy chosen" for e in events) == 1
            assert not any(e["level"] == "error" for e in events), [e for e in events if e["level"] == "error"]
        notify.close()
    finally:
        server.remove()


def test_a_daemon_started_while_the_registry_is_down_waits_for_it_instead_of_exiting(tmp_path, digit_data):
    import threading

    server = postgres_server()
    try:
        x, y = digit_data
        config = write_config(tmp_path, registry={"url": server.url})
        save_npz(tmp_path / "init.npz", x[:300], y[:300])
        retain(config, "init", "--data", str(tmp_path / "init.npz"), "--train")
        server.stop()
        back = threading.Timer(5, server.start)  # under systemd: restarted in a loop until now
        back.start()
        try:
            with DaemonProcess(config, "--log-format", "json") as daemon:  # ready once the database is back
                events = [json.loads(line) for line in daemon.output().splitlines() if line.startswith("{")]
                [waiting] = [e for e in events if e["event"] == "system outage; waiting"]
                assert waiting["doing"] == "opening the registry" and daemon.alive()
        finally:
            back.join()
    finally:
        server.remove()
