"""Monitoring against the real tools: promtool, and a real Prometheus scraping a real daemon
that processes batches; every dashboard query must parse and return data."""

import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO, free_port, require_tool, retain, wait_for, write_config
from daemon_process import DaemonProcess, drop_atomically, npz_bytes, wait_for_batches

DEPLOY = REPO / "deploy"


def run(*command: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"{command}: {result.stdout}\n{result.stderr}"
    return result


def test_promtool_accepts_the_scrape_config_and_rules():
    promtool = require_tool("promtool")
    run(promtool, "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml"))
    out = run(promtool, "check", "rules", str(DEPLOY / "prometheus" / "alerts.yml")).stdout
    assert "SUCCESS: 5 rules found" in out


def test_alert_rules_pass_their_promtool_unit_tests():
    promtool = require_tool("promtool")
    run(promtool, "test", "rules", str(DEPLOY / "prometheus" / "alerts_test.yml"))


def test_committed_dashboard_is_what_the_generator_writes():
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_dashboard", DEPLOY / "grafana" / "build_dashboard.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (DEPLOY / "grafana" / "dashboards" / "retain.json").read_text() == module.render()


def dashboard_queries() -> list[tuple[str, str]]:
    board = json.loads((DEPLOY / "grafana" / "dashboards" / "retain.json").read_text())
    queries = [(p["title"], t["expr"]) for p in board["panels"] for t in p["targets"]]
    queries += [(a["name"], a["expr"]) for a in board["annotations"]["list"]]
    return queries


def substitute(expr: str) -> str:
    """What Grafana does to the template variables before sending a query."""
    return (expr.replace("$__rate_interval", "1m").replace('"$job"', '"retain"').replace('"$instance"', '".*"')
            .replace('"$model"', '".*"'))


