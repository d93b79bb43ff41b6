"""The Python API, ``retain.connect``, on a real workspace."""

import re
import subprocess
import sys

import pytest
import torch

import retain
from conftest import REPO, digits, retain as run_retain, save_npz


def test_connect_lists_models_and_versions_and_names_versions_as_the_cli_does(workspace):
    with retain.connect(workspace) as registry:
        (summary,) = registry.models()
        assert (summary.name, summary.production_version, summary.versions) == ("default", 1, 1)
        (info,) = registry.versions()
        assert info.is_production and info.status == "accepted" and info.model == "default"
        assert registry.version("default@production") == registry.version("1") == info


def test_a_loaded_version_is_a_module_in_eval_mode_that_knows_what_it_is(workspace):
    x, y = digits()
    with retain.connect(workspace) as registry:
        model = registry.load_model("production")
        info = registry.version("production")
        predictions = registry.predict("default@1", x[:200])
    assert isinstance(model, torch.nn.Module) and not model.training
    assert model.card.ref == "default@1" and model.card.artifact_sha256 == info.artifact_sha256
    assert (model.card.input_shape, model.card.num_classes) == ((64,), 10)
    assert model(torch.from_numpy(x[:5])).shape == (5, 10)
    assert predictions.version == 1 and len(predictions.labels) == 200
    assert sum(p == t for p, t in zip(predictions.labels, y[:200], strict=True)) / 200 > 0.8
    assert [top[0][0] for top in predictions.probabilities] == predictions.labels
    assert all(len(top) == 3 and top[0][1] >= top[1][1] >= top[2][1] for top in predictions.probabilities)


def test_connect_by_url_finds_the_artifacts_beside_a_sqlite_registry(workspace):
    with retain.connect(f"sqlite:///{workspace.parent / 'registry.db'}") as registry:
        assert registry.load_model("default@production").card.version == 1


@pytest.mark.parametrize(("call", "message"), [
    (lambda r: r.version("default@7"), "version 7 of model 'default' does not exist"),
    (lambda r: r.version("default@staging"), "has no alias 'staging'"),
    (lambda r: r.predict("production", [[0.0] * 10]), "takes samples of shape [64] (64 values), not [10]"),
])
def test_api_errors_are_retain_errors_that_say_what_is_wrong(workspace, call, message):
    with retain.connect(workspace) as registry, pytest.raises(retain.RetainError, match=re.escape(message)):
        call(registry)


def test_connecting_to_a_missing_registry_is_an_error_not_an_empty_registry(tmp_path):
    with pytest.raises(retain.RetainError, match="no registry at"):
        retain.connect(f"sqlite:///{tmp_path / 'nothing.db'}")
    assert not (tmp_path / "nothing.db").exists()


def test_reading_and_predicting_never_import_avalanche(workspace):
    script = (
        "import sys, numpy as np, retain\n"
        f"registry = retain.connect({str(workspace)!r})\n"
        "print(registry.predict('production', np.zeros((2, 64), dtype='float32')).labels)\n"
        "assert not [m for m in sys.modules if m.startswith('avalanche')], 'avalanche imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr


def test_the_api_reads_a_model_of_several(tmp_path, digit_data):
    x, y = digit_data
    from conftest import write_config

    config = write_config(tmp_path, models={"a": {}, "b": {}})
    save_npz(tmp_path / "init.npz", x[:300], y[:300])
    run_retain(config, "init", "--model", "b", "--data", str(tmp_path / "init.npz"), "--train")
    with retain.connect(config) as registry:
        assert [(m.name, m.production_version) for m in registry.models()] == [("a", None), ("b", 1)]
        assert registry.load_model("b@production").card.ref == "b@1"
        with pytest.raises(retain.RetainError, match="several models"):
            registry.versions()


def test_a_model_whose_factory_file_is_not_importable_from_here_is_a_retain_error(tmp_path, monkeypatch):
    # Connected by URL from another folder: the factory beside retain.toml is not on the path.
    x, y = digits()
    workdir = tmp_path / "ws"
    workdir.mkdir()
    (workdir / "factory_beside_config.py").write_text(
        "from retain.strategies.models import mlp\n\ndef build(input_shape, num_classes, **kwargs):\n"
        "    return mlp(input_shape=input_shape, num_classes=num_classes, **kwargs)\n")
    from conftest import write_config

    config = write_config(workdir, model={"factory": "factory_beside_config:build", "head": "head"})
    save_npz(workdir / "known.npz", x[:100], y[:100])
    run_retain(config, "init", "--data", str(workdir / "known.npz"), "--train")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(workdir))])
    monkeypatch.delitem(sys.modules, "factory_beside_config", raising=False)
    with retain.connect(f"sqlite:///{workdir / 'registry.db'}") as registry:
        with pytest.raises(retain.RetainError, match="factory_beside_config"):
            registry.load_model("production")
