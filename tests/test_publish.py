"""``[publish]``: every production move lands in a Triton-shaped model repository."""

import json
import os
import re

import onnxruntime

from conftest import retain, save_npz, write_config


def publishing(workspace, formats=("onnx", "safetensors")):
    write_config(workspace.parent, publish={"dir": "served", "formats": list(formats)},
                 gate={"max_forgetting": 1.0, "min_gain": -1.0})
    return workspace.parent / "served" / "default"


def test_each_production_move_is_published_and_current_follows_it(workspace, digit_data):
    x, y = digit_data
    repository = publishing(workspace)
    save_npz(workspace.parent / "inbox" / "b.npz", x[500:700], y[500:700])
    retain(workspace, "run", "--once")  # version 2, auto-promoted: the daemon publishes it
    assert os.readlink(repository / "current") == "2"
    assert "version_policy: { specific: { versions: [2] } }" in (repository / "config.pbtxt").read_text()
    rolled = retain(workspace, "rollback", "--reason", "check").stdout  # the CLI publishes its move
    assert "published default@1" in rolled and os.readlink(repository / "current") == "1"
    assert "versions: [1]" in (repository / "config.pbtxt").read_text()
    assert sorted(p.name for p in repository.iterdir()) == ["1", "2", "config.pbtxt", "current"]


def test_the_published_folder_has_the_shape_triton_loads(workspace, digit_data):
    repository = publishing(workspace)
    retain(workspace, "run", "--once")  # the daemon publishes what is production and unpublished
    version = repository / "1"
    assert sorted(p.name for p in version.iterdir()) == ["model.json", "model.onnx", "model.safetensors"]
    pbtxt = (repository / "config.pbtxt").read_text()
    assert re.search(r'^name: "default"$', pbtxt, re.M) and 'platform: "onnxruntime_onnx"' in pbtxt
    assert 'input [{ name: "x", data_type: TYPE_FP32, dims: [64] }]' in pbtxt
    assert 'output [{ name: "logits", data_type: TYPE_FP32, dims: [10] }]' in pbtxt
    session = onnxruntime.InferenceSession(str(repository / "current" / "model.onnx"),
                                           providers=["CPUExecutionProvider"])
    x, _ = digit_data
    assert session.run(None, {"x": x[:3]})[0].shape == (3, 10)
    assert json.loads((version / "model.json").read_text())["ref"] == "default@1"


def test_a_publish_that_fails_leaves_the_previous_one_current(workspace, digit_data, monkeypatch):
    from retain.daemon import export

    x, y = digit_data
    repository = publishing(workspace)
    retain(workspace, "run", "--once")
    assert os.readlink(repository / "current") == "1"
    monkeypatch.setattr(export, "PARITY_TOLERANCE", -1.0)  # the next export is refused mid-publish
    save_npz(workspace.parent / "inbox" / "b.npz", x[500:700], y[500:700])
    retain(workspace, "run", "--once")
    assert [b["state"] for b in json.loads(retain(workspace, "batches", "--json").stdout)] == ["done"]
    assert os.readlink(repository / "current") == "1" and "versions: [1]" in (repository / "config.pbtxt").read_text()
    assert not (repository / "2").exists() and not [p for p in repository.iterdir() if p.name.startswith(".")]
    monkeypatch.undo()
    retain(workspace, "run", "--once")  # the next look publishes it
    assert os.readlink(repository / "current") == "2"


def test_private_state_is_private_and_what_is_published_is_readable_by_the_model_server(workspace, digit_data):
    x, y = digit_data
    repository = publishing(workspace)
    save_npz(workspace.parent / "inbox" / "b.npz", x[500:700], y[500:700])
    retain(workspace, "run", "--once")
    mode = lambda path: path.stat().st_mode & 0o777  # noqa: E731
    assert mode(workspace.parent / "registry.db") == 0o600
    assert {mode(p) for p in (workspace.parent / "artifacts").rglob("*") if p.is_file()} == {0o600}
    published = repository / "2"
    assert {mode(p) for p in published.iterdir()} == {0o644}
    assert mode(published) == mode(repository) == 0o755 and mode(repository / "config.pbtxt") == 0o644
    write_config(workspace.parent, publish={"dir": "served", "formats": ["safetensors"], "mode": "0640"},
                 gate={"max_forgetting": 1.0, "min_gain": -1.0})
    save_npz(workspace.parent / "inbox" / "c.npz", x[700:900], y[700:900])
    retain(workspace, "run", "--once")
    assert {mode(p) for p in (repository / "3").iterdir()} == {0o640} and mode(repository / "3") == 0o750
