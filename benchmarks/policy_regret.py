"""Does the policy pick the right strategy? Six streams, every strategy on every batch.

For each batch retain measures the shift and lets the policy choose, but also trains all
three strategies from the same production model and memory, and scores each candidate by
its average accuracy over the test sets of every experience seen so far. The hindsight-best
strategy is the one with the highest score; the regret is best score minus the chosen one's.
A score is also measured against noise: a pick is "tied" with the best when its score is not
significantly below (one-sided paired z-test at 5 % over the same test samples). Digits test
sets hold ~100 samples per experience, so strategies a point apart often cannot be told apart;
synthetic experiences are scored on 5000 fresh samples each.
With ``--retrain-seeds K`` every strategy is trained K times per batch with different seeds:
how often is the policy's pick best, and how often could any policy that sees only the
measured shift (the same for every training seed) be? And, judged by each strategy's mean
score over the K seeds (its expected score, without one run's luck), how often is the pick
the best strategy for the batch?
The summary also asks whether the policy could be skipped: had retain trained all three and
kept the one with the best accuracy on its own held-out data (the audit samples of every
earlier batch and the new batch's holdout slice, as the hindsight score weights the test
sets), how often would that have been the hindsight-best?
The stream then goes on as the daemon would: the chosen candidate (or its fallback) becomes
production only if it passes the forgetting gate.

Side by side: Avalanche's own Naive, Replay and EWC on the same experiences (init data, then
every batch), same model, epochs, batch size and base learning rate. Besides counting the
streams where retain's final accuracy reaches the best baseline's (a count that flips on
test-set noise), the summary gives the mean over the streams: retain's final accuracy against
the best baseline's on each stream, and every method's mean forgetting.

    .venv/bin/python benchmarks/policy_regret.py [--streams NAME ...] [--epochs 5] [--seeds 0 1 2 3] [--retrain-seeds 3]

``--records PATH`` appends one JSON line per batch (the shift report the policy saw, every
strategy's score per training seed) for ``benchmarks/policy_fit.py``, which asks whether any
small decision tree over the same numbers would pick better than the policy's rules.

``--holdout-fraction`` sizes the slice of every batch that retain holds out for its gate and
never trains on (the baselines train on all of it): what the gate costs in final accuracy.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
from torch import nn

from retain.strategies.adapt import train_candidate
from retain.strategies.forgetting import GateConfig, evaluate_gate
from retain.strategies.measure import measure_batch
from retain.strategies.meta import ReptileSettings
from retain.strategies.models import mlp
from retain.strategies.job import MetaInit, TrainedCandidate, TrainingJob
from retain.strategies.kinds import STRATEGIES, Strategy
from retain.strategies.policy import (
    Choice,
    PolicyConfig,
    ShiftHistoryEntry,
    hyperparameters,
    recurring_shifts,
)
from retain.strategies.replay import Data, ReplayMemory, remember, split_holdout
from retain.strategies.shift import ShiftReport, ShiftThresholds
from retain.strategies.step import NewBatch, StepSettings, adapt_step
from retain.strategies.training import TrainingSettings, limit_threads, quiet_avalanche, tensor_dataset, train_initial
from scoring import (
    PolicyRecord,
    Run,
    best_strategies,
    held_out_score,
    most_often_best_rate,
    score,
    significantly_worse,
    test_accuracies,
    test_hits,
)
from streams import STREAMS, Stream


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
    init_epochs: int | None = None  # epochs on the init data (retain's version 1 and the baselines'); None: as all
    retrain_seeds: int = 1  # train every strategy this many times per batch, with different seeds

    @property
    def initial_training(self) -> TrainingSettings:
        return replace(self.training, epochs=self.init_epochs or self.training.epochs)


def train_strategies(production: nn.Module, memory: ReplayMemory, train: Data, report: ShiftReport, setup: Setup,
                     seed: int, meta_init: MetaInit | None) -> tuple[dict[str, TrainedCandidate], dict[str, float]]:
    """One candidate per strategy, each from the same production model and memory (and meta
    from the lineage's initialisation), with each one's training seconds."""
    job = TrainingJob.from_memory(production, train, memory, replace(setup.training, seed=seed),
                                  reptile=setup.reptile, meta_init=meta_init)
    candidates, seconds = {}, {}
    for strategy in STRATEGIES:
        choice = Choice(strategy, hyperparameters(strategy, report, setup.policy, setup.training.lr), "", strategy)
        started = time.perf_counter()
        candidates[strategy] = train_candidate(choice, job)
        seconds[strategy] = time.perf_counter() - started
    return candidates, seconds


def new_model(stream: Stream, classes: int, setup: Setup, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return mlp((stream.dim,), classes, hidden=setup.hidden)


def run_retain(stream: Stream, setup: Setup, seed: int) -> tuple[Run, list[PolicyRecord]]:
    first = stream.experiences[0]
    x0, y0 = first.train
    train0, holdout0 = split_holdout(x0, y0, setup.holdout_fraction, seed)
    production = train_initial(new_model(stream, int(y0.max()) + 1, setup, seed), *train0, setup.initial_training)
    memory = remember(ReplayMemory.empty((stream.dim,)), train0, holdout0, 0, setup.capacity, setup.audit_fraction,
                      seed)
    run = Run([test_accuracies(production, stream, 0)])
    history: list[ShiftHistoryEntry] = []
    records = []
    meta_init: MetaInit | None = None
    for t, experience in enumerate(stream.experiences[1:], start=1):
        x, y = experience.train
        train, holdout = split_holdout(x, y, setup.holdout_fraction, seed + t)
        report = measure_batch(production, "head", memory, x, y, stream.max_classes, setup.thresholds, seed + t)

        candidates, seconds = train_strategies(production, memory, train, report, setup, seed + t, meta_init)
        retrained = [train_strategies(production, memory, train, report, setup, seed + t + 7919 * k, meta_init)[0]
                     for k in range(1, setup.retrain_seeds)]
        hits, scores, gates = {}, {}, {}
        for strategy in STRATEGIES:
            hits[strategy] = test_hits(candidates[strategy].model, stream, t)
            scores[strategy] = score(hits[strategy])
            gates[strategy] = evaluate_gate(production, candidates[strategy].model, memory.audit_groups(), holdout)

        # The policy's pick and its fallback through the daemon's own step, looking up the
        # candidates trained above (the same seeds and hyperparameters: the same models).
        settings = StepSettings(policy=setup.policy, thresholds=setup.thresholds,
                                training=replace(setup.training, seed=seed + t), reptile=setup.reptile,
                                gate=replace(setup.gate, holdout_fraction=setup.holdout_fraction),
                                replay_capacity=setup.capacity, audit_fraction=setup.audit_fraction)
        step = adapt_step(production, memory, NewBatch(x, y, source=t, num_classes=stream.max_classes),
                          tuple(history), settings, report=report,
                          train=lambda choice, job: candidates[choice.strategy])
        run.training_seconds += sum(seconds[c.choice.strategy] for c in step.candidates)
        decision = "rejected"
        if step.accepted is not None:
            production, decision = step.accepted.model, f"{step.accepted.choice.strategy} accepted"
            memory, meta_init = step.memory, step.accepted.meta_init or meta_init
        best = max(scores, key=scores.get)
        tied = tuple(s for s in STRATEGIES if not significantly_worse(hits[s], hits[best]))
        scores_by_seed = [scores] + [{s: score(test_hits(m.model, stream, t)) for s, m in again.items()}
                                     for again in retrained]
        earlier_significant = recurring_shifts(tuple(history), setup.policy.history_window)
        history.append(ShiftHistoryEntry(t, report.severity, report.p_value, report.novel_classes))
        choice = step.candidates[0].choice
        records.append(PolicyRecord(experience.name, choice.strategy, choice.rule, best, scores,
                                    tied, decision, {s: g.forgetting for s, g in gates.items()},
                                    report, earlier_significant, tuple(scores_by_seed),
                                    {s: held_out_score(g) for s, g in gates.items()}))
        run.rows.append(test_accuracies(production, stream, t))
    run.final_hits = test_hits(production, stream, len(stream.experiences) - 1)
    return run, records


def run_fixed(stream: Stream, setup: Setup, strategy: Strategy, seed: int) -> Run:
    """The stream as the daemon would run it with ``policy.strategy`` pinned (no fallback):
    the accuracy matrix and its training seconds."""
    first = stream.experiences[0]
    x0, y0 = first.train
    train0, holdout0 = split_holdout(x0, y0, setup.holdout_fraction, seed)
    production = train_initial(new_model(stream, int(y0.max()) + 1, setup, seed), *train0, setup.initial_training)
    memory = remember(ReplayMemory.empty((stream.dim,)), train0, holdout0, 0, setup.capacity, setup.audit_fraction,
                      seed)
    run = Run([test_accuracies(production, stream, 0)])
    history: list[ShiftHistoryEntry] = []
    meta_init: MetaInit | None = None
    policy = replace(setup.policy, strategy=strategy, fallback=False)
    for t, experience in enumerate(stream.experiences[1:], start=1):
        x, y = experience.train
        settings = StepSettings(policy=policy, thresholds=setup.thresholds,
                                training=replace(setup.training, seed=seed + t), reptile=setup.reptile,
                                gate=replace(setup.gate, holdout_fraction=setup.holdout_fraction),
                                replay_capacity=setup.capacity, audit_fraction=setup.audit_fraction)
        step = adapt_step(production, memory, NewBatch(x, y, source=t, num_classes=stream.max_classes),
                          tuple(history), settings, meta_init=meta_init)
        run.training_seconds += sum(c.duration for c in step.candidates)
        history.append(ShiftHistoryEntry(t, step.report.severity, step.report.p_value, step.report.novel_classes))
        if step.accepted is not None:
            production, memory = step.accepted.model, step.memory
            meta_init = step.accepted.meta_init or meta_init
        run.rows.append(test_accuracies(production, stream, t))
    run.final_hits = test_hits(production, stream, len(stream.experiences) - 1)
    return run


def record_json(stream: str, seed: int, record: PolicyRecord) -> dict:
    """One batch for ``--records``: what the policy saw and every strategy's score per training seed."""
    return {
        "stream": stream, "seed": seed, "batch": record.batch, "picked": record.picked, "rule": record.rule,
        "decision": record.decision, "tied": list(record.tied), "shift": asdict(record.report),
        "earlier_significant": record.earlier_significant, "scores_by_seed": list(record.scores_by_seed),
        "held_out_scores": record.held_out_scores,
    }


# --------------------------------------------------------------------------- baselines


def run_avalanche(stream: Stream, setup: Setup, method: str, seed: int) -> Run:
    from retain.strategies.avalanche_api import benchmark_from_datasets
    from retain.strategies.avalanche_api import EWC, Naive, Replay
    from retain.strategies.avalanche_api import EvaluationPlugin

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
        strategy.train_epochs = setup.initial_training.epochs if t == 0 else setup.training.epochs
        strategy.train(experience, num_workers=0)
        run.rows.append(test_accuracies(model, stream, t))
    run.final_hits = test_hits(model, stream, len(stream.experiences) - 1)
    return run


# ------------------------------------------------------------------------------ report


@dataclass
class Totals:
    batches: int = 0
    best: int = 0
    tied: int = 0
    regrets: list[float] = field(default_factory=list)
    acc_not_worse: int = 0
    # Final accuracy and forgetting per stream, in points: retain's, the strongest baseline's on
    # that stream, and each baseline's. A count of streams won flips on test-set noise; the mean
    # over the streams says by how much retain is ahead or behind.
    retain_final: list[float] = field(default_factory=list)
    retain_forgetting: list[float] = field(default_factory=list)
    best_baseline_final: list[float] = field(default_factory=list)
    baseline_final: dict[str, list[float]] = field(default_factory=dict)
    baseline_forgetting: dict[str, list[float]] = field(default_factory=dict)
    # The same batches had one strategy always been used: what the policy must beat.
    fixed_best: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STRATEGIES, 0))
    fixed_regrets: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in STRATEGIES})
    # Had retain trained all three and kept the one best on its own held-out data (audit set
    # and holdout slice): is that estimate good enough to beat choosing from the shift alone?
    kept_best: int = 0
    kept_regrets: list[float] = field(default_factory=list)
    # Over every training seed of every batch (--retrain-seeds): how often the policy's pick
    # was best; and how often the strategy most often best for that batch was, which bounds
    # any policy that sees only the measured shift (no training seed changes it). Counted on
    # the same seeds it is optimistic; chosen from the other seeds, pessimistic.
    seed_runs: int = 0
    seed_hits: int = 0
    fixed_seed_hits: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STRATEGIES, 0))
    ceilings: list[float] = field(default_factory=list)
    held_out_ceilings: list[float] = field(default_factory=list)
    # Judged by each strategy's mean score over the training seeds instead of one run's.
    mean_hits: int = 0
    fixed_mean_hits: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STRATEGIES, 0))

    @property
    def streams(self) -> int:
        return len(self.retain_final)

    @property
    def acc_ok(self) -> int:
        """Streams where retain's final accuracy reaches the strongest baseline's."""
        return sum(r >= b - 1e-7 for r, b in zip(self.retain_final, self.best_baseline_final, strict=True))

    @property
    def forget_ok(self) -> int:
        """Streams where retain forgets no more than Replay."""
        return sum(r <= b + 1e-7 for r, b in zip(self.retain_forgetting, self.baseline_forgetting["Replay"],
                                                 strict=True))

    def add_batches(self, records: list[PolicyRecord]) -> None:
        self.batches += len(records)
        self.best += sum(r.is_best(r.picked) for r in records)
        self.tied += sum(r.picked in r.tied for r in records)
        self.regrets += [r.regret(r.picked) for r in records]
        for strategy in STRATEGIES:
            self.fixed_best[strategy] += sum(r.is_best(strategy) for r in records)
            self.fixed_regrets[strategy] += [r.regret(strategy) for r in records]
        self.kept_best += sum(r.is_best(r.kept_by_held_out) for r in records)
        self.kept_regrets += [r.regret(r.kept_by_held_out) for r in records]
        for r in records:
            if len(r.best_by_seed) > 1:
                self.seed_runs += len(r.best_by_seed)
                self.seed_hits += sum(r.picked in best for best in r.best_by_seed)
                for strategy in STRATEGIES:
                    self.fixed_seed_hits[strategy] += sum(strategy in best for best in r.best_by_seed)
                self.ceilings.append(most_often_best_rate(r.best_by_seed))
                self.held_out_ceilings.append(most_often_best_rate(r.best_by_seed, held_out=True))
                best_on_average = best_strategies(r.mean_scores)
                self.mean_hits += r.picked in best_on_average
                for strategy in STRATEGIES:
                    self.fixed_mean_hits[strategy] += strategy in best_on_average

    def summary(self) -> str:
        n = self.batches
        fixed = ", ".join(f"always {s} {100 * self.fixed_best[s] / n:.0f}% / {np.mean(self.fixed_regrets[s]):.2f}"
                          for s in STRATEGIES)
        return (f"hindsight-best picks {self.best}/{n} = {100 * self.best / n:.0f}% (target >= 80%), "
                f"not significantly worse than the best {self.tied}/{n} = {100 * self.tied / n:.0f}%; "
                f"mean regret {np.mean(self.regrets):.2f} points (target <= 1); "
                f"final acc >= best baseline on {self.acc_ok}/{self.streams} streams "
                f"(not significantly below it on {self.acc_not_worse}/{self.streams}); "
                f"forgetting <= Replay's on {self.forget_ok}/{self.streams}; "
                f"{self.means()}; "
                f"hindsight-best / regret with one strategy throughout: {fixed}; "
                f"all three trained and the best on retain's held-out data kept "
                f"{100 * self.kept_best / n:.0f}% / {np.mean(self.kept_regrets):.2f}"
                + (f"; {self.seed_summary()}" if self.ceilings else ""))

    def means(self) -> str:
        """Mean final accuracy and forgetting over the streams, retain beside the baselines."""
        def each(values: dict[str, list[float]]) -> str:
            return ", ".join(f"{method} {np.mean(v):.1f}" for method, v in values.items())

        return (f"mean final accuracy over the streams {np.mean(self.retain_final):.1f} against "
                f"{np.mean(self.best_baseline_final):.1f} for the best baseline on each stream "
                f"({each(self.baseline_final)}); "
                f"mean forgetting {np.mean(self.retain_forgetting):.1f} ({each(self.baseline_forgetting)})")

    def seed_summary(self) -> str:
        """The --retrain-seeds figures."""
        runs = self.seed_runs
        fixed = ", ".join(f"always {s} {100 * n / runs:.0f}%" for s, n in self.fixed_seed_hits.items())
        batches = len(self.ceilings)
        mean_fixed = ", ".join(f"always {s} {100 * n / batches:.0f}%" for s, n in self.fixed_mean_hits.items())
        return (f"over {runs // batches} training seeds per batch: the pick is best in "
                f"{self.seed_hits}/{runs} = {100 * self.seed_hits / runs:.0f}% ({fixed}); "
                f"the strategy most often best for the batch is best in {100 * np.mean(self.ceilings):.0f}% "
                f"counted on the same seeds, {100 * np.mean(self.held_out_ceilings):.0f}% chosen from the "
                f"other seeds (what a policy that sees only the shift can reach lies about between); "
                f"by the mean score over the seeds, the pick is best in {self.mean_hits}/{batches} = "
                f"{100 * self.mean_hits / batches:.0f}% of batches ({mean_fixed})")


