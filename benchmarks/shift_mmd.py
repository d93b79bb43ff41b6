"""The shift test beside alibi-detect's MMDDrift: detection rates on Gaussian mean shifts at
equal α, false positives over null trials, and time per test up to 100,000 samples a side,
one thread, in the same run.

    .venv/bin/python benchmarks/shift_mmd.py [--alibi-python .venv-alibi/bin/python]

retain tests every sample with random Fourier features and block permutations
(strategies/shift.py); "retain, 500/side" is the same test subsampled to 500 per side, as
retain's default was before. alibi-detect computes the full kernel matrix with the same
median-heuristic bandwidth, so it runs only at the smaller sizes (`make bench` installs it
into .venv-alibi; without it the alibi columns are left out).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from shift_data import gaussian_pair

from retain.strategies.shift import mmd_permutation_test
from retain.strategies.training import limit_threads

HERE = Path(__file__).parent


def detected(p_values: list[float], alpha: float) -> float:
    return sum(p < alpha for p in p_values) / len(p_values)


def retain_p_values(n: int, dim: int, shift: float, trials: int, max_samples: int | None) -> list[float]:
    return [mmd_permutation_test(*gaussian_pair(n, dim, shift, trial), max_samples=max_samples, seed=trial).p_value
            for trial in range(trials)]


def run_alibi(python: str, args: argparse.Namespace) -> dict:
    shifts = [shift for shift in args.shifts if shift > 0]  # false positives are retain's to show
    command = [python, str(HERE / "alibi_mmd.py"), "--shifts", *map(str, shifts), "--trials",
               str(args.alibi_trials), "--n", str(args.n), "--dim", str(args.dim),
               "--sizes", *map(str, [n for n in args.sizes if n <= args.alibi_max_size])]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def best_time(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alibi-python", default=str(HERE.parent / ".venv-alibi" / "bin" / "python"))
    parser.add_argument("--n", type=int, default=1000, help="samples per side of the detection trials")
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--shifts", type=float, nargs="+", default=[0.0, 0.1, 0.2, 0.3])
    parser.add_argument("--trials", type=int, default=200, help="retain's trials per shift")
    parser.add_argument("--alibi-trials", type=int, default=60, help="alibi-detect's per shift (about 5 s each)")
    parser.add_argument("--alpha", type=float, default=0.05, help="alibi-detect's default p_val")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--alibi-max-size", type=int, default=1000)
    args = parser.parse_args()
    limit_threads(1)

    alibi = run_alibi(args.alibi_python, args) if Path(args.alibi_python).exists() else None
    if alibi is None:
        print(f"alibi-detect not found at {args.alibi_python}: its columns are left out", file=sys.stderr)

    print(f"Detection rate at alpha={args.alpha}, n={args.n} per side, d={args.dim}, mean shift along one axis")
    head = f"{'shift':>6} {'retain':>8} {'retain, 500/side':>17}"
    if alibi:
        head += f" {'alibi':>7} {'retain, same trials':>20} {'trials':>7}"
    print(head + f" {'retain trials':>14}")
    for shift in args.shifts:
        ours = retain_p_values(args.n, args.dim, shift, args.trials, None)
        subsampled = retain_p_values(args.n, args.dim, shift, args.trials, 500)
        line = f"{shift:>6.2f} {detected(ours, args.alpha):>8.3f} {detected(subsampled, args.alpha):>17.3f}"
        if alibi and str(shift) in alibi["p_values"]:
            theirs = alibi["p_values"][str(shift)]
            paired = detected(ours[:len(theirs)], args.alpha)
            line += f" {detected(theirs, args.alpha):>7.3f} {paired:>20.3f} {len(theirs):>7}"
        elif alibi:
            line += f" {'-':>7} {'-':>20} {'-':>7}"
        print(line + f" {args.trials:>14}")

    print(f"\nSeconds per test, d={args.dim}, one thread (retain: best of 3)")
    print(f"{'n per side':>10} {'retain s':>9}" + (f" {'alibi s':>8} {'alibi / retain':>15}" if alibi else ""))
    for n in args.sizes:
        x, y = gaussian_pair(n, args.dim, 0.0, trial=0)
        ours = best_time(lambda: mmd_permutation_test(x, y), repeat=3)
        line = f"{n:>10} {ours:>9.3f}"
        if alibi and str(n) in alibi["seconds"]:
            theirs = alibi["seconds"][str(n)]
            line += f" {theirs:>8.2f} {theirs / ours:>14.0f}x"
        elif alibi:
            line += f" {'-':>8} {'-':>15}"
        print(line)


if __name__ == "__main__":
    main()
