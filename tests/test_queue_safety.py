"""No file, crash or burst stalls the queue, loses a batch or registers it twice.

The service runs in-process here (a subprocess would prove nothing more), on a real SQLite
registry and real files in a real inbox.
"""

import os
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import save_npz, write_config
from retain.daemon.config import load_config
from retain.daemon.service import Service
from retain.daemon.watcher import InboxWatcher
from daemon_process import npz_bytes
from retain.registry import Registry


@pytest.fixture
def fast(workspace) -> Path:
    """The workspace with training cut to the bone: these tests are about the queue."""
    write_config(workspace.parent, training={"epochs": 1}, meta={"meta_steps": 2}, policy={"fallback": False})
    return workspace


def service(config_path: Path) -> Service:
    config = load_config(config_path)
    return Service(config, Registry(config.registry_url))


def inbox(config_path: Path) -> Path:
    return config_path.parent / "inbox"


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def run_once(config_path: Path) -> Service:
    daemon = service(config_path)
    daemon.run(once=True)
    return daemon


def test_a_batch_whose_worker_died_on_every_attempt_fails_and_the_batch_behind_it_runs(fast, digit_data):
    x, y = digit_data
    save_npz(inbox(fast) / "a-poison.npz", x[500:600], y[500:600])
    save_npz(inbox(fast) / "b-good.npz", x[600:700], y[600:700])
    daemon = service(fast)
    for path in sorted(inbox(fast).iterdir()):
        daemon.register_file(path)
    owner = f"{daemon.host}:{dead_pid()}"
    for _ in range(3):  # the worker dies every time it takes the poison batch (an OOM kill, say)
        assert daemon.registry.claim_batch(owner, 300, max_attempts=3).name == "a-poison.npz"
        run_once(fast) if _ == 2 else daemon._recover_own_leases()

    poison, good = daemon.registry.batches()
    assert poison.state == "failed"
    assert poison.reason.startswith("worker died while processing (attempt 3 of 3")
    assert (good.state, good.attempts) == ("done", 1)


def test_a_file_rewritten_after_it_was_queued_is_trained_as_a_new_batch_not_under_the_old_hash(fast, digit_data):
    x, y = digit_data
    path = inbox(fast) / "b.npz"
    path.write_bytes(npz_bytes(x[500:700], y[500:700]))
    daemon = service(fast)
    daemon.register_file(path)
    path.write_bytes(npz_bytes(x[700:900], y[700:900]))  # rewritten in place while queued
    daemon.run(once=True)

    first, second = daemon.registry.batches()
    assert first.state == "rejected" and "the file changed after it was queued" in first.reason
    assert second.state == "done"
    import hashlib

    assert hashlib.sha256(Path(second.path).read_bytes()).hexdigest() == second.sha256
    assert [v.batch_id for v in daemon.registry.versions()[1:]] == [second.id]


def test_a_file_still_being_written_without_a_close_is_due_only_once_it_has_settled(tmp_path):
    watcher = InboxWatcher([tmp_path], settle_seconds=0.3)  # no observer: what `run --once` sees
    path = tmp_path / "slow.dat"  # a type the watcher cannot tell whole: settling alone decides
    chunks = [os.urandom(1000) for _ in range(6)]
    seen: list[int] = []
    with path.open("wb") as handle:
        for chunk in chunks:
            handle.write(chunk)
            handle.flush()
            watcher.scan()
            seen += [path.stat().st_size for p in watcher.due() if p == path]
            time.sleep(0.2)  # pauses shorter than settle_seconds, a write longer than it
    deadline = time.monotonic() + 5
    while not seen and time.monotonic() < deadline:
        seen += [path.stat().st_size for p in watcher.due() if p == path]
        time.sleep(0.05)
    assert seen == [6000]


