"""MLflow's model registry, timed as registry_scale.py times retain's: run by that script with the
Python of a separate environment that has MLflow (it is not a dependency of retain).

Registers ``--size`` versions of one model through ``MlflowClient`` on SQLite, timing each; then
moves an alias back and forth. Prints one JSON object: median milliseconds of the last
``--repeats`` registrations and of ``--repeats`` alias moves.

``--wal`` puts MLflow's SQLite in retain's mode (WAL, ``synchronous=NORMAL``: no fsync per
commit); without it MLflow runs as it ships (a rollback journal, ``synchronous=FULL``: an
fsync at every commit).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path


def use_wal() -> None:
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    @event.listens_for(Engine, "connect")
    def _pragmas(dbapi_connection, _record) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--wal", action="store_true")
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # MLflow logs its schema migrations at start
    if args.wal:
        use_wal()
    from mlflow import MlflowClient

    with tempfile.TemporaryDirectory() as folder:
        uri = f"sqlite:///{Path(folder) / 'mlflow.db'}"
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        client.create_registered_model("digits")
        register = []
        for index in range(args.size):
            started = time.perf_counter()
            client.create_model_version("digits", source=f"file:///artifacts/{index}", tags={"batch": str(index)})
            register.append(1000 * (time.perf_counter() - started))
        moves = []
        for index in range(args.repeats):
            started = time.perf_counter()
            client.set_registered_model_alias("digits", "production", str(args.size - index % 2))
            moves.append(1000 * (time.perf_counter() - started))
    print(json.dumps({"register_ms": statistics.median(register[-args.repeats:]),
                      "alias_move_ms": statistics.median(moves)}))


if __name__ == "__main__":
    main()
