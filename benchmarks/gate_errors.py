"""How often does the forgetting gate promote a candidate that forgets too much, or refuse one
that forgets nothing, at the audit sizes operators have?

Ground truth from a synthetic stream with unlimited samples: a production MLP trained on task
A (Gaussian classes), models fine-tuned from it on a drifted batch B (with 0, 200 or 800
rehearsed samples of A), and candidates part of the way from production to each of those, so
that their true forgetting on A covers −2 to +6 points densely.
True forgetting is measured on 20,000 fresh samples of A, and each candidate's correctness on
every one of them is kept; an audit set of size n is then n of those samples drawn at random,
``--draws`` times per size, and each rule decides on it:

- ``point``: today's rule, forgetting (production accuracy − candidate accuracy) ≤ limit;
- ``bound``: the paired rule, the one-sided ``--confidence`` upper bound on forgetting
  (Newcombe's hybrid score interval for a paired difference of proportions) ≤ limit;
- ``bound+1pt``: that bound below limit + 1 point, the size of a violation counted as a
  false promotion (so its false-promotion rate is held to 1 − confidence by construction).

Printed per audit size: the false-promotion rate (true forgetting ≥ limit + 1 point, promoted)
and the false-refusal rate (true forgetting ≤ 0, refused). The new-data side of the gate is
left out: every candidate here gains on B.

    .venv/bin/python benchmarks/gate_errors.py [--draws 2000] [--limit 0.02] [--confidence 0.95]
"""

from __future__ import annotations

import argparse
import copy
import math

import numpy as np
import torch
from torch import nn

from retain.strategies.training import limit_threads

SIZES = (25, 50, 100, 200, 500, 1000, 2000)
FRESH = 20_000
DRIFT = 0.5


def task(n: int, drift: float, seed: int, dim: int = 10, classes: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Overlapping Gaussian classes. ``drift`` moves each class's mean part of the way to the
    next class's (task B): learning B then costs accuracy on A, as a real drift does."""
    centres = torch.Generator().manual_seed(0)
    means = torch.randn(classes, dim, generator=centres) * 1.2
    means = (1 - drift) * means + drift * means.roll(1, dims=0)
    draw = torch.Generator().manual_seed(seed)
    y = torch.randint(classes, (n,), generator=draw)
    return means[y] + torch.randn(n, dim, generator=draw), y


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, lr: float, epochs: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    for _ in range(epochs):
        for index in torch.randperm(len(y)).split(32):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[index]), y[index]).backward()
            optimizer.step()
    return model


def correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return (model(x).argmax(1) == y).numpy()