def test_a_writer_pausing_longer_than_the_settle_time_is_waited_for_until_its_file_is_whole(tmp_path, digit_data):
    x, y = digit_data
    whole = npz_bytes(x[500:700], y[500:700])
    watcher = InboxWatcher([tmp_path], settle_seconds=0.1, incomplete_wait_seconds=30)
    path = tmp_path / "slow.npz"
    seen: list[int] = []
    watcher.start()  # inotify: the writer is seen writing, and closing
    try:
        with path.open("wb") as handle:
            for start in range(0, len(whole), len(whole) // 3):
                handle.write(whole[start:start + len(whole) // 3])
                handle.flush()
                deadline = time.monotonic() + 0.5  # a pause of five settle times
                while time.monotonic() < deadline:
                    seen += [path.stat().st_size for p in watcher.due() if p == path]
                    time.sleep(0.02)
        deadline = time.monotonic() + 5
        while not seen and time.monotonic() < deadline:
            seen += [path.stat().st_size for p in watcher.due() if p == path]
            time.sleep(0.02)
    finally:
        watcher.stop()
    assert seen == [len(whole)]


def test_a_file_left_unfinished_past_the_wait_is_handed_over_for_the_loader_to_refuse(tmp_path):
    path = tmp_path / "abandoned.npz"
    watcher = InboxWatcher([tmp_path], settle_seconds=0.0, incomplete_wait_seconds=30)
    handle = path.open("wb", buffering=0)
    watcher.start()
    try:
        handle.write(b"PK\x03\x04 and nothing more")  # its writer never closes it
        time.sleep(0.5)
        assert watcher.due() == []
    finally:
        watcher.stop()
    long_ago = time.time() - 31
    os.utime(path, (long_ago, long_ago))
    due: list[Path] = []
    deadline = time.monotonic() + 5
    while not due and time.monotonic() < deadline:
        due = watcher.due()  # the changed mtime is a change: it settles again first
    handle.close()
    assert due == [path]


def test_a_rejected_file_whose_writer_goes_on_becomes_a_new_batch(fast, digit_data):
    x, y = digit_data
    whole = npz_bytes(x[500:700], y[500:700])
    path = inbox(fast) / "b.npz"
    path.write_bytes(whole[: len(whole) // 2])
    daemon = service(fast)
    daemon.watcher.start()
    try:
        daemon.register_file(path)
        daemon.process_one()
        [old] = daemon.registry.batches()
        assert old.state == "rejected" and "truncated or corrupt" in old.reason
        with Path(old.path).open("r+b") as handle:  # the writer, still holding the file, finishes it
            handle.write(whole)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(daemon.registry.batches()) == 1:
            for due in daemon.watcher.due():
                daemon.register_file(due)
            time.sleep(0.05)
    finally:
        daemon.watcher.stop()
    old, new = daemon.registry.batches()
    assert new.state == "pending" and new.path == old.path
    assert f"now batch {new.id}" in old.reason
    assert daemon.process_one().state == "done"


def test_a_huge_sparse_file_is_rejected_by_its_size_without_being_hashed(fast):
    path = inbox(fast) / "huge.npz"
    with path.open("wb") as handle:
        handle.truncate(16 << 30)  # 16 GiB that take no disk
    daemon = service(fast)
    daemon.register_file(path)
    [batch] = daemon.registry.batches()
    assert batch.state == "rejected" and batch.sha256.startswith("unread-")
    assert batch.reason == "huge.npz: file is 17179869184 bytes, over the limit of 1073741824 (data.max_file_bytes)"
    assert Path(batch.path).parent.name == "rejected" and not path.exists()


def test_a_symbolic_link_out_of_the_inbox_is_rejected_and_its_target_left_alone(fast, digit_data, tmp_path):
    x, y = digit_data
    target = save_npz(tmp_path / "secret.npz", x[500:700], y[500:700])
    (inbox(fast) / "link.npz").symlink_to(target)
    daemon = run_once(fast)
    [batch] = daemon.registry.batches()
    assert batch.state == "rejected" and "is a symbolic link" in batch.reason
    assert target.is_file() and len(daemon.registry.versions()) == 1


def test_a_file_name_that_is_not_utf8_is_rejected_once_naming_it(fast, digit_data):
    x, y = digit_data
    raw = os.path.join(os.fsencode(inbox(fast)), b"caf\xe9.npz")
    with open(raw, "wb") as handle:
        handle.write(npz_bytes(x[500:700], y[500:700]))
    daemon = run_once(fast)
    [batch] = daemon.registry.batches()
    assert batch.state == "rejected" and batch.reason.startswith("caf\\xe9.npz: file name is not valid UTF-8")
    assert Path(batch.path).name == "000001-caf\\xe9.npz" and Path(batch.path).is_file()
    assert os.listdir(os.fsencode(inbox(fast))) == [b"unlabelled"]  # the file is gone; unlabelled/ stays


def test_a_250_byte_file_name_is_processed_under_a_name_that_fits(fast, digit_data):
    x, y = digit_data
    name = "n" * 246 + ".npz"
    save_npz(inbox(fast) / name, x[500:700], y[500:700])
    daemon = run_once(fast)
    [batch] = daemon.registry.batches()
    assert batch.state == "done" and batch.name == name
    moved = Path(batch.path)
    assert moved.is_file() and moved.suffix == ".npz" and len(moved.name.encode()) <= 241
    assert len(daemon.registry.versions()) == 2


def test_features_that_overflow_the_model_are_rejected_on_the_first_attempt(fast, digit_data):
    x, y = digit_data
    write_config(fast.parent, training={"epochs": 1}, data={"max_abs_value": 3.4e38})
    huge = np.full_like(x[500:700], 3e38)  # finite, within the raised limit; inf inside the model
    save_npz(inbox(fast) / "b.npz", huge, y[500:700])
    daemon = run_once(fast)
    [batch] = daemon.registry.batches()
    assert (batch.state, batch.attempts) == ("rejected", 1)
    assert "features overflow" in batch.reason


def test_directories_and_fifos_in_the_inbox_are_ignored(fast):
    (inbox(fast) / "folder.npz").mkdir()
    os.mkfifo(inbox(fast) / "pipe.npz")
    daemon = run_once(fast)
    assert daemon.registry.batches() == []


def test_temporary_files_left_by_a_killed_daemon_are_swept_at_start(fast):
    workdir = fast.parent
    digest = "ab" + "0" * 62
    stale = [workdir / ".daemon.json.k2j4h5g6.tmp", workdir / "artifacts" / "sha256" / "ab" / f".{digest}.x1y2z3w4.tmp"]
    kept = [workdir / ".notes.tmp", workdir / "artifacts" / "sha256" / "ab" / ".mine.tmp"]
    for path in stale + kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"partial")
        os.utime(path, (time.time() - 60, time.time() - 60))
    run_once(fast)
    assert [p.exists() for p in stale] == [False, False]
    assert [p.exists() for p in kept] == [True, True]


def test_a_file_found_by_a_scan_that_has_not_changed_for_the_settle_time_is_due_at_once(tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    old, new = inbox / "old.dat", inbox / "new.dat"
    old.write_bytes(b"x")
    new.write_bytes(b"y")
    long_ago = time.time() - 60
    os.utime(old, (long_ago, long_ago))
    watcher = InboxWatcher([inbox], settle_seconds=30.0)
    watcher.scan()
    assert watcher.due() == [old]
    assert watcher.pending() == 1  # the new one waits out its settle time


def test_a_batch_whose_move_fails_after_registering_stays_done_and_moves_at_the_next_start(fast, digit_data):
    # The registry records the destination with the versions, before the move: an error (or a
    # crash) between the two leaves the batch done, naming where its file goes, and the file in
    # the inbox, where the next scan finds it and finishes the move.
    x, y = digit_data
    source = save_npz(inbox(fast) / "a-good.npz", x[500:650], y[500:650])
    daemon = service(fast)
    daemon.register_file(source)
    [batch] = daemon.registry.batches()
    destination = daemon.config.processed_dir / f"{batch.id:06d}-a-good.npz"
    destination.mkdir(parents=True)  # the rename onto it fails: IsADirectoryError
    daemon.run(once=True)
    after = daemon.registry.batch(batch.id)
    assert (after.state, after.path, after.attempts) == ("done", str(destination), 1)
    assert after.version is not None and source.exists()
    versions = [v.version for v in daemon.registry.versions()]

    destination.rmdir()
    again = run_once(fast)
    assert destination.is_file() and not source.exists()
    assert again.registry.batch(batch.id).path == str(destination)
    assert [v.version for v in again.registry.versions()] == versions  # nothing registered twice


def test_a_dangling_link_is_refused_once_and_moved_where_its_row_says(fast):
    link = inbox(fast) / "gone.npz"
    link.symlink_to(fast.parent / "no-such-target.npz")
    daemon = service(fast)
    for _ in range(3):  # rescans
        daemon.watcher.scan()
        for due in daemon.watcher.due():
            daemon.register_file(due)
        daemon.register_file(link)
    [row] = daemon.registry.batches()
    assert row.state == "rejected" and "symbolic link" in row.reason
    assert Path(row.path).parent == daemon.config.rejected_dir and Path(row.path).is_symlink()
    assert not os.path.lexists(link)


def test_a_refused_file_whose_move_failed_is_not_recorded_again(fast):
    link = inbox(fast) / "gone.npz"
    link.symlink_to(fast.parent / "no-such-target.npz")
    daemon = service(fast)
    daemon.config.rejected_dir.mkdir(parents=True, exist_ok=True)
    blocker = daemon.config.rejected_dir / "000001-gone.npz"
    blocker.mkdir()  # the move fails after the row was recorded
    with pytest.raises(IsADirectoryError):
        daemon.register_file(link)
    blocker.rmdir()
    daemon.register_file(link)
    [row] = daemon.registry.batches()
    assert row.path == str(blocker) and blocker.is_symlink()


def test_the_status_file_is_written_on_state_changes_not_on_every_training_step(fast, digit_data, monkeypatch):
    from retain.daemon.status import DaemonStatus

    x, y = digit_data
    write_config(fast.parent, training={"epochs": 8}, policy={"strategy": "finetune", "fallback": False})
    save_npz(inbox(fast) / "b.npz", x[500:800], y[500:800])
    written: list[tuple[str, float]] = []
    write = DaemonStatus.write
    monkeypatch.setattr(DaemonStatus, "write", lambda self, workdir: (written.append((self.state, time.monotonic())),
                                                                      write(self, workdir))[-1])
    started = time.monotonic()
    run_once(fast)  # 80 optimizer steps, each reported as progress
    changes = sum(1 for i, (state, _) in enumerate(written) if i == 0 or state != written[i - 1][0])
    assert len(written) - changes <= time.monotonic() - started + 1


def test_a_fifo_seen_created_in_the_inbox_does_not_block_the_watcher(tmp_path):
    watcher = InboxWatcher([tmp_path], settle_seconds=0.0)
    watcher.start()
    try:
        os.mkfifo(tmp_path / "fifo.npz")  # never opened for writing: opening it to read would block
        time.sleep(0.3)
        finished = threading.Event()
        threading.Thread(target=lambda: (watcher.due(), finished.set()), daemon=True).start()
        assert finished.wait(5), "due() blocked on the FIFO"
    finally:
        watcher.stop()
