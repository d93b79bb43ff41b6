"""Strategy selection and fallback through the daemon's `retain run --once` on real files."""

import json
import textwrap

import numpy as np

from conftest import retain, save_npz, write_config


def versions(config):
    return json.loads(retain(config, "versions", "--json").stdout)


def test_a_rejected_candidate_is_followed_by_each_fallback_and_all_are_recorded(workspace, digit_data):
    x, y = digit_data
    write_config(workspace.parent, gate={"min_gain": 1.0})  # nothing can pass
    save_npz(workspace.parent / "inbox" / "b.npz", x[500:700], y[500:700])
    retain(workspace, "run", "--once")
    tried = versions(workspace)[1:]
    assert [v["batch"] for v in tried] == [1, 1, 1]
    assert {v["strategy"] for v in tried} == {"finetune", "feature_extraction", "meta"}
    assert [v["status"] for v in tried] == ["rejected"] * 3
    assert all("as fallback after the" in v["rationale"] for v in tried[1:])
    [batch] = json.loads(retain(workspace, "batches", "--json").stdout)
    assert (batch["state"], batch["version"]) == ("done", tried[-1]["version"])


def test_fallback_can_be_switched_off(workspace, digit_data):
    x, y = digit_data
    write_config(workspace.parent, gate={"min_gain": 1.0}, policy={"fallback": False})
    save_npz(workspace.parent / "inbox" / "b.npz", x[500:700], y[500:700])
    retain(workspace, "run", "--once")
    assert len(versions(workspace)) == 2


def test_new_classes_widen_the_head_and_the_rationale_names_them(tmp_path, digit_data):
    x, y = digit_data
    old = y < 8
    config = write_config(tmp_path, gate={"max_forgetting": 1.0, "min_gain": -1.0})  # no max_classes: the default
    save_npz(tmp_path / "init.npz", x[old][:500], y[old][:500])
    retain(config, "init", "--data", str(tmp_path / "init.npz"), "--train")
    new = np.flatnonzero(~old)
    held_out_eights = new[y[new] == 8][:20]
    batch = np.concatenate([np.setdiff1d(new, held_out_eights), np.flatnonzero(old)[500:600]])
    save_npz(tmp_path / "inbox" / "new.npz", x[batch], y[batch])  # mostly 8s and 9s
    retain(config, "run", "--once")
    candidate = versions(config)[1]
    assert candidate["strategy"] in ("feature_extraction", "meta")
    assert "new classes [8, 9]" in candidate["rationale"]
    shown = json.loads(retain(config, "show", str(candidate["version"]), "--json").stdout)
    assert shown["model_spec"]["num_classes"] == 10
    assert json.loads(retain(config, "show", "1", "--json").stdout)["model_spec"]["num_classes"] == 8
    np.savez(tmp_path / "eights.npz", x=x[held_out_eights])
    predicted = json.loads(retain(config, "predict", str(tmp_path / "eights.npz"), "--json").stdout)["predictions"]
    assert predicted.count(8) >= 10


def test_labels_beyond_max_classes_are_rejected(workspace, digit_data):
    x, y = digit_data
    write_config(workspace.parent, model={"kwargs": {"hidden": [32]}, "max_classes": 12})
    save_npz(workspace.parent / "inbox" / "b.npz", x[:100], y[:100] + 5)  # labels up to 14
    retain(workspace, "run", "--once")
    [batch] = json.loads(retain(workspace, "batches", "--json").stdout)
    assert batch["state"] == "rejected" and "labels out of range" in batch["reason"]


USER_MODEL = '''
    from torch import nn

    class Net(nn.Module):
        def __init__(self, input_shape, num_classes):
            super().__init__()
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(input_shape[0], 24), nn.ReLU())
            self.fc = nn.Linear(24, num_classes)

        def forward(self, x):
            return self.fc(self.body(x))

    def build(input_shape, num_classes):
        return Net(input_shape, num_classes)
'''


