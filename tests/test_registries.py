"""Registries (timm style): models and datasets registered from outside the package are listed and built like
pwdeploy's own; unknown names are one-line errors that list the known ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pwdeploy.data import DataSpec, create_dataset, list_datasets, register_dataset
from pwdeploy.data.base import ArrayDataset
from pwdeploy.errors import DataError, ModelError
from pwdeploy.models import create_model, list_models, register_model
from pwdeploy.preprocessing import Preprocessing


@register_model("test-linear")
def _linear(num_classes: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes))


@register_dataset("test-blocks")
def _blocks(root=None, split="train", n=8):
    rng = np.random.default_rng(0 if split == "train" else 1)
    return ArrayDataset(rng.random((n, 3, 8, 8), dtype=np.float32), [i % 2 for i in range(n)], [i % 4 == 0 for i in range(n)],
                        group_names=["a", "b"], class_names=["no", "yes"],
                        preprocessing=Preprocessing(size=(8, 8)), name="test-blocks", split=split)


def test_an_outside_model_is_listed_and_built():
    assert "test-linear" in list_models() and "smallcnn" in list_models()
    assert create_model("test-linear", 3)(torch.zeros(2, 3, 8, 8)).shape == (2, 3)


def test_an_outside_dataset_is_listed_and_built():
    assert {"test-blocks", "synthetic", "celeba"} <= set(list_datasets())
    data = create_dataset(DataSpec("test-blocks", options={"n": 6}), "test")
    assert len(data) == 6 and data.group_names == ["a", "b"]


@pytest.mark.parametrize("arch,message", [("nonet", "unknown architecture 'nonet'.*smallcnn"),
                                          ("torchvision:nonet", "unknown torchvision classification model"),
                                          ("timm:nonet", "timm")])
def test_unknown_models_name_the_choices(arch, message):
    with pytest.raises(ModelError, match=message):
        create_model(arch, 2)


def test_unknown_dataset_names_the_choices():
    with pytest.raises(DataError, match="unknown dataset 'nodata'.*test-blocks"):
        create_dataset(DataSpec("nodata"), "train")


def test_cli_help_lists_the_registries_without_importing_torch():
    """`pwdeploy --help` and the torch-free commands must stay light: listing names imports no torch."""
    import subprocess
    import sys

    code = ("import sys; from pwdeploy.cli import main; main(['train', '--help']); "
            "sys.exit(3 if 'torch' in sys.modules else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={"COLUMNS": "300", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "smallcnn" in proc.stdout and "timm:<name>" in proc.stdout and "fitzpatrick17k" in proc.stdout
