"""--precision (autocast on CUDA), loader defaults and images/s in progress bars."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import TINY_DATA
from fixtures_data import write_celeba
from pwdeploy.config import LoaderSettings
from pwdeploy.data import DataSpec, create_dataset
from pwdeploy.data.loading import loader_options
from pwdeploy.errors import ConfigError
from pwdeploy.precision import Precision, resolve_precision
from pwdeploy.progress import Task

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")


def test_cpu_precision_is_fp32_and_half_precision_needs_a_gpu():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == "fp32" and resolve_precision("fp32", cpu) == "fp32"
    for name in ("bf16", "fp16"):
        with pytest.raises(ConfigError, match="needs a CUDA GPU"):
            resolve_precision(name, cpu)
    with pytest.raises(ConfigError, match="must be one of"):
        resolve_precision("fp8", cpu)


def test_config_json_records_the_resolved_precision(tiny_run):
    config = json.loads((tiny_run / "config.json").read_text())
    assert config["precision"] == "fp32"  # "auto" on a CPU
    assert config["distributed"] == {"world_size": 1}
    assert config["loader"]["image_cache"] == "auto"


@cuda
@pytest.mark.cuda
@pytest.mark.parametrize("name", ["bf16", "fp16"])
def test_training_under_autocast_on_cuda_learns(name):
    from pwdeploy.config import TrainSettings
    from pwdeploy.loss import LossFn
    from pwdeploy.models import create_model
    from pwdeploy.train import fit

    if name == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    device = torch.device("cuda")
    assert resolve_precision("auto", device) in ("bf16", "fp16")
    data = create_dataset(DataSpec(**TINY_DATA), "train")
    model = create_model("smallcnn", 2)
    history = fit(model, data, LossFn("ce"), TrainSettings(epochs=3, batch_size=64), device, precision=name)
    assert all(torch.isfinite(torch.tensor(history))) and history[-1] < history[0]
    assert next(model.parameters()).dtype == torch.float32  # master weights stay fp32


@cuda
@pytest.mark.cuda
def test_autocast_runs_matmuls_in_half_precision_on_cuda():
    amp = Precision("bf16", torch.device("cuda"))
    layer = torch.nn.Linear(8, 8).cuda()
    with amp.autocast():
        assert layer(torch.randn(2, 8, device="cuda")).dtype == torch.bfloat16


def test_fp32_precision_is_a_plain_optimizer_step():
    amp = Precision("fp32", torch.device("cpu"))
    layer = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    before = layer.weight.detach().clone()
    with amp.autocast():
        loss = layer(torch.ones(4, 2)).pow(2).mean()
    amp.step(loss, optimizer)
    assert not torch.equal(before, layer.weight)


def test_loader_defaults_workers_for_image_files_only(tmp_path, monkeypatch):
    import pwdeploy.data.loading as loading

    monkeypatch.setattr(loading, "cpus_per_process", lambda: 6)
    files = create_dataset(DataSpec("celeba", str(write_celeba(tmp_path, counts=(4, 2, 2))), {"size": 16}), "train")
    arrays = create_dataset(DataSpec(**TINY_DATA), "train")
    cpu = torch.device("cpu")
    options = loader_options(files, None, cpu)
    assert (options["num_workers"], options["pin_memory"], options["persistent_workers"]) == (5, False, True)
    files.attach_cache(tmp_path / "images.npy")  # reading a cache needs fewer workers than decoding
    assert loader_options(files, None, cpu)["num_workers"] == 4
    monkeypatch.setattr(loading, "cpus_per_process", lambda: 2)  # too few cores: workers only cost
    assert loader_options(files, None, cpu)["num_workers"] == 0
    assert (loader_options(arrays, None, cpu)["num_workers"], loader_options(arrays, None, cpu)["pin_memory"]) == (0, False)
    assert loader_options(files, LoaderSettings(workers=0), cpu)["num_workers"] == 0
    with pytest.raises(ConfigError, match="--workers"):
        loader_options(files, LoaderSettings(workers=-1), cpu)


def test_progress_counts_images_per_second():
    task = Task(None)
    task.advance(images=64)
    task.advance(images=64)
    assert task.images == 128 and task.images_per_second() > 0
