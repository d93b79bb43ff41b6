"""``retain export``: the files a model server loads, checked against the model."""

import json

import numpy as np
import onnxruntime
import pytest
import torch
from safetensors.torch import load_file

from conftest import digits, retain


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_export_writes_each_format_with_a_model_card_that_matches_the_model(workspace, tmp_path):
    out = tmp_path / "served"
    result = retain(workspace, "export", "default@production", "--out", str(out),
                    "--format", "safetensors", "--format", "torchscript", "--format", "onnx")
    assert "onnx: max abs diff" in result.stdout and "torchscript: max abs diff" in result.stdout
    card = json.loads((out / "model.json").read_text())
    assert (card["ref"], card["num_classes"], card["input"]["shape"]) == ("default@1", 10, ["batch", 64])
    assert set(card["files"].values()) == {"model.safetensors", "model.pt", "model.onnx"}
    assert all(check["max_abs_diff"] <= 1e-4 and check["samples"] > 0 for check in card["parity"].values())

    x = torch.from_numpy(digits()[0][:50])
    scripted = torch.jit.load(str(out / "model.pt"))
    session = onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    onnx_logits = session.run(None, {"x": x.numpy()})[0]
    assert np.allclose(scripted(x).detach().numpy(), onnx_logits, atol=1e-4)
    weights = load_file(out / "model.safetensors")
    assert {name.split(".")[-1] for name in weights} == {"weight", "bias"}


def test_an_export_that_would_differ_from_the_model_is_refused_and_writes_nothing(workspace, tmp_path, monkeypatch):
    from retain.daemon import export

    monkeypatch.setattr(export, "PARITY_TOLERANCE", -1.0)  # no export can pass: what a broken one meets
    result = retain(workspace, "export", "production", "--out", str(tmp_path / "served"), "--format", "onnx",
                    check=False)
    assert result.returncode == 1 and "onnx export differs from the model by" in result.stderr
    assert not (tmp_path / "served").exists() and not list(tmp_path.glob(".served.*"))


def test_export_does_not_overwrite_a_folder_with_files_unless_forced(workspace, tmp_path):
    out = tmp_path / "served"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = retain(workspace, "export", "production", "--out", str(out), check=False)
    assert result.returncode == 1 and "exists and is not empty" in result.stderr
    retain(workspace, "export", "production", "--out", str(out), "--force")
    assert sorted(p.name for p in out.iterdir()) == ["model.json", "model.safetensors"]


@pytest.mark.parametrize("fmt", ["pickle", "ONNX!"])
def test_an_unknown_format_is_named(workspace, tmp_path, fmt):
    result = retain(workspace, "export", "production", "--out", str(tmp_path / "o"), "--format", fmt, check=False)
    assert result.returncode == 2 and f"--format {fmt}: use safetensors, torchscript, onnx" in result.stderr
