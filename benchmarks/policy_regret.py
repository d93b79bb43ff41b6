"""Does the policy pick the right strategy? Five streams, every strategy on every batch.

For each batch retain measures the shift and lets the policy choose, but also trains all
three strategies from the same production model and memory, and scores each candidate by
its average accuracy over the test sets of every experience seen so far. The hindsight-best
strategy is the one with the highest score; the regret is best score minus the chosen one's.
The stream then goes on as the daemon would: the chosen candidate (or its fallback) becomes
production only if it passes the forgetting gate.

Side by side: Avalanche's own Naive, Replay and EWC on the same experiences (init data, then
every batch), same model, epochs, batch size and base learning rate.

    .venv/bin/python benchmarks/policy_regret.py [--streams NAME ...] [--epochs 5] [--seed 0]
"""

from __future__ import annotations

import argparse
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import nn

from strategies.adapt import train_candidate
from strategies.forgetting import GateConfig, evaluate_gate, verdict
from strategies.measure import measure_batch
from strategies.meta import ReptileSettings
from strategies.models import mlp, predict
from strategies.policy import STRATEGIES, Choice, PolicyConfig, ShiftHistoryEntry, choose, hyperparameters
from strategies.replay import ReplayMemory, holdout_split, remember
from strategies.shift import ShiftThresholds
from strategies.training import TrainingSettings, quiet_avalanche, tensor_dataset, train_initial

Data = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class Experience:
    name: str
    train: Data  # what arrives in the inbox
    test: Data  # never seen by anyone; scores every method


@dataclass(frozen=True)
class Stream:
    name: str
    dim: int
    max_classes: int
    experiences: list[Experience]  # the first is the init data


# ----------------------------------------------------------------------------- streams


def _digits(seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    order = np.random.default_rng(seed).permutation(len(data.target))
    return (data.data[order] / 16.0).astype(np.float32), data.target[order].astype(np.int64)


def _experience(name: str, x: np.ndarray, y: np.ndarray, test_fraction: float = 0.3) -> Experience:
    cut = int(len(y) * (1 - test_fraction))
    tx, ty = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), torch.from_numpy(y.astype(np.int64))
    return Experience(name, (tx[:cut], ty[:cut]), (tx[cut:], ty[cut:]))


def class_incremental(seed: int) -> Stream:
    x, y = _digits(seed)
    groups = [(0, 1, 2, 3), (4, 5), (6, 7), (8, 9)]
    experiences = [_experience(f"classes {g}", x[np.isin(y, g)], y[np.isin(y, g)]) for g in groups]
    return Stream("digits class-incremental", 64, 10, experiences)


def rotating_domains(seed: int) -> Stream:
    from scipy.ndimage import rotate

    x, y = _digits(seed)
    chunks = np.array_split(np.arange(len(y)), 6)
    experiences = []
    for step, index in enumerate(chunks):
        angle = 15 * step
        images = rotate(x[index].reshape(-1, 8, 8), angle, axes=(1, 2), reshape=False, order=1, mode="constant")
        experiences.append(_experience(f"rotated {angle} deg", images.reshape(-1, 64), y[index]))
    return Stream("digits rotating domains", 64, 10, experiences)


def noise_contrast(seed: int) -> Stream:
    x, y = _digits(seed)
    rng = np.random.default_rng(seed + 1)
    chunks = np.array_split(np.arange(len(y)), 5)
    experiences = []
    for step, index in enumerate(chunks):
        contrast, noise = 1.0 - 0.15 * step, 0.1 * step
        drifted = np.clip(0.5 + contrast * (x[index] - 0.5) + rng.normal(0, noise, x[index].shape), 0, 1)
        experiences.append(_experience(f"contrast {contrast:.2f} noise {noise:.1f}", drifted, y[index]))
    return Stream("digits noise/contrast drift", 64, 10, experiences)


