"""Decisions at defaults: retain, configured by nothing but its defaults, against Avalanche's
Replay, GEM and Cumulative and against retain with ``meta`` always, on four streams of the kinds
users bring, seeds 0–2.

- ``small-tabular``: 12 Gaussian-class features, 3 classes; 90 rows at init, then 6 batches of
  45 whose domains move (two features rescaled, the class means shifted a little further each
  time): audit sets of 20–70 samples, held-out slices of 11.
- ``label-noise``: digits, 300 at init and 6 batches of 160; batch 3 has 40 % of its labels
  replaced by another class.
- ``rotated-cnn``: digits through retain's small CNN, 100 at init and 11 batches of 100 rotated
  by 0, 25 and 50 degrees in turn (every domain recurs).
- ``gradual-drift``: 10 features, 4 classes, 300 at init and 20 batches of 200; the class
  means rotate a little with every batch.

Every domain is scored on a test set nobody trains on (digits: 500 images kept aside, rotated as
the domain is; generated streams: 2,000 fresh samples per domain). Printed per stream and method:
the final average accuracy over the domains seen, mean ± spread over the seeds; for retain, the
training seconds (every candidate, fallbacks included) and the largest drop of any domain's
held-out accuracy after a promotion; and the summary the issue asks for.

    .venv/bin/python benchmarks/defaults.py [--streams NAME ...] [--seeds 0 1 2] [--methods ...] [--set K=V ...]

``--set`` runs retain with settings changed, to hold a change against the defaults. The
defaults before issue 31, approximately (the cycle of fallbacks stays):

    --methods retain --set gate.confidence=0.95 gate.unresolved=refuse training.distillation=1.0 \
        policy.lr_scale_none=0.1 policy.lr_scale_mild=0.2 policy.probe_transfers=0.98 \
        policy.small_batch=200 policy.recurring_batches=2

and without the label-noise check: ``--set shift.noise_excess=1.0``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import nn

from retain.strategies.datasets import digits
from retain.strategies.job import MetaInit
from retain.strategies.kinds import Strategy
from retain.strategies.models import mlp, predict, small_cnn
from retain.strategies.policy import ShiftHistoryEntry
from retain.strategies.replay import Data, ReplayMemory, remember, split_holdout
from retain.strategies.settings import GateConfig, PolicyConfig, ReptileSettings, ShiftThresholds, TrainingSettings
from retain.strategies.step import NewBatch, StepSettings, adapt_step
from retain.strategies.training import limit_threads, quiet_avalanche, tensor_dataset, train_initial

CAPACITY, AUDIT_FRACTION = 1000, 0.3  # retain's [replay] defaults; Avalanche's buffers get the same capacity


@dataclass(frozen=True)
class Batch:
    train: Data
    domain: str  # the test set that scores it


@dataclass(frozen=True)
class Stream:
    name: str
    batches: list[Batch]  # the first is the init data
    tests: dict[str, Data]  # per domain
    classes: int
    model: Callable[[], nn.Module]


def _tensors(x: np.ndarray, y: np.ndarray) -> Data:
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), torch.from_numpy(y.astype(np.int64))


def small_tabular(seed: int) -> Stream:
    rng = np.random.default_rng(seed)
    dim, classes = 12, 3
    centres = rng.normal(0, 1.0, size=(classes, dim))
    drift = rng.normal(0, 0.35, size=(classes, dim))

    def sample(n: int, step: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, classes, n)
        x = centres[y] + step * drift[y] + rng.normal(size=(n, dim))
        x[:, :2] *= 1 + 0.15 * step
        return x, y

    batches = [Batch(_tensors(*sample(90 if step == 0 else 45, step)), f"domain {step}") for step in range(7)]
    tests = {f"domain {step}": _tensors(*sample(2000, step)) for step in range(7)}
    return Stream("small-tabular", batches, tests, classes, lambda: mlp((dim,), classes))


def _digits_split(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    x, y = digits(shuffle_seed=seed)
    return x[500:], y[500:], x[:500], y[:500]


def label_noise(seed: int) -> Stream:
    x, y, test_x, test_y = _digits_split(seed)
    rng = np.random.default_rng(seed + 1)
    sizes = [300] + [160] * 6
    bounds = np.cumsum([0, *sizes])
    batches = []
    for step, (start, end) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        labels = y[start:end].copy()
        if step == 3:  # 40 % of the labels replaced by another class
            wrong = rng.random(len(labels)) < 0.4
            labels[wrong] = (labels[wrong] + rng.integers(1, 10, wrong.sum())) % 10
        batches.append(Batch(_tensors(x[start:end], labels), "digits"))
    return Stream("label-noise", batches, {"digits": _tensors(test_x, test_y)}, 10, lambda: mlp((64,), 10))


def rotated_cnn(seed: int) -> Stream:
    from scipy.ndimage import rotate

    x, y, test_x, test_y = _digits_split(seed)

    def rotated(images: np.ndarray, angle: int) -> np.ndarray:
        turned = rotate(images.reshape(-1, 8, 8), angle, axes=(1, 2), reshape=False, order=1, mode="constant")
        return turned.reshape(-1, 64)

    angles = [0, 25, 50]
    batches = []
    for step, index in enumerate(np.array_split(np.arange(1200), 12)):
        angle = angles[step % 3]
        batches.append(Batch(_tensors(rotated(x[index], angle), y[index]), f"{angle} deg"))
    tests = {f"{a} deg": _tensors(rotated(test_x, a), test_y) for a in angles}
    return Stream("rotated-cnn", batches, tests, 10, lambda: small_cnn((1, 8, 8), 10))


def gradual_drift(seed: int) -> Stream:
    rng = np.random.default_rng(seed)
    dim, classes = 10, 4
    centres = rng.normal(0, 1.6, size=(classes, dim))
    plane = np.linalg.qr(rng.normal(size=(dim, 2)))[0]  # the class means rotate in this plane

    def means(step: int) -> np.ndarray:
        angle = math.radians(4 * step)
        turn = np.eye(dim) + plane @ (np.array([[math.cos(angle) - 1, -math.sin(angle)],
                                                [math.sin(angle), math.cos(angle) - 1]]) @ plane.T)
        return centres @ turn.T

    def sample(n: int, step: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, classes, n)
        return means(step)[y] + rng.normal(size=(n, dim)), y

    batches = [Batch(_tensors(*sample(300 if step == 0 else 200, step)), f"batch {step}") for step in range(21)]
    tests = {f"batch {step}": _tensors(*sample(2000, step)) for step in range(21)}
    return Stream("gradual-drift", batches, tests, classes, lambda: mlp((dim,), classes))


STREAMS: dict[str, Callable[[int], Stream]] = {
    "small-tabular": small_tabular,
    "label-noise": label_noise,
    "rotated-cnn": rotated_cnn,
    "gradual-drift": gradual_drift,
}


# ------------------------------------------------------------------------------ scoring


def domain_accuracies(model: nn.Module, stream: Stream, upto: int) -> dict[str, float]:
    """Held-out accuracy on every domain seen in batches 0..upto."""
    seen = dict.fromkeys(b.domain for b in stream.batches[: upto + 1])
    return {d: float((predict(model, stream.tests[d][0]) == stream.tests[d][1]).double().mean()) for d in seen}


@dataclass
class Outcome:
    final: float = 0.0  # mean held-out accuracy over every domain, after the last batch
    training_seconds: float = 0.0
    largest_drop: float = 0.0  # of any seen domain's held-out accuracy, after a promotion
    promotions: int = 0
    strategies: list[str] = field(default_factory=list)  # what each batch's accepted candidate (or "-") used


# ------------------------------------------------------------------------------ retain


@dataclass(frozen=True)
class Overrides:
    """``--set section.key=value``: retain away from its defaults, to try a change against them."""

    sections: dict[str, dict[str, object]] = field(default_factory=dict)

    def build(self, section: str, cls, **fixed):
        return cls(**{**self.sections.get(section, {}), **fixed})


def run_retain(stream: Stream, seed: int, policy: PolicyConfig, overrides: Overrides = Overrides()) -> Outcome:
    training = overrides.build("training", TrainingSettings, threads=1, seed=seed)
    gate = overrides.build("gate", GateConfig)
    thresholds = overrides.build("shift", ShiftThresholds)
    reptile = overrides.build("meta", ReptileSettings)
    x0, y0 = stream.batches[0].train
    train0, holdout0 = split_holdout(x0, y0, gate.holdout_fraction, seed)
    torch.manual_seed(seed)
    production = train_initial(stream.model(), *train0, training)
    memory = remember(ReplayMemory.empty(tuple(x0.shape[1:])), train0, holdout0, 0, CAPACITY, AUDIT_FRACTION, seed)
    history: list[ShiftHistoryEntry] = []
    meta_init: MetaInit | None = None
    outcome = Outcome()
    for t, batch in enumerate(stream.batches[1:], start=1):
        x, y = batch.train
        settings = StepSettings(policy=policy, thresholds=thresholds, training=replace(training, seed=seed + t),
                                reptile=reptile, gate=gate, replay_capacity=CAPACITY,
                                audit_fraction=AUDIT_FRACTION)
        step = adapt_step(production, memory, NewBatch(x, y, source=t, num_classes=stream.classes),
                          tuple(history), settings, meta_init=meta_init)
        outcome.training_seconds += sum(c.duration for c in step.candidates)
        history.append(ShiftHistoryEntry(t, step.report.severity, step.report.p_value, step.report.novel_classes))
        noise = f"(noise {len(step.report.suspected_labels)})" if step.report.suspected_labels else ""
        if step.accepted is None:
            outcome.strategies.append("-" + noise)
            continue
        before = domain_accuracies(production, stream, t - 1)
        production, memory = step.accepted.model, step.memory
        meta_init = step.accepted.meta_init or meta_init
        after = domain_accuracies(production, stream, t - 1)
        outcome.largest_drop = max(outcome.largest_drop, *(before[d] - after[d] for d in before))
        outcome.promotions += 1
        outcome.strategies.append(str(step.accepted.choice.strategy) + noise)
    outcome.final = float(np.mean(list(domain_accuracies(production, stream, len(stream.batches) - 1).values())))
    return outcome


# --------------------------------------------------------------------------- baselines


def run_avalanche(stream: Stream, method: str, seed: int) -> Outcome:
    from avalanche.training import GEM, Cumulative

    from retain.strategies.avalanche_api import EvaluationPlugin, Replay, benchmark_from_datasets

    torch.manual_seed(seed)
    model = stream.model()
    defaults = TrainingSettings()
    common = dict(model=model, optimizer=torch.optim.Adam(model.parameters(), lr=defaults.lr),
                  criterion=nn.CrossEntropyLoss(), train_mb_size=defaults.batch_size,
                  train_epochs=defaults.epochs, eval_mb_size=256, evaluator=EvaluationPlugin(loggers=[]))
    if method == "Replay":
        strategy = Replay(mem_size=CAPACITY, **common)
    elif method == "GEM":
        strategy = GEM(patterns_per_exp=CAPACITY // len(stream.batches), memory_strength=0.5, **common)
    else:
        strategy = Cumulative(**common)
    scenario = benchmark_from_datasets(train=[tensor_dataset(*b.train) for b in stream.batches])
    started = time.perf_counter()
    for experience in scenario.train_stream:
        strategy.train(experience, num_workers=0)
    model.eval()
    outcome = Outcome(training_seconds=time.perf_counter() - started)
    outcome.final = float(np.mean(list(domain_accuracies(model, stream, len(stream.batches) - 1).values())))
    return outcome


# ------------------------------------------------------------------------------ report

METHODS = ("retain", "always-meta", "Replay", "GEM", "Cumulative")


def run(stream: Stream, method: str, seed: int, overrides: Overrides) -> Outcome:
    if method == "retain":
        return run_retain(stream, seed, overrides.build("policy", PolicyConfig), overrides)
    if method == "always-meta":
        return run_retain(stream, seed, overrides.build("policy", PolicyConfig, strategy=Strategy.META, fallback=False),
                          overrides)
    # Avalanche's deprecation notices force themselves past warning filters: only stderr stops them.
    with quiet_avalanche(), warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        return run_avalanche(stream, method, seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", nargs="*", default=list(STREAMS), choices=list(STREAMS))
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--methods", nargs="*", default=list(METHODS), choices=METHODS)
    parser.add_argument("--set", nargs="*", default=[], metavar="SECTION.KEY=VALUE",
                        help="run retain with these settings changed (JSON values), e.g. policy.fallback=false")
    args = parser.parse_args()
    sections: dict[str, dict[str, object]] = {}
    for item in args.set:
        key, value = item.split("=", 1)
        section, name = key.split(".", 1)
        try:
            sections.setdefault(section, {})[name] = json.loads(value)
        except json.JSONDecodeError:
            sections.setdefault(section, {})[name] = value  # a bare string: policy.strategy=finetune
    overrides = Overrides(sections)
    limit_threads(1)
    limit = GateConfig().max_forgetting + 0.01
    results: dict[str, dict[str, list[Outcome]]] = {}
    for name in args.streams:
        results[name] = {m: [] for m in args.methods}
        for seed in args.seeds:
            stream = STREAMS[name](seed)
            for method in args.methods:
                results[name][method].append(run(stream, method, seed, overrides))
        row = results[name]
        print(f"\n{name} (seeds {args.seeds})")
        for method in args.methods:
            finals = [o.final for o in row[method]]
            line = f"  {method:>12}: final {np.mean(finals):.3f} ({' '.join(f'{f:.3f}' for f in finals)})"
            if method in ("retain", "always-meta"):
                line += (f", training {sum(o.training_seconds for o in row[method]):6.1f} s, "
                         f"largest domain drop after a promotion {max(o.largest_drop for o in row[method]):+.3f}, "
                         f"promoted {sum(o.promotions for o in row[method])}/{len(finals) * (len(stream.batches) - 1)}")
            print(line, flush=True)
        if "retain" in row:
            for seed, o in zip(args.seeds, row["retain"], strict=True):
                print(f"    retain seed {seed}: {' '.join(o.strategies)}")

    if {"retain", "Replay", "GEM"} <= set(args.methods):
        mean = {m: {s: float(np.mean([o.final for o in results[s][m]])) for s in results} for m in args.methods}
        replay_ok = sum(mean["retain"][s] >= mean["Replay"][s] - 1e-9 for s in results)
        gem_ok = sum(mean["retain"][s] >= mean["GEM"][s] - 1e-9 for s in results)
        print(f"\nretain >= Replay on {replay_ok}/{len(results)} streams, >= GEM on {gem_ok}/{len(results)}")
    if "retain" in args.methods:
        clean = [s for s in results if s != "label-noise"]
        drops = [max(o.largest_drop for o in results[s]["retain"]) for s in clean]
        print(f"largest held-out domain drop after a promotion (streams without label noise): "
              f"{max(drops, default=0):+.3f} (limit + 1 point: {limit:.3f})")
    if {"retain", "always-meta"} <= set(args.methods):
        pair = ("retain", "always-meta")
        seconds = {m: sum(o.training_seconds for s in results for o in results[s][m]) for m in pair}
        accuracy = {m: float(np.mean([o.final for s in results for o in results[s][m]])) for m in pair}
        print(f"training seconds: retain {seconds['retain']:.1f}, always-meta {seconds['always-meta']:.1f} "
              f"(ratio {seconds['retain'] / seconds['always-meta']:.2f}); mean final accuracy retain "
              f"{accuracy['retain']:.4f}, always-meta {accuracy['always-meta']:.4f} "
              f"({100 * (accuracy['retain'] - accuracy['always-meta']):+.2f} points)")


if __name__ == "__main__":
    main()
