"""Config loading: defaults, relative paths, and errors that name the file and key."""

from pathlib import Path

import pytest
import torch

from retain.daemon.config import OVERRIDABLE, ConfigError, dump_config, find_config, load_config, parse_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "retain.toml"
    path.write_text(text)
    return path


def test_empty_file_gives_defaults_relative_to_the_config(tmp_path):
    config = load_config(write(tmp_path, ""))
    assert config.workdir == tmp_path.resolve()
    assert config.inbox == tmp_path.resolve() / "inbox"
    assert config.registry_url == f"sqlite:///{tmp_path.resolve()}/registry.db"
    assert config.training.threads == 1
    assert (config.metrics.host, config.metrics.port) == ("127.0.0.1", 9464)


def test_absolute_sqlite_and_postgres_urls_are_kept(tmp_path):
    assert load_config(write(tmp_path, '[registry]\nurl = "sqlite:////var/x.db"')).registry_url == "sqlite:////var/x.db"
    url = "postgresql+psycopg://u@h/db"
    assert load_config(write(tmp_path, f'[registry]\nurl = "{url}"')).registry_url == url


def test_invalid_value_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"retain.toml: training.epochs: .*greater than or equal to 1"):
        load_config(write(tmp_path, "[training]\nepochs = 0\n"))


def test_unknown_key_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"gate.max_forgeting: unknown key"):
        load_config(write(tmp_path, "[gate]\nmax_forgeting = 0.1\n"))


def test_invalid_toml_names_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"retain.toml: not valid TOML"):
        load_config(write(tmp_path, "[training\n"))


def test_missing_file_says_how_to_create_one(tmp_path):
    with pytest.raises(ConfigError, match=r"not found .*retain init"):
        load_config(tmp_path / "nope.toml")


def test_config_is_found_from_flag_then_environment_then_cwd(monkeypatch, tmp_path):
    monkeypatch.setenv("RETAIN_CONFIG", str(tmp_path / "env.toml"))
    assert find_config(Path("flag.toml")) == Path("flag.toml")
    assert find_config(None) == tmp_path / "env.toml"
    monkeypatch.delenv("RETAIN_CONFIG")
    assert find_config(None) == Path("retain.toml")


def test_dumped_config_reads_back(tmp_path):
    text = dump_config({"model": {"kwargs": {"hidden": [8, 4]}, "head": "fc"}, "gate": {"max_forgetting": 0.05}})
    config = load_config(write(tmp_path, text))
    assert config.model.kwargs == {"hidden": [8, 4]}
    assert config.gate.max_forgetting == 0.05


def test_example_config_documents_the_defaults():
    example = load_config(Path(__file__).parent.parent / "deploy" / "retain.example.toml")
    defaults = parse_config({})
    assert example.model_dump(exclude={"model": {"kwargs"}}) == defaults.model_dump(exclude={"model": {"kwargs"}})


def test_example_config_lists_every_key():
    import tomllib

    written = tomllib.loads((Path(__file__).parent.parent / "deploy" / "retain.example.toml").read_text())
    defaults = parse_config({}).model_dump()
    # Inferred from the init data, or absent, by default; [models.NAME] tables are shown commented.
    optional = {"model": {"input_shape", "num_classes", "weights", "inbox", "torchvision", "timm", "head",
                          *OVERRIDABLE}, "publish": {"dir"},
                "policy": {"strategy", "recurring_batches"}, "meta": {"continue_steps"},
                "shift": {"max_samples", "kernel_features"}}
    del defaults["models"], defaults["webhooks"]  # arrays of tables, shown commented
    for section, values in defaults.items():
        skip = optional.get(section, set())
        assert set(values) - skip == set(written[section]) - skip, section


def test_the_strategies_take_the_config_sections_themselves():
    from retain.strategies.settings import GateConfig, PolicyConfig, ReptileSettings, ShiftThresholds, TrainingSettings

    config = parse_config({"policy": {"small_batch": 50}, "training": {"epochs": 3, "device": "cpu"}})
    assert isinstance(config.policy, PolicyConfig) and config.policy.small_batch == 50
    assert isinstance(config.shift, ShiftThresholds) and isinstance(config.meta, ReptileSettings)
    assert isinstance(config.gate, GateConfig)
    assert config.training.settings(seed=7) == TrainingSettings(epochs=3, device="cpu", seed=7)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_cuda_where_torch_sees_none_is_a_config_error_and_auto_falls_back_to_cpu():
    assert parse_config({"training": {"device": "auto"}}).training.resolved_device() == "cpu"
    with pytest.raises(ConfigError, match=r'training.device is "cuda" but torch .* sees no CUDA device'):
        parse_config({"training": {"device": "cuda"}}).training.resolved_device()


def test_the_packages_import_under_retain_only_and_retain_alone_does_not_import_torch(tmp_path):
    import subprocess
    import sys

    probe = (
        "import importlib.util, sys, retain\n"
        "assert 'torch' not in sys.modules, 'import retain imported torch'\n"
        "assert sorted(set(retain.__all__)) == sorted(retain.__all__)\n"
        "for name in ('daemon', 'registry', 'strategies'):\n"
        "    assert importlib.util.find_spec(name) is None, name\n"
        "    assert importlib.util.find_spec('retain.' + name) is not None, name\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_a_factory_named_before_the_retain_namespace_still_resolves():
    from retain.strategies.models import mlp, resolve_factory

    assert resolve_factory("strategies.models:mlp") is mlp


def test_every_error_meant_for_a_user_derives_from_retain_error():
    from retain import RetainError
    from retain.daemon.bootstrap import InitError
    from retain.demo import DemoError
    from retain.daemon.loading import BatchRejected
    from retain.daemon.pipeline import NoProductionVersion
    from retain.registry import AliasConflict, ArtifactError, RegistryError, SchemaError, UnknownVersion
    from retain.strategies.measure import UnusableBatch

    for error in (ConfigError, InitError, DemoError, BatchRejected, NoProductionVersion, RegistryError,
                  AliasConflict, SchemaError, UnknownVersion, ArtifactError, UnusableBatch):
        assert issubclass(error, RetainError), error.__name__
