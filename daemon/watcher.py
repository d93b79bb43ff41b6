"""Watching the inbox: watchdog events and directory scans become due file paths.

Handlers run on watchdog's observer thread, so they only note paths; the service loop
collects them with ``due()``. A close-write or a rename into the inbox means the file is
complete. A bare create (a file moved in from another directory, or one still being
written) and scanned files count as complete once unchanged for ``settle_seconds``.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

IGNORED_SUFFIXES = (".tmp", ".part")


def is_candidate(path: Path) -> bool:
    """Dotfiles and partial-download names are never batches."""
    return not path.name.startswith(".") and not path.name.endswith(IGNORED_SUFFIXES)


class InboxWatcher(FileSystemEventHandler):
    def __init__(self, inbox: Path, settle_seconds: float = 1.0) -> None:
        super().__init__()
        self.inbox = inbox.resolve()
        self.settle_seconds = settle_seconds
        self._ready_at: dict[Path, float] = {}
        self._changed = threading.Condition()
        self._observer: Observer | None = None

    # ------------------------------------------------------------ observer side

    def _note(self, raw_path: str | bytes, delay: float) -> None:
        path = Path(raw_path if isinstance(raw_path, str) else raw_path.decode())
        if path.parent != self.inbox or not is_candidate(path):
            return
        with self._changed:
            self._ready_at[path] = time.monotonic() + delay
            self._changed.notify_all()

    def on_closed(self, event: FileSystemEvent) -> None:
        if not event.is_directory:
            self._note(event.src_path, 0.0)

    def on_moved(self, event: FileSystemEvent) -> None:
        if not event.is_directory:
            self._note(event.dest_path, 0.0)

    def on_created(self, event: FileSystemEvent) -> None:
        if not event.is_directory:
            self._note(event.src_path, self.settle_seconds)

    def on_modified(self, event: FileSystemEvent) -> None:
        # Still being written: push its settle deadline back, unless a close already came.
        if event.is_directory:
            return
        path = Path(event.src_path if isinstance(event.src_path, str) else event.src_path.decode())
        with self._changed:
            if path in self._ready_at and self._ready_at[path] > time.monotonic():
                self._ready_at[path] = time.monotonic() + self.settle_seconds

    # ------------------------------------------------------------- service side

    def scan(self) -> None:
        """Note every file in the inbox: those that arrived while no one watched, and any
        whose events inotify dropped. Files modified recently wait to settle."""
        now = time.time()
        for path in sorted(self.inbox.iterdir()):
            if not path.is_file() or not is_candidate(path):
                continue
            try:
                age = now - path.stat().st_mtime
            except FileNotFoundError:
                continue
            with self._changed:
                if path not in self._ready_at:
                    self._ready_at[path] = time.monotonic() + max(0.0, self.settle_seconds - age)
                    self._changed.notify_all()

    def due(self) -> list[Path]:
        """Paths whose files are complete, oldest note first; they are forgotten here."""
        now = time.monotonic()
        with self._changed:
            ready = sorted((t, p) for p, t in self._ready_at.items() if t <= now)
            for _, path in ready:
                del self._ready_at[path]
        return [path for _, path in ready]

    def wait(self, timeout: float) -> None:
        """Sleep until a path may be due, or ``timeout`` seconds."""
        with self._changed:
            if self._ready_at:
                timeout = min(timeout, max(0.0, min(self._ready_at.values()) - time.monotonic()))
            if timeout > 0:
                self._changed.wait(timeout)

    def pending(self) -> int:
        """Paths noted but not yet due."""
        with self._changed:
            return len(self._ready_at)

    def start(self) -> None:
        self._observer = Observer()
        self._observer.schedule(self, str(self.inbox), recursive=False)
        self._observer.start()

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None
