"""Do more workers process more batches? Batches per minute with 1, 2 and 3 ``retain run``
workers over several models, then the registry at 10,000 and 100,000 versions beside MLflow's.

Each run starts from the same workspace: ``--models`` models (digits, the built-in MLP), each
initialised, one SQLite registry (WAL) and one artifact folder that the workers share, as
processes on one host share them. The workers are started and left to become ready; then
``--batches`` files per model are dropped into the models' inbox folders at once and the
clock runs until every batch is done. One batch per model is in flight at a time, so with M
models at most M workers have work; past the number of cores, workers share them and the
rate stops growing. Each worker trains with one thread (``training.threads = 1``).

The registry figures come from ``benchmarks/registry_scale.py`` in the same run (with
``--mlflow-python``, MLflow's ``MlflowClient`` on SQLite beside it, at equal durability).

    .venv/bin/python benchmarks/scale_out.py [--workers 1 2 3] [--models 3] [--batches 6]
        [--mlflow-python .venv-mlflow/bin/python] [--registry-sizes 10000 100000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from retain.daemon.config import dump_config, load_config
from retain.registry import BatchState, Registry
from retain.registry.artifacts import atomic_write
from retain.strategies.datasets import digits

REPO = Path(__file__).resolve().parent.parent
RETAIN = [sys.executable, "-m", "retain"]
BATCH_SIZE = 300


def workspace(root: Path, models: list[str]) -> Path:
    """A workspace of ``models``, each with version 1 trained on 400 digits."""
    config = root / "retain.toml"
    config.write_text(dump_config({
        "paths": {"workdir": "."},
        "models": {name: {"kwargs": {"hidden": [64]}} for name in models},
        "training": {"epochs": 5, "threads": 1, "device": "cpu"},
        "shift": {"permutations": 100},
        "metrics": {"enabled": False},
        "daemon": {"settle_seconds": 0.2},
    }))
    x, y = digits(shuffle_seed=0)
    with (root / "init.npz").open("wb") as handle:
        np.savez(handle, x=x[:400], y=y[:400])
    for name in models:
        subprocess.run([*RETAIN, "--config", str(config), "init", "--model", name, "--data", str(root / "init.npz"),
                        "--train"], check=True, capture_output=True, cwd=REPO)
    return config


def start_worker(config: Path, log: Path) -> subprocess.Popen:
    with log.open("wb") as handle:
        return subprocess.Popen([*RETAIN, "--config", str(config), "run"], stdout=handle, stderr=subprocess.STDOUT,
                                cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.1)


def rate(template: Path, workers: int, models: list[str], batches: int) -> tuple[float, float]:
    """Batches per minute with ``workers`` workers, and the seconds the batches took."""
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "ws"
        shutil.copytree(template, root)
        config = root / "retain.toml"
        logs = [root / f"worker-{i}.log" for i in range(workers)]
        processes = [start_worker(config, log) for log in logs]
        try:
            wait(lambda: all("daemon ready" in log.read_text(errors="replace") for log in logs), 120,
                 "the workers to be ready")
            x, y = digits(shuffle_seed=1)
            settings = load_config(config)
            started = time.monotonic()
            for i in range(batches):
                for m, name in enumerate(models):
                    start = (BATCH_SIZE * (i * len(models) + m)) % (len(y) - BATCH_SIZE)
                    part = {"x": x[start:start + BATCH_SIZE], "y": y[start:start + BATCH_SIZE]}
                    atomic_write(settings.for_model(name).inbox / f"batch-{i:02d}.npz",
                                 lambda handle, part=part: np.savez(handle, **part))
            registry = Registry(settings.registry_url)
            total = batches * len(models)

            def finished() -> bool:
                done = [b for b in registry.batches(every_model=True) if b.state == BatchState.DONE]
                return len(done) == total

            wait(finished, 1800, f"{total} batches")
            elapsed = time.monotonic() - started
            registry.close()
        finally:
            for process in processes:
                process.send_signal(signal.SIGTERM)
            for process in processes:
                process.wait(timeout=60)
    return 60 * total / elapsed, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--models", type=int, default=3)
    parser.add_argument("--batches", type=int, default=10, help="per model")
    parser.add_argument("--mlflow-python", help="a Python with MLflow, for the registry comparison")
    parser.add_argument("--registry-sizes", type=int, nargs="*", default=[10_000, 100_000],
                        help="versions for the registry figures (none: skip them)")
    args = parser.parse_args()
    models = [f"model-{i}" for i in range(args.models)]
    cores = len(os.sched_getaffinity(0))
    print(f"{args.models} models x {args.batches} batches of {BATCH_SIZE}; {cores} cores; one SQLite registry")
    with tempfile.TemporaryDirectory() as folder:
        template = Path(folder) / "template"
        template.mkdir()
        workspace(template, models)
        print(f"{'workers':>7}  {'seconds':>8}  {'batches/min':>11}  {'vs 1 worker':>11}")
        first = None
        for count in args.workers:
            per_minute, elapsed = rate(template, count, models, args.batches)
            first = first or per_minute
            print(f"{count:>7}  {elapsed:>8.1f}  {per_minute:>11.1f}  {per_minute / first:>10.2f}x", flush=True)
    if args.registry_sizes:
        print()
        command = [sys.executable, str(Path(__file__).with_name("registry_scale.py")), "--sizes",
                   *map(str, args.registry_sizes), *(["--mlflow-python", args.mlflow_python] if args.mlflow_python
                                                     else [])]
        subprocess.run(command, check=True)


if __name__ == "__main__":
    main()
