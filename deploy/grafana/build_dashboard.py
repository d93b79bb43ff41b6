"""Writes deploy/grafana/dashboards/retain.json, the dashboard Grafana provisions.

Plain dictionaries rather than grafana-foundation-sdk: the SDK is a public preview pinned to
one Grafana version, and this dashboard needs nothing it adds. Run after editing panels:

    .venv/bin/python deploy/grafana/build_dashboard.py
"""

from __future__ import annotations

import json
from pathlib import Path

DATASOURCE = {"type": "prometheus", "uid": "retain-prometheus"}
SEL = 'job=~"$job", instance=~"$instance", model=~"$model"'
# Every worker of a job exports the figures it reads from the registry (production version,
# queue depth, the last batch finished) for each model it serves: taken once per model.
PER_MODEL = "max by (model)"
OUTPUT = Path(__file__).parent / "dashboards" / "retain.json"


def target(expr: str, legend: str = "", ref: str = "A", instant: bool = False) -> dict:
    return {
        "datasource": DATASOURCE,
        "expr": expr,
        "legendFormat": legend or "__auto",
        "refId": ref,
        "range": not instant,
        "instant": instant,
    }


def panel(kind: str, title: str, targets: list[dict], x: int, y: int, w: int = 12, h: int = 8,
          unit: str = "short", description: str = "", **options) -> dict:
    for index, item in enumerate(targets):
        item["refId"] = chr(ord("A") + index)
    defaults: dict = {"unit": unit}
    if unit == "percentunit":
        defaults |= {"min": 0, "max": 1}
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": options,
    }


