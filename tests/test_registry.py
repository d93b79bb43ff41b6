"""The registry on real SQLite and real PostgreSQL."""

import sqlite3
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from conftest import fresh_postgres_database
from retain.registry import (
    DEFAULT_MODEL,
    AliasConflict,
    BatchForgetting,
    BatchNotHeld,
    BatchState,
    ChoiceDetails,
    Migration,
    NewVersion,
    Registry,
    RegistryError,
    SchemaError,
    ShiftDetails,
    UnknownVersion,
    VersionDetails,
    upgrade,
)
from retain.registry.migrations import MIGRATIONS, latest_version


@pytest.fixture(params=["sqlite", "postgres"])
def empty_database(request, tmp_path) -> str:
    """The URL of a database with nothing in it yet."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/registry.db"
    return fresh_postgres_database(request.getfixturevalue("postgres_url"), "registry")


@pytest.fixture
def registry(empty_database):
    store = Registry(empty_database)
    yield store
    store.close()


def version(status="accepted", parent=None, batch_id=None) -> NewVersion:
    return NewVersion(status=status, strategy="finetune", model_spec={"factory": "m:f"}, artifact_sha256="a" * 64,
                      replay_sha256="b" * 64, parent=parent, batch_id=batch_id)


def test_same_content_is_one_batch(registry):
    first, created = registry.add_batch("1" * 64, "/inbox/a.npz", "a.npz")
    again, created_again = registry.add_batch("1" * 64, "/inbox/copy.npz", "copy.npz")
    assert created and not created_again
    assert again.id == first.id and len(registry.batches()) == 1


def test_a_lineage_has_one_batch_in_flight_and_the_next_waits_for_it(registry):
    # A second batch claimed now would be trained from the production model that the first
    # one's candidate is about to replace: a sibling, never promoted.
    a, _ = registry.add_batch("1" * 64, "/a", "a")
    b, _ = registry.add_batch("2" * 64, "/b", "b")
    assert registry.claim_batch("w1", 60).id == a.id
    assert registry.claim_batch("w2", 60) is None
    assert registry.queue_depth() == 2
    registry.finish_batch(a.id, BatchState.DONE, "w1")
    assert registry.claim_batch("w2", 60).id == b.id


def test_expired_lease_can_be_claimed_by_another_worker(registry):
    a, _ = registry.add_batch("1" * 64, "/a", "a")
    registry.claim_batch("w1", -1)
    claimed = registry.claim_batch("w2", 60)
    assert claimed.id == a.id and claimed.lease_owner == "w2" and claimed.attempts == 2


def test_released_batch_is_pending_again_without_counting_the_attempt(registry):
    a, _ = registry.add_batch("1" * 64, "/a", "a")
    registry.claim_batch("w1", 60)
    registry.release_batch(a.id, "w1")
    assert registry.batch(a.id).state == "pending" and registry.batch(a.id).attempts == 0


MODELS = ("cameras", "shelves", "tills")


def test_models_are_claimed_side_by_side_but_each_one_batch_at_a_time(registry):
    first = {m: registry.for_model(m).add_batch("1" * 64, f"/{m}/1", "1")[0] for m in MODELS[:2]}
    second = registry.for_model("cameras").add_batch("2" * 64, "/cameras/2", "2")[0]
    assert first["cameras"].id != first["shelves"].id  # one content, two models: two batches
    claimed = [registry.claim_batch(f"w{i}", 60, models=MODELS) for i in range(3)]
    assert [b.id for b in claimed[:2]] == [first["cameras"].id, first["shelves"].id] and claimed[2] is None
    registry.finish_batch(first["cameras"].id, BatchState.DONE, "w0")
    assert registry.claim_batch("w2", 60, models=MODELS).id == second.id


def test_a_worker_claims_only_the_models_it_serves(registry):
    registry.for_model("cameras").add_batch("1" * 64, "/c", "c")
    assert registry.claim_batch("w1", 60, models=["tills"]) is None
    assert registry.claim_batch("w1", 60) is None  # the view's own model, "default", has none
    assert registry.claim_batch("w1", 60, models=["cameras"]).model == "cameras"


def test_concurrent_workers_take_each_models_batches_one_at_a_time_in_arrival_order(registry):
    expected: dict[str, list[int]] = {m: [] for m in MODELS}
    for i in range(8):
        for m in MODELS:
            expected[m].append(registry.for_model(m).add_batch(f"{i:064d}", f"/{m}/{i}", str(i))[0].id)
    order: dict[str, list[int]] = {m: [] for m in MODELS}
    in_flight = {m: 0 for m in MODELS}
    overlapped: list[str] = []
    lock = threading.Lock()

    def worker(name: str) -> None:
        while sum(map(len, order.values())) < 8 * len(MODELS):
            batch = registry.claim_batch(name, 60, models=MODELS)
            if batch is None:
                time.sleep(0.001)
                continue
            with lock:
                order[batch.model].append(batch.id)
                in_flight[batch.model] += 1
                if in_flight[batch.model] > 1:
                    overlapped.append(batch.model)
            time.sleep(0.002)
            with lock:
                in_flight[batch.model] -= 1  # before the batch is finished: only then may the next be claimed
            registry.finish_batch(batch.id, BatchState.DONE, name)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert order == expected and overlapped == []


def test_versions_aliases_and_history_are_per_model(registry):
    cameras, tills = registry.for_model("cameras"), registry.for_model("tills")
    for lineage in (cameras, tills, cameras):
        lineage.register_version(version(parent=lineage.alias()), promote=True)
    assert [v.version for v in cameras.versions()] == [1, 2] and [v.version for v in tills.versions()] == [1]
    assert cameras.lineage(2) == [2, 1] and tills.aliases() == {"production": 1}
    tills.register_version(version(parent=1), promote=True)
    cameras.rollback("cli:ops")
    assert (cameras.alias(), tills.alias()) == (1, 2) and len(tills.history()) == 2
    tills.register_version(version(parent=2))
    with pytest.raises(UnknownVersion, match="version 3 of model 'cameras' does not exist"):
        cameras.version(3)  # tills has a version 3, cameras does not


def test_concurrent_registrations_get_distinct_consecutive_numbers(registry):
    numbers: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(5):
            row, _ = registry.register_version(version())
            with lock:
                numbers.append(row.version)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(numbers) == list(range(1, 21))


def test_registering_marks_the_batch_done_and_promotes_in_one_step(registry):
    registry.register_version(version(), promote=True)
    batch, _ = registry.add_batch("1" * 64, "/a", "a")
    registry.claim_batch("w", 60)
    row, moved = registry.register_version(version(parent=1, batch_id=batch.id), promote=True)
    assert moved and registry.alias() == row.version == 2
    assert registry.batch(batch.id).state == "done" and registry.batch(batch.id).version == 2
    assert [(e.action, e.from_version, e.to_version) for e in registry.history()] == [
        ("create", None, 1), ("auto_promote", 1, 2)]


def test_auto_promotion_is_skipped_when_production_moved_meanwhile(registry):
    registry.register_version(version(), promote=True)
    registry.register_version(version(parent=1))
    registry.promote(2, "cli:ops")
    row, moved = registry.register_version(version(parent=1), promote=True)
    assert not moved and registry.alias() == 2 and row.version == 3


def test_promoting_a_rejected_version_needs_force(registry):
    registry.register_version(version(), promote=True)
    registry.register_version(version(status="rejected", parent=1))
    with pytest.raises(RegistryError, match="version 2 of model .default. was rejected .* --force"):
        registry.promote(2, "cli:ops")
    event = registry.promote(2, "cli:ops", reason="hotfix", force=True)
    assert (event.from_version, event.to_version, event.actor, event.reason) == (1, 2, "cli:ops", "hotfix")


def test_unknown_version_is_reported(registry):
    with pytest.raises(UnknownVersion, match="version 9 of model .default. does not exist"):
        registry.promote(9, "cli:ops")
    with pytest.raises(UnknownVersion):
        registry.version(9)


def test_rollback_walks_back_through_earlier_production_versions(registry):
    for parent in (None, 1, 2):
        registry.register_version(version(parent=parent), promote=True)
    assert registry.rollback("cli:ops").to_version == 2
    assert registry.rollback("cli:ops").to_version == 1
    with pytest.raises(RegistryError, match="no earlier production version"):
        registry.rollback("cli:ops")


def test_rollback_to_a_named_earlier_version(registry):
    for parent in (None, 1, 2):
        registry.register_version(version(parent=parent), promote=True)
    assert registry.rollback("cli:ops", to=1).to_version == 1
    with pytest.raises(RegistryError, match="never production before"):
        registry.register_version(version(parent=1)) and registry.rollback("cli:ops", to=4)


def production_moves_with_rollbacks_between(registry) -> None:
    """Versions 1-4; production 1 -> 2 -> 3, back to 2, then 4: the stack is [1, 2, 4]."""
    for parent in (None, 1, 2):
        registry.register_version(version(parent=parent), promote=True)
    registry.rollback("cli:ops")
    registry.register_version(version(parent=2))
    registry.promote(4, "cli:ops")


def test_a_rollback_after_rollbacks_pops_the_stack_not_the_last_move(registry):
    production_moves_with_rollbacks_between(registry)
    assert [registry.rollback("cli:ops").to_version for _ in range(2)] == [2, 1]
    with pytest.raises(RegistryError, match="no earlier production version"):
        registry.rollback("cli:ops")


def test_rollback_without_any_production_is_an_error(registry):
    with pytest.raises(RegistryError, match="no production version"):
        registry.rollback("cli:ops")


def test_alias_compare_and_swap_refuses_a_stale_expectation(registry):
    registry.register_version(version(), promote=True)
    registry.register_version(version(parent=1))
    registry.register_version(version(parent=1))
    registry.promote(2, "a")
    with pytest.raises(AliasConflict):
        with registry._transaction() as session:
            registry._move_alias(session, "production", 1, 3, "b", "promote", "stale")
    assert registry.alias() == 2
    assert [e.to_version for e in registry.history()] == [1, 2]


# ------------------------------------------------------------------ schema versions

LATEST = latest_version(MIGRATIONS)
# Steps a later retain might add, after the real ones.
ADD_PRIORITY = Migration(LATEST + 1, "batch priority", ("ALTER TABLE batch ADD COLUMN priority INTEGER DEFAULT 0",))
INDEX_PRIORITY = Migration(LATEST + 2, "index batch priority", ("CREATE INDEX ix_batch_priority ON batch (priority)",))


def stored_schema_version(registry) -> int:
    with registry.engine.connect() as connection:
        return connection.execute(text("SELECT version FROM retain_schema")).scalar_one()


def batch_columns(registry) -> set[str]:
    with registry.engine.connect() as connection:
        return {column["name"] for column in inspect(connection).get_columns("batch")}


def test_a_fresh_registry_is_at_the_latest_schema_version(registry):
    assert registry.schema_version == stored_schema_version(registry) == latest_version(MIGRATIONS)


def test_pending_migrations_apply_in_order_and_keep_the_rows(registry):
    registry.add_batch("1" * 64, "/a", "a")
    assert upgrade(registry.engine, (*MIGRATIONS, ADD_PRIORITY, INDEX_PRIORITY)) == LATEST + 2
    assert stored_schema_version(registry) == LATEST + 2 and "priority" in batch_columns(registry)
    assert [b.name for b in registry.batches()] == ["a"]


FIXTURES = Path(__file__).parent / "fixtures"


def write_schema_3_registry(url: str) -> None:
    """A registry as a retain from before named models left it: the tables it created (kept
    in fixtures/), three versions, two batches, and production moves with a rollback between."""
    engine = create_engine(url)
    ddl = "\n".join(line for line in (FIXTURES / f"registry_schema3_{engine.dialect.name}.sql").read_text().splitlines()
                    if not line.startswith("--"))
    at = datetime(2026, 11, 1, tzinfo=UTC)
    with engine.begin() as connection:
        for statement in ddl.split(";"):
            if statement.strip():
                connection.execute(text(statement))
        connection.execute(text("INSERT INTO retain_schema (id, version) VALUES (1, 3)"))
        for n in (1, 2):
            connection.execute(text(
                "INSERT INTO batch (sha256, path, name, state, attempts, version, created_at, updated_at) "
                "VALUES (:sha, :path, :name, 'done', 1, :version, :at, :at)"),
                {"sha": str(n) * 64, "path": f"/processed/{n}", "name": f"b{n}.npz", "version": n + 1, "at": at})
        for number, parent, batch in ((1, None, None), (2, 1, 1), (3, 2, 2)):
            connection.execute(text(
                "INSERT INTO model_version (version, parent, batch_id, status, strategy, rationale, artifact_sha256, "
                "replay_sha256, decision_reasons, details, model_spec, created_at) VALUES (:v, :parent, :batch, "
                "'accepted', 'finetune', '', :a, :b, '[]', '{}', '{\"factory\": \"m:f\"}', :at)"),
                {"v": number, "parent": parent, "batch": batch, "a": "a" * 64, "b": "b" * 64, "at": at})
        connection.execute(text("INSERT INTO alias (name, version, updated_at) VALUES ('production', 3, :at)"),
                           {"at": at})
        moves = (("create", None, 1, None), ("auto_promote", 1, 2, 1), ("auto_promote", 2, 3, 2),
                 ("rollback", 3, 2, 1), ("promote", 2, 3, 4))
        for action, source, target, below in moves:
            connection.execute(text(
                "INSERT INTO alias_event (alias, action, from_version, to_version, actor, reason, at, below_event) "
                "VALUES ('production', :action, :source, :target, 'cli:ops', '', :at, :below)"),
                {"action": action, "source": source, "target": target, "at": at, "below": below})
    engine.dispose()


@pytest.fixture
def schema_3_database(empty_database) -> str:
    write_schema_3_registry(empty_database)
    return empty_database


def as_schema_1(url: str) -> None:
    """Undo the steps after version 1, as a registry written by the first release holds it."""
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("DROP INDEX ix_model_version_batch_id"))
        connection.execute(text("ALTER TABLE alias_event DROP COLUMN below_event"))
        connection.execute(text("UPDATE retain_schema SET version = 1"))
    engine.dispose()


def test_a_single_model_registry_migrates_in_place_as_the_model_default(schema_3_database):
    registry = Registry(schema_3_database)
    assert registry.schema_version == LATEST and registry.models() == [DEFAULT_MODEL]
    assert [v.version for v in registry.versions()] == [1, 2, 3] and registry.alias() == 3
    assert [b.name for b in registry.batches()] == ["b1.npz", "b2.npz"] and registry.count_events() == 5
    assert registry.register_version(version(parent=3), promote=True)[0].version == 4
    assert [registry.rollback("cli:ops").to_version for _ in range(3)] == [3, 2, 1]
    registry.close()


def test_another_model_beside_a_migrated_one_starts_its_own_numbering(schema_3_database):
    cameras = Registry(schema_3_database, model="cameras")
    assert cameras.versions() == [] and cameras.alias() is None
    assert cameras.register_version(version(), promote=True)[0].version == 1
    assert cameras.alias() == 1 and cameras.for_model(DEFAULT_MODEL).alias() == 3
    assert cameras.models() == ["cameras", DEFAULT_MODEL]
    cameras.close()


def schema_of(url: str) -> dict[str, tuple]:
    """Each table's columns (name, nullability), primary key and indexes, as the database holds them."""
    engine = create_engine(url)
    with engine.connect() as connection:
        found = inspect(connection)
        tables = {
            table: (
                sorted((c["name"], c["nullable"]) for c in found.get_columns(table)),
                sorted(found.get_pk_constraint(table)["constrained_columns"]),
                sorted((i["name"], tuple(i["column_names"]), bool(i["unique"])) for i in found.get_indexes(table)),
            )
            for table in found.get_table_names()
        }
    engine.dispose()
    return tables


