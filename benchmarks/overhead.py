"""One batch through retain's in-process pipeline, per strategy, beside a plain PyTorch loop
that trains the same model for the same epochs on the same samples plus the same replayed
samples, in the same run; with the pipeline's seconds per phase.

    .venv/bin/python benchmarks/overhead.py [--batch-sizes 250 2500] [--repeats 3]

Batches beyond the ~640 digits the workspace has not seen are drawn from those with
replacement, each copy jittered (Gaussian, σ = 0.05 on pixels in [0, 1]): the fixed costs
per batch (shift test, probe, registry) are what a large batch amortises.

The pipeline is warm, as in a running daemon: each measured service has processed a warm-up
batch first (imports, first calls, the registry's compiled statements), then the measured
batch, from a fresh copy of one initialised workspace, with the policy pinned and no fallback.
The plain loop trains from the production model and memory the measured batch meets. It is what a
hand-written fine-tuning script would do: Adam, cross-entropy, minibatches of new samples
each with as many replayed ones as retain rehearses; for feature_extraction the backbone is
frozen and only the head trains. retain adds distillation on the replayed samples, the
shift test, the probe, the gate and the registry: what this measures is what those cost.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from retain.daemon.bootstrap import init_workspace
from retain.daemon.config import dump_config, load_config, open_artifacts
from retain.daemon.metrics import ServiceMetrics
from retain.daemon.pipeline import batch_seed
from retain.daemon.service import Service
from retain.daemon.versions import load_memory, load_model
from retain.daemon.watcher import ingest_file
from retain.registry import Registry
from retain.strategies.datasets import digits
from retain.strategies.kinds import Phase, Strategy
from retain.strategies.models import head_module
from retain.strategies.replay import split_holdout
from retain.strategies.training import limit_threads, make_optimizer, memory_batch_size

CONFIG = {
    "paths": {"workdir": ".", "inbox": "inbox"},
    "registry": {"url": "sqlite:///registry.db", "auto_promote": True},
    "model": {"factory": "retain.strategies.models:mlp", "kwargs": {"hidden": [128, 64]}, "head": "head",
              "max_classes": 10},
    "training": {"epochs": 8, "batch_size": 32, "lr": 0.003, "device": "cpu", "threads": 1},
    "replay": {"capacity": 1000, "audit_fraction": 0.3},
    "metrics": {"enabled": False},
}


def batch_of(x: np.ndarray, y: np.ndarray, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``size`` samples: ``x`` itself while it has enough, else jittered copies drawn from it."""
    if size <= len(y):
        return x[:size], y[:size]
    rng = np.random.default_rng(seed)
    picked = rng.integers(len(y), size=size)
    jittered = np.clip(x[picked] + rng.normal(0.0, 0.05, size=(size, x.shape[1])), 0.0, 1.0)
    return jittered.astype(np.float32), y[picked]


def save_batch(path: Path, x: np.ndarray, y: np.ndarray) -> Path:
    np.savez(path, x=x.astype(np.float32), y=y)
    return path


def make_template(root: Path, x: np.ndarray, y: np.ndarray) -> Path:
    """An initialised workspace on digits 0-7."""
    template = root / "template"
    template.mkdir()
    (template / "retain.toml").write_text(dump_config(CONFIG))
    init = save_batch(root / "init.npz", x[:600], y[:600])
    init_workspace(load_config(template / "retain.toml"), init, train=True, actor="bench")
    return template


def process(service: Service, batch: Path, inbox: Path) -> tuple[float, dict[str, float]]:
    """Wall seconds of a started service processing ``batch`` (recorded as its inbox event
    would have it recorded, then claimed, adapted, registered, moved), and its phases."""
    arrived = ingest_file(batch, inbox)
    started = time.perf_counter()
    service.register_file(arrived)
    outcome = service.process_one()
    wall = time.perf_counter() - started
    assert outcome is not None and outcome.state == "done", outcome
    return wall, outcome.phases


def measure(template: Path, workdir: Path, strategy: Strategy, warm_up: Path, batch: Path) -> tuple[float, float, dict]:
    """Plain-loop seconds, then a warm service's seconds and phases, for ``batch``."""
    shutil.copytree(template, workdir)
    config_path = workdir / "retain.toml"
    config_path.write_text(dump_config({**CONFIG, "policy": {"strategy": str(strategy), "fallback": False}}))
    config = load_config(config_path)
    registry = Registry(config.registry_url)
    try:
        service = Service(config, registry, ServiceMetrics())
        process(service, warm_up, config.inbox)
        plain = plain_loop(workdir, batch, strategy)
        wall, phases = process(service, batch, config.inbox)
    finally:
        registry.close()
    return plain, wall, phases


