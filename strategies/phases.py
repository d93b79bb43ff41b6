"""Seconds per phase of one batch: the pipeline and the benchmarks time the same spans."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from retain.strategies.kinds import Phase


class PhaseTimes:
    """Wall seconds spent in each phase, added up over every time it is entered."""

    def __init__(self) -> None:
        self.seconds: dict[Phase, float] = {}

    @contextmanager
    def timed(self, phase: Phase) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - started

    def total(self) -> float:
        return sum(self.seconds.values())

    def rounded(self, digits: int = 3) -> dict[str, float]:
        """In ``Phase`` order, for a log line or JSON."""
        return {str(p): round(self.seconds[p], digits) for p in Phase if p in self.seconds}
