"""One batch through steps 2–9: load, measure, select, adapt, gate, register, remember,
report. This is where ``strategies`` and ``registry`` meet."""

from __future__ import annotations

import errno
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from torch import nn

from retain.errors import RetainError
from retain.daemon.config import Config
from retain.daemon.loading import BatchRejected, DataSpec, LoadedBatch, load_batch
from retain.daemon.logs import fields
from retain.daemon.metrics import BatchOutcomeLabel, ModelMetrics
from retain.daemon.publish import publish, published_version
from retain.daemon.names import MAX_NAME_BYTES, fitted_name, unique_destination
from retain.daemon.outage import Outages, until_available
from retain.daemon.remote_inbox import fetch_batch, incoming_path, is_remote
from retain.daemon.versions import (
    ModelSpec,
    load_memory,
    load_meta_init,
    load_model,
    save_memory,
    save_meta_init,
    save_model,
    spec_of,
)
from retain.registry import (
    ArtifactError,
    ArtifactStore,
    Batch,
    BatchForgetting,
    BatchNotHeld,
    BatchState,
    ChoiceDetails,
    ModelVersion,
    NewVersion,
    Registry,
    Review,
    ShiftDetails,
    VersionDetails,
    VersionStatus,
    as_utc,
    atomic_copy,
    atomic_write,
)
from retain.strategies.job import MetaInit
from retain.strategies.kinds import Phase
from retain.strategies.measure import UnusableBatch, measure_batch, measure_unlabelled
from retain.strategies.models import head_module
from retain.strategies.phases import PhaseTimes
from retain.strategies.policy import Choice, ShiftHistoryEntry
from retain.strategies.replay import ReplayMemory
from retain.strategies.shift import ShiftReport
from retain.strategies.step import Candidate, NewBatch, StepResult, StepSettings, adapt_step
from retain.strategies.training import TrainingHooks, TrainingInterrupted, TrainingProgress

log = logging.getLogger("retain.pipeline")


class NoProductionVersion(RetainError):
    """The registry has no production model yet: run ``retain init``."""


@dataclass(frozen=True)
class BatchOutcome:
    batch_id: int
    state: BatchState
    version: int | None = None
    decision: str | None = None
    reason: str | None = None
    requeue: Path | None = None  # a file to record again: it holds new content
    phases: dict[str, float] = field(default_factory=dict)  # seconds per phase (PhaseTimes.rounded)


@dataclass(frozen=True)
class BatchJob:
    """A claimed batch with its loaded data and the production version it adapts."""

    batch: Batch
    path: Path
    loaded: LoadedBatch
    production: ModelVersion
    model: nn.Module
    memory: ReplayMemory
    spec: ModelSpec
    meta_init: MetaInit | None = None  # the lineage's Reptile initialisation, as production keeps it


def no_production(config: Config) -> str:
    """What to do about a model without a production version."""
    if len(config.model_names) > 1:
        return f"model {config.model_name!r} has no production version: run `retain init --model {config.model_name}`"
    return "no production version: run `retain init` first"


def data_spec(config: Config, spec: ModelSpec) -> DataSpec:
    """What a batch for ``spec`` may hold: its input shape, and labels up to ``model.max_classes``
    (classes past the head's width widen it)."""
    return DataSpec(
        input_shape=spec.input_shape,
        num_classes=max(spec.num_classes, config.model.max_classes),
        min_samples=config.data.min_samples,
        limits=config.data,
    )


def batch_seed(sha256: str) -> int:
    """A per-batch seed: reprocessing the same file makes the same choices."""
    return int(sha256[:8], 16)


def move_file(source: Path, directory: Path, batch_id: int, name: str) -> Path:
    """Move a batch file out of the inbox into ``directory``.

    A rename where both are on one file system. An inbox on another one (a mounted share, a
    separate volume) cannot be renamed across: the file is then copied in under a temporary
    name, fsynced, renamed into place and only then removed from the inbox, so a crash
    leaves it in the inbox (and the move is redone at the next start), never lost.
    """
    return move_to(source, unique_destination(directory, batch_id, name))


