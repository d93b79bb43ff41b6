"""alibi-detect's MMDDrift on benchmarks/shift_data.py's problems, for benchmarks/shift_mmd.py.

Runs in the environment `make bench` gives alibi-detect (.venv-alibi); prints one JSON object:
{"p_values": {shift: [...]}, "seconds": {n: s}}.

    .venv-alibi/bin/python benchmarks/alibi_mmd.py --shifts 0 0.2 --trials 40 --sizes 1000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from shift_data import gaussian_pair  # noqa: E402


def p_value(x: torch.Tensor, y: torch.Tensor, permutations: int) -> float:
    from alibi_detect.cd import MMDDrift

    detector = MMDDrift(x.numpy(), backend="pytorch", n_permutations=permutations, device="cpu")
    return float(detector.predict(y.numpy())["data"]["p_val"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shifts", type=float, nargs="+", required=True)
    parser.add_argument("--trials", type=int, required=True)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--sizes", type=int, nargs="*", default=[])
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--permutations", type=int, default=100)
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")  # torch.jit deprecation notices from alibi-detect's import

    p_values = {str(shift): [p_value(*gaussian_pair(args.n, args.dim, shift, trial), args.permutations)
                             for trial in range(args.trials)] for shift in args.shifts}
    seconds = {}
    for n in args.sizes:
        x, y = gaussian_pair(n, args.dim, 0.0, trial=0)
        start = time.perf_counter()
        p_value(x, y, args.permutations)
        seconds[str(n)] = time.perf_counter() - start
    print(json.dumps({"p_values": p_values, "seconds": seconds}))


if __name__ == "__main__":
    main()
