"""Where does a candidate train faster: the CPU with ``training.threads`` threads, or a GPU?

Times ``train_candidate`` for every strategy on the same batch, replay memory and seed, once
per device (after one untimed warm-up run per device). Two workloads: the digits MLP that
``retain demo`` trains, and the small CNN on larger single-channel images. Where torch sees no
GPU only the CPU column is printed.

    .venv/bin/python benchmarks/training_device.py [--threads 1] [--epochs 8]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from retain.strategies.adapt import train_candidate
from retain.strategies.datasets import digits
from retain.strategies.models import mlp, predict, small_cnn
from retain.strategies.job import TrainingJob
from retain.strategies.kinds import STRATEGIES
from retain.strategies.policy import Choice
from retain.strategies.replay import Data, ReplayMemory, remember, split_holdout
from retain.strategies.training import TrainingSettings, limit_threads, quiet_avalanche, train_initial


@dataclass(frozen=True)
class Workload:
    name: str
    model: Callable[[], nn.Module]
    init: Data
    batch: Data
    test: Data


def digits_mlp() -> Workload:
    x, y = (torch.from_numpy(array) for array in digits())
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x, y = x[order], y[order]
    return Workload("digits MLP (64-128-64-10), 300-sample batch", lambda: mlp((64,), 10),
                    (x[:600], y[:600]), (x[600:900], y[600:900]), (x[900:], y[900:]))


def images_cnn(side: int = 28, n: int = 4000, classes: int = 10) -> Workload:
    """Noisy class-specific blobs on ``side``-pixel images: enough convolution work to notice."""
    g = torch.Generator().manual_seed(0)
    templates = torch.rand(classes, 1, side, side, generator=g)
    y = torch.arange(n) % classes
    x = templates[y] + 0.5 * torch.randn(n, 1, side, side, generator=g)
    split = n // 2
    return Workload(f"small CNN (16, 32 channels), {side}x{side} images, {n // 4}-sample batch",
                    lambda: small_cnn((1, side, side), classes),
                    (x[:split], y[:split]), (x[split:split + n // 4], y[split:split + n // 4]),
                    (x[split + n // 4:], y[split + n // 4:]))


def time_strategies(workload: Workload, settings: TrainingSettings) -> dict[str, tuple[float, float]]:
    """Seconds and test accuracy per strategy, each from the same production and memory."""
    x0, y0 = workload.init
    train, holdout = split_holdout(x0, y0, 0.25, seed=0)
    torch.manual_seed(0)
    production = train_initial(workload.model(), *train, settings)
    memory = remember(ReplayMemory.empty(tuple(x0.shape[1:])), train, holdout, 0, capacity=1000, audit_fraction=0.3,
                      seed=0)
    job = TrainingJob.from_memory(production, workload.batch, memory, settings)
    results = {}
    for strategy in STRATEGIES:
        choice = Choice(strategy, {"lr": settings.lr}, "", strategy)
        train_candidate(choice, job)  # warm-up: kernels, allocator
        if settings.device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        candidate = train_candidate(choice, job).model
        seconds = time.perf_counter() - started  # the candidate is back on the CPU: synchronised
        accuracy = float((predict(candidate, workload.test[0]) == workload.test[1]).double().mean())
        results[strategy] = (seconds, accuracy)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (training.threads)")
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args()
    limit_threads(args.threads)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    gpu = f", GPU {torch.cuda.get_device_name()}" if "cuda" in devices else ", no GPU"
    print(f"train_candidate seconds (test accuracy), {args.epochs} epochs, {args.threads} CPU thread(s){gpu}")
    header = f"{'workload / strategy':58} " + " ".join(f"{d:>15}" for d in devices)
    if "cuda" in devices:
        header += f" {'cpu/cuda':>9}"
    print(header)
    print("-" * len(header))
    with quiet_avalanche():
        for workload in (digits_mlp(), images_cnn()):
            print(workload.name)
            timings = {d: time_strategies(workload, TrainingSettings(epochs=args.epochs, lr=0.003, device=d))
                       for d in devices}
            for strategy in STRATEGIES:
                cells = " ".join(f"{timings[d][strategy][0]:7.2f} ({100 * timings[d][strategy][1]:4.1f})"
                                 for d in devices)
                ratio = (f" {timings['cpu'][strategy][0] / timings['cuda'][strategy][0]:8.1f}x"
                         if "cuda" in devices else "")
                print(f"  {strategy:56} {cells}{ratio}")


if __name__ == "__main__":
    main()
