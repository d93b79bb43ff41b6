"""How often does the forgetting gate promote a candidate that forgets too much, or refuse one
that forgets nothing, at the audit sizes operators have?

Ground truth from a synthetic stream with unlimited samples: a production MLP trained on task
A (Gaussian classes), models fine-tuned from it on a drifted batch B (with 0, 200 or 800
rehearsed samples of A), and candidates part of the way from production to each of those, so
that their true forgetting on A covers −2 to +6 points densely.
True forgetting is measured on 20,000 fresh samples of A, and each candidate's correctness on
every one of them is kept; an audit set of size n is then n of those samples drawn at random,
``--draws`` times per size, and each rule decides on it:

Each decision also sees a held-out slice of the new batch B (``--holdout-ratio`` samples per
audit sample, at least 5; the small streams users bring had 6–24 beside 14–53 audit samples),
drawn from 20,000 fresh samples of B, as the daemon's gate does:

- ``point``: the rule before the paired gate, forgetting (production accuracy − candidate
  accuracy) ≤ limit and the held-out gain ≥ ``gate.min_gain``;
- ``gate@95%``: the paired gate as it was until the defaults changed: promoted when the audit
  set shows forgetting below limit + ``gate.tolerance`` at 95 % (one-sided Newcombe bounds,
  ``retain.strategies.forgetting.audit_finding``) and the held-out gain is ≥ ``min_gain``; an
  unresolved finding is refused;
- ``defaults``: retain's gate at its defaults: the audit set shows forgetting within the limit
  at ``gate.confidence``, and the candidate is better on the mix of old and new data with
  probability ≥ ``gate.better_probability`` (``retain.strategies.forgetting.mix_probability``);
  When the audit set cannot resolve the limit (``gate.unresolved = "weigh"``), the candidate is
  promoted when it is better on the mix with probability ``gate.confidence``;
- ``refuse``: the defaults with ``gate.unresolved = "refuse"``;
- ``gate+gain``: the defaults with ``gate.unresolved = "accept_if_gain_significant"``;
- ``defaults@C``: the defaults at each ``--confidences`` C: the frontier between both errors.

Printed per audit size: the false-promotion rate (true forgetting ≥ limit + 1 point, promoted,
whatever it gains) and the false-refusal rate (true forgetting ≤ 0 and true gain on B ≥ 2
points, refused); then what the user gets from each rule: every candidate's true change in
accuracy on the mix of old and new data when promoted (none when refused), averaged.

    .venv/bin/python benchmarks/gate_errors.py [--draws 2000] [--limit 0.02] [--holdout-ratio 0.5]
"""

from __future__ import annotations

import argparse
import copy

import numpy as np
import torch
from torch import nn

from retain.strategies.forgetting import GateConfig, audit_finding, mix_probability
from retain.strategies.kinds import AuditFinding
from retain.strategies.paired import paired_bounds
from retain.strategies.training import limit_threads

SIZES = (10, 25, 50, 100, 200, 500, 1000, 2000)
FRESH = 20_000
DRIFT = 0.5
TARGETS = np.arange(-0.02, 0.0601, 0.005)  # true forgetting of the candidates, -2 to +6 points


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


Candidate = tuple[np.ndarray, np.ndarray, float, float, np.ndarray, np.ndarray]


