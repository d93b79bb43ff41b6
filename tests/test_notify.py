"""The systemd notify protocol against the real daemon process and a real AF_UNIX socket."""

import json
import signal
import socket
import sqlite3
import threading
import time
from pathlib import Path

from conftest import wait_for, write_config
from daemon_process import DaemonProcess, drop_atomically, npz_bytes, wait_for_batches


class NotifySocket:
    """What systemd does: bind a datagram socket and read what the service sends, noting when
    each message arrives (a reader thread, so a message is not stamped when a test gets to it)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self._messages: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:  # until closed and nothing more has come for a timeout
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                if self._closed.is_set():
                    return
                continue
            with self._lock:
                self._messages.append((time.monotonic(), data.decode()))

    def lines(self) -> list[str]:
        with self._lock:
            return [line for _, message in self._messages for line in message.splitlines()]

    def pings_between(self, start: float, end: float) -> int:
        with self._lock:
            return sum(1 for t, m in self._messages if start <= t <= end and "WATCHDOG=1" in m)

    def close(self) -> None:
        self._closed.set()
        self._reader.join()
        self.sock.close()


def test_ready_status_watchdog_and_stopping_are_sent(workspace, digit_data, tmp_path):
    x, y = digit_data
    notify = NotifySocket(tmp_path / "notify.sock")
    env = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "1000000"}
    try:
        with DaemonProcess(workspace, env=env) as daemon:
            wait_for(lambda: "READY=1" in notify.lines(), timeout=30, message="READY=1")
            drop_atomically(npz_bytes(x[500:700], y[500:700]), workspace.parent / "inbox", "batch.npz")
            wait_for_batches(workspace, 1)
            wait_for(lambda: notify.lines().count("WATCHDOG=1") >= 4, timeout=10, message="watchdog pings")
            assert daemon.stop(signal.SIGTERM) == 0
    finally:
        notify.close()
    lines = notify.lines()
    assert lines.index("READY=1") < lines.index("STOPPING=1")
    assert any(line.startswith("STATUS=processing batch 1 (batch.npz)") for line in lines)
    assert "STATUS=idle" in lines
    assert lines[-2:] == ["STOPPING=1", "STATUS=stopping"]


def test_watchdog_pings_stop_while_the_pipeline_is_stuck(workspace, digit_data, tmp_path):
    x, y = digit_data
    write_config(workspace.parent, daemon={"stuck_seconds": 1.5, "settle_seconds": 0.2})
    notify = NotifySocket(tmp_path / "notify.sock")
    env = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "600000"}
    database = workspace.parent / "registry.db"
    try:
        with DaemonProcess(workspace, env=env) as daemon:
            wait_for(lambda: "READY=1" in notify.lines(), timeout=30, message="READY=1")
            # Hold the registry's write lock: the daemon's next look at its queue blocks.
            holder = sqlite3.connect(database, isolation_level=None, timeout=1)
            holder.execute("BEGIN EXCLUSIVE")
            drop_atomically(npz_bytes(x[500:700], y[500:700]), workspace.parent / "inbox", "batch.npz")
            wait_for(lambda: "pipeline stuck" in daemon.output(), timeout=30, message="the watchdog to see it stuck")
            stuck_from = time.monotonic()
            time.sleep(2.0)  # over three watchdog intervals
            stuck_pings = notify.pings_between(stuck_from, time.monotonic())
            holder.execute("ROLLBACK")
            holder.close()
            wait_for_batches(workspace, 1)
            resumed = time.monotonic()
            wait_for(lambda: notify.pings_between(resumed, time.monotonic()) >= 2, timeout=10,
                     message="pings to resume")
            daemon.stop()
    finally:
        notify.close()
    assert stuck_pings == 0


def test_without_notify_socket_nothing_is_sent_and_the_daemon_runs(workspace):
    with DaemonProcess(workspace) as daemon:
        status = json.loads((workspace.parent / "daemon.json").read_text())
        assert status["state"] in ("idle", "processing")
        assert daemon.stop() == 0
    assert "sd_notify failed" not in daemon.output()
