"""Several models in one workspace: one registry, a lineage, an inbox folder and metrics each."""

import json
import re
import shutil
from pathlib import Path

import pytest

from conftest import retain, save_npz, write_config
from retain.daemon.config import ConfigError, parse_config
from retain.registry import BadVersionRef, VersionRef

MODELS = ("cameras", "tills")


@pytest.fixture(scope="module")
def two_models_template(tmp_path_factory, digit_data) -> Path:
    """A workspace of two models, each with version 1 trained on part of the digits."""
    root = tmp_path_factory.mktemp("two-models")
    x, y = digit_data
    write_config(root, models={"cameras": {}, "tills": {"gate": {"max_forgetting": 1.0, "min_gain": -1.0}}})
    save_npz(root / "init.npz", x[:400], y[:400])
    for model in MODELS:
        retain(root / "retain.toml", "init", "--model", model, "--data", str(root / "init.npz"), "--train")
    return root


@pytest.fixture
def two_models(tmp_path, two_models_template) -> Path:
    target = tmp_path / "ws"
    shutil.copytree(two_models_template, target)
    return target / "retain.toml"


def listing(config: Path, *args: str) -> list[dict]:
    return json.loads(retain(config, *args, "--json").stdout)


def test_each_model_learns_from_its_own_folder_in_one_registry(two_models, digit_data):
    x, y = digit_data
    inbox = two_models.parent / "inbox"
    save_npz(inbox / "cameras" / "monday.npz", x[400:550], y[400:550])
    save_npz(inbox / "tills" / "monday.npz", x[550:700], y[550:700])
    save_npz(inbox / "tills" / "tuesday.npz", x[700:850], y[700:850])
    retain(two_models, "run", "--once")
    cameras, tills = (listing(two_models, "versions", "--model", m) for m in MODELS)
    assert [(v["model"], v["version"]) for v in cameras] == [("cameras", 1), ("cameras", 2)]
    assert [(v["model"], v["version"], v["parent"]) for v in tills] == [("tills", 1, None), ("tills", 2, 1),
                                                                         ("tills", 3, 2)]
    batches = listing(two_models, "batches")  # every model's, in arrival order
    assert sorted((b["model"], b["name"]) for b in batches) == [
        ("cameras", "monday.npz"), ("tills", "monday.npz"), ("tills", "tuesday.npz")]
    assert {(b["model"], b["state"]) for b in listing(two_models, "batches", "-m", "tills")} == {("tills", "done")}


def test_models_lists_each_with_its_production_queue_and_inbox(two_models):
    rows = {row["model"]: row for row in listing(two_models, "models")}
    assert list(rows) == list(MODELS)
    assert all(row["production_version"] == 1 and row["queue_depth"] == 0 for row in rows.values())
    assert rows["tills"]["inbox"] == str(two_models.parent / "inbox" / "tills")
    table = retain(two_models, "models").stdout
    assert "cameras" in table and "tills" in table


def test_versions_are_named_with_their_model_wherever_a_version_is_taken(two_models, digit_data):
    x, y = digit_data
    save_npz(two_models.parent / "inbox" / "tills" / "b.npz", x[400:550], y[400:550])
    retain(two_models, "run", "--once")
    assert json.loads(retain(two_models, "show", "tills@production", "--json").stdout)["version"] == 2
    assert json.loads(retain(two_models, "show", "1", "--model", "cameras", "--json").stdout)["model"] == "cameras"
    assert "tills production: 2 -> 1" in retain(two_models, "rollback", "--model", "tills").stdout
    assert "tills production: 1 -> 2" in retain(two_models, "promote", "tills@2").stdout
    assert [m["production_version"] for m in listing(two_models, "models")] == [1, 2]
    predicted = json.loads(retain(two_models, "predict", str(two_models.parent / "init.npz"), "--version",
                                  "tills@1", "--json").stdout)
    assert predicted["version"] == 1 and len(predicted["predictions"]) == 400
    history = listing(two_models, "history", "-m", "tills")
    assert [(e["model"], e["action"]) for e in history] == [
        ("tills", "create"), ("tills", "auto_promote"), ("tills", "rollback"), ("tills", "promote")]


@pytest.mark.parametrize(("args", "message"), [
    (("versions",), "has several models (cameras, tills): choose one with --model NAME"),
    (("show", "1"), "has several models (cameras, tills)"),
    (("show", "shelves@1"), "has no model 'shelves'; its models: cameras, tills"),
    (("show", "cameras@staging"), "model 'cameras' has no alias 'staging'"),
    (("show", "cameras@9"), "version 9 of model 'cameras' does not exist"),
    (("promote", "tills@1", "--model", "cameras"), "--model cameras but tills@1 is a version of tills"),
    (("show", "cameras@-1"), "names no version"),
    (("run", "--once", "--model", "shelves"), "has no model 'shelves'"),
])
def test_a_command_that_cannot_tell_which_model_says_so_in_one_line(two_models, args, message):
    result = retain(two_models, *args, check=False)
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


