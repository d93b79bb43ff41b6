"""Metric bookkeeping that needs no server."""

from prometheus_client import generate_latest

from retain.daemon.metrics import ServiceMetrics


def series(metrics: ServiceMetrics, name: str) -> list[str]:
    text = generate_latest(metrics.registry).decode()
    return [line for line in text.splitlines() if line.startswith(name + "{")]


def test_per_batch_forgetting_keeps_only_the_most_recent_batches():
    metrics = ServiceMetrics(recent_batches=3)
    cameras = metrics.for_model("cameras")
    cameras.set_batch_forgetting({0: 0.1, 1: 0.0, 2: 0.02, 3: -0.01, 4: 0.03})
    assert [line.split('"')[1] for line in series(metrics, "retain_batch_forgetting_ratio")] == ["2", "3", "4"]
    cameras.set_batch_forgetting({0: 0.1, 5: 0.2})
    assert [line.split('"')[1] for line in series(metrics, "retain_batch_forgetting_ratio")] == ["0", "5"]


def test_one_models_recent_batches_leave_anothers_series_alone():
    metrics = ServiceMetrics(recent_batches=1)
    metrics.for_model("cameras").set_batch_forgetting({3: 0.1})
    tills = metrics.for_model("tills")
    tills.set_batch_forgetting({4: 0.2})
    tills.set_batch_forgetting({5: 0.3})
    assert series(metrics, "retain_batch_forgetting_ratio") == [
        'retain_batch_forgetting_ratio{batch="3",model="cameras"} 0.1',
        'retain_batch_forgetting_ratio{batch="5",model="tills"} 0.3',
    ]


def test_model_info_has_one_series_per_live_alias_of_each_model():
    metrics = ServiceMetrics()
    cameras, tills = metrics.for_model("cameras"), metrics.for_model("tills")
    cameras.set_aliases({"production": 4})
    cameras.set_aliases({"production": 5})
    tills.set_aliases({"production": 2, "staging": 3})
    assert series(metrics, "retain_model_info") == [
        'retain_model_info{alias="production",model="cameras",version="5"} 1.0',
        'retain_model_info{alias="production",model="tills",version="2"} 1.0',
        'retain_model_info{alias="staging",model="tills",version="3"} 1.0',
    ]
    assert 'retain_production_version{model="cameras"} 5.0' in generate_latest(metrics.registry).decode()


def test_a_models_label_sets_exist_from_its_first_scrape():
    metrics = ServiceMetrics()
    metrics.for_model("cameras")
    assert 'retain_batches_total{model="cameras",outcome="failed"} 0.0' in series(metrics, "retain_batches_total")


def test_two_instances_do_not_share_state():
    first, second = ServiceMetrics(), ServiceMetrics()
    first.for_model("default").queue_depth.set(7)
    second.for_model("default")
    assert 'retain_queue_depth{model="default"} 0.0' in generate_latest(second.registry).decode()
