"""Models in and out: pwdeploy checkpoints (weights_only), state dicts with --arch, pickles only if trusted."""

import pytest
import torch

from pwdeploy.errors import ModelError
from pwdeploy.models import create_model
from pwdeploy.models.checkpoint import load_model, save_checkpoint
from pwdeploy.prune import prune_to_flops


def test_pruned_checkpoint_roundtrip_loads_weights_only(tmp_path):
    model = create_model("tinyresnet", 3).eval()
    prune_to_flops(model, torch.randn(1, 3, 16, 16), method="magnitude", flops_reduction=0.5)
    path = tmp_path / "pruned.pt"
    save_checkpoint(model, path, arch="tinyresnet", num_classes=3, meta={"note": "x"})
    torch.load(path, weights_only=True)  # no pickle needed
    loaded, info = load_model(path)
    assert info["kind"] == "checkpoint" and info["meta"] == {"note": "x"}
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_torchvision_state_dict_needs_arch(tmp_path):
    model = create_model("torchvision:resnet18", 4)
    path = tmp_path / "sd.pt"
    torch.save(model.state_dict(), path)
    with pytest.raises(ModelError, match="--arch"):
        load_model(path)
    loaded, info = load_model(path, arch="torchvision:resnet18", num_classes=4)
    assert info["kind"] == "state_dict" and loaded.fc.out_features == 4


def test_state_dict_wrong_arch_names_the_mismatch(tmp_path):
    path = tmp_path / "sd.pt"
    torch.save(create_model("smallcnn", 2).state_dict(), path)
    with pytest.raises(ModelError, match="does not fit --arch torchvision:resnet18"):
        load_model(path, arch="torchvision:resnet18", num_classes=2)


def test_pickled_module_needs_trust_pickle(tmp_path):
    path = tmp_path / "whole.pt"
    torch.save(create_model("smallcnn", 2), path)
    with pytest.raises(ModelError, match="--trust-pickle"):
        load_model(path)
    model, info = load_model(path, arch="smallcnn", trust_pickle=True)
    assert info["kind"] == "pickle" and info["num_classes"] == 2
    assert model(torch.randn(1, 3, 16, 16)).shape == (1, 2)


def test_unknown_architecture_and_missing_file(tmp_path):
    with pytest.raises(ModelError, match="unknown architecture"):
        create_model("resnet9000", 2)
    with pytest.raises(ModelError, match="unknown torchvision"):
        create_model("torchvision:notamodel", 2)
    with pytest.raises(ModelError, match="not found"):
        load_model(tmp_path / "missing.pt")
