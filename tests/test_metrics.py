"""Metric bookkeeping that needs no server."""

from prometheus_client import generate_latest

from retain.daemon.metrics import ServiceMetrics


def series(metrics: ServiceMetrics, name: str) -> list[str]:
    text = generate_latest(metrics.registry).decode()
    return [line for line in text.splitlines() if line.startswith(name + "{")]


def test_per_batch_forgetting_keeps_only_the_most_recent_batches():
    metrics = ServiceMetrics(recent_batches=3)
    metrics.set_batch_forgetting({0: 0.1, 1: 0.0, 2: 0.02, 3: -0.01, 4: 0.03})
    assert [line.split('"')[1] for line in series(metrics, "retain_batch_forgetting_ratio")] == ["2", "3", "4"]
    metrics.set_batch_forgetting({0: 0.1, 5: 0.2})
    assert [line.split('"')[1] for line in series(metrics, "retain_batch_forgetting_ratio")] == ["0", "5"]


def test_model_info_has_one_series_per_live_alias():
    metrics = ServiceMetrics()
    metrics.set_aliases({"production": 4})
    metrics.set_aliases({"production": 5})
    assert series(metrics, "retain_model_info") == ['retain_model_info{alias="production",version="5"} 1.0']
    assert "retain_production_version 5.0" in generate_latest(metrics.registry).decode()


def test_two_instances_do_not_share_state():
    first, second = ServiceMetrics(), ServiceMetrics()
    first.queue_depth.set(7)
    assert "retain_queue_depth 0.0" in generate_latest(second.registry).decode()