def test_a_migrated_registry_has_the_tables_of_a_fresh_one(schema_3_database, request, tmp_path):
    Registry(schema_3_database).close()
    fresh = (f"sqlite:///{tmp_path}/fresh.db" if schema_3_database.startswith("sqlite")
             else fresh_postgres_database(request.getfixturevalue("postgres_url"), "fresh"))
    Registry(fresh).close()
    assert schema_of(schema_3_database) == schema_of(fresh)


def test_a_schema_2_registry_rolls_back_through_its_old_moves(schema_3_database):
    engine = create_engine(schema_3_database)
    with engine.begin() as connection:  # the moves as a schema-2 registry holds them
        connection.execute(text("ALTER TABLE alias_event DROP COLUMN below_event"))
        connection.execute(text("UPDATE retain_schema SET version = 2"))
    engine.dispose()
    upgraded = Registry(schema_3_database)
    assert [upgraded.rollback("cli:ops").to_version for _ in range(2)] == [2, 1]
    with pytest.raises(RegistryError, match="no earlier production version"):
        upgraded.rollback("cli:ops")
    upgraded.close()


def test_a_registry_from_before_schema_versions_counts_as_version_1(schema_3_database):
    as_schema_1(schema_3_database)
    engine = create_engine(schema_3_database)
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE retain_schema"))
    assert upgrade(engine, (*MIGRATIONS, ADD_PRIORITY)) == LATEST + 1
    engine.dispose()
    with create_engine(schema_3_database).connect() as connection:
        columns = {column["name"] for column in inspect(connection).get_columns("batch")}
        names = [row[0] for row in connection.execute(text("SELECT name FROM batch ORDER BY id"))]
    assert "priority" in columns and names == ["b1.npz", "b2.npz"]