def test_a_file_left_in_the_shared_inbox_is_rejected_naming_the_model_folders(two_models, digit_data):
    x, y = digit_data
    save_npz(two_models.parent / "inbox" / "stray.npz", x[400:550], y[400:550])
    retain(two_models, "run", "--once")
    (stray,) = listing(two_models, "batches")
    assert stray["model"] is None and stray["state"] == "rejected"
    assert "shared by 2 models" in stray["reason"] and "inbox/cameras/, inbox/tills/" in stray["reason"]
    assert (two_models.parent / "rejected" / f"{stray['id']:06d}-stray.npz").exists()


def test_a_daemon_serves_only_the_models_it_is_given(two_models, digit_data):
    x, y = digit_data
    for model in MODELS:
        save_npz(two_models.parent / "inbox" / model / "b.npz", x[400:550], y[400:550])
    retain(two_models, "run", "--once", "--model", "tills")
    assert [(b["model"], b["state"]) for b in listing(two_models, "batches")] == [("tills", "done")]


def test_ingest_puts_a_file_in_its_models_folder(two_models, digit_data, tmp_path):
    x, y = digit_data
    source = save_npz(tmp_path / "new.npz", x[:50], y[:50])
    output = retain(two_models, "ingest", "--model", "cameras", str(source)).stdout
    assert (two_models.parent / "inbox" / "cameras" / "new.npz").exists() and "inbox/cameras/new.npz" in output


# ------------------------------------------------------------------ config and names, no files


def test_a_lone_model_table_is_the_model_default():
    config = parse_config({"model": {"kwargs": {"hidden": [8]}}})
    assert config.model_names == ["default"] and config.model_name == "default"
    assert config.for_model(None).model.kwargs == {"hidden": [8]} and config.inbox == config.inbox_root


def test_a_models_overrides_replace_only_the_keys_it_names():
    config = parse_config({"gate": {"max_forgetting": 0.02, "min_gain": 0.01},
                           "models": {"cameras": {}, "tills": {"gate": {"max_forgetting": 0.1}, "inbox": "/srv/t"}}})
    tills, cameras = config.for_model("tills"), config.for_model("cameras")
    assert (tills.gate.max_forgetting, tills.gate.min_gain) == (0.1, 0.01)
    assert cameras.gate.max_forgetting == 0.02
    assert cameras.inbox == config.inbox_root / "cameras" and tills.inbox == Path("/srv/t")


@pytest.mark.parametrize(("data", "message"), [
    ({"model": {}, "models": {"a": {}}}, "use [model] for one model, [models.NAME] for several"),
    ({"models": {"a/b": {}}}, "models.a/b: a model's name is letters"),
    ({"models": {"a": {"gate": {"max_forgetting": 2}}}}, "models.a.gate: max_forgetting"),
    ({"models": {"a": {"training": {"epochz": 2}}}}, "models.a.training: epochz: unknown key"),
])
def test_a_bad_models_table_is_a_config_error_naming_the_key(data, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(data)


@pytest.mark.parametrize(("text", "ref"), [
    ("7", VersionRef(None, number=7)),
    ("production", VersionRef(None, alias="production")),
    ("cameras@7", VersionRef("cameras", number=7)),
    ("site-2.cam@production", VersionRef("site-2.cam", alias="production")),
])
def test_a_version_is_named_by_number_or_alias_with_or_without_its_model(text, ref):
    assert VersionRef.parse(text) == ref and str(ref) == text


@pytest.mark.parametrize("text", ["0", "cameras@", "@7", "a b@1", "cameras@-1"])
def test_text_that_names_no_version_is_refused(text):
    with pytest.raises(BadVersionRef):
        VersionRef.parse(text)


def test_features_and_logits_keep_no_autograd_graph_alive():
    import torch

    from retain.strategies.models import features_and_logits, mlp

    features, logits = features_and_logits(mlp((4,), 3), "head", torch.randn(1100, 4), batch_size=512)
    assert (features.shape, logits.shape) == ((1100, 64), (1100, 3))
    assert logits.grad_fn is None and not logits.requires_grad  # a graph would hold every chunk's activations


def test_the_logits_are_found_in_a_tensor_a_tuple_or_an_object_with_logits():
    from types import SimpleNamespace

    import torch

    from retain.strategies.models import logits_of

    logits = torch.ones(2, 3)
    assert logits_of(logits) is logits
    assert logits_of((logits, torch.zeros(2, 5))) is logits
    assert logits_of(SimpleNamespace(logits=logits, loss=None)) is logits
    with pytest.raises(TypeError, match="returned dict, not logits: return a tensor, a tuple"):
        logits_of({"scores": logits})


def test_a_factory_gets_only_the_arguments_its_signature_names():
    from retain.strategies.models import factory_arguments

    def only_classes(num_classes, depth=2):
        return None

    def open_ended(**kwargs):
        return None

    assert factory_arguments(only_classes, (8,), 3, {"depth": 4}) == {"num_classes": 3, "depth": 4}
    assert factory_arguments(lambda: None, (8,), 3, {}) == {}
    assert factory_arguments(open_ended, (8,), 3, {}) == {"input_shape": (8,), "num_classes": 3}