class Prometheus:
    def __init__(self, workdir: Path, target_port: int) -> None:
        self.port = free_port()
        self.dir = workdir
        config = workdir / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            f"rule_files:\n  - {DEPLOY / 'prometheus' / 'alerts.yml'}\n"
            "scrape_configs:\n  - job_name: retain\n    static_configs:\n"
            f"      - targets: ['127.0.0.1:{target_port}']\n"
        )
        self.log = (workdir / "prometheus.log").open("wb")
        self.process = subprocess.Popen(
            [require_tool("prometheus"), f"--config.file={config}", f"--storage.tsdb.path={workdir / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT,
        )

    def api(self, path: str, **params: str) -> dict:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.loads(response.read())

    def query(self, expr: str) -> list:
        payload = self.api("query", query=expr)
        assert payload["status"] == "success", payload
        return payload["data"]["result"]

    def query_range(self, expr: str, seconds: int) -> list:
        now = time.time()
        payload = self.api("query_range", query=expr, start=str(now - seconds), end=str(now), step="1")
        assert payload["status"] == "success", payload
        return payload["data"]["result"]

    def ready(self) -> bool:
        try:
            return bool(self.query("up"))
        except OSError:
            return False

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        self.log.close()


@pytest.fixture(scope="module")
def monitored_workspace(tmp_path_factory, initialised_template) -> Path:
    target = tmp_path_factory.mktemp("monitored") / "ws"
    shutil.copytree(initialised_template, target)
    return target / "retain.toml"


@pytest.fixture(scope="module")
def monitored(monitored_workspace, digit_data, tmp_path_factory):
    """A daemon with metrics on, a Prometheus scraping it, and batches processed meanwhile."""
    x, y = digit_data
    workspace = monitored_workspace
    tmp_path = tmp_path_factory.mktemp("prometheus")
    require_tool("prometheus")
    metrics_port = free_port()
    # Every candidate accepted, so the production version moves at each batch.
    write_config(workspace.parent, metrics={"enabled": True, "port": metrics_port},
                 gate={"max_forgetting": 1.0, "min_gain": -1.0})
    daemon = DaemonProcess(workspace).start()
    prometheus = Prometheus(tmp_path, metrics_port)

    def scraped_production(version: int):
        return lambda: [s for s in prometheus.query("retain_production_version") if s["value"][1] == str(version)]

    try:
        wait_for(prometheus.ready, timeout=60, message="Prometheus to scrape the daemon")
        inbox = workspace.parent / "inbox"
        drop_atomically(npz_bytes(x[500:650], y[500:650]), inbox, "one.npz")
        wait_for_batches(workspace, 1)
        wait_for(scraped_production(2), timeout=30, message="a scrape of version 2")
        drop_atomically(npz_bytes(1.0 - x[650:800], y[650:800]), inbox / "unlabelled", "camera.npz")  # checked only
        drop_atomically(npz_bytes(x[650:800], y[650:800]), inbox, "two.npz")
        drop_atomically(b"not an archive", inbox, "bad.npz")
        wait_for_batches(workspace, 3)
        wait_for(scraped_production(3), timeout=30, message="a scrape of version 3")
        retain(workspace, "rollback", "--reason", "test annotation")  # a CLI move while it runs
        wait_for(scraped_production(2), timeout=30, message="the CLI rollback in the metrics")
        drop_atomically(npz_bytes(x[800:950], y[800:950]), inbox, "three.npz")
        wait_for_batches(workspace, 4)
        wait_for(scraped_production(4), timeout=30, message="a scrape of version 4")
        time.sleep(3)  # a few more scrapes after the last change
        yield daemon, prometheus, metrics_port
    finally:
        prometheus.stop()
        daemon.stop()


def test_every_dashboard_query_returns_data_from_a_real_prometheus(monitored):
    _, prometheus, _ = monitored
    queries = dashboard_queries()
    assert len(queries) >= 15
    empty = []
    for title, expr in queries:
        result = prometheus.query_range(substitute(expr), seconds=120)
        if not result:
            empty.append((title, expr))
    assert not empty, f"queries without data: {empty}"


def test_every_dashboard_variable_finds_its_label_in_a_real_prometheus(monitored):
    _, prometheus, _ = monitored
    board = json.loads((DEPLOY / "grafana" / "dashboards" / "retain.json").read_text())
    variables = board["templating"]["list"]
    assert {v["name"] for v in variables} == {"job", "instance", "model"}
    for variable in variables:
        selector, label = re.fullmatch(r"label_values\((.*), (\w+)\)", variable["definition"]).groups()
        found = {series["metric"].get(label) for series in prometheus.query(substitute(selector))}
        assert found and None not in found, (variable["name"], found)


def test_scraped_metrics_pass_promtool_and_track_the_pipeline(monitored, monitored_workspace):
    workspace = monitored_workspace
    daemon, prometheus, port = monitored
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    run(require_tool("promtool"), "check", "metrics", stdin=text)

    def value(expr: str) -> float:
        [sample] = prometheus.query(expr)
        return float(sample["value"][1])

    versions = json.loads(retain(workspace, "versions", "--json").stdout)
    production = next(v for v in versions if v["is_production"])
    assert value("retain_production_version") == production["version"]
    assert value('retain_model_info{alias="production"}') == 1
    info = prometheus.query('retain_model_info{alias="production"}')
    assert info[0]["metric"]["version"] == str(production["version"])
    assert value('retain_batches_total{outcome="invalid"}') == 1
    assert value("sum(retain_candidates_total)") == 3
    assert value("retain_queue_depth") == 0
    assert value("retain_forgetting_ratio") == pytest.approx(versions[-1]["forgetting"], abs=1e-9)
    assert value('retain_new_accuracy_ratio{role="candidate"}') == pytest.approx(versions[-1]["acc_new_candidate"])
    assert value("sum(retain_training_duration_seconds_count)") == 3
    production_details = json.loads(retain(workspace, "show", str(production["version"]), "--json").stdout)["details"]
    assert value("retain_production_forgetting_limit_ratio") == pytest.approx(production_details["forgetting_limit"])
    last = json.loads(retain(workspace, "show", str(versions[-1]["version"]), "--json").stdout)
    per_batch = {str(item["batch"]): item["forgetting"] for item in last["details"]["per_batch"]}
    exported = {s["metric"]["batch"]: float(s["value"][1]) for s in prometheus.query("retain_batch_forgetting_ratio")}
    assert exported == pytest.approx(per_batch)
    assert value("process_resident_memory_bytes") > 0
    assert "python_info" in text
    # 1 -> 2 -> 3, rolled back to 2 from the CLI, then 4: every move was scraped in order.
    history = [v for _, v in prometheus.query_range("retain_production_version", seconds=300)[0]["values"]]
    moves = [v for i, v in enumerate(history) if i == 0 or v != history[i - 1]]
    assert moves == ["1", "2", "3", "2", "4"]


def test_alert_rules_load_into_prometheus_without_errors(monitored):
    _, prometheus, _ = monitored
    groups = prometheus.api("rules")["data"]["groups"]
    rules = {r["name"]: r for g in groups for r in g["rules"]}
    assert set(rules) == {"RetainDaemonDown", "RetainProductionForgettingAboveGate", "RetainQueueStalled",
                          "RetainCandidatesRepeatedlyRejected", "RetainSystemOutage"}
    assert all(r["health"] == "ok" for r in rules.values()), rules