def test_a_version_1_registry_gets_the_index_of_versions_by_batch(schema_3_database):
    as_schema_1(schema_3_database)
    reopened = Registry(schema_3_database)
    with reopened.engine.connect() as connection:
        indexes = {index["name"] for index in inspect(connection).get_indexes("model_version")}
    assert "ix_model_version_batch_id" in indexes and reopened.schema_version == LATEST
    reopened.close()


def test_a_failing_migration_leaves_the_registry_at_the_last_good_version(registry):
    broken = Migration(LATEST + 2, "broken", ("ALTER TABLE no_such_table ADD COLUMN x INTEGER",))
    with pytest.raises(SchemaError, match=f"schema version {LATEST + 2} .*broken.* stays at version {LATEST + 1}"):
        upgrade(registry.engine, (*MIGRATIONS, ADD_PRIORITY, broken))
    assert stored_schema_version(registry) == LATEST + 1 and "priority" in batch_columns(registry)


def test_a_registry_from_a_newer_retain_is_refused(registry):
    upgrade(registry.engine, (*MIGRATIONS, ADD_PRIORITY))
    with pytest.raises(SchemaError, match=f"schema is at version {LATEST + 1}, newer than this retain knows"):
        Registry(registry.url)


def test_opening_a_new_sqlite_registry_waits_for_a_writer_to_finish(tmp_path):
    # Switching to WAL while another connection holds the write lock fails at once in SQLite
    # itself, busy timeout or not; this is how workers opening a new registry together collide.
    path = tmp_path / "registry.db"
    writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    writer.execute("BEGIN IMMEDIATE")
    finish = threading.Timer(0.3, writer.execute, ("COMMIT",))
    finish.start()
    try:
        store = Registry(f"sqlite:///{path}")
    finally:
        finish.join()
        writer.close()
    with store.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
    store.close()