def wilson(successes: np.ndarray, n: int, z: float) -> tuple[np.ndarray, np.ndarray]:
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def forgetting_upper_bound(both: np.ndarray, only_production: np.ndarray, only_candidate: np.ndarray,
                           neither: np.ndarray, n: int, confidence: float) -> np.ndarray:
    """One-sided upper bound on production accuracy − candidate accuracy from paired counts
    (Newcombe 1998, method 10), vectorised over draws."""
    z = _z(confidence)
    p1, p2 = (both + only_production) / n, (both + only_candidate) / n
    l1, u1 = wilson(both + only_production, n, z)
    l2, u2 = wilson(both + only_candidate, n, z)
    denominator = np.sqrt((both + only_production) * (only_candidate + neither) * (both + only_candidate)
                          * (only_production + neither))
    phi = np.divide(both * neither - only_production * only_candidate, denominator,
                    out=np.zeros_like(denominator, dtype=float), where=denominator > 0)
    spread = (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2
    return (p1 - p2) + np.sqrt(np.maximum(spread, 0))


def _z(confidence: float) -> float:
    return math.sqrt(2) * _erfinv(2 * confidence - 1)


def _erfinv(value: float) -> float:
    return float(torch.erfinv(torch.tensor(value, dtype=torch.float64)))


def candidates(seed: int = 0) -> list[tuple[np.ndarray, np.ndarray, float, float]]:
    """(production right, candidate right) on the fresh samples of A, true forgetting, true gain on B."""
    x_a, y_a = task(400, 0.0, seed=1)  # production is a little undertrained: rehearsal can improve it
    production = train(nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 4)), x_a, y_a, 0.05, 2, seed)
    fresh_a, fresh_ya = task(FRESH, 0.0, seed=2)
    fresh_b, fresh_yb = task(FRESH, DRIFT, seed=3)
    prod_a, prod_b = correct(production, fresh_a, fresh_ya), correct(production, fresh_b, fresh_yb)
    found = []
    for index, replay in enumerate((0, 200, 800)):
        x_b, y_b = task(300, DRIFT, seed=10 + index)
        if replay:  # rehearsal keeps some of A: less forgetting, or a gain where production was undertrained
            x_r, y_r = task(replay, 0.0, seed=100 + index)
            x_b, y_b = torch.cat([x_b, x_r]), torch.cat([y_b, y_r])
        adapted = train(copy.deepcopy(production), x_b, y_b, 0.05, 8, seed + index)
        # Candidates part of the way from production to the adapted model: a dense range of true
        # forgetting, each a real network with its own per-sample errors.
        for step in np.linspace(0.1, 1.0, 19):
            candidate = copy.deepcopy(production)
            with torch.no_grad():
                for mine, start, end in zip(candidate.parameters(), production.parameters(), adapted.parameters()):
                    mine.copy_(start + float(step) * (end - start))
            cand_a, cand_b = correct(candidate, fresh_a, fresh_ya), correct(candidate, fresh_b, fresh_yb)
            found.append((prod_a, cand_a, float(prod_a.mean() - cand_a.mean()), float(cand_b.mean() - prod_b.mean())))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=2000)
    parser.add_argument("--limit", type=float, default=0.02)
    parser.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    limit_threads(args.threads)
    pool = candidates()
    pool = [c for c in pool if -0.02 <= c[2] <= 0.06]  # true forgetting from -2 to +6 points
    too_much = [c for c in pool if c[2] >= args.limit + 0.01]
    harmless = [c for c in pool if c[2] <= 0 and c[3] > 0]
    print(f"{len(pool)} candidates, true forgetting {min(c[2] for c in pool):+.3f} .. {max(c[2] for c in pool):+.3f}; "
          f"{len(too_much)} forget >= limit + 1 pt, {len(harmless)} forget <= 0 and gain; "
          f"limit {args.limit}, confidence {args.confidence}, {args.draws} audit draws per size")
    rng = np.random.default_rng(0)
    rules = ("point", "bound", "bound+1pt")
    print(f"{'audit':>6}  {'false promotions':>30}  {'false refusals':>30}")
    print(f"{'':>6}  " + " ".join(f"{r:>10}" for r in rules) + "  " + " ".join(f"{r:>10}" for r in rules))
    for n in SIZES:
        rates = {}
        for name, group, promoted_is_error in (("promote", too_much, True), ("refuse", harmless, False)):
            errors = {rule: [] for rule in ("point", "bound", "bound+1pt")}
            for prod, cand, _, _ in group:
                index = rng.integers(0, FRESH, size=(args.draws, n))
                p, c = prod[index], cand[index]
                both, only_p = (p & c).sum(1), (p & ~c).sum(1)
                only_c, neither = (~p & c).sum(1), (~p & ~c).sum(1)
                point_ok = (only_p - only_c) / n <= args.limit + 1e-12
                upper = forgetting_upper_bound(both, only_p, only_c, neither, n, args.confidence)
                decided = {"point": point_ok, "bound": upper <= args.limit, "bound+1pt": upper < args.limit + 0.01}
                for rule, ok in decided.items():
                    errors[rule].append(ok.mean() if promoted_is_error else 1 - ok.mean())
            rates[name] = {rule: float(np.mean(values)) if values else float("nan") for rule, values in errors.items()}
        print(f"{n:>6}  " + " ".join(f"{rates['promote'][r]:>10.1%}" for r in rules) + "  "
              + " ".join(f"{rates['refuse'][r]:>10.1%}" for r in rules), flush=True)


if __name__ == "__main__":
    main()