def rotating_hyperplane(seed: int, dim: int = 10, n: int = 500, steps: int = 5) -> Stream:
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(dim, 2)))[0].T  # the plane the normal rotates in
    experiences = []
    for step in range(steps + 1):
        angle = math.radians(25 * step)
        normal = math.cos(angle) * basis[0] + math.sin(angle) * basis[1]
        x = rng.normal(size=(n, dim)).astype(np.float32)
        experiences.append(_experience(f"normal at {25 * step} deg", x, (x @ normal > 0).astype(np.int64)))
    return Stream("synthetic rotating hyperplane", dim, 2, experiences)


def concept_swaps(seed: int, dim: int = 8, classes: int = 4, n: int = 500) -> Stream:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 2.5, size=(classes, dim))
    swapped = np.array([1, 0, 3, 2])  # concept B: the same clusters, pairs of labels swapped
    experiences = []
    for step, concept in enumerate("AABABA"):
        cluster = rng.integers(0, classes, n)
        x = (centres[cluster] + rng.normal(size=(n, dim))).astype(np.float32)
        y = cluster if concept == "A" else swapped[cluster]
        experiences.append(_experience(f"concept {concept}", x, y.astype(np.int64)))
    return Stream("synthetic abrupt concept swaps", dim, classes, experiences)


STREAMS: dict[str, Callable[[int], Stream]] = {
    "class-incremental": class_incremental,
    "rotating-domains": rotating_domains,
    "noise-contrast": noise_contrast,
    "rotating-hyperplane": rotating_hyperplane,
    "concept-swaps": concept_swaps,
}


# ------------------------------------------------------------------------- evaluation


def test_accuracies(model: nn.Module, stream: Stream, upto: int) -> list[float]:
    """Accuracy on the test set of every experience 0..upto."""
    out = []
    for experience in stream.experiences[: upto + 1]:
        x, y = experience.test
        out.append(float((predict(model, x) == y).double().mean()))
    return out


@dataclass
class Run:
    """An accuracy matrix: row t = test accuracies after learning experience t."""

    rows: list[list[float]] = field(default_factory=list)

    @property
    def final_accuracy(self) -> float:
        return float(np.mean(self.rows[-1]))

    @property
    def forgetting(self) -> float:
        """Mean over earlier experiences of (accuracy right after learning it − final accuracy)."""
        last = self.rows[-1]
        drops = [self.rows[k][k] - last[k] for k in range(len(last) - 1)]
        return float(np.mean(drops)) if drops else 0.0


@dataclass
class PolicyRecord:
    batch: str
    severity: str
    picked: str
    rule: str
    best: str
    scores: dict[str, float]
    decision: str
    forgetting: dict[str, float]
    probe: float | None
    accuracy_drop: float
    p_value: float


# ------------------------------------------------------------------------------ retain


@dataclass(frozen=True)
class Setup:
    training: TrainingSettings
    policy: PolicyConfig = PolicyConfig()
    gate: GateConfig = GateConfig()
    thresholds: ShiftThresholds = ShiftThresholds()
    reptile: ReptileSettings = ReptileSettings()
    capacity: int = 1000
    audit_fraction: float = 0.3
    holdout_fraction: float = 0.25
    hidden: tuple[int, ...] = (128, 64)


