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

from retain.strategies.kinds import STRATEGIES, GateDecision


class _ModelInfoCollector:
    """``retain_model_info{version,alias} 1`` for each live alias, read at scrape time."""

    def __init__(self) -> None:
        self.aliases: dict[str, int] = {}

    def collect(self):
        family = GaugeMetricFamily(
            "retain_model_info", "Model version held by each alias", labels=["version", "alias"]
        )
        for alias, version in sorted(self.aliases.items()):
            family.add_metric([str(version), alias], 1.0)
        yield family


class BatchOutcomeLabel(StrEnum):
    """``retain_batches_total{outcome}``: how each batch ended."""

    ACCEPTED = "accepted"  # a candidate passed the gate
    REFUSED = "rejected"  # every candidate failed the gate
    INVALID = "invalid"  # the file was rejected
    FAILED = "failed"  # out of attempts


class ServiceMetrics:
    def __init__(self, recent_batches: int = 10) -> None:
        self.recent_batches = recent_batches
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        self.batches = Counter("retain_batches", "Batches finished, by outcome", ["outcome"], registry=r)
        self.candidates = Counter(
            "retain_candidates", "Candidates trained, by strategy and gate decision", ["strategy", "decision"], registry=r
        )
        self.shift_score = Gauge("retain_shift_score", "MMD² of the last batch against the replay reference", registry=r)
        self.shift_pvalue = Gauge("retain_shift_pvalue", "Permutation p-value of the last shift test", registry=r)
        self.forgetting = Gauge(
            "retain_forgetting_ratio", "Audit accuracy lost by the last candidate versus production", registry=r
        )
        self.batch_forgetting = Gauge(
            "retain_batch_forgetting_ratio",
            "Audit accuracy the last candidate lost on each recent source batch (0 = init data)",
            ["batch"],
            registry=r,
        )
        self.production_forgetting = Gauge(
            "retain_production_forgetting_ratio",
            "Forgetting measured when the production version was a candidate",
            registry=r,
        )
        self.production_forgetting_limit = Gauge(
            "retain_production_forgetting_limit_ratio",
            "The gate's forgetting limit when the production version was a candidate",
            registry=r,
        )
        self.gate_max_forgetting = Gauge(
            "retain_gate_max_forgetting_ratio", "The forgetting gate's limit (gate.max_forgetting)", registry=r
        )
        self.gate_max_forgetting_new_classes = Gauge(
            "retain_gate_max_forgetting_new_classes_ratio",
            "The forgetting gate's limit for batches with new classes (gate.max_forgetting_new_classes)",
            registry=r,
        )
        self.stall_threshold = Gauge(
            "retain_stall_threshold_seconds",
            "Alert when the queue is non-empty and no batch finished for this long (daemon.stall_alert_seconds)",
            registry=r,
        )
        self.old_accuracy = Gauge(
            "retain_old_accuracy_ratio", "Accuracy on the replay audit set", ["model"], registry=r
        )
        self.new_accuracy = Gauge(
            "retain_new_accuracy_ratio", "Accuracy on the new batch's held-out slice", ["model"], registry=r
        )
        self.training_duration = Histogram(
            "retain_training_duration_seconds",
            "Time to train one candidate",
            buckets=(1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
            registry=r,
        )
        self.batch_latency = Histogram(
            "retain_batch_latency_seconds",
            "Time from a file's arrival to its batch finishing",
            buckets=(1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200),
            registry=r,
        )
        self.queue_depth = Gauge("retain_queue_depth", "Batches pending or in progress", registry=r)
        self.production_version = Gauge("retain_production_version", "Version held by the production alias", registry=r)
        self.replay_samples = Gauge("retain_replay_buffer_samples", "Samples in the production replay memory", registry=r)
        self.last_batch = Gauge(
            "retain_last_batch_timestamp_seconds", "Unix time the last batch finished", registry=r
        )
        self._model_info = _ModelInfoCollector()
        r.register(self._model_info)
        for outcome in BatchOutcomeLabel:
            self.batches.labels(outcome=outcome)
        for strategy in STRATEGIES:  # every label set exists from the first scrape
            for decision in GateDecision:
                self.candidates.labels(strategy=strategy, decision=decision)
        self._forgetting_batches: list[str] = []
        self._server = None

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
        self._model_info.aliases = dict(aliases)
        if "production" in aliases:
            self.production_version.set(aliases["production"])

    def serve(self, host: str, port: int) -> int:
        """Start the scrape endpoint; returns the bound port (useful with port 0)."""
        self._server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return self._server.server_address[1]

    def shutdown(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
