"""Runners: PyTorch, ONNX Runtime (CPU; CUDA/TensorRT providers where present) and TensorRT engines agree."""

from __future__ import annotations

import numpy as np
import pytest

from pwdeploy.errors import PwdeployError
from pwdeploy.runners import create_runner, run_batches, runner_for_suffix


def _ort_providers():
    import onnxruntime as ort

    return ort.get_available_providers()


def _trt_reason():
    from pwdeploy.exporters.tensorrt import tensorrt_status

    status = tensorrt_status()
    return None if status["available"] else status["reason"]


HAS_CUDA_EP = "CUDAExecutionProvider" in _ort_providers()
TRT_REASON = _trt_reason()


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    import torch

    from pwdeploy.exporters.onnx_export import export_onnx
    from pwdeploy.models import create_model
    from pwdeploy.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = create_model("tinyresnet", 3).eval()
    folder = tmp_path_factory.mktemp("runners")
    export_onnx(model, folder / "model.onnx", (3, 16, 16))
    save_checkpoint(model, folder / "model.pt", arch="tinyresnet", num_classes=3)
    images = np.random.default_rng(0).standard_normal((37, 3, 16, 16)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(images)).numpy()
    return folder, images, expected


def test_onnxruntime_cpu_matches_pytorch(model_files):
    folder, images, expected = model_files
    with create_runner(folder / "model.onnx", provider="cpu") as runner:
        assert runner.describe()["providers"] == ["CPUExecutionProvider"]
        assert runner.describe()["device"] == "cpu"
        logits = run_batches(runner, images, batch_size=8)  # 37 = 4 full batches + 5: the tail is kept
    assert logits.shape == (37, 3)
    np.testing.assert_allclose(logits, expected, atol=1e-4)


def test_torch_runner_from_checkpoint_and_module(model_files):
    from pwdeploy.runners.torch_runner import TorchRunner

    folder, images, expected = model_files
    with create_runner(folder / "model.pt", device="cpu") as runner:
        assert runner.describe()["runner"] == "torch"
        np.testing.assert_allclose(run_batches(runner, images, batch_size=16), expected, atol=1e-5)
    from pwdeploy.models.checkpoint import load_model

    module, _ = load_model(folder / "model.pt")
    np.testing.assert_allclose(TorchRunner(module, device="cpu").run(images), expected, atol=1e-5)


def test_runner_selection_and_errors(model_files, tmp_path):
    folder, _, _ = model_files
    assert runner_for_suffix("a.onnx") == "onnxruntime"
    assert runner_for_suffix("a.plan") == runner_for_suffix("b.engine") == "tensorrt"
    assert runner_for_suffix("a.pt") == "torch"
    with pytest.raises(PwdeployError, match="cannot tell how to run"):
        runner_for_suffix("model.tflite")
    with pytest.raises(PwdeployError, match="--runner tensorrt cannot run model.onnx"):
        create_runner(folder / "model.onnx", "tensorrt")
    with pytest.raises(PwdeployError, match="unknown ONNX Runtime provider"):
        create_runner(folder / "model.onnx", provider="rocm")
    with pytest.raises(PwdeployError, match="ONNX file not found"):
        create_runner(tmp_path / "missing.onnx")
    (tmp_path / "broken.onnx").write_bytes(b"\x00not onnx")
    with pytest.raises(PwdeployError, match="ONNX Runtime cannot load broken.onnx"):
        create_runner(tmp_path / "broken.onnx", provider="cpu")


@pytest.mark.skipif(HAS_CUDA_EP, reason="this onnxruntime has the CUDA provider")
def test_missing_cuda_provider_is_explained(model_files):
    folder, _, _ = model_files
    with pytest.raises(PwdeployError, match="onnxruntime-gpu"):
        create_runner(folder / "model.onnx", provider="cuda")
    with create_runner(folder / "model.onnx") as runner:  # auto falls back to CPU
        assert runner.describe()["providers"] == ["CPUExecutionProvider"]


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA_EP, reason="onnxruntime has no CUDAExecutionProvider here (CPU build or no GPU)")
def test_onnxruntime_cuda_matches_pytorch(model_files):
    folder, images, expected = model_files
    with create_runner(folder / "model.onnx", provider="cuda") as runner:
        assert runner.describe()["providers"][0] == "CUDAExecutionProvider"
        np.testing.assert_allclose(run_batches(runner, images), expected, atol=1e-3)


@pytest.mark.tensorrt
@pytest.mark.skipif("TensorrtExecutionProvider" not in _ort_providers(),
                    reason="onnxruntime has no TensorrtExecutionProvider here")
def test_onnxruntime_tensorrt_provider(model_files):
    folder, images, expected = model_files
    with create_runner(folder / "model.onnx", provider="tensorrt") as runner:
        np.testing.assert_allclose(run_batches(runner, images), expected, atol=1e-2)


@pytest.mark.skipif(TRT_REASON is None, reason="TensorRT is available here")
def test_tensorrt_runner_without_tensorrt_says_what_to_do(model_files, tmp_path):
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"not an engine")
    with pytest.raises(PwdeployError, match="needs TensorRT and polygraphy"):
        create_runner(plan)


@pytest.mark.tensorrt
@pytest.mark.skipif(TRT_REASON is not None, reason=f"no TensorRT engine build here: {TRT_REASON}")
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tensorrt_engine_runner_matches_pytorch(model_files, tmp_path, precision):
    from pwdeploy.exporters.fp16 import convert_fp16
    from pwdeploy.exporters.tensorrt import build_engine

    folder, images, expected = model_files
    onnx_path = folder / "model.onnx"
    if precision == "fp16":
        onnx_path = tmp_path / "model.fp16.onnx"
        convert_fp16(folder / "model.onnx", onnx_path)
    info = build_engine(onnx_path, tmp_path / "model.plan", precision=precision, input_name="input",
                        input_shape=(3, 16, 16))
    assert info["built"] and info["profile"]["max"][0] == 32
    with create_runner(tmp_path / "model.plan") as runner:
        assert runner.max_batch == 32
        logits = run_batches(runner, np.concatenate([images] * 2), batch_size=64)  # chunked to the profile
    np.testing.assert_allclose(logits[:37], expected, atol=1e-2 if precision == "fp32" else 5e-2)
