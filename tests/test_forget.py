"""``retain forget``: a batch's samples out of the lineage, audit-logged, and gone at the next gc."""

import json
from pathlib import Path

from conftest import retain, save_batches, save_npz, write_config
from retain.daemon.config import load_config, open_artifacts
from retain.daemon.versions import read_memory
from retain.registry import Registry


def two_accepted_batches(workspace, digit_data) -> None:
    x, y = digit_data
    write_config(workspace.parent, policy={"strategy": "finetune", "fallback": False},
                 gate={"max_forgetting": 1.0, "min_gain": -1.0})
    save_batches(workspace.parent / "inbox", x, y, count=2)
    retain(workspace, "run", "--once")  # versions 2 (batch 1) and 3 (batch 2), each production


def memory_sources(workspace, version: int) -> set[int]:
    config = load_config(workspace)
    registry = Registry(config.registry_url)
    try:
        memory = read_memory(registry.version(version).replay_sha256, open_artifacts(config))
    finally:
        registry.close()
    return set(memory.source.tolist())


def test_forget_promotes_a_version_with_the_same_weights_and_none_of_the_batch_samples(workspace, digit_data):
    two_accepted_batches(workspace, digit_data)
    assert 1 in memory_sources(workspace, 3)
    retain(workspace, "forget", "--batch", "1", "--reason", "data subject request")
    erased = json.loads(retain(workspace, "show", "4", "--json").stdout)
    parent = json.loads(retain(workspace, "show", "3", "--json").stdout)
    assert erased["is_production"] and erased["strategy"] == "erasure"
    assert erased["artifact_sha256"] == parent["artifact_sha256"]
    assert erased["details"]["weights"] == "unchanged" and erased["details"]["erased_batch"] == 1
    assert memory_sources(workspace, 4) == memory_sources(workspace, 3) - {1}
    [move] = json.loads(retain(workspace, "history", "--json").stdout)[-1:]
    assert (move["action"], move["to_version"]) == ("erase", 4) and "data subject request" in move["reason"]
    [batch] = [b for b in json.loads(retain(workspace, "batches", "--json").stdout) if b["id"] == 1]
    assert batch["state"] == "erased"


def test_show_marks_every_version_whose_weights_descend_from_the_erased_batch(workspace, digit_data):
    two_accepted_batches(workspace, digit_data)
    retain(workspace, "forget", "--batch", "2", "--reason", "mislabelled")
    marks = {v: json.loads(retain(workspace, "show", str(v), "--json").stdout)["trained_on_erased_batches"]
             for v in (1, 2, 3, 4)}
    assert marks == {1: [], 2: [], 3: [2], 4: [2]}
    assert "since erased (mislabelled)" in retain(workspace, "show", "4").stdout


def test_gc_after_forget_deletes_the_batch_file_and_its_chunks_even_under_kept_versions(workspace, digit_data):
    two_accepted_batches(workspace, digit_data)
    [batch] = [b for b in json.loads(retain(workspace, "batches", "--json").stdout) if b["id"] == 1]
    retain(workspace, "forget", "--batch", "1", "--reason", "consent withdrawn")
    report = json.loads(retain(workspace, "gc", "--keep-last", "10", "--grace", "0", "--json").stdout)
    assert report["erased_files"] == [batch["path"]] and not Path(batch["path"]).exists()
    assert 1 not in memory_sources(workspace, 4)
    result = retain(workspace, "rollback", check=False)  # version 3's memory held batch 1's samples
    assert result.returncode == 1 and "version 3's artifacts are gone" in result.stderr
    # A kept version whose memory manifest is gone too (as an erasure leaves a memory stored whole,
    # before chunks) does not stop the next gc.
    manifest = json.loads(retain(workspace, "show", "3", "--json").stdout)["replay_sha256"]
    (workspace.parent / "artifacts" / "sha256" / manifest[:2] / manifest).unlink()
    again = json.loads(retain(workspace, "gc", "--keep-last", "10", "--grace", "0", "--json").stdout)
    assert again["erased_files"] == [] and again["artifacts"] == 0
    x, y = digit_data
    predicted = retain(workspace, "predict", str(save_npz(workspace.parent / "probe.npz", x[:40], y[:40])))
    assert "version 4: 40 predictions" in predicted.stdout + predicted.stderr


