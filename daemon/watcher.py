"""Watching the inbox: watchdog events and directory scans become due file paths.

Handlers run on watchdog's observer thread, so they only note paths; the service loop
collects them with ``due()``. A close-write or a rename into the inbox means the file is
complete. Otherwise (a bare create, a write without a close, a file found by a scan) a file
counts as complete once its size and modification time have stayed the same for
``settle_seconds``: it is looked at again when due, and waits again if it changed.

A file seen being written (created or modified, no close yet) that has settled but is not
whole (its writer paused longer than ``settle_seconds``) waits for more: a zip (``.npz``,
``.pt``) without its end-of-directory record, a parquet file without its footer, a CSV or
JSON-lines file that does not end its last line. It is looked at again as it changes, up to
``incomplete_wait_seconds`` after its last change; then it is handed over as it is, and the
loader says what is wrong with it. A close or a rename still means complete, and a file found
by a scan (no writer seen) is judged once settled, as before: a truncated file is rejected
at once.

Files in the rejected folder are watched too: a file rejected as truncated whose writer goes
on writing to it is noted again, and its new content becomes a new batch.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from retain.registry import atomic_copy

IGNORED_SUFFIXES = (".tmp", ".part")

Signature = tuple[int, int]  # size, mtime in nanoseconds


def is_candidate(path: Path) -> bool:
    """Dotfiles and partial-download names are never batches."""
    return not path.name.startswith(".") and not path.name.endswith(IGNORED_SUFFIXES)


def signature(path: Path) -> Signature | None:
    """Size and mtime of a regular file or symbolic link (not followed); ``None`` for
    anything else (directories, FIFOs, sockets, devices are never batches) or a vanished path."""
    try:
        info = path.lstat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    if not (stat.S_ISREG(info.st_mode) or stat.S_ISLNK(info.st_mode)):
        return None
    return info.st_size, info.st_mtime_ns


_ZIP_END = b"PK\x05\x06"  # the end-of-central-directory record: a zip's last structure
_ZIP_END_MAX = 22 + 0xFFFF  # that record and the longest comment after it
_PARQUET_MAGIC = b"PAR1"


def looks_whole(path: Path) -> bool:
    """Whether the file's format says it is complete: what a writer writes last is there.
    Types it knows nothing about count as whole (the loader judges them)."""
    suffix = path.suffix.lower()
    try:
        # Non-blocking and not through a link: a FIFO would block an open until a writer came.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                return True
            size = info.st_size
            if size == 0:
                return False
            if suffix in (".npz", ".pt"):
                start = max(0, size - _ZIP_END_MAX)
                handle.seek(start)
                tail = handle.read()
                at = tail.rfind(_ZIP_END)
                if at < 0 or len(tail) - at < 22:
                    return False
                # The record, then exactly the comment it declares, and nothing after.
                comment = int.from_bytes(tail[at + 20:at + 22], "little")
                return at + 22 + comment == len(tail)
            if suffix == ".parquet":
                head = handle.read(4)
                handle.seek(max(0, size - 4))
                return head == _PARQUET_MAGIC and handle.read(4) == _PARQUET_MAGIC
            if suffix in (".csv", ".jsonl"):
                handle.seek(size - 1)
                return handle.read(1) == b"\n"
    except OSError:
        return True  # a link, a vanished file: not for this check to judge
    return True


def _as_path(raw: str | bytes) -> Path:
    return Path(raw if isinstance(raw, str) else os.fsdecode(raw))


class InboxWatcher(FileSystemEventHandler):
    """Watches the inbox folders (one per model, and with several models the folder that holds
    theirs) and, optionally, the rejected folder."""

    def __init__(self, inboxes: Sequence[Path], settle_seconds: float = 1.0, rejected: Path | None = None,
                 incomplete_wait_seconds: float = 120.0) -> None:
        super().__init__()
        self.inboxes = tuple(dict.fromkeys(inbox.resolve() for inbox in inboxes))
        self.rejected = rejected.resolve() if rejected is not None else None
        self.settle_seconds = settle_seconds
        self.incomplete_wait_seconds = incomplete_wait_seconds
        # path -> (when it may be due, its signature then; None: complete, no check)
        self._notes: dict[Path, tuple[float, Signature | None]] = {}
        self._writing: set[Path] = set()  # seen created or modified, not yet closed
        self._changed = threading.Condition()
        self._observer: Observer | None = None

    # ------------------------------------------------------------ observer side

    def _watched(self, path: Path) -> bool:
        return (path.parent in self.inboxes or path.parent == self.rejected) and is_candidate(path)

    def _note(self, path: Path, complete: bool) -> None:
        if not self._watched(path):
            return
        with self._changed:
            (self._writing.discard if complete else self._writing.add)(path)
        if complete and path.parent in self.inboxes:
            note = (time.monotonic(), None)
        else:
            found = signature(path)
            note = (time.monotonic() + self._unsettled_for(found), found)
        with self._changed:
            self._notes[path] = note
            self._changed.notify_all()

    def on_closed(self, event: FileSystemEvent) -> None:
        if not event.is_directory:
            self._note(_as_path(event.src_path), complete=True)

    def on_moved(self, event: FileSystemEvent) -> None:
        path = _as_path(event.dest_path)
        if not event.is_directory and path.parent in self.inboxes:
            self._note(path, complete=True)

    def on_created(self, event: FileSystemEvent) -> None:
        path = _as_path(event.src_path)
        if not event.is_directory and path.parent in self.inboxes:
            self._note(path, complete=False)

    def on_modified(self, event: FileSystemEvent) -> None:
        # Still being written: it must settle again, unless a close already marked it complete.
        if event.is_directory:
            return
        path = _as_path(event.src_path)
        with self._changed:
            note = self._notes.get(path)
        if note is None or note[1] is not None:
            self._note(path, complete=False)

    # ------------------------------------------------------------- service side

    def scan(self) -> None:
        """Note every file in the inboxes: those that arrived while no one watched, and any
        whose events inotify dropped. Each waits until it has settled."""
        for path in sorted(path for inbox in self.inboxes for path in inbox.iterdir()):
            found = signature(path) if is_candidate(path) else None
            if found is None:
                continue
            with self._changed:
                if path not in self._notes:
                    self._notes[path] = (time.monotonic() + self._unsettled_for(found), found)
                    self._changed.notify_all()

    def _unsettled_for(self, found: Signature | None) -> float:
        """Seconds until a file unchanged since ``found`` has settled: a file last modified
        ``settle_seconds`` ago or more has settled already (a backlog found at start is not
        made to wait), one modified in the future by a skewed clock waits the full time."""
        if found is None:
            return self.settle_seconds
        age = time.time() - found[1] / 1e9
        return self.settle_seconds if age < 0 else max(0.0, self.settle_seconds - age)

    def due(self) -> list[Path]:
        """Paths whose files are complete, oldest note first; they are forgotten here. A file
        that changed since it was noted waits another ``settle_seconds``."""
        now = time.monotonic()
        with self._changed:
            ready = sorted((t, p, sig) for p, (t, sig) in self._notes.items() if t <= now)
        complete = []
        for _, path, noted in ready:
            current = signature(path) if noted is not None else None
            with self._changed:
                if self._notes.get(path, (None, None))[1] != noted:
                    continue  # noted again meanwhile
                if noted is not None and current is not None and current != noted:
                    self._notes[path] = (time.monotonic() + self.settle_seconds, current)
                    continue
                del self._notes[path]
            with self._changed:
                writing = path in self._writing
            if writing and not self._whole_or_abandoned(path):
                with self._changed:  # looked at again once it has settled after its next change
                    self._notes.setdefault(path, (time.monotonic() + self.settle_seconds, signature(path)))
                continue
            with self._changed:
                self._writing.discard(path)
            complete.append(path)
        return complete

    def _whole_or_abandoned(self, path: Path) -> bool:
        """A file that is not whole yet is waited for, until ``incomplete_wait_seconds`` after
        its last change."""
        found = signature(path)
        if found is None or path.is_symlink() or looks_whole(path):
            return True  # a link, a FIFO, a vanished file: not for this check to judge
        return time.time() - found[1] / 1e9 >= self.incomplete_wait_seconds

    def wait(self, timeout: float) -> None:
        """Sleep until a path may be due, or ``timeout`` seconds."""
        with self._changed:
            if self._notes:
                timeout = min(timeout, max(0.0, min(t for t, _ in self._notes.values()) - time.monotonic()))
            if timeout > 0:
                self._changed.wait(timeout)

    def pending(self) -> int:
        """Paths noted but not yet due."""
        with self._changed:
            return len(self._notes)

    def start(self) -> None:
        self._observer = Observer()
        for inbox in self.inboxes:
            self._observer.schedule(self, str(inbox), recursive=False)
        if self.rejected is not None:
            self.rejected.mkdir(parents=True, exist_ok=True)
            self._observer.schedule(self, str(self.rejected), recursive=False)
        self._observer.start()

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None


class NoInbox:
    """The watcher of a worker that watches no folder (``retain run --worker``): its batches
    come from the registry, ingested into the bucket elsewhere."""

    rejected: Path | None = None  # no rejected/ folder is watched either

    def __init__(self, stop: threading.Event) -> None:
        self._stop = stop

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def scan(self) -> None:
        pass

    def due(self) -> list[Path]:
        return []

    def pending(self) -> bool:
        return False

    def wait(self, timeout: float) -> None:
        self._stop.wait(timeout)


def ingest_file(source: Path, inbox: Path) -> Path:
    """Copy ``source`` into ``inbox`` under a dot-name, fsync, then rename into place (the
    watcher ignores dot-files, and sees the rename)."""
    target = inbox / source.name
    if target.exists():
        stem = f"{source.stem}-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
        target = inbox / f"{stem}{source.suffix}"
    atomic_copy(source, target)
    return target
