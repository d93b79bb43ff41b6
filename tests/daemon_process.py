"""The daemon for integration tests: a real ``retain run`` subprocess, or its service loop in a
thread of the test process where the process itself is not what is tested."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from pathlib import Path

from conftest import REPO, RETAIN, wait_for


class DaemonProcess:
    def __init__(
        self, config: Path, *args: str, env: dict[str, str] | None = None, run_args: tuple[str, ...] = ()
    ) -> None:
        self.config = config
        self.log_path = config.parent / "daemon.log"
        self.args = args
        self.run_args = run_args
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.process: subprocess.Popen | None = None

    def start(self, ready_timeout: float = 60) -> "DaemonProcess":
        self.log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [*RETAIN, "--config", str(self.config), *self.args, "run", *self.run_args],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=REPO, env=self.env,
        )
        wait_for(lambda: "daemon ready" in self.output() or self.process.poll() is not None,
                 timeout=ready_timeout, message="daemon ready")
        assert self.process.poll() is None, f"daemon exited early:\n{self.output()}"
        return self

    def output(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def status(self) -> dict:
        path = self.config.parent / "daemon.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout)
        finally:
            self.log.close()
        return code

    def __enter__(self) -> "DaemonProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        if self.alive():
            self.process.kill()
            self.process.wait()
            self.log.close()


class DaemonThread:
    """What ``retain run`` runs (the watcher, the pipeline, the registry, the status file),
    in a thread: no interpreter start and no torch and Avalanche imports to pay. Signals,
    systemd notify, the metrics port and log output need ``DaemonProcess``."""

    def __init__(self, config: Path) -> None:
        from retain.daemon.config import load_config
        from retain.daemon.service import Service
        from retain.registry import Registry

        settings = load_config(config)
        self.registry = Registry(settings.registry_url)
        self.service = Service(settings, self.registry)
        self.thread = threading.Thread(target=self.service.run, name="retain-service", daemon=True)

    def start(self) -> "DaemonThread":
        self.thread.start()
        wait_for(lambda: self.service.status.state == "idle" or not self.thread.is_alive(), timeout=60,
                 message="service idle")
        assert self.thread.is_alive(), "the service loop ended early"
        return self

    def alive(self) -> bool:
        return self.thread.is_alive()

    def stop(self, timeout: float = 60) -> None:
        self.service.request_stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the service loop did not stop"
        self.registry.close()

    def __enter__(self) -> "DaemonThread":
        return self.start()

    def __exit__(self, *exc) -> None:
        if self.thread.is_alive():
            self.stop()


def drop_atomically(source_bytes: bytes, inbox: Path, name: str) -> Path:
    """Write under a dot-name, then rename into the inbox (what `retain ingest` does)."""
    tmp = inbox / f".{name}.part"
    tmp.write_bytes(source_bytes)
    target = inbox / name
    os.replace(tmp, target)
    return target


def wait_for_batches(config: Path, count: int, timeout: float = 90) -> list[dict]:
    from conftest import retain

    def finished():
        rows = json.loads(retain(config, "batches", "--json").stdout)
        done = [r for r in rows if r["state"] in ("done", "rejected", "failed")]
        return rows if len(done) >= count else None

    return wait_for(finished, timeout=timeout, interval=0.5, message=f"{count} finished batches")


def npz_bytes(x, y) -> bytes:
    import io

    import numpy as np

    buffer = io.BytesIO()
    np.savez(buffer, x=x, y=y)
    return buffer.getvalue()