def plain_loop(workdir: Path, batch: Path, strategy: Strategy) -> float:
    """Seconds a plain PyTorch loop takes for the training ``batch`` gets in ``workdir``."""
    config = load_config(workdir / "retain.toml")
    registry = Registry(config.registry_url)
    try:
        production = registry.production()
    finally:
        registry.close()
    artifacts = open_artifacts(config)
    model, memory = load_model(production, artifacts), load_memory(production, artifacts)
    data = np.load(batch)
    seed = batch_seed(hashlib.sha256(batch.read_bytes()).hexdigest())
    (x, y), _ = split_holdout(torch.from_numpy(data["x"]), torch.from_numpy(data["y"]).long(),
                              config.gate.holdout_fraction, seed)
    replay_x, replay_y = memory.rehearsal()
    settings = config.training.settings(seed=seed)
    per_step = memory_batch_size(settings.batch_size, replay_y, y)

    started = time.perf_counter()
    torch.manual_seed(seed)
    head = head_module(model, "head")
    trained = head.parameters() if strategy == Strategy.FEATURE_EXTRACTION else model.parameters()
    lr = settings.lr * (0.2 if strategy == Strategy.FINETUNE else 1.0)
    optimizer = make_optimizer(trained, lr, settings.weight_decay)
    loss_of = nn.CrossEntropyLoss()
    model.train()
    for _ in range(settings.epochs):
        order = torch.randperm(len(y))
        for start in range(0, len(y), settings.batch_size):
            picked = order[start:start + settings.batch_size]
            replayed = torch.randint(len(replay_y), (per_step,))
            inputs = torch.cat([x[picked], replay_x[replayed]])
            labels = torch.cat([y[picked], replay_y[replayed]])
            if strategy == Strategy.FEATURE_EXTRACTION:
                with torch.no_grad():
                    features = model.backbone(inputs)
                logits = head(features)
            else:
                logits = model(inputs)
            optimizer.zero_grad()
            loss_of(logits, labels).backward()
            optimizer.step()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[250, 2500], help="samples per batch")
    parser.add_argument("--repeats", type=int, default=3, help="runs per strategy; the medians are printed")
    parser.add_argument("--strategies", type=Strategy, nargs="+", default=list(Strategy), help="strategies to run")
    args = parser.parse_args()
    limit_threads(1)
    logging.basicConfig(level=logging.WARNING)

    x, y = digits()
    order = np.random.default_rng(0).permutation(len(y))
    x, y = x[order], y[order]
    known = np.flatnonzero(y < 8)
    x, y = x[known], y[known]
    unseen_x, unseen_y = x[600:-200], y[600:-200]  # neither the initial training set nor the warm-up batch
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        template = make_template(root, x, y)
        warm_up = save_batch(root / "warm-up.npz", x[-200:], y[-200:])
        first = save_batch(root / "first.npz", *batch_of(unseen_x, unseen_y, 100))
        for strategy in args.strategies:  # imports: what a running daemon has paid before "ready"
            measure(template, root / f"warm-{strategy}", strategy, warm_up, first)

        phase_names = [str(p) for p in Phase]
        print("One batch of digits (0-7) adapting an MLP (64-128-64-8), 8 epochs, one thread; "
              f"medians of {args.repeats}")
        print(f"{'strategy':<19} {'batch':>6} {'plain s':>8} {'retain s':>9} {'ratio':>6} "
              + " ".join(f"{p:>9}" for p in phase_names))
        for size in args.batch_sizes:
            batch = save_batch(root / f"batch-{size}.npz", *batch_of(unseen_x, unseen_y, size))
            for strategy in args.strategies:
                walls, plains, phases = [], [], {p: [] for p in phase_names}
                for repeat in range(args.repeats):
                    plain, wall, seconds = measure(template, root / f"{strategy}-{size}-{repeat}", strategy, warm_up,
                                                   batch)
                    walls.append(wall)
                    plains.append(plain)
                    for p in phase_names:
                        phases[p].append(seconds.get(p, 0.0))
                wall, plain = statistics.median(walls), statistics.median(plains)
                print(f"{strategy:<19} {size:>6} {plain:>8.3f} {wall:>9.3f} {wall / plain:>5.2f}x "
                      + " ".join(f"{statistics.median(phases[p]):>9.3f}" for p in phase_names), flush=True)
        print("retain s: a started service recording, claiming, adapting, registering and moving the batch;"
              " meta's plain loop is finetune's (Reptile has no plain-loop counterpart)")


if __name__ == "__main__":
    main()