def test_forget_refuses_without_a_reason_and_names_an_unknown_batch(workspace, digit_data):
    two_accepted_batches(workspace, digit_data)
    blank = retain(workspace, "forget", "--batch", "1", "--reason", " ", check=False)
    assert blank.returncode == 1 and "say why" in blank.stderr
    unknown = retain(workspace, "forget", "--batch", "99", "--reason", "x", check=False)
    assert unknown.returncode == 1 and "has no batch 99" in unknown.stderr
    retain(workspace, "forget", "--batch", "1", "--reason", "x")
    again = retain(workspace, "forget", "--batch", "1", "--reason", "x", check=False)
    assert again.returncode == 1 and "batch 1 is erased" in again.stderr


def test_gc_after_forget_reads_each_stored_memory_once(workspace, digit_data):
    from retain.daemon.collect import BatchFolders, plan_collection
    from retain.registry import ArtifactStore

    class CountedReads(ArtifactStore):
        """The workspace's real store, counting reads of each artifact."""

        def __init__(self, root):
            super().__init__(root)
            self.reads: dict[str, int] = {}

        def get_tensors(self, digest):
            self.reads[digest] = self.reads.get(digest, 0) + 1
            return super().get_tensors(digest)

    two_accepted_batches(workspace, digit_data)
    retain(workspace, "forget", "--batch", "1", "--reason", "consent withdrawn")
    config = load_config(workspace)
    artifacts = CountedReads(open_artifacts(config).root)
    registry = Registry(config.registry_url)
    try:
        plan = plan_collection(registry, artifacts, ["default"], keep_last=10, grace_seconds=0,
                               folders=BatchFolders.of(config))
        manifests = {v.replay_sha256 for v in registry.versions()}
    finally:
        registry.close()
    assert plan.garbage  # the erased batch's chunks
    assert set(artifacts.reads) == manifests and set(artifacts.reads.values()) == {1}


def test_gc_deletes_an_erased_batch_file_that_its_registry_row_misplaces(workspace, digit_data):
    # A crash between the move and the registry's update (before 0.3 recorded the destination
    # first) left the row naming the inbox while the file lies in processed/ under its number.
    two_accepted_batches(workspace, digit_data)
    [batch] = [b for b in json.loads(retain(workspace, "batches", "--json").stdout) if b["id"] == 1]
    moved = Path(batch["path"])
    config = load_config(workspace)
    registry = Registry(config.registry_url)
    try:
        registry.move_batch(1, str(config.inbox / moved.name.removeprefix("000001-")))
    finally:
        registry.close()
    retain(workspace, "forget", "--batch", "1", "--reason", "consent withdrawn")
    report = json.loads(retain(workspace, "gc", "--grace", "0", "--json").stdout)
    assert report["erased_files"] == [str(moved)] and not moved.exists()
    [after] = [b for b in json.loads(retain(workspace, "batches", "--json").stdout) if b["id"] == 1]
    assert after["path"] == ""  # its file is gone: the next gc has nothing to look for
    again = json.loads(retain(workspace, "gc", "--grace", "0", "--json").stdout)
    assert again["erased_files"] == [] and again["erased_files_not_found"] == []


def test_gc_says_when_an_erased_batch_file_is_nowhere_to_be_found(workspace, digit_data):
    two_accepted_batches(workspace, digit_data)
    [batch] = [b for b in json.loads(retain(workspace, "batches", "--json").stdout) if b["id"] == 1]
    retain(workspace, "forget", "--batch", "1", "--reason", "consent withdrawn")
    Path(batch["path"]).rename(workspace.parent / "elsewhere.npz")
    result = retain(workspace, "gc", "--grace", "0", "--json")
    assert json.loads(result.stdout)["erased_files_not_found"] == [{"batch": 1, "recorded_path": batch["path"]}]
    assert "erased batch 1's file is not at" in result.stderr
