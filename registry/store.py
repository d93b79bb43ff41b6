"""The Registry API: batches, versions and aliases over one SQL database.

Every write is one short transaction. On SQLite, transactions begin with ``BEGIN IMMEDIATE``
so that version allocation and alias compare-and-swap never interleave; on PostgreSQL,
version allocation takes a transaction-scoped advisory lock and batch claims use
``FOR UPDATE SKIP LOCKED`` so several workers can share one queue.
"""

from __future__ import annotations

import copy
import json
import os
import re
import sqlite3
import time
import uuid
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import ConfigDict
from sqlalchemy import event, func, or_, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.engine import Engine
from sqlmodel import Session, create_engine, select

from retain.registry.details import VersionDetails
from retain.registry.errors import AliasConflict, BatchNotHeld, RegistryError, UnknownVersion
from retain.registry.migrations import upgrade
from retain.registry.outbox import batch_payload, emit, label_noise_payload, move_payload, version_payload
from retain.registry import outbox
from retain.registry.refs import ALIAS_PATTERN, VersionRef
from retain.registry.tables import (
    DEFAULT_MODEL,
    FINISHED,
    IN_FLIGHT,
    Alias,
    AliasAction,
    AliasEvent,
    Batch,
    BatchState,
    DeliveryState,
    EventKind,
    ModelVersion,
    OutboxEvent,
    Review,
    VersionFields,
    VersionStatus,
    WebhookDelivery,
    utcnow,
)

PRODUCTION = "production"
REMOTE_BATCH_PREFIX = "s3://"  # Batch.path of a file ingested into the bucket
UNREAD_PREFIX = "unread-"  # Batch.sha256 of a file refused before its content was read
_VERSION_LOCK_KEY = 0x72657461  # "reta": advisory lock id for version allocation
_CLAIM_LOCK_KEY = 0x72657463  # "retc": advisory lock id for batch claims


class NewVersion(VersionFields):
    """A candidate to register: the registry allocates its number. The JSON columns are held
    as what they mean; ``register_versions`` encodes them."""

    model_config = ConfigDict(frozen=True)

    model_spec: dict[str, Any]
    decision_reasons: tuple[str, ...] = ()
    details: VersionDetails = VersionDetails()

    def row(self, model: str, version: int) -> ModelVersion:
        return ModelVersion(
            model=model,
            version=version,
            **self.model_dump(include=set(VersionFields.model_fields)),
            decision_reasons=json.dumps(list(self.decision_reasons)),
            details=json.dumps(self.details.to_dict()),
            model_spec=json.dumps(self.model_spec),
        )


_SQLITE_BUSY_TIMEOUT_S = 30
_READ_ONLY = "retain_read_only"  # execution option: the transaction only reads


def _enable_wal(cursor: sqlite3.Cursor, timeout_s: float) -> None:
    """Switch the database to write-ahead logging, waiting up to ``timeout_s`` for other
    connections.

    While another connection holds the write lock, SQLite refuses the switch at once ("database
    is locked") instead of waiting as ``busy_timeout`` promises, so workers opening a new
    registry together would collide.
    """
    deadline = time.monotonic() + timeout_s
    pause = 0.005
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() >= deadline:
                raise
        time.sleep(pause)
        pause = min(2 * pause, 0.1)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite would defer it).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        _enable_wal(cursor, _SQLITE_BUSY_TIMEOUT_S)
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection) -> None:
        # A write takes the write lock at once (a deferred one could not upgrade its read lock
        # while another writer holds it); a read takes none, so readers (the CLI, other workers'
        # status and queue reads) never wait for a writer or hold one up.
        reading = connection.get_execution_options().get(_READ_ONLY, False)
        connection.exec_driver_sql("BEGIN" if reading else "BEGIN IMMEDIATE")


def _sqlite_file(url: str) -> str | None:
    """The file a SQLite URL names ("" for none named); ``None`` for an in-memory database or
    another database."""
    if not url.startswith("sqlite:///") or ":memory:" in url:
        return None
    return url.removeprefix("sqlite:///").partition("?")[0]


def _create_private(url: str) -> None:
    """A new SQLite registry file is made readable by its owner only (its WAL and shared-memory
    files take the same mode): it holds batch names, paths, metrics and webhook URLs."""
    path = _sqlite_file(url)
    if not path or os.path.exists(path):
        return
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass


def require_database(url: str) -> None:
    """Raise ``RegistryError`` for a SQLite registry that does not exist: opening it would
    create an empty one, and a reader would see no models instead of a mistake."""
    path = _sqlite_file(url)
    if path is not None and not Path(path).is_file():
        raise RegistryError(f"no registry at {path or '(no file named)'}: run `retain init` first")