def panels() -> list[dict]:
    rows = [
        panel("stat", "Production version", [target(f"{PER_MODEL} (retain_production_version{{{SEL}}})", "{{model}}")],
              0, 0, w=4, h=4, description="Version held by each model's production alias"),
        panel("stat", "Daemon up", [target('up{job=~"$job", instance=~"$instance"}', "{{instance}}")], 4, 0, w=4,
              h=4, description="1 while Prometheus can scrape the daemon"),
        panel("stat", "Queue depth", [target(f"{PER_MODEL} (retain_queue_depth{{{SEL}}})", "{{model}}")],
              8, 0, w=4, h=4),
        panel("stat", "Replay memory", [target(f"{PER_MODEL} (retain_replay_buffer_samples{{{SEL}}})", "{{model}}")],
              12, 0, w=4, h=4, description="Samples in each production version's replay memory"),
        panel("stat", "Since last batch",
              [target(f"time() - {PER_MODEL} (retain_last_batch_timestamp_seconds{{{SEL}}})", "{{model}}")],
              16, 0, w=4, h=4, unit="s"),
        panel("stat", "Gate limits",
              [target(f"{PER_MODEL} (retain_gate_max_forgetting_ratio{{{SEL}}})", "{{model}} max forgetting"),
               target(f"{PER_MODEL} (retain_gate_max_forgetting_new_classes_ratio{{{SEL}}})", "{{model}} new classes")],
              20, 0, w=4, h=4, unit="percentunit",
              description="Forgetting the gate allows: everyday, and for a batch with new classes"),
        panel("timeseries", "Forgetting over time, per production version", [
            target(f'{PER_MODEL} (retain_production_forgetting_ratio{{{SEL}}}) * on (model) group_left (version) '
                   f'max by (model, version) (retain_model_info{{{SEL}, alias="production"}})',
                   "{{model}} production v{{version}}"),
            target(f"retain_forgetting_ratio{{{SEL}}}", "{{model}} last candidate ({{instance}})"),
            target(f"{PER_MODEL} (retain_production_forgetting_limit_ratio{{{SEL}}})", "{{model}} production's limit"),
        ], 0, 4, unit="percentunit",
            description="Audit accuracy lost against the parent: production's, the last candidate's, and the "
                        "limit production was gated with"),
        panel("timeseries", "Forgetting per source batch (last candidate)", [
            target(f"retain_batch_forgetting_ratio{{{SEL}}}", "{{model}} batch {{batch}}"),
        ], 12, 4, unit="percentunit", description="Batch 0 is the data version 1 was trained on"),
        panel("timeseries", "Accuracy: candidate vs production", [
            target(f"retain_old_accuracy_ratio{{{SEL}}}", "{{model}} old data, {{role}}"),
            target(f"retain_new_accuracy_ratio{{{SEL}}}", "{{model}} new batch, {{role}}"),
        ], 0, 12, unit="percentunit",
            description="Old = replay audit set; new = held-out slice of the latest batch"),
        panel("timeseries", "Shift of the latest batch", [
            target(f"retain_shift_score{{{SEL}}}", "{{model}} MMD²"),
            target(f"retain_shift_pvalue{{{SEL}}}", "{{model}} p-value"),
        ], 12, 12, description="Kernel MMD² in the production model's feature space and its permutation p-value"),
        panel("timeseries", "Strategy choices and gate decisions", [
            target(f"sum by (model, strategy, decision) (increase(retain_candidates_total{{{SEL}}}[$__rate_interval]))",
                   "{{model}} {{strategy}} {{decision}}"),
        ], 0, 20, description="Candidates trained per interval", drawStyle="bars"),
        panel("bargauge", "Candidates so far", [
            target(f"sum by (model, strategy, decision) (retain_candidates_total{{{SEL}}})",
                   "{{model}} {{strategy}} {{decision}}", instant=True),
        ], 12, 20, displayMode="basic", orientation="horizontal"),
        panel("timeseries", "Batches by outcome", [
            target(f"sum by (model, outcome) (increase(retain_batches_total{{{SEL}}}[$__rate_interval]))",
                   "{{model}} {{outcome}}"),
        ], 0, 28),
        panel("timeseries", "Queue depth and batch latency", [
            target(f"{PER_MODEL} (retain_queue_depth{{{SEL}}})", "{{model}} queued"),
            target("histogram_quantile(0.9, sum by (model, le) "
                   f"(rate(retain_batch_latency_seconds_bucket{{{SEL}}}[$__rate_interval])))",
                   "{{model}} p90 arrival to done (s)"),
            target("histogram_quantile(0.9, sum by (model, le) "
                   f"(rate(retain_training_duration_seconds_bucket{{{SEL}}}[$__rate_interval])))",
                   "{{model}} p90 training (s)"),
        ], 12, 28),
        panel("timeseries", "Production version", [
            target(f"{PER_MODEL} (retain_production_version{{{SEL}}})", "{{model}}"),
        ], 0, 36, w=24, description="Annotated with every promotion and rollback", drawStyle="line",
            lineInterpolation="stepAfter"),
        panel("stat", "Awaiting approval",
              [target(f"{PER_MODEL} (retain_awaiting_approval{{{SEL}}})", "{{model}}")], 0, 44, w=8, h=4,
              description="Accepted candidates waiting for `retain approve` or `retain reject` "
                          "(registry.auto_promote = false)"),
        panel("stat", "System outages", [
            target('max by (instance, kind) (retain_outage{job=~"$job", instance=~"$instance"})',
                   "{{instance}} {{kind}}"),
        ], 0, 48, w=8, h=4, description="1 while a daemon waits out a full disk or an unreachable registry "
                                        "(it stays up, and carries on when the outage ends)"),
        panel("timeseries", "Unlabelled files: drift without training", [
            target(f"retain_check_shift_score{{{SEL}}}", "{{model}} MMD² ({{instance}})"),
            target(f"retain_check_prediction_distance_ratio{{{SEL}}}", "{{model}} prediction distance ({{instance}})"),
            target(f"retain_check_pvalue{{{SEL}}}", "{{model}} p-value ({{instance}})"),
        ], 8, 44, w=16, h=8, description="Files dropped into inbox/NAME/unlabelled/, checked against production"),
        panel("bargauge", "Training compute per strategy", [
            target(f"sum by (model, strategy) (retain_training_duration_seconds_sum{{{SEL}}})",
                   "{{model}} {{strategy}} seconds", instant=True),
            target(f"sum by (model, strategy) (retain_training_steps_total{{{SEL}}})",
                   "{{model}} {{strategy}} optimizer steps", instant=True),
        ], 0, 52, w=24, displayMode="basic", orientation="horizontal",
            description="Training seconds and optimizer steps spent on candidates since the daemons started"),
        panel("timeseries", "Gate: forgetting bounds and audit size (last candidate)", [
            target(f"retain_gate_forgetting_lower_bound_ratio{{{SEL}}}", "{{model}} lower bound ({{instance}})"),
            target(f"retain_gate_forgetting_upper_bound_ratio{{{SEL}}}", "{{model}} upper bound ({{instance}})"),
            target(f"{PER_MODEL} (retain_gate_max_forgetting_ratio{{{SEL}}})", "{{model}} limit"),
        ], 0, 60, unit="percentunit",
            description="The gate's one-sided bounds on forgetting at gate.confidence: within when the upper bound "
                        "is below the limit + tolerance, above when the lower bound is over the limit"),
        panel("timeseries", "Gate findings and audit samples", [
            target(f"sum by (model, finding) (increase(retain_gate_findings_total{{{SEL}}}[$__rate_interval]))",
                   "{{model}} {{finding}}"),
            target(f"retain_gate_audit_samples{{{SEL}}}", "{{model}} audit samples ({{instance}})"),
            target(f"retain_gate_audit_samples_needed{{{SEL}}}", "{{model}} samples the limit takes ({{instance}})"),
        ], 12, 60, description="Unresolved findings mean an audit set too small for the limit"),
        panel("bargauge", "Where batches spend their time", [
            target(f"sum by (model, phase) (retain_batch_phase_seconds_total{{{SEL}}})",
                   "{{model}} {{phase}}", instant=True),
        ], 0, 68, w=24, displayMode="basic", orientation="horizontal",
            description="Seconds per phase over every batch since the daemons started "
                        "(load, shift, probe, training, gate, artifacts, registry)"),
    ]
    for number, item in enumerate(rows, start=1):
        item["id"] = number
    return rows