def test_a_users_model_beside_the_config_names_its_head_in_config(tmp_path, digit_data):
    x, y = digit_data
    (tmp_path / "mymodels.py").write_text(textwrap.dedent(USER_MODEL))  # no PYTHONPATH: beside retain.toml
    save_npz(tmp_path / "init.npz", x[:400], y[:400])
    config = write_config(tmp_path, model={"factory": "mymodels:build", "kwargs": {}, "head": "classifier"})
    result = retain(config, "init", "--data", str(tmp_path / "init.npz"), "--train", check=False)
    assert result.returncode != 0
    assert "model.head: model has no module named 'classifier' (top-level modules: body, fc)" in result.stderr

    config = write_config(tmp_path, model={"factory": "mymodels:build", "kwargs": {}, "head": "fc"},
                          policy={"small_batch": 1000}, gate={"max_forgetting": 1.0, "min_gain": -1.0})
    retain(config, "init", "--data", str(tmp_path / "init.npz"), "--train")
    noisy = np.clip(x[400:600] + np.random.default_rng(0).normal(0, 0.3, (200, 64)), 0, 1).astype(np.float32)
    save_npz(tmp_path / "inbox" / "noisy.npz", noisy, y[400:600])
    retain(config, "run", "--once")
    assert versions(config)[1]["strategy"] in ("feature_extraction", "meta", "finetune")
    assert versions(config)[1]["artifact_sha256"]


OUTPUT_OBJECT_MODEL = """
    from dataclasses import dataclass

    import torch
    from torch import nn


    @dataclass
    class Output:  # as Hugging Face models return: the logits in a field
        logits: torch.Tensor
        hidden: torch.Tensor


    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU())
            self.classifier = nn.Linear(32, 10)

        def forward(self, x):
            hidden = self.body(x)
            return Output(self.classifier(hidden), hidden)


    def build():  # names neither input_shape nor num_classes
        return Net()
"""


def test_a_model_returning_an_output_object_built_by_a_factory_without_arguments_adapts_and_predicts(
        tmp_path, digit_data):
    x, y = digit_data
    (tmp_path / "outputs.py").write_text(textwrap.dedent(OUTPUT_OBJECT_MODEL))
    # 300 samples: 225 train in minibatches of 32, which once left a last one of a single sample
    # that BatchNorm cannot train on.
    save_npz(tmp_path / "init.npz", x[:300], y[:300])
    config = write_config(tmp_path, model={"factory": "outputs.py:build", "kwargs": {}, "head": "classifier"},
                          gate={"max_forgetting": 1.0, "min_gain": -1.0})
    retain(config, "init", "--data", str(tmp_path / "init.npz"), "--train")
    save_npz(tmp_path / "inbox" / "b.npz", x[300:500], y[300:500])
    retain(config, "run", "--once")
    assert [v["status"] for v in versions(config)][:2] == ["accepted", "accepted"], versions(config)
    np.savez(tmp_path / "unseen.npz", x=x[500:600])
    predicted = json.loads(retain(config, "predict", str(tmp_path / "unseen.npz"), "--json").stdout)
    assert predicted["version"] == 2
    assert np.mean(np.array(predicted["predictions"]) == y[500:600]) > 0.5


def test_a_factory_can_be_a_python_file_beside_the_config(tmp_path, digit_data):
    x, y = digit_data
    (tmp_path / "net_in_a_file.py").write_text(textwrap.dedent(USER_MODEL))
    save_npz(tmp_path / "init.npz", x[:300], y[:300])
    config = write_config(tmp_path, model={"factory": "net_in_a_file.py:build", "kwargs": {}, "head": "fc"})
    retain(config, "init", "--data", str(tmp_path / "init.npz"), "--train")
    assert versions(config)[0]["status"] == "accepted"


