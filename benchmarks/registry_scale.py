"""Does registry work stay flat as a lineage grows? Per-batch registry work, listings, `show`
and a rollback on a SQLite registry holding 10,000 and 100,000 versions; and registering a
version and moving an alias beside MLflow's registry at the same size.

The lineage is written in bulk (one chain, a batch and an alias move per version), then each
operation is timed as the daemon and the CLI call it, through the Registry API. Per-batch work
is what the pipeline asks of the registry for one batch: record it, claim it, read production
and the policy's history window, register its candidate (promoting it) and finish it. SQLite
runs in WAL mode with ``synchronous=NORMAL``: a commit is durable against a process crash, not
against power loss (it does not fsync every commit).

``--mlflow-python PATH`` runs ``benchmarks/mlflow_registry.py`` with an environment that has
MLflow (``make bench`` makes one, ``.venv-mlflow``) at each size up to ``--mlflow-max``:
``MlflowClient`` on SQLite, as it ships (a rollback journal, ``synchronous=FULL``: an fsync
per commit) and in retain's mode (WAL, ``synchronous=NORMAL``), the fair comparison.

    .venv/bin/python benchmarks/registry_scale.py [--sizes 10000 100000] [--repeats 20]
        [--mlflow-python .venv-mlflow/bin/python] [--mlflow-max 10000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import insert

from retain.registry import Alias, AliasEvent, Batch, BatchState, ModelVersion, NewVersion, Registry
from retain.registry.tables import utcnow

SPEC = '{"factory": "retain.strategies.models:mlp", "input_shape": [64], "num_classes": 10}'
HISTORY_WINDOW = 10  # policy.history_window's default


def build(url: str, size: int) -> Registry:
    """A registry with one lineage of ``size`` versions, each from its own batch and promoted."""
    registry = Registry(url)
    chunk, now = 10_000, utcnow()
    with registry.engine.begin() as connection:
        for start in range(1, size + 1, chunk):
            numbers = range(start, min(start + chunk, size + 1))
            connection.execute(insert(Batch), [
                {"id": n, "model": "default", "sha256": f"{n:064x}", "path": f"/processed/{n}.npz", "name": f"{n}.npz",
                 "state": BatchState.DONE, "attempts": 1, "n_samples": 200, "version": n, "created_at": now,
                 "updated_at": now} for n in numbers])
            connection.execute(insert(ModelVersion), [
                {"model": "default", "version": n, "parent": n - 1 if n > 1 else None, "batch_id": n,
                 "status": "accepted",
                 "strategy": "finetune", "severity": "mild", "shift_score": 0.01, "p_value": 0.02,
                 "forgetting": 0.001, "rationale": "finetune because …", "decision_reasons": "[]",
                 "details": '{"shift": {"novel_classes": []}, "forgetting_limit": 0.02}', "model_spec": SPEC,
                 "artifact_sha256": f"{n:064x}", "replay_sha256": f"{n:064x}", "created_at": now} for n in numbers])
            connection.execute(insert(AliasEvent), [
                {"id": n, "model": "default", "alias": "production", "action": "auto_promote" if n > 1 else "create",
                 "from_version": n - 1 if n > 1 else None, "to_version": n, "actor": "bench", "reason": "", "at": now,
                 "below_event": n - 1 if n > 1 else None}
                for n in numbers])
        connection.execute(insert(Alias), [
            {"model": "default", "name": "production", "version": size, "updated_at": now}])
    return registry


def per_batch(registry: Registry, index: int) -> None:
    """The registry calls of one batch through the pipeline."""
    batch, _ = registry.add_batch(f"{10**12 + index:064x}", f"/inbox/new-{index}.npz", f"new-{index}.npz")
    claimed = registry.claim_batch("bench", 300, max_attempts=3)
    assert claimed is not None and claimed.id == batch.id
    production = registry.production()
    registry.recent_shifts(HISTORY_WINDOW)
    registry.batch_versions(batch.id)
    new = NewVersion(status="accepted", strategy="finetune", model_spec={"factory": "x"}, artifact_sha256="a" * 64,
                     replay_sha256="b" * 64, parent=production.version, batch_id=batch.id, severity="none")
    registry.register_versions([new], promote_index=0)
    registry.move_batch(batch.id, f"/processed/new-{index}.npz", n_samples=200)
    registry.aliases()


def timed(operation: Callable[[int], object], repeats: int) -> float:
    """Median milliseconds of ``repeats`` calls."""
    samples = []
    for index in range(repeats):
        started = time.perf_counter()
        operation(index)
        samples.append(1000 * (time.perf_counter() - started))
    return statistics.median(samples)


def mlflow_figures(python: str, size: int, repeats: int, wal: bool) -> dict[str, float]:
    script = Path(__file__).with_name("mlflow_registry.py")
    command = [python, str(script), "--size", str(size), "--repeats", str(repeats), *(["--wal"] if wal else [])]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--mlflow-python", help="a Python with MLflow installed")
    parser.add_argument("--mlflow-max", type=int, default=10_000, help="largest size to build in MLflow")
    args = parser.parse_args()
    registering: dict[int, tuple[float, float]] = {}
    print(f"{'versions':>9}  {'per batch':>10}  {'versions page':>13}  {'history page':>12}  "
          f"{'show lineage':>12}  {'rollback':>9}   median ms of {args.repeats}")
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as folder:
            registry = build(f"sqlite:///{Path(folder) / 'registry.db'}", size)
            batch_ms = timed(lambda i: per_batch(registry, i), args.repeats)
            page_ms = timed(lambda i: (registry.versions(limit=20), registry.count_versions()), args.repeats)
            history_ms = timed(lambda i: (registry.history(limit=20), registry.count_events()), args.repeats)
            lineage_ms = timed(lambda i: registry.lineage(registry.alias()), args.repeats)
            rollback_ms = timed(lambda i: registry.rollback("bench"), min(args.repeats, 5))
            parent = registry.alias()
            new = NewVersion(status="accepted", strategy="finetune", model_spec={"factory": "x"},
                             artifact_sha256="a" * 64, replay_sha256="b" * 64, parent=parent)
            register_ms = timed(lambda i: registry.register_version(new), args.repeats)
            top = registry.versions(limit=1)[0].version
            registry.promote(top, "bench")
            move_ms = timed(lambda i: registry.promote(top - 1 + i % 2, "bench"), args.repeats)
            registering[size] = (register_ms, move_ms)
            registry.close()
        print(f"{size:>9}  {batch_ms:>10.1f}  {page_ms:>13.1f}  {history_ms:>12.1f}  {lineage_ms:>12.1f}  "
              f"{rollback_ms:>9.1f}")
    print()
    print(f"{'versions':>9}  {'system':<36} {'register ms':>11}  {'alias move ms':>13}")
    for size, (register_ms, move_ms) in registering.items():
        print(f"{size:>9}  {'retain (WAL, synchronous=NORMAL)':<36} {register_ms:>11.2f}  {move_ms:>13.2f}")
        if not args.mlflow_python or size > args.mlflow_max:
            continue
        for wal, label in ((True, "MLflow (WAL, synchronous=NORMAL)"), (False, "MLflow as shipped (fsync per commit)")):
            theirs = mlflow_figures(args.mlflow_python, size, args.repeats, wal)
            print(f"{size:>9}  {label:<36} {theirs['register_ms']:>11.2f}  {theirs['alias_move_ms']:>13.2f}"
                  f"   retain {theirs['register_ms'] / register_ms:.1f}x / {theirs['alias_move_ms'] / move_ms:.1f}x "
                  "faster")


if __name__ == "__main__":
    main()
