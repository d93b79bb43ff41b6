"""Approval with auto-promotion off, and aliases besides production."""

import json

import pytest

from conftest import retain, save_npz, write_config
from retain.registry import NewVersion, RegistryError


def listing(config, *args):
    return json.loads(retain(config, *args, "--json").stdout)


@pytest.fixture
def awaiting(workspace, digit_data):
    """A workspace whose batch produced an accepted candidate that waits for approval."""
    x, y = digit_data
    write_config(workspace.parent, registry={"auto_promote": False}, gate={"max_forgetting": 1.0, "min_gain": -1.0})
    save_npz(workspace.parent / "inbox" / "b.npz", x[500:700], y[500:700])
    retain(workspace, "run", "--once")
    return workspace


def test_an_accepted_candidate_waits_for_approval_and_approving_makes_it_production(awaiting):
    candidate = listing(awaiting, "versions")[-1]
    assert (candidate["status"], candidate["review"], candidate["is_production"]) == ("accepted", "pending", False)
    assert "awaiting approval" in retain(awaiting, "versions").stdout
    assert "production: 1 -> 2 (approved)" in retain(awaiting, "approve", "default@2", "--reason", "looks good").stdout
    assert listing(awaiting, "versions")[-1]["review"] == "approved"
    assert listing(awaiting, "history")[-1]["action"] == "approve"
    assert retain(awaiting, "rollback").stdout.strip().endswith("production: 2 -> 1")  # a stack frame like any move


def test_a_rejected_candidate_is_closed_with_who_and_why(awaiting):
    out = retain(awaiting, "reject", "2", "--reason", "drifted site").stdout
    assert "default@2 rejected: rejected by cli:" in out and "drifted site" in out
    shown = json.loads(retain(awaiting, "show", "2", "--json").stdout)
    assert shown["review"] == "declined" and shown["is_production"] is False
    again = retain(awaiting, "approve", "2", check=False)
    assert again.returncode == 1 and "is not awaiting approval: it was declined" in again.stderr


def test_a_candidate_from_a_superseded_parent_cannot_be_approved(registry_with_two_pending):
    registry, first, second = registry_with_two_pending
    registry.approve(first, "cli:ops")
    with pytest.raises(RegistryError, match="trained from version 1, but production is now 2"):
        registry.approve(second, "cli:ops")


@pytest.fixture
def registry_with_two_pending(tmp_path):
    from retain.registry import Registry

    registry = Registry(f"sqlite:///{tmp_path}/r.db")

    def version(parent, review=None):
        return NewVersion(status="accepted", strategy="finetune", model_spec={"factory": "m:f"},
                          artifact_sha256="a" * 64, replay_sha256="b" * 64, parent=parent, review=review)

    registry.register_version(version(None), promote=True)
    first = registry.register_version(version(1, "pending"))[0].version
    second = registry.register_version(version(1, "pending"))[0].version
    assert [v.version for v in registry.awaiting_approval()] == [first, second]
    yield registry, first, second
    registry.close()


def test_aliases_besides_production_are_set_moved_and_removed_in_the_audit_log(awaiting):
    assert "default@challenger: - -> 2" in retain(awaiting, "alias", "set", "default@challenger", "2").stdout
    assert "default@challenger: 2 -> 1" in retain(awaiting, "alias", "set", "challenger", "1").stdout
    assert json.loads(retain(awaiting, "show", "challenger", "--json").stdout)["version"] == 1
    assert "held version 1" in retain(awaiting, "alias", "rm", "default@challenger", "--reason", "done").stdout
    actions = [(e["alias"], e["action"]) for e in listing(awaiting, "history")]
    assert actions[-3:] == [("challenger", "set"), ("challenger", "set"), ("challenger", "remove")]
    assert listing(awaiting, "history")[-1]["reason"] == "done"


@pytest.mark.parametrize(("args", "message"), [
    (("alias", "set", "production", "2"), "production moves with promote, approve and rollback"),
    (("alias", "rm", "challenger"), "has no alias 'challenger'"),
    (("alias", "set", "challenger", "9"), "version 9 of model 'default' does not exist"),
    (("alias", "set", "7", "2"), "name an alias"),
])
def test_alias_mistakes_are_one_line_errors(awaiting, args, message):
    result = retain(awaiting, *args, check=False)
    assert result.returncode == 1 and message in result.stderr, result.stderr
