"""The closed sets the strategies decide between (no torch: configs and views use them)."""

from enum import StrEnum


class Severity(StrEnum):
    """How far a batch has shifted, in order."""

    NONE = "none"
    MILD = "mild"
    MODERATE = "moderate"
    SEVERE = "severe"


SEVERITIES: tuple[Severity, ...] = tuple(Severity)


class Strategy(StrEnum):
    """The three ways to adapt a model."""

    FINETUNE = "finetune"
    FEATURE_EXTRACTION = "feature_extraction"
    META = "meta"


STRATEGIES: tuple[Strategy, ...] = tuple(Strategy)


class GateDecision(StrEnum):
    """The gate's answer about a candidate ("rejected" is its JSON and metric value)."""

    ACCEPTED = "accepted"
    REFUSED = "rejected"


class MetaStart(StrEnum):
    """Where a ``meta`` candidate's Reptile initialisation started."""

    CONTINUED = "continued"  # from the lineage's stored initialisation, for ``meta.continue_steps``
    LEARNED = "learned"  # from the production weights, for ``meta_steps``: none fitted


class AuditFinding(StrEnum):
    """What the audit set shows about a candidate's forgetting, at the gate's confidence."""

    WITHIN = "within"  # below the limit plus its tolerance
    ABOVE = "above"  # above the limit
    UNRESOLVED = "unresolved"  # neither: too few audit samples to tell


class WhenUnresolved(StrEnum):
    """``gate.unresolved``: what a candidate whose forgetting the audit set cannot resolve gets."""

    # Accepted when the candidate is better on the mix of old and new data with probability
    # ``gate.confidence``: refusing keeps a model that is wrong on the new data, and what is at
    # stake there can outweigh what the audit set cannot rule out.
    WEIGH = "weigh"
    REFUSE = "refuse"
    ACCEPT_IF_GAIN_SIGNIFICANT = "accept_if_gain_significant"  # its new-data gain is itself significant


class Phase(StrEnum):
    """Where a batch's time goes (``PhaseTimes``; the ``batch timed`` log line, a metric)."""

    LOAD = "load"  # reading and checking the file, the production model and memory
    SHIFT = "shift"  # production's features and predictions, the MMD test
    PROBE = "probe"  # the linear probe on frozen features
    TRAINING = "training"  # every candidate's training
    GATE = "gate"  # every candidate against production on audit set and holdout
    ARTIFACTS = "artifacts"  # the replay memory updated, weights and memory written
    REGISTRY = "registry"  # the policy's history read, versions registered, the batch finished
