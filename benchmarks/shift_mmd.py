"""MMD permutation test: retain's one-matrix-product permutations against the common
per-permutation recomputation (what alibi-detect, TorchDrift and frouros do), same data,
same kernel, same permutations, one thread.

    .venv/bin/python benchmarks/shift_mmd.py [--sizes 250 1000 2000] [--permutations 100]
"""

from __future__ import annotations

import argparse
import time

import torch

from retain.strategies.shift import mmd_permutation_test
from retain.strategies.training import limit_threads


def naive_permutation_test(x: torch.Tensor, y: torch.Tensor, permutations: int, seed: int = 0) -> tuple[float, float]:
    """Baseline: re-index the kernel matrix and average its blocks for every permutation."""
    generator = torch.Generator().manual_seed(seed)
    z = torch.cat([x, y]).double()
    n = len(x)
    sq = torch.cdist(z, z).square()
    bandwidth = float(sq[~torch.eye(len(z), dtype=torch.bool)].median())
    kernel = torch.exp(-sq / bandwidth)

    def statistic(order: torch.Tensor) -> float:
        k = kernel[order][:, order]
        return float(k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean())

    observed = statistic(torch.arange(len(z)))
    exceed = sum(statistic(torch.randperm(len(z), generator=generator)) >= observed for _ in range(permutations))
    return observed, (exceed + 1) / (permutations + 1)


def timed(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[250, 500, 1000])
    parser.add_argument("--permutations", type=int, default=100)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    limit_threads(args.threads)

    print(f"MMD permutation test, d={args.dim}, {args.permutations} permutations, {args.threads} thread(s)")
    print(f"{'n per side':>10} {'retain s':>10} {'per-perm s':>11} {'speed-up':>9} {'p retain':>9} {'p naive':>8}")
    for n in args.sizes:
        g = torch.Generator().manual_seed(n)
        x = torch.randn(n, args.dim, generator=g)
        y = torch.randn(n, args.dim, generator=g) + 0.05
        ours = timed(lambda: mmd_permutation_test(x, y, args.permutations, max_samples=n))
        naive = timed(lambda: naive_permutation_test(x, y, args.permutations), repeat=1)
        p_ours = mmd_permutation_test(x, y, args.permutations, max_samples=n).p_value
        p_naive = naive_permutation_test(x, y, args.permutations)[1]
        print(f"{n:>10} {ours:>10.3f} {naive:>11.3f} {naive / ours:>8.1f}x {p_ours:>9.3f} {p_naive:>8.3f}")


if __name__ == "__main__":
    main()
