"""CLI behaviour: outputs and one-line errors, through the `retain` app in this process; the
console script itself (`python -m retain`) where the process is what is tested."""

import json
import re
import sqlite3

import numpy as np
import pytest
import torch

from conftest import retain, save_npz, write_config


def one_error_line(result, text: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and text in lines[0], result.stderr


VERSION_FIELDS = {
    "version", "parent", "batch", "status", "strategy", "severity", "p_value", "acc_old_candidate",
    "acc_old_production", "acc_new_candidate", "acc_new_production", "forgetting", "rationale",
    "artifact_sha256", "created_at", "is_production",
}


def test_versions_json_has_the_contract_fields(workspace):
    [row] = json.loads(retain(workspace, "versions", "--json").stdout)
    assert VERSION_FIELDS <= set(row)
    assert row["version"] == 1 and row["is_production"] and row["status"] == "accepted"


def test_unknown_version_is_one_line_error(workspace):
    one_error_line(retain(workspace, "show", "42", check=False), "version 42 of model 'default' does not exist")
    one_error_line(retain(workspace, "promote", "42", check=False), "version 42 of model 'default' does not exist")


def test_the_console_script_turns_an_error_into_one_line_and_exit_status_1(workspace):
    result = retain(workspace, "show", "42", check=False, process=True)
    assert result.returncode == 1
    one_error_line(result, "version 42 of model 'default' does not exist")


def test_promoting_a_rejected_version_needs_force(workspace, digit_data):
    x, y = digit_data
    write_config(workspace.parent, gate={"min_gain": 1.0})  # no candidate can pass
    save_npz(workspace.parent / "inbox" / "b.npz", x[500:700], y[500:700])
    retain(workspace, "run", "--once")
    assert json.loads(retain(workspace, "show", "2", "--json").stdout)["status"] == "rejected"
    one_error_line(retain(workspace, "promote", "2", check=False), "use --force")
    retain(workspace, "promote", "2", "--force", "--reason", "manual override")
    last = json.loads(retain(workspace, "history", "--json").stdout)[-1]
    assert (last["from_version"], last["to_version"], last["reason"]) == (1, 2, "manual override")


def test_no_alias_moves_onto_a_version_whose_weights_are_corrupt(workspace, digit_data):
    x, y = digit_data
    write_config(workspace.parent, gate={"min_gain": 1.0})  # version 2 is rejected: production stays 1
    save_npz(workspace.parent / "inbox" / "b.npz", x[500:700], y[500:700])
    retain(workspace, "run", "--once")
    digest = json.loads(retain(workspace, "show", "2", "--json").stdout)["artifact_sha256"]
    weights = workspace.parent / "artifacts" / "sha256" / digest[:2] / digest
    damaged = bytearray(weights.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF  # one byte flipped
    weights.write_bytes(bytes(damaged))
    for command in (["promote", "2", "--force"], ["alias", "set", "challenger", "2"]):
        one_error_line(retain(workspace, *command, check=False), f"{digest[:12]} (corrupt); nothing was moved")
    assert json.loads(retain(workspace, "status", "--json").stdout)["production_version"] == 1
    assert [e["to_version"] for e in json.loads(retain(workspace, "history", "--json").stdout)] == [1]


def test_show_prints_forgetting_with_its_bounds_audit_size_limit_and_finding(workspace, digit_data):
    x, y = digit_data
    save_npz(workspace.parent / "inbox" / "b.npz", x[500:700], y[500:700])
    retain(workspace, "run", "--once")
    shown = retain(workspace, "show", "2").stdout
    bounds = r"80% bounds \[[+-]\d\.\d{4}, [+-]\d\.\d{4}\]"
    assert re.search(rf"forgetting: [+-]\d\.\d{{4}}, {bounds} over \d+ audit samples, limit 0\.0200: "
                     r"(within|above|unresolved)", shown), shown
    assert re.search(rf"gate: forgetting [+-]\d\.\d{{4}} on \d+ audit samples, {bounds}: ", shown), shown
    listed = json.loads(retain(workspace, "versions", "--json").stdout)[-1]
    assert listed["gate_finding"] in ("within", "above", "unresolved")
    assert listed["forgetting_lower"] <= listed["forgetting"] <= listed["forgetting_upper"]
    assert listed["audit_samples"] > 0


def test_show_prints_the_rationale_verbatim_with_the_rule_in_brackets(workspace, digit_data):
    x, y = digit_data
    save_npz(workspace.parent / "inbox" / "b.npz", x[500:700], y[500:700])
    retain(workspace, "run", "--once")
    rationale = json.loads(retain(workspace, "show", "2", "--json").stdout)["rationale"]
    assert re.search(r"\[[a-z-]+\]", rationale), rationale
    assert f"rationale: {rationale}" in retain(workspace, "show", "2").stdout


def test_tables_print_file_names_with_brackets_verbatim(workspace):
    (workspace.parent / "inbox" / "sensor[b].npz").write_bytes(b"not an archive")
    retain(workspace, "run", "--once")
    assert "sensor[b].npz" in retain(workspace, "batches").stdout


def test_rollback_with_no_earlier_production_is_an_error(workspace):
    one_error_line(retain(workspace, "rollback", check=False), "no earlier production version")


def test_a_registry_written_by_a_newer_retain_is_a_one_line_error(workspace):
    with sqlite3.connect(workspace.parent / "registry.db") as db:
        db.execute("UPDATE retain_schema SET version = version + 1")
    one_error_line(retain(workspace, "versions", check=False), "newer than this retain knows")


def test_missing_config_is_an_error_naming_the_file(tmp_path):
    one_error_line(retain(tmp_path / "absent.toml", "versions", check=False), "absent.toml not found")


def test_invalid_config_names_the_key(tmp_path):
    path = tmp_path / "retain.toml"
    path.write_text("[replay]\ncapacity = -5\n")
    one_error_line(retain(path, "versions", check=False), "replay.capacity")


def test_init_twice_is_refused(workspace):
    one_error_line(
        retain(workspace, "init", "--data", str(workspace.parent / "init.npz"), "--train", check=False),
        "already initialised",
    )


def test_init_without_weights_or_train_is_refused(tmp_path, digit_data):
    x, y = digit_data
    config = write_config(tmp_path)
    save_npz(tmp_path / "init.npz", x[:100], y[:100])
    one_error_line(retain(config, "init", "--data", str(tmp_path / "init.npz"), check=False), "--train")


def test_predict_json_gives_one_label_per_row(workspace, digit_data):
    x, _ = digit_data
    np.savez(workspace.parent / "unlabelled.npz", x=x[:25])
    payload = json.loads(retain(workspace, "predict", str(workspace.parent / "unlabelled.npz"), "--json").stdout)
    assert payload["version"] == 1 and len(payload["predictions"]) == 25
    assert all(0 <= p < 10 for p in payload["predictions"])


def test_predict_gives_each_samples_most_probable_classes_with_their_probabilities(workspace, digit_data):
    x, _ = digit_data
    np.savez(workspace.parent / "unlabelled.npz", x=x[:25])
    payload = json.loads(retain(workspace, "predict", str(workspace.parent / "unlabelled.npz"), "--top-k", "2",
                                "--json").stdout)
    assert len(payload["probabilities"]) == 25
    for predicted, top in zip(payload["predictions"], payload["probabilities"], strict=True):
        assert [entry["class"] for entry in top][0] == predicted and len(top) == 2
        assert 1 >= top[0]["probability"] >= top[1]["probability"] >= 0
    assert "--top-k" in retain(workspace, "predict", "--help").stdout


def test_predict_refuses_a_bad_file_naming_it(workspace):
    bad = workspace.parent / "bad.npz"
    np.savez(bad, x=np.zeros((3, 5), np.float32))
    one_error_line(retain(workspace, "predict", str(bad), check=False), "bad.npz: each sample has shape (5,)")


def test_ingest_copies_into_the_inbox_without_touching_the_source(workspace, digit_data):
    x, y = digit_data
    source = save_npz(workspace.parent / "new.npz", x[:30], y[:30])
    retain(workspace, "ingest", str(source))
    assert (workspace.parent / "inbox" / "new.npz").read_bytes() == source.read_bytes()
    assert source.exists()
    assert not [p for p in (workspace.parent / "inbox").iterdir() if p.name.startswith(".")]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_run_on_cuda_without_a_gpu_fails_at_start_naming_the_key_and_leaves_the_inbox(workspace, digit_data):
    x, y = digit_data
    write_config(workspace.parent, training={"device": "cuda"})
    batch = save_npz(workspace.parent / "inbox" / "b.npz", x[500:600], y[500:600])
    one_error_line(retain(workspace, "run", "--once", check=False), 'retain.toml: training.device is "cuda"')
    assert batch.exists()
    assert json.loads(retain(workspace, "batches", "--json").stdout) == []


def test_listings_show_the_newest_page_and_say_on_stderr_what_they_left_out(workspace):
    from retain.daemon.config import load_config
    from retain.registry import NewVersion, Registry

    registry = Registry(load_config(workspace).registry_url)
    for _ in range(24):
        registry.register_version(NewVersion(status="rejected", strategy="finetune", model_spec={"factory": "m:f"},
                                             artifact_sha256="a" * 64, replay_sha256="b" * 64, parent=1))
    registry.close()
    page = retain(workspace, "versions", "--json")
    assert [row["version"] for row in json.loads(page.stdout)] == list(range(6, 26))
    assert "the last 20 of 25 versions" in page.stderr
    assert [row["version"] for row in json.loads(retain(workspace, "versions", "--json", "--limit", "3").stdout)] == [
        23, 24, 25]
    every = retain(workspace, "versions", "--json", "--all")
    assert len(json.loads(every.stdout)) == 25 and every.stderr == ""


def test_predict_needs_no_labels_and_scores_the_ones_the_model_has(workspace, digit_data, tmp_path):
    x, y = digit_data
    np.savez(tmp_path / "scored.npz", x=x[:100], y=y[:100])
    scored = json.loads(retain(workspace, "predict", str(tmp_path / "scored.npz"), "--json").stdout)
    assert len(scored["predictions"]) == 100 and scored["accuracy"] > 0.8
    np.savez(tmp_path / "past-the-head.npz", x=x[:100], y=y[:100] + 10)
    unscored = json.loads(retain(workspace, "predict", str(tmp_path / "past-the-head.npz"), "--json").stdout)
    assert unscored["predictions"] == scored["predictions"] and "accuracy" not in unscored


def test_a_versions_compute_is_recorded_listed_and_shown(workspace, digit_data):
    x, y = digit_data
    save_npz(workspace.parent / "inbox" / "b.npz", x[500:700], y[500:700])
    retain(workspace, "run", "--once")
    candidate = json.loads(retain(workspace, "versions", "--json").stdout)[1]
    assert candidate["training_seconds"] > 0 and candidate["device"] == "cpu"
    assert candidate["samples_seen"] >= candidate["optimizer_steps"] > 0
    shown = retain(workspace, "show", str(candidate["version"])).stdout
    assert f"{candidate['optimizer_steps']} optimizer steps over {candidate['samples_seen']} samples on cpu" in shown


READ_ONLY_COMMANDS = ["versions", "show 1", "status", "batches", "models", "history", "webhooks"]


def test_read_only_commands_do_not_import_torch(workspace):
    import subprocess
    import sys

    # One fresh interpreter for all of them: what one command imports, the next inherits.
    probe = ("import sys; from typer.testing import CliRunner; from retain.cli import app; heavy = set()\n"
             "for command in sys.argv[2:]:\n"
             "    result = CliRunner().invoke(app, ['--config', sys.argv[1], *command.split()])\n"
             "    assert result.exit_code == 0, (command, result.output)\n"
             "    loaded = {m.split('.')[0] for m in sys.modules} & {'torch', 'avalanche', 'sklearn', 'scipy'}\n"
             "    print(command, sorted(loaded - heavy)); heavy |= loaded\n")
    done = subprocess.run([sys.executable, "-c", probe, str(workspace), *READ_ONLY_COMMANDS],
                          capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.splitlines() == [f"{command} []" for command in READ_ONLY_COMMANDS]


def test_the_process_exit_runs_exit_handlers_and_flushes_before_skipping_module_teardown():
    import subprocess
    import sys

    script = ("import atexit, torch; from retain.cli import exit_process; "
              "atexit.register(lambda: print(' handler ran', flush=True)); print('unflushed', end=''); exit_process(3)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout) == (3, "unflushed handler ran\n")


def test_errors_of_the_systems_retain_talks_to_are_one_line_not_tracebacks(workspace, tmp_path, digit_data):
    from conftest import free_port

    x, y = digit_data
    batch = save_npz(tmp_path / "b.npz", x[:50], y[:50])
    closed = f"http://127.0.0.1:{free_port()}"
    write_config(workspace.parent, artifacts={"url": "s3://bucket", "endpoint_url": closed})
    one_error_line(retain(workspace, "ingest", "--remote", str(batch), check=False), "the bucket")
    write_config(workspace.parent, registry={"url": f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/none"})
    one_error_line(retain(workspace, "status", check=False), "the registry's database cannot be used")


def test_a_factory_that_raises_on_its_keywords_is_a_one_line_error_naming_them(tmp_path, digit_data):
    x, y = digit_data
    (tmp_path / "mymodel.py").write_text("def build(input_shape, num_classes, weights):\n    return {}[weights]\n")
    config = write_config(tmp_path, model={"factory": "mymodel.py:build", "kwargs": {"weights": ""}})
    data = save_npz(tmp_path / "known.npz", x[:100], y[:100])
    one_error_line(retain(config, "init", "--data", str(data), "--train", check=False),
                   "model.factory 'mymodel.py:build': the factory failed (model.kwargs: weights=''): KeyError")


def test_connect_raises_only_retain_errors(tmp_path):
    import retain as api

    for url in ("sqlite:///", f"sqlite:///{tmp_path}"):  # no file named; a folder, not a database
        with pytest.raises(api.RetainError):
            api.connect(url)


@pytest.mark.parametrize("command", [
    ["versions"], ["show", "1"], ["batches"], ["history"], ["models"], ["status"], ["webhooks"],
    ["promote", "1"], ["rollback"], ["approve", "1"], ["reject", "1", "--reason", "x"], ["alias", "set", "c", "1"],
    ["forget", "--batch", "1", "--reason", "x"], ["gc"], ["predict", "x.npz"], ["export", "1", "--out", "out"],
])
def test_every_command_says_in_one_line_that_the_registry_cannot_be_reached(workspace, command):
    from conftest import free_port

    write_config(workspace.parent, registry={"url": f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/none"})
    one_error_line(retain(workspace, *command, check=False), "the registry's database cannot be used")
