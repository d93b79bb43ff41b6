"""The daemon's status file, ``<workdir>/daemon.json``: written by the service, read by
``retain status``, which decides from it whether the daemon is alive."""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from retain.registry import atomic_write

STATUS_FILE = "daemon.json"
# Beyond this, a heartbeat from another host means that daemon is gone: the service writes
# one at least every few seconds, while it trains too.
HEARTBEAT_TIMEOUT_S = 30.0


class DaemonState(StrEnum):
    STARTING = "starting"
    IDLE = "idle"
    PROCESSING = "processing"
    DEGRADED = "degraded"  # alive, waiting out a full disk or an unreachable registry
    STOPPING = "stopping"
    STOPPED = "stopped"
    DEAD = "dead"  # never written: what `retain status` says of a process gone without stopping


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class DaemonStatus:
    """What the daemon last said about itself."""

    pid: int
    host: str
    started_at: float
    heartbeat_at: float
    state: DaemonState
    batch: int | None = None

    def write(self, workdir: Path) -> None:
        atomic_write(workdir / STATUS_FILE, lambda handle: handle.write(json.dumps(asdict(self)).encode()))

    @classmethod
    def read(cls, workdir: Path) -> DaemonStatus | None:
        """The recorded status; ``None`` when there is none or it cannot be read."""
        try:
            recorded = json.loads((workdir / STATUS_FILE).read_text())
            return cls(
                pid=int(recorded["pid"]), host=str(recorded["host"]), started_at=float(recorded["started_at"]),
                heartbeat_at=float(recorded["heartbeat_at"]), state=DaemonState(recorded["state"]),
                batch=recorded.get("batch"),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def running(self, now: float, host: str) -> bool:
        """On this host, whether its process is alive; from another host (a shared workdir),
        whether its heartbeat is recent."""
        if self.state == DaemonState.STOPPED:
            return False
        if self.host == host:
            return pid_alive(self.pid)
        return now - self.heartbeat_at < HEARTBEAT_TIMEOUT_S


def liveness(workdir: Path, now: float | None = None, host: str | None = None) -> dict[str, Any]:
    """The ``daemon`` object of ``retain status --json``. A daemon that is not running but
    never said it stopped (killed, crashed, out of memory) is ``dead``, not ``stopped``."""
    status = DaemonStatus.read(workdir)
    if status is None:
        return {"running": False}
    now = time.time() if now is None else now
    running = status.running(now, socket.gethostname() if host is None else host)
    if running:
        state = status.state
    else:
        state = DaemonState.STOPPED if status.state == DaemonState.STOPPED else DaemonState.DEAD
    return {
        "running": running,
        "pid": status.pid,
        "host": status.host,
        "state": state,
        "batch": status.batch if running else None,
        "heartbeat_age_seconds": round(now - status.heartbeat_at, 1),
    }