def dashboard() -> dict:
    return {
        "uid": "retain-overview",
        "title": "retain",
        "description": "Continual learning: shift, forgetting, gate decisions and the production version",
        "tags": ["retain"],
        "timezone": "utc",
        "schemaVersion": 42,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "time": {"from": "now-24h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "job", "label": "job", "type": "query", "datasource": DATASOURCE,
                    "query": {"query": "label_values(retain_production_version, job)", "refId": "job"},
                    "definition": "label_values(retain_production_version, job)",
                    "current": {"text": "retain", "value": "retain"}, "refresh": 2, "includeAll": False,
                },
                {
                    "name": "instance", "label": "instance", "type": "query", "datasource": DATASOURCE,
                    "query": {"query": 'label_values(retain_production_version{job=~"$job"}, instance)',
                              "refId": "instance"},
                    "definition": 'label_values(retain_production_version{job=~"$job"}, instance)',
                    "current": {"text": "All", "value": "$__all"}, "refresh": 2, "includeAll": True,
                    "allValue": ".*", "multi": True,
                },
                {
                    "name": "model", "label": "model", "type": "query", "datasource": DATASOURCE,
                    "query": {"query": 'label_values(retain_production_version{job=~"$job", instance=~"$instance"}, '
                                       'model)', "refId": "model"},
                    "definition": 'label_values(retain_production_version{job=~"$job", instance=~"$instance"}, model)',
                    "current": {"text": "All", "value": "$__all"}, "refresh": 2, "includeAll": True,
                    "allValue": ".*", "multi": True,
                },
            ]
        },
        "annotations": {
            "list": [
                {
                    "name": "Promotions and rollbacks",
                    "datasource": DATASOURCE,
                    "enable": True,
                    "iconColor": "orange",
                    "expr": f"changes({PER_MODEL} (retain_production_version{{{SEL}}})[2m:]) > 0",
                    "titleFormat": "production moved",
                    "textFormat": "{{model}}: production is now version {{value}}",
                    "step": "30s",
                }
            ]
        },
        "panels": panels(),
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    OUTPUT.write_text(render())
    print(f"wrote {OUTPUT}")
