"""configs/*.yaml: each builds, carries the paper's settings, merges defaults < file < flags, and bad keys
or types are errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from pwdeploy.config import CONFIG_DIR, build_config, load_yaml
from pwdeploy.errors import ConfigError

YAMLS = sorted(CONFIG_DIR.glob("*.yaml"))


def test_the_paper_datasets_have_configs():
    assert {"celeba", "cifar10", "fitzpatrick17k"} <= {p.stem for p in YAMLS}


@pytest.mark.parametrize("path", YAMLS, ids=[p.stem for p in YAMLS])
def test_every_config_builds_and_names_its_own_dataset(path):
    config = build_config(config_file=path)
    if "name" in load_yaml(path).get("data", {}):
        assert config.data.name == path.stem
    # --data NAME alone finds the same file
    assert build_config({"data": {"name": path.stem}}).to_dict() == config.to_dict() | {
        "data": {**config.to_dict()["data"], "name": path.stem}}


def test_celeba_has_the_papers_settings():
    c = build_config(data_name="celeba")
    assert c.model.arch == "torchvision:resnet18" and c.model.num_classes == 1
    assert (c.pw_for("autobot").min_weight, c.pw_for("autobot").gamma) == (0.3, 1.0)
    assert (c.pw_for("taylor").min_weight, c.pw_for("taylor").gamma) == (0.8, 0.5)
    assert (c.retrain.lr, c.retrain.batch_size, c.retrain.epochs) == (1e-4, 256, 30)
    assert c.flops_reductions[0] == 0.9375 and c.flops_reductions[-1] == 0.9961
    assert c.data.options["target_attr"] == "Blond_Hair" and c.data.options["group_attr"] == "Male"


def test_cifar10_has_the_papers_settings():
    c = build_config(data_name="cifar10")
    assert c.model.arch == "cifar_resnet56"
    for method in ("autobot", "taylor"):
        assert (c.pw_for(method).min_weight, c.pw_for(method).gamma) == (0.5, 1.0)
    assert (c.retrain.lr, c.retrain.batch_size) == (1e-3, 256)
    assert c.flops_reductions == [0.25, 0.5, 0.75, 0.875, 0.9375]
    assert c.data.options["augment"] is True


def test_fitzpatrick17k_has_the_papers_settings():
    c = build_config(data_name="fitzpatrick17k")
    assert c.model.arch == "torchvision:resnet34"
    assert (c.pw_for("autobot").min_weight, c.pw_for("autobot").gamma) == (0.8, 2.5)
    assert (c.pw_for("taylor").min_weight, c.pw_for("taylor").gamma) == (0.95, 3.0)
    assert (c.retrain.lr, c.retrain.batch_size, c.retrain.epochs) == (1e-4, 64, 30)
    assert c.flops_reductions[0] == 0.5 and c.flops_reductions[-1] == 0.96875
    assert c.data.options["protocol"] == "paper"


def test_config_models_build_for_their_datasets():
    from pwdeploy.models import create_model

    for name, classes in (("celeba", 1), ("cifar10", 10), ("fitzpatrick17k", 3)):
        c = build_config(data_name=name)
        model = create_model(c.model.arch, c.model.num_classes or classes)
        assert sum(p.numel() for p in model.parameters()) > 0


def test_flags_override_the_file_and_nested_keys_merge():
    c = build_config({"data": {"name": "celeba", "root": "/data", "options": {"target_attr": "Smiling"}},
                      "retrain": {"epochs": 2}, "pw": {"taylor": {"gamma": 4.0}}})
    assert c.data.root == "/data"
    assert c.data.options == {"target_attr": "Smiling", "group_attr": "Male", "size": [218, 178]}
    assert c.retrain.epochs == 2 and c.retrain.lr == 1e-4 and c.retrain.batch_size == 256
    assert c.pw["taylor"].gamma == 4.0 and c.pw["taylor"].min_weight == 0.8


def test_an_explicit_config_file_replaces_the_automatic_one(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("retrain:\n  lr: 5.0e-4\nflops_reductions: [0.3]\n")
    c = build_config({"data": {"name": "cifar10"}}, config_file=path)
    assert c.retrain.lr == 5e-4 and c.flops_reductions == [0.3]
    assert c.model.arch == "smallcnn"  # not from configs/cifar10.yaml: --config replaces it


@pytest.mark.parametrize("text, key", [
    ("retrian:\n  epochs: 3\n", "retrian"),
    ("retrain:\n  epoch: 3\n", "retrain.epoch"),
    ("pw:\n  taylor: {gama: 1}\n", "pw.taylor.gama"),
    ("retrain:\n  epochs: ten\n", "retrain.epochs"),
    ("retrain:\n  epochs: 3.5\n", "retrain.epochs"),
    ("flops_reductions: 0.5\n", "flops_reductions"),
    ("flops_reductions: [0.5, fast]\n", "flops_reductions[1]"),
    ("data:\n  options: [size]\n", "data.options"),
    ("group_balanced: maybe\n", "group_balanced"),
    ("prune:\n  method: random\n", "prune.method"),
    ("group_balance_strength: 0\n", "group-balance-strength"),
])
def test_unknown_keys_and_wrong_types_name_the_key(tmp_path, text, key):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        build_config(config_file=path)
    assert key in str(info.value) and "\n" not in str(info.value)


def test_missing_or_invalid_yaml_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        build_config(config_file=tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("retrain: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        build_config(config_file=bad)
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        build_config(config_file=bad)


def test_cli_config_error_exits_2_naming_the_key(tmp_path, capsys):
    from pwdeploy.cli import main

    path = tmp_path / "bad.yaml"
    path.write_text("retrain:\n  learning_rate: 0.1\n")
    code = main(["train", "--out", str(tmp_path / "m.pt"), "--config", str(path), "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "retrain.learning_rate" in err


def test_config_files_are_plain_data_for_users_to_copy():
    for path in YAMLS:
        text = Path(path).read_text()
        assert "#" in text  # each setting says where it comes from
