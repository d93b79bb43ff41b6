"""Every setting the strategies take, declared once: its default, its constraint, its comment.

These are the ``[shift]``, ``[policy]``, ``[meta]``, ``[training]`` and ``[gate]`` sections of
``retain.toml`` as they are (``retain.daemon.config`` composes them into the file); the
strategies take the same objects. Validated dataclasses: a bad value is refused where it is
made, with the key's name. No torch here: reading a config must not import it.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass

from retain.strategies.kinds import Severity, Strategy, WhenUnresolved

_STRICT = ConfigDict(extra="forbid")


@dataclass(frozen=True, config=_STRICT)
class ShiftThresholds:
    """``[shift]``: where each severity starts."""

    alpha: float = Field(default=0.01, gt=0, lt=1)  # MMD permutation test significance level
    permutations: int = Field(default=200, ge=20)
    # Random Fourier features approximating the test's Gaussian kernel; unset: 2048 up to
    # 2,048 samples in all, halving as they double, 256 beyond 8,192 (benchmarks/shift_mmd.py).
    kernel_features: int | None = Field(default=None, ge=16, le=8192, multiple_of=2)
    max_samples: int | None = Field(default=None, ge=10)  # per side; None tests every sample
    mild_label_distance: float = Field(default=0.15, ge=0, le=1)
    moderate_label_distance: float = Field(default=0.35, ge=0, le=1)
    mild_accuracy_drop: float = 0.03
    moderate_accuracy_drop: float = 0.10
    severe_accuracy_drop: float = 0.25
    # Suspected label noise (strategies/label_noise.py): among the batch's rows production is
    # as sure of as of the surest half of its audit set (this quantile of its top probability
    # there), labels that disagree with it exceed its error rate on those audit samples by
    # ``noise_excess`` or more, at significance ``noise_alpha``. Such labels are left out of
    # training, the gate and the memory.
    noise_confidence_quantile: float = Field(default=0.5, ge=0, lt=1)
    noise_excess: float = Field(default=0.1, gt=0, le=1)
    noise_alpha: float = Field(default=0.001, gt=0, lt=1)


@dataclass(frozen=True, config=_STRICT)
class PolicyConfig:
    """``[policy]``: every threshold the policy's rules compare against."""

    # finetune: a fraction of the base learning rate, by severity. The full rate by default:
    # with the replay memory rehearsed and production's outputs distilled into it, reduced
    # rates (0.1 and 0.2 below a moderate shift) left candidates under-trained and 1-3 points
    # below Avalanche's Replay on benchmarks/defaults.py's streams.
    lr_scale_none: float = Field(default=1.0, gt=0, le=1)
    lr_scale_mild: float = Field(default=1.0, gt=0, le=1)
    lr_scale_moderate: float = Field(default=1.0, gt=0, le=1)
    lr_scale_severe: float = Field(default=1.0, gt=0, le=1)
    # feature_extraction trains only the head, which takes a higher rate than the whole net.
    feature_extraction_lr_scale: float = Field(default=3.0, gt=0)
    # meta adapts from an initialisation already fitted to every task: a gentle final step
    # keeps it close to that multi-task point, so it forgets less ...
    meta_lr_scale: float = Field(default=0.2, gt=0)
    # ... unless the batch brings new classes, whose head rows start from scratch: at the
    # gentle rate they stay under-trained.
    meta_lr_scale_new_classes: float = Field(default=1.0, gt=0)
    # A significantly shifted batch smaller than this picks feature_extraction first. 0 (the
    # default) turns the rule off: a new head accepted first stayed weak where a fine-tune
    # would have passed (benchmarks/defaults.py: 0.915 against 0.941 on the small tabular
    # stream, 0.868 against 0.942 on rotated digits); the head is tried when a fine-tune fails.
    small_batch: int = Field(default=0, ge=0)
    # Linear-probe accuracy on frozen features at or above which they "separate" new classes
    # (feature_extraction; below it, meta) ...
    probe_separates: float = Field(default=0.98, ge=0, le=1)
    # ... and below which features "do not transfer" to a significantly shifted batch, which
    # then picks meta first. 0 (the default) turns the rule off: probes stay below 0.98 on any
    # task whose best accuracy does, which made meta the first choice almost everywhere, at
    # 4-20x finetune's training time for no accuracy (benchmarks/defaults.py); meta is tried
    # when a fine-tune fails the gate.
    probe_transfers: float = Field(default=0.0, ge=0, le=1)
    # A batch the production model predicts at least this much better than its own audit set
    # (accuracy drop <= -known_batch_margin), with no significant shift, is one it already knows.
    known_batch_margin: float = Field(default=0.2, ge=0, le=1)
    # Significant shifts in at least this many distinct earlier batches count as recurring,
    # and pick meta first. Unset (the default): a recurring shift is met like any other, meta
    # only when a cheaper candidate fails the gate; on benchmarks/defaults.py's streams the rule
    # made meta the choice for nearly every batch of a drifting stream at no gain in accuracy.
    recurring_batches: int | None = Field(default=None, ge=1)
    # Look back this many earlier batches for recurrence.
    history_window: int = Field(default=10, ge=0)
    # When a candidate fails the gate, train a strategy not yet tried, until one passes or all
    # three have been tried: the safest after one that forgot beyond the limit, the strongest
    # after one that gained too little (retain.strategies.policy.next_strategy).
    fallback: bool = True
    # Always this strategy, without consulting the rules (a lineage pinned to one way of
    # adapting, or a baseline to compare the rules against). Unset: the rules choose.
    strategy: Strategy | None = None

    def finetune_lr_scale(self, severity: Severity) -> float:
        return {
            Severity.NONE: self.lr_scale_none,
            Severity.MILD: self.lr_scale_mild,
            Severity.MODERATE: self.lr_scale_moderate,
            Severity.SEVERE: self.lr_scale_severe,
        }[severity]


