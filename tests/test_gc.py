"""``retain gc``: what it deletes, what it must never delete, on a real workspace."""

import json

from conftest import retain, save_batches, save_npz, write_config


def refused_batches(workspace, digit_data, count: int) -> None:
    """``count`` batches whose candidates the gate refuses: versions 2.. off production's stack."""
    x, y = digit_data
    write_config(workspace.parent, policy={"strategy": "finetune", "fallback": False}, gate={"min_gain": 1.0})
    save_batches(workspace.parent / "inbox", x, y, count)
    retain(workspace, "run", "--once")


def artifact_files(workspace) -> set[str]:
    return {p.name for p in (workspace.parent / "artifacts" / "sha256").glob("??/*")}


def test_gc_deletes_what_only_released_versions_reference_and_keeps_production_and_the_last_n(workspace, digit_data):
    refused_batches(workspace, digit_data, 3)
    before = artifact_files(workspace)
    shown = {v: json.loads(retain(workspace, "show", str(v), "--json").stdout) for v in (1, 2, 3, 4)}
    report = json.loads(retain(workspace, "gc", "--keep-last", "1", "--grace", "0", "--json").stdout)
    assert report["models"]["default"] == {"kept": [1, 4], "released": [2, 3]}
    after = artifact_files(workspace)
    assert len(before - after) == report["artifacts"] > 0
    assert {shown[v]["artifact_sha256"] for v in (2, 3)} <= before - after
    assert {shown[v]["artifact_sha256"] for v in (1, 4)} <= after
    # Production still loads and predicts; the kept candidate can still be promoted.
    x, y = digit_data
    probe = save_npz(workspace.parent / "probe.npz", x[:50], y[:50])
    predicted = retain(workspace, "predict", str(probe))
    assert "version 1: 50 predictions" in predicted.stdout + predicted.stderr
    retain(workspace, "promote", "4", "--force")


def test_a_version_whose_artifacts_gc_deleted_cannot_become_production(workspace, digit_data):
    refused_batches(workspace, digit_data, 2)
    retain(workspace, "gc", "--keep-last", "0", "--grace", "0")
    result = retain(workspace, "promote", "2", "--force", check=False)
    assert result.returncode == 1 and "version 2's artifacts are gone" in result.stderr
    assert json.loads(retain(workspace, "status", "--json").stdout)["production_version"] == 1


def test_gc_dry_run_and_the_grace_period_delete_nothing(workspace, digit_data):
    refused_batches(workspace, digit_data, 2)
    before = artifact_files(workspace)
    dry = json.loads(retain(workspace, "gc", "--keep-last", "0", "--grace", "0", "--dry-run", "--json").stdout)
    assert dry["artifacts"] > 0 and artifact_files(workspace) == before
    young = json.loads(retain(workspace, "gc", "--keep-last", "0", "--json").stdout)  # default grace: an hour
    assert young["artifacts"] == 0 and young["spared"] == dry["artifacts"] and artifact_files(workspace) == before


def test_gc_never_deletes_the_rollback_stack(workspace, digit_data):
    x, y = digit_data
    write_config(workspace.parent, policy={"strategy": "finetune", "fallback": False},
                 gate={"max_forgetting": 1.0, "min_gain": -1.0})
    save_batches(workspace.parent / "inbox", x, y, count=2)
    retain(workspace, "run", "--once")  # 1 -> 2 -> 3, each promoted
    retain(workspace, "rollback")  # production 2; a rollback from here goes to 1
    report = json.loads(retain(workspace, "gc", "--keep-last", "0", "--grace", "0", "--json").stdout)
    assert report["models"]["default"]["kept"] == [1, 2]
    retain(workspace, "rollback")
    assert json.loads(retain(workspace, "status", "--json").stdout)["production_version"] == 1
