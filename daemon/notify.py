"""The systemd notify protocol, and a watchdog that only pings while work progresses.

One datagram per message to the ``AF_UNIX`` socket named by ``$NOTIFY_SOCKET`` (a leading
``@`` means the abstract namespace). Outside systemd the variable is unset and every call is
a no-op. Errors are logged, not swallowed silently.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable

from retain.daemon.logs import fields

log = logging.getLogger("retain.notify")


class Notifier:
    def __init__(self, address: str | None = None) -> None:
        address = address if address is not None else os.environ.get("NOTIFY_SOCKET")
        self.address = ("\0" + address[1:]) if address and address.startswith("@") else address
        self._socket: socket.socket | None = None
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def send(self, *assignments: str) -> bool:
        if not self.address:
            return False
        message = "\n".join(assignments).encode()
        with self._lock:
            try:
                if self._socket is None:
                    self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._socket.sendto(message, self.address)
                return True
            except OSError as exc:
                log.warning("sd_notify failed", extra=fields(socket=self.address, error=str(exc)))
                return False

    def ready(self, status: str) -> bool:
        return self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={text}")

    def stopping(self) -> bool:
        return self.send("STOPPING=1", "STATUS=stopping")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def close(self) -> None:
        with self._lock:
            if self._socket is not None:
                self._socket.close()
                self._socket = None


def watchdog_interval() -> float | None:
    """Seconds between pings: half of ``$WATCHDOG_USEC``, if the watchdog is meant for us."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid.isdigit() and int(pid) != os.getpid()):
        return None
    try:
        return int(usec) / 1e6 / 2
    except ValueError:
        return None


class Watchdog(threading.Thread):
    """Pings ``WATCHDOG=1`` every ``interval`` seconds while ``last_progress()`` (a monotonic
    time) is under ``stuck_after`` seconds old; a hung pipeline stops the pings and systemd
    restarts the service."""

    def __init__(
        self, notifier: Notifier, interval: float, last_progress: Callable[[], float], stuck_after: float
    ) -> None:
        super().__init__(name="retain-watchdog", daemon=True)
        self.notifier = notifier
        self.interval = interval
        self.last_progress = last_progress
        self.stuck_after = stuck_after
        self._stopping = threading.Event()  # not `_stop`: that is a method of Thread that join() calls
        self._stuck = False

    def run(self) -> None:
        while not self._stopping.wait(self.interval):
            age = time.monotonic() - self.last_progress()
            if age <= self.stuck_after:
                if self._stuck:
                    log.info("pipeline progressing again; watchdog pings resumed")
                    self._stuck = False
                self.notifier.watchdog()
            elif not self._stuck:
                self._stuck = True
                log.error("pipeline stuck; watchdog pings withheld",
                          extra=fields(seconds_without_progress=round(age, 1)))

    def stop(self) -> None:
        """Stop pinging; once this returns no ping is in flight."""
        self._stopping.set()
        if self.is_alive():
            self.join()
