"""Outages of the system the daemon runs on: a full disk, an unreachable registry.

Neither is a batch's fault. The daemon stays up through them, says so once a minute (and as a
metric, and in systemd's status line), waits with backoff, and carries on when they end. A
batch interrupted by one is given back without its try counted.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from collections.abc import Callable
from enum import StrEnum

from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError

from retain.daemon.logs import fields

log = logging.getLogger("retain.daemon")

_SAY_EVERY_S = 60.0
_BACKOFF_MAX_S = 30.0


class OutageKind(StrEnum):
    DISK_FULL = "disk_full"
    REGISTRY_UNREACHABLE = "registry_unreachable"


def outage_of(exc: BaseException) -> OutageKind | None:
    """The outage ``exc`` (or an exception it was raised from) comes from; ``None`` when it is
    not one."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return OutageKind.DISK_FULL
        if isinstance(exc, (OperationalError, DisconnectionError)):
            # SQLite's file on a full disk: "database or disk is full" (SQLITE_FULL), or "disk I/O
            # error" when it cannot grow its write-ahead log or shared-memory file.
            said = str(getattr(exc, "orig", exc))
            full = "disk is full" in said or "disk I/O error" in said
            return OutageKind.DISK_FULL if full else OutageKind.REGISTRY_UNREACHABLE
        if isinstance(exc, DBAPIError) and exc.connection_invalidated:
            return OutageKind.REGISTRY_UNREACHABLE
        exc = exc.__cause__ or exc.__context__
    return None


class Outages:
    """What is down now. ``report`` says it at most once a minute per kind; ``recovered`` says
    it is over. ``on_change(kind, down)`` mirrors it (a metric, systemd's status line)."""

    def __init__(self, on_change: Callable[[OutageKind, bool], None] = lambda kind, down: None) -> None:
        self.on_change = on_change
        self._down: dict[OutageKind, tuple[float, float]] = {}  # kind -> (since, last said)
        self._lock = threading.Lock()

    @property
    def down(self) -> tuple[OutageKind, ...]:
        with self._lock:
            return tuple(self._down)

    def report(self, kind: OutageKind, exc: BaseException, doing: str) -> None:
        now = time.monotonic()
        with self._lock:
            first = kind not in self._down
            since, said = self._down.get(kind, (now, now - _SAY_EVERY_S))
            say = now - said >= _SAY_EVERY_S
            self._down[kind] = (since, now if say else said)
        if say:
            log.warning("system outage; waiting" if first else "system outage continues; waiting",
                        extra=fields(outage=kind, doing=doing, seconds=round(now - since, 1),
                                     reason=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"))
        if first:
            self.on_change(kind, True)

    def absorb(self, exc: BaseException, doing: str) -> bool:
        """Report ``exc`` if it comes from an outage and say so; ``False`` (nothing reported)
        when it does not, for the caller to re-raise or handle as its own error."""
        kind = outage_of(exc)
        if kind is None:
            return False
        self.report(kind, exc, doing)
        return True

    def recovered(self, kind: OutageKind | None = None) -> None:
        """``kind`` (every kind: None) is over."""
        with self._lock:
            ended = [k for k in self._down if kind is None or k == kind]
            spans = {k: time.monotonic() - self._down.pop(k)[0] for k in ended}
        for k, seconds in spans.items():
            log.info("system outage over", extra=fields(outage=k, seconds=round(seconds, 1)))
            self.on_change(k, False)


def backoff(attempt: int) -> float:
    """Seconds to wait before try ``attempt`` (1, 2, 4, … up to 30)."""
    return min(_BACKOFF_MAX_S, 2.0 ** max(0, attempt - 1))


def until_available(call: Callable[[], object], outages: Outages, doing: str, stop: threading.Event,
                    while_waiting: Callable[[], None] = lambda: None):
    """``call()``, retried through outages with backoff until it succeeds; ``None`` if ``stop``
    is set while waiting. Any other error propagates."""
    attempt = 0
    while True:
        try:
            result = call()
        except Exception as exc:  # noqa: BLE001 - only outages are waited out; the rest re-raised
            if not outages.absorb(exc, doing):
                raise
            attempt += 1
            while_waiting()
            if stop.wait(backoff(attempt)):
                return None
            continue
        if attempt:
            outages.recovered()
        return result
