"""Bytes each version adds to the artifact store for its replay memory, over a stream of
batches: the memory stored whole per version (retain before chunks) against chunks per
source batch and a manifest per version, in the same run.

    .venv/bin/python benchmarks/replay_storage.py [--batches 20] [--batch-size 250] [--capacity 1000]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from retain.daemon.versions import read_memory, save_memory
from retain.registry import ArtifactStore
from retain.strategies.datasets import digits
from retain.strategies.replay import ReplayMemory, remember, split_holdout


def stored_bytes(root: Path) -> int:
    return sum(path.stat().st_size for path in root.rglob("*") if path.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--capacity", type=int, default=1000)
    args = parser.parse_args()

    x, y = digits()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as whole_dir, tempfile.TemporaryDirectory() as chunked_dir:
        whole, chunked = ArtifactStore(Path(whole_dir)), ArtifactStore(Path(chunked_dir))
        memory = ReplayMemory.empty((x.shape[1],))
        sample_bytes = x.shape[1] * 4 + 8
        print(f"{args.batches} batches of {args.batch_size} digits, replay capacity {args.capacity}")
        print(f"{'version':>7} {'memory':>7} {'new samples':>12} {'whole: added B':>15} {'chunks: added B':>16}")
        totals = [0, 0]
        for version in range(1, args.batches + 1):
            picked = rng.choice(len(y), args.batch_size, replace=False)
            train, holdout = split_holdout(torch.from_numpy(x[picked]).float(), torch.from_numpy(y[picked]).long(),
                                           0.25, seed=version)
            memory = remember(memory, train, holdout, source=version, capacity=args.capacity,
                              audit_fraction=0.3, seed=version)
            before = stored_bytes(Path(whole_dir)), stored_bytes(Path(chunked_dir))
            whole.put_tensors(memory.to_tensors())
            memory = read_memory(save_memory(memory, chunked), chunked)  # as the next batch finds it
            added = stored_bytes(Path(whole_dir)) - before[0], stored_bytes(Path(chunked_dir)) - before[1]
            totals = [totals[0] + added[0], totals[1] + added[1]]
            new = int((memory.source == version).sum())
            print(f"{version:>7} {len(memory):>7} {new:>12} {added[0]:>15,} {added[1]:>16,}")
        print(f"total after {args.batches} versions: whole {totals[0]:,} B, chunks {totals[1]:,} B "
              f"({totals[0] / totals[1]:.1f}x less); a sample is {sample_bytes} B of x and y")


if __name__ == "__main__":
    main()