def test_workers_opening_a_new_database_at_once_create_one_schema(empty_database):
    start = threading.Barrier(4)
    opened: list[Registry] = []
    failures: list[BaseException] = []

    def open_registry() -> None:
        start.wait()
        try:
            opened.append(Registry(empty_database))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            failures.append(exc)

    threads = [threading.Thread(target=open_registry) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    with opened[0].engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM retain_schema")).scalar_one() == 1
    for store in opened:
        store.close()


def test_a_dead_workers_attempt_counts_and_its_last_one_fails_the_batch(registry):
    batch, _ = registry.add_batch("1" * 64, "/a", "a")
    for attempt in (1, 2):
        registry.claim_batch("host:111", 60, max_attempts=3)
        after = registry.requeue_dead(batch.id, "host:111", max_attempts=3)
        assert (after.state, after.attempts) == ("pending", attempt)
    registry.claim_batch("host:111", 60, max_attempts=3)
    after = registry.requeue_dead(batch.id, "host:111", max_attempts=3)
    assert after.state == "failed"
    assert after.reason.startswith("worker died while processing (attempt 3 of 3): the process is gone")
    assert registry.claim_batch("host:222", 60, max_attempts=3) is None


def test_an_expired_lease_on_the_last_attempt_fails_the_batch_and_the_next_one_is_claimed(registry):
    poison, _ = registry.add_batch("1" * 64, "/poison", "poison")
    good, _ = registry.add_batch("2" * 64, "/good", "good")
    registry.claim_batch("w1", -1, max_attempts=2)
    registry.claim_batch("w2", -1, max_attempts=2)  # the same batch again: its lease ran out
    claimed = registry.claim_batch("w3", 60, max_attempts=2)
    assert claimed.id == good.id
    failed = registry.batch(poison.id)
    assert failed.state == "failed" and failed.attempts == 2
    assert failed.reason.startswith("worker died while processing (attempt 2 of 2): its lease expired")


def test_registering_a_batch_again_returns_its_versions_and_adds_none(registry):
    registry.register_version(version(), promote=True)
    batch, _ = registry.add_batch("1" * 64, "/a", "a")
    registry.claim_batch("w", 60)
    first, _ = registry.register_versions([version(parent=1, batch_id=batch.id), version(parent=1, batch_id=batch.id)])
    again, moved = registry.register_versions([version(parent=1, batch_id=batch.id)], promote_index=0)
    assert [r.version for r in again] == [r.version for r in first] == [2, 3]
    assert not moved and registry.alias() == 1
    assert [v.version for v in registry.versions()] == [1, 2, 3]


def test_a_file_refused_unread_records_its_destination_before_it_moves(registry):
    batch = registry.add_refused_file("/inbox/huge.npz", "huge.npz", "too large",
                                      destination=lambda batch_id: f"/rejected/{batch_id:06d}-huge.npz")
    assert batch.path == f"/rejected/{batch.id:06d}-huge.npz" and batch.state == "rejected"
    assert batch.sha256.startswith("unread-")
    assert [b.id for b in registry.refused_files_named("huge.npz")] == [batch.id]
    assert registry.refused_files_named("other.npz") == []


def test_finishing_a_batch_another_worker_claimed_changes_nothing(registry):
    batch, _ = registry.add_batch("1" * 64, "/inbox/a.npz", "a.npz")
    registry.claim_batch("w1", lease_seconds=-1)  # w1's lease has run out at once
    assert registry.claim_batch("w2", 60).id == batch.id
    assert registry.finish_batch(batch.id, BatchState.FAILED, "w1", reason="late error") is None
    assert registry.batch(batch.id).state == BatchState.PROCESSING
    assert registry.batch(batch.id).lease_owner == "w2"


def test_a_finished_batch_cannot_be_set_back_to_pending(registry):
    registry.register_version(version(), promote=True)
    batch, _ = registry.add_batch("1" * 64, "/inbox/a.npz", "a.npz")
    registry.claim_batch("w", 60)
    registry.register_versions([version(parent=1, batch_id=batch.id)], owner="w", path="/processed/000001-a.npz")
    assert registry.finish_batch(batch.id, BatchState.PENDING, "w", reason="the move failed") is None
    done = registry.batch(batch.id)
    assert (done.state, done.path, done.version) == (BatchState.DONE, "/processed/000001-a.npz", 2)


def test_a_worker_whose_batch_was_claimed_by_another_registers_nothing(registry):
    registry.register_version(version(), promote=True)
    batch, _ = registry.add_batch("1" * 64, "/inbox/a.npz", "a.npz")
    registry.claim_batch("w1", lease_seconds=-1)
    registry.claim_batch("w2", 60)
    with pytest.raises(BatchNotHeld):
        registry.register_versions([version(parent=1, batch_id=batch.id)], promote_index=0, owner="w1")
    assert [v.version for v in registry.versions()] == [1] and registry.alias() == 1


# ------------------------------------------------------------------ version details


def test_version_details_come_back_from_the_registry_as_they_were_written(registry):
    details = VersionDetails(
        shift=ShiftDetails(mmd2=0.1, p_value=0.02, label_distance=0.3, novel_classes=(7,), accuracy_reference=0.9,
                           accuracy_batch=0.5, probe_accuracy=None, reasons=("novel classes [7]",)),
        choice=ChoiceDetails(rule="novel_classes", hyperparameters={"lr": 0.003}, measurements={"probe": 0.8},
                             fallback=False),
        per_batch=(BatchForgetting(batch=0, n=40, production=0.9, candidate=0.85, forgetting=0.05),),
        forgetting_limit=0.08, forgetting_stderr=0.01, training_seconds=1.5, n_train=80, n_holdout=20,
        is_fallback=False,
    )
    stored = NewVersion(**version().model_dump(exclude={"details"}), details=details)
    row, _ = registry.register_version(stored)
    assert registry.version(row.version).version_details() == details


def test_details_leave_out_what_does_not_apply_and_read_old_rows():
    initial = VersionDetails(init_data="init.npz", n_train=400, n_holdout=100)
    assert initial.to_dict() == {"n_train": 400, "n_holdout": 100, "init_data": "init.npz"}
    # A row written before the shift report had a probe: the field reads as absent.
    old = VersionDetails.from_dict({"shift": {"mmd2": 0.2, "p_value": 0.01, "novel_classes": [3]}})
    assert old.shift is not None and old.shift.novel_classes == (3,) and old.shift.probe_accuracy is None


# ------------------------------------------------------------------ bounded reads


def register_batches(registry, count: int, fallback_every: int = 0) -> None:
    """Version 1, then ``count`` batches with a version each (two for every ``fallback_every``th)."""
    registry.register_version(version(), promote=True)
    for i in range(count):
        batch, _ = registry.add_batch(f"{i:064d}", f"/{i}", str(i))
        parent = registry.alias()
        shifted = version(parent=parent, batch_id=batch.id).model_copy(update={"severity": "mild", "p_value": 0.01})
        news = [shifted] * (2 if fallback_every and i % fallback_every == 0 else 1)
        registry.register_versions(news, promote_index=len(news) - 1)


def test_recent_shifts_are_the_last_batches_each_once_however_many_versions_they_have(registry):
    register_batches(registry, 8, fallback_every=2)
    recent = registry.recent_shifts(window=3)
    assert [row.batch_id for row in recent] == [6, 7, 8]
    assert registry.recent_shifts(window=0) == []


def test_listings_give_the_last_page_in_order_and_count_what_they_leave_out(registry):
    register_batches(registry, 6)
    assert [v.version for v in registry.versions(limit=3)] == [5, 6, 7]
    assert [v.version for v in registry.versions()] == list(range(1, 8))
    assert [b.id for b in registry.batches(limit=2)] == [5, 6]
    assert [e.to_version for e in registry.history(limit=2)] == [6, 7]
    assert (registry.count_versions(), registry.count_batches(), registry.count_events()) == (7, 6, 7)


def test_lineage_follows_parents_to_the_first_version_in_one_query(registry):
    register_batches(registry, 4)
    registry.rollback("op")
    batch, _ = registry.add_batch("f" * 64, "/f", "f")
    registry.register_version(version(parent=registry.alias(), batch_id=batch.id), promote=True)
    assert registry.lineage(6) == [6, 4, 3, 2, 1]
    assert registry.lineage(1) == [1]
    with pytest.raises(UnknownVersion):
        registry.lineage(99)


def test_workers_recording_the_same_file_at_once_get_one_batch_and_no_error(empty_database):
    stores = [Registry(empty_database) for _ in range(4)]
    results, errors = [], []
    barrier = threading.Barrier(len(stores))

    def record(store) -> None:
        barrier.wait()
        try:
            results.append(store.add_batch("9" * 64, "/inbox/shared.npz", "shared.npz"))
        except Exception as exc:  # noqa: BLE001 - what the test is about
            errors.append(exc)

    threads = [threading.Thread(target=record, args=(store,)) for store in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(created for _, created in results) == [False, False, False, True]
    assert len({batch.id for batch, _ in results}) == 1
    for store in stores:
        store.close()


def test_a_worker_claims_only_the_batches_it_can_read_and_still_one_at_a_time(registry):
    local, _ = registry.add_batch("1" * 64, "/inbox/a.npz", "a.npz")
    remote, _ = registry.add_batch("2" * 64, "s3://bucket/inbox/" + "2" * 64 + "/b.npz", "b.npz")
    assert registry.claim_batch("worker", 60, in_bucket=True).id == remote.id
    assert registry.claim_batch("watcher", 60, in_bucket=False) is None  # the lineage has a batch in flight
    registry.finish_batch(remote.id, BatchState.DONE, "worker")
    assert registry.claim_batch("worker", 60, in_bucket=True) is None
    assert registry.claim_batch("watcher", 60, in_bucket=False).id == local.id