def candidates(seed: int = 0) -> list[Candidate]:
    """(production right, candidate right) on the fresh samples of A, true forgetting, true gain
    on B, and (production right, candidate right) on the fresh samples of B."""
    x_a, y_a = task(400, 0.0, seed=1)  # production is a little undertrained: rehearsal can improve it
    torch.manual_seed(seed)  # production's initial weights, whatever the imports drew before
    production = train(nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 4)), x_a, y_a, 0.05, 2, seed)
    fresh_a, fresh_ya = task(FRESH, 0.0, seed=2)
    fresh_b, fresh_yb = task(FRESH, DRIFT, seed=3)
    prod_a, prod_b = correct(production, fresh_a, fresh_ya), correct(production, fresh_b, fresh_yb)
    found = []
    for index, (replay, epochs) in enumerate(((0, 8), (100, 8), (200, 8), (400, 8), (800, 8), (200, 3), (800, 3))):
        x_b, y_b = task(300, DRIFT, seed=10 + index)
        if replay:  # rehearsal keeps some of A: less forgetting, or a gain where production was undertrained
            x_r, y_r = task(replay, 0.0, seed=100 + index)
            x_b, y_b = torch.cat([x_b, x_r]), torch.cat([y_b, y_r])
        adapted = train(copy.deepcopy(production), x_b, y_b, 0.05, epochs, seed + index)
        # Candidates part of the way from production to the adapted model, each a real network
        # with its own per-sample errors: along the path, the first whose true forgetting reaches
        # each target from -2 to +6 points in half-point steps (when the path passes it).
        path = []
        for step in np.linspace(0.0, 1.0, 201)[1:]:
            candidate = copy.deepcopy(production)
            with torch.no_grad():
                for mine, start, end in zip(candidate.parameters(), production.parameters(), adapted.parameters(),
                                               strict=True):
                    mine.copy_(start + float(step) * (end - start))
            cand_a = correct(candidate, fresh_a, fresh_ya)
            path.append((candidate, cand_a, float(prod_a.mean() - cand_a.mean())))
        for target in TARGETS:
            nearest = min(path, key=lambda point: abs(point[2] - target))
            if abs(nearest[2] - target) <= 0.0025:
                candidate, cand_a, forgetting = nearest
                cand_b = correct(candidate, fresh_b, fresh_yb)
                found.append((prod_a, cand_a, forgetting, float(cand_b.mean() - prod_b.mean()), prod_b, cand_b))
    return found


