"""The CUDA path for real: pruning (Taylor, AutoBot with the PW loss) and retraining on the GPU, and the fast
settings the GPU training loop uses (pwdeploy.fastpath: cudnn.benchmark, TF32, channels_last, autocast, pinned
memory, non-blocking copies).

The CUDA tests are skipped with a reason on machines without a CUDA GPU (CI); run them on a lent GPU machine
(benchmarks/gpu_check.sh). The CPU tests check that on the CPU none of it is switched on.
"""

import json

import pytest
import torch

from conftest import TINY_DATA
from pwdeploy.config import LoaderSettings, TrainSettings
from pwdeploy.data import DataSpec, create_dataset
from pwdeploy.data.loading import loader_options
from pwdeploy.fastpath import channels_last, configure_backends
from pwdeploy.loss import LossFn
from pwdeploy.models import create_model
from pwdeploy.train import fit, make_loader, model_input

needs_cuda = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")]
CPU = torch.device("cpu")


def _cuda(test):
    for mark in needs_cuda:
        test = mark(test)
    return test


class _Recorder:
    """A forward pre-hook noting what the training loop feeds the model: layout, autocast, backend flags."""

    def __init__(self, model):
        self.calls = []
        model.register_forward_pre_hook(self)

    def __call__(self, module, inputs):
        x = inputs[0]
        conv = next(m for m in module.modules() if isinstance(m, torch.nn.Conv2d))
        self.calls.append({"input_nhwc": x.is_contiguous(memory_format=torch.channels_last),
                           "weights_nhwc": conv.weight.is_contiguous(memory_format=torch.channels_last),
                           "autocast": torch.is_autocast_enabled(x.device.type) if x.is_cuda else False,
                           "cudnn_benchmark": torch.backends.cudnn.benchmark,
                           "matmul_precision": torch.get_float32_matmul_precision(), "device": x.device.type})


def test_cpu_training_keeps_the_plain_settings():
    """On the CPU the fast path switches nothing on: NCHW, no autocast, no pinned memory."""
    assert configure_backends(CPU) == {}
    model = create_model("smallcnn", 2)
    with channels_last(model, CPU) as active:
        assert active is False
    data = create_dataset(DataSpec(**TINY_DATA), "train")
    assert loader_options(data, LoaderSettings(), CPU)["pin_memory"] is False
    recorder = _Recorder(model)
    fit(model, data, LossFn("ce"), TrainSettings(epochs=1, batch_size=128), CPU, precision="fp32")
    assert recorder.calls and not any(c["input_nhwc"] and c["weights_nhwc"] for c in recorder.calls)
    assert not any(c["autocast"] for c in recorder.calls)


@_cuda
def test_gpu_training_uses_the_fast_path():
    """fit on CUDA: cudnn.benchmark and TF32 on, channels_last model and batches, autocast (bf16 where the GPU
    has it), and the model back in the default layout afterwards (checkpoints, pruning and export see it)."""
    from pwdeploy.precision import resolve_precision

    device = torch.device("cuda")
    precision = resolve_precision("auto", device)
    data = create_dataset(DataSpec(**TINY_DATA), "train")
    model = create_model("smallcnn", 2)
    recorder = _Recorder(model)
    fit(model, data, LossFn("ce"), TrainSettings(epochs=1, batch_size=64), device, precision=precision)
    calls = [c for c in recorder.calls if c["device"] == "cuda"]
    assert calls and all(c["input_nhwc"] and c["weights_nhwc"] for c in calls)
    assert all(c["autocast"] for c in calls) and precision in ("bf16", "fp16")
    assert all(c["cudnn_benchmark"] and c["matmul_precision"] == "high" for c in calls)
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous() and next(model.parameters()).dtype == torch.float32


@_cuda
def test_gpu_loader_pins_memory_and_copies_without_blocking(monkeypatch):
    device = torch.device("cuda")
    data = create_dataset(DataSpec(**TINY_DATA), "train")
    loader = make_loader(data, 32, shuffle=True, loader=LoaderSettings(), device=device)
    assert loader.pin_memory is True
    batch = next(iter(loader))[0]
    assert batch.is_pinned()
    seen = {}
    original_to = torch.Tensor.to

    def recording_to(self, *args, **kwargs):
        seen.update(kwargs)
        return original_to(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", recording_to)
    out = model_input(loader, device)(batch)
    assert out.is_cuda and seen.get("non_blocking") is True


@_cuda
@pytest.mark.parametrize("method", ["taylor", "autobot"])
def test_compress_on_cuda_matches_cpu_reload(method, tmp_path):
    from pwdeploy.api import compress_model, train_baseline
    from pwdeploy.models.checkpoint import load_model

    base = tmp_path / "base.pt"
    train_baseline({"data": TINY_DATA, "model": {"arch": "tinyresnet"}, "device": "cuda",
                    "baseline": {"epochs": 2, "batch_size": 64}}, base)
    run = compress_model(base, {"data": TINY_DATA, "device": "cuda", "loss": "pw",
                                "prune": {"method": method, "flops_reduction": 0.75, "autobot_steps": 30,
                                          "steps_between": 3},
                                "retrain": {"epochs": 1, "batch_size": 64}}, tmp_path / "run", quiet=True)
    report = json.loads((run / "report.json").read_text())
    assert report["device"].startswith("cuda")
    assert abs(report["flops_reduction"] - 0.75) <= 0.01
    assert report["onnx_parity_max_abs"] < 1e-4
    model, _ = load_model(run / "pruned.pt")
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        cpu_out = model(x)
        gpu_out = model.cuda()(x.cuda()).cpu()
    assert torch.allclose(cpu_out, gpu_out, atol=1e-4)