def test_the_built_in_cnn_adapts_image_batches_with_meta(tmp_path, digit_data):
    # Its BatchNorm layers once crashed meta's torch.func inner loops.
    x, y = digit_data
    images = x.reshape(-1, 1, 8, 8)
    config = write_config(tmp_path, model={"factory": "retain.strategies.models:small_cnn",
                                           "kwargs": {"channels": [4], "features": 16}},
                          policy={"strategy": "meta", "fallback": False},
                          gate={"max_forgetting": 1.0, "min_gain": -1.0})
    save_npz(tmp_path / "init.npz", images[:400], y[:400])
    retain(config, "init", "--data", str(tmp_path / "init.npz"), "--train")
    save_npz(tmp_path / "inbox" / "b.npz", images[400:600], y[400:600])
    retain(config, "run", "--once")
    [batch] = json.loads(retain(config, "batches", "--json").stdout)
    assert batch["state"] == "done", batch
    candidate = versions(config)[1]
    assert (candidate["strategy"], candidate["status"]) == ("meta", "accepted"), candidate["rationale"]
    np.savez(tmp_path / "unseen.npz", x=images[600:700])
    predicted = json.loads(retain(config, "predict", str(tmp_path / "unseen.npz"), "--json").stdout)
    assert predicted["version"] == 2 and len(predicted["predictions"]) == 100


def test_meta_continues_the_initialisation_its_lineage_keeps_and_other_strategies_pass_it_on(workspace, digit_data):
    x, y = digit_data
    gate = {"max_forgetting": 1.0, "min_gain": -1.0}
    meta = {"meta_steps": 40, "continue_steps": 8}
    write_config(workspace.parent, policy={"strategy": "meta", "fallback": False}, gate=gate, meta=meta)
    for name, rows in (("b1.npz", slice(500, 700)), ("b2.npz", slice(700, 900))):
        save_npz(workspace.parent / "inbox" / name, x[rows], y[rows])
        retain(workspace, "run", "--once")
    learned, continued = (json.loads(retain(workspace, "show", v, "--json").stdout) for v in ("2", "3"))
    assert (learned["details"]["meta_start"], continued["details"]["meta_start"]) == ("learned", "continued")
    assert learned["meta_init_sha256"] and continued["meta_init_sha256"] not in (None, learned["meta_init_sha256"])
    assert continued["details"]["optimizer_steps"] < learned["details"]["optimizer_steps"]
    assert "meta continued the lineage's initialisation" in retain(workspace, "show", "3").stdout

    write_config(workspace.parent, policy={"strategy": "finetune", "fallback": False}, gate=gate, meta=meta)
    save_npz(workspace.parent / "inbox" / "b3.npz", x[900:1100], y[900:1100])
    retain(workspace, "run", "--once")
    finetuned = json.loads(retain(workspace, "show", "4", "--json").stdout)
    assert finetuned["strategy"] == "finetune" and "meta_start" not in finetuned["details"]
    assert finetuned["meta_init_sha256"] == continued["meta_init_sha256"]


def test_a_lost_meta_initialisation_costs_meta_a_fresh_start_not_the_batch(workspace, digit_data):
    x, y = digit_data
    write_config(workspace.parent, policy={"strategy": "meta", "fallback": False},
                 gate={"max_forgetting": 1.0, "min_gain": -1.0}, meta={"meta_steps": 20, "continue_steps": 4})
    save_npz(workspace.parent / "inbox" / "b1.npz", x[500:700], y[500:700])
    retain(workspace, "run", "--once")
    digest = json.loads(retain(workspace, "show", "2", "--json").stdout)["meta_init_sha256"]
    (workspace.parent / "artifacts" / "sha256" / digest[:2] / digest).unlink()
    save_npz(workspace.parent / "inbox" / "b2.npz", x[700:900], y[700:900])
    result = retain(workspace, "run", "--once")
    assert "meta initialisation unreadable" in result.stderr
    assert [b["state"] for b in json.loads(retain(workspace, "batches", "--json").stdout)] == ["done", "done"]
    again = json.loads(retain(workspace, "show", "3", "--json").stdout)
    assert again["details"]["meta_start"] == "learned" and again["meta_init_sha256"] not in (None, digest)