CONTINUED = "meta continued"  # meta with meta.continue_steps: the lineage's initialisation carried forward
COST_METHODS = ("policy", *STRATEGIES, CONTINUED)


@dataclass
class Costs:
    """Per method (the policy, each strategy pinned, meta continuing the lineage's initialisation),
    per stream: final accuracy and forgetting in points, training seconds, batches."""

    final: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in COST_METHODS})
    forgetting: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in COST_METHODS})
    seconds: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in COST_METHODS})
    batches: list[int] = field(default_factory=list)

    def add(self, runs: dict[str, Run], batches: int) -> None:
        for method, run in runs.items():
            self.final[method].append(100 * run.final_accuracy)
            self.forgetting[method].append(100 * run.forgetting)
            self.seconds[method].append(run.training_seconds)
        self.batches.append(batches)

    def per_batch(self, method: str) -> float:
        """Mean training seconds per batch over every stream's batches."""
        return sum(self.seconds[method]) / sum(self.batches)

    def summary(self) -> str:
        means = "; ".join(f"{m} {np.mean(self.final[m]):.1f} / {np.mean(self.forgetting[m]):.1f} / "
                          f"{self.per_batch(m):.2f} s" for m in COST_METHODS)
        return (f"mean final accuracy / forgetting / training seconds per batch: {means}; "
                f"meta's seconds per batch {self.per_batch(Strategy.META) / self.per_batch(Strategy.FINETUNE):.2f}x "
                f"finetune's ({self.per_batch(CONTINUED) / self.per_batch(Strategy.FINETUNE):.2f}x continued, "
                f"final accuracy {np.mean(self.final[CONTINUED]) - np.mean(self.final[Strategy.META]):+.2f} points "
                f"against meta's)")


