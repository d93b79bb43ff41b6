"""Prometheus metrics, on a registry of their own (no module-level global state)."""

from __future__ import annotations

from enum import StrEnum

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from retain.strategies.kinds import STRATEGIES, AuditFinding, GateDecision


class _ModelInfoCollector:
    """``retain_model_info{model,version,alias} 1`` for each live alias, read at scrape time."""

    def __init__(self) -> None:
        self.aliases: dict[str, dict[str, int]] = {}  # model -> alias -> version

    def collect(self):
        family = GaugeMetricFamily(
            "retain_model_info", "Model version held by each alias", labels=["model", "version", "alias"]
        )
        for model, aliases in sorted(self.aliases.items()):
            for alias, version in sorted(aliases.items()):
                family.add_metric([model, str(version), alias], 1.0)
        yield family


class BatchOutcomeLabel(StrEnum):
    """``retain_batches_total{outcome}``: how each batch ended."""

    ACCEPTED = "accepted"  # a candidate passed the gate
    REFUSED = "rejected"  # every candidate failed the gate
    INVALID = "invalid"  # the file was rejected
    FAILED = "failed"  # out of attempts


class _ForModel:
    """A labelled family seen from one model: ``labels(**rest)`` fills in ``model``."""

    def __init__(self, family, model: str) -> None:
        self._family, self._model = family, model

    def labels(self, **labels: str):
        return self._family.labels(model=self._model, **labels)

    def remove(self, *values: str) -> None:
        self._family.remove(self._model, *values)


