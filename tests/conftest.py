"""Shared fixtures: tiny synthetic data, a trained tiny baseline and a finished tiny run directory."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("PWDEPLOY_NO_PROGRESS", "1")
# decoded-image caches of test datasets go to a throw-away folder, never the user's ~/.cache
os.environ.setdefault("PWDEPLOY_IMAGE_CACHE_DIR", __import__("tempfile").mkdtemp(prefix="pwdeploy-test-cache-"))

TINY_DATA = {"name": "synthetic", "options": {"size": 16, "n": 400, "minority_fraction": 0.2}}


def _threads():
    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def tiny_baseline(tmp_path_factory):
    """A smallcnn trained for a few epochs on tiny synthetic data (pwdeploy checkpoint path)."""
    from pwdeploy.api import train_baseline

    _threads()
    out = tmp_path_factory.mktemp("baseline") / "model.pt"
    train_baseline({"data": TINY_DATA, "model": {"arch": "smallcnn"},
                    "baseline": {"epochs": 4, "lr": 3e-3, "batch_size": 64}}, out)
    return out


@pytest.fixture(scope="session")
def tiny_run(tiny_baseline, tmp_path_factory):
    """A finished run directory: smallcnn pruned 50% with magnitude + PW, 1 retraining epoch, onnx-fp32."""
    from pwdeploy.api import compress_model

    out = tmp_path_factory.mktemp("runs") / "tiny"
    return compress_model(tiny_baseline, {"data": TINY_DATA, "prune": {"method": "magnitude", "flops_reduction": 0.5},
                                          "retrain": {"epochs": 1, "batch_size": 64}}, out, quiet=True)
