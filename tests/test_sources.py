"""Model sources beside a factory: torchvision and timm networks by name, their heads found."""

import json
import sys

import numpy as np
import pytest
import torch
from torch import nn

from conftest import retain, save_npz, write_config
from retain.daemon.config import ConfigError, parse_config
from retain.strategies.models import mlp
from retain.strategies.sources import find_head, timm_model, torchvision_model


@pytest.mark.parametrize(("model", "head"), [
    (lambda: torchvision_model("resnet18", num_classes=4), "fc"),
    (lambda: torchvision_model("vgg11", num_classes=4), "classifier.6"),
    (lambda: torchvision_model("mobilenet_v3_small", num_classes=4), "classifier.3"),
    (lambda: timm_model("resnet18", num_classes=4), "fc"),
    (lambda: mlp((8,), 4), "head"),
])
def test_the_head_of_a_network_is_found_without_configuration(model, head):
    built = model()
    assert find_head(built) == head
    assert dict(built.named_modules())[head].out_features == 4


def test_a_network_without_a_known_head_name_is_told_to_set_one():
    model = nn.Module()
    model.add_module("body", nn.Linear(4, 4))
    model.add_module("out", nn.Linear(4, 2))
    with pytest.raises(ValueError, match=r"set model.head to one of its modules: body, out"):
        find_head(model)


def test_a_config_names_one_model_source():
    with pytest.raises(ConfigError, match="set one model source, not factory and torchvision"):
        parse_config({"model": {"factory": "retain.strategies.models:mlp", "torchvision": "resnet18"}})
    assert parse_config({"model": {"torchvision": "resnet18"}}).model.source() == (
        "retain.strategies.sources:torchvision_model", {"name": "resnet18"})


def images(digit_data, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """Digits as 3-channel 8x8 images, as an RGB network takes them."""
    x, y = digit_data
    return np.repeat(x[start:stop].reshape(-1, 1, 8, 8), 3, axis=1), y[start:stop]


def test_a_torchvision_network_by_name_is_trained_adapted_and_serves(tmp_path, digit_data):
    # 300 samples: 225 train in minibatches of 32, one left over, which BatchNorm cannot train on alone.
    save_npz(tmp_path / "init.npz", *images(digit_data, 0, 300))
    config = write_config(tmp_path, model={"torchvision": "mobilenet_v3_small", "kwargs": {}},
                          training={"epochs": 2}, gate={"max_forgetting": 1.0, "min_gain": -1.0})
    retain(config, "init", "--data", str(tmp_path / "init.npz"), "--train")
    save_npz(tmp_path / "inbox" / "b.npz", *images(digit_data, 300, 400))
    retain(config, "run", "--once")
    versions = json.loads(retain(config, "versions", "--json").stdout)
    assert [v["status"] for v in versions][:2] == ["accepted", "accepted"], versions
    shown = json.loads(retain(config, "show", "1", "--json").stdout)
    assert shown["model_spec"]["head"] == "classifier.3"
    assert shown["model_spec"]["factory"] == "retain.strategies.sources:torchvision_model"
    x, _ = images(digit_data, 400, 450)
    np.savez(tmp_path / "unseen.npz", x=x)
    predicted = json.loads(retain(config, "predict", str(tmp_path / "unseen.npz"), "--json").stdout)
    assert predicted["version"] == 2 and len(predicted["predictions"]) == 50


def test_initial_weights_may_be_a_safetensors_file(tmp_path, digit_data):
    from safetensors.torch import save_file

    torch.manual_seed(3)
    trained = timm_model("resnet18", num_classes=10).eval()
    save_file(trained.state_dict(), str(tmp_path / "start.safetensors"))
    save_npz(tmp_path / "init.npz", *images(digit_data, 0, 200))
    config = write_config(tmp_path, model={"timm": "resnet18", "kwargs": {}, "weights": "start.safetensors"})
    retain(config, "init", "--data", str(tmp_path / "init.npz"))
    x, _ = images(digit_data, 200, 260)
    np.savez(tmp_path / "unseen.npz", x=x)
    predicted = json.loads(retain(config, "predict", str(tmp_path / "unseen.npz"), "--json").stdout)
    with torch.no_grad():
        expected = trained(torch.from_numpy(x)).argmax(1).tolist()
    assert predicted["version"] == 1 and predicted["predictions"] == expected


def test_a_source_whose_library_is_missing_is_one_error_line_naming_the_extra(tmp_path, digit_data, monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # as if not installed: importing it fails
    save_npz(tmp_path / "init.npz", *images(digit_data, 0, 200))
    config = write_config(tmp_path, model={"timm": "resnet18", "kwargs": {}})
    result = retain(config, "init", "--data", str(tmp_path / "init.npz"), "--train", check=False)
    assert result.returncode != 0
    assert result.stderr.strip() == "error: model.timm needs the timm library: pip install 'retain[vision]'"