@dataclass(frozen=True, config=_STRICT)
class ReptileSettings:
    """``[meta]``: the Reptile initialisation that ``meta`` adapts from."""

    meta_steps: int = Field(default=200, ge=1)  # outer updates from the production weights
    # Set: each version keeps the Reptile initialisation, and the next meta candidate continues
    # it for this many outer updates instead of learning one from the production weights. Off
    # by default: on benchmarks/policy_regret.py's streams it cost accuracy at every step count
    # (production's weights already descend from the last initialisation; the README has it).
    continue_steps: int | None = Field(default=None, ge=1)
    inner_steps: int = Field(default=5, ge=1)  # SGD steps on one task per outer update
    inner_lr: float = Field(default=0.05, gt=0)
    meta_lr: float = Field(default=0.5, gt=0, le=1)  # interpolation towards the adapted weights, annealed to 0
    batch_size: int = Field(default=32, ge=1)


@dataclass(frozen=True, config=_STRICT)
class TrainingSettings:
    """``[training]``: how every candidate is trained."""

    epochs: int = Field(default=8, ge=1)
    batch_size: int = Field(default=32, ge=1)
    lr: float = Field(default=0.003, gt=0)  # base learning rate; strategies scale it
    weight_decay: float = Field(default=0.0, ge=0)
    # Weight of the loss that anchors replayed samples to production's outputs: 1.0 held
    # candidates to production's mistakes too (benchmarks/defaults.py, rotated digits: 0.90
    # at 1.0, 0.95 at 0.3); without it (0) fine-tunes scored lowest on every stream and lost
    # up to 7.3 points on one domain.
    distillation: float = Field(default=0.3, ge=0)
    # "auto" is "cuda" where torch sees a GPU; training itself needs it resolved (resolved_device).
    device: str = Field(default="auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    # One thread by default: a daemon shares its host with the model it serves, and on a
    # busy machine more threads than free cores slow small-model training by orders of
    # magnitude (the README's "Threads").
    threads: int = Field(default=1, ge=1)
    seed: int = 0


@dataclass(frozen=True, config=_STRICT)
class GateConfig:
    """``[gate]``: when a candidate may replace production."""

    max_forgetting: float = Field(default=0.02, ge=0, le=1)  # accuracy points on the audit set, as a ratio
    # The limit for a batch that brings classes production has never seen. Old samples then
    # gain confusable neighbours, so even a model retrained from scratch on all the data loses
    # audit points in such a step (benchmarks/new_class_forgetting.py measures how many): the
    # everyday limit would refuse most new classes.
    max_forgetting_new_classes: float = Field(default=0.06, ge=0, le=1)
    # Required gain on the new batch's held-out slice: subtracted from the gain the mix weighs.
    min_gain: float = Field(default=0.0, ge=-1, le=1)
    # The verdict is decided on the paired per-sample outcomes of the audit set: a candidate
    # passes when they show, with this confidence, that its forgetting is below the limit plus
    # ``tolerance``, and fails when they show it above the limit. A point estimate on a few
    # dozen samples is a coin toss both ways (one sample of 26 is already 3.8 points);
    # benchmarks/gate_errors.py measures both error rates per audit size.
    # The verdict is decided on the paired per-sample outcomes of the audit set: a candidate
    # passes when they show, with this confidence, that its forgetting is below the limit plus
    # ``tolerance``, and fails when they show it above the limit. Refusing is not free (it
    # keeps a model that is wrong on the new data): at 0.95 the small audit sets users have
    # refused nearly every candidate (93 % of those that forget nothing and gain at 25 audit
    # samples); 0.80 balances both errors at every size (benchmarks/gate_errors.py, README).
    confidence: float = Field(default=0.8, ge=0.5, lt=1)
    # How far above the limit the confidence guards against: a candidate whose true
    # forgetting is limit + tolerance or more is promoted with probability ≤ 1 − confidence.
    # Without a margin no audit set could show a candidate forgetting exactly nothing to be
    # within a limit it is near.
    tolerance: float = Field(default=0.01, ge=0, le=1)
    # What a candidate gets when the audit set can resolve neither (too few samples): weighed
    # (accepted when it is better on the mix of old and new data with probability
    # ``confidence``), refused, or accepted when its gain on the new batch's held-out slice is
    # significant at the same confidence. Refusing froze every small model on the evaluation
    # streams while production fell ever further behind on new data (benchmarks/defaults.py).
    unresolved: WhenUnresolved = WhenUnresolved.WEIGH
    # The share of new data in what the model will serve, which weighs its gain on the new batch
    # against its forgetting on the audit set ...
    new_data_weight: float = Field(default=0.5, gt=0, lt=1)
    # ... and how probable it must be that the candidate is better on that mix (0.5: more
    # likely better than not, the choice that loses least accuracy on average).
    better_probability: float = Field(default=0.5, ge=0, lt=1)
    # Share of each batch held out from training to judge the candidate on new data.
    holdout_fraction: float = Field(default=0.25, gt=0, lt=1)

    def forgetting_limit(self, new_classes: Sequence[int] = ()) -> float:
        """The limit that applies to a batch bringing ``new_classes``: the new-classes limit
        is an allowance, never stricter than ``max_forgetting``."""
        if new_classes:
            return max(self.max_forgetting, self.max_forgetting_new_classes)
        return self.max_forgetting


__all__ = ["GateConfig", "PolicyConfig", "ReptileSettings", "ShiftThresholds", "TrainingSettings"]
