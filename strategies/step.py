"""One adaptation step, the heart of retain: measure → choose → train and gate → fallbacks →
remember. The daemon's pipeline and every benchmark call this one function; the pipeline adds
only I/O and telemetry around it (claim, load, register, move, report).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import nn

from retain.strategies.adapt import train_candidate
from retain.strategies.job import MetaInit, TrainedCandidate, TrainingJob
from retain.strategies.forgetting import GateMetrics, Verdict, evaluate_gate, verdict
from retain.strategies.kinds import AuditFinding, MetaStart, Phase
from retain.strategies.measure import measure_batch
from retain.strategies.phases import PhaseTimes
from retain.strategies.policy import Choice, ShiftHistoryEntry, choose, fallback_choice
from retain.strategies.replay import Data, ReplayMemory, remember, split_holdout
from retain.strategies.settings import GateConfig, PolicyConfig, ReptileSettings, ShiftThresholds, TrainingSettings
from retain.strategies.shift import ShiftReport
from retain.strategies.training import ComputeCounter, TrainingHooks


@dataclass(frozen=True)
class StepSettings:
    """Everything a step is configured by. ``training.seed`` is the batch's seed."""

    policy: PolicyConfig
    thresholds: ShiftThresholds
    training: TrainingSettings
    reptile: ReptileSettings
    gate: GateConfig
    replay_capacity: int
    audit_fraction: float
    head: str = "head"


@dataclass(frozen=True)
class NewBatch:
    """The labelled samples a step adapts to."""

    x: torch.Tensor
    y: torch.Tensor
    source: int  # what the replay memory files its samples under (the batch id)
    num_classes: int  # the production model's classes (its head may widen beyond them)


@dataclass(frozen=True)
class Candidate:
    choice: Choice
    model: nn.Module
    gate: GateMetrics
    verdict: Verdict
    duration: float  # training seconds
    optimizer_steps: int = 0  # every gradient step of its training (Reptile's inner steps too)
    samples_seen: int = 0  # the samples in those steps, rehearsal included
    meta_init: MetaInit | None = None  # from ``meta``: the Reptile initialisation it adapted from
    meta_start: MetaStart | None = None  # and where that initialisation started


@dataclass(frozen=True)
class StepResult:
    report: ShiftReport
    candidates: tuple[Candidate, ...]  # the first choice, then each fallback tried, until one passed
    train: Data
    holdout: Data
    memory: ReplayMemory  # production's memory with this batch remembered

    @property
    def accepted(self) -> Candidate | None:
        """The candidate that passed the gate, if any."""
        return next((c for c in self.candidates if c.verdict.accepted), None)

    @property
    def final(self) -> Candidate:
        """What the batch ends with: the accepted candidate, else the last one tried."""
        return self.accepted or self.candidates[-1]


Trainer = Callable[[Choice, TrainingJob], TrainedCandidate]  # the signature of ``train_candidate``


def adapt_step(
    production: nn.Module,
    memory: ReplayMemory,
    batch: NewBatch,
    history: tuple[ShiftHistoryEntry, ...],
    settings: StepSettings,
    hooks: TrainingHooks = TrainingHooks(),
    report: ShiftReport | None = None,
    train: Trainer = train_candidate,
    on_choice: Callable[[Choice], None] = lambda choice: None,
    on_candidate: Callable[[Candidate], None] = lambda candidate: None,
    meta_init: MetaInit | None = None,
    phases: PhaseTimes | None = None,
) -> StepResult:
    """Adapt ``production`` to ``batch``; ``production`` and ``memory`` are left as they were.

    ``report`` skips the measurement when the caller has it already (with the same seed it is
    the same report); ``train`` replaces ``train_candidate`` (a benchmark that has trained every
    strategy looks its candidates up). ``on_choice`` and ``on_candidate`` report progress.
    ``meta_init`` is the lineage's Reptile initialisation (production's), which ``meta`` continues.
    ``phases`` adds the step's seconds per phase.
    """
    seed = settings.training.seed
    phases = phases or PhaseTimes()
    if report is None:
        report = measure_batch(production, settings.head, memory, batch.x, batch.y, batch.num_classes,
                               settings.thresholds, seed, phases)
    keep = torch.ones(len(batch.y), dtype=torch.bool)
    keep[list(report.suspected_labels)] = False  # suspected label noise: not trained on, gated on or remembered
    train_data, holdout = split_holdout(batch.x[keep], batch.y[keep], settings.gate.holdout_fraction, seed)

    with phases.timed(Phase.TRAINING):
        job = TrainingJob.from_memory(production, train_data, memory, settings.training, head=settings.head,
                                      hooks=hooks, reptile=settings.reptile, meta_init=meta_init)

    def train_and_gate(choice: Choice) -> Candidate:
        on_choice(choice)
        counter = ComputeCounter()
        started = time.monotonic()
        with phases.timed(Phase.TRAINING):
            trained = train(choice, replace(job, hooks=replace(job.hooks, on_step=counter)))
        duration = time.monotonic() - started
        with phases.timed(Phase.GATE):
            gate = evaluate_gate(production, trained.model, memory.audit_groups(), holdout)
        candidate = Candidate(choice, trained.model, gate, verdict(gate, settings.gate, report.novel_classes),
                              duration, counter.steps, counter.samples, trained.meta_init, trained.meta_start)
        on_candidate(candidate)
        return candidate

    choices = [choose(report, history, settings.policy, settings.training.lr)]
    candidates = [train_and_gate(choices[0])]
    while not candidates[-1].verdict.accepted:
        refused = candidates[-1].verdict
        forgot = refused.finding is AuditFinding.ABOVE or bool(refused.groups_above)
        following = fallback_choice(choices, report, settings.policy, settings.training.lr, forgot)
        if following is None:
            break
        choices.append(following)
        candidates.append(train_and_gate(following))
    with phases.timed(Phase.ARTIFACTS):
        remembered = remember(memory, train_data, holdout, source=batch.source, capacity=settings.replay_capacity,
                              audit_fraction=settings.audit_fraction, seed=seed)
    return StepResult(report, tuple(candidates), train_data, holdout, remembered)