class ServiceMetrics:
    """Every metric of the process. Those of one lineage carry the label ``model``; a
    pipeline writes them through ``for_model(name)``, which names them as before."""

    def __init__(self, recent_batches: int = 10) -> None:
        self.recent_batches = recent_batches
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        m = ["model"]
        self.batches = Counter("retain_batches", "Batches finished, by outcome", [*m, "outcome"], registry=r)
        self.candidates = Counter(
            "retain_candidates", "Candidates trained, by strategy and gate decision", [*m, "strategy", "decision"],
            registry=r,
        )
        self.shift_score = Gauge("retain_shift_score", "MMD² of the last batch against the replay reference", m,
                                 registry=r)
        self.shift_pvalue = Gauge("retain_shift_pvalue", "Permutation p-value of the last shift test", m, registry=r)
        self.forgetting = Gauge(
            "retain_forgetting_ratio", "Audit accuracy lost by the last candidate versus production", m, registry=r
        )
        self.batch_forgetting = Gauge(
            "retain_batch_forgetting_ratio",
            "Audit accuracy the last candidate lost on each recent source batch (0 = init data)",
            [*m, "batch"],
            registry=r,
        )
        self.production_forgetting = Gauge(
            "retain_production_forgetting_ratio",
            "Forgetting measured when the production version was a candidate",
            m,
            registry=r,
        )
        self.production_forgetting_limit = Gauge(
            "retain_production_forgetting_limit_ratio",
            "The gate's forgetting limit when the production version was a candidate",
            m,
            registry=r,
        )
        self.gate_max_forgetting = Gauge(
            "retain_gate_max_forgetting_ratio", "The forgetting gate's limit (gate.max_forgetting)", m, registry=r
        )
        self.gate_max_forgetting_new_classes = Gauge(
            "retain_gate_max_forgetting_new_classes_ratio",
            "The forgetting gate's limit for batches with new classes (gate.max_forgetting_new_classes)",
            m,
            registry=r,
        )
        self.gate_findings = Counter(
            "retain_gate_findings", "Candidates by what their audit set showed (within/above/unresolved the limit)",
            [*m, "finding"], registry=r)
        self.gate_forgetting_upper = Gauge(
            "retain_gate_forgetting_upper_bound_ratio",
            "Upper confidence bound (gate.confidence) on the last candidate's forgetting", m, registry=r)
        self.gate_forgetting_lower = Gauge(
            "retain_gate_forgetting_lower_bound_ratio",
            "Lower confidence bound (gate.confidence) on the last candidate's forgetting", m, registry=r)
        self.gate_audit_samples = Gauge(
            "retain_gate_audit_samples", "Audit samples the last candidate was judged on", m, registry=r)
        self.gate_samples_to_resolve = Gauge(
            "retain_gate_audit_samples_needed",
            "Audit samples the forgetting limit takes at the last candidate's disagreement with production", m,
            registry=r)
        self.suspected_noisy_labels = Counter(
            "retain_suspected_noisy_labels", "Labels left out of training, gate and memory as suspected noise", m,
            registry=r)
        self.outage = Gauge(
            "retain_outage", "1 while the daemon waits out a system outage (disk_full, registry_unreachable)",
            ["kind"], registry=r)
        self.stall_threshold = Gauge(
            "retain_stall_threshold_seconds",
            "Alert when the queue is non-empty and no batch finished for this long (daemon.stall_alert_seconds)",
            registry=r,
        )
        # role: the candidate's accuracy or production's on the same data.
        self.old_accuracy = Gauge(
            "retain_old_accuracy_ratio", "Accuracy on the replay audit set", [*m, "role"], registry=r
        )
        self.new_accuracy = Gauge(
            "retain_new_accuracy_ratio", "Accuracy on the new batch's held-out slice", [*m, "role"], registry=r
        )
        self.training_duration = Histogram(
            "retain_training_duration_seconds",
            "Time to train one candidate, by strategy",
            [*m, "strategy"],
            buckets=(1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
            registry=r,
        )
        self.phase_duration = Counter(
            "retain_batch_phase_seconds", "Seconds spent processing batches, by phase (load, shift, probe, ...)",
            [*m, "phase"], registry=r,
        )
        self.training_steps = Counter("retain_training_steps", "Optimizer steps taken training candidates",
                                      [*m, "strategy"], registry=r)
        self.training_samples = Counter("retain_training_samples", "Samples seen training candidates (rehearsal too)",
                                        [*m, "strategy"], registry=r)
        self.batch_latency = Histogram(
            "retain_batch_latency_seconds",
            "Time from a file's arrival to its batch finishing",
            m,
            buckets=(1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200),
            registry=r,
        )
        self.queue_depth = Gauge("retain_queue_depth", "Batches pending or in progress", m, registry=r)
        self.check_shift_score = Gauge(
            "retain_check_shift_score", "MMD² of the last unlabelled file checked (inbox/NAME/unlabelled/)", m,
            registry=r)
        self.check_pvalue = Gauge("retain_check_pvalue", "Permutation p-value of the last unlabelled check", m,
                                  registry=r)
        self.check_prediction_distance = Gauge(
            "retain_check_prediction_distance_ratio",
            "Total variation between production's predictions on the last unlabelled file and on its replay memory",
            m, registry=r)
        self.check_timestamp = Gauge("retain_check_timestamp_seconds", "Unix time of the last unlabelled check", m,
                                     registry=r)
        self.checks = Counter("retain_checks", "Unlabelled files checked, by severity", [*m, "severity"], registry=r)
        self.awaiting_approval = Gauge(
            "retain_awaiting_approval", "Accepted candidates waiting for retain approve (auto_promote off)", m,
            registry=r)
        self.production_version = Gauge("retain_production_version", "Version held by the production alias", m,
                                        registry=r)
        self.replay_samples = Gauge("retain_replay_buffer_samples", "Samples in the production replay memory", m,
                                    registry=r)
        self.last_batch = Gauge(
            "retain_last_batch_timestamp_seconds", "Unix time the last batch finished", m, registry=r
        )
        self._model_info = _ModelInfoCollector()
        r.register(self._model_info)
        self._server = None

    def for_model(self, model: str) -> "ModelMetrics":
        """The metrics of one model's lineage, every label set present from the first scrape."""
        return ModelMetrics(self, model)

    def serve(self, host: str, port: int) -> int:
        """Start the scrape endpoint; returns the bound port (useful with port 0)."""
        self._server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return self._server.server_address[1]

    def shutdown(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class ModelMetrics:
    """One model's metrics, named as ``ServiceMetrics`` names them, the ``model`` label filled in."""

    def __init__(self, service: ServiceMetrics, model: str) -> None:
        self.model = model
        self.recent_batches = service.recent_batches
        for name in ("shift_score", "shift_pvalue", "forgetting", "production_forgetting",
                     "production_forgetting_limit", "gate_max_forgetting", "gate_max_forgetting_new_classes",
                     "batch_latency", "queue_depth", "awaiting_approval", "production_version",
                     "check_shift_score", "check_pvalue", "check_prediction_distance", "check_timestamp",
                     "replay_samples", "gate_forgetting_upper", "gate_forgetting_lower", "gate_audit_samples",
                     "gate_samples_to_resolve", "last_batch", "suspected_noisy_labels"):
            setattr(self, name, getattr(service, name).labels(model=model))
        self.batches = _ForModel(service.batches, model)
        self.candidates = _ForModel(service.candidates, model)
        self.batch_forgetting = _ForModel(service.batch_forgetting, model)
        self.checks = _ForModel(service.checks, model)
        self.gate_findings = _ForModel(service.gate_findings, model)
        self.training_duration = _ForModel(service.training_duration, model)
        self.training_steps = _ForModel(service.training_steps, model)
        self.phase_duration = _ForModel(service.phase_duration, model)
        self.training_samples = _ForModel(service.training_samples, model)
        self.old_accuracy = _ForModel(service.old_accuracy, model)
        self.new_accuracy = _ForModel(service.new_accuracy, model)
        self.stall_threshold = service.stall_threshold
        self._model_info = service._model_info
        for outcome in BatchOutcomeLabel:
            self.batches.labels(outcome=outcome)
        for finding in AuditFinding:
            self.gate_findings.labels(finding=finding)
        for strategy in STRATEGIES:
            for decision in GateDecision:
                self.candidates.labels(strategy=strategy, decision=decision)
        self._forgetting_batches: list[str] = []

    def set_batch_forgetting(self, per_batch: dict[int, float]) -> None:
        """Per-source-batch forgetting for the most recent ``recent_batches`` batches only,
        so the label's cardinality stays bounded however long the daemon runs."""
        keep = sorted(per_batch)[-self.recent_batches :] if self.recent_batches else []
        labels = [str(b) for b in keep]
        for stale in set(self._forgetting_batches) - set(labels):
            self.batch_forgetting.remove(stale)
        for batch in keep:
            self.batch_forgetting.labels(batch=str(batch)).set(per_batch[batch])
        self._forgetting_batches = labels

    def set_aliases(self, aliases: dict[str, int]) -> None:
        self._model_info.aliases[self.model] = dict(aliases)
        if "production" in aliases:
            self.production_version.set(aliases["production"])
