"""Scoring candidates on a stream: hindsight scores over the test sets, a paired test against
test-set noise, accuracy matrices, and the per-batch record of what the policy picked."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from torch import nn

from retain.strategies.forgetting import GateMetrics
from retain.strategies.kinds import STRATEGIES
from retain.strategies.models import predict
from retain.strategies.shift import ShiftReport
from streams import Stream


def test_hits(model: nn.Module, stream: Stream, upto: int) -> list[np.ndarray]:
    """Per experience 0..upto: 1.0 where the model classifies a test sample right, else 0.0."""
    return [(predict(model, e.test[0]) == e.test[1]).double().numpy() for e in stream.experiences[: upto + 1]]


def score(hits: list[np.ndarray]) -> float:
    """The hindsight score: the mean of the per-experience test accuracies."""
    return float(np.mean([h.mean() for h in hits]))


def held_out_score(gate: GateMetrics) -> float:
    """The hindsight score as retain itself could estimate it before choosing: the same mean of
    per-experience accuracies, over the audit samples of each earlier batch and this batch's
    held-out slice instead of the test sets."""
    return float(np.mean([group.candidate for group in gate.groups] + [gate.acc_new_candidate]))


def test_accuracies(model: nn.Module, stream: Stream, upto: int) -> list[float]:
    """Accuracy on the test set of every experience 0..upto."""
    return [float(hits.mean()) for hits in test_hits(model, stream, upto)]


def significantly_worse(other: list[np.ndarray], best: list[np.ndarray], z: float = 1.645) -> bool:
    """Is ``other``'s score (mean of per-experience accuracies) below ``best``'s by more than
    test-set noise? A one-sided paired z-test at 5 % on the per-sample differences, each
    experience weighted as the score weights it. Both models saw the same test samples."""
    differences = [b - o for b, o in zip(best, other, strict=True)]
    gap = float(np.mean([d.mean() for d in differences]))
    variance = sum(d.var(ddof=1) / len(d) for d in differences) / len(differences) ** 2
    return gap > z * math.sqrt(variance) if variance > 0 else gap > 0


@dataclass
class Run:
    """An accuracy matrix: row t = test accuracies after learning experience t."""

    rows: list[list[float]] = field(default_factory=list)
    final_hits: list[np.ndarray] = field(default_factory=list)  # the final model, per test sample
    training_seconds: float = 0.0  # every candidate's, fallbacks included

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
    picked: str
    rule: str
    best: str
    scores: dict[str, float]
    tied: tuple[str, ...]  # strategies not significantly worse than the best (best included)
    decision: str
    forgetting: dict[str, float]
    report: ShiftReport
    earlier_significant: int  # earlier batches with a significant shift, as the policy saw them
    # With --retrain-seeds K: per training seed (the first is the one above), every strategy's
    # score when every candidate was trained again with that seed.
    scores_by_seed: tuple[dict[str, float], ...] = ()
    held_out_scores: dict[str, float] = field(default_factory=dict)  # held_out_score of every candidate

    def is_best(self, strategy: str) -> bool:
        return strategy in best_strategies(self.scores)

    def regret(self, strategy: str) -> float:
        """Points by which ``strategy``'s score falls short of the hindsight-best's."""
        return 100 * (self.scores[self.best] - self.scores[strategy])

    @property
    def kept_by_held_out(self) -> str:
        """The strategy retain would keep had it trained all three and kept the best by
        ``held_out_score``; on a tie (small held-out sets often tie) the policy's pick stays."""
        return max(STRATEGIES, key=lambda s: (self.held_out_scores[s], s == self.picked))

    @property
    def best_by_seed(self) -> tuple[frozenset[str], ...]:
        return tuple(best_strategies(scores) for scores in self.scores_by_seed)

    @property
    def mean_scores(self) -> dict[str, float]:
        return mean_scores(self.scores_by_seed)


def mean_scores(scores_by_seed: Sequence[dict[str, float]]) -> dict[str, float]:
    """Each strategy's score averaged over the training seeds: its expected score, less the
    luck of one training run."""
    return {s: float(np.mean([scores[s] for scores in scores_by_seed])) for s in STRATEGIES}


def best_strategies(scores: dict[str, float]) -> frozenset[str]:
    """Every strategy with the top score (exact ties all count as best)."""
    top = max(scores.values())
    return frozenset(s for s, v in scores.items() if v >= top - 1e-9)


def most_often_best_rate(best_by_seed: tuple[frozenset[str], ...], held_out: bool = False) -> float:
    """How often the strategy most often best is best, over a batch's training seeds.

    ``held_out``: for each seed the strategy is chosen from the other seeds' results (ties
    split evenly), so luck on a seed cannot pick it."""
    def rate(choices: list[frozenset[str]], judged: list[frozenset[str]]) -> float:
        counts = {s: sum(s in best for best in choices) for s in STRATEGIES}
        modes = [s for s in STRATEGIES if counts[s] == max(counts.values())]
        return float(np.mean([np.mean([s in best for s in modes]) for best in judged]))

    seeds = list(best_by_seed)
    if not held_out:
        return rate(seeds, seeds)
    return float(np.mean([rate(seeds[:k] + seeds[k + 1:], [seeds[k]]) for k in range(len(seeds))]))
