"""One large batch through `retain run --once` (a real daemon process) per model size and
batch size: seconds per phase and the process's peak RSS against the batch's bytes plus the
model's.

    .venv/bin/python benchmarks/scale.py [--sizes 1000 10000 100000] [--models small large]
        [--device cpu|cuda] [--epochs 1]

The data are 3x32x32 float32 images of ten Gaussian classes (12 KB a sample), written as .npz;
"small" is an MLP 3072-128-64 (0.4M parameters), "large" an MLP 3072-3072-512 (11M). Version 1
is trained on 1,000 samples; the batch then goes through the daemon with `finetune` pinned.
Peak RSS is the daemon process's own high-water mark (VmHWM), torch, Avalanche and the
interpreter included: about 1 GB before any batch.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from processes import high_water_mark
from retain.daemon.config import dump_config

MODELS = {
    "small": {"hidden": [128, 64]},
    "large": {"hidden": [3072, 512]},
}
SHAPE = (3, 32, 32)
PHASES = ("load", "shift", "probe", "training", "gate", "artifacts", "registry")


def parameters(hidden: list[int], classes: int = 10) -> int:
    widths = [int(np.prod(SHAPE)), *hidden, classes]
    return sum(a * b + b for a, b in zip(widths, widths[1:], strict=False))


def write_images(path: Path, n: int, seed: int) -> int:
    """``n`` samples of ten classes, each a Gaussian around its own mean image; returns bytes of x."""
    rng = np.random.default_rng(seed)
    means = np.random.default_rng(0).normal(0.0, 1.0, (10, *SHAPE)).astype(np.float32)
    y = rng.integers(0, 10, n)
    x = means[y] + rng.normal(0.0, 2.0, (n, *SHAPE)).astype(np.float32)
    np.savez(path, x=x, y=y)
    return x.nbytes


def retain(config: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "retain", "--config", str(config), *args],
                          capture_output=True, text=True, check=True)


def run_once(config: Path) -> tuple[float, int, dict[str, float]]:
    """Wall seconds, peak RSS in bytes and phase seconds of one `retain run --once`."""
    log = config.parent / "daemon.log"
    started = time.perf_counter()
    peak = 0
    with log.open("w") as handle:
        process = subprocess.Popen([sys.executable, "-m", "retain", "--config", str(config), "--log-format", "json",
                                    "run", "--once"], stdout=subprocess.DEVNULL, stderr=handle)
        # The child's own high-water mark (VmHWM), read until it exits: the rusage wait4 reports
        # starts from the parent's peak at fork, and this benchmark's parent builds the batches.
        while process.poll() is None:
            peak = max(peak, high_water_mark(process.pid))
            time.sleep(0.05)
    wall = time.perf_counter() - started
    stderr = log.read_text()
    if process.returncode:
        raise SystemExit(f"retain run --once failed:\n{stderr[-3000:]}")
    timed = [json.loads(line) for line in stderr.splitlines() if '"batch timed"' in line]
    if not timed:
        raise SystemExit(f"no batch was timed:\n{stderr[-3000:]}")
    return wall, peak, timed[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--models", nargs="+", default=["small", "large"], choices=sorted(MODELS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()

    print(f"One batch of 3x32x32 images through `retain run --once`, finetune, {args.epochs} epoch(s), "
          f"device {args.device}, one thread")
    print(f"{'model':>6} {'params':>7} {'n':>7} {'batch MB':>9} {'wall s':>7} "
          + " ".join(f"{p:>9}" for p in PHASES) + f" {'peak RSS MB':>12} {'RSS/(3B+M)':>11}")
    for name in args.models:
        for n in args.sizes:
            with tempfile.TemporaryDirectory() as scratch:
                root = Path(scratch)
                config = root / "retain.toml"
                config.write_text(dump_config({
                    "paths": {"workdir": ".", "inbox": "inbox"},
                    "registry": {"url": "sqlite:///registry.db", "auto_promote": True},
                    "model": {"factory": "retain.strategies.models:mlp", "kwargs": MODELS[name], "head": "head"},
                    "training": {"epochs": args.epochs, "batch_size": 256, "lr": 0.001, "device": args.device,
                                 "threads": 1},
                    "policy": {"strategy": "finetune", "fallback": False},
                    "data": {"max_file_bytes": 8 << 30, "max_bytes_in_memory": 8 << 30},
                    "metrics": {"enabled": False},
                }))
                write_images(root / "init.npz", 1000, seed=1)
                retain(config, "init", "--data", str(root / "init.npz"), "--train")
                (root / "inbox").mkdir(exist_ok=True)
                batch_bytes = write_images(root / "inbox" / "batch.npz", n, seed=2)
                wall, peak, timed = run_once(config)
            count = parameters(MODELS[name]["hidden"])
            budget = 3 * batch_bytes + 4 * count
            print(f"{name:>6} {count / 1e6:>6.1f}M {n:>7} {batch_bytes / 2**20:>9.1f} {wall:>7.1f} "
                  + " ".join(f"{timed.get(p, 0.0):>9.2f}" for p in PHASES)
                  + f" {peak / 2**20:>12.0f} {peak / budget:>10.2f}x", flush=True)


if __name__ == "__main__":
    main()
