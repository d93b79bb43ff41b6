"""``retain demo``: a workspace on scikit-learn's bundled digits, fed through the daemon."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from retain.errors import RetainError
from retain.daemon.config import dump_config, load_config
from retain.strategies.datasets import digits

DEMO_CONFIG = {
    "paths": {"workdir": ".", "inbox": "inbox"},
    "registry": {"url": "sqlite:///registry.db", "auto_promote": True},
    # Version 1 knows digits 0-7; 8 and 9 arrive later and widen the head.
    "model": {"factory": "retain.strategies.models:mlp", "kwargs": {"hidden": [128, 64]}, "head": "head",
              "max_classes": 10},
    "training": {"epochs": 8, "batch_size": 32, "lr": 0.003, "device": "auto", "threads": 1},
    "gate": {"max_forgetting": 0.02, "max_forgetting_new_classes": 0.06, "min_gain": 0.0, "holdout_fraction": 0.25},
    "replay": {"capacity": 1000, "audit_fraction": 0.3},
    "metrics": {"enabled": False},
}


class DemoError(RetainError):
    pass


def rotate(x: np.ndarray) -> np.ndarray:
    return np.rot90(x.reshape(-1, 8, 8), k=1, axes=(1, 2)).reshape(len(x), 64).copy()


def add_noise(x: np.ndarray, rng: np.random.Generator, scale: float = 0.35) -> np.ndarray:
    return np.clip(x + rng.normal(0.0, scale, x.shape), 0.0, 1.0).astype(np.float32)


def write_stream(data_dir: Path, seed: int = 0) -> tuple[Path, list[tuple[str, Path]]]:
    """The init file and the batches, in the order they arrive."""
    rng = np.random.default_rng(seed)
    x, y = digits()
    order = rng.permutation(len(y))
    x, y = x[order], y[order]
    data_dir.mkdir(parents=True, exist_ok=True)

    def save(name: str, xs: np.ndarray, ys: np.ndarray) -> Path:
        path = data_dir / name
        np.savez(path, x=xs.astype(np.float32), y=ys)
        return path

    known, novel = np.flatnonzero(y < 8), np.flatnonzero(y >= 8)
    init = save("init.npz", x[known[:600]], y[known[:600]])
    new_classes = np.concatenate([novel[:250], known[1200:1300]])
    everything = np.concatenate([novel[250:], known[1300:]])
    batches = [
        ("digits 0-7, same distribution", save("01-same-distribution.npz", x[known[600:850]], y[known[600:850]])),
        ("gaussian noise", save("02-noisy.npz", add_noise(x[known[850:1050]], rng), y[known[850:1050]])),
        ("rotated 90 degrees", save("03-rotated.npz", rotate(x[known[1050:1200]]), y[known[1050:1200]])),
        ("new classes 8 and 9", save("04-new-classes.npz", x[new_classes], y[new_classes])),
        ("all ten digits", save("05-all-digits.npz", x[everything], y[everything])),
    ]
    corrupt = data_dir / "06-truncated.npz"
    corrupt.write_bytes(batches[0][1].read_bytes()[:500])
    batches.append(("truncated file", corrupt))
    return init, batches


def run_demo(workdir: Path, console: Console, threads: int = 1, actor: str = "cli:demo") -> None:
    """Build the workspace, run every batch through the daemon, print the versions table."""
    from retain.daemon.bootstrap import InitError, init_workspace
    from retain.daemon.watcher import ingest_file
    from retain.daemon.metrics import ServiceMetrics
    from retain.daemon.service import Service
    from retain.views import batch_row, batches_table, version_row, versions_table
    from retain.registry import Registry
    from retain.strategies.training import limit_threads

    workdir = workdir.resolve()
    if workdir.exists() and any(workdir.iterdir()):
        raise DemoError(f"{workdir} is not empty; remove it or pass --workdir")
    started = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "retain.toml"
    sections = {**DEMO_CONFIG, "training": {**DEMO_CONFIG["training"], "threads": threads}}
    config_path.write_text(dump_config(sections))
    config = load_config(config_path)
    limit_threads(config.training.threads)

    init_file, stream = write_stream(workdir / "data")
    console.print(Text.assemble(("retain demo", "bold"),
                                f" in {workdir}: digits 0-7 known, {len(stream)} batches to come"))

    with _progress(console) as progress:
        task = progress.add_task("training version 1 on init.npz", total=None)

        def init_progress(p) -> None:
            progress.update(task, total=p.epochs * p.iterations, completed=(p.epoch - 1) * p.iterations + p.iteration,
                            description=f"version 1: epoch {p.epoch}/{p.epochs}")

        try:
            init_workspace(config, init_file, train=True, actor=actor, on_progress=init_progress)
        except InitError as exc:
            raise DemoError(str(exc)) from None

        for description, path in stream:
            target = ingest_file(path, config.inbox)
            console.print(f"  inbox <- {target.name} ({description})")

        tasks: dict[int, int] = {}

        def batch_progress(batch, p) -> None:
            if batch.id not in tasks:
                tasks[batch.id] = progress.add_task(f"batch {batch.id}", total=p.epochs * p.iterations)
            progress.update(
                tasks[batch.id],
                total=p.epochs * p.iterations,
                completed=(p.epoch - 1) * p.iterations + p.iteration,
                description=f"batch {batch.id} ({batch.name}): epoch {p.epoch}/{p.epochs}",
            )

        registry = Registry(config.registry_url)
        try:
            Service(config, registry, ServiceMetrics(), on_progress=batch_progress).run(once=True)
        finally:
            registry.close()

    registry = Registry(config.registry_url)
    try:
        production = registry.alias()
        by_number = {v.version: v for v in registry.versions()}
        console.print(batches_table([batch_row(b, by_number.get(b.version)) for b in registry.batches()]))
        console.print(versions_table([version_row(v, production) for v in by_number.values()]))
    finally:
        registry.close()
    console.print(
        f"done in {time.monotonic() - started:.0f} s. Inspect it with "
        f"`retain --config {config_path} versions` (or show, batches, history)."
    )


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} steps"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
