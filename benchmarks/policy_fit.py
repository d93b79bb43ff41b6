"""Could any policy over the same measured numbers pick better than retain's rules?

Reads the per-batch records of ``benchmarks/policy_regret.py --records`` (the shift report
the policy saw, and every strategy's score for each training seed) and, leaving one stream
seed out at a time, fits small decision trees on the other seeds' batches (features: the
ShiftReport's numbers and how many earlier batches shifted significantly; label: the strategy
best for each training seed, a tie split between the tied). The batch's position in its stream
is left out on purpose: every seed of a benchmark stream follows the same script, so "the fifth
batch" names a stream's scripted step, which no deployment can know. Each tree is judged on the
left-out seed's batches as the regret benchmark judges the policy, beside the policy as it ran,
one strategy throughout, and a per-batch oracle that knows which strategy has the best mean score over the training
seeds: about what no policy that sees only the shift can beat, since the shift is the same
for every training seed (its strict figure is judged on a seed it averaged; a second oracle
chooses from the other training seeds alone).

    .venv/bin/python benchmarks/policy_regret.py --seeds 0 1 2 3 --retrain-seeds 3 --records r.jsonl
    .venv/bin/python benchmarks/policy_fit.py r.jsonl

With three or more training seeds it also prints how often a batch's strategy chosen from the
mean of n other training runs wins a run, for each n: as n grows this settles on the ceiling for
any policy that chooses from the shift (``--retrain-seeds 6`` shows it level off).

The judged picks are per batch, on the production model the policy's own picks led to: a
fitted tree would have led the stream elsewhere, so its figures are an estimate, not a run.
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scoring import best_strategies as best
from scoring import mean_scores
from sklearn.tree import DecisionTreeClassifier, export_text

from retain.strategies.kinds import SEVERITIES, STRATEGIES
from retain.strategies.shift import ShiftReport

FEATURES = ("mmd2", "p_value", "label_distance", "novel_classes", "accuracy_reference", "accuracy_batch",
            "accuracy_drop", "n_batch", "probe_accuracy", "severity", "earlier_significant")


@dataclass(frozen=True)
class Batch:
    seed: int
    features: tuple[float, ...]
    picked: str
    scores_by_seed: tuple[dict[str, float], ...]

    @property
    def mean_scores(self) -> dict[str, float]:
        return mean_scores(self.scores_by_seed)


def load(paths: Sequence[str]) -> list[Batch]:
    batches = []
    for path in paths:
        with open(path) as lines:
            for line in lines:
                record = json.loads(line)
                shift = ShiftReport(**record["shift"])
                probe = shift.probe_accuracy
                features = (
                    shift.mmd2, shift.p_value, shift.label_distance, len(shift.novel_classes),
                    shift.accuracy_reference, shift.accuracy_batch, shift.accuracy_drop, shift.n_batch,
                    -1.0 if probe is None else probe,  # too small to probe
                    SEVERITIES.index(shift.severity), record["earlier_significant"],
                )
                batches.append(Batch(record["seed"], tuple(float(f) for f in features), record["picked"],
                                     tuple(record["scores_by_seed"])))
    return batches


@dataclass(frozen=True)
class Judged:
    strict: float  # the pick is best on the first training seed: policy_regret.py's hindsight-best
    over_seeds: float  # ... on each training seed
    by_mean: float  # ... by the mean score over the training seeds
    regret: float  # points below the best, first training seed

    def __str__(self) -> str:
        return (f"{100 * self.strict:6.1f}% {100 * self.over_seeds:10.1f}% {100 * self.by_mean:7.1f}% "
                f"{self.regret:7.2f}")


def judge(batches: Sequence[Batch], picks: Sequence[str]) -> Judged:
    return Judged(
        strict=float(np.mean([p in best(b.scores_by_seed[0]) for b, p in zip(batches, picks, strict=True)])),
        over_seeds=float(np.mean([np.mean([p in best(s) for s in b.scores_by_seed])
                                  for b, p in zip(batches, picks, strict=True)])),
        by_mean=float(np.mean([p in best(b.mean_scores) for b, p in zip(batches, picks, strict=True)])),
        regret=float(np.mean([100 * (max(b.scores_by_seed[0].values()) - b.scores_by_seed[0][p])
                              for b, p in zip(batches, picks, strict=True)])),
    )


def fit_tree(batches: Sequence[Batch], depth: int) -> DecisionTreeClassifier:
    """A tree over the shift's numbers, one sample per batch and training seed, labelled with the
    strategy best for that seed (a tie split evenly)."""
    x, y, weight = [], [], []
    for batch in batches:
        for scores in batch.scores_by_seed:
            winners = best(scores)
            for strategy in sorted(winners):
                x.append(batch.features)
                y.append(strategy)
                weight.append(1 / len(winners))
    tree = DecisionTreeClassifier(max_depth=depth, min_samples_leaf=4, random_state=0)
    return tree.fit(np.array(x), y, sample_weight=weight)


def leave_one_seed_out(batches: Sequence[Batch], pick: Callable[[Sequence[Batch], Sequence[Batch]], list[str]]
                       ) -> Judged:
    """Picks for every seed's batches made from the other seeds' batches alone, judged together."""
    judged, picks = [], []
    for seed in sorted({b.seed for b in batches}):
        held_out = [b for b in batches if b.seed == seed]
        judged += held_out
        picks += pick([b for b in batches if b.seed != seed], held_out)
    return judge(judged, picks)


def oracle_from_other_runs(batches: Sequence[Batch], n: int) -> float:
    """How often the strategy with the best mean score over ``n`` training runs of a batch is
    best on another run of it, over every run judged and every choice of the ``n`` (ties split).

    As ``n`` grows this approaches how often the strategy best in expectation wins one run:
    what a policy that knows each batch's expected scores exactly, but not a run's luck, reaches.
    """
    rates = []
    for batch in batches:
        runs = range(len(batch.scores_by_seed))
        for judged in runs:
            winners = best(batch.scores_by_seed[judged])
            for chosen_from in itertools.combinations([r for r in runs if r != judged], n):
                choices = best(mean_scores([batch.scores_by_seed[r] for r in chosen_from]))
                rates.append(len(choices & winners) / len(choices))
    return float(np.mean(rates))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("records", nargs="+", help="files written by policy_regret.py --records")
    parser.add_argument("--depths", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--show-tree", type=int, metavar="DEPTH",
                        help="print the tree of this depth fitted on all seeds")
    args = parser.parse_args()
    batches = load(args.records)
    seeds = sorted({b.seed for b in batches})
    if len(seeds) < 2 or len(batches[0].scores_by_seed) < 2:
        parser.error("needs records of two or more stream seeds, written with --retrain-seeds 2 or more")

    print(f"{len(batches)} batches, stream seeds {seeds}, {len(batches[0].scores_by_seed)} training seeds per batch; "
          "trees judged on each stream seed after fitting on the others")
    print(f"{'policy':44} {'strict':>7} {'over seeds':>11} {'by mean':>8} {'regret':>7}")
    print(f"{'retain policy, as run':44} {judge(batches, [b.picked for b in batches])}")
    for strategy in STRATEGIES:
        print(f"{'always ' + strategy:44} {judge(batches, [strategy] * len(batches))}")
    for depth in args.depths:
        def tree_picks(fit: Sequence[Batch], held_out: Sequence[Batch], depth: int = depth) -> list[str]:
            return list(fit_tree(fit, depth).predict(np.array([b.features for b in held_out])))
        print(f"{f'tree of depth {depth}, fitted on the other seeds':44} "
              f"{leave_one_seed_out(batches, tree_picks)}")
    oracle = [max(STRATEGIES, key=b.mean_scores.__getitem__) for b in batches]
    print(f"{'oracle: best mean score over training seeds':44} {judge(batches, oracle)}")
    # The first training seed is one of those the oracle averages, which flatters its strict
    # figure; chosen from the other training seeds alone, it cannot have seen the run it is
    # judged on.
    others = [max(STRATEGIES, key=mean_scores(b.scores_by_seed[1:]).__getitem__) for b in batches]
    print(f"{'oracle from the other training seeds':44} {judge(batches, others)}")
    runs = len(batches[0].scores_by_seed)
    if runs > 2:
        # The other-seeds oracle chooses from a noisy estimate of each strategy's expected score;
        # with more runs to choose from it converges on the best a shift-only policy can do.
        print("oracle from n other training runs of the batch, judged on each run (the policy: over seeds): " +
              ", ".join(f"n={n} {100 * oracle_from_other_runs(batches, n):.1f}%" for n in range(1, runs)))
    print("strict: the pick is best on the first training seed (policy_regret.py's hindsight-best picks);\n"
          "over seeds: on each training seed; by mean: by the mean score over the training seeds;\n"
          "regret: points below the best score, first training seed")
    if args.show_tree:
        print(export_text(fit_tree(batches, args.show_tree), feature_names=list(FEATURES)))


if __name__ == "__main__":
    main()
