"""The daemon: watch the inbox, record files as batches, process them one at a time."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from retain.daemon.config import Config, ConfigError
from retain.daemon.endpoints import check_endpoints
from retain.daemon.loading import BatchRejected, file_sha256
from retain.daemon.logs import fields
from retain.daemon.status import STATUS_FILE, DaemonState, DaemonStatus, pid_alive
from retain.daemon.config import open_artifacts
from retain.daemon.metrics import BatchOutcomeLabel, ModelMetrics, ServiceMetrics
from retain.daemon.notify import Notifier, Watchdog, watchdog_interval
from retain.daemon.outage import OutageKind, Outages, backoff, outage_of, until_available
from retain.daemon.names import unique_destination
from retain.daemon.pipeline import BatchOutcome, Pipeline, move_file, move_to
from retain.daemon.watcher import InboxWatcher, NoInbox, is_candidate, signature
from retain.daemon.webhooks import WebhookSender
from retain.registry import (
    FINISHED,
    IN_FLIGHT,
    UNREAD_PREFIX,
    Batch,
    BatchState,
    Registry,
    stale_temp_files,
)
from retain.strategies.training import TrainingInterrupted, TrainingProgress, import_training_libraries

log = logging.getLogger("retain.daemon")

_STATUS_INTERVAL = 1.0  # the status file, at most this often between state changes
_IDLE_WAIT = 0.5
# A model's next batch waits for another worker to finish the one in flight: look again soon
# (a claim that finds nothing costs a millisecond) rather than leave a core idle.
_BLOCKED_WAIT = 0.05


def display_name(path: Path) -> str:
    """The file's name as text that any database and terminal takes: bytes that are not
    UTF-8 are shown as escapes."""
    return os.fsencode(path.name).decode("utf-8", "backslashreplace")


def ensure_workdir(config: Config) -> None:
    scoped = [config.for_model(name) for name in config.model_names]
    models = [folder for one in scoped for folder in (one.inbox, one.unlabelled_inbox)]
    for directory in (config.workdir, config.inbox_root, *models, config.processed_dir, config.rejected_dir,
                      config.artifacts_dir):
        directory.mkdir(parents=True, exist_ok=True)


@dataclass(frozen=True)
class Lineage:
    """One model as the service serves it: its config, registry view, metrics and pipeline."""

    name: str
    config: Config
    registry: Registry
    metrics: ModelMetrics
    pipeline: Pipeline


class Service:
    """The daemon's loop over the models it serves (``models``, default every model in the
    config): files from their inboxes become batches, and each claimed batch goes to its
    model's pipeline."""

    def __init__(
        self,
        config: Config,
        registry: Registry,
        metrics: ServiceMetrics | None = None,
        on_progress: Callable[[Batch, TrainingProgress], None] | None = None,
        notifier: Notifier | None = None,
        watch: bool = True,
        models: Sequence[str] | None = None,
    ) -> None:
        self.config = config
        self.registry = registry
        self.metrics = metrics or ServiceMetrics(config.metrics.recent_batches)
        self.notifier = notifier or Notifier(address="")
        self.last_progress = time.monotonic()
        self.host = socket.gethostname()
        self.owner = f"{self.host}:{os.getpid()}"
        self.stop_requested = threading.Event()
        self.artifacts = open_artifacts(config)
        # Which batches this worker can read: a worker reads the bucket's; a watching daemon its
        # inbox's, and the bucket's too when it has one.
        if not watch and self.artifacts.remote is None:
            raise ConfigError("a worker (retain run --worker) reads batches from the bucket: set artifacts.url")
        self.reads: bool | None = True if not watch else (None if self.artifacts.remote is not None else False)
        self.lineages = {name: self._lineage(config.for_model(name), on_progress)
                         for name in (models or config.model_names)}
        self._by_folder = {lineage.config.inbox.resolve(): lineage for lineage in self.lineages.values()}
        self._unlabelled = {lineage.config.unlabelled_inbox.resolve(): lineage for lineage in self.lineages.values()}
        # Files left directly in an inbox shared by several models belong to none: watched, to
        # be refused with the folders they belong in (by the daemon that serves them all).
        self.shared_inbox = config.inbox_root.resolve() if models is None and len(config.model_names) > 1 else None
        folders = [*self._by_folder, *self._unlabelled, *([self.shared_inbox] if self.shared_inbox else [])]
        self.watcher: InboxWatcher | NoInbox = (
            InboxWatcher(folders, config.daemon.settle_seconds, rejected=config.rejected_dir,
                         incomplete_wait_seconds=config.daemon.incomplete_wait_seconds) if watch
            else NoInbox(self.stop_requested)
        )
        self.outages = Outages(self._outage_changed)
        for kind in OutageKind:
            self.metrics.outage.labels(kind=kind).set(0)
        self._unreleased: set[int] = set()  # batches an outage interrupted, to give back when it ends
        self.status = DaemonStatus(
            pid=os.getpid(), host=self.host, started_at=time.time(), heartbeat_at=time.time(),
            state=DaemonState.STARTING,
        )
        self._status_written = 0.0

    def _lineage(self, config: Config, on_progress) -> Lineage:
        registry, metrics = self.registry.for_model(config.model_name), self.metrics.for_model(config.model_name)
        pipeline = Pipeline(config, registry, self.artifacts, metrics, owner=self.owner,
                            should_stop=self.stop_requested.is_set, on_progress=self._on_progress(on_progress),
                            outages=self._pipeline_outages)
        return Lineage(config.model_name, config, registry, metrics, pipeline)

    def _outage_changed(self, kind: OutageKind, down: bool) -> None:
        self.metrics.outage.labels(kind=kind).set(1 if down else 0)
        self.notifier.status(f"degraded: {kind.replace('_', ' ')}; waiting" if down else "recovered")
        if down:
            self.status.state = DaemonState.DEGRADED
        elif self.status.state == DaemonState.DEGRADED and not self.outages.down:
            self.status.state = DaemonState.IDLE

    def _pipeline_outages(self) -> tuple[Outages, threading.Event, Callable[[], None]]:
        """What a pipeline needs to wait out an outage: the tracker, the stop flag, and a
        heartbeat that keeps the watchdog fed while it waits (the daemon is alive, degraded)."""
        return self.outages, self.stop_requested, self._alive

    def _alive(self) -> None:
        self.last_progress = time.monotonic()

    def request_stop(self) -> None:
        """Safe to call from a signal handler: only sets a flag that the loop polls."""
        self.stop_requested.set()

    # ------------------------------------------------------------------ status

    def _write_status(self, state: DaemonState | None = None, batch: int | None = -1, force: bool = False) -> None:
        if state is not None:
            self.status.state = state
        if batch != -1:
            self.status.batch = batch
        now = time.time()
        if not force and state is None and now - self._status_written < _STATUS_INTERVAL:
            return
        if state is None:  # periodic: pick up alias moves made from the CLI
            try:
                for lineage in self.lineages.values():
                    lineage.pipeline.refresh_metrics()
                    lineage.pipeline.sync_published()
            except Exception as exc:  # noqa: BLE001 - called mid-training too: an outage must not end it
                if not self.outages.absorb(exc, "refreshing metrics"):
                    raise
        self.status.heartbeat_at = now
        self._status_written = now
        try:
            self.status.write(self.config.workdir)
        except OSError as exc:  # a full disk must not stop the daemon: the file is only a report
            kind = outage_of(exc)
            self.outages.report(kind or OutageKind.DISK_FULL, exc, "writing the status file")
            return
        if OutageKind.DISK_FULL in self.outages.down:
            self.outages.recovered(OutageKind.DISK_FULL)

    def _on_progress(self, outer):
        def report(batch: Batch, progress: TrainingProgress) -> None:
            self.last_progress = time.monotonic()
            self._write_status()
            if outer is not None:
                outer(batch, progress)

        return report

    # ------------------------------------------------------------------- files

    def register_file(self, path: Path) -> None:
        """Record a complete inbox file as a batch; tidy away duplicates and leftovers."""
        if not is_candidate(path) or signature(path) is None:
            return  # directories, FIFOs, sockets: never batches
        if path.parent == self.watcher.rejected:
            self._register_rewritten_reject(path)
            return
        if path.parent.resolve() in self._unlabelled:
            self._unlabelled[path.parent.resolve()].pipeline.check_unlabelled(path)
            return
        lineage = self._by_folder.get(path.parent.resolve())
        if lineage is None:
            if path.parent.resolve() == self.shared_inbox:
                folders = ", ".join(f"{self._shown(lin.config.inbox)}/" for lin in self.lineages.values())
                self._refuse_unread(path, f"this inbox is shared by {len(self.lineages)} models: put the file in "
                                          f"its model's folder ({folders})", None)
            return
        try:
            path.name.encode("utf-8")
        except UnicodeEncodeError:
            self._refuse_unread(path, f"file name is not valid UTF-8 ({os.fsencode(path.name)!r}); rename it",
                                lineage)
            return
        try:
            digest = file_sha256(path, self.config.data)
        except FileNotFoundError:
            return
        except BatchRejected as exc:  # a link, not a regular file, too large: refused unread
            self._refuse_unread(path, exc.reason, lineage)
            return
        except PermissionError:
            self._refuse_unread(path, "cannot be read: permission denied", lineage)
            return
        batch, created = lineage.registry.add_batch(digest, str(path), path.name)
        if created:
            log.info("batch queued",
                     extra=fields(model=lineage.name, batch=batch.id, file=str(path), sha256=digest[:12]))
            lineage.metrics.queue_depth.set(lineage.registry.queue_depth())
            return
        if Path(batch.path) == path and batch.state in (*IN_FLIGHT, BatchState.FAILED):
            return  # already known, still ours to process (or kept for inspection)
        recorded = Path(batch.path)
        if (batch.state in FINISHED and recorded.parent in (self.config.processed_dir, self.config.rejected_dir)
                and not (recorded.is_file() or recorded.is_symlink())):
            # Finished, its destination recorded, and a crash (or a failed move) came before the move.
            move_to(path, recorded)
            log.info("finished batch file moved", extra=fields(batch=batch.id, file=str(recorded)))
            return
        if Path(batch.path) == path:
            # Recorded by a retain before 0.3, which moved the file first: finished before a crash
            # that came before the move.
            directory = self.config.rejected_dir if batch.state == BatchState.INVALID else self.config.processed_dir
            target = move_file(path, directory, batch.id, batch.name)
            self.registry.move_batch(batch.id, str(target))
            log.info("finished batch file moved", extra=fields(batch=batch.id, file=str(target)))
            return
        target = move_file(path, self.config.processed_dir, batch.id, f"duplicate-{path.name}")
        log.info(
            "duplicate file skipped",
            extra=fields(batch=batch.id, file=str(path), moved_to=str(target), state=batch.state),
        )

    def _shown(self, folder: Path) -> str:
        """A folder as an operator knows it: relative to the workdir where it is inside."""
        try:
            return str(folder.relative_to(self.config.workdir))
        except ValueError:
            return str(folder)

    def _refuse_unread(self, path: Path, reason: str, lineage: Lineage | None) -> None:
        """Reject a file without reading it; recorded once even if the move must be retried.
        ``lineage`` None: the file belongs to no model."""
        name = display_name(path)
        shown = str(path.parent / name)
        reason = f"{name}: {reason}"
        registry = lineage.registry if lineage is not None else self.registry
        of_model = lineage is not None
        # Recorded before, but its move did not happen (a crash, or the move failed): that row.
        unmoved = [row for row in registry.refused_files_named(name, of_model) if not os.path.lexists(row.path)]
        if unmoved:
            move_to(path, Path(unmoved[0].path))
            return
        batch = registry.add_refused_file(
            shown, name, reason, of_model=of_model,
            destination=lambda batch_id: str(unique_destination(self.config.rejected_dir, batch_id, name)))
        move_to(path, Path(batch.path))
        if lineage is not None:
            lineage.metrics.batches.labels(outcome=BatchOutcomeLabel.INVALID).inc()
        log.warning("batch rejected", extra=fields(model=lineage.name if lineage else None, batch=batch.id, file=shown,
                                                   reason=reason))

    def _register_rewritten_reject(self, path: Path) -> None:
        """A rejected file that someone went on writing to: its new content is a new batch,
        queued where it lies (it moves to processed/ or rejected/ under the new number)."""
        old = self.registry.batch_at(str(path))
        if old is None or old.state != BatchState.INVALID or old.sha256.startswith(UNREAD_PREFIX):
            return
        lineage = self.lineages.get(old.model or "")
        if lineage is None:
            return  # another daemon's model
        try:
            digest = file_sha256(path, self.config.data)
        except (FileNotFoundError, BatchRejected):
            return
        if digest == old.sha256:
            return
        batch, created = lineage.registry.add_batch(digest, str(path), old.name)
        if created:
            self.registry.annotate_batch(
                old.id, f"{old.reason}; the file changed afterwards and is now batch {batch.id}")
            log.info("rejected file rewritten; queued again",
                     extra=fields(model=lineage.name, batch=batch.id, rejected_batch=old.id, file=str(path),
                                  sha256=digest[:12]))
            lineage.metrics.queue_depth.set(lineage.registry.queue_depth())

    def _recover_own_leases(self) -> None:
        """Batches a dead process on this host was processing: its attempt counts (a file that
        kills its worker must not stall the queue), so the batch is retried or, after its
        last attempt, failed."""
        for batch in self.registry.batches_in_state(BatchState.PROCESSING):
            if not batch.lease_owner:
                continue
            host, _, pid = batch.lease_owner.rpartition(":")
            if host == self.host and pid.isdigit() and not pid_alive(int(pid)):
                after = self.registry.requeue_dead(batch.id, batch.lease_owner, self.config.daemon.max_attempts)
                if after is None:
                    continue
                if after.state == BatchState.FAILED:
                    if batch.model in self.lineages:
                        self.lineages[batch.model].metrics.batches.labels(outcome=BatchOutcomeLabel.FAILED).inc()
                    log.error("batch failed", extra=fields(batch=batch.id, state=after.state, reason=after.reason))
                else:
                    log.warning("batch requeued after its worker died",
                                extra=fields(batch=batch.id, owner=batch.lease_owner, attempt=batch.attempts))

    def _sweep_temp_files(self) -> None:
        """Temporary files of writes that a killed daemon left behind (only the names this
        daemon writes, and only those older than this start)."""
        before = self.status.started_at
        swept = stale_temp_files(self.config.workdir, before, target=STATUS_FILE)
        for folder in (self.config.processed_dir, self.config.rejected_dir, self.config.incoming_dir):
            swept += stale_temp_files(folder, before, target="[0-9][0-9][0-9][0-9][0-9][0-9]-*")
        for path in swept:
            path.unlink(missing_ok=True)
        swept += self.artifacts.sweep_temp_files(before)
        if swept:
            log.info("stale temporary files removed", extra=fields(count=len(swept), files=[str(p) for p in swept]))

    # -------------------------------------------------------------------- loop

    def _initial_metrics(self) -> None:
        self.metrics.stall_threshold.set(self.config.daemon.stall_alert_seconds)
        for lineage in self.lineages.values():
            metrics, gate = lineage.metrics, lineage.config.gate
            metrics.gate_max_forgetting.set(gate.max_forgetting)
            metrics.gate_max_forgetting_new_classes.set(gate.max_forgetting_new_classes)
            # "No batch finished since": the model's last one in the registry, or this start.
            metrics.last_batch.set(time.time())
            lineage.pipeline.refresh_metrics()

    def process_one(self) -> BatchOutcome | None:
        batch = self.registry.claim_batch(
            self.owner, self.config.daemon.lease_seconds, self.config.daemon.max_attempts, in_bucket=self.reads,
            models=list(self.lineages),
        )
        if batch is None:
            return None
        lineage = self.lineages[batch.model]
        self._write_status(DaemonState.PROCESSING, batch.id, force=True)
        of_model = f" of {lineage.name}" if len(self.config.model_names) > 1 else ""
        self.notifier.status(f"processing batch {batch.id}{of_model} ({batch.name})")
        log.info("batch started",
                 extra=fields(model=lineage.name, batch=batch.id, file=batch.path, attempt=batch.attempts))
        try:
            outcome = lineage.pipeline.process(batch)
            if outcome.requeue is not None:
                self.register_file(outcome.requeue)
            return outcome
        except TrainingInterrupted:
            self._release(batch.id)
            log.info("batch interrupted; it will be retried", extra=fields(batch=batch.id))
            return BatchOutcome(batch.id, BatchState.PENDING, reason="interrupted")
        except Exception as exc:  # noqa: BLE001 - a failed batch must not stop the daemon
            if self.outages.absorb(exc, f"processing batch {batch.id}"):
                # The system's fault, not the batch's: given back, its try not counted.
                self._release(batch.id)
                raise  # the loop waits the outage out before the batch is claimed again
            final = batch.attempts >= self.config.daemon.max_attempts
            state = BatchState.FAILED if final else BatchState.PENDING
            reason = f"{type(exc).__name__}: {exc}"
            if self.registry.finish_batch(batch.id, state, self.owner, reason=reason) is None:
                # Its versions were registered before the error (a failed move, say), or another
                # worker holds it now: what is recorded stands.
                log.exception("error after the batch was finished; its state stands",
                              extra=fields(model=lineage.name, batch=batch.id, reason=reason))
                now = self.registry.batch(batch.id)
                return BatchOutcome(batch.id, BatchState(now.state) if now else state, reason=reason)
            if final:
                lineage.metrics.batches.labels(outcome=BatchOutcomeLabel.FAILED).inc()
            log.exception(
                "batch failed",
                extra=fields(model=lineage.name, batch=batch.id, attempt=batch.attempts, state=state, reason=reason),
            )
            return BatchOutcome(batch.id, state, reason=reason)
        finally:
            self.last_progress = time.monotonic()
            self._write_status(DaemonState.DEGRADED if self.outages.down else DaemonState.IDLE, None, force=True)
            if not self.outages.down:
                depths = self.registry.queue_depths()
                lineage.metrics.queue_depth.set(depths.get(lineage.name, 0))
                depth = sum(depths.get(name, 0) for name in self.lineages)
                self.notifier.status(f"idle, {depth} queued" if depth else "idle")

    def _record_due_files(self) -> None:
        """Each file the watcher says is complete, recorded as a batch. One that cannot be
        recorded now is noted again by the next rescan."""
        for path in self.watcher.due():
            try:
                self.register_file(path)
            except Exception as exc:  # noqa: BLE001 - the rescan retries it
                if not self.outages.absorb(exc, f"recording {path}"):
                    log.exception("could not record file; will retry", extra=fields(file=str(path)))

    def _release(self, batch_id: int) -> None:
        """Give a batch back to the queue, its try not counted; if the registry cannot be reached
        now, as soon as it can."""
        self._unreleased.add(batch_id)
        self._release_pending()

    def _release_pending(self) -> None:
        for batch_id in sorted(self._unreleased):
            try:
                self.registry.release_batch(batch_id, self.owner)
            except Exception as exc:  # noqa: BLE001 - outages are waited out; anything else is a bug, shown
                if not self.outages.absorb(exc, f"giving batch {batch_id} back"):
                    raise
                return
            self._unreleased.discard(batch_id)

    def run(self, once: bool = False) -> list[BatchOutcome]:
        """Serve until stopped (or, with ``once``, until nothing is pending)."""
        ensure_workdir(self.config)
        self._sweep_temp_files()
        self._write_status(DaemonState.STARTING, force=True)
        outcomes: list[BatchOutcome] = []
        watchdog: Watchdog | None = None
        sender: WebhookSender | None = None
        try:
            # An unreachable registry at start is waited out, not a crash (under systemd, a
            # restart loop): said to systemd as ready but degraded, so its start timeout does not
            # kill a daemon that is only waiting.
            def waiting() -> None:
                self.notifier.ready("degraded: waiting for the registry")

            for step in (self._recover_own_leases, *(lin.pipeline.production for lin in self.lineages.values())):
                # production(): fails fast without a production model
                until_available(step, self.outages, "starting", self.stop_requested, waiting)
            if self.stop_requested.is_set():
                return outcomes
            if not once:
                self.watcher.start()
            self.watcher.scan()
            import_training_libraries()
            self._initial_metrics()
            self._write_status(DaemonState.IDLE, force=True)
            folders = ", ".join(str(folder) for folder in self._by_folder)
            self.notifier.ready(f"watching {folders}" if isinstance(self.watcher, InboxWatcher)
                                else "a worker: batches from the registry")
            interval = watchdog_interval() if self.notifier.enabled else None
            if interval:
                watchdog = Watchdog(
                    self.notifier, interval, lambda: self.last_progress, self.config.daemon.stuck_seconds
                )
                watchdog.start()
            check_endpoints(self.config)
            if not once:  # without webhooks it only marks events dispatched, so none pile up for a later one
                sender = WebhookSender(self.registry, self.config.webhooks, self.outages)
                sender.start()
            log.info(
                "daemon ready",
                extra=fields(models=list(self.lineages), inbox=str(self.config.inbox), once=once, pid=os.getpid(),
                             watchdog_interval=interval, device=self.config.training.resolved_device()),
            )
            next_scan = time.monotonic() + self.config.daemon.rescan_seconds
            waited = 0  # loops in a row that an outage ended
            while not self.stop_requested.is_set():
                self.last_progress = time.monotonic()
                try:
                    self._release_pending()
                    self._record_due_files()
                    if self.stop_requested.is_set():
                        break
                    outcome = self.process_one()
                    if OutageKind.REGISTRY_UNREACHABLE in self.outages.down and not self._unreleased:
                        self.outages.recovered(OutageKind.REGISTRY_UNREACHABLE)  # the claim reached it
                    waited = 0
                    if outcome is not None:
                        outcomes.append(outcome)
                        continue
                    if once:
                        if not self.watcher.pending():
                            break
                        self.watcher.wait(_IDLE_WAIT)
                        continue
                    if time.monotonic() >= next_scan:
                        self.watcher.scan()
                        next_scan = time.monotonic() + self.config.daemon.rescan_seconds
                    self._write_status()
                    depths = self.registry.queue_depths()
                    queued = any(depths.get(name) for name in self.lineages)
                    self.watcher.wait(_BLOCKED_WAIT if queued else _IDLE_WAIT)
                except Exception as exc:  # noqa: BLE001 - outages are waited out; anything else re-raised
                    if not self.outages.absorb(exc, "serving"):
                        raise
                    waited += 1
                    self._write_status(DaemonState.DEGRADED, force=True)
                    self.last_progress = time.monotonic()  # alive: the watchdog keeps being fed
                    self.stop_requested.wait(backoff(waited))
        finally:
            if watchdog is not None:  # first: a ping after STOPPING=1 would tell systemd the daemon still runs
                watchdog.stop()
            self.notifier.stopping()
            if sender is not None:
                sender.stop()
            self._write_status(DaemonState.STOPPING, None, force=True)
            self.watcher.stop()
            self._write_status(DaemonState.STOPPED, None, force=True)
            self.notifier.close()
            log.info("daemon stopped", extra=fields(processed=len(outcomes)))
        return outcomes
