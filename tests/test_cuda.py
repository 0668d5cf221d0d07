"""The CUDA path for real: pruning (Taylor, AutoBot with the PW loss) and retraining on the GPU.

Skipped with a reason on machines without a CUDA GPU (CI); run on a lent GPU machine.
"""

import json

import pytest
import torch

from conftest import TINY_DATA

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")]


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