class Registry:
    """Batches, model versions and aliases of one model's lineage (``model``; ``for_model``
    gives another's over the same connections). Safe to share between processes.

    Batch ids are global: the queue's methods that take a batch id (leases, finishing,
    requeueing) work whatever model the batch belongs to, and ``claim_batch`` chooses among
    several models.
    """

    def __init__(self, url: str, model: str = DEFAULT_MODEL) -> None:
        self.url = url
        self.model = model
        self.is_sqlite = url.startswith("sqlite")
        # The driver's timeout is SQLite's busy timeout: how long a connection waits for a lock.
        connect_args = {"timeout": _SQLITE_BUSY_TIMEOUT_S} if self.is_sqlite else {}
        if self.is_sqlite:
            _create_private(url)
        self.engine = create_engine(url, connect_args=connect_args, pool_pre_ping=not self.is_sqlite)
        if self.is_sqlite:
            _configure_sqlite(self.engine)
        self._reader = self.engine.execution_options(**{_READ_ONLY: True})
        try:
            self.schema_version = upgrade(self.engine)
        except Exception:
            self.engine.dispose()
            raise

    def close(self) -> None:
        """Close the connections (those of every ``for_model`` view: they share them)."""
        self.engine.dispose()

    def for_model(self, model: str) -> Registry:
        """The lineage of ``model`` in the same database, over the same connections."""
        view = copy.copy(self)
        view.model = model
        return view

    def models(self) -> list[str]:
        """Every model with a version or a batch in the registry, by name."""
        with self._reading() as session:
            named = set(session.exec(select(ModelVersion.model).distinct()))
            named |= set(session.exec(select(Batch.model).where(Batch.model.is_not(None)).distinct()))
        return sorted(named)

    @contextmanager
    def _transaction(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as session:
            with session.begin():
                yield session

    @contextmanager
    def _reading(self) -> Iterator[Session]:
        """A transaction that only reads: on SQLite it takes no write lock."""
        with Session(self._reader, expire_on_commit=False) as session:
            with session.begin():
                yield session

    # ----------------------------------------------------------------- batches

    def add_batch(self, sha256: str, path: str, name: str) -> tuple[Batch, bool]:
        """Record a file as a pending batch; ``(batch, False)`` if its content is known,
        including when another worker recorded it a moment before (workers sharing an inbox)."""
        try:
            with self._transaction() as session:
                existing = self._with_sha256(session, sha256)
                if existing is not None:
                    return existing, False
                batch = Batch(model=self.model, sha256=sha256, path=path, name=name)
                session.add(batch)
                session.flush()
                return batch, True
        except IntegrityError:  # the unique (model, sha256): the other worker's insert won
            with self._transaction() as session:
                found = self._with_sha256(session, sha256)
                if found is None:
                    raise
                return found, False

    def _with_sha256(self, session: Session, sha256: str) -> Batch | None:
        return session.exec(select(Batch).where(Batch.model == self.model, Batch.sha256 == sha256)).first()

    def batches_in_state(self, state: BatchState) -> list[Batch]:
        """The batches of every model in ``state``."""
        with self._reading() as session:
            return list(session.exec(select(Batch).where(Batch.state == state).order_by(Batch.id)))

    def add_refused_file(
        self, path: str, name: str, reason: str, of_model: bool = True,
        destination: Callable[[int], str] | None = None,
    ) -> Batch:
        """Record a file refused before it was read (too large, a link, a name that is not
        UTF-8) as a rejected batch. Its ``sha256`` is an ``unread-`` placeholder: the content
        was never hashed. ``destination(id)``: where the file is moved next, recorded here,
        before the move (``refused_files_named`` finds a row whose move did not happen, so a
        retry does not record the file twice). ``of_model=False``: a file that belongs to no
        model (left directly in an inbox shared by several)."""
        with self._transaction() as session:
            batch = Batch(model=self.model if of_model else None, sha256=UNREAD_PREFIX + uuid.uuid4().hex,
                          path=path, name=name, state=BatchState.INVALID, reason=reason)
            session.add(batch)
            session.flush()
            if destination is not None:
                batch.path = destination(batch.id)
                session.add(batch)
            emit(session, EventKind.BATCH_REJECTED, batch_payload(batch))
            return batch

    def refused_files_named(self, name: str, of_model: bool = True) -> list[Batch]:
        """The files named ``name`` refused unread (of this model, or of none), newest first."""
        owner = Batch.model == self.model if of_model else Batch.model.is_(None)
        query = (select(Batch).where(owner, Batch.name == name, Batch.sha256.startswith(UNREAD_PREFIX))
                 .order_by(Batch.id.desc()))
        with self._reading() as session:
            return list(session.exec(query))

    def batch_at(self, path: str) -> Batch | None:
        """The most recent batch recorded at ``path``."""
        with self._reading() as session:
            return session.exec(select(Batch).where(Batch.path == path).order_by(Batch.id.desc())).first()

    def claim_batch(
        self,
        owner: str,
        lease_seconds: float,
        max_attempts: int | None = None,
        in_bucket: bool | None = None,
        models: Collection[str] | None = None,
    ) -> Batch | None:
        """Take, for ``owner``, the oldest pending batch (or one whose lease ran out) of a model
        among ``models`` (default: this one) that has no batch in flight; ``None`` if there is
        none.

        One batch per model at a time, each model's in arrival order, models in parallel: a
        batch claimed beside another of its model would be trained from the production model
        that the other's candidate is about to replace (a sibling, never promoted). On
        PostgreSQL each model's check-and-claim holds that model's advisory lock (taken with
        ``pg_try_advisory_xact_lock``: a model another worker is claiming at this moment is
        skipped, not waited for); SQLite's ``BEGIN IMMEDIATE`` already makes claims one at a time.

        ``in_bucket`` limits the claim to the batches the worker can read: ``True`` those
        ingested into the bucket (``s3://`` paths), ``False`` those in a local inbox.

        The attempt is counted here, durably, before any work: a batch whose worker dies
        while processing it has used its try. A batch whose lease ran out after its last
        allowed try is marked ``failed`` instead of being claimed again.
        """
        models = sorted(set(models) if models is not None else {self.model})
        now = utcnow()
        expired = (Batch.state == BatchState.PROCESSING) & (Batch.lease_expires < now)
        live = (Batch.state == BatchState.PROCESSING) & (Batch.lease_expires >= now)
        in_flight = Batch.state.in_(IN_FLIGHT)  # the index's column: claims read only in-flight rows
        claimable = or_(Batch.state == BatchState.PENDING, expired)
        readable = Batch.model.in_(models)
        if in_bucket is not None:
            remote = Batch.path.startswith(REMOTE_BATCH_PREFIX)
            readable = readable & (remote if in_bucket else ~remote)
        with self._transaction() as session:
            if max_attempts is not None:
                spent = select(Batch).where(expired, Batch.attempts >= max_attempts, Batch.model.in_(models))
                if not self.is_sqlite:
                    spent = spent.with_for_update(skip_locked=True)
                for batch in session.exec(spent):
                    self._fail_dead(batch, max_attempts, now, "its lease expired")
                    session.add(batch)
                    emit(session, EventKind.BATCH_FAILED, batch_payload(batch))
                session.flush()
            # The oldest claimable batch of each model, oldest first. Aggregates, not ORDER BY id
            # LIMIT 1: that is read along the id index through every finished batch.
            waiting = (select(Batch.model).where(in_flight, claimable, readable)
                       .group_by(Batch.model).order_by(func.min(Batch.id)))
            for model in list(session.exec(waiting)):
                if not self.is_sqlite and not session.exec(
                    text("SELECT pg_try_advisory_xact_lock(:key, hashtext(:model))")
                    .bindparams(key=_CLAIM_LOCK_KEY, model=model)
                ).one()[0]:
                    continue
                if session.exec(select(Batch.id).where(live, Batch.model == model).limit(1)).first() is not None:
                    continue
                oldest = select(func.min(Batch.id)).where(in_flight, claimable, readable, Batch.model == model)
                batch_id = session.exec(oldest).one()
                if batch_id is None:  # claimed and finished by another worker meanwhile
                    continue
                batch = session.get(Batch, batch_id)
                batch.state = BatchState.PROCESSING
                batch.attempts += 1
                batch.lease_owner = owner
                batch.lease_expires = now + timedelta(seconds=lease_seconds)
                batch.updated_at = now
                session.add(batch)
                return batch
            return None

    @staticmethod
    def _fail_dead(batch: Batch, max_attempts: int, now: datetime, how: str) -> None:
        batch.state = BatchState.FAILED
        batch.reason = (
            f"worker died while processing (attempt {batch.attempts} of {max_attempts}): "
            f"{how} (worker {batch.lease_owner})"
        )
        batch.lease_owner, batch.lease_expires, batch.updated_at = None, None, now

    def requeue_dead(self, batch_id: int, owner: str, max_attempts: int) -> Batch | None:
        """A batch whose worker ``owner`` is known dead: back to the queue with its attempt
        counted, or ``failed`` if that was its last. ``None`` if ``owner`` no longer holds it."""
        now = utcnow()
        with self._transaction() as session:
            batch = session.get(Batch, batch_id)
            if batch is None or batch.state != BatchState.PROCESSING or batch.lease_owner != owner:
                return None
            if batch.attempts >= max_attempts:
                self._fail_dead(batch, max_attempts, now, "the process is gone")
                emit(session, EventKind.BATCH_FAILED, batch_payload(batch))
            else:
                batch.state, batch.lease_owner, batch.lease_expires = BatchState.PENDING, None, None
                batch.updated_at = now
            session.add(batch)
            return batch

    def renew_lease(self, batch_id: int, owner: str, lease_seconds: float) -> bool:
        now = utcnow()
        with self._transaction() as session:
            result = session.exec(
                update(Batch)
                .where(Batch.id == batch_id, Batch.lease_owner == owner, Batch.state == BatchState.PROCESSING)
                .values(lease_expires=now + timedelta(seconds=lease_seconds), updated_at=now)
            )
            return result.rowcount == 1

    def release_batch(self, batch_id: int, owner: str) -> None:
        """Give an interrupted batch back to the queue; the interrupted try does not count."""
        with self._transaction() as session:
            session.exec(
                update(Batch)
                .where(Batch.id == batch_id, Batch.lease_owner == owner, Batch.state == BatchState.PROCESSING)
                .values(
                    state=BatchState.PENDING,
                    attempts=Batch.attempts - 1,
                    lease_owner=None,
                    lease_expires=None,
                    updated_at=utcnow(),
                )
            )

    def finish_batch(
        self,
        batch_id: int,
        state: str,
        owner: str,
        path: str | None = None,
        reason: str | None = None,
        n_samples: int | None = None,
        version: int | None = None,
    ) -> Batch | None:
        """Set the final state (``done``/``rejected``/``failed``, or ``pending`` for a retry) of a
        batch that ``owner`` is processing: a compare-and-set on (state, owner). ``None``, and
        nothing changed, when the batch is no longer ``owner``'s: finished already (its versions
        registered before an error), or claimed by another worker after this one's lease ran out."""
        with self._transaction() as session:
            batch = self._held(session, batch_id, owner)
            if batch is None:
                return None
            batch.state = state
            batch.reason = reason
            if path is not None:
                batch.path = path
            if n_samples is not None:
                batch.n_samples = n_samples
            if version is not None:
                batch.version = version
            batch.lease_owner = None
            batch.lease_expires = None
            batch.updated_at = utcnow()
            session.add(batch)
            if state in (BatchState.INVALID, BatchState.FAILED):
                kind = EventKind.BATCH_REJECTED if state == BatchState.INVALID else EventKind.BATCH_FAILED
                emit(session, kind, batch_payload(batch))
            return batch

    @staticmethod
    def _held(session: Session, batch_id: int, owner: str) -> Batch | None:
        """The batch, locked, if ``owner`` is processing it; ``RegistryError`` if it does not exist."""
        query = select(Batch).where(Batch.id == batch_id).with_for_update()
        batch = session.exec(query).first()
        if batch is None:
            raise RegistryError(f"batch {batch_id} does not exist")
        if batch.state != BatchState.PROCESSING or batch.lease_owner != owner:
            return None
        return batch

    def annotate_batch(self, batch_id: int, reason: str) -> None:
        """Replace a finished batch's reason (its state stays)."""
        with self._transaction() as session:
            session.exec(update(Batch).where(Batch.id == batch_id).values(reason=reason, updated_at=utcnow()))

    def move_batch(self, batch_id: int, path: str, n_samples: int | None = None) -> None:
        values: dict[str, Any] = {"path": path, "updated_at": utcnow()}
        if n_samples is not None:
            values["n_samples"] = n_samples
        with self._transaction() as session:
            session.exec(update(Batch).where(Batch.id == batch_id).values(**values))

    def batch(self, batch_id: int) -> Batch | None:
        with self._reading() as session:
            return session.get(Batch, batch_id)

    def batch_by_sha256(self, sha256: str) -> Batch | None:
        with self._reading() as session:
            return self._with_sha256(session, sha256)

    def batches(self, limit: int | None = None, every_model: bool = False) -> list[Batch]:
        """The model's batches in arrival order (``every_model``: all batches, those that
        belong to no model too); with ``limit``, the last ``limit`` of them."""
        query = select(Batch) if every_model else select(Batch).where(Batch.model == self.model)
        return self._last(query, Batch.id, limit)

    def count_batches(self, every_model: bool = False) -> int:
        return self._count(Batch, None if every_model else Batch.model == self.model)

    def queue_depth(self) -> int:
        return self.queue_depths().get(self.model, 0)

    def queue_depths(self) -> dict[str, int]:
        """Batches pending or in progress, per model that has any."""
        query = select(Batch.model, func.count()).where(Batch.state.in_(IN_FLIGHT)).group_by(Batch.model)
        with self._reading() as session:
            return {model: n for model, n in session.exec(query) if model is not None}

    # ---------------------------------------------------------------- versions

    def register_version(
        self, new: NewVersion, promote: bool = False, actor: str = "daemon"
    ) -> tuple[ModelVersion, bool]:
        """Register one version; see ``register_versions``."""
        rows, moved = self.register_versions([new], promote_index=0 if promote else None, actor=actor)
        return rows[0], moved

    def register_versions(
        self, news: list[NewVersion], promote_index: int | None = None, actor: str = "daemon",
        owner: str | None = None, path: str | None = None, n_samples: int | None = None,
    ) -> tuple[list[ModelVersion], bool]:
        """Insert versions (numbers allocated here, in order) and, in the same transaction,
        mark their batch done and, if asked, move ``production`` from the parent of
        ``news[promote_index]`` to it. All candidates of one batch land together or not at all.

        Returns the rows and whether ``production`` moved: it does not when someone moved the
        alias away from the parent while the candidates were being trained. Idempotent per
        batch: if the batch already has versions (a retry after a crash or an error that came
        after registering), those are returned and nothing new is written.

        ``owner``: the batch must still be that worker's (``BatchNotHeld`` otherwise: another
        worker claimed it after this one's lease ran out, and registers its own candidates).
        ``path``: where the batch's file goes next, recorded with its state, before it moves:
        a crash between the two leaves the registry naming the destination, and the file found
        in the inbox again is moved there.
        """
        with self._transaction() as session:
            self._lock_version_numbers(session)
            batch_id = news[0].batch_id if news else None
            if batch_id is not None:
                existing = self._batch_versions(session, batch_id)
                if existing:
                    return existing, False
            latest = self._latest_number(session)
            rows = [new.row(self.model, latest + offset) for offset, new in enumerate(news, start=1)]
            session.add_all(rows)
            session.flush()
            final = rows[promote_index] if promote_index is not None else rows[-1]
            if final.batch_id is not None:
                batch = session.get(Batch, final.batch_id)
                if batch is None:
                    raise RegistryError(f"batch {final.batch_id} does not exist")
                if owner is not None and (batch.state != BatchState.PROCESSING or batch.lease_owner != owner):
                    raise BatchNotHeld(f"batch {batch.id} is {batch.state}"
                                       + (f", held by {batch.lease_owner}" if batch.lease_owner else "")
                                       + f", no longer {owner}'s: its candidates are not registered")
                batch.state, batch.version, batch.reason = BatchState.DONE, final.version, None
                if path is not None:
                    batch.path = path
                if n_samples is not None:
                    batch.n_samples = n_samples
                batch.lease_owner, batch.lease_expires, batch.updated_at = None, None, utcnow()
                session.add(batch)
            for row in rows:
                accepted = row.status == VersionStatus.ACCEPTED
                emit(session, EventKind.VERSION_REGISTERED if accepted else EventKind.VERSION_REJECTED,
                     version_payload(row))
            shift = news[0].details.shift if news else None
            if shift is not None and shift.suspected_noisy_labels:
                emit(session, EventKind.BATCH_LABEL_NOISE, label_noise_payload(rows, shift))
            moved = False
            if promote_index is not None:
                current = self._alias_row(session, PRODUCTION)
                if current is None:
                    move = self._create_alias(session, PRODUCTION, final.version, actor, "initial version")
                    moved = True
                elif current.version == final.parent:
                    move = self._move_alias(session, PRODUCTION, final.parent, final.version, actor,
                                            AliasAction.AUTO_PROMOTE, "accepted by the forgetting gate")
                    moved = True
                if moved:
                    emit(session, EventKind.VERSION_PROMOTED, move_payload(move, final))
            return rows, moved

    def _mine(self, table):
        """The rows of this model's lineage."""
        return table.model == self.model

    def _version_row(self, session: Session, number: int) -> ModelVersion | None:
        query = select(ModelVersion).where(self._mine(ModelVersion), ModelVersion.version == number)
        return session.exec(query).first()

    def _alias_row(self, session: Session, name: str) -> Alias | None:
        return session.get(Alias, (self.model, name))

    def version(self, number: int) -> ModelVersion:
        with self._reading() as session:
            row = self._version_row(session, number)
            if row is None:
                raise UnknownVersion(number, self.model)
            return row

    @staticmethod
    def _batch_versions(session: Session, batch_id: int) -> list[ModelVersion]:
        query = select(ModelVersion).where(ModelVersion.batch_id == batch_id).order_by(ModelVersion.version)
        return list(session.exec(query))

    def number_of(self, ref: VersionRef) -> int:
        """The version ``ref`` names in this model's lineage (its ``model`` is the caller's to
        apply, with ``for_model``)."""
        if ref.number is not None:
            return self.version(ref.number).version
        number = self.alias(ref.alias)
        if number is None:
            raise RegistryError(f"model {self.model!r} has no alias {ref.alias!r}")
        return number

    def batch_versions(self, batch_id: int) -> list[ModelVersion]:
        """The versions registered from one batch (a first candidate and maybe its fallback)."""
        with self._reading() as session:
            return self._batch_versions(session, batch_id)

    def versions(self, limit: int | None = None) -> list[ModelVersion]:
        """Every version in order; with ``limit``, the last ``limit`` of them."""
        return self._last(select(ModelVersion).where(self._mine(ModelVersion)), ModelVersion.version, limit)

    def versions_numbered(self, numbers: set[int]) -> list[ModelVersion]:
        """The versions with these numbers (those that exist)."""
        if not numbers:
            return []
        with self._reading() as session:
            return list(session.exec(select(ModelVersion).where(
                self._mine(ModelVersion), ModelVersion.version.in_(sorted(numbers)))))

    def count_versions(self) -> int:
        return self._count(ModelVersion, self._mine(ModelVersion))

    def recent_shifts(self, window: int) -> list[ModelVersion]:
        """The last version of each of the last ``window`` batches that had their shift
        measured, oldest first: what the policy's history needs, read from an index however
        long the lineage (a batch has at most two versions, its first pick and a fallback)."""
        if window <= 0:
            return []
        query = (select(ModelVersion)
                 .where(self._mine(ModelVersion), ModelVersion.batch_id.is_not(None),
                        ModelVersion.severity.is_not(None))
                 .order_by(ModelVersion.version.desc()).limit(2 * window))
        with self._reading() as session:
            by_batch: dict[int, ModelVersion] = {}
            for row in session.exec(query):
                if row.batch_id not in by_batch and len(by_batch) < window:
                    by_batch[row.batch_id] = row
        return sorted(by_batch.values(), key=lambda row: row.version)

    def lineage(self, number: int) -> list[int]:
        """``number`` and its ancestors, newest first, in one recursive query."""
        chain = text(
            "WITH RECURSIVE chain(version, parent, depth) AS ("
            " SELECT version, parent, 0 FROM model_version WHERE model = :model AND version = :number"
            " UNION ALL"
            " SELECT v.version, v.parent, c.depth + 1 FROM model_version v JOIN chain c"
            " ON v.model = :model AND v.version = c.parent"
            ") SELECT version FROM chain ORDER BY depth"
        ).bindparams(number=number, model=self.model)
        with self._reading() as session:
            found = [row[0] for row in session.exec(chain)]
        if not found:
            raise UnknownVersion(number, self.model)
        return found

    def _last(self, query, order, limit: int | None) -> list:
        with self._reading() as session:
            if limit is None:
                return list(session.exec(query.order_by(order)))
            return list(reversed(list(session.exec(query.order_by(order.desc()).limit(limit)))))

    def _count(self, table, where=None) -> int:
        query = select(func.count()).select_from(table)
        with self._reading() as session:
            return session.exec(query if where is None else query.where(where)).one()

    def alias(self, name: str = PRODUCTION) -> int | None:
        with self._reading() as session:
            row = self._alias_row(session, name)
            return row.version if row else None

    def aliases(self) -> dict[str, int]:
        with self._reading() as session:
            return {row.name: row.version for row in session.exec(select(Alias).where(self._mine(Alias)))}

    def last_finished_at(self) -> datetime | None:
        """When the model's latest finished batch finished. The latest by arrival: a model's
        batches finish in arrival order, and this reads back from the newest instead of
        scanning every finished batch (the daemon asks every few seconds)."""
        query = (select(Batch.updated_at).where(self._mine(Batch), Batch.state.in_(FINISHED))
                 .order_by(Batch.id.desc()).limit(1))
        with self._reading() as session:
            return session.exec(query).first()

    def production(self) -> ModelVersion | None:
        number = self.alias(PRODUCTION)
        return None if number is None else self.version(number)

    def history(self, alias: str | None = None, limit: int | None = None) -> list[AliasEvent]:
        """Alias moves in order; with ``limit``, the last ``limit`` of them."""
        query = select(AliasEvent).where(self._mine(AliasEvent))
        if alias is not None:
            query = query.where(AliasEvent.alias == alias)
        return self._last(query, AliasEvent.id, limit)

    def count_events(self) -> int:
        return self._count(AliasEvent, self._mine(AliasEvent))

    def promote(self, number: int, actor: str, reason: str = "", force: bool = False) -> AliasEvent:
        """Move ``production`` to ``number``; rejected versions need ``force``."""
        with self._transaction() as session:
            target = self._version_row(session, number)
            if target is None:
                raise UnknownVersion(number, self.model)
            if target.status != VersionStatus.ACCEPTED and not force:
                raise RegistryError(
                    f"version {number} of model {self.model!r} was {target.status} by the forgetting gate; "
                    "use --force to promote it anyway"
                )
            if target.review == Review.PENDING:  # promoting an awaiting candidate approves it
                target.review, target.review_note = Review.APPROVED, self._note("promoted", actor, reason)
                session.add(target)
            current = self._alias_row(session, PRODUCTION)
            if current is None:
                move = self._create_alias(session, PRODUCTION, number, actor, reason)
            elif current.version == number:
                raise RegistryError(f"version {number} is already {self.model!r}'s production")
            else:
                move = self._move_alias(session, PRODUCTION, current.version, number, actor, AliasAction.PROMOTE,
                                        reason)
            emit(session, EventKind.VERSION_PROMOTED, move_payload(move, target))
            return move

    def awaiting_approval(self) -> list[ModelVersion]:
        """Accepted candidates waiting for ``approve`` or ``reject``, oldest first."""
        query = (select(ModelVersion).where(self._mine(ModelVersion), ModelVersion.review == Review.PENDING)
                 .order_by(ModelVersion.version))
        with self._reading() as session:
            return list(session.exec(query))

    def count_awaiting_approval(self) -> int:
        return self._count(ModelVersion, self._mine(ModelVersion) & (ModelVersion.review == Review.PENDING))

    def _pending(self, session: Session, number: int) -> ModelVersion:
        row = self._version_row(session, number)
        if row is None:
            raise UnknownVersion(number, self.model)
        if row.review != Review.PENDING:
            state = f"was {row.review}" if row.review else "was never waiting (registered with auto-promotion on)"
            raise RegistryError(f"version {number} of model {self.model!r} is not awaiting approval: it {state}")
        return row

    @staticmethod
    def _note(action: str, actor: str, reason: str) -> str:
        return f"{action} by {actor} at {utcnow().isoformat(timespec='seconds')}" + (f": {reason}" if reason else "")

    def approve(self, number: int, actor: str, reason: str = "") -> AliasEvent:
        """Make an awaiting candidate production, if production is still the version it was
        trained from (otherwise promoting it would drop what the newer production learned)."""
        with self._transaction() as session:
            row = self._pending(session, number)
            current = self._alias_row(session, PRODUCTION)
            if current is None or current.version != row.parent:
                raise RegistryError(
                    f"version {number} was trained from version {row.parent}, but production is now "
                    f"{current.version if current else 'unset'}: approving it would drop what came between; "
                    "reject it (or move production to it with `retain promote`)")
            row.review, row.review_note = Review.APPROVED, self._note("approved", actor, reason)
            session.add(row)
            move = self._move_alias(session, PRODUCTION, current.version, number, actor, AliasAction.APPROVE, reason)
            emit(session, EventKind.VERSION_PROMOTED, move_payload(move, row))
            return move

    def decline(self, number: int, actor: str, reason: str) -> ModelVersion:
        """Close an awaiting candidate without promoting it."""
        with self._transaction() as session:
            row = self._pending(session, number)
            row.review, row.review_note = Review.DECLINED, self._note("rejected", actor, reason)
            session.add(row)
            return row

    def set_alias(self, name: str, number: int, actor: str, reason: str = "") -> AliasEvent:
        """Point an alias other than ``production`` (``challenger``, ``staging``…) at a version."""
        self._not_production(name)
        with self._transaction() as session:
            if self._version_row(session, number) is None:
                raise UnknownVersion(number, self.model)
            current = self._alias_row(session, name)
            if current is None:
                event = self._create_alias(session, name, number, actor, reason)
                event.action = AliasAction.SET
                session.add(event)
                return event
            return self._move_alias(session, name, current.version, number, actor, AliasAction.SET, reason)

    def remove_alias(self, name: str, actor: str, reason: str = "") -> AliasEvent:
        """Delete an alias other than ``production``; the removal is logged with the version it held."""
        self._not_production(name)
        with self._transaction() as session:
            current = self._alias_row(session, name)
            if current is None:
                raise RegistryError(f"model {self.model!r} has no alias {name!r}")
            session.delete(current)
            event = AliasEvent(model=self.model, alias=name, action=AliasAction.REMOVE, from_version=current.version,
                               to_version=current.version, actor=actor, reason=reason)
            session.add(event)
            session.flush()
            return event

    @staticmethod
    def _not_production(name: str) -> None:
        if name == PRODUCTION:
            raise RegistryError("production moves with promote, approve and rollback, which keep its history")
        if not re.match(ALIAS_PATTERN, name):
            raise RegistryError(f"{name!r} is not an alias name: a letter, then letters, digits, '_', '.' or '-'")

    def rollback(self, actor: str, reason: str = "", to: int | None = None) -> AliasEvent:
        """Move ``production`` back to the version it held before the current one.

        The alias history is read as a stack: promotions push, rollbacks pop. Rolling back
        twice goes two steps back, not back and forth. ``to`` pops down to that version. Each
        move points at the one below it, so a rollback reads a frame per step it goes back,
        not the whole history.
        """
        with self._transaction() as session:
            current, frame = self._rollback_frame(session, to)
            move = self._move_alias(session, PRODUCTION, current.version, frame.to_version, actor,
                                    AliasAction.ROLLBACK, reason, below=frame.below_event)
            target = self._version_row(session, move.to_version)
            emit(session, EventKind.VERSION_ROLLED_BACK, move_payload(move, target))
            return move

    def rollback_target(self, to: int | None = None) -> int:
        """The version ``rollback(to=to)`` would move production to (``RegistryError`` if none)."""
        with self._reading() as session:
            return self._rollback_frame(session, to)[1].to_version

    def _rollback_frame(self, session: Session, to: int | None) -> tuple[Alias, AliasEvent]:
        current = self._alias_row(session, PRODUCTION)
        if current is None:
            raise RegistryError(f"model {self.model!r} has no production version to roll back")
        if to is not None:
            if self._version_row(session, to) is None:
                raise UnknownVersion(to, self.model)
            if to == current.version:
                raise RegistryError(f"version {to} is already {self.model!r}'s production")
        frame = self._top_frame(session, PRODUCTION)
        while True:
            frame = session.get(AliasEvent, frame.below_event) if frame and frame.below_event else None
            if frame is None:
                if to is None:
                    raise RegistryError(f"{self.model!r}'s production (version {current.version}) has no earlier "
                                        "production version")
                raise RegistryError(f"version {to} was never production before version {current.version}; "
                                    "use promote to move production to it")
            if to is None or frame.to_version == to:
                return current, frame

    def _lock_version_numbers(self, session: Session) -> None:
        """Serialise allocating this model's version numbers (SQLite's write lock already does)."""
        if not self.is_sqlite:
            session.exec(text("SELECT pg_advisory_xact_lock(:key, hashtext(:model))")
                         .bindparams(key=_VERSION_LOCK_KEY, model=self.model))

    def _latest_number(self, session: Session) -> int:
        return session.exec(select(func.max(ModelVersion.version)).where(self._mine(ModelVersion))).one() or 0

    def register_erasure(
        self, new: NewVersion, batch_id: int, actor: str, reason: str
    ) -> tuple[ModelVersion, AliasEvent]:
        """In one transaction: register ``new`` (production's successor without the batch's
        samples), move ``production`` to it, and mark the batch erased with ``reason``."""
        with self._transaction() as session:
            self._lock_version_numbers(session)
            batch = session.get(Batch, batch_id)
            if batch is None or batch.model != self.model:
                raise RegistryError(f"model {self.model!r} has no batch {batch_id}")
            if batch.state != BatchState.DONE:
                raise RegistryError(f"batch {batch_id} is {batch.state}: only a done batch's samples can be erased")
            current = self._alias_row(session, PRODUCTION)
            if current is None or current.version != new.parent:
                raise AliasConflict(f"{self.model!r}'s production moved away from version {new.parent} meanwhile")
            row = new.row(self.model, self._latest_number(session) + 1)
            session.add(row)
            session.flush()
            move = self._move_alias(session, PRODUCTION, new.parent, row.version, actor, AliasAction.ERASE,
                                    f"batch {batch_id} erased: {reason}")
            batch.state, batch.reason, batch.updated_at = BatchState.ERASED, f"erased: {reason}", utcnow()
            session.add(batch)
            emit(session, EventKind.VERSION_PROMOTED, move_payload(move, row))
            return row, move

    def erased_batches(self) -> list[Batch]:
        with self._reading() as session:
            return list(session.exec(select(Batch).where(self._mine(Batch), Batch.state == BatchState.ERASED)))

    def stacked_versions(self) -> set[int]:
        """Every version an alias points at or a rollback could return it to (its stack)."""
        stacked: set[int] = set()
        with self._reading() as session:
            for alias in session.exec(select(Alias).where(self._mine(Alias))):
                stacked.add(alias.version)
                frame = self._top_frame(session, alias.name)
                while frame is not None:
                    stacked.add(frame.to_version)
                    frame = session.get(AliasEvent, frame.below_event) if frame.below_event else None
        return stacked

    def _top_frame(self, session: Session, name: str) -> AliasEvent | None:
        """The move that put the alias where it is: the top of its stack."""
        query = (select(AliasEvent).where(self._mine(AliasEvent), AliasEvent.alias == name)
                 .order_by(AliasEvent.id.desc()).limit(1))
        return session.exec(query).first()

    def _create_alias(self, session: Session, name: str, number: int, actor: str, reason: str) -> AliasEvent:
        session.add(Alias(model=self.model, name=name, version=number))
        record = AliasEvent(model=self.model, alias=name, action=AliasAction.CREATE, to_version=number, actor=actor,
                            reason=reason)
        session.add(record)
        session.flush()
        return record

    def _move_alias(
        self, session: Session, name: str, expected: int, number: int, actor: str, action: str, reason: str,
        below: int | None = None,
    ) -> AliasEvent:
        """Compare-and-swap the alias and log the move, in the caller's transaction. A move
        other than a rollback pushes: the frame below it is the current top."""
        if action != AliasAction.ROLLBACK:
            top = self._top_frame(session, name)
            below = top.id if top is not None else None
        result = session.exec(
            update(Alias)
            .where(self._mine(Alias), Alias.name == name, Alias.version == expected)
            .values(version=number, updated_at=utcnow())
        )
        if result.rowcount != 1:
            raise AliasConflict(f"alias {self.model}@{name} moved away from version {expected} concurrently")
        record = AliasEvent(
            model=self.model, alias=name, action=action, from_version=expected, to_version=number, actor=actor,
            reason=reason,
            below_event=below,
        )
        session.add(record)
        session.flush()
        return record

    # ------------------------------------------------------------------ outbox

    def dispatch_events(self, targets: list[tuple[str, frozenset[str]]], limit: int = 100) -> int:
        """Fan recorded events out to the webhooks ``targets`` (url, kinds it wants), once each:
        the event is marked dispatched in the transaction that queues its deliveries."""
        with self._transaction() as session:
            query = select(OutboxEvent).where(OutboxEvent.dispatched.is_(False)).order_by(OutboxEvent.id).limit(limit)
            if not self.is_sqlite:
                query = query.with_for_update(skip_locked=True)
            events = list(session.exec(query))
            for event in events:
                session.add_all(outbox.deliveries_for(event, targets))
                event.dispatched = True
                session.add(event)
            return len(events)

    def claim_deliveries(self, lease_seconds: float, limit: int = 20) -> list[tuple[WebhookDelivery, OutboxEvent]]:
        """Deliveries due now, each leased to the caller (``sending``) with its attempt counted."""
        now = utcnow()
        with self._transaction() as session:
            query = outbox.due(now).limit(limit)
            if not self.is_sqlite:
                query = query.with_for_update(skip_locked=True)
            claimed = []
            for delivery in session.exec(query):
                delivery.state, delivery.attempts = DeliveryState.SENDING, delivery.attempts + 1
                delivery.next_attempt_at = outbox.lease_until(now, lease_seconds)
                session.add(delivery)
                claimed.append((delivery, session.get(OutboxEvent, delivery.event_id)))
            return claimed

    def delivery_succeeded(self, delivery_id: int) -> None:
        with self._transaction() as session:
            delivery = session.get(WebhookDelivery, delivery_id)
            delivery.state, delivery.delivered_at, delivery.last_error = DeliveryState.DELIVERED, utcnow(), None
            session.add(delivery)

    def delivery_failed(
        self, delivery_id: int, error: str, max_attempts: int, backoff_seconds: float
    ) -> WebhookDelivery:
        """Try again after a backoff, or give up (``failed``) after ``max_attempts``."""
        with self._transaction() as session:
            delivery = session.get(WebhookDelivery, delivery_id)
            delivery.last_error = error[:500]
            if delivery.attempts >= max_attempts:
                delivery.state = DeliveryState.FAILED
            else:
                delivery.state = DeliveryState.PENDING
                delivery.next_attempt_at = utcnow() + outbox.backoff(delivery.attempts, backoff_seconds)
            session.add(delivery)
            return delivery

    def count_deliveries(self, states: tuple[str, ...]) -> int:
        return self._count(WebhookDelivery, WebhookDelivery.state.in_(states))

    def deliveries(
        self, states: tuple[str, ...], limit: int | None = None
    ) -> list[tuple[WebhookDelivery, OutboxEvent]]:
        """Deliveries in ``states`` with their events, the newest last."""
        query = (select(WebhookDelivery, OutboxEvent).join(OutboxEvent, OutboxEvent.id == WebhookDelivery.event_id)
                 .where(WebhookDelivery.state.in_(states)))
        return [tuple(pair) for pair in self._last(query, WebhookDelivery.id, limit)]