def cost_runs(stream: Stream, setup: Setup, seed: int, policy: Run, continue_steps: int) -> dict[str, Run]:
    """The policy's run beside each strategy pinned for the whole stream, through the gate, and
    meta carrying its initialisation forward for ``continue_steps``."""
    runs = {"policy": policy}
    runs |= {strategy: run_fixed(stream, setup, strategy, seed) for strategy in STRATEGIES}
    carried = replace(setup, reptile=replace(setup.reptile, continue_steps=continue_steps))
    runs[CONTINUED] = run_fixed(stream, carried, Strategy.META, seed)
    return runs


def cost_table(rows: list[tuple[str, dict[str, Run]]]) -> str:
    header = f"{'stream':32} " + " ".join(f"{m:>21}" for m in COST_METHODS)
    lines = ["cost: final acc / forgetting in points / training seconds, the policy and each strategy pinned "
             "(no fallback), all through the gate", header, "-" * len(header)]
    for name, runs in rows:
        cells = (f"{100 * r.final_accuracy:7.1f}/{100 * r.forgetting:5.1f}/{r.training_seconds:6.1f}s"
                 for r in runs.values())
        lines.append(f"{name:32} " + " ".join(cells))
    return "\n".join(lines)


def run_seed(args: argparse.Namespace, setup: Setup, seed: int, totals: Totals, costs: Costs) -> None:
    """One table: every stream built and run with ``seed``."""
    setup = replace(setup, training=replace(setup.training, seed=seed))
    header = (f"{'stream':32} {'picks best':>10} {'tied':>5} {'regret':>7} | {'final acc':>9} {'forgetting':>10} | "
              f"{'Naive':>11} {'Replay':>11} {'EWC':>11}")
    print(f"policy regret, {args.epochs} epochs, seed {seed}; accuracy and forgetting in points; "
          "baselines as final acc / forgetting")
    print(header)
    print("-" * len(header))
    here, here_costs, cost_rows = Totals(), Costs(), []
    started = time.monotonic()
    for name in args.streams:
        stream = STREAMS[name](seed)
        with quiet_avalanche():
            retain_run, records = run_retain(stream, setup, seed)
            baselines = {m: run_avalanche(stream, setup, m, seed) for m in ("Naive", "Replay", "EWC")}
        stream_counts = Totals()
        stream_counts.add_batches(records)
        best, tied, regrets = stream_counts.best, stream_counts.tied, stream_counts.regrets
        strongest = max(baselines.values(), key=lambda b: b.final_accuracy)
        below = significantly_worse(retain_run.final_hits, strongest.final_hits)
        for counts in (here, totals):
            counts.add_batches(records)
            counts.acc_not_worse += not below
            counts.retain_final.append(100 * retain_run.final_accuracy)
            counts.retain_forgetting.append(100 * retain_run.forgetting)
            counts.best_baseline_final.append(100 * strongest.final_accuracy)
            for method, run in baselines.items():
                counts.baseline_final.setdefault(method, []).append(100 * run.final_accuracy)
                counts.baseline_forgetting.setdefault(method, []).append(100 * run.forgetting)
        if args.cost:
            runs = cost_runs(stream, setup, seed, retain_run, args.continue_steps)
            cost_rows.append((stream.name, runs))
            for counts in (here_costs, costs):
                counts.add(runs, len(records))
        cells = " ".join(f"{100 * b.final_accuracy:5.1f}/{100 * b.forgetting:5.1f}" for b in baselines.values())
        print(f"{stream.name:32} {best:>4}/{len(records):<2} {100 * best / len(records):3.0f}% "
              f"{100 * tied / len(records):4.0f}% {np.mean(regrets):6.2f} | "
              f"{100 * retain_run.final_accuracy:8.1f}{'*' if below else ' '} "
              f"{100 * retain_run.forgetting:10.1f} | {cells}")
        if args.records:
            with open(args.records, "a") as out:
                out.writelines(json.dumps(record_json(stream.name, seed, r)) + "\n" for r in records)
        if args.verbose:
            for r in records:
                scores = " ".join(f"{s[:4]}={100 * v:.2f}/{100 * r.forgetting[s]:+.1f}" for s, v in r.scores.items())
                probe = "-" if r.report.probe_accuracy is None else f"{r.report.probe_accuracy:.2f}"
                print(f"    {r.batch:26} {r.report.severity:8} p {r.report.p_value:.3f} "
                      f"drop {r.report.accuracy_drop:+.2f} "
                      f"probe {probe} "
                      f"picked {r.picked:18} ({r.rule}); best {r.best:18} tied {','.join(t[:4] for t in r.tied):14} "
                      f"score/forgetting {scores}; {r.decision}"
                      + ("; best by training seed "
                         f"{' '.join('+'.join(sorted(x[:4] for x in b)) for b in r.best_by_seed)}"
                         f"; mean {' '.join(f'{s[:4]}={100 * v:.2f}' for s, v in r.mean_scores.items())}"
                         if len(r.best_by_seed) > 1 else ""))
    print("-" * len(header))
    print("* final accuracy significantly below the best baseline's (one-sided paired z-test, 5 %)")
    print(f"{here.summary()}; {time.monotonic() - started:.0f} s")
    if args.cost:
        print()
        print(cost_table(cost_rows))
        print(here_costs.summary())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", nargs="+", choices=sorted(STREAMS), default=list(STREAMS))
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--init-epochs", type=int, default=None,
                        help="epochs on the init data, for retain's version 1 and the baselines alike "
                             "(default: --epochs)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="one table per seed, then the totals")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--retrain-seeds", type=int, default=1, metavar="K",
                        help="train every strategy K times per batch with different seeds: how stable is 'best'?")
    parser.add_argument("--verbose", action="store_true", help="print every batch's scores")
    parser.add_argument("--records", metavar="PATH",
                        help="append one JSON line per batch: the shift report and every strategy's scores")
    parser.add_argument("--policy", nargs="*", default=[], metavar="KEY=VALUE",
                        help="override a [policy] setting, e.g. small_batch=300")
    parser.add_argument("--max-forgetting", type=float, default=GateConfig().max_forgetting)
    parser.add_argument("--max-forgetting-new-classes", type=float, default=GateConfig().max_forgetting_new_classes)
    parser.add_argument("--meta-steps", type=int, default=ReptileSettings().meta_steps)
    parser.add_argument("--continue-steps", type=int, default=30,
                        help="meta.continue_steps for the cost table's 'meta continued' column")
    parser.add_argument("--distillation", type=float, default=TrainingSettings().distillation)
    parser.add_argument("--no-cost", dest="cost", action="store_false",
                        help="skip the cost table (each strategy pinned for a whole stream)")
    parser.add_argument("--holdout-fraction", type=float, default=Setup.holdout_fraction,
                        help="share of every batch retain holds out for the gate (never trained on)")
    args = parser.parse_args()
    limit_threads(args.threads)
    warnings.showwarning = lambda *args, **kwargs: None  # Avalanche re-enables its deprecation warnings per call
    overrides = {}
    for item in args.policy:
        key, _, value = item.partition("=")
        default = getattr(PolicyConfig(), key)
        overrides[key] = (value.lower() == "true") if isinstance(default, bool) else type(default)(value)
    setup = Setup(
        training=TrainingSettings(epochs=args.epochs, batch_size=32, lr=0.003, distillation=args.distillation,
                                  device="cpu"),
        policy=replace(PolicyConfig(), **overrides),
        gate=GateConfig(max_forgetting=args.max_forgetting, max_forgetting_new_classes=args.max_forgetting_new_classes),
        reptile=ReptileSettings(meta_steps=args.meta_steps),
        init_epochs=args.init_epochs,
        holdout_fraction=args.holdout_fraction,
        retrain_seeds=args.retrain_seeds,
    )
    totals, costs = Totals(), Costs()
    for seed in args.seeds:
        run_seed(args, setup, seed, totals, costs)
        print()
    if len(args.seeds) > 1:
        print(f"all seeds {args.seeds}: {totals.summary()}")
        if args.cost:
            print(f"all seeds {args.seeds}: {costs.summary()}")


if __name__ == "__main__":
    main()
