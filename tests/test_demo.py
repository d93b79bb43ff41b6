"""`retain demo` end to end, as a user runs it."""

import json

from conftest import retain


def test_demo_prints_the_versions_table_with_an_accepted_candidate_and_a_measured_shift(tmp_path):
    workdir = tmp_path / "demo"
    result = retain(None, "demo", "--workdir", str(workdir), timeout=300)
    assert "Model versions" in result.stdout and "Batches" in result.stdout
    config = workdir / "retain.toml"
    versions = json.loads(retain(config, "versions", "--json").stdout)
    batches = json.loads(retain(config, "batches", "--json").stdout)
    assert len([b for b in batches if b["state"] == "done"]) >= 4
    assert any(v["status"] == "accepted" and v["batch"] for v in versions)
    rotated = next(b for b in batches if b["path"].endswith("rotated.npz"))
    assert rotated["severity"] in ("moderate", "severe") and rotated["p_value"] < 0.01
    assert any(b["state"] == "rejected" and "truncated" in b["path"] for b in batches)


def test_demo_refuses_a_non_empty_workdir(tmp_path):
    (tmp_path / "something").write_text("x")
    result = retain(None, "demo", "--workdir", str(tmp_path), check=False)
    assert result.returncode != 0 and "not empty" in result.stderr