def new_model(stream: Stream, classes: int, setup: Setup, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return mlp((stream.dim,), classes, hidden=setup.hidden)


def run_retain(stream: Stream, setup: Setup, seed: int) -> tuple[Run, list[PolicyRecord]]:
    first = stream.experiences[0]
    x0, y0 = first.train
    train_idx, holdout_idx = holdout_split(y0, setup.holdout_fraction, seed)
    production = train_initial(new_model(stream, int(y0.max()) + 1, setup, seed), x0[train_idx], y0[train_idx],
                               setup.training)
    memory = remember(ReplayMemory.empty((stream.dim,)), (x0[train_idx], y0[train_idx]),
                      (x0[holdout_idx], y0[holdout_idx]), 0, setup.capacity, setup.audit_fraction, seed)
    run = Run([test_accuracies(production, stream, 0)])
    history: list[ShiftHistoryEntry] = []
    records = []
    for t, experience in enumerate(stream.experiences[1:], start=1):
        x, y = experience.train
        train_idx, holdout_idx = holdout_split(y, setup.holdout_fraction, seed + t)
        train, holdout = (x[train_idx], y[train_idx]), (x[holdout_idx], y[holdout_idx])
        report = measure_batch(production, "head", memory, x, y, stream.max_classes, setup.thresholds, seed + t)
        choice = choose(report, tuple(history), setup.policy, setup.training.lr)

        candidates, scores, forgetting = {}, {}, {}
        for strategy in STRATEGIES:
            option = Choice(strategy, hyperparameters(strategy, report, setup.policy, setup.training.lr), "", strategy)
            candidates[strategy] = train_candidate(option, production, train, memory,
                                                   replace(setup.training, seed=seed + t), reptile=setup.reptile)
            scores[strategy] = float(np.mean(test_accuracies(candidates[strategy], stream, t)))
            forgetting[strategy] = evaluate_gate(production, candidates[strategy], memory.audit_groups(),
                                                 holdout).forgetting

        decision = "rejected"
        for strategy in [choice.strategy] + ([choice.fallback] if choice.fallback else []):
            gate = evaluate_gate(production, candidates[strategy], memory.audit_groups(), holdout)
            if verdict(gate, setup.gate).accepted:
                production, decision = candidates[strategy], f"{strategy} accepted"
                memory = remember(memory, train, holdout, t, setup.capacity, setup.audit_fraction, seed + t)
                break
        history.append(ShiftHistoryEntry(t, report.severity, report.p_value, report.novel_classes))
        records.append(PolicyRecord(experience.name, report.severity, choice.strategy, choice.rule,
                                    max(scores, key=scores.get), scores, decision, forgetting, report.probe_accuracy,
                                    report.accuracy_drop, report.p_value))
        run.rows.append(test_accuracies(production, stream, t))
    return run, records


# --------------------------------------------------------------------------- baselines


def run_avalanche(stream: Stream, setup: Setup, method: str, seed: int) -> Run:
    from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
    from avalanche.training import EWC, Naive, Replay
    from avalanche.training.plugins import EvaluationPlugin

    model = new_model(stream, stream.max_classes, setup, seed)
    common = dict(
        model=model,
        optimizer=torch.optim.Adam(model.parameters(), lr=setup.training.lr),
        criterion=nn.CrossEntropyLoss(),
        train_mb_size=setup.training.batch_size,
        train_epochs=setup.training.epochs,
        eval_mb_size=256,
        evaluator=EvaluationPlugin(loggers=[]),
    )
    if method == "Naive":
        strategy = Naive(**common)
    elif method == "Replay":
        strategy = Replay(mem_size=setup.capacity, **common)
    else:
        strategy = EWC(ewc_lambda=100.0, **common)
    scenario = benchmark_from_datasets(train=[tensor_dataset(*e.train) for e in stream.experiences])
    run = Run()
    torch.manual_seed(seed)
    for t, experience in enumerate(scenario.train_stream):
        strategy.train(experience, num_workers=0)
        run.rows.append(test_accuracies(model, stream, t))
    return run


# ------------------------------------------------------------------------------ report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", nargs="+", choices=sorted(STREAMS), default=list(STREAMS))
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--verbose", action="store_true", help="print every batch's scores")
    parser.add_argument("--policy", nargs="*", default=[], metavar="KEY=VALUE",
                        help="override a [policy] setting, e.g. small_batch=300")
    parser.add_argument("--max-forgetting", type=float, default=GateConfig().max_forgetting)
    parser.add_argument("--meta-steps", type=int, default=ReptileSettings().meta_steps)
    parser.add_argument("--distillation", type=float, default=TrainingSettings().distillation)
    parser.add_argument("--tolerance", type=float, default=0.5,
                        help="points within which a pick also counts as near-best (test sets hold ~100 samples)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.showwarning = lambda *args, **kwargs: None  # Avalanche re-enables its deprecation warnings per call
    overrides = {}
    for item in args.policy:
        key, _, value = item.partition("=")
        default = getattr(PolicyConfig(), key)
        overrides[key] = (value.lower() == "true") if isinstance(default, bool) else type(default)(value)
    setup = Setup(
        training=TrainingSettings(epochs=args.epochs, batch_size=32, lr=0.003, seed=args.seed,
                                  distillation=args.distillation),
        policy=replace(PolicyConfig(), **overrides),
        gate=GateConfig(max_forgetting=args.max_forgetting),
        reptile=ReptileSettings(meta_steps=args.meta_steps),
    )

    header = (f"{'stream':32} {'picks best':>10} {'near':>5} {'regret':>7} | {'final acc':>9} {'forgetting':>10} | "
              f"{'Naive':>11} {'Replay':>11} {'EWC':>11}")
    print(f"policy regret, {args.epochs} epochs, seed {args.seed}; accuracy and forgetting in points; "
          "baselines as final acc / forgetting")
    print(header)
    print("-" * len(header))
    totals = {"batches": 0, "best": 0, "near": 0, "regret": [], "acc_ok": 0, "forget_ok": 0}
    started = time.monotonic()
    for name in args.streams:
        stream = STREAMS[name](args.seed)
        with quiet_avalanche():
            retain_run, records = run_retain(stream, setup, args.seed)
            baselines = {m: run_avalanche(stream, setup, m, args.seed) for m in ("Naive", "Replay", "EWC")}
        best = sum(r.scores[r.picked] >= r.scores[r.best] - 1e-9 for r in records)  # ties count
        regrets = [100 * (r.scores[r.best] - r.scores[r.picked]) for r in records]
        near = sum(regret <= args.tolerance for regret in regrets)
        totals["batches"] += len(records)
        totals["best"] += best
        totals["near"] += near
        totals["regret"] += regrets
        totals["acc_ok"] += retain_run.final_accuracy >= max(b.final_accuracy for b in baselines.values()) - 1e-9
        totals["forget_ok"] += retain_run.forgetting <= baselines["Replay"].forgetting + 1e-9
        cells = " ".join(f"{100 * b.final_accuracy:5.1f}/{100 * b.forgetting:5.1f}" for b in baselines.values())
        print(f"{stream.name:32} {best:>4}/{len(records):<2} {100 * best / len(records):3.0f}% "
              f"{100 * near / len(records):4.0f}% {np.mean(regrets):6.2f} | {100 * retain_run.final_accuracy:9.1f} {100 * retain_run.forgetting:10.1f} | "
              f"{cells}")
        if args.verbose:
            for r in records:
                scores = " ".join(f"{s[:4]}={100 * v:.1f}/{100 * r.forgetting[s]:+.1f}" for s, v in r.scores.items())
                probe = "-" if r.probe is None else f"{r.probe:.2f}"
                print(f"    {r.batch:26} {r.severity:8} p {r.p_value:.3f} drop {r.accuracy_drop:+.2f} probe {probe} picked {r.picked:18} ({r.rule}); "
                      f"best {r.best:18} score/forgetting {scores}; {r.decision}")
    n = totals["batches"]
    print("-" * len(header))
    print(f"hindsight-best picks {totals['best']}/{n} = {100 * totals['best'] / n:.0f}% (target >= 80%), "
          f"within {args.tolerance} points of best {100 * totals['near'] / n:.0f}%; "
          f"mean regret {np.mean(totals['regret']):.2f} points (target <= 1); "
          f"final acc >= best baseline on {totals['acc_ok']}/{len(args.streams)} streams; "
          f"forgetting <= Replay's on {totals['forget_ok']}/{len(args.streams)}; "
          f"{time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