def move_to(source: Path, target: Path) -> Path:
    """``move_file`` to a path of the caller's choosing."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if not os.path.lexists(source):  # not exists(): that follows a link, and a dangling one would stay
        return target
    try:
        os.replace(source, target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        atomic_copy(source, target)
        source.unlink(missing_ok=True)
    return target


class Pipeline:
    """Processes one model's claimed batches (``config``, ``registry`` and ``metrics`` are
    that model's). Holds the production model between batches and reloads it whenever the
    ``production`` alias has moved (including from the CLI)."""

    def __init__(
        self,
        config: Config,
        registry: Registry,
        artifacts: ArtifactStore,
        metrics: ModelMetrics,
        owner: str,
        should_stop: Callable[[], bool] = lambda: False,
        on_progress: Callable[[Batch, TrainingProgress], None] | None = None,
        outages: Callable[[], tuple[Outages, threading.Event, Callable[[], None]]] | None = None,
    ) -> None:
        self.config = config
        # The service's outage tracker, stop flag and heartbeat: a registry that cannot be reached
        # mid-batch is waited for, the batch kept (its training is not lost). None: errors propagate.
        self.outages = outages
        self.registry = registry
        self.artifacts = artifacts
        self.metrics = metrics
        self.owner = owner
        self.should_stop = should_stop
        self.on_progress = on_progress
        self._loaded: tuple[int, nn.Module, ReplayMemory] | None = None
        self._meta_init: tuple[str, MetaInit] | None = None  # the last one read, by digest

    def _fields(self, **values):
        """A log line's fields, the model's name first."""
        return fields(model=self.config.model_name, **values)

    def production(self) -> tuple[ModelVersion, nn.Module, ReplayMemory]:
        version = self.registry.production()
        if version is None:
            raise NoProductionVersion(no_production(self.config))
        if self._loaded is None or self._loaded[0] != version.version:
            self._loaded = (version.version, load_model(version, self.artifacts), load_memory(version, self.artifacts))
            log.info("production model loaded", extra=self._fields(version=version.version))
            self.metrics.replay_samples.set(len(self._loaded[2]))
        self.refresh_metrics(version)
        self.sync_published(version)
        return version, self._loaded[1], self._loaded[2]

    def meta_init(self, production: ModelVersion) -> MetaInit | None:
        """``production``'s Reptile initialisation, read once per digest. One that cannot be read
        costs meta a fresh start, not the batch: it is logged and meta learns a new one."""
        digest = production.meta_init_sha256
        if digest is None:
            return None
        if self._meta_init is None or self._meta_init[0] != digest:
            try:
                self._meta_init = (digest, load_meta_init(production, self.artifacts))
            except ArtifactError as exc:
                log.warning("meta initialisation unreadable; meta will learn a new one",
                            extra=self._fields(version=production.version, reason=str(exc)))
                return None
        return self._meta_init[1]

    def sync_published(self, production: ModelVersion | None = None) -> None:
        """Publish production if ``publish.dir`` shows another version (a move made here, from
        the CLI or by another worker, or a publish that failed before). A failure is logged and
        retried at the next call: the batch it follows is done either way."""
        if self.config.publish_dir is None:
            return
        production = production or self.registry.production()
        if production is None or published_version(self.config) == production.version:
            return
        try:
            publish(self.config, production, self.artifacts)
        except Exception:  # noqa: BLE001 - disk full, an export refused: the next call tries again
            log.exception("publishing production failed; will retry",
                          extra=self._fields(version=production.version))

    def refresh_metrics(self, production: ModelVersion | None = None) -> None:
        """Gauges from the registry: catches promotions and rollbacks made from the CLI, and
        what other workers did (queue depth, the last batch finished)."""
        self.metrics.queue_depth.set(self.registry.queue_depth())
        self.metrics.awaiting_approval.set(self.registry.count_awaiting_approval())
        last = self.registry.last_finished_at()
        if last is not None:
            self.metrics.last_batch.set(as_utc(last).timestamp())
        aliases = self.registry.aliases()
        self.metrics.set_aliases(aliases)
        if production is None and "production" in aliases:
            production = self.registry.version(aliases["production"])
        if production is not None:
            self.metrics.production_forgetting.set(production.forgetting or 0.0)
            limit = production.version_details().forgetting_limit
            self.metrics.production_forgetting_limit.set(self.config.gate.max_forgetting if limit is None else limit)

    def check_unlabelled(self, path: Path) -> ShiftReport | None:
        """A file from the model's ``unlabelled/`` folder: its shift against production, as
        metrics and a report beside the file in ``checked/``; no training, no registry row.
        A file that cannot be read is moved there too, with the reason as its report."""
        production, model, memory = self.production()
        spec = spec_of(production)
        report: ShiftReport | None = None
        try:
            loaded = load_batch(path, self.data_spec(spec), require_labels=False)
            report = measure_unlabelled(model, spec.head, memory, loaded.x, spec.num_classes, self.config.shift,
                                        batch_seed(loaded.sha256))
            result = {"severity": report.severity, "mmd2": report.mmd2, "p_value": report.p_value,
                      "prediction_distance": report.label_distance, "n": report.n_batch,
                      "reasons": list(report.reasons)}
        except (BatchRejected, UnusableBatch) as exc:
            result = {"error": exc.reason if isinstance(exc, BatchRejected) else str(exc)}
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        folder = self.config.checked_dir / self.config.model_name
        target = move_to(path, folder / fitted_name(f"{stamp}-{path.name}", MAX_NAME_BYTES - 5))
        card = {"file": path.name, "model": production.model, "production_version": production.version, **result}
        atomic_write(target.with_name(target.name + ".json"), lambda handle: handle.write(json.dumps(card).encode()))
        if report is None:
            log.warning("unlabelled file rejected", extra=self._fields(file=str(path), reason=result["error"]))
            return None
        self.metrics.check_shift_score.set(report.mmd2)
        self.metrics.check_pvalue.set(report.p_value)
        self.metrics.check_prediction_distance.set(report.label_distance)
        self.metrics.check_timestamp.set_to_current_time()
        self.metrics.checks.labels(severity=report.severity).inc()
        log.info("unlabelled file checked", extra=self._fields(file=str(path), severity=report.severity,
                                                               mmd2=round(report.mmd2, 5),
                                                               p_value=round(report.p_value, 4),
                                                               prediction_distance=round(report.label_distance, 3)))
        return report

    def _finished(self, batch: Batch) -> None:
        self.metrics.last_batch.set_to_current_time()
        waited = datetime.now(UTC) - as_utc(batch.created_at)
        self.metrics.batch_latency.observe(max(0.0, waited.total_seconds()))

    def data_spec(self, spec: ModelSpec) -> DataSpec:
        return data_spec(self.config, spec)

    def process(self, batch: Batch) -> BatchOutcome:
        """Run one claimed batch to a final state. ``TrainingInterrupted`` propagates."""
        phases = PhaseTimes()
        outcome = self._process(batch, phases)
        for phase, seconds in phases.seconds.items():
            self.metrics.phase_duration.labels(phase=phase).inc(seconds)
        log.info("batch timed", extra=self._fields(batch=batch.id, seconds=round(phases.total(), 3),
                                                   **phases.rounded()))
        return replace(outcome, phases=phases.rounded())

    def _process(self, batch: Batch, phases: PhaseTimes) -> BatchOutcome:
        assert batch.id is not None
        path = Path(batch.path)
        incoming = self.config.incoming_dir
        with phases.timed(Phase.REGISTRY):
            registered = self.registry.batch_versions(batch.id)
        if registered:
            return self._finish_registered(batch, incoming_path(batch, incoming) if is_remote(batch) else path,
                                           registered)
        with phases.timed(Phase.LOAD):
            if is_remote(batch):  # ingested into the bucket from another host
                try:
                    path = fetch_batch(batch, self.artifacts, incoming, self.config.data.max_file_bytes)
                except BatchRejected as exc:
                    return self._reject(batch, None, exc.reason)
            production, model, memory = self.production()
            spec = spec_of(production)
            try:
                loaded = load_batch(path, self.data_spec(spec))
            except BatchRejected as exc:
                return self._reject(batch, path, exc.reason)
            except FileNotFoundError:
                return self._reject(batch, path, "file disappeared from the inbox before it was read")
            meta_init = self.meta_init(production)
        if loaded.sha256 != batch.sha256 and is_remote(batch):
            return self._reject(batch, path, f"the object in the bucket does not match the sha256 recorded when it "
                                             f"was ingested ({batch.sha256[:12]} recorded, {loaded.sha256[:12]} read)")
        if loaded.sha256 != batch.sha256:
            return self._changed_since_queued(batch, path, loaded.sha256)
        try:
            return self._adapt(BatchJob(batch, path, loaded, production, model, memory, spec, meta_init), phases)
        except UnusableBatch as exc:
            return self._reject(batch, path, str(exc))

    def _finish_registered(self, batch: Batch, path: Path, rows: list[ModelVersion]) -> BatchOutcome:
        """A retry of a batch whose versions were registered before something failed (the
        move, say): finish the move, register nothing new."""
        final = next((row for row in rows if row.status == VersionStatus.ACCEPTED), rows[-1])
        target = unique_destination(self.config.processed_dir, batch.id, batch.name)
        if self.registry.finish_batch(batch.id, BatchState.DONE, self.owner, path=str(target),
                                      version=final.version) is None:
            return self._not_held(batch)
        move_to(path, target)
        self._finished(batch)
        log.info("registered batch finished",
                 extra=self._fields(batch=batch.id, version=final.version, file=str(target)))
        return BatchOutcome(batch.id, BatchState.DONE, version=final.version, decision=final.status)

    def _changed_since_queued(self, batch: Batch, path: Path, digest: str) -> BatchOutcome:
        """The file was rewritten after it was recorded: the recorded content is gone, and
        what is there now is another batch (queued by the service), not this one."""
        reason = (f"{batch.name}: the file changed after it was queued (sha256 {batch.sha256[:12]} recorded, "
                  f"{digest[:12]} read); its new content is queued as a new batch")
        if self.registry.finish_batch(batch.id, BatchState.INVALID, self.owner, reason=reason) is None:
            return self._not_held(batch)
        self.metrics.batches.labels(outcome=BatchOutcomeLabel.INVALID).inc()
        log.warning("batch rejected", extra=self._fields(batch=batch.id, file=str(path), reason=reason))
        return BatchOutcome(batch.id, BatchState.INVALID, reason=reason, requeue=path)

    def _not_held(self, batch: Batch) -> BatchOutcome:
        """The batch stopped being this worker's while it worked (its lease ran out and another
        worker claimed it): that worker's outcome stands, this one's is dropped."""
        now = self.registry.batch(batch.id)
        log.warning("batch no longer held; outcome dropped",
                    extra=self._fields(batch=batch.id, state=now.state if now else None,
                                       owner=now.lease_owner if now else None))
        return BatchOutcome(batch.id, BatchState(now.state) if now else BatchState.PENDING, reason="not held")

    def _reject(self, batch: Batch, path: Path | None, reason: str) -> BatchOutcome:
        """``path`` None: nothing was fetched (a bucket object refused unread), it stays put."""
        reason = f"{batch.name}: {reason}"
        target = batch.path if path is None else str(unique_destination(self.config.rejected_dir, batch.id, batch.name))
        # The destination is recorded first: a crash before the move leaves the file in the inbox,
        # where the next scan finds it done and moves it there.
        if self.registry.finish_batch(batch.id, BatchState.INVALID, self.owner, path=target, reason=reason) is None:
            return self._not_held(batch)
        if path is not None:
            move_to(path, Path(target))
        self.metrics.batches.labels(outcome=BatchOutcomeLabel.INVALID).inc()
        self._finished(batch)
        log.warning("batch rejected", extra=self._fields(batch=batch.id, file=target, reason=reason))
        return BatchOutcome(batch.id, BatchState.INVALID, reason=reason)

    def measure(
        self, model: nn.Module, spec: ModelSpec, memory: ReplayMemory, loaded: LoadedBatch, seed: int,
        phases: PhaseTimes | None = None,
    ) -> ShiftReport:
        """Step 3: the batch against the replay memory in the production feature space."""
        assert loaded.y is not None
        return measure_batch(
            model, spec.head, memory, loaded.x, loaded.y, spec.num_classes, self.config.shift, seed, phases
        )

    def history(self) -> tuple[ShiftHistoryEntry, ...]:
        """The policy's window of earlier batches, one entry each; read from the last versions,
        not the whole lineage."""
        entries = []
        for version in self.registry.recent_shifts(self.config.policy.history_window):
            shift = version.version_details().shift
            entries.append(ShiftHistoryEntry(
                batch_id=version.batch_id, severity=version.severity, p_value=version.p_value or 1.0,
                novel_classes=shift.novel_classes if shift is not None else (),
            ))
        return tuple(entries)

    def _renew_lease(self, batch: Batch) -> None:
        """Between the phases that report no training progress (measuring, saving artifacts).
        A lost lease means another worker may have the batch; registering checks that it is
        still this worker's. An unreachable registry does not stop the work: the lease may
        outlast the outage."""
        try:
            renewed = self.registry.renew_lease(batch.id, self.owner, self.config.daemon.lease_seconds)
        except Exception as exc:  # noqa: BLE001 - outages are reported and ridden out; the rest re-raised
            if self.outages is None or not self.outages()[0].absorb(exc, f"renewing the lease of batch {batch.id}"):
                raise
            return
        if not renewed:
            log.warning("lease lost; another worker may be processing this batch", extra=self._fields(batch=batch.id))

    def _durably(self, call: Callable[[], Any], doing: str) -> Any:
        """``call()``, waiting out outages (the batch stays claimed); ``TrainingInterrupted``
        if the daemon is stopped meanwhile."""
        if self.outages is None:
            return call()
        outages, stop, alive = self.outages()
        result = until_available(lambda: (call(),), outages, doing, stop, alive)
        if result is None:
            raise TrainingInterrupted
        return result[0]

    def _hooks(self, batch: Batch) -> TrainingHooks:
        lease = self.config.daemon.lease_seconds
        last_renewal = time.monotonic()

        def on_progress(progress: TrainingProgress) -> None:
            nonlocal last_renewal
            if time.monotonic() - last_renewal > lease / 3:
                self._renew_lease(batch)
                last_renewal = time.monotonic()
            if self.on_progress is not None:
                self.on_progress(batch, progress)
            if progress.iteration == progress.iterations:
                log.debug("epoch done",
                          extra=self._fields(batch=batch.id, epoch=progress.epoch, epochs=progress.epochs))

        return TrainingHooks(on_progress=on_progress, should_stop=self.should_stop)

    def _log_choice(self, batch: Batch) -> Callable[[Choice], None]:
        def report(choice: Choice) -> None:
            log.info("strategy chosen", extra=self._fields(batch=batch.id, strategy=choice.strategy, rule=choice.rule))

        return report

    def _log_candidate(self, batch: Batch) -> Callable[[Candidate], None]:
        def report(candidate: Candidate) -> None:
            gate, outcome = candidate.gate, candidate.verdict
            strategy = candidate.choice.strategy
            self.metrics.training_duration.labels(strategy=strategy).observe(candidate.duration)
            self.metrics.training_steps.labels(strategy=strategy).inc(candidate.optimizer_steps)
            self.metrics.training_samples.labels(strategy=strategy).inc(candidate.samples_seen)
            self.metrics.candidates.labels(strategy=candidate.choice.strategy, decision=outcome.decision).inc()
            self.metrics.gate_findings.labels(finding=outcome.finding).inc()
            self.metrics.gate_forgetting_upper.set(outcome.forgetting_bounds[1])
            self.metrics.gate_forgetting_lower.set(outcome.forgetting_bounds[0])
            self.metrics.gate_audit_samples.set(outcome.audit_samples)
            self.metrics.gate_samples_to_resolve.set(outcome.samples_to_resolve)
            log.info(
                "candidate gated",
                extra=self._fields(batch=batch.id, strategy=candidate.choice.strategy, decision=outcome.decision,
                                   forgetting=round(gate.forgetting, 4),
                                   finding=outcome.finding,
                                   forgetting_lower=round(outcome.forgetting_bounds[0], 4),
                                   forgetting_upper=round(outcome.forgetting_bounds[1], 4),
                                   audit_samples=outcome.audit_samples,
                                   acc_new_candidate=round(gate.acc_new_candidate, 4),
                                   acc_new_production=round(gate.acc_new_production, 4),
                                   training_seconds=round(candidate.duration, 2),
                                   optimizer_steps=candidate.optimizer_steps, samples_seen=candidate.samples_seen,
                                   meta_start=candidate.meta_start),
            )

        return report

    def _adapt(self, job: BatchJob, phases: PhaseTimes) -> BatchOutcome:
        batch, loaded, spec = job.batch, job.loaded, job.spec
        seed = batch_seed(batch.sha256)
        assert loaded.y is not None
        report = self.measure(job.model, spec, job.memory, loaded, seed, phases)
        with phases.timed(Phase.REGISTRY):
            self._renew_lease(batch)
            history = self.history()
        self.metrics.shift_score.set(report.mmd2)
        self.metrics.shift_pvalue.set(report.p_value)
        log.info(
            "shift measured",
            extra=self._fields(
                batch=batch.id,
                severity=report.severity,
                mmd2=round(report.mmd2, 5),
                p_value=round(report.p_value, 4),
                label_distance=round(report.label_distance, 3),
                accuracy_drop=round(report.accuracy_drop, 3),
                novel_classes=list(report.novel_classes),
                probe_accuracy=None if report.probe_accuracy is None else round(report.probe_accuracy, 4),
            ),
        )
        config = self.config
        settings = StepSettings(
            policy=config.policy, thresholds=config.shift, training=config.training.settings(seed=seed),
            reptile=config.meta, gate=config.gate, replay_capacity=config.replay.capacity,
            audit_fraction=config.replay.audit_fraction, head=spec.head,
        )
        step = adapt_step(
            job.model, job.memory, NewBatch(loaded.x, loaded.y, source=batch.id, num_classes=spec.num_classes),
            history, settings, hooks=self._hooks(batch), report=report,
            on_choice=self._log_choice(batch), on_candidate=self._log_candidate(batch), meta_init=job.meta_init,
            phases=phases,
        )
        candidates, production = list(step.candidates), job.production
        if step.report.suspected_labels:
            self.metrics.suspected_noisy_labels.inc(len(step.report.suspected_labels))
            log.warning("suspected label noise", extra=self._fields(
                batch=batch.id, suspected_labels=len(step.report.suspected_labels), n_samples=len(loaded.y),
                reason=step.report.noise_reason))

        with phases.timed(Phase.ARTIFACTS):
            replay_sha256 = save_memory(step.memory, self.artifacts)
            news = [self._new_version(job, step, candidate, replay_sha256) for candidate in candidates]
        with phases.timed(Phase.REGISTRY):
            self._renew_lease(batch)  # uploads to a bucket can take a while
            accepted = [i for i, c in enumerate(candidates) if c.verdict.accepted]
            promote_index = accepted[0] if accepted and self.config.registry.auto_promote else None
            if accepted and promote_index is None:  # auto-promotion off: it waits for `retain approve`
                news[accepted[0]] = news[accepted[0]].model_copy(update={"review": Review.PENDING})
            target = unique_destination(self.config.processed_dir, batch.id, batch.name)
            try:
                rows, moved = self._durably(lambda: self.registry.register_versions(
                    news, promote_index=promote_index, actor=f"daemon:{self.owner}", owner=self.owner,
                    path=str(target), n_samples=len(loaded)), f"registering batch {batch.id}'s candidates")
            except BatchNotHeld:
                return self._not_held(batch)
            # Registered, its destination recorded: a crash from here on leaves the file in the
            # inbox, where the next scan moves it (benchmarks/chaos.py kills on this line).
            log.debug("batch file moving", extra=self._fields(batch=batch.id, file=str(job.path), to=str(target)))
            move_to(job.path, target)

        final = candidates[accepted[0]] if accepted else candidates[-1]
        final_row = rows[accepted[0]] if accepted else rows[-1]
        gate = final.gate
        self.metrics.batches.labels(outcome=final.verdict.decision).inc()
        self.metrics.forgetting.set(gate.forgetting)
        for name, old, new_acc in (
            ("production", gate.acc_old_production, gate.acc_new_production),
            ("candidate", gate.acc_old_candidate, gate.acc_new_candidate),
        ):
            self.metrics.old_accuracy.labels(role=name).set(old)
            self.metrics.new_accuracy.labels(role=name).set(new_acc)
        self.metrics.set_batch_forgetting({g.source: g.forgetting for g in gate.groups})
        self._finished(batch)
        if moved:
            self.refresh_metrics(final_row)
            self.sync_published(final_row)
        log.info(
            "candidate registered",
            extra=self._fields(
                batch=batch.id,
                version=final_row.version,
                parent=production.version,
                strategy=final.choice.strategy,
                decision=final.verdict.decision,
                candidates=len(candidates),
                forgetting=round(gate.forgetting, 4),
                promoted=moved,
            ),
        )
        if promote_index is not None and not moved:
            log.warning(
                "production moved during training; candidate not promoted",
                extra=self._fields(batch=batch.id, version=final_row.version),
            )
        return BatchOutcome(batch.id, BatchState.DONE, version=final_row.version, decision=final.verdict.decision)

    def _new_version(self, job: BatchJob, step: StepResult, candidate: Candidate, replay_sha256: str) -> NewVersion:
        gate, choice, report = candidate.gate, candidate.choice, step.report
        width = head_module(candidate.model, job.spec.head).out_features
        details = VersionDetails(
            shift=ShiftDetails(
                mmd2=report.mmd2, p_value=report.p_value, label_distance=report.label_distance,
                novel_classes=report.novel_classes, accuracy_reference=report.accuracy_reference,
                accuracy_batch=report.accuracy_batch, probe_accuracy=report.probe_accuracy, reasons=report.reasons,
                suspected_noisy_labels=len(report.suspected_labels),
            ),
            choice=ChoiceDetails(rule=choice.rule, hyperparameters=choice.hyperparameters,
                                 measurements=choice.measurements, fallback=choice.fallback),
            per_batch=tuple(BatchForgetting(batch=g.source, n=g.n, production=g.production, candidate=g.candidate,
                                            forgetting=g.forgetting) for g in gate.groups),
            forgetting_limit=candidate.verdict.forgetting_limit,
            forgetting_stderr=gate.forgetting_stderr,
            gate_finding=candidate.verdict.finding,
            forgetting_bounds=tuple(round(b, 6) for b in candidate.verdict.forgetting_bounds),
            gate_confidence=self.config.gate.confidence,
            audit_samples=candidate.verdict.audit_samples,
            samples_to_resolve=candidate.verdict.samples_to_resolve,
            memory_audit_samples=int(step.memory.audit.sum()),
            training_seconds=round(candidate.duration, 3),
            optimizer_steps=candidate.optimizer_steps,
            samples_seen=candidate.samples_seen,
            device=self.config.training.resolved_device(),
            meta_start=candidate.meta_start,
            n_train=len(step.train[1]),
            n_holdout=len(step.holdout[1]),
            is_fallback=candidate is not step.candidates[0],
        )
        return NewVersion(
            status=VersionStatus(candidate.verdict.decision),
            strategy=choice.strategy,
            model_spec=replace(job.spec, num_classes=width).to_dict(),
            artifact_sha256=save_model(candidate.model, self.artifacts),
            replay_sha256=replay_sha256,
            meta_init_sha256=(job.production.meta_init_sha256 if candidate.meta_init is None
                              else save_meta_init(candidate.meta_init, self.artifacts)),
            parent=job.production.version,
            batch_id=job.batch.id,
            severity=report.severity,
            shift_score=report.mmd2,
            p_value=report.p_value,
            acc_old_candidate=gate.acc_old_candidate,
            acc_old_production=gate.acc_old_production,
            acc_new_candidate=gate.acc_new_candidate,
            acc_new_production=gate.acc_new_production,
            forgetting=gate.forgetting,
            rationale=choice.rationale,
            decision_reasons=candidate.verdict.reasons,
            details=details,
        )