def paired(first: np.ndarray, second: np.ndarray, index: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per draw (a row of ``index``): how many samples both, only the first, only the second and
    neither got right."""
    f, s = first[index], second[index]
    return (f & s).sum(1), (f & ~s).sum(1), (~f & s).sum(1), (~f & ~s).sum(1)


def promoted_by(rule: str, audit: tuple[np.ndarray, ...], holdout: tuple[np.ndarray, ...], limit: float,
                defaults: GateConfig) -> np.ndarray:
    """Per draw, whether ``rule`` promotes the candidate (``audit``: production first; ``holdout``:
    candidate first)."""
    n, m = sum(audit), sum(holdout)
    gain = (holdout[1] - holdout[2]) / m
    gain_ok = gain >= defaults.min_gain - 1e-12
    if rule == "point":
        return ((audit[1] - audit[2]) / n <= limit + 1e-12) & gain_ok
    if rule == "gate@95%":
        confidence = 0.95
    elif rule.startswith("defaults@"):
        confidence = float(rule.removeprefix("defaults@"))
    else:
        confidence = defaults.confidence
    lower, upper = paired_bounds(*audit, confidence)
    finding = audit_finding(lower, upper, limit, defaults.tolerance)
    if rule == "gate@95%":
        return (finding == AuditFinding.WITHIN) & gain_ok
    probability = mix_probability(audit, holdout, defaults.new_data_weight, defaults.min_gain)
    promoted = (finding == AuditFinding.WITHIN) & (probability >= defaults.better_probability)
    unresolved = finding == AuditFinding.UNRESOLVED
    if rule == "gate+gain":
        return promoted | unresolved & (paired_bounds(*holdout, confidence)[0] > defaults.min_gain)
    if rule == "refuse":
        return promoted
    return promoted | unresolved & (probability >= confidence)  # gate.unresolved = "weigh"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=2000)
    parser.add_argument("--limit", type=float, default=GateConfig().max_forgetting)
    parser.add_argument("--holdout-ratio", type=float, default=0.5, help="held-out samples of B per audit sample")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--confidences", type=float, nargs="*", default=[0.7, 0.9],
                        help="gate.confidence values to print beside the default (the frontier)")
    args = parser.parse_args()
    limit_threads(args.threads)
    defaults = GateConfig()
    pool = [c for c in candidates() if -0.02 <= c[2] <= 0.06]  # true forgetting from -2 to +6 points
    too_much = [c for c in pool if c[2] >= args.limit + 0.01]
    worth_it = [c for c in pool if c[2] <= 0 and c[3] >= 0.02]
    discordance = [float((c[0] != c[1]).mean()) for c in pool]
    print(f"{len(pool)} candidates, true forgetting {min(c[2] for c in pool):+.3f} .. {max(c[2] for c in pool):+.3f}, "
          f"true gain on B {min(c[3] for c in pool):+.3f} .. {max(c[3] for c in pool):+.3f}, discordance with "
          f"production {min(discordance):.3f} .. {max(discordance):.3f}; {len(too_much)} forget >= limit + 1 pt, "
          f"{len(worth_it)} forget <= 0 and gain >= 2 pts; limit {args.limit}, tolerance {defaults.tolerance}, "
          f"min gain {defaults.min_gain}, {args.draws} draws per size")
    rng = np.random.default_rng(0)
    rules = ("point", "gate@95%", "defaults", "refuse", "gate+gain", *(f"defaults@{c:g}" for c in args.confidences))
    width = 11 * len(rules) - 1
    print(f"defaults: gate.confidence {defaults.confidence}, gate.better_probability {defaults.better_probability}, "
          f"gate.new_data_weight {defaults.new_data_weight}")
    print(f"{'audit':>6} {'held-out':>8}  {'false promotions':>{width}}  {'false refusals':>{width}}")
    print(f"{'':>6} {'':>8}  " + " ".join(f"{r:>10}" for r in rules) + "  " + " ".join(f"{r:>10}" for r in rules))
    stakes: dict[int, dict[str, float]] = {}
    for n in SIZES:
        m = max(5, round(n * args.holdout_ratio))
        rates = {}
        groups = (("promote", too_much, True), ("refuse", worth_it, False), ("all", pool, None))
        for name, group, promoted_is_error in groups:
            errors: dict[str, list[float]] = {rule: [] for rule in rules}
            for prod_a, cand_a, forgetting, gain, prod_b, cand_b in group:
                audit = paired(prod_a, cand_a, rng.integers(0, FRESH, size=(args.draws, n)))
                holdout = paired(cand_b, prod_b, rng.integers(0, FRESH, size=(args.draws, m)))
                benefit = defaults.new_data_weight * gain - (1 - defaults.new_data_weight) * forgetting
                for rule in rules:
                    promoted = promoted_by(rule, audit, holdout, args.limit, defaults)
                    if promoted_is_error is None:  # what the user gets: the change on the mix, promoted or not
                        errors[rule].append(promoted.mean() * benefit)
                    else:
                        errors[rule].append(promoted.mean() if promoted_is_error else 1 - promoted.mean())
            rates[name] = {rule: float(np.mean(values)) if values else float("nan") for rule, values in errors.items()}
        stakes[n] = rates["all"]
        print(f"{n:>6} {m:>8}  " + " ".join(f"{rates['promote'][r]:>10.1%}" for r in rules) + "  "
              + " ".join(f"{rates['refuse'][r]:>10.1%}" for r in rules), flush=True)

    # The user's side: each candidate's true change in accuracy on the mix the gate weighs
    # (gain on B and forgetting on A, weighted by gate.new_data_weight) when promoted, nothing when
    # refused, averaged over all candidates; "oracle" promotes exactly those whose change is positive.
    oracle = float(np.mean([max(0.0, defaults.new_data_weight * c[3] - (1 - defaults.new_data_weight) * c[2])
                            for c in pool]))
    print(f"\nmean change in accuracy on the mix ({defaults.new_data_weight:.0%} new data) over all {len(pool)} "
          f"candidates, points (oracle {100 * oracle:.2f})")
    print(f"{'audit':>6}  " + " ".join(f"{r:>10}" for r in rules))
    for n, by_rule in stakes.items():
        print(f"{n:>6}  " + " ".join(f"{100 * by_rule[r]:>10.2f}" for r in rules))

if __name__ == "__main__":
    main()
